"""What each backend times, as thin wrappers over the runners ``stn_deploy.jobs.run`` opens.

``prepare(batch)`` returns the zero-argument call to time: the runner's module, session or
engine called directly, so Polygraphy's per-call input checks and host copies stay out of
the timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stn_deploy.errors import UserError
from stn_deploy.io import require_file
from stn_deploy.jobs.bench.options import ORT_PLUGIN_NOTE, BenchOptions
from stn_deploy.model_files import ModelKind, detect_kind, require_kind, sample_shape


class Skip(Exception):
    """A backend/batch that cannot run here; the message becomes the row's reason."""


def short_reason(exc: BaseException) -> str:
    """``Type: first line`` of an exception, at most 200 characters (a report row's reason)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:200]


def _onnx_input(path: Path) -> tuple[str, list[int | str], str]:
    """(name, dims, numpy dtype name) of the ONNX model's first graph input.

    A symbolic dimension other than the batch is filled from the export's metadata
    ([C, H, W]) when present, else left as its name.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise UserError(f"{path} has no graph input")
    tensor = inputs[0].type.tensor_type
    dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
    recorded = sample_shape(path, ModelKind.ONNX_STANDARD)
    if recorded is not None and len(recorded) == len(dims) - 1:
        dims = [dims[0]] + [d if isinstance(d, int) and d > 0 else s for d, s in zip(dims[1:], recorded)]
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    return inputs[0].name, dims, dtype


def _engine_input(engine: Path) -> tuple[list[int | str], str]:
    """Per-sample dims and dtype of the engine's first input (from the engine on a GPU, else
    from the sidecar ``trt.inspect`` reads)."""
    from stn_deploy import trt

    inputs = trt.inspect(engine).get("inputs") or []
    if not inputs:
        raise UserError(f"cannot read the inputs of engine {engine} (no GPU and no sidecar {engine}.json)")
    first = inputs[0]
    return [int(d) if int(d) > 0 else "?" for d in first["shape"]][1:], str(first.get("dtype", "float32"))


