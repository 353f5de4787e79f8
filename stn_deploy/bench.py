"""Latency benchmarks of a model across backends, and of its sampler against a memory copy.

``bench(BenchOptions(...))`` times a model on each requested backend and batch size and
writes a JSON report and a PNG plot (p50 latency against batch) atomically.

Backends:
    ``torch``          PyTorch eager (the baseline of every ratio); needs a checkpoint.
    ``torch-compile``  ``torch.compile`` of the same module (one compile per batch size; the
                       compile time is reported, not timed); needs a checkpoint.
    ``ort``            ONNX Runtime on the CPU. A standard ONNX runs on plain ORT; a plugin
                       ONNX runs its plugin ops as Python ops on our CPU reference (about
                       1.7 ms per call): a validation path, not a serving one, and the report
                       says so.
    ``trt``            a TensorRT engine on the GPU; without a GPU the row says
                       "skipped: needs a GPU" and nothing fails.

Timing: CUDA events on a GPU, ``time.perf_counter_ns`` on the CPU; every iteration is timed
on its own and the report gives p50/p90/p99 (linear interpolation), mean and min in ms,
throughput = batch / p50 in samples/s, and ``speedup_vs_torch`` = torch eager p50 / p50
measured in the same run.

Sampler: for a checkpoint with a spatial transformer, the first transformer's sampling step
(grid generator + sampler, parameters fixed) is timed alone and reported as effective GB/s
(bytes of input actually read + parameters + output, see ``sampler_bytes``) against a copy
that moves the same number of bytes on the same device in the same run (device-to-device on
a GPU, a host memcpy on the CPU). The plugin's fused kernel (``kernels.affine_grid_sample``)
is timed beside it when the library is built. The copy and the samplers are timed in
interleaved rounds (``time_interleaved``), so a change of load hits them alike.

Report (``<name>.json``; ``format`` = "stn-deploy-bench", ``version`` = 1):
    ``model``     path, kind (checkpoint | onnx | engine), name, input_shape (per sample),
                  dtype, onnx (what ort ran)
    ``device``    cpu, cpu_threads, cuda; on a GPU also gpu, compute_capability,
                  gpu_memory_gib, cuda_runtime, driver
    ``versions``  python, stn_deploy, torch, onnxruntime, tensorrt, tensorrt_rtx (None = absent)
    ``settings``  backends, batches, warmup, iters, torch_device, cpu_threads, timer
    ``results``   one row per backend and batch: backend, batch, status (ok | skipped |
                  failed), reason, device, input_shape, note, p50_ms, p90_ms, p99_ms,
                  mean_ms, min_ms, iters, throughput_sps, speedup_vs_torch, compile_s
    ``sampler``   status, transform, out_size, mode, padding_mode, align_corners, copy,
                  results: impl (torch | plugin), batch, bytes {input_read, params, output,
                  total}, p50_ms..., gbps, copy_p50_ms, copy_gbps, fraction_of_copy
    ``outputs``   json, png
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from stn_deploy.errors import UserError
from stn_deploy.io import ensure_writable_dir, save_figure, write_json

BACKENDS: tuple[str, ...] = ("torch", "torch-compile", "ort", "trt")
DEFAULT_BATCHES: tuple[int, ...] = (1, 8, 64)
DEFAULT_WARMUP = 10
DEFAULT_ITERS = 100
DEFAULT_OUTPUT_DIR = Path("benchmarks/results")
REPORT_FORMAT = "stn-deploy-bench"
REPORT_VERSION = 1

#: Input pixels one output pixel reads, per interpolation mode (for ``sampler_bytes``).
TAPS = {"nearest": 1, "bilinear": 4, "bicubic": 16}

ORT_PLUGIN_NOTE = "validation path: plugin ops run as Python ops on the CPU reference, not serving"


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class BenchOptions:
    """What ``bench`` measures and where it writes.

    Attributes:
        model: a checkpoint (``.pt``), an ONNX (``.onnx``) or an engine (``.engine``/``.plan``).
        backends: backends to run, in order; default all of ``BACKENDS``.
        batches: batch sizes; default (1, 8, 64).
        warmup: untimed iterations before each measurement; default 10.
        iters: timed iterations per backend and batch; default 100.
        output_dir: folder of the JSON and PNG; default ``benchmarks/results``.
        name: file stem of the outputs; default ``bench-<model stem>``.
        onnx: ONNX for the ``ort`` backend when ``model`` is a checkpoint; default: export a
            standard ONNX into a temporary folder.
        engine: engine for the ``trt`` backend when ``model`` is not one.
        device: where the torch backends run: ``auto`` (CUDA when present), ``cpu``, ``cuda``.
        sampler: also time the sampler against a copy of the same bytes; default True.
        seed: seed of the random inputs; default 0.
        threads: CPU threads for torch, ONNX Runtime and the plugin's CPU reference alike;
            default None = each library's default (all cores). On a busy machine 1 thread
            avoids the stalls of a thread pool waiting for a descheduled worker.
    """

    model: Path
    backends: tuple[str, ...] = BACKENDS
    batches: tuple[int, ...] = DEFAULT_BATCHES
    warmup: int = DEFAULT_WARMUP
    iters: int = DEFAULT_ITERS
    output_dir: Path = DEFAULT_OUTPUT_DIR
    name: str | None = None
    onnx: Path | None = None
    engine: Path | None = None
    device: str = "auto"
    sampler: bool = True
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        object.__setattr__(self, "backends", tuple(self.backends))
        object.__setattr__(self, "batches", tuple(int(b) for b in self.batches))
        for backend in self.backends:
            if backend not in BACKENDS:
                raise UserError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if not self.backends:
            raise UserError("no backend given")
        if not self.batches or any(b < 1 for b in self.batches):
            raise UserError(f"batch sizes must be positive integers, got {list(self.batches)}")
        if self.iters < 1:
            raise UserError(f"--iters must be at least 1, got {self.iters}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"unknown device {self.device!r}; choose from auto, cpu, cuda")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")


@dataclass(frozen=True)
class BenchResult:
    """What ``bench`` wrote: the report (the JSON's content) and the two files."""

    report: dict[str, Any]
    json_path: Path
    png_path: Path


def parse_backends(text: str) -> tuple[str, ...]:
    """``"torch,ort"`` -> ``("torch", "ort")``; UserError for an unknown or empty name."""
    names = tuple(part.strip() for part in text.split(","))
    if not text.strip() or any(not n for n in names):
        raise UserError(f"malformed --backends {text!r}: expected names separated by commas, e.g. torch,ort")
    for name in names:
        if name not in BACKENDS:
            raise UserError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return tuple(dict.fromkeys(names))  # drop repeats, keep order


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,8,64"`` -> ``(1, 8, 64)``; UserError unless every item is a positive integer."""
    try:
        batches = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"malformed --batch {text!r}: expected positive integers separated by commas, e.g. 1,8,64") from None
    if any(b < 1 for b in batches):
        raise UserError(f"malformed --batch {text!r}: batch sizes must be positive")
    return tuple(dict.fromkeys(batches))


