#!/usr/bin/env bash
# Builds libkernel_trace.so (CUPTI activity tracer, see kernel_trace.c) into
# OUT (default: ./build), next to the CUPTI library it loads, from NVIDIA's
# PyPI wheels (CUPTI, the CUDA runtime and CRT headers; CUDA 13.0 to match
# mlx-cuda-13 0.32.2). Needs pip and a C compiler; no CUDA toolkit.
#
#   examples/gpu_bench/kernel_trace/build.sh [OUT]
#
# Then on the GPU machine (copy OUT there):
#   CUDA_INJECTION64_PATH=OUT/libkernel_trace.so KERNEL_TRACE_OUT=t.tsv <command>
#   python3 examples/gpu_bench/kernel_trace/analyze.py t.tsv --gap-ms 6 --steps 3
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-$here/build}" && cd "${1:-$here/build}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps -d "$work" \
  "nvidia-cuda-cupti==13.0.85" "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-crt==13.0.88"
for w in "$work"/*.whl; do python3 -m zipfile -e "$w" "$work/x"; done
inc="$work/x/nvidia/cu13/include"
cp "$work/x/nvidia/cu13/lib/libcupti.so.13" "$out/"
"${CC:-cc}" -O2 -shared -fPIC -Wall -Wextra -o "$out/libkernel_trace.so" \
  "$here/kernel_trace.c" -I"$inc" -L"$out" -l:libcupti.so.13 -Wl,-rpath,'$ORIGIN'
echo "built $out/libkernel_trace.so (with libcupti.so.13 beside it)"
