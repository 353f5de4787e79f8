"""stn-deploy: Spatial Transformer Networks from PyTorch training to TensorRT engines.

The jobs the ``stn-deploy`` commands run, as plain functions (each takes its options dataclass)::

    import stn_deploy as sd

    sd.train(sd.TrainOptions("st-cnn-affine", "RTS", output_dir="run"))
    sd.export(sd.ExportOptions("run/model.pt", "run/model.onnx", ops="plugin"))
    sd.build(sd.BuildOptions("run/model.onnx", "run/model.engine"))
    print(sd.validate(sd.ValidateOptions("run/model.onnx", "run/model.pt")).passed)

``sd.export_user_module(module, example_inputs, "m.onnx", ops="plugin")`` exports an
``nn.Module`` given directly. The functions live in ``stn_deploy.jobs.<job>`` (``rewrite`` in
``stn_deploy.rewriter``, ``build`` in ``stn_deploy.trt.builder``); the names here are those very
functions, looked up on first use, so nothing heavy is imported until a job or option class is
first used (``import stn_deploy`` loads neither torch nor TensorRT). ``__init__.pyi`` tells type
checkers and editors their signatures.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Job name -> (module, attribute): the function the CLI calls, looked up there at each call.
JOBS = {
    "train": ("stn_deploy.jobs.train", "train"),
    "export": ("stn_deploy.jobs.export", "export"),
    "export_user_module": ("stn_deploy.jobs.export", "export_user_module"),
    "rewrite": ("stn_deploy.rewriter", "rewrite"),
    "doctor": ("stn_deploy.jobs.doctor", "doctor"),
    "build": ("stn_deploy.trt.builder", "build"),
    "validate": ("stn_deploy.jobs.validate", "validate"),
    "bench": ("stn_deploy.jobs.bench", "bench"),
    "run": ("stn_deploy.jobs.run", "run"),
}
#: Options dataclass (and result helpers) -> module.
OPTIONS = {
    "TrainOptions": "stn_deploy.jobs.train",
    "ExportOptions": "stn_deploy.jobs.export",
    "RewriteOptions": "stn_deploy.rewriter",
    "BuildOptions": "stn_deploy.trt.options",
    "ValidateOptions": "stn_deploy.jobs.validate",
    "BenchOptions": "stn_deploy.jobs.bench.options",
    "RunOptions": "stn_deploy.jobs.run",
    "SamplerSettings": "stn_deploy.schema",
    "UserError": "stn_deploy.errors",
    "ValidationFailed": "stn_deploy.errors",
}

__all__ = sorted([*JOBS, *OPTIONS, "__version__"])


def __getattr__(name: str):
    if name in JOBS:
        module, function = JOBS[name]
        return getattr(importlib.import_module(module), function)
    if name in OPTIONS:
        return getattr(importlib.import_module(OPTIONS[name]), name)
    raise AttributeError(f"module 'stn_deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
