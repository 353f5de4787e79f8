"""TensorRT / TensorRT-RTX backend: plugin loading, engine builds, inspection, a runner.

Nothing here imports TensorRT until it is used: ``from stn_deploy import trt`` is cheap,
and the attributes below load their module on first access.

Public API:
    get_backend(choice): the ``tensorrt`` or ``tensorrt_rtx`` module behind a ``Backend``.
    BuildOptions, ShapeRange, parse_shape_spec: what to build.
    build(options) -> BuildResult, build_many(options_list) -> [BuildOutcome].
    inspect(path) -> dict: engine, sidecar, and what needs a GPU to read.
    EngineRunner: a Polygraphy runner for engines (needs a GPU).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Backend": "backend", "get_backend": "backend", "available_backends": "backend",
    "gpu_available": "backend", "load_plugin_library": "backend",
    "BuildOptions": "options", "BuildResult": "options", "ShapeRange": "options",
    "parse_shape_spec": "options", "sidecar_path": "options",
    "BACKEND_CHOICES": "options", "PRECISION_CHOICES": "options",
    "COMPUTE_CAPABILITY_CHOICES": "options",
    "build": "builder", "build_many": "builder", "build_all": "builder", "BuildError": "builder",
    "BuildOutcome": "builder",
    "inspect": "inspector", "format_report": "inspector",
    "EngineRunner": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"stn_deploy.trt.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'stn_deploy.trt' has no attribute {name!r}")
