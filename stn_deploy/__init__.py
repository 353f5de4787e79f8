"""stn-deploy: Spatial Transformer Networks from PyTorch training to TensorRT engines.

The jobs the ``stn-deploy`` commands run, as a Python API (each takes its options dataclass)::

    import stn_deploy as sd

    sd.train(sd.TrainOptions("st-cnn-affine", "RTS", output_dir="run"))
    sd.export(sd.ExportOptions("run/model.pt", "run/model.onnx", ops="plugin"))
    sd.build(sd.BuildOptions("run/model.onnx", "run/model.engine"))
    print(sd.validate(sd.ValidateOptions("run/model.onnx", "run/model.pt")).passed)

``train``, ``export``, ``doctor``, ``validate``, ``run`` and ``bench`` are also the modules of
those names (``stn_deploy.train.TrainOptions`` ...): calling the module runs its job. Nothing
heavy is imported until a job or option class is first used (``import stn_deploy`` loads
neither torch nor TensorRT).
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

#: Job name -> (module, attribute): the function the CLI calls, looked up there at each call.
JOBS = {
    "train": ("stn_deploy.train", "train"),
    "export": ("stn_deploy.export", "export"),
    "rewrite": ("stn_deploy.rewriter", "rewrite"),
    "doctor": ("stn_deploy.doctor", "doctor"),
    "build": ("stn_deploy.trt.builder", "build"),
    "validate": ("stn_deploy.validate", "validate"),
    "bench": ("stn_deploy.bench", "bench"),
    "run": ("stn_deploy.run", "run"),
}
#: Jobs that are also the name of their module (made callable by ``_callable_module``).
_MODULE_JOBS = frozenset({"train", "export", "doctor", "validate", "run", "bench"})
#: Options dataclass (and result helpers) -> module.
OPTIONS = {
    "TrainOptions": "stn_deploy.train",
    "ExportOptions": "stn_deploy.export",
    "RewriteOptions": "stn_deploy.rewriter",
    "BuildOptions": "stn_deploy.trt.options",
    "ValidateOptions": "stn_deploy.validate",
    "BenchOptions": "stn_deploy.bench.options",
    "RunOptions": "stn_deploy.run",
    "SamplerSettings": "stn_deploy.schema",
    "UserError": "stn_deploy.errors",
    "ValidationFailed": "stn_deploy.errors",
}

__all__ = [
    "BenchOptions",
    "BuildOptions",
    "ExportOptions",
    "RewriteOptions",
    "RunOptions",
    "SamplerSettings",
    "TrainOptions",
    "UserError",
    "ValidateOptions",
    "ValidationFailed",
    "__version__",
    "bench",
    "build",
    "doctor",
    "export",
    "rewrite",
    "run",
    "train",
    "validate",
]


class _JobModule(types.ModuleType):
    """A module that is also its job: ``stn_deploy.train(options)`` is
    ``stn_deploy.train.train(options)``. Needed because ``stn_deploy.train`` must stay the
    module (``from stn_deploy import train`` imports it) while the API calls it."""

    def __call__(self, *args, **kwargs):
        module, function = JOBS[self.__name__.rsplit(".", 1)[-1]]
        return getattr(importlib.import_module(module), function)(*args, **kwargs)


def _callable_module(name: str) -> None:
    """Make the module ``name`` (``stn_deploy.<job>``) callable as its job."""
    sys.modules[name].__class__ = _JobModule


def __getattr__(name: str):
    if name in JOBS:
        module, function = JOBS[name]
        if name in _MODULE_JOBS:
            return importlib.import_module(f"stn_deploy.{name}")  # a callable module
        return getattr(importlib.import_module(module), function)
    if name in OPTIONS:
        return getattr(importlib.import_module(OPTIONS[name]), name)
    raise AttributeError(f"module 'stn_deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
