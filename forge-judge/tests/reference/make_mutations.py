"""Write a larger, seeded set of reference/candidate pairs for a compat-mode agreement run.

Each pair takes a reference from tests/data/codebleu_corpus.jsonl and a candidate made by 1-3
random edits of it: delete, duplicate or swap lines, rename one identifier everywhere, cut
the text at a random character, replace an operator, or splice in a line of another snippet
of the same language. Many candidates do not parse (error recovery), many keep most of the
dataflow. Deterministic for a given seed.

    python3 make_mutations.py [N] [SEED] > /tmp/mutations.jsonl
    cargo run --release -p forge-judge --example codebleu_vs_python -- \
        --corpus /tmp/mutations.jsonl --pairs N --rounds 1
"""
import json
import random
import re
import sys
from pathlib import Path

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
SEED = int(sys.argv[2]) if len(sys.argv) > 2 else 7
rng = random.Random(SEED)

corpus = Path(__file__).resolve().parent.parent / "data" / "codebleu_corpus.jsonl"
rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
refs = {}
for r in rows:
    refs.setdefault(r["lang"], [])
    if r["reference"] not in refs[r["lang"]]:
        refs[r["lang"]].append(r["reference"])


def edit(code, lang):
    lines = code.split("\n")
    op = rng.randrange(8)
    if op == 0 and len(lines) > 1:
        del lines[rng.randrange(len(lines))]
    elif op == 1:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    elif op == 2 and len(lines) > 2:
        i = rng.randrange(len(lines) - 1)
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    elif op == 3:
        names = sorted(set(re.findall(r"\b[a-z_][a-z0-9_]*\b", code)))
        if names:
            a = rng.choice(names)
            return re.sub(r"\b%s\b" % re.escape(a), a + "_x", code)
    elif op == 4 and code:
        return code[: rng.randrange(len(code))]
    elif op == 5:
        for a, b in rng.sample([(" + ", " - "), (" = ", " += "), ("==", "!="), ("<", "<="), (" * ", " / ")], 5):
            if a in code:
                return code.replace(a, b, 1)
    elif op == 6:
        other = rng.choice(refs[lang]).split("\n")
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(other))
    else:
        i = rng.randrange(len(lines))
        lines[i] = lines[i].strip()
    return "\n".join(lines)


for k in range(N):
    lang = rng.choice(sorted(refs))
    ref = rng.choice(refs[lang])
    cand = ref
    for _ in range(rng.randrange(1, 4)):
        cand = edit(cand, lang)
    print(json.dumps({"id": f"mut/{k}", "lang": lang, "reference": ref, "candidate": cand}))
