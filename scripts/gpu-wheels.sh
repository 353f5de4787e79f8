#!/usr/bin/env bash
# Prepare .whl/, the one git-ignored folder the GPU check takes along (device run: carry [".whl"]).
# The GPU machine has no package registry, so everything it lacks travels in it:
#   .whl/*.whl              the wheels of scripts/gpu-wheels.txt, for CPython 3.12 manylinux x86_64
#   .whl/tensorrt-include/  the TensorRT 10.14 headers the plugin build needs (third_party/ is ignored)
#   .whl/prebuilt/          this checkout's built plugin library: the fallback if the build there fails
# and checks that the working tree plus .whl/ stay under the 64 MiB a device run takes along.
#
#   scripts/gpu-wheels.sh            (PYTHON=... to choose the interpreter whose pip downloads)
#
# Run it in the checkout the device tool sends (the session's own repository root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHL=$ROOT/.whl
LIMIT=$((64 * 1024 * 1024))
log() { printf '[gpu-wheels] %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
"$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip; set PYTHON to an interpreter with pip"

git check-ignore -q .whl/ || die ".whl/ is not git-ignored: it would travel twice (add /.whl/ to .gitignore)"

rm -rf "$WHL"
mkdir -p "$WHL"

# pip matches each manylinux tag exactly: name the ones these wheels are published for.
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/gpu-wheels.txt | grep -v '^$')
[ "${#wanted[@]}" -gt 0 ] || die "scripts/gpu-wheels.txt lists no wheel"
log "downloading ${#wanted[@]} wheels for cp312 manylinux x86_64: ${wanted[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHL" "${wanted[@]}"
for spec in "${wanted[@]}"; do
  name=${spec%%==*}; version=${spec#*==}
  stem=$(printf '%s' "$name" | tr '-' '_')
  ls "$WHL/${stem}-${version}-"*.whl >/dev/null 2>&1 || die "no wheel for $spec in $WHL"
done

# TensorRT headers: the copy scripts/setup.sh fetched, else the same wheel it fetches them from.
TRT_INC=$ROOT/third_party/tensorrt/include
if [ ! -f "$TRT_INC/NvInferRuntime.h" ]; then
  log "fetching TensorRT headers (kernel-lens==2.0.1)"
  "$PY" "$ROOT/scripts/fetch_wheel_files.py" kernel-lens==2.0.1 "$TRT_INC" "kernel_lens/include/tensorrt/="
fi
cp -r "$TRT_INC" "$WHL/tensorrt-include"

# The fallback library (built here, sm_90 among its targets): used there only if the build fails.
LIB=${STN_DEPLOY_PLUGIN_LIBRARY:-$ROOT/plugins/build/libstn_deploy_plugins.so}
if [ -f "$LIB" ]; then
  mkdir -p "$WHL/prebuilt"
  cp "$LIB" "$WHL/prebuilt/libstn_deploy_plugins.so"
  {
    echo "source: $LIB"
    echo "commit of the library's checkout: $(git -C "$(dirname "$LIB")" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "plugin sources changed there since: $(git -C "$(dirname "$LIB")" status --porcelain -- . 2>/dev/null | wc -l) files"
    echo "sha256: $(sha256sum "$LIB" | cut -d' ' -f1)"
    echo "built: $(date -u -r "$LIB" +%Y-%m-%dT%H:%M:%SZ)"
  } > "$WHL/prebuilt/SOURCE.txt"
  log "fallback library: $LIB"
else
  log "no built library at $LIB: no fallback travels (the build there must succeed)"
fi

# The commit this folder was made for: the copy the device tool sends may hold no .git.
{ git rev-parse HEAD; [ -z "$(git status --porcelain --untracked-files=no)" ] || echo "with uncommitted changes"; } > "$WHL/COMMIT"

# What one run takes along: tracked + untracked-not-ignored files, plus .whl/.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null \
       | awk '{s += $1} END {print s + 0}')
whl=$(du -sb "$WHL" | cut -f1)
total=$((tree + whl))
log "working tree $((tree / 1024)) KiB + .whl $((whl / 1024)) KiB = $((total / 1024)) KiB (limit $((LIMIT / 1024)) KiB)"
[ "$total" -le "$LIMIT" ] || die "working tree + .whl = $total bytes, over the 64 MiB a device run takes along"
ls -la "$WHL"
log "done: device run with carry [\".whl\"]"
