"""MLX's cost per operation on the default device: a chain of N small
element-wise ops, and one of N small matmuls ([2048, 576] bf16), evaluated
at once (host dispatch + kernel), time per op. Run it under
MLX_USE_CUDA_GRAPHS=0 and =1 to compare MLX's CUDA launch modes.

python opcost.py
"""
import time
import mlx.core as mx
x = mx.random.normal((2048, 576)).astype(mx.bfloat16)
w = mx.random.normal((576, 576)).astype(mx.bfloat16) * 0.01
mx.eval(x, w)
for kind in ("add", "matmul"):
    for n in (500, 2000):
        for rep in range(3):
            y = x
            t = time.perf_counter()
            for _ in range(n):
                y = y + 1 if kind == "add" else y @ w
            mx.eval(y)
            dt = time.perf_counter() - t
        print(f"{kind} chain of {n}: {dt / n * 1e6:.1f} us per op", flush=True)
