#!/bin/sh
# Regenerates tests/data/heldout.txt, the held-out text whose perplexity the
# export tests compare across F16, Q8_0 and Q4_K_M (export_llama_cpp.rs).
#
# It is text no adapter in the tests is trained on, in three parts taken
# from this repository at a fixed commit so that the file is reproducible:
# a short prose passage written for the tests (the first held-out text),
# the architecture guide (English prose with some structure), and
# forge-miner's BM25 module (Rust code). About 3,600 SmolLM2 tokens: long
# enough that a perplexity ratio is not decided by a handful of tokens
# (the first version, the prose passage alone, was 181 tokens).
#
# Run from the repository root: sh forge-core/tests/data/make_heldout.sh
set -eu
commit=b9c3aa4
out=forge-core/tests/data/heldout.txt
tmp="$out.tmp"
{
  git show "$commit:forge-core/tests/data/heldout.txt"
  printf '\n'
  git show "$commit:docs/architecture.md"
  printf '\n'
  git show "$commit:forge-miner/src/bm25.rs"
} > "$tmp"
mv "$tmp" "$out"
