"""mlx-lm greedy generation speed on a `gpu_bench` shape (random weights):
`mlx_lm.generate.generate_step`, one untimed warm-up run of the same length
(every kernel shape the timed run meets is compiled by then), then a timed
run.

python mlx_lm_generate.py --shape llama1b --prompt 128 --tokens 256
"""
import argparse
import json
import time

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.models.llama import Model, ModelArgs

from shapes import COMMON, SHAPES

p = argparse.ArgumentParser()
p.add_argument("--shape", required=True, choices=SHAPES)
p.add_argument("--prompt", type=int, default=128)
p.add_argument("--tokens", type=int, default=256)
a = p.parse_args()

mx.random.seed(0)
model = Model(ModelArgs(model_type="llama", **SHAPES[a.shape], **COMMON))
model.set_dtype(mx.bfloat16)
mx.eval(model.parameters())
prompt = mx.array([100 + (i * 37) % 40000 for i in range(a.prompt)])
for tok, _ in generate_step(prompt, model, max_tokens=a.tokens):
    mx.eval(tok)
t = time.perf_counter()
first, n = None, 0
for tok, _ in generate_step(prompt, model, max_tokens=a.tokens):
    mx.eval(tok)
    n += 1
    if first is None:
        first = time.perf_counter() - t
total = time.perf_counter() - t
print(json.dumps({
    "tool": "mlx-lm", "task": "generate", "shape": a.shape, "device": str(mx.default_device()),
    "dtype": "bf16", "prompt": a.prompt, "tokens": n,
    "prompt_tokens_per_s": a.prompt / first,
    "generation_tokens_per_s": (n - 1) / (total - first),
}), flush=True)
