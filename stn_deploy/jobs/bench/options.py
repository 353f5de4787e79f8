"""What ``bench`` measures: backends, batches, iterations, where it writes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stn_deploy.errors import UserError

BACKENDS: tuple[str, ...] = ("torch", "torch-compile", "ort", "trt", "triton")
#: What runs without being asked: a served model (triton) needs --url.
DEFAULT_BACKENDS: tuple[str, ...] = ("torch", "torch-compile", "ort", "trt")
DEFAULT_CONCURRENCY: tuple[int, ...] = (1, 4, 16)
DEFAULT_BATCHES: tuple[int, ...] = (1, 8, 64)
DEFAULT_WARMUP = 10
DEFAULT_ITERS = 100
#: Parent of the new run folder ``bench-<model>-<UTC time>`` made when no output folder is given.
DEFAULT_OUTPUT_DIR = Path("runs")
#: A row is flagged noisy when its p90 exceeds this many times its p50.
NOISY_P90_OVER_P50 = 3.0
REPORT_FORMAT = "stn-deploy-bench"
REPORT_VERSION = 1

ORT_PLUGIN_NOTE = "validation path: plugin ops run as Python ops on the CPU reference, not serving"


@dataclass(frozen=True)
class BenchOptions:
    """What ``bench`` measures and where it writes.

    Attributes:
        model: a checkpoint (``.pt``), a ``torch.export`` program (``.pt2``), an ONNX (``.onnx``)
            or an engine (``.engine``/``.plan``).
        backends: backends to run, in order; default ``DEFAULT_BACKENDS`` (all but triton).
        batches: batch sizes; default (1, 8, 64).
        warmup: untimed iterations before each measurement; default 10.
        iters: timed iterations per backend and batch; default 100.
        output_dir: folder of the JSON and PNG; default None = a new folder
            ``runs/bench-<model stem>-<UTC YYYYmmdd-HHMMSS>`` (never another run's).
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
        url: the Triton server of the ``triton`` backend (``HOST:PORT``, gRPC).
        model_name: the served model; default MODEL's file stem.
        concurrency: requests in flight for the ``triton`` backend, one closed-loop run each.
        compare_ops: also build plugin and native engines of the checkpoint and compare them
            (build time, size, layers; latency on a GPU): ``bench.ops.compare_ops``.
        shapes: input shapes by name (``--shapes image:1x3x64x64``) for dynamic dims other
            than the batch; default: a ``.pt2``'s example inputs, the export's record.
    """

    model: Path
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    batches: tuple[int, ...] = DEFAULT_BATCHES
    warmup: int = DEFAULT_WARMUP
    iters: int = DEFAULT_ITERS
    output_dir: Path | None = None
    name: str | None = None
    onnx: Path | None = None
    engine: Path | None = None
    device: str = "auto"
    sampler: bool = True
    seed: int = 0
    threads: int | None = None
    url: str | None = None
    model_name: str | None = None
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    compare_ops: bool = False
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        if self.output_dir is not None:
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
        if ("triton" in self.backends) != (self.url is not None):
            raise UserError("--backends triton and --url go together (a model served by Triton)")
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise UserError(f"--concurrency must be positive integers, got {list(self.concurrency)}")
        if self.name is not None and (not self.name.strip() or Path(self.name).name != self.name
                                      or self.name in (".", "..")):
            raise UserError(f"--name {self.name!r} must be a plain file stem (no folders): "
                            "the outputs go into --output-dir")


@dataclass(frozen=True)
class BenchResult:
    """What ``bench`` wrote: the report (the JSON's content) and the two files."""

    report: dict[str, Any]
    json_path: Path
    png_path: Path

    @property
    def ran(self) -> bool:
        """Whether any backend produced a timing, a served model included (the CLI exits 2
        when none could run)."""
        served = (self.report.get("serving") or {}).get("rows", [])
        return any(r["status"] == "ok" for r in self.report["results"]) or any(r.get("succeeded") for r in served)

    @property
    def noisy(self) -> list[dict[str, Any]]:
        """Rows whose p90 exceeds ``NOISY_P90_OVER_P50`` x p50: numbers to re-measure."""
        return [r for r in self.report["results"] if r.get("noisy")]


def parse_backends(text: str) -> tuple[str, ...]:
    """``"torch,ort"`` -> ``("torch", "ort")``; UserError for an unknown or empty name."""
    names = tuple(part.strip() for part in text.split(","))
    if not text.strip() or any(not n for n in names):
        raise UserError(f"malformed --backends {text!r}: expected names separated by commas, e.g. torch,ort")
    for name in names:
        if name not in BACKENDS:
            raise UserError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return tuple(dict.fromkeys(names))  # drop repeats, keep order


def parse_batches(text: str, option: str = "--batch") -> tuple[int, ...]:
    """``"1,8,64"`` -> ``(1, 8, 64)``; UserError (naming ``option``) unless every item is a
    positive integer."""
    try:
        batches = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"malformed {option} {text!r}: expected positive integers separated by commas, "
                        "e.g. 1,8,64") from None
    if any(b < 1 for b in batches):
        raise UserError(f"malformed {option} {text!r}: the numbers must be positive")
    return tuple(dict.fromkeys(batches))
