"""TensorRT / TensorRT-RTX flavour: plugin loading, engine builds, inspection, a runner.

Nothing here imports TensorRT until it is used: ``from stn_deploy import trt`` is cheap,
and the attributes below load their module on first access.

Public API:
    get_flavour(choice): the ``tensorrt`` or ``tensorrt_rtx`` module behind a ``Flavour``.
    BuildOptions, ShapeRange, parse_shape_spec: what to build.
    build(options) -> BuildResult, build_many(options_list) -> [BuildOutcome].
    inspect(path) -> dict: engine, sidecar, and what needs a GPU to read.
    EngineRunner: a Polygraphy runner for engines (needs a GPU).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Flavour": "flavour", "get_flavour": "flavour", "available_flavours": "flavour",
    "gpu_available": "flavour", "load_plugin_library": "flavour",
    "BuildOptions": "options", "BuildResult": "options", "ShapeRange": "options",
    "parse_shape_spec": "options", "sidecar_path": "options",
    "FLAVOUR_CHOICES": "options",
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
