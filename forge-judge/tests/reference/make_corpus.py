"""Write tests/data/codebleu_corpus.jsonl: reference/candidate pairs for the CodeBLEU peer test.

Deterministic: base snippets x transforms (identical, renamed, reordered, partially wrong,
truncated) plus degenerate pairs and regression pairs. Run from this folder:

    python3 make_corpus.py > ../data/codebleu_corpus.jsonl
    PYTHONHASHSEED=0 <peers>/codebleu-venv/bin/python codebleu_ref.py ../data/codebleu_corpus.jsonl \
        > codebleu_expected.jsonl

The second line stores codebleu 0.7.0's scores (tree-sitter-python 0.21.0, tree-sitter-rust
0.21.2) beside this script; tests/codebleu_peer.rs compares compat mode with that file always
and with a live run of the peer when it is installed.
"""
import json
import re

PY = {
"mean": '''def mean(values):
    """Return the arithmetic mean."""
    total = 0
    count = 0
    for v in values:
        total += v
        count += 1
    if count == 0:
        return 0.0
    return total / count
''',
"fib": '''def fib(n):
    a, b = 0, 1
    i = 0
    while i < n:
        a, b = b, a + b
        i += 1
    return a
''',
"words": '''import re

def word_counts(text, lower=True):
    # count words in text
    counts = {}
    if lower:
        text = text.lower()
    for word in re.findall(r"\\w+", text):
        counts[word] = counts.get(word, 0) + 1
    return counts
''',
"stack": '''class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from empty stack")
        return self.items.pop()
''',
"search": '''def binary_search(xs, target):
    lo, hi = 0, len(xs) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if xs[mid] == target:
            return mid
        elif xs[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1
''',
"comp": '''def squares_of_evens(nums):
    result = [x * x for x in nums if x % 2 == 0]
    total = sum(result)
    best = max(result) if result else None
    return result, total, best
''',
}

RS = {
"sum": '''/// Sum of the even numbers.
fn sum_even(xs: &[i64]) -> i64 {
    let mut total = 0;
    for x in xs {
        if x % 2 == 0 {
            total += x;
        }
    }
    total
}
''',
"fib": '''fn fib(n: u32) -> u64 {
    let mut a = 0u64;
    let mut b = 1u64;
    let mut i = 0;
    while i < n {
        let t = a + b;
        a = b;
        b = t;
        i += 1;
    }
    a
}
''',
"point": '''#[derive(Debug, Clone, Copy)]
struct Point {
    x: f64,
    y: f64,
}

impl Point {
    fn dist(&self, other: &Point) -> f64 {
        let dx = self.x - other.x;
        let dy = self.y - other.y;
        (dx * dx + dy * dy).sqrt()
    }
}
''',
"parse": '''use std::collections::HashMap;

fn count_words(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        // normalise case
        let w = word.to_lowercase();
        *counts.entry(w).or_insert(0) += 1;
    }
    counts
}
''',
"search": '''fn binary_search(xs: &[i32], target: i32) -> Option<usize> {
    let mut lo = 0;
    let mut hi = xs.len();
    while lo < hi {
        let mid = (lo + hi) / 2;
        match xs[mid].cmp(&target) {
            std::cmp::Ordering::Equal => return Some(mid),
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    None
}
''',
"opt": '''fn first_long<'a>(words: &[&'a str], min: usize) -> Option<&'a str> {
    let found = words.iter().find(|w| w.len() >= min);
    if let Some(w) = found {
        let s: &'a str = w;
        return Some(s);
    }
    None
}
''',
}

RENAMES = {
    "python": [("total", "acc"), ("count", "n_items"), ("values", "xs"), ("counts", "freq"), ("items", "data"),
               ("result", "out"), ("lo", "left"), ("hi", "right"), ("mid", "m"), ("word", "token"), ("i", "k")],
    "rust": [("total", "acc"), ("counts", "freq"), ("lo", "left"), ("hi", "right"), ("mid", "m"), ("word", "token"),
             ("dx", "ax"), ("dy", "ay"), ("found", "hit"), ("i", "k"), ("t", "tmp")],
}


def rename(code, lang):
    for a, b in RENAMES[lang]:
        code = re.sub(r"\b%s\b" % a, b, code)
    return code


