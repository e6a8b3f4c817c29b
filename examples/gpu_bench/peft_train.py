"""PyTorch + PEFT LoRA training on a `gpu_bench` shape: transformers'
LlamaForCausalLM (random weights, SDPA attention), PEFT LoRA r 8, alpha 160 on
every linear layer of the last 16 blocks, torch AdamW lr 1e-5, the tokens of
data.json. Prints one JSON line like `gpu_bench train`.

python peft_train.py --shape smollm2 --data data.json --batch 4 --steps 12
"""
import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from shapes import COMMON, LORA_LAYERS, LR, RANK, SCALE, SHAPES, median

p = argparse.ArgumentParser()
p.add_argument("--shape", required=True, choices=SHAPES)
p.add_argument("--data", required=True)
p.add_argument("--batch", type=int, required=True)
p.add_argument("--steps", type=int, default=12)
p.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
a = p.parse_args()

torch.manual_seed(0)
dev = "cuda" if torch.cuda.is_available() else "cpu"
dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[a.dtype]
cfg = LlamaConfig(**SHAPES[a.shape], **COMMON, max_position_embeddings=4096,
                  attn_implementation="sdpa")
model = LlamaForCausalLM(cfg).to(dtype=dtype, device=dev)
n = cfg.num_hidden_layers
model = get_peft_model(model, LoraConfig(
    r=RANK, lora_alpha=int(SCALE * RANK), lora_dropout=0.0,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    layers_to_transform=list(range(n - LORA_LAYERS, n))))
opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=LR)

seqs = torch.tensor(json.load(open(a.data)), dtype=torch.long)
seq = seqs.shape[1]
g = torch.Generator().manual_seed(0)
order = torch.randperm(seqs.shape[0], generator=g)
if dev == "cuda":
    torch.cuda.reset_peak_memory_stats()
tps, loss_v = [], None
t0 = time.perf_counter()
for step in range(a.steps):
    idx = order[(step * a.batch) % (len(order) - a.batch + 1):][: a.batch]
    x = seqs[idx].to(dev)
    if dev == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss_v = loss.item()  # synchronizes
    dt = time.perf_counter() - t
    tps.append(a.batch * (seq - 1) / dt)
    print(f"peft step {step + 1}: loss {loss_v:.4f}, {tps[-1]:.0f} tok/s", flush=True)
print(json.dumps({
    "tool": "peft", "task": "train", "shape": a.shape, "device": dev, "dtype": a.dtype,
    "batch": a.batch, "seq": seq, "steps": a.steps, "tokens_per_s": median(tps[2:]),
    "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2**30) if dev == "cuda" else None,
    "final_loss": loss_v, "wall_s": time.perf_counter() - t0,
}), flush=True)
