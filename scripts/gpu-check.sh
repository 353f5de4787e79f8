#!/usr/bin/env bash
# The GPU check in one command, from a bare GPU machine to result files in $OUT (or --out DIR):
# environment, the carried wheels, the sm_90 plugin build, the kernel parity tests, the sampler
# benchmark against copy/eager/compile with the static prediction beside it, an Nsight Compute
# profile, the other gpu tests. Every step has its own time limit inside a 300 s wall budget
# (--budget-s), so a rerun fits; results are written as they are measured, and SIGTERM leaves
# the summary (complete: false, and why). Exit 0: the main results (parity, sampler) measured.
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
