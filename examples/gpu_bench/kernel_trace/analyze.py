#!/usr/bin/env python3
"""Per-step breakdown of a kernel_trace trace (see kernel_trace.c).

    python3 analyze.py TRACE.tsv[.xz] [--steps N] [--gap-ms G] [--top K]

A training step ends in a host synchronisation, so the GPU idles between
steps: the trace is cut into segments at idle gaps longer than `--gap-ms`,
and the last `--steps` segments with at least `--min-kernels` kernels are
taken as the steady-state steps. For those it prints, per step: wall time
(first kernel of the step to the first of the next), GPU busy time (union
of kernel intervals), kernel count, time by kernel class, the kernels with
the most time, the idle gaps by length, and the CUDA driver calls made on
the host while the steps ran.
"""
import argparse
import collections
import lzma
import re
import shutil
import subprocess
import sys


def read(path):
    opener = lzma.open if path.endswith(".xz") else open
    kernels, copies, api = [], [], []
    with opener(path, "rt", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4:
                continue
            kind, start, end = parts[0], int(parts[1]), int(parts[2])
            if kind == "K":
                kernels.append((start, end, parts[3]))
            elif kind in ("M", "S"):
                copies.append((start, end, kind, int(parts[3])))
            elif kind in ("D", "R"):
                api.append((start, end, ("runtime " if kind == "R" else "") + parts[3]))
    kernels.sort()
    copies.sort()
    api.sort()
    return kernels, copies, api


def classify(name):
    n = name.lower()
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "cublas", "matmul")):
        return "matmul (cuBLAS)"
    if any(s in n for s in ("sdpa", "flash", "fmha", "attention", "cudnn")):
        return "attention"
    if "rms" in n or "layer_norm" in n or "layernorm" in n:
        return "norm"
    if "rope" in n:
        return "rope"
    if "reduce" in n:
        return "reduction"
    if "softmax" in n or "logsumexp" in n:
        return "softmax"
    if "copy" in n or "concat" in n or "gather" in n or "scatter" in n:
        return "copy/gather"
    if "arg" in n:
        return "arg"
    if "binary" in n or "unary" in n or "ternary" in n:
        return "elementwise (unfused)"
    if re.search(r"(^|[^a-z])kernel\d*|fused|compiled", n):
        return "elementwise (compiled)"
    return "other"


def demangle(names):
    tool = shutil.which("c++filt")
    if tool is None:
        return {n: n for n in names}
    names = list(names)
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout
    return dict(zip(names, out.split("\n")))


def short(name, width):
    # Drop template arguments past the first level and argument lists.
    name = re.sub(r"\(.*\)$", "", name)
    return name if len(name) <= width else name[: width - 1] + "…"


def segments(kernels, gap_ns):
    segs, cur = [], [kernels[0]]
    last_end = kernels[0][1]
    for k in kernels[1:]:
        if k[0] - last_end > gap_ns:
            segs.append(cur)
            cur = []
        cur.append(k)
        last_end = max(last_end, k[1])
    segs.append(cur)
    return segs


