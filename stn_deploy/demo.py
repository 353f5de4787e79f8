"""The end-to-end demo: train -> export (standard and plugin) -> doctor -> engine -> validate ->
bench, on the bundled digits, on a CPU-only machine in a few minutes.

``demo(DemoOptions(...))`` writes one run folder::

    model.pt, metrics.json          trained ST-CNN (train.py)
    model.onnx                      standard ops: AffineGrid + GridSample (export.py)
    model.plugin.onnx               our plugin ops: STNAffineGridSample (export.py)
    doctor.json                     lint (doctor.py): model.onnx for ORT, model.plugin.onnx for
                                    TensorRT-RTX, and model.onnx for TensorRT-RTX, shown but not
                                    gating: its AffineGrid cannot be built, which is why the
                                    plugin flavour exists
    model.engine, model.engine.json TensorRT-RTX CPU-only AOT engine with our plugin (trt/)
    validate.json                   plugin ONNX on the CPU (and the engine on a GPU) vs PyTorch
    bench.json, bench.png           latency per backend and batch (bench.py)
    warp.png                        inputs and what the transformer made of them (viz.py)
    summary.json                    every step: status, seconds, artefacts, headline numbers

Each step records ``ok``, ``skipped`` (with the reason: no GPU, no TensorRT, no plugin
library) or ``failed`` (with the error) and the demo goes on with the steps that do not
depend on a failed one. Every file is written atomically; ``summary.json`` is written last.

``QUICK`` (``stn-deploy demo --quick``) runs the same path in about a minute with one epoch of
training, a small validation set and few bench iterations: for checks and tests.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stn_deploy.errors import UserError, ValidationFailed
from stn_deploy.io import output_folder, write_json

DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_MODEL = "st-cnn-affine"
DEFAULT_DATASET = "RTS"
#: The demo's training budget: about 1 minute on 2 idle cores (limit: 2 minutes).
DEFAULT_EPOCHS = 8
DEFAULT_BACKENDS = ("torch", "torch-compile", "ort", "trt")
DEFAULT_BATCHES = (1, 8, 64)
DEFAULT_WARMUP = 5
DEFAULT_ITERS = 50

OK, SKIPPED, FAILED = "ok", "skipped", "failed"

#: ``--quick``: the whole path in about a minute (an undertrained model; for checks and tests).
QUICK: dict[str, Any] = {
    "epochs": 1, "backends": ("torch", "ort", "trt"), "batches": (1, 8), "warmup": 1, "iters": 5,
    "validate_images": 64, "crafted_steps": 10,
}

ARTEFACTS = {
    "checkpoint": "model.pt",
    "metrics": "metrics.json",
    "onnx": "model.onnx",
    "plugin_onnx": "model.plugin.onnx",
    "doctor": "doctor.json",
    "engine": "model.engine",
    "validate": "validate.json",
    "bench_name": "bench",
    "warp": "warp.png",
    "summary": "summary.json",
}


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs.

    Attributes:
        output_dir: the run folder; default ``runs/demo-<UTC timestamp>``. It must not hold
            files already.
        model: zoo model to train; default ``st-cnn-affine``.
        dataset: distorted-digit set; default ``RTS`` (rotated, translated, scaled, 42x42).
        epochs: training epochs; default 10.
        seed: training seed; default 0.
        backends: bench backends; default torch, torch-compile, ort, trt.
        batches: bench batch sizes; default (1, 8, 64).
        warmup: bench warm-up iterations; default 5.
        iters: bench timed iterations; default 50.
        threads: bench CPU threads for every backend; default None = each library's own.
        build_engine: build the CPU-AOT engine (needs TensorRT-RTX or TensorRT); default True.
        validate_images: cap on the test images validation compares on; None (default) = the
            whole test set.
        crafted_steps: gradient steps of validation's crafted inputs; None (default) =
            validate's default.
        progress: show the training progress bar; default True.
    """

    output_dir: Path | None = None
    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    batches: tuple[int, ...] = DEFAULT_BATCHES
    warmup: int = DEFAULT_WARMUP
    iters: int = DEFAULT_ITERS
    threads: int | None = None
    build_engine: bool = True
    validate_images: int | None = None
    crafted_steps: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.output_dir is not None:
            object.__setattr__(self, "output_dir", Path(self.output_dir))
        object.__setattr__(self, "backends", tuple(self.backends))
        object.__setattr__(self, "batches", tuple(int(b) for b in self.batches))
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        from stn_deploy.data import DATASETS
        from stn_deploy.jobs.bench import BACKENDS
        from stn_deploy.models import MODEL_NAMES

        # Checked here so that a typo fails before the run folder exists, not as a failed step.
        if self.model not in MODEL_NAMES:
            raise UserError(f"unknown model {self.model!r}; choose from {', '.join(MODEL_NAMES)}")
        if self.dataset not in DATASETS:
            raise UserError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        for backend in self.backends:
            if backend not in BACKENDS:
                raise UserError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise UserError(f"batch sizes must be positive integers, got {list(self.batches)}")
        if self.iters < 1 or self.warmup < 0:
            raise UserError("--iters must be at least 1 and --warmup 0 or more")