class Sources:
    """What each backend runs: the checkpoint's torch runner, an ONNX file, an engine file."""

    def __init__(self, options: BenchOptions, workdir: Path) -> None:
        from stn_deploy.jobs import run

        self.options = options
        self.workdir = workdir
        self.kind = detect_kind(options.model)
        # Files named explicitly must be what they claim: a bad one is bad input (exit 2),
        # not a backend to skip.
        if options.onnx is not None:
            require_kind(require_file(options.onnx, "--onnx file"), ModelKind.ONNX_STANDARD, ModelKind.ONNX_PLUGIN)
        if options.engine is not None:
            from stn_deploy.trt.engine_file import check_engine_header

            check_engine_header(require_file(options.engine, "--engine file"))
        self._onnx: Path | None = options.onnx or (options.model if self.kind.is_onnx else None)
        self.engine: Path | None = options.engine or (options.model if self.kind == ModelKind.ENGINE else None)
        self.onnx_exported = False
        # The checkpoint's or program's model, loaded once by the runner `run` uses for them.
        self.torch_runner: Any = run.torch_runner(options.model) if self.kind.is_torch else None

    @property
    def module(self):
        if self.torch_runner is None:
            raise Skip(f"needs a checkpoint or a .pt2 (MODEL is {'an ONNX' if self.kind.is_onnx else 'an engine'})")
        return self.torch_runner.model

    @property
    def program(self):
        """The ``torch.export`` program when MODEL is a ``.pt2``, else None."""
        return self.torch_runner.program if self.torch_runner is not None else None

    def input_specs(self) -> dict[str, list[int | str]]:
        """Every input's dims (a batch of 1 where dynamic, the rest filled where known)."""
        if self.program is not None:
            from stn_deploy.user_model import resolve_shapes

            try:
                shapes = resolve_shapes(self.torch_runner.specs, batch=1, examples=self.torch_runner.example_shapes())
            except UserError:
                return {s.name: list(s.dims) for s in self.torch_runner.specs}
            return {k: list(v) for k, v in shapes.items()}
        dims, _ = self.input_shape()
        return {"input": [1, *dims]} if self.config is not None else {}

    def random_feed(self, specs, batch: int, examples: dict | None = None,
                    recorded: Sequence[int] | None = None) -> dict:
        """Seeded random inputs of ``batch`` for ``specs`` (``user_model.random_feed``); Skip
        when a dynamic dim other than the batch cannot be filled or a fixed batch differs."""
        from stn_deploy.user_model import random_feed, resolve_shapes

        for spec in specs:
            first = spec.dims[0] if spec.dims else None
            if isinstance(first, int) and first != batch:
                raise Skip(f"input {spec.name} has a fixed batch of {first}")
        # --shapes fixes the other dims; the batch is the row's.
        given = {k: (batch, *v[1:]) for k, v in self.options.shapes.items() if k in {s.name for s in specs}}
        try:
            shapes = resolve_shapes(specs, batch=batch, shapes=given, examples=examples, sample_shape=recorded)
        except UserError as exc:
            raise Skip(str(exc)) from None
        return random_feed(specs, shapes, self.options.seed)

    @property
    def config(self):
        return self.torch_runner.config if self.torch_runner is not None else None

    @property
    def onnx_path(self) -> Path | None:
        """The ONNX the ort backend runs, once known (given, MODEL itself, or exported)."""
        return self._onnx

    def input_shape(self) -> tuple[list[int | str], str]:
        """Per-sample input dims (without batch) and the numpy dtype name."""
        if self.config is not None:
            return list(self.config.input_shape), "float32"
        if self.program is not None:
            first = self.torch_runner.specs[0]
            return list(self.input_specs()[first.name])[1:], first.dtype
        if self._onnx is not None:
            _, dims, dtype = _onnx_input(self._onnx)
            return dims[1:], dtype
        if self.engine is not None:
            return _engine_input(self.engine)
        raise UserError("cannot tell the model's input shape")

    def onnx(self) -> Path:
        if self._onnx is None:
            if not self.kind.is_torch:
                raise Skip("needs an ONNX (pass --onnx)")
            from stn_deploy.jobs import export

            target = self.workdir / "model.onnx"
            if self.program is not None:
                export.export_program(self.program, target, ops="standard", source=self.options.model)
            else:
                export.export(export.ExportOptions(checkpoint=self.options.model, output=target, ops="standard"))
            self._onnx = target
            self.onnx_exported = True
        return self._onnx


def _resolve_dims(dims: Sequence[int | str], batch: int) -> list[int]:
    from stn_deploy.io import check_fits_in_memory

    out = []
    for d in dims:
        if not isinstance(d, int) or d <= 0:
            raise Skip(f"input has a dynamic dimension {d!r} besides the batch")
        out.append(d)
    check_fits_in_memory([batch, *out], 4, f"a batch of {batch}")
    return [batch, *out]


class Backend:
    """One backend: ``prepare(batch)`` returns a zero-argument callable to time, or raises Skip."""

    name = ""
    note: str | None = None
    device = "cpu"
    cuda_timing = False
    compile_s: float | None = None

    def prepare(self, batch: int) -> Callable[[], Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TorchBackend(Backend):
    """The checkpoint's module from ``run.torch_runner``, eager or ``torch.compile``d."""

    def __init__(self, sources: Sources, device: str, compiled: bool, seed: int) -> None:
        import torch

        self.name = "torch-compile" if compiled else "torch"
        self.device = device
        self.cuda_timing = device == "cuda"
        self.seed = seed
        self.sources = sources
        module = sources.module.to(device)
        self.input_dims = list(sources.config.input_shape) if sources.config is not None else []
        self._torch = torch
        self._fn = module
        if compiled:
            self.note = "compile time excluded"
            # dynamic=False: one specialised graph per batch size, as a server would warm up.
            self._fn = torch.compile(module, dynamic=False)

    def prepare(self, batch: int) -> Callable[[], Any]:
        torch = self._torch
        fn = self._fn
        program = self.sources.program
        if program is not None:  # the program's module: every input, by name
            from stn_deploy.user_model import call_program

            runner = self.sources.torch_runner
            feed = self.sources.random_feed(runner.specs, batch, runner.example_shapes())
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feed.items()}

            def call():
                with torch.inference_mode():
                    return call_program(fn, program, tensors)
        else:
            gen = torch.Generator().manual_seed(self.seed)
            x = torch.rand(_resolve_dims(self.input_dims, batch), generator=gen).to(self.device)

            def call():
                with torch.inference_mode():
                    return fn(x)

        if self.name == "torch-compile":
            t0 = time.perf_counter()
            call()  # compiles for this shape
            if self.cuda_timing:
                torch.cuda.synchronize()
            self.compile_s = time.perf_counter() - t0
        return call


