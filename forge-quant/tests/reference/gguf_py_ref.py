#!/usr/bin/env python3
"""gguf-py 0.19 reference outputs for forge-quant's tests.

Usage: gguf_py_ref.py JOBS.json

JOBS.json is a list of jobs; each reads and writes raw little-endian files:

  {"op": "dequant", "type": "Q4_K", "row_bytes": N, "input": in.bin, "output": out.f32}
      gguf.quants.dequantize(bytes reshaped to rows of N bytes, type) -> float32
  {"op": "quant", "type": "Q4_0", "n_per_row": N, "input": in.f32, "output": out.bin}
      gguf.quants.quantize(float32 rows of N values, type) -> block bytes
  {"op": "model", "gguf": file.gguf, "output": out.json}
      every tensor of a GGUF file: name, type, element count, absolute data
      offset, byte length, and the checksum sum(bits(x_i) * (2i+1)) mod 2^64 of
      gguf-py's dequantized float32 values (forge_quant's tests compute the same)
  {"op": "dump", "gguf": file.gguf, "tensor": name, "output": out.f32}
      one tensor's gguf-py dequantized values (for diagnosing a mismatch)
"""
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize, quantize


def qtype(name):
    return GGMLQuantizationType[name]


def checksum(values):
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32)
    total = np.uint64(0)
    chunk = 1 << 20
    with np.errstate(over="ignore"):
        for start in range(0, bits.size, chunk):
            part = bits[start:start + chunk].astype(np.uint64)
            weight = np.arange(start, start + part.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
            total = total + np.sum(part * weight, dtype=np.uint64)
    return int(total)


def tensor_values(t):
    data = np.asarray(t.data)
    if t.tensor_type == GGMLQuantizationType.F32:
        return data.astype(np.float32, copy=False)
    return dequantize(data.view(np.uint8), t.tensor_type)


def run(job):
    op = job["op"]
    if op == "dequant":
        raw = np.fromfile(job["input"], dtype=np.uint8).reshape(-1, job["row_bytes"])
        out = dequantize(raw, qtype(job["type"]))
        np.ascontiguousarray(out, dtype=np.float32).tofile(job["output"])
    elif op == "quant":
        x = np.fromfile(job["input"], dtype=np.float32).reshape(-1, job["n_per_row"])
        with np.errstate(all="ignore"):
            out = quantize(x, qtype(job["type"]))
        np.ascontiguousarray(out).view(np.uint8).tofile(job["output"])
    elif op == "model":
        reader = GGUFReader(job["gguf"])
        tensors = []
        for t in reader.tensors:
            tensors.append({
                "name": t.name,
                "type": t.tensor_type.name,
                "n_elements": int(t.n_elements),
                "offset": int(t.data_offset),
                "n_bytes": int(t.n_bytes),
                "checksum": str(checksum(tensor_values(t))),
            })
        with open(job["output"], "w") as f:
            json.dump(tensors, f)
    elif op == "dump":
        reader = GGUFReader(job["gguf"])
        t = next(t for t in reader.tensors if t.name == job["tensor"])
        np.ascontiguousarray(tensor_values(t), dtype=np.float32).tofile(job["output"])
    else:
        raise SystemExit(f"unknown op {op!r}")


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        run(job)


if __name__ == "__main__":
    main()
