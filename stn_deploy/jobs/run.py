"""Run any model of the pipeline on inputs: a checkpoint (PyTorch), a standard or plugin ONNX
(ONNX Runtime on the CPU; plugin ops through ``ort_ops``) or a TensorRT engine (GPU).

``open_runner`` returns a Polygraphy runner (``with runner: runner.infer(feed)``), the one
interface that ``validate``, ``bench`` and ``demo`` use for every backend.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stn_deploy.errors import UserError
from stn_deploy.io import atomic_path, check_outputs_distinct, require_file
from stn_deploy.model_files import (
    INPUT_NAME,
    OUTPUT_NAME,
    ModelKind,
    detect_kind,
    load_model,
    recorded_input_shapes,
    sample_shape,
)

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

BACKENDS = ("torch", "ort", "trt", "triton")
DEFAULT_BACKEND = {ModelKind.CHECKPOINT: "torch", ModelKind.PROGRAM: "torch", ModelKind.ONNX_STANDARD: "ort",
                   ModelKind.ONNX_PLUGIN: "ort", ModelKind.ENGINE: "trt"}


# --------------------------------------------------------------------------- runners


def _torch_runner_class():
    import torch
    from polygraphy.backend.base import BaseRunner

    class TorchRunner(BaseRunner):
        """A checkpoint or a ``torch.export`` program (``.pt2``) in PyTorch, on the CPU (or
        ``device``). Polygraphy's ``PytRunner`` calls ``.cuda()`` and splits a single output
        tensor along the batch, so it is not used.

        Args:
            path: a checkpoint written by ``stn-deploy train`` or a ``.pt2`` program.
            device: ``cpu`` (default) or ``cuda``.
        """

        def __init__(self, path: Path | str, device: str = "cpu", name: str | None = None) -> None:
            from stn_deploy import user_model

            super().__init__(name=name, prefix="stn-torch-runner")
            self.checkpoint = Path(path)
            self.device = device
            self.program: Any = None
            self.config: Any = None
            self.model: Any
            if detect_kind(self.checkpoint) == ModelKind.PROGRAM:
                self.program = user_model.load_program(self.checkpoint)
                self.model = self.program.module()
                self.specs = user_model.program_input_specs(self.program)
                self.output_names = user_model.program_output_names(self.program)
            else:
                self.model, self.config = load_model(self.checkpoint)
                self.specs = [user_model.InputSpec(INPUT_NAME, "float32", ("batch", *self.config.input_shape))]
                self.output_names = [OUTPUT_NAME]
            self.input_name = self.specs[0].name

        @property
        def input_shape(self) -> tuple:
            """Per-sample dims of the first input (a checkpoint's (C, H, W))."""
            return tuple(self.specs[0].dims[1:])

        def example_shapes(self) -> dict[str, tuple[int, ...]]:
            """Shapes of the program's saved example inputs ({} for a checkpoint)."""
            from stn_deploy.user_model import program_example_feed

            return {k: v.shape for k, v in program_example_feed(self.program).items()} if self.program else {}

        def activate_impl(self):
            if self.program is None:
                self.model = self.model.to(self.device).eval()
            elif self.device != "cpu":
                self.model = self.model.to(self.device)

        def get_input_metadata_impl(self):
            from polygraphy.common import TensorMetadata
            from polygraphy.datatype import DataType

            meta = TensorMetadata()
            for spec in self.specs:
                meta.add(spec.name, DataType.from_dtype(np.dtype(spec.dtype)), spec.dims)
            return meta

        def infer_impl(self, feed_dict):
            from stn_deploy.user_model import call_program

            tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in feed_dict.items()}
            with torch.no_grad():
                start = time.perf_counter()
                if self.program is not None:
                    outs = call_program(self.model, self.program, tensors)
                else:
                    out = self.model(tensors[self.input_name])
                    outs = list(out) if isinstance(out, (tuple, list)) else [out]
                if self.device != "cpu":
                    torch.cuda.synchronize()
                end = time.perf_counter()
            if self.program is not None:
                names = self.output_names
            else:
                names = self.output_names if len(outs) == 1 else [f"{OUTPUT_NAME}_{i}" for i in range(len(outs))]
            self.inference_time = end - start
            return OrderedDict((n, o.detach().cpu().numpy()) for n, o in zip(names, outs))

        def deactivate_impl(self):
            pass

    return TorchRunner


def torch_runner(checkpoint: Path | str, device: str = "cpu") -> BaseRunner:
    """A Polygraphy runner for a checkpoint or a ``torch.export`` program in PyTorch (CPU by default)."""
    return _torch_runner_class()(checkpoint, device=device)


