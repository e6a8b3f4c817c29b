"""Score every pair of a JSONL corpus with PyPI codebleu==0.7.0, one pair at a time.

Input lines: {"id", "lang", "reference", "candidate"}; output lines: {"id", "codebleu",
"ngram_match_score", "weighted_ngram_match_score", "syntax_match_score", "dataflow_match_score"}.
Run with PYTHONHASHSEED=0 (codebleu's set-ordered dataflow depends on the hash seed).
Usage: python codebleu_ref.py CORPUS.jsonl [--time]
(--time: print {"pairs", "seconds", "cpu_seconds"} of the scoring loop instead of the scores)
"""
import json
import logging
import sys
import time

from codebleu import calc_codebleu

logging.disable(logging.WARNING)


def main():
    path = sys.argv[1]
    timed = "--time" in sys.argv
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    start = time.perf_counter()
    cpu_start = time.process_time()
    out = []
    for row in rows:
        s = calc_codebleu([row["reference"]], [row["candidate"]], lang=row["lang"])
        out.append({"id": row["id"], **{k: float(v) for k, v in s.items()}})
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if timed:
        print(json.dumps({"pairs": len(rows), "seconds": elapsed, "cpu_seconds": cpu}))
    else:
        for o in out:
            print(json.dumps(o))


if __name__ == "__main__":
    main()
