#!/usr/bin/env bash
# Side-by-side GPU benchmark: Forge (gpu_bench), mlx-lm 0.32.2 on MLX CUDA and
# PyTorch + PEFT, on the same machine in one run. Prints JSON lines (and
# appends them to $2).
#
#   examples/gpu_bench/run_all.sh BUNDLE RESULTS.jsonl DATA.json [STEPS]
#
# BUNDLE is a `cargo xtask bundle-gpu` folder; mlx and mlx-lm must be
# importable by python3 (pip install mlx==0.32.2 mlx-cuda-13==0.32.2 mlx-lm==0.32.2);
# torch, transformers and peft too. SKIP_PISSA=1 leaves out the PiSSA timing.
set -u
bundle="$1"; results="$2"; data="$3"; steps="${4:-12}"
here="$(cd "$(dirname "$0")" && pwd)"
. "$bundle/forge-env.sh"
run() { echo "+ $*" >&2; "$@" | tee -a "$results"; }
# mlx-lm as shipped (MLX's default, CUDA graphs on), and under the launch
# setting Forge picks on CUDA (forge_mlx::prefer_direct_cuda_launches), tagged.
peer_direct() { echo "+ MLX_USE_CUDA_GRAPHS=0 $*" >&2
  MLX_USE_CUDA_GRAPHS=0 "$@" | sed 's/^{/{"mlx_use_cuda_graphs": 0, /' | tee -a "$results"; }
for spec in "smollm2 4" "llama1b 8"; do
  set -- $spec
  run gpu_bench --device gpu train --shape "$1" --batch "$2" --data "$data" --steps "$steps"
  run gpu_bench --device gpu train --shape "$1" --batch "$2" --data "$data" --steps "$steps" --overlap
  run python3 "$here/mlx_lm_train.py" --shape "$1" --batch "$2" --data "$data" --steps "$steps"
  peer_direct python3 "$here/mlx_lm_train.py" --shape "$1" --batch "$2" --data "$data" --steps "$steps"
  run python3 "$here/peft_train.py" --shape "$1" --batch "$2" --data "$data" --steps "$steps"
done
for shape in llama1b smollm2; do
  run gpu_bench --device gpu generate --shape "$shape"
  run python3 "$here/mlx_lm_generate.py" --shape "$shape"
  peer_direct python3 "$here/mlx_lm_generate.py" --shape "$shape"
done
if [ -z "${SKIP_PISSA:-}" ]; then
  for dev in gpu cpu; do
    run gpu_bench --device "$dev" pissa --shape llama1b --niter 4
  done
fi
