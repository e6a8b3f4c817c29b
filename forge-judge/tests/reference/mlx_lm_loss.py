"""Token-weighted mean loss of a model on a JSONL dataset, computed by mlx-lm, for forge-judge's
perplexity peer test.

Usage: python mlx_lm_loss.py MODEL_DIR DATA.jsonl MASK_PROMPT(0|1) [ADAPTER_DIR]

mlx-lm builds the examples (`mlx_lm.tuner.datasets.create_dataset`: TextDataset appends eos,
ChatDataset renders the chat template and, with mask_prompt, sets the offset to the length of
the rendered prompt) and scores them with its own `mlx_lm.tuner.trainer.default_loss`, one
unpadded example at a time (so mlx-lm's padding, which can count one pad target per row, plays
no part). Chat examples get forge-peft's closing eos when they do not end with one (forge-peft
appends it for every record, mlx-lm only for text records).

Prints {"mlx_lm_version", "sum", "tokens", "mean_loss"} as JSON.
"""

import json
import sys
import types

import mlx.core as mx
import mlx_lm
from mlx_lm.tuner.datasets import create_dataset
from mlx_lm.tuner.trainer import default_loss
from mlx_lm.utils import load


def main() -> None:
    model_dir, data_path, mask = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    adapter = sys.argv[4] if len(sys.argv) > 4 else None
    model, tokenizer = load(model_dir, adapter_path=adapter)
    rows = [json.loads(line) for line in open(data_path) if line.strip()]
    total, tokens = 0.0, 0
    # create_dataset picks the dataset class from the first row, so group rows by format.
    for kind in ("text", "messages"):
        group = [r for r in rows if kind in r]
        if not group:
            continue
        ds = create_dataset(group, tokenizer, types.SimpleNamespace(mask_prompt=mask and kind != "text"))
        for i in range(len(ds)):
            ids, offset = ds.process(ds[i])
            ids = list(ids)
            if ids[-1] != tokenizer.eos_token_id:
                ids.append(tokenizer.eos_token_id)
            batch = mx.array([ids])
            lengths = mx.array([[offset, len(ids)]])
            ce, ntoks = default_loss(model, batch, lengths)
            mx.eval(ce, ntoks)
            total += ce.item() * ntoks.item()
            tokens += ntoks.item()
    print(json.dumps({"mlx_lm_version": mlx_lm.__version__, "sum": total, "tokens": tokens, "mean_loss": total / tokens}))


if __name__ == "__main__":
    main()