def ort_runner(onnx_path: Path | str, threads: int | None = None) -> BaseRunner:
    """A Polygraphy ``OnnxrtRunner`` for a standard or plugin-op ONNX model on the CPU."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from stn_deploy.ort_ops import ort_session

    session = ort_session(Path(onnx_path), threads=threads)  # fail now, not at activate
    return OnnxrtRunner(session, name=f"stn-ort-runner-{Path(onnx_path).stem}")


def engine_runner(engine_path: Path | str) -> BaseRunner:
    """A TensorRT engine runner (``stn_deploy.trt.EngineRunner``); needs a CUDA GPU."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        raise UserError(f"{Path(engine_path).name} is a TensorRT engine and running it needs a CUDA GPU; "
                        "none is available (its ONNX model runs on the CPU in ONNX Runtime instead)")
    from stn_deploy.trt import EngineRunner

    return EngineRunner(engine_path)


def open_runner(model_path: Path | str, backend: str | None = None) -> BaseRunner:
    """A Polygraphy runner for any model of the pipeline.

    Args:
        model_path: a checkpoint, a ``torch.export`` program (``.pt2``), a standard or
            plugin ONNX model, or an engine.
        backend: ``torch``, ``ort`` or ``trt``; default by kind (checkpoint, program -> torch,
            ONNX -> ort, engine -> trt).

    Returns:
        An inactive runner; use it as a context manager (``with runner: runner.infer(feed)``).

    Raises:
        UserError: unreadable/foreign file, a backend that cannot run this kind of model,
            an engine without a GPU.
    """
    if backend == "triton":
        raise UserError("--backend triton runs a served model: give --url HOST:PORT (stn_deploy.triton.client)")
    kind = detect_kind(model_path)
    backend = backend or DEFAULT_BACKEND[kind]
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "torch":
        if not kind.is_torch:
            raise UserError(f"--backend torch runs checkpoints and torch.export programs; {Path(model_path).name} is {kind}")
        return torch_runner(model_path)
    if backend == "ort":
        if not kind.is_onnx:
            hint = "export it first (stn-deploy export)" if kind.is_torch else "run its ONNX model"
            raise UserError(f"--backend ort runs ONNX models; {Path(model_path).name} is {kind}: {hint}")
        return ort_runner(model_path)
    if kind != ModelKind.ENGINE:
        raise UserError(f"--backend trt runs engines; {Path(model_path).name} is {kind}: build it first (stn-deploy build)")
    return engine_runner(model_path)


# --------------------------------------------------------------------------- inputs


def load_input_iterations(path: Path | str) -> list[dict[str, np.ndarray]]:
    """Every iteration of an inputs file, each keyed by graph input name.

    ``.npz`` holds one iteration; Polygraphy's JSON (``polygraphy run --save-inputs``, a
    list with one mapping per ``--iterations``) holds one or more, all returned in order.

    Raises:
        UserError: missing or unreadable file, no iterations, or not mappings of names to arrays.
    """
    p = require_file(path, "inputs file")
    if p.suffix.lower() == ".json":
        obj = _load_polygraphy_json(p, "inputs")
        if type(obj).__name__ == "RunResults":
            raise UserError(f"{p} holds outputs (Polygraphy RunResults), not inputs: --inputs takes "
                            "polygraphy run --save-inputs files; outputs go in validate --reference")
        iterations = list(obj) if isinstance(obj, (list, tuple)) else [obj]
        if not iterations:
            raise UserError(f"{p}: holds no input iterations")
        feeds = []
        for i, it in enumerate(iterations):
            if not isinstance(it, Mapping):
                raise UserError(f"{p}: iteration {i} is not a mapping of input names to arrays")
            feeds.append(dict(it))
    else:
        try:
            with np.load(p, allow_pickle=False) as data:
                feeds = [{k: data[k] for k in data.files}]
        except Exception as exc:  # zipfile/ValueError/OSError
            raise UserError(f"{p}: not a .npz of arrays ({type(exc).__name__})") from None
    for i, feed in enumerate(feeds):
        bad = [k for k, v in feed.items() if not isinstance(v, np.ndarray)]
        if bad:
            where = f" (iteration {i})" if len(feeds) > 1 else ""
            raise UserError(f"{p}: inputs {', '.join(bad)}{where} are not arrays")
    return feeds


def load_inputs(path: Path | str) -> dict[str, np.ndarray]:
    """The one iteration of an inputs file (``.npz`` or Polygraphy JSON).

    Raises:
        UserError: as ``load_input_iterations``, or a file with several iterations (use
            ``load_input_iterations`` for those).
    """
    feeds = load_input_iterations(path)
    if len(feeds) > 1:
        raise UserError(f"{path}: holds {len(feeds)} input iterations where one was expected")
    return feeds[0]


