"""Logits of a model with adapters, computed by mlx-lm, for forge-peft's peer test.

Usage: python mlx_lm_adapter_logits.py REQUEST.json RESPONSE.json

REQUEST:  {"model_dir": str, "adapter_dir": str, "ids": [int, ...]}
RESPONSE: {"mlx_lm_version": str, "logits": [[float, ...], ...]}

mlx-lm's own loader applies the adapters (`mlx_lm.utils.load(model_dir,
adapter_path=adapter_dir)` → `load_adapters` → `linear_to_lora_layers` +
`load_weights`), then `model(mx.array([ids]))`.
"""

import json
import sys
from pathlib import Path

import mlx.core as mx
import mlx_lm
from mlx_lm.utils import load


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    model, _ = load(request["model_dir"], adapter_path=request["adapter_dir"])
    logits = model(mx.array([request["ids"]])).astype(mx.float32)
    mx.eval(logits)
    Path(sys.argv[2]).write_text(
        json.dumps({"mlx_lm_version": mlx_lm.__version__, "logits": logits[0].tolist()})
    )


if __name__ == "__main__":
    main()