@dataclass
class Step:
    """One step of the demo as recorded in ``summary.json``."""

    name: str
    status: str = OK
    seconds: float = 0.0
    reason: str | None = None
    artefacts: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"step": self.name, "status": self.status, "seconds": round(self.seconds, 2)}
        if self.reason:
            d["reason"] = self.reason
        d["artefacts"] = self.artefacts
        if self.detail:
            d["detail"] = self.detail
        return d


@dataclass(frozen=True)
class DemoResult:
    """The run folder, its summary (the content of ``summary.json``) and the bench report."""

    run_dir: Path
    summary: dict[str, Any]
    bench_report: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not any(s["status"] == FAILED for s in self.summary["steps"])


class _Skip(Exception):
    """The step cannot run here (no GPU, no TensorRT, a step it needs did not run)."""


def default_run_dir(now: _dt.datetime | None = None) -> Path:
    """``runs/demo-YYYYmmdd-HHMMSS`` (UTC)."""
    now = now or _dt.datetime.now(_dt.UTC)
    return DEFAULT_RUNS_DIR / f"demo-{now:%Y%m%d-%H%M%S}"


def _prepare_run_dir(options: DemoOptions) -> Path:
    run_dir = options.output_dir or default_run_dir()
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} is a file")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise UserError(f"run folder {run_dir} is not empty; choose another with -o")
    return run_dir


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


class _Runner:
    """Runs the steps in order, timing each and recording its outcome."""

    def __init__(self, run_dir: Path, say: Callable[[str], None]) -> None:
        self.run_dir = run_dir
        self.say = say
        self.steps: list[Step] = []
        self.bench_report: dict[str, Any] | None = None

    def path(self, key: str) -> Path:
        return self.run_dir / ARTEFACTS[key]

    def status(self, name: str) -> str | None:
        return next((s.status for s in self.steps if s.name == name), None)

    def needs(self, *names: str) -> None:
        for name in names:
            status = self.status(name)
            if status != OK:
                how = {FAILED: "failed", SKIPPED: "was skipped"}.get(status or "", "did not run")
                raise _Skip(f"needs the {name} step, which {how}")

    def step(self, name: str, fn: Callable[[Step], None]) -> Step:
        step = Step(name)
        self.say(f"[bold]{name}[/bold] …")
        start = time.perf_counter()
        try:
            fn(step)
        except _Skip as exc:
            step.status, step.reason = SKIPPED, str(exc)
        except KeyboardInterrupt:
            raise
        except UserError as exc:
            step.status, step.reason = FAILED, str(exc)
        except ValidationFailed as exc:
            step.status, step.reason = FAILED, f"validation failed: {exc}"
        except Exception as exc:  # any other error fails this step only; the summary keeps it
            step.status, step.reason = FAILED, _first_line(exc)
            step.detail["traceback"] = traceback.format_exc(limit=6).splitlines()[-6:]
        step.seconds = time.perf_counter() - start
        step.artefacts = [a for a in step.artefacts if (self.run_dir / a).exists()]
        self.steps.append(step)
        from rich.markup import escape

        colour = {OK: "green", SKIPPED: "yellow", FAILED: "red"}[step.status]
        tail = f": {escape(step.reason)}" if step.reason else ""
        self.say(f"  [{colour}]{step.status}[/{colour}] in {step.seconds:.1f} s{tail}")
        return step


