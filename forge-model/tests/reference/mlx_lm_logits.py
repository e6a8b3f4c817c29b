"""Reference logits and greedy tokens from mlx-lm for Forge's comparison tests.

Usage: python mlx_lm_logits.py REQUEST.json RESPONSE.json

REQUEST:  {"model_dir": str, "ids": [int, ...], "greedy_tokens": int}
RESPONSE: {"mlx_lm_version": str, "mlx_version": str,
           "logits": [[float, ...], ...]   # one row per position, float32
           "greedy": [int, ...]}           # mlx-lm's greedy continuation of ids

The model is loaded with mlx-lm's own loader (mlx_lm.utils.load), which
also loads the tokenizer; the forward pass is `model(mx.array([ids]))` and
greedy tokens come from mlx_lm.generate.generate_step with its default
(argmax) sampler.
"""

import json
import sys
from pathlib import Path

import mlx.core as mx
import mlx_lm
from mlx_lm.generate import generate_step
from mlx_lm.utils import load


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    model, _tokenizer = load(request["model_dir"])
    ids = request["ids"]
    logits = model(mx.array([ids])).astype(mx.float32)
    mx.eval(logits)
    greedy = []
    n = int(request.get("greedy_tokens", 0))
    if n > 0:
        for token, _ in generate_step(mx.array(ids), model, max_tokens=n):
            greedy.append(int(token))
    response = {
        "mlx_lm_version": mlx_lm.__version__,
        "mlx_version": mx.__version__,
        "logits": logits[0].tolist(),
        "greedy": greedy,
    }
    Path(sys.argv[2]).write_text(json.dumps(response))


if __name__ == "__main__":
    main()
