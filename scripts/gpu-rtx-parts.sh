#!/usr/bin/env bash
# OPTIONAL, not part of the GPU check and not in the first device run (benchmarks/README.md: only
# with 5+ device minutes left after a check that exited 0): TensorRT-RTX on the GPU machine.
# Its libraries come as a 95 MB wheel, more than one device run takes along (64 MiB with the
# working tree), so they travel in two parts over two back-to-back runs on the same machine:
#
#   .rtx-a/   the first part of the tensorrt_rtx_cu13_libs wheel
#   .rtx-b/   the rest, the cp312 bindings wheel, the pure-Python tensorrt_rtx package, sha256s
#
# Here:   scripts/gpu-rtx-parts.sh        (PYTHON=... an interpreter with pip and tensorrt_rtx installed)
# There, right after the GPU check (the machine is given back after 30 s idle):
#   run(command="mkdir -p /tmp/rtx-parts && cp .rtx-a/* /tmp/rtx-parts/ && ls -la /tmp/rtx-parts",
#       carry=[".rtx-a"], timeout_s=60)
#   run(command="bash scripts/gpu-rtx.sh", carry=[".rtx-b", ".whl"], timeout_s=240)
# The second call joins the parts, installs them into /tmp/rtx-site and runs benchmarks/gpu_rtx.py.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VERSION=1.7.1.116
PART_BYTES=$((50 * 1024 * 1024))
LIMIT=$((64 * 1024 * 1024))
log() { printf '[gpu-rtx-parts] %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
for d in .rtx-a .rtx-b; do
  git check-ignore -q "$d/" || die "$d/ is not git-ignored (add /$d/ to .gitignore)"
done
pkg=$("$PY" -c 'import os, tensorrt_rtx; print(os.path.dirname(tensorrt_rtx.__file__))' 2>/dev/null) \
  || die "$PY has no tensorrt_rtx: its pure-Python package (an sdist there cannot be built) is taken from here"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "downloading tensorrt_rtx_cu13_libs and _bindings $VERSION for cp312 manylinux x86_64"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$tmp" "tensorrt_rtx_cu13_libs==$VERSION" "tensorrt_rtx_cu13_bindings==$VERSION"
libs=$(ls "$tmp"/tensorrt_rtx_cu13_libs-*.whl)
bindings=$(ls "$tmp"/tensorrt_rtx_cu13_bindings-*cp312*.whl)

rm -rf .rtx-a .rtx-b
mkdir -p .rtx-a .rtx-b
split -b "$PART_BYTES" -d "$libs" "$tmp/libs.part-"
mv "$tmp/libs.part-00" .rtx-a/
mv "$tmp"/libs.part-0[1-9] .rtx-b/
cp "$bindings" .rtx-b/
tar -C "$(dirname "$pkg")" --exclude=__pycache__ -czf .rtx-b/tensorrt_rtx-pkg.tar.gz tensorrt_rtx
basename "$libs" > .rtx-b/libs.name
(cd "$tmp" && sha256sum "$(basename "$libs")") > .rtx-b/libs.sha256

tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null \
       | awk '{s += $1} END {print s + 0}')
whl=$(du -sb .whl 2>/dev/null | cut -f1 || echo 0)
for d in .rtx-a .rtx-b; do
  size=$(du -sb "$d" | cut -f1)
  extra=0; [ "$d" = .rtx-b ] && extra=${whl:-0}
  total=$((tree + size + extra))
  log "$d: $((size / 1024)) KiB; with the tree$([ "$d" = .rtx-b ] && echo ' and .whl'): $((total / 1024)) KiB"
  [ "$total" -le "$LIMIT" ] || die "$d travels $total bytes, over 64 MiB"
done
log "done: two device calls, back to back (see the header of this script)"