def reorder(code):
    # swap the first two lines of the first indented run of simple statements at the same indentation
    lines = code.split("\n")
    for i in range(1, len(lines) - 1):
        a, b = lines[i], lines[i + 1]
        ia = len(a) - len(a.lstrip())
        ib = len(b) - len(b.lstrip())
        if ia == ib and ia > 0 and a.strip() and b.strip() and not a.rstrip().endswith((":", "{")) \
                and not b.rstrip().endswith((":", "{")) and not a.strip().startswith(("}", "return", "#", "//", '"""')) \
                and not b.strip().startswith(("}", "return", "#", "//", '"""')):
            lines[i], lines[i + 1] = b, a
            return "\n".join(lines)
    return code


def wrong(code):
    for a, b in [(" + ", " - "), (" += ", " -= "), ("== 0", "== 1"), ("<=", "<"), (" * ", " + "), ("0", "1")]:
        if a in code:
            return code.replace(a, b, 1)
    return code + "\n"


def truncate(code):
    lines = code.split("\n")
    return "\n".join(lines[: max(1, len(lines) * 2 // 3)])


pairs = []
for lang, base in (("python", PY), ("rust", RS)):
    for name, code in base.items():
        pairs.append((f"{lang}/{name}/identical", lang, code, code))
        pairs.append((f"{lang}/{name}/renamed", lang, code, rename(code, lang)))
        pairs.append((f"{lang}/{name}/reordered", lang, code, reorder(code)))
        pairs.append((f"{lang}/{name}/wrong", lang, code, wrong(code)))
        pairs.append((f"{lang}/{name}/truncated", lang, code, truncate(code)))

DEGENERATE = [
    ("python/empty-candidate", "python", PY["mean"], ""),
    ("python/one-token", "python", PY["fib"], "pass"),
    ("python/no-dataflow", "python", "import os\n", "import sys\n"),
    ("python/comment-only", "python", "# nothing here\n", "# something else\n"),
    ("python/other-function", "python", PY["mean"], PY["stack"]),
    ("python/syntax-error", "python", PY["fib"], "def fib(n:\n    return n +\n"),
    ("rust/empty-candidate", "rust", RS["sum"], ""),
    ("rust/one-token", "rust", RS["fib"], "todo!()"),
    ("rust/no-dataflow", "rust", "use std::io;\n", "use std::fmt;\n"),
    ("rust/other-function", "rust", RS["sum"], RS["point"]),
    ("rust/syntax-error", "rust", RS["fib"], "fn fib(n: u32 -> u64 {\n    let a = ;\n"),
    ("rust/comments", "rust", RS["parse"], "/* block */\n" + RS["parse"].replace("// normalise case", "// lower")),
]
pairs += DEGENERATE

# Regression pairs: trees whose error recovery depends on the grammar version (these differed
# while compat mode parsed with tree-sitter-python 0.25 / tree-sitter-rust 0.24 and mapped node
# types; codebleu 0.7.0 parses with 0.21.0 / 0.21.2, and so does compat mode now).
REGRESSION = [
    ("python/syntax-error/extra-line", "python", PY["fib"], "def fib(n:\n    return n +\n\nresult = None\n"),
    ("rust/syntax-error/extra-line", "rust", RS["fib"], "fn fib(n: u32 -> u64 {\n    let a = ;\n\nlet result = 0;\n"),
]
# Every snippet cut in the middle (mid-token, mid-line): error recovery on all of them.
for lang, base in (("python", PY), ("rust", RS)):
    for name, code in base.items():
        REGRESSION.append((f"{lang}/{name}/cut-mid-line", lang, code, code[: len(code) // 2]))
# Generic parameters: the node shapes that changed between tree-sitter-rust 0.21 and 0.23.
GENERIC = """fn pick<'a, 'b: 'a, T: Clone + Default, U = u8>(xs: &'a [T], _u: U) -> T where T: 'b {
    let first = xs.first().cloned().unwrap_or_default();
    first
}
"""
REGRESSION.append(("rust/generics/renamed", "rust", GENERIC, GENERIC.replace("first", "head")))
REGRESSION.append(("rust/generics/no-bounds", "rust", GENERIC, GENERIC.replace(": Clone + Default", "")))
pairs += REGRESSION
for pid, lang, ref, cand in pairs:
    print(json.dumps({"id": pid, "lang": lang, "reference": ref, "candidate": cand}))
