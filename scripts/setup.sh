#!/usr/bin/env bash
# Idempotent set-up from nothing: .venv with the package and its test extras, TensorRT-RTX
# (CPU-only AOT engine builds), TensorRT 10.14 headers, and the plugin/kernel library.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=$ROOT/.venv
log() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python

# Reinstall only when the dependency list changed.
stamp=$VENV/.stn-deploy-deps
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing dependencies"
  "$VPY" -m pip install -q --upgrade pip
  # torch 2.13.0 first: the CPU build on local disk (a newer torch pulls gigabytes).
  "$VPY" -m pip install -q "torch==2.13.0"
  "$VPY" -m pip install -q -e ".[test,kernels]"
  echo "$want" > "$stamp"
fi

# The real-model corpus of tests/test_corpus.py: its libraries with --no-deps beside our CPU
# torch (what they declare would pull torchvision, a CUDA build that breaks beside it).
corpus_req=tests/corpus/requirements.txt
corpus_stamp=$VENV/.stn-deploy-corpus
corpus_want=$(sha256sum "$corpus_req" | cut -d' ' -f1)
if [ "$(cat "$corpus_stamp" 2>/dev/null)" != "$corpus_want" ]; then
  log "installing the test corpus libraries ($corpus_req, --no-deps)"
  "$VPY" -m pip install -q --no-deps -r "$corpus_req"
  echo "$corpus_want" > "$corpus_stamp"
fi

# TensorRT-RTX's ONNX parser dlopens libtensorrt_rtx.so (unversioned): provide the symlink.
rtx_libs=$("$VPY" - <<'PYEOF'
import importlib.util, os
spec = importlib.util.find_spec("tensorrt_rtx_libs")
print(os.path.dirname(spec.origin) if spec and spec.origin else "")
PYEOF
)
if [ -n "$rtx_libs" ] && [ -e "$rtx_libs/libtensorrt_rtx.so.1" ] && [ ! -e "$rtx_libs/libtensorrt_rtx.so" ]; then
  ln -sf libtensorrt_rtx.so.1 "$rtx_libs/libtensorrt_rtx.so"
  log "linked $rtx_libs/libtensorrt_rtx.so"
fi

# TensorRT 10.14 C++ headers (Apache-2.0) from the kernel-lens wheel; no libnvinfer needed.
TRT_INC=$ROOT/third_party/tensorrt/include
if [ ! -f "$TRT_INC/NvInferRuntime.h" ]; then
  log "fetching TensorRT headers (kernel-lens==2.0.1)"
  "$VPY" scripts/fetch_wheel_files.py kernel-lens==2.0.1 "$TRT_INC" "kernel_lens/include/tensorrt/="
fi

# Triton Inference Server 2.51 (CPU-capable, python backend) from the nvidia-pytriton wheel:
# only its server, unpacked; pip never installs pytriton (it pins numpy<2).
TRITON=$ROOT/third_party/triton
if [ ! -x "$TRITON/pytriton/tritonserver/bin/tritonserver" ]; then
  log "fetching Triton Inference Server (nvidia-pytriton==0.7.0, server only)"
  "$VPY" scripts/fetch_wheel_files.py nvidia-pytriton==0.7.0 "$TRITON" pytriton/tritonserver/ nvidia_pytriton.libs/
fi
# The python backend runs model.py in the first python3 on its PATH: a small environment of
# its own with numpy<2 (numpy 2 there silently corrupts tensors) and ONNX Runtime.
TPY_ENV=$TRITON/python-env
if [ ! -f "$TPY_ENV/.ready" ]; then
  log "creating the Triton python-backend environment $TPY_ENV (numpy<2, onnxruntime)"
  rm -rf "$TPY_ENV"
  "$PY" -m venv "$TPY_ENV"
  "$TPY_ENV/bin/python" -m pip install -q "numpy>=1.26,<2" "onnxruntime>=1.20"
  touch "$TPY_ENV/.ready"
fi
# The python backend starts the stub built for the Python version of that environment.
stub=$TRITON/pytriton/tritonserver/backends/python/triton_python_backend_stub
if [ ! -x "$stub" ]; then
  ver=$("$TPY_ENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  src=$TRITON/pytriton/tritonserver/python_backend_stubs/$ver/triton_python_backend_stub
  if [ -f "$src" ]; then
    cp "$src" "$stub"
  else
    log "no Triton python-backend stub for Python $ver (3.8-3.13 ship): python-backend models will not load"
  fi
fi

# The plugin + kernel library (CPU reference and CUDA kernels).
if [ -f plugins/CMakeLists.txt ]; then
  "$VENV/bin/stn-deploy" plugins build
fi
log "ready: $VENV"