def _load_polygraphy_json(p: Path, what: str):
    from polygraphy.json import from_json

    try:
        return from_json(p.read_text())
    except Exception as exc:  # Polygraphy raises its own exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{p}: not a Polygraphy {what} JSON: {first}") from None


def save_run_results(path: Path | str, runner_name: str, iterations: Sequence[Mapping[str, np.ndarray]],
                     runtimes_s: Sequence[float | None] | None = None) -> Path:
    """Write outputs as Polygraphy ``RunResults`` JSON (what ``polygraphy run --save-outputs``
    writes, read by ``polygraphy inspect data`` and ``Comparator``), atomically."""
    from polygraphy.comparator import IterationResult, RunResults
    from polygraphy.json import to_json

    from stn_deploy.io import write_bytes

    runtimes_s = runtimes_s or [None] * len(iterations)
    results = RunResults()
    results.append((runner_name, [IterationResult({k: np.asarray(v) for k, v in it.items()}, runtime=t,
                                                  runner_name=runner_name)
                                  for it, t in zip(iterations, runtimes_s)]))
    return write_bytes(path, to_json(results).encode())


def load_run_results(path: Path | str) -> tuple[str, list[dict[str, np.ndarray]]]:
    """(runner name, outputs of every iteration) of the first runner in a Polygraphy
    ``RunResults`` JSON (``polygraphy run --save-outputs``, ``stn-deploy run -o x.json``).

    Raises:
        UserError: missing file, not a RunResults JSON, or no runner in it.
    """
    from polygraphy.comparator import RunResults

    p = require_file(path, "outputs file")
    obj = _load_polygraphy_json(p, "outputs (RunResults)")
    if not isinstance(obj, RunResults):
        raise UserError(f"{p}: not a Polygraphy outputs (RunResults) JSON; write one with "
                        "polygraphy run --save-outputs or stn-deploy run -o FILE.json")
    items = list(obj.items())
    if not items:
        raise UserError(f"{p}: holds no runner's outputs")
    name, iterations = items[0]
    return name, [{k: np.asarray(v) for k, v in it.items()} for it in iterations]


def random_inputs(metadata: TensorMetadata, batch: int = 1, seed: int = 0,
                  sample_shape: tuple[int, ...] | None = None, *,
                  shapes: Mapping[str, Sequence[int]] | None = None,
                  examples: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """Seeded random inputs for every input in ``metadata``, fit for each input's kind
    (``user_model.random_feed``: standard-normal images, grids partly outside the image,
    thetas near the identity, ...).

    Args:
        metadata: a Polygraphy ``TensorMetadata`` (``runner.get_input_metadata()``).
        batch: size of a dynamic first dimension; default 1.
        seed: numpy seed; default 0.
        sample_shape: (C, H, W) for the other dynamic dims of a single input (an export's record).
        shapes: full shapes by input name (``--shapes``), first choice for dynamic dims.
        examples: shapes by input name to take other dynamic dims from (a program's examples).

    Raises:
        UserError: a dynamic dim nothing fixes, a bad ``shapes`` entry, an input too large.
    """
    # Not Polygraphy's DataLoader: it draws uniform values in one range whatever the input;
    # a sampling grid, a theta and an image need different ones.
    from stn_deploy.user_model import random_feed, resolve_shapes, specs_from_metadata

    specs = specs_from_metadata(metadata)
    resolved = resolve_shapes(specs, batch=batch, shapes=shapes, examples=examples, sample_shape=sample_shape)
    return random_feed(specs, resolved, seed)


def check_inputs(feed: Mapping[str, np.ndarray], metadata: TensorMetadata) -> None:
    """Raise UserError (one line) for unknown/missing names, wrong dtypes or shapes."""
    expected = list(metadata.keys())
    unknown = [k for k in feed if k not in metadata]
    if unknown:
        raise UserError(f"unknown input name(s) {', '.join(unknown)}; the model takes {', '.join(expected)}")
    missing = [k for k in expected if k not in feed]
    if missing:
        raise UserError(f"missing input(s) {', '.join(missing)}")
    for name, meta in metadata.items():
        arr = feed[name]
        want = np.dtype(meta.dtype.numpy() if hasattr(meta.dtype, "numpy") else meta.dtype)
        if arr.dtype != want:
            raise UserError(f"input {name!r} has dtype {arr.dtype}, the model takes {want}")
        shape = list(meta.shape)
        ok = len(arr.shape) == len(shape) and all(
            not (isinstance(d, int) and d >= 0) or d == a for d, a in zip(shape, arr.shape))
        if not ok:
            want_s = "x".join(str(d) if isinstance(d, int) and d >= 0 else "?" for d in shape)
            raise UserError(f"input {name!r} has shape {'x'.join(map(str, arr.shape))}, the model takes {want_s}")


# --------------------------------------------------------------------------- run


@dataclass(frozen=True)
class RunOptions:
    """Options of ``run``.

    Attributes:
        model: checkpoint, ONNX model or engine.
        output: where to write the outputs (atomically): ``.json`` = Polygraphy ``RunResults``
            (every iteration), anything else = ``.npz`` keyed by output name (one iteration)
            or ``<iteration>/<output name>`` (several).
        inputs: ``.npz`` or Polygraphy JSON (every iteration is run); default seeded random inputs.
        backend: ``torch``, ``ort`` or ``trt``; default by model kind.
        batch: batch size of random inputs (a dynamic first dim); default 1.
        shapes: shapes of random inputs by input name (``--shapes image:1x3x64x64``), for
            dynamic dims other than the batch; default: the program's example inputs, the
            export's recorded input shape.
        seed: seed of random inputs; default 0.
        url: with backend ``triton``: the server, ``HOST:PORT`` (gRPC) or ``http://HOST:PORT``.
        model_name: with backend ``triton``: the served model; default ``model`` read as a name.
    """

    model: Path
    output: Path
    inputs: Path | None = None
    backend: str | None = None
    batch: int = 1
    seed: int = 0
    url: str | None = None
    model_name: str | None = None
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model", "output", "inputs"):  # str paths from the Python API
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))


