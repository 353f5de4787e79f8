#!/usr/bin/env bash
# The GPU check in one command, from a bare GPU machine to result files in $OUT (or --out DIR):
# environment, the carried wheels, the sm_90 plugin build, `pytest -m gpu`, the sampler benchmark
# against copy/eager/compile with the static prediction beside it, an Nsight Compute profile.
# Every step has its own time limit inside a 360 s wall budget (--budget-s), so a rerun fits.
#
#   scripts/gpu-check.sh                    # on the GPU machine (device run, carry [".whl"])
#   scripts/gpu-check.sh --dry-run --out D  # here, no CUDA: every step that needs none
#   scripts/gpu-check.sh --help
#
# Prepare .whl/ here first with scripts/gpu-wheels.sh. benchmarks/README.md has the device call.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py --python "$PY" "$@"