# --------------------------------------------------------------------------- timing


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted values, linear interpolation (numpy's default)."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min (ms) of per-iteration latencies; p50 <= p90 <= p99 by construction."""
    values = sorted(float(v) for v in samples_ms)
    return {
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "mean_ms": statistics.fmean(values),
        "min_ms": values[0],
        "iters": len(values),
    }


def time_callable(fn: Callable[[], Any], *, warmup: int, iters: int, cuda: bool = False) -> list[float]:
    """Per-iteration latencies of ``fn()`` in ms.

    On CUDA each iteration is bracketed by CUDA events on the current stream (no host sync
    inside the loop); on the CPU by ``time.perf_counter_ns``.
    """
    for _ in range(warmup):
        fn()
    if cuda:
        import torch

        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for start, end in zip(starts, ends):
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in zip(starts, ends)]
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def time_interleaved(
    fns: dict[str, Callable[[], Any]], *, warmup: int, iters: int, cuda: bool = False, rounds: int = 5
) -> dict[str, list[float]]:
    """Per-iteration latencies (ms) of several callables, measured in interleaved rounds.

    Each round times every callable for about ``iters / rounds`` iterations in turn, so a
    change of machine load (a shared CPU, clock boost) hits all of them alike and their
    ratios stay meaningful. Each callable gets ``warmup`` untimed calls first and exactly
    ``iters`` timed ones in total.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rounds = max(1, min(rounds, iters))
    out: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        # Spread iters over the rounds: the first (iters % rounds) rounds get one more.
        n = iters // rounds + (1 if r < iters % rounds else 0)
        for name, fn in fns.items():
            out[name].extend(time_callable(fn, warmup=0, iters=n, cuda=cuda))
    return out


def copy_fn(nbytes: int, device: str) -> Callable[[], Any]:
    """A callable copying a buffer of ``nbytes`` bytes (at least 1) on ``device``."""
    import torch

    n = max(1, int(nbytes))
    src = torch.empty(n, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def copy_stats(samples_ms: Sequence[float], nbytes: int) -> dict[str, float]:
    """Latency statistics of a copy of ``nbytes`` bytes plus ``gbps`` (read + written / p50)."""
    n = max(1, int(nbytes))
    stats = latency_stats(samples_ms)
    stats["bytes"] = n
    stats["gbps"] = 2 * n / (stats["p50_ms"] * 1e-3) / 1e9
    return stats


def copy_baseline(nbytes: int, device: str, *, warmup: int, iters: int) -> dict[str, float]:
    """Time a copy of ``nbytes`` bytes on ``device`` (a device-to-device copy on CUDA, a host
    memcpy on the CPU) and return its latency statistics plus ``gbps`` (bytes read + written
    per second, 1e9). ``nbytes`` is rounded up to a whole byte and at least 1."""
    samples = time_callable(copy_fn(nbytes, device), warmup=warmup, iters=iters, cuda=device.startswith("cuda"))
    return copy_stats(samples, nbytes)


def sampler_bytes(
    input_shape: Sequence[int],
    out_size: Sequence[int],
    *,
    param_bytes: int,
    elem_bytes: int,
    mode: str = "bilinear",
) -> dict[str, int]:
    """Effective bytes one sampler call moves: input actually read + grid/theta + output.

    Each output pixel of each channel reads ``TAPS[mode]`` input pixels; the input read is
    that count capped at the whole input (a pixel shared by neighbouring taps is read once,
    through the cache). ``param_bytes`` is the size of the grid or theta tensor.
    """
    n, c = int(input_shape[0]), int(input_shape[1])
    in_pixels = 1
    for d in input_shape[2:]:
        in_pixels *= int(d)
    out_pixels = 1
    for d in out_size:
        out_pixels *= int(d)
    taps = TAPS.get(mode, 4)
    read = n * c * min(in_pixels, taps * out_pixels) * elem_bytes
    written = n * c * out_pixels * elem_bytes
    return {"input_read": read, "params": int(param_bytes), "output": written, "total": read + int(param_bytes) + written}


# --------------------------------------------------------------------------- environment


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # a missing or broken optional backend is reported as absent
        return None
    return getattr(mod, "__version__", "unknown")


def environment() -> dict[str, Any]:
    """Device and versions for the report: CPU model and threads, GPU name/driver/CUDA if any."""
    import torch

    from stn_deploy import __version__

    device: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device.update(
            gpu=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda_runtime=torch.version.cuda,
            driver=_nvidia_driver(),
        )
    versions = {
        "python": platform.python_version(),
        "stn_deploy": __version__,
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "tensorrt": _version("tensorrt"),
        "tensorrt_rtx": _version("tensorrt_rtx"),
    }
    return {"device": device, "versions": versions}


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    with contextlib.suppress(OSError, IndexError):
        text = Path("/proc/driver/nvidia/version").read_text()
        for token in text.split():
            if token.count(".") >= 1 and token.replace(".", "").isdigit():
                return token
    return None


# --------------------------------------------------------------------------- model sources


def model_kind(path: Path) -> str:
    """``checkpoint``, ``onnx`` or ``engine`` (``run.detect_kind``, by content and suffix).

    Raises:
        UserError: a missing file or one that is none of the three.
    """
    from stn_deploy import run

    kind = run.detect_kind(path)
    return {run.KIND_CHECKPOINT: "checkpoint", run.KIND_ENGINE: "engine"}.get(kind, "onnx")


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a file")


class _Skip(Exception):
    """A backend/batch that cannot run here; the message becomes the row's reason."""