def busy(intervals):
    total, cur_s, cur_e = 0, None, None
    for s, e, *_ in intervals:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--gap-ms", type=float, default=1.0)
    ap.add_argument("--min-kernels", type=int, default=100)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--segments", action="store_true", help="list every segment")
    a = ap.parse_args()

    kernels, copies, api = read(a.trace)
    if not kernels:
        sys.exit(f"{a.trace}: no kernel records")
    segs = segments(kernels, int(a.gap_ms * 1e6))
    t0 = kernels[0][0]
    if a.segments:
        for i, s in enumerate(segs):
            print(f"segment {i:3d}: at {(s[0][0] - t0) / 1e6:10.2f} ms, {len(s):6d} kernels, "
                  f"{(max(k[1] for k in s) - s[0][0]) / 1e6:9.2f} ms span, {busy(s) / 1e6:8.2f} ms busy")
    big = [i for i, s in enumerate(segs) if len(s) >= a.min_kernels]
    # Each chosen step needs a successor for its wall time: skip the last.
    chosen = big[-a.steps - 1:-1] if len(big) > 1 else big
    if not chosen:
        sys.exit(f"{a.trace}: no segment with {a.min_kernels}+ kernels (try --gap-ms)")
    n = len(chosen)
    wall = 0
    for i in chosen:
        start = segs[i][0][0]
        nxt = segs[i + 1][0][0] if i + 1 < len(segs) else max(k[1] for k in segs[i])
        wall += nxt - start
    ks = [k for i in chosen for k in segs[i]]
    lo, hi = segs[chosen[0]][0][0], segs[chosen[0]][0][0] + wall
    counts = [len(segs[i]) for i in chosen]
    print(f"{a.trace}: {len(kernels)} kernels in all, {len(segs)} segments; "
          f"steps = segments {chosen} ({counts} kernels)")
    b = busy(ks)
    ksum = sum(e - s for s, e, _ in ks)
    print(f"per step: wall {wall / n / 1e6:.2f} ms, GPU busy {b / n / 1e6:.2f} ms "
          f"({100 * b / wall:.0f} %), {len(ks) / n:.0f} kernels, "
          f"mean kernel {ksum / max(len(ks), 1) / 1e3:.1f} us")
    gaps = collections.Counter()
    gap_t = collections.Counter()
    for i in chosen:
        last_end = None
        for s, e, _ in segs[i]:
            if last_end is not None and s > last_end:
                g = s - last_end
                key = "<5us" if g < 5e3 else "5-20us" if g < 2e4 else "20-100us" if g < 1e5 else ">=100us"
                gaps[key] += 1
                gap_t[key] += g
            last_end = e if last_end is None else max(last_end, e)
    print("idle gaps inside steps; the rest of the idle time is between steps (per step): " + ", ".join(
        f"{k}: {gaps[k] / n:.0f} ({gap_t[k] / n / 1e6:.2f} ms)" for k in ("<5us", "5-20us", "20-100us", ">=100us")))
    by_class = collections.defaultdict(lambda: [0, 0])
    by_name = collections.defaultdict(lambda: [0, 0])
    names = demangle({k[2] for k in ks})
    for s, e, name in ks:
        c = by_class[classify(names[name])]
        c[0] += 1
        c[1] += e - s
        d = by_name[names[name]]
        d[0] += 1
        d[1] += e - s
    print("\nby class (per step):")
    for cls, (cnt, t) in sorted(by_class.items(), key=lambda x: -x[1][1]):
        print(f"  {cls:24s} {cnt / n:7.0f} kernels {t / n / 1e6:8.2f} ms  {100 * t / ksum:5.1f} %")
    print(f"\ntop {a.top} kernels by time (per step):")
    for name, (cnt, t) in sorted(by_name.items(), key=lambda x: -x[1][1])[: a.top]:
        print(f"  {t / n / 1e6:8.3f} ms {cnt / n:6.0f}x  {short(name, 110)}")
    cp = [c for c in copies if lo <= c[0] < hi]
    if cp:
        print(f"\nmemcpy/memset (per step): {len(cp) / n:.0f}, {sum(c[1] - c[0] for c in cp) / n / 1e6:.2f} ms, "
              f"{sum(c[3] for c in cp) / n / 1e6:.1f} MB")
    ap_ = [x for x in api if lo <= x[0] < hi]
    if ap_:
        by_api = collections.defaultdict(lambda: [0, 0])
        for s, e, name in ap_:
            by_api[name][0] += 1
            by_api[name][1] += e - s
        tot = sum(v[1] for v in by_api.values())
        print(f"\nCUDA API calls on the host (per step; runtime calls include the driver calls they make): {len(ap_) / n:.0f} calls, {tot / n / 1e6:.2f} ms")
        for name, (cnt, t) in sorted(by_api.items(), key=lambda x: -x[1][1])[:12]:
            print(f"  {t / n / 1e6:8.3f} ms {cnt / n:7.0f}x  {name}")


if __name__ == "__main__":
    main()