class OrtBackend(Backend):
    """The session of ``run.ort_runner`` (plugin ops registered when the graph has them)."""

    name = "ort"

    def __init__(self, sources: Sources, seed: int, threads: int | None = None) -> None:
        from stn_deploy.jobs import run

        path = sources.onnx()
        self.seed = seed
        if detect_kind(path) == ModelKind.ONNX_PLUGIN:
            self.note = ORT_PLUGIN_NOTE
        elif sources.onnx_exported:
            self.note = f"standard ONNX exported from the {'program' if sources.program is not None else 'checkpoint'}"
        self.runner = run.ort_runner(path, threads=threads)
        self.runner.activate()
        self.sources = sources
        # What fills the dynamic dims, read once here rather than for every batch.
        from stn_deploy.model_files import recorded_input_shapes
        from stn_deploy.user_model import specs_from_metadata

        self.specs = specs_from_metadata(self.runner.get_input_metadata(use_numpy_dtypes=False))
        self.examples = recorded_input_shapes(path, ModelKind.ONNX_STANDARD)
        if not self.examples and sources.program is not None:
            self.examples = sources.torch_runner.example_shapes()
        self.recorded = sample_shape(path, ModelKind.ONNX_STANDARD)

    def prepare(self, batch: int) -> Callable[[], Any]:
        feed = self.sources.random_feed(self.specs, batch, self.examples, self.recorded)
        session = self.runner.sess
        return lambda: session.run(None, feed)

    def close(self) -> None:
        self.runner.deactivate()


class TrtBackend(Backend):
    """The engine runner of ``run.open_runner`` (GPU only), inputs and outputs on the device."""

    name = "trt"
    device = "cuda"
    cuda_timing = True

    def __init__(self, sources: Sources, seed: int) -> None:
        import torch

        if not torch.cuda.is_available():
            raise Skip("needs a GPU")
        if sources.engine is None:
            raise Skip("needs an engine (bench an engine file or pass --engine)")
        from stn_deploy.jobs import run

        self._torch = torch
        self.seed = seed
        self.fallback_dims, _dtype = sources.input_shape()
        self.runner = run.open_runner(sources.engine, "trt")
        self.runner.activate()
        meta = self.runner.get_input_metadata()
        self.input_name = next(iter(meta.keys()))
        self.dims = list(meta[self.input_name].shape)[1:]

    def prepare(self, batch: int) -> Callable[[], Any]:
        torch = self._torch
        dims = [d if isinstance(d, int) and d > 0 else f for d, f in zip(self.dims, self.fallback_dims)]
        shape = _resolve_dims(dims, batch)
        gen = torch.Generator().manual_seed(self.seed)
        # fp32 on the device already: the runner's own .to(cuda, fp32) is then a no-op, so
        # the timed loop has no host copies (outputs stay on the device too).
        x = torch.rand(shape, generator=gen).to("cuda")
        runner, name = self.runner, self.input_name
        return lambda: runner.infer({name: x}, copy_outputs_to_host=False)

    def close(self) -> None:
        self.runner.deactivate()


def open_backend(name: str, sources: Sources, device: str, seed: int, threads: int | None = None) -> Backend:
    if name in ("torch", "torch-compile"):
        return TorchBackend(sources, device, name == "torch-compile", seed)
    if name == "ort":
        return OrtBackend(sources, seed, threads)
    if name == "trt":
        return TrtBackend(sources, seed)
    raise UserError(f"unknown backend {name!r}")
