"""`mlx_lm lora` with a per-step report of process CPU time, for train_vs_mlx_lm.

Usage: python mlx_lm_lora_cpu.py <the arguments of `mlx_lm lora`>

It parses the arguments exactly as `mlx_lm lora` does (its own parser and
defaults) and calls its own `run`, adding a training callback that prints one
line per loss report:

    FORGE_STEP {"iteration": i, "trained_tokens": n, "tokens_per_second": r,
                "train_loss": l, "cpu_s": c}

where `cpu_s` is the process CPU time (all threads) spent since the previous
report, minus the time spent in validation, so that it covers training steps
only (as mlx-lm's own Tokens/sec does for wall time).
"""

import json
import os
import sys
import time
import types

import mlx_lm.lora as lora
import mlx_lm.tuner.trainer as trainer
from mlx_lm.tuner.callbacks import TrainingCallback

EVAL_CPU = [0.0]
_evaluate = trainer.evaluate


def timed_evaluate(*args, **kwargs):
    t = time.process_time()
    try:
        return _evaluate(*args, **kwargs)
    finally:
        EVAL_CPU[0] += time.process_time() - t


trainer.evaluate = timed_evaluate


class CpuReport(TrainingCallback):
    def __init__(self):
        self.last = time.process_time()
        self.last_eval = 0.0

    def on_train_loss_report(self, info):
        now = time.process_time()
        cpu = (now - self.last) - (EVAL_CPU[0] - self.last_eval)
        self.last, self.last_eval = now, EVAL_CPU[0]
        keys = ("iteration", "trained_tokens", "tokens_per_second", "train_loss", "peak_memory")
        line = {k: info.get(k) for k in keys}
        line["cpu_s"] = cpu
        print("FORGE_STEP " + json.dumps(line), flush=True)


def main():
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    args = vars(lora.build_parser().parse_args(sys.argv[1:]))
    for k, v in lora.CONFIG_DEFAULTS.items():
        if args.get(k, None) is None:
            args[k] = v
    # mlx-lm 0.32.2's `run` replaces its `training_callback` argument by
    # `get_reporting_callbacks(args.report_to, ...)` (None without --report-to),
    # so hand ours in through that function.
    report = CpuReport()
    lora.get_reporting_callbacks = lambda *a, **k: report
    lora.run(types.SimpleNamespace(**args))


if __name__ == "__main__":
    main()