# --------------------------------------------------------------------------- steps


def _train(options: DemoOptions, r: _Runner):
    def run(step: Step) -> None:
        from stn_deploy.jobs import train

        metrics = train.train(train.TrainOptions(
            model=options.model, dataset=options.dataset, output_dir=r.run_dir, epochs=options.epochs,
            seed=options.seed, progress=options.progress,
        ), on_epoch=None if sys.stdout.isatty() else (lambda line: r.say(f"  {line}")))
        step.artefacts += [ARTEFACTS["checkpoint"], ARTEFACTS["metrics"]]
        step.detail.update(test_error=metrics.get("test_error"), train_seconds=metrics.get("seconds"),
                           parameters=metrics.get("parameters"), epochs=options.epochs,
                           undertrained=options.epochs < DEFAULT_EPOCHS)

    return run


def _export(r: _Runner, ops: str, key: str):
    def run(step: Step) -> None:
        r.needs("train")
        from stn_deploy.jobs import export

        result = export.export(export.ExportOptions(checkpoint=r.path("checkpoint"), output=r.path(key), ops=ops))
        step.artefacts.append(ARTEFACTS[key])
        step.detail.update(input_shape=list(result.input_shape), op_counts=dict(result.op_counts))

    return run


#: (artefact key, doctor target, gating): the standard ONNX is served by ORT and the plugin ONNX
#: built by TensorRT-RTX; the standard ONNX against TensorRT is shown, not gating: it is why
#: the plugin flavour exists (no AffineGrid importer).
DOCTOR_CHECKS = (("onnx", "ort", True), ("plugin_onnx", "rtx", True), ("onnx", "rtx", False))


def _doctor(r: _Runner):
    def run(step: Step) -> None:
        from stn_deploy.jobs import doctor as doctor_mod

        reports, bad = {}, []
        for key, target, gating in DOCTOR_CHECKS:
            if not r.path(key).exists():
                continue
            rep = doctor_mod.doctor(r.path(key), target=target)
            label = f"{ARTEFACTS[key]}@{target}"
            reports[label] = {**rep.to_dict(), "gating": gating}
            step.detail[label] = {"target": target, "ok": rep.ok, "gating": gating, "findings": len(rep.findings),
                                  "errors": [f.line() for f in rep.errors]}
            if gating and not rep.ok:
                bad.append(label)
        if not reports:
            raise _Skip("no ONNX model was exported")
        write_json(r.path("doctor"), reports)
        step.artefacts.append(ARTEFACTS["doctor"])
        if bad:
            raise ValidationFailed(f"doctor found errors in {', '.join(bad)}")

    return run


def _require_plugin_library() -> None:
    """Skip (not fail) a step that needs the plugin library when it is not built here."""
    from stn_deploy import kernels

    try:
        kernels.load_library()
    except UserError as exc:
        raise _Skip(f"the plugin library is not built ({exc})") from None


def _build(options: DemoOptions, r: _Runner):
    def run(step: Step) -> None:
        if not options.build_engine:
            raise _Skip("--no-build-engine given")
        r.needs("export-plugin")
        from stn_deploy import trt

        available = trt.available_flavours()
        if not available:
            raise _Skip("neither tensorrt nor tensorrt_rtx is installed (pip install tensorrt-rtx)")
        _require_plugin_library()
        result = trt.build(trt.BuildOptions(onnx=r.path("plugin_onnx"), engine=r.path("engine")))
        step.artefacts += [ARTEFACTS["engine"], trt.sidecar_path(r.path("engine")).name]
        side = result.sidecar or {}
        step.detail.update(build_seconds=round(result.seconds, 2), backend=side.get("backend"),
                           engine_bytes=r.path("engine").stat().st_size)

    return run


