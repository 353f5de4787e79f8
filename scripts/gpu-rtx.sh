#!/usr/bin/env bash
# OPTIONAL, the second of the two TensorRT-RTX device calls (scripts/gpu-rtx-parts.sh says how):
# joins the wheel the first call left in /tmp/rtx-parts with the rest carried in .rtx-b/,
# installs TensorRT-RTX and the .whl/ wheels into /tmp/rtx-site, and runs benchmarks/gpu_rtx.py
# with the sm_90 plugin library the GPU check built (/tmp/stn-build-sm90) or the carried one.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PARTS=/tmp/rtx-parts
SITE=/tmp/rtx-site
die() { printf 'error: %s\n' "$*" >&2; exit 2; }
[ -f "$PARTS/libs.part-00" ] || die "$PARTS/libs.part-00 is missing: make the first call (carry .rtx-a) just before, on the same machine"
[ -f .rtx-b/libs.name ] || die ".rtx-b/ did not travel: carry [\".rtx-b\", \".whl\"]"
name=$(cat .rtx-b/libs.name)
cat "$PARTS/libs.part-00" .rtx-b/libs.part-0[1-9] > "/tmp/$name" || die "cannot join the parts"
(cd /tmp && sha256sum -c --quiet "$OLDPWD/.rtx-b/libs.sha256") || die "the joined wheel does not match its sha256"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
  "/tmp/$name" .rtx-b/*.whl .whl/*.whl || die "pip install failed"
tar -C "$SITE" -xzf .rtx-b/tensorrt_rtx-pkg.tar.gz
# The RTX ONNX parser dlopens the unversioned name (see /work/shared/DESIGN.md).
[ -e "$SITE/tensorrt_rtx_libs/libtensorrt_rtx.so" ] || ln -s libtensorrt_rtx.so.1 "$SITE/tensorrt_rtx_libs/libtensorrt_rtx.so"
lib=/tmp/stn-build-sm90/libstn_deploy_plugins.so
[ -f "$lib" ] || lib=$PWD/.whl/prebuilt/libstn_deploy_plugins.so
export STN_DEPLOY_PLUGIN_LIBRARY=$lib PYTHONPATH=$PWD:$SITE PYTHONUNBUFFERED=1
echo "plugin library: $lib"
exec "$PY" benchmarks/gpu_rtx.py "$@"
