"""mlx-lm's own LoRA training loop (`mlx_lm.tuner.trainer.train`, compiled step)
on a `gpu_bench` shape, random weights, the tokens of data.json.

python mlx_lm_train.py --shape smollm2 --data data.json --batch 4 --steps 12
Prints one JSON line like `gpu_bench train`.
"""
import argparse
import json
import time

import mlx.core as mx
import mlx.optimizers as optim
from mlx_lm.models.llama import Model, ModelArgs
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.trainer import TrainingArgs, train
from mlx_lm.tuner.utils import linear_to_lora_layers

from shapes import COMMON, LORA_LAYERS, LR, RANK, SCALE, SHAPES, median

p = argparse.ArgumentParser()
p.add_argument("--shape", required=True, choices=SHAPES)
p.add_argument("--data", required=True)
p.add_argument("--batch", type=int, required=True)
p.add_argument("--steps", type=int, default=12)
p.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
a = p.parse_args()

mx.random.seed(0)
args = ModelArgs(model_type="llama", **SHAPES[a.shape], **COMMON)
model = Model(args)
dtype = {"bf16": mx.bfloat16, "f16": mx.float16, "f32": mx.float32}[a.dtype]
model.set_dtype(dtype)
mx.eval(model.parameters())
model.freeze()
linear_to_lora_layers(model, LORA_LAYERS, {"rank": RANK, "scale": SCALE, "dropout": 0.0})

seqs = json.load(open(a.data))
dataset = [(s, 0) for s in seqs]
seq = len(seqs[0])


class Report(TrainingCallback):
    def __init__(self):
        self.tps = []
        self.peak = 0.0
        self.loss = None

    def on_train_loss_report(self, info):
        self.tps.append(info["tokens_per_second"])
        self.peak = info["peak_memory"]
        self.loss = info["train_loss"]
        print(f"mlx-lm step {info['iteration']}: loss {info['train_loss']:.4f}, "
              f"{info['tokens_per_second']:.0f} tok/s", flush=True)


cb = Report()
mx.reset_peak_memory()
t = time.perf_counter()
train(
    model,
    optim.AdamW(learning_rate=LR),
    dataset,
    args=TrainingArgs(batch_size=a.batch, iters=a.steps, steps_per_report=1,
                      steps_per_eval=10**9, steps_per_save=10**9, max_seq_length=seq,
                      adapter_file="/tmp/mlx_lm_bench_adapters.safetensors"),
    training_callback=cb,
)
print(json.dumps({
    "tool": "mlx-lm", "task": "train", "shape": a.shape, "device": str(mx.default_device()),
    "dtype": a.dtype, "batch": a.batch, "seq": seq, "steps": a.steps,
    "tokens_per_s": median(cb.tps[2:]), "peak_memory_gib": mx.get_peak_memory() / 2**30,
    "final_loss": cb.loss, "wall_s": time.perf_counter() - t,
}), flush=True)