def _validate(options: DemoOptions, r: _Runner):
    def run(step: Step) -> None:
        r.needs("export-plugin")
        _require_plugin_library()  # the plugin ONNX runs its ops on the library's CPU reference
        import torch

        from stn_deploy.jobs import validate

        reports: dict[str, Any] = {}
        failed: list[str] = []
        targets = [("plugin_onnx", "ort")]
        if torch.cuda.is_available() and r.status("build") == OK:
            targets.append(("engine", "trt"))
        else:
            step.detail["engine"] = "skipped: needs a GPU" if not torch.cuda.is_available() else "skipped: no engine"
        for key, _backend in targets:
            settings = validate.ValidateOptions(
                candidate=r.path(key), reference=r.path("checkpoint"), max_images=options.validate_images,
                seed=options.seed)
            if options.crafted_steps:
                settings = dataclasses.replace(settings, crafted_steps=options.crafted_steps)
            rep = validate.validate(settings)
            reports[ARTEFACTS[key]] = rep.to_dict()
            step.detail[ARTEFACTS[key]] = "passed" if rep.passed else "FAILED: " + "; ".join(rep.failures()[:2])
            if not rep.passed:
                failed.append(ARTEFACTS[key])
        write_json(r.path("validate"), reports)
        step.artefacts.append(ARTEFACTS["validate"])
        if failed:
            raise ValidationFailed(f"{', '.join(failed)} differ from PyTorch beyond tolerance")

    return run


def _bench(options: DemoOptions, r: _Runner):
    def run(step: Step) -> None:
        r.needs("train")
        from stn_deploy.jobs import bench

        onnx = r.path("onnx") if r.status("export-standard") == OK else None
        engine = r.path("engine") if r.status("build") == OK else None
        result = bench.bench(bench.BenchOptions(
            model=r.path("checkpoint"), backends=options.backends, batches=options.batches, warmup=options.warmup,
            iters=options.iters, output_dir=r.run_dir, name=ARTEFACTS["bench_name"], onnx=onnx, engine=engine,
            threads=options.threads,
        ))
        step.artefacts += [result.json_path.name, result.png_path.name]
        r.bench_report = result.report
        step.detail["p50_ms"] = {
            f"{row['backend']}@{row['batch']}": round(row["p50_ms"], 4)
            for row in result.report["results"] if row["status"] == "ok"
        }

    return run


def _visualize(options: DemoOptions, r: _Runner):
    def run(step: Step) -> None:
        r.needs("train")
        from stn_deploy import viz
        from stn_deploy.models import ModelConfig, build_model, spatial_transformers

        if not spatial_transformers(build_model(ModelConfig(options.model))):
            raise _Skip(f"{options.model} has no spatial transformer: there is no warp to draw")

        viz.visualize(viz.VisualizeOptions(checkpoint=r.path("checkpoint"), output=r.path("warp"), seed=options.seed))
        step.artefacts.append(ARTEFACTS["warp"])

    return run


# --------------------------------------------------------------------------- main entry