def _is_plugin_onnx(path: Path) -> bool:
    from stn_deploy.graph import load_onnx
    from stn_deploy.ort_ops import has_plugin_ops

    return has_plugin_ops(load_onnx(path))


def _onnx_input(path: Path) -> tuple[str, list[int | str], str]:
    """(name, dims, numpy dtype name) of the ONNX model's first graph input.

    A symbolic dimension other than the batch is filled from the export's metadata
    (``stn_deploy.input_shape`` = [C, H, W]) when present, else left as its name.
    """
    import json

    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise UserError(f"{path} has no graph input")
    tensor = inputs[0].type.tensor_type
    dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
    meta = {p.key: p.value for p in model.metadata_props}
    with contextlib.suppress(ValueError, TypeError):
        sample = [int(v) for v in json.loads(meta.get("stn_deploy.input_shape", "null") or "null")]
        if len(sample) == len(dims) - 1:
            dims = [dims[0]] + [d if isinstance(d, int) and d > 0 else s for d, s in zip(dims[1:], sample)]
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    return inputs[0].name, dims, dtype


class _Sources:
    """Resolves what each backend runs: a torch module, an ONNX file, an engine file."""

    def __init__(self, options: BenchOptions, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        _check_file(options.model, "model")
        self.kind = model_kind(options.model)
        if options.onnx is not None:
            _check_file(options.onnx, "--onnx file")
        if options.engine is not None:
            _check_file(options.engine, "--engine file")
        self._module = None
        self._config = None
        self._onnx: Path | None = options.onnx if options.onnx else (options.model if self.kind == "onnx" else None)
        self.engine: Path | None = options.engine if options.engine else (options.model if self.kind == "engine" else None)
        self.onnx_exported = False
        if self.kind == "checkpoint":
            self._module, self._config = load_model(options.model)

    @property
    def module(self):
        if self._module is None:
            raise _Skip(f"needs a checkpoint (MODEL is {'an ONNX' if self.kind == 'onnx' else 'an engine'})")
        return self._module

    @property
    def config(self):
        return self._config

    @property
    def onnx_path(self) -> Path | None:
        """The ONNX the ort backend runs, once known (given, MODEL itself, or exported)."""
        return self._onnx

    def input_shape(self) -> tuple[list[int | str], str]:
        """Per-sample input dims (without batch) and the numpy dtype name."""
        if self._config is not None:
            return list(self._config.input_shape), "float32"
        if self._onnx is not None:
            _, dims, dtype = _onnx_input(self._onnx)
            return dims[1:], dtype
        if self.engine is not None:
            return _engine_input(self.engine)
        raise UserError("cannot tell the model's input shape")

    def onnx(self) -> Path:
        if self._onnx is None:
            if self.kind != "checkpoint":
                raise _Skip("needs an ONNX (pass --onnx)")
            self._onnx = export_standard_onnx(self.options.model, self.workdir / "model.onnx")
            self.onnx_exported = True
        return self._onnx


def load_model(checkpoint: Path):
    """(module in eval mode on the CPU, ModelConfig) from a checkpoint (``train.load_checkpoint``)."""
    from stn_deploy import train

    module, config = train.load_checkpoint(checkpoint)
    return module.eval(), config


def export_standard_onnx(checkpoint: Path, target: Path) -> Path:
    """Export the checkpoint to a standard-ops ONNX (what plain ORT can run) at ``target``."""
    from stn_deploy import export

    export.export(export.ExportOptions(checkpoint=checkpoint, output=target, ops="standard"))
    return target


def _engine_input(engine: Path) -> tuple[list[int | str], str]:
    """Per-sample dims and dtype of the engine's first input (from the engine on a GPU, else
    from the sidecar ``trt.inspect`` reads)."""
    from stn_deploy import trt

    inputs = trt.inspect(engine).get("inputs") or []
    if not inputs:
        raise UserError(f"cannot read the inputs of engine {engine} (no GPU and no sidecar {engine}.json)")
    first = inputs[0]
    return [int(d) if int(d) > 0 else "?" for d in first["shape"]][1:], str(first.get("dtype", "float32"))


# --------------------------------------------------------------------------- backends


def _resolve_dims(dims: Sequence[int | str], batch: int) -> list[int]:
    out = []
    for d in dims:
        if not isinstance(d, int) or d <= 0:
            raise _Skip(f"input has a dynamic dimension {d!r} besides the batch")
        out.append(d)
    return [batch, *out]


class _Backend:
    """One backend: ``prepare(batch)`` returns a zero-argument callable to time, or raises _Skip."""

    name = ""
    note: str | None = None
    device = "cpu"
    cuda_timing = False
    compile_s: float | None = None

    def prepare(self, batch: int) -> Callable[[], Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _TorchBackend(_Backend):
    def __init__(self, sources: _Sources, device: str, compiled: bool, seed: int) -> None:
        import torch

        self.name = "torch-compile" if compiled else "torch"
        self.device = device
        self.cuda_timing = device == "cuda"
        self.seed = seed
        module = sources.module.to(device)
        self.input_dims = list(sources.config.input_shape)
        self._torch = torch
        self._fn = module
        if compiled:
            self.note = "compile time excluded"
            # dynamic=False: one specialised graph per batch size, as a server would warm up.
            self._fn = torch.compile(module, dynamic=False)

    def prepare(self, batch: int) -> Callable[[], Any]:
        torch = self._torch
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.rand(batch, *self.input_dims, generator=gen).to(self.device)
        fn = self._fn

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


class _OrtBackend(_Backend):
    name = "ort"

    def __init__(self, sources: _Sources, seed: int, threads: int | None = None) -> None:
        path = sources.onnx()
        self.path = path
        self.plugin = _is_plugin_onnx(path)
        self.seed = seed
        if self.plugin:
            self.note = ORT_PLUGIN_NOTE
        elif sources.onnx_exported:
            self.note = "standard ONNX exported from the checkpoint"
        from stn_deploy import ort_ops

        # ort_session registers our Python ops when the graph has plugin ops.
        self.session = ort_ops.ort_session(path, threads=threads)
        _, self.dims, self.dtype = _onnx_input(path)

    def prepare(self, batch: int) -> Callable[[], Any]:
        import numpy as np

        batch_dim = self.dims[0] if self.dims else None
        if isinstance(batch_dim, int) and batch_dim > 0 and batch_dim != batch:
            raise _Skip(f"the ONNX has a fixed batch of {batch_dim}")
        shape = _resolve_dims(self.dims[1:], batch)
        x = np.random.default_rng(self.seed).random(shape, dtype=np.float32).astype(self.dtype)
        name = self.session.get_inputs()[0].name
        session = self.session
        return lambda: session.run(None, {name: x})


class _TrtBackend(_Backend):
    name = "trt"
    device = "cuda"
    cuda_timing = True

    def __init__(self, sources: _Sources, seed: int) -> None:
        import torch

        if not torch.cuda.is_available():
            raise _Skip("needs a GPU")
        if sources.engine is None:
            raise _Skip("needs an engine (bench an engine file or pass --engine)")
        from stn_deploy import run

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


def _open_backend(name: str, sources: _Sources, device: str, seed: int, threads: int | None = None) -> _Backend:
    if name in ("torch", "torch-compile"):
        return _TorchBackend(sources, device, name == "torch-compile", seed)
    if name == "ort":
        return _OrtBackend(sources, seed, threads)
    if name == "trt":
        return _TrtBackend(sources, seed)
    raise UserError(f"unknown backend {name!r}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:200]


# --------------------------------------------------------------------------- sampler


def _sampler_section(sources: _Sources, options: BenchOptions, device: str) -> dict[str, Any]:
    """Time the first spatial transformer's sampling step alone against a copy of its bytes."""
    import torch

    try:
        module = sources.module
    except _Skip as exc:
        return {"status": "skipped", "reason": str(exc), "results": []}
    from stn_deploy.models import spatial_transformers

    transformers = spatial_transformers(module)
    if not transformers:
        return {"status": "skipped", "reason": "the model has no spatial transformer", "results": []}
    st = transformers[0].to(device)
    settings = st.settings
    section: dict[str, Any] = {
        "status": "ok",
        "transform": getattr(st.generator, "kind", type(st.generator).__name__),
        "out_size": list(st.out_size),
        "mode": settings.mode,
        "padding_mode": settings.padding_mode,
        "align_corners": settings.align_corners,
        "bytes_formula": "input actually read (taps x output pixels, capped at the input) + params + output",
        "copy": "device-to-device copy" if device == "cuda" else "host memcpy",
        "results": [],
    }
    cuda = device == "cuda"
    gen = torch.Generator().manual_seed(options.seed)
    for batch in options.batches:
        x = torch.rand(batch, *sources.config.input_shape, generator=gen).to(device)
        with torch.inference_mode():
            params = st.localisation(x)
        nbytes = sampler_bytes(x.shape, st.out_size, param_bytes=params.numel() * params.element_size(),
                               elem_bytes=x.element_size(), mode=settings.mode)
        half = nbytes["total"] // 2  # the copy reads and writes half each: the same bytes moved

        def torch_warp(x=x, params=params):
            with torch.inference_mode():
                return st.warp(x, params)

        impls: list[tuple[str, Callable[[], Any] | None, str | None]] = [("torch", torch_warp, None)]
        impls.append(_plugin_warp(st, x, params, options.threads))
        rows = {}
        runnable: dict[str, Callable[[], Any]] = {"copy": copy_fn(half, device)}
        for impl, fn, reason in impls:
            rows[impl] = {"impl": impl, "batch": batch, "device": device, "input_shape": list(x.shape), "bytes": nbytes}
            if fn is None:
                rows[impl].update(status="skipped", reason=reason)
                continue
            try:
                fn()  # fail here, alone, rather than inside the interleaved timing
            except Exception as exc:  # a kernel failure is a row, not a crash
                rows[impl].update(status="failed", reason=_short(exc))
            else:
                runnable[impl] = fn
        samples = time_interleaved(runnable, warmup=options.warmup, iters=options.iters, cuda=cuda)
        copy = copy_stats(samples.pop("copy"), half)
        for impl, times in samples.items():
            stats = latency_stats(times)
            gbps = nbytes["total"] / (stats["p50_ms"] * 1e-3) / 1e9
            rows[impl].update(status="ok", **stats, gbps=gbps, copy_p50_ms=copy["p50_ms"], copy_gbps=copy["gbps"],
                              fraction_of_copy=gbps / copy["gbps"])
        section["results"].extend(rows.values())
    return section


def _plugin_warp(st, x, params, threads: int | None = None) -> tuple[str, Callable[[], Any] | None, str | None]:
    """The plugin's fused theta -> sample kernel for this transformer, or why it cannot run."""
    theta = st.generator.theta(params) if hasattr(st.generator, "theta") else None
    if theta is None:
        return ("plugin", None, "the transform has no matrix (TPS): no fused kernel")
    if theta.shape[-2:] not in ((2, 3), (3, 3)):
        return ("plugin", None, f"theta of shape {list(theta.shape)} has no fused 2-D kernel")
    try:
        from stn_deploy import kernels

        kernels.load_library()
    except (ImportError, UserError) as exc:
        return ("plugin", None, f"plugin library unavailable: {exc}")
    s = st.settings
    theta = theta.contiguous()
    size = st.out_size
    return ("plugin", lambda: kernels.affine_grid_sample(x, theta, size, s.mode, s.padding_mode, s.align_corners,
                                                         num_threads=threads), None)


# --------------------------------------------------------------------------- main entry


def bench(options: BenchOptions, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Benchmark ``options.model`` and write ``<name>.json`` and ``<name>.png``.

    Args:
        options: what to measure and where to write.
        progress: called with one line per step (the CLI prints them); default silent.

    Returns:
        The report and the paths written.

    Raises:
        UserError: a missing or unrecognised model file, an unwritable output folder.
    """
    import torch

    say = progress or (lambda _msg: None)
    name = options.name or f"bench-{options.model.stem}"
    if options.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda given but no CUDA GPU is available")
    device = "cuda" if options.device == "auto" and torch.cuda.is_available() else ("cpu" if options.device == "auto" else options.device)

    previous_threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)  # process-wide: restored below
    try:
        return _bench(options, name, device, say)
    finally:
        torch.set_num_threads(previous_threads)


def _bench(options: BenchOptions, name: str, device: str, say: Callable[[str], None]) -> BenchResult:
    import torch

    with tempfile.TemporaryDirectory(prefix="stn-bench-") as tmp:
        sources = _Sources(options, Path(tmp))
        dims, dtype = sources.input_shape()
        ensure_writable_dir(options.output_dir)  # after the input checks: bad input creates nothing
        report: dict[str, Any] = {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {
                "path": str(options.model),
                "kind": sources.kind,
                "name": sources.config.name if sources.config is not None else options.model.stem,
                "input_shape": dims,
                "dtype": dtype,
            },
            **environment(),
            "settings": {
                "backends": list(options.backends),
                "batches": list(options.batches),
                "warmup": options.warmup,
                "iters": options.iters,
                "torch_device": device,
                "cpu_threads": torch.get_num_threads(),
                "timer": "cuda-events" if device == "cuda" else "perf_counter",
                "throughput": "batch / p50 (samples/s)",
                "speedup_vs_torch": "torch eager p50 / p50, same run",
            },
            "results": [],
        }
        for backend_name in options.backends:
            report["results"].extend(_bench_backend(backend_name, sources, options, device, dims, say))
        if sources.onnx_exported:
            report["model"]["onnx"] = "exported to a temporary folder (standard ops)"
        elif sources.onnx_path is not None:
            report["model"]["onnx"] = str(sources.onnx_path)
        if options.sampler:
            say("sampler vs copy")
            report["sampler"] = _sampler_section(sources, options, device)

    _add_ratios(report["results"])
    json_path = options.output_dir / f"{name}.json"
    png_path = options.output_dir / f"{name}.png"
    report["outputs"] = {"json": str(json_path), "png": str(png_path)}
    plot_latency(report, png_path)
    write_json(json_path, report)
    return BenchResult(report=report, json_path=json_path, png_path=png_path)


def _bench_backend(name: str, sources: _Sources, options: BenchOptions, device: str, dims: list,
                   say: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    base: dict[str, Any] = {"backend": name}
    try:
        backend = _open_backend(name, sources, device, options.seed, options.threads)
    except _Skip as exc:
        say(f"{name}: skipped: {exc}")
        return [{**base, "batch": b, "status": "skipped", "reason": str(exc)} for b in options.batches]
    except UserError as exc:  # e.g. the plugin library is not built: this backend cannot run here
        say(f"{name}: skipped: {exc}")
        return [{**base, "batch": b, "status": "skipped", "reason": str(exc)} for b in options.batches]
    except Exception as exc:  # a broken backend is reported in its rows; the others still run
        say(f"{name}: failed: {_short(exc)}")
        return [{**base, "batch": b, "status": "failed", "reason": _short(exc)} for b in options.batches]
    try:
        for batch in options.batches:
            row: dict[str, Any] = {**base, "batch": batch, "device": backend.device, "input_shape": [batch, *dims]}
            if backend.note:
                row["note"] = backend.note
            try:
                fn = backend.prepare(batch)
                samples = time_callable(fn, warmup=options.warmup, iters=options.iters, cuda=backend.cuda_timing)
            except _Skip as exc:
                row.update(status="skipped", reason=str(exc))
            except Exception as exc:  # as above: record and go on
                row.update(status="failed", reason=_short(exc))
            else:
                stats = latency_stats(samples)
                row.update(status="ok", **stats, throughput_sps=batch / (stats["p50_ms"] * 1e-3))
                if backend.compile_s is not None:
                    row["compile_s"] = round(backend.compile_s, 3)
            say(_row_line(row))
            rows.append(row)
    finally:
        backend.close()
    return rows


def _row_line(row: dict[str, Any]) -> str:
    if row["status"] == "ok":
        return f"{row['backend']} batch {row['batch']}: p50 {row['p50_ms']:.3f} ms"
    return f"{row['backend']} batch {row['batch']}: {row['status']}: {row.get('reason', '')}"


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    torch_p50 = {r["batch"]: r["p50_ms"] for r in rows if r["backend"] == "torch" and r["status"] == "ok"}
    for row in rows:
        base = torch_p50.get(row["batch"])
        row["speedup_vs_torch"] = base / row["p50_ms"] if row["status"] == "ok" and base else None


# --------------------------------------------------------------------------- output


def plot_latency(report: dict[str, Any], target: Path) -> Path:
    """PNG of p50 latency (p90-p99 band) against batch, one line per backend; atomic write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    plotted = False
    for backend in report["settings"]["backends"]:
        rows = [r for r in report["results"] if r["backend"] == backend and r["status"] == "ok"]
        if not rows:
            continue
        rows.sort(key=lambda r: r["batch"])
        batches = [r["batch"] for r in rows]
        (line,) = ax.plot(batches, [r["p50_ms"] for r in rows], marker="o", label=f"{backend} p50")
        ax.fill_between(batches, [r["p90_ms"] for r in rows], [r["p99_ms"] for r in rows], color=line.get_color(), alpha=0.15)
        plotted = True
    if plotted:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        batches = sorted({r["batch"] for r in report["results"]})
        ax.set_xticks(batches)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8, title="band: p90-p99", title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no backend ran", ha="center", va="center", transform=ax.transAxes)
    dev = report["device"]
    where = dev.get("gpu") or dev.get("cpu", "cpu")
    ax.set_title(f"{report['model']['name']}: latency vs batch ({where})", fontsize=9)
    ax.set_xlabel("batch")
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, target)


def render_tables(report: dict[str, Any]) -> list[Any]:
    """Rich tables of the report: one for the backends, one for the sampler when present."""
    from rich.table import Table

    table = Table(title=f"bench {report['model']['name']} ({report['settings']['timer']})")
    table.add_column("backend", no_wrap=True)
    for col in ("batch", "p50 ms", "p90 ms", "p99 ms", "samples/s", "vs torch"):
        table.add_column(col, justify="right", no_wrap=True)
    # Reasons and notes go under the table: a wide text column would squeeze the numbers.
    notes: list[str] = []
    for backend in report["settings"]["backends"]:
        rows = [r for r in report["results"] if r["backend"] == backend]
        reasons = {(r["status"], r.get("reason")) for r in rows}
        if rows and all(r["status"] != "ok" for r in rows) and len(reasons) == 1:
            # One line for a backend that could not run at all, e.g. trt without a GPU.
            status, reason = reasons.pop()
            table.add_row(backend, ",".join(str(r["batch"]) for r in rows), status, "", "", "", "")
            notes.append(f"{backend}: {status}: {reason}")
            continue
        compiled = []
        for r in rows:
            if r["status"] == "ok":
                ratio = f"{r['speedup_vs_torch']:.2f}x" if r.get("speedup_vs_torch") else "-"
                table.add_row(backend, str(r["batch"]), f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}",
                              f"{r['p99_ms']:.3f}", f"{r['throughput_sps']:,.0f}", ratio)
                if r.get("compile_s") is not None:
                    compiled.append(f"{r['compile_s']:.1f} s (batch {r['batch']})")
            else:
                table.add_row(backend, str(r["batch"]), r["status"], "", "", "", "")
                notes.append(f"{backend} batch {r['batch']}: {r['status']}: {r.get('reason', '')}")
        row_notes = {r["note"] for r in rows if r.get("note")}
        notes.extend(f"{backend}: {note}" for note in sorted(row_notes))
        if compiled:
            notes.append(f"{backend}: compile time {', '.join(compiled)}")
    tables: list[Any] = [table]
    tables.extend(notes)
    sampler = report.get("sampler")
    if sampler and sampler.get("status") == "ok":
        st = Table(title=f"sampler ({sampler['transform']}, {sampler['mode']}) vs {sampler['copy']} of the same bytes")
        for col in ("impl", "batch", "bytes", "p50 ms", "GB/s", "copy GB/s", "of copy"):
            st.add_column(col, justify="left" if col == "impl" else "right")
        skipped: dict[str, str] = {}
        for r in sampler["results"]:
            if r["status"] == "ok":
                st.add_row(r["impl"], str(r["batch"]), f"{r['bytes']['total']:,}", f"{r['p50_ms']:.4f}", f"{r['gbps']:.2f}",
                           f"{r['copy_gbps']:.2f}", f"{100 * r['fraction_of_copy']:.1f}%")
            else:
                st.add_row(r["impl"], str(r["batch"]), "", r["status"], "", "", "")
                skipped.setdefault(f"sampler {r['impl']}: {r['status']}: {r.get('reason', '')}", "")
        tables.append(st)
        tables.extend(skipped)
    elif sampler:
        tables.append(f"sampler: {sampler['status']}: {sampler.get('reason', '')}")
    return tables