@dataclass
class RunResult:
    """What ``run`` did: shapes are those of the first iteration; ``inference_ms`` is the
    median over iterations."""

    kind: ModelKind
    backend: str
    output: str
    inputs: dict[str, list[int]] = field(default_factory=dict)
    outputs: dict[str, list[int]] = field(default_factory=dict)
    inference_ms: float = 0.0
    iterations: int = 1
    format: str = "npz"

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "backend": self.backend, "output": self.output, "format": self.format,
                "iterations": self.iterations, "inputs": self.inputs, "outputs": self.outputs,
                "inference_ms": round(self.inference_ms, 4)}


def run(options: RunOptions) -> RunResult:
    """Run a model on every input iteration and write its outputs to ``options.output``.

    Args:
        options: what to run, on what, and where the outputs go (``RunOptions``).

    Returns:
        A ``RunResult`` (shapes, median inference time, iterations, output format).

    Raises:
        UserError: bad model file, backend, inputs (names, shapes, dtypes) or output path.
    """
    if options.batch < 1:
        raise UserError("--batch must be at least 1")
    if (options.url is not None) != (options.backend == "triton"):
        raise UserError("--url and --backend triton go together (a served model)")
    check_outputs_distinct([options.output], [options.inputs] if options.backend == "triton"
                           else [options.model, options.inputs])
    feeds = load_input_iterations(options.inputs) if options.inputs else None
    out = Path(options.output)
    if options.url is not None:  # --backend triton (checked above)
        from stn_deploy.triton.client import parse_target, triton_runner

        kind, backend = ModelKind.SERVED, "triton"
        runner = triton_runner(parse_target(options.url, options.model_name or str(options.model)))
    else:
        kind = detect_kind(options.model)
        backend = options.backend or DEFAULT_BACKEND[kind]
        runner = open_runner(options.model, backend)
    results, times = [], []
    with runner:
        meta = runner.get_input_metadata(use_numpy_dtypes=False)
        if feeds is None:
            # Both read an ONNX's export record only: None / {} for any other kind (a served model too).
            recorded = sample_shape(options.model, kind)
            examples = runner.example_shapes() if hasattr(runner, "example_shapes") else None
            examples = examples or recorded_input_shapes(options.model, kind)
            feeds = [random_inputs(meta, batch=options.batch, seed=options.seed, sample_shape=recorded,
                                   shapes=options.shapes, examples=examples)]
        for feed in feeds:
            check_inputs(feed, meta)
        for feed in feeds:
            outputs = runner.infer(feed, check_inputs=False)
            # Runners may reuse their output buffers between calls.
            results.append({k: np.array(v, copy=True) for k, v in outputs.items()})
            times.append(runner.last_inference_time() or 0.0)
    if out.suffix.lower() == ".json":
        save_run_results(out, runner.name, results, times)
        fmt = "polygraphy-run-results"
    else:
        arrays = results[0] if len(results) == 1 else {
            f"{i}/{k}": v for i, it in enumerate(results) for k, v in it.items()}
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a path
                np.savez(f, **arrays)
        fmt = "npz"
    return RunResult(
        kind=kind, backend=backend, output=str(out),
        inputs={k: list(v.shape) for k, v in feeds[0].items()},
        outputs={k: list(v.shape) for k, v in results[0].items()},
        inference_ms=1000.0 * float(np.median(times)), iterations=len(results), format=fmt,
    )