def demo(options: DemoOptions, progress: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole path on the bundled digits and write everything into one run folder.

    Args:
        options: see ``DemoOptions``.
        progress: called with one rich-markup line per step start and end; default silent.

    Returns:
        The run folder and the summary. ``result.ok`` is False when a step failed (the CLI
        then exits 1); skipped steps (no GPU, no TensorRT) do not count as failures.

    Raises:
        UserError: bad options or an unusable run folder.
    """
    with output_folder(_prepare_run_dir(options)) as run_dir:
        return _demo(options, run_dir, progress or (lambda _msg: None))


def _demo(options: DemoOptions, run_dir: Path, say: Callable[[str], None]) -> DemoResult:
    started = time.perf_counter()
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    r = _Runner(run_dir, say)
    say(f"run folder [bold]{run_dir}[/bold]")

    r.step("train", _train(options, r))
    r.step("export-standard", _export(r, "standard", "onnx"))
    r.step("export-plugin", _export(r, "plugin", "plugin_onnx"))
    r.step("doctor", _doctor(r))
    r.step("build", _build(options, r))
    r.step("validate", _validate(options, r))
    r.step("visualize", _visualize(options, r))
    r.step("bench", _bench(options, r))

    from stn_deploy.jobs.bench import environment

    summary: dict[str, Any] = {
        "format": "stn-deploy-demo",
        "version": 1,
        "created": created,
        "run_dir": str(run_dir),
        "seconds": round(time.perf_counter() - started, 2),
        "options": {
            "model": options.model, "dataset": options.dataset, "epochs": options.epochs, "seed": options.seed,
            "backends": list(options.backends), "batches": list(options.batches),
            "warmup": options.warmup, "iters": options.iters, "threads": options.threads,
        },
        **environment(),
        "steps": [s.to_dict() for s in r.steps],
        "artefacts": sorted(p.name for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".")) + [ARTEFACTS["summary"]],
    }
    summary["ok"] = not any(s.status == FAILED for s in r.steps)
    summary["headline"] = _headlines(r)
    write_json(run_dir / ARTEFACTS["summary"], summary)
    return DemoResult(run_dir=run_dir, summary=summary, bench_report=r.bench_report)


def _headlines(r: _Runner) -> dict[str, Any]:
    """The few numbers a reader wants first: accuracy, engine size, validation verdict, and
    the bench's speedups against torch eager at the largest batch."""
    steps = {s.name: s for s in r.steps}
    out: dict[str, Any] = {}
    if steps["train"].status == OK:
        out["test_error_percent"] = steps["train"].detail.get("test_error")
    if steps["build"].status == OK:
        out["engine_bytes"] = steps["build"].detail.get("engine_bytes")
    out["validation"] = {k: v for k, v in steps["validate"].detail.items()} or steps["validate"].status
    if r.bench_report:
        rows = [row for row in r.bench_report["results"] if row["status"] == "ok"]
        if rows:
            top = max(row["batch"] for row in rows)
            out[f"speedup_vs_torch_at_batch_{top}"] = {
                row["backend"]: round(row["speedup_vs_torch"], 3) for row in rows
                if row["batch"] == top and row.get("speedup_vs_torch")
            }
    return out


def render_summary(result: DemoResult) -> list[Any]:
    """Rich renderables: the steps table, then the bench tables when the bench ran."""
    from rich.markup import escape
    from rich.table import Table

    s = result.summary
    table = Table(title=f"demo: {s['options']['model']} on {s['options']['dataset']} in {s['seconds']:.0f} s")
    table.add_column("step", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    table.add_column("result")
    colours = {OK: "green", SKIPPED: "yellow", FAILED: "red"}
    for step in s["steps"]:
        table.add_row(step["step"], f"[{colours[step['status']]}]{step['status']}[/]", f"{step['seconds']:.1f}",
                      escape(step.get("reason") or _headline(step)))
    out: list[Any] = [table]
    if result.bench_report:
        from stn_deploy.jobs.bench import render_tables

        out.extend(render_tables(result.bench_report))
    out.append(f"run folder: {result.run_dir}  ({', '.join(s['artefacts'])})")
    return out


def _headline(step: dict[str, Any]) -> str:
    d = step.get("detail", {})
    name = step["step"]
    if name == "train":
        line = f"test error {d.get('test_error', float('nan')):.2f}% after {d.get('epochs')} epochs ({d.get('parameters')} parameters)"
        if d.get("undertrained"):
            line += (f"; UNDERTRAINED (fewer than {DEFAULT_EPOCHS} epochs): this error and warp.png say nothing "
                     "about accuracy, the export/build/validate checks still hold")
        return line
    if name.startswith("export"):
        ops = ", ".join(f"{k}×{v}" for k, v in sorted(d.get("op_counts", {}).items()) if k.startswith(("STN", "Grid", "Affine")))
        return f"{', '.join(step['artefacts'])}: {ops}"
    if name == "doctor":
        return "; ".join(f"{k}: {len(v['errors'])} errors" + ("" if v["gating"] else " (why the plugin)")
                         for k, v in d.items() if isinstance(v, dict))
    if name == "build":
        return f"{d.get('engine_bytes', 0):,} bytes in {d.get('build_seconds')} s"
    if name == "validate":
        return "; ".join(f"{k}: {v}" for k, v in d.items())
    if name == "bench":
        p50 = d.get("p50_ms", {})
        return ", ".join(f"{k} {v:.2f} ms" for k, v in list(p50.items())[:6])
    return ", ".join(step["artefacts"])
