"""MLX's affine `quantized_matmul` against a product with the dequantized
weight, over a grid of shapes, on MLX's default device (the GPU with the
mlx-cuda build).

Why: on the H200, forge-peft's QLoRA tests (a 4-bit base under a LoRA,
hidden width 64, group 64) found the adapter forward 55 % away from its
dequantized merge, while `quantized_matmul` at 8 x 512 x 256 matched to
4e-7. This finds which shapes, bit widths, group sizes and transposes the
CUDA kernels get wrong, and whether the gradient with respect to `x` (what
LoRA training differentiates through the frozen base) is right.

Usage: python3 qmm_check.py [--budget SECONDS] [--dtype float32|bfloat16 ...]

One line per wrong case (relative Frobenius error above the tolerance),
then a summary line per (dtype, transpose): cases run / wrong. The grid is
bits {4, 2, 3, 8} x group {64, 32, 128} x in-width K {64, 128, 256, 512} x
out-width N {32, 64, 128, 256} x rows M {1, 8, 24, 64}, x as [M, K] or as
[2, M/2, K] (seeded normal data; forge-peft's tiny test model has K 64/128,
N 32/64/128, x [2, 12, K]); the run stops at --budget seconds (default 300)
and says how far it got.
"""

import argparse
import itertools
import sys
import time

import mlx.core as mx


def rel(a, b):
    a = a.astype(mx.float32)
    b = b.astype(mx.float32)
    return (mx.linalg.norm(a - b) / mx.maximum(mx.linalg.norm(b), 1e-30)).item()


def case(dtype, transpose, bits, group, k, n, m, batched):
    """Relative errors of the product and of d/dx against the dequantized path;
    `batched`: x is [2, m/2, k] (a batch of sequences, as in a model)."""
    key = mx.random.key(bits * 1000003 + group * 1009 + k * 31 + n * 7 + m)
    k1, k2, k3 = mx.random.split(key, 3)
    # transpose=True: x [m, k] times W^T with W [n, k] (a Linear layer);
    # transpose=False: x [m, k] times W [k, n]. Quantized along W's last axis.
    w = mx.random.normal((n, k) if transpose else (k, n), key=k1).astype(dtype)
    xshape = (2, m // 2, k) if batched else (m, k)
    x = mx.random.normal(xshape, key=k2).astype(dtype)
    wq, scales, biases = mx.quantize(w, group_size=group, bits=bits)
    wd = mx.dequantize(wq, scales, biases, group_size=group, bits=bits)

    def q(x):
        return mx.quantized_matmul(
            x, wq, scales, biases, transpose=transpose, group_size=group, bits=bits
        )

    def d(x):
        return x @ (wd.T if transpose else wd)

    cot = mx.random.normal(xshape[:-1] + (n,), key=k3).astype(dtype)
    out_q, out_d = q(x), d(x)
    gq = mx.vjp(q, [x], [cot])[1][0]
    gd = mx.vjp(d, [x], [cot])[1][0]
    mx.eval(out_q, out_d, gq, gd)
    return rel(out_q, out_d), rel(gq, gd)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=float, default=300.0)
    p.add_argument("--dtype", nargs="*", default=["float32", "bfloat16"])
    p.add_argument(
        "--quick",
        action="store_true",
        help="only the single-group boundary: 4 bits, 8 rows, K = group or 2 x group",
    )
    args = p.parse_args()
    print(f"device {mx.default_device()}, mlx {mx.__version__}", flush=True)
    if args.quick:
        # MLX compiles each kernel shape at first use (about 20 s each on
        # the H200), so this checks only the boundary the full grid found.
        for dname in args.dtype:
            dtype = getattr(mx, dname)
            tol = 1e-4 if dtype == mx.float32 else 2e-2
            for k, group in ((64, 64), (128, 128), (128, 64), (256, 128)):
                e_out, e_grad = case(dtype, True, 4, group, k, 64, 8, False)
                verdict = "WRONG" if e_out > tol or e_grad > tol else "ok"
                print(
                    f"{verdict} {dname} transpose=True bits=4 group={group} K={k} N=64 M=8: "
                    f"out {e_out:.2e} grad_x {e_grad:.2e}",
                    flush=True,
                )
        return 0
    start = time.time()
    stopped = False
    for dname in args.dtype:
        dtype = getattr(mx, dname)
        tol = 1e-4 if dtype == mx.float32 else 2e-2
        for transpose in (True, False):
            run = wrong = 0
            grid = itertools.product(
                (4, 2, 3, 8),
                (64, 32, 128),
                (64, 128, 256, 512),
                (32, 64, 128, 256),
                (1, 8, 24, 64),
                (False, True),
            )
            for bits, group, k, n, m, batched in grid:
                # The quantized axis must hold whole groups.
                if (k if transpose else n) % group or (batched and m % 2):
                    continue
                if time.time() - start > args.budget:
                    stopped = True
                    break
                try:
                    e_out, e_grad = case(dtype, transpose, bits, group, k, n, m, batched)
                except Exception as e:  # noqa: BLE001 - report and go on
                    print(f"ERROR {dname} T={transpose} b{bits} g{group} K{k} N{n} M{m} batched={batched}: {e}")
                    wrong += 1
                    run += 1
                    continue
                run += 1
                if e_out > tol or e_grad > tol:
                    wrong += 1
                    print(
                        f"WRONG {dname} transpose={transpose} bits={bits} group={group} "
                        f"K={k} N={n} M={m} batched={batched}: out {e_out:.2e} grad_x {e_grad:.2e}",
                        flush=True,
                    )
            print(
                f"SUMMARY {dname} transpose={transpose}: {run} cases, {wrong} wrong "
                f"({time.time() - start:.0f} s)",
                flush=True,
            )
            if stopped:
                print(f"budget of {args.budget:.0f} s reached", flush=True)
                return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
