"""``bench``: every backend and batch, the sampler section, the report files."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stn_deploy.errors import UserError
from stn_deploy.io import atomic_paths, check_outputs_distinct, ensure_writable_dir, temporary_folder, write_json
from stn_deploy.jobs.bench.backends import Skip, Sources, open_backend, short_reason
from stn_deploy.jobs.bench.options import (
    DEFAULT_OUTPUT_DIR,
    NOISY_P90_OVER_P50,
    REPORT_FORMAT,
    REPORT_VERSION,
    BenchOptions,
    BenchResult,
)
from stn_deploy.jobs.bench.report import add_ratios, environment, plot_latency, row_line
from stn_deploy.jobs.bench.sampler import sampler_section
from stn_deploy.jobs.bench.timing import latency_stats, time_callable
from stn_deploy.model_files import ModelKind, detect_kind


def bench(options: BenchOptions, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Benchmark ``options.model`` and write ``<name>.json`` and ``<name>.png``.

    Args:
        options: what to measure and where to write (``output_dir`` None: a new run folder).
        progress: called with one line per step (the CLI prints them); default silent.

    Returns:
        The report and the paths written.

    Raises:
        UserError: a missing or unrecognised model file, an unwritable output folder.
    """
    import torch

    say = progress or (lambda _msg: None)
    name = options.name or f"bench-{options.model.stem}"
    if options.output_dir is None:
        options = dataclasses.replace(options, output_dir=new_run_dir(options.model))
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


def _output_paths(options: BenchOptions, name: str) -> tuple[Path, Path]:
    folder = options.output_dir
    assert folder is not None  # bench() fills it in
    return folder / f"{name}.json", folder / f"{name}.png"


def new_run_dir(model: Path, now: _dt.datetime | None = None) -> Path:
    """``runs/bench-<model stem>-<UTC YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``... when that
    folder exists already: a default run never writes into another run's folder."""
    now = now or _dt.datetime.now(_dt.UTC)
    base = DEFAULT_OUTPUT_DIR / f"bench-{Path(model).stem}-{now:%Y%m%d-%H%M%S}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _bench(options: BenchOptions, name: str, device: str, say: Callable[[str], None]) -> BenchResult:
    import torch

    output_dir = options.output_dir
    assert output_dir is not None  # bench() fills it in
    check_outputs_distinct(_output_paths(options, name), [options.model, options.onnx, options.engine])
    with temporary_folder("stn-bench-") as tmp:
        sources = Sources(options, tmp)
        dims, dtype = sources.input_shape()
        ensure_writable_dir(output_dir)  # after the input checks: bad input creates nothing
        report: dict[str, Any] = {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "model": {
                "path": str(options.model),
                "kind": sources.kind.family,
                "name": sources.config.name if sources.config is not None else options.model.stem,
                "input_shape": dims,
                "dtype": dtype,
                "inputs": sources.input_specs(),
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
            if backend_name != "triton":  # a served model: its own section below
                report["results"].extend(_bench_backend(backend_name, sources, options, device, dims, say))
        if sources.onnx_exported:
            report["model"]["onnx"] = "exported to a temporary folder (standard ops)"
        elif sources.onnx_path is not None:
            report["model"]["onnx"] = str(sources.onnx_path)
        if options.sampler:
            say("sampler vs copy")
            report["sampler"] = sampler_section(sources, options, device)
        if "triton" in options.backends:
            say(f"triton: closed-loop load at concurrency {', '.join(map(str, options.concurrency))}")
            report["serving"] = _serving_section(sources, options)
        if options.compare_ops:
            say("plugin vs native engines")
            report["ops"] = _ops_section(sources, options, Path(tmp))

    add_ratios(report["results"])
    json_path, png_path = _output_paths(options, name)
    report["outputs"] = {"json": str(json_path), "png": str(png_path)}
    with atomic_paths(json_path, png_path) as (tmp_json, tmp_png):  # the report and its plot: one unit
        plot_latency(report, tmp_png)
        write_json(tmp_json, report)
    return BenchResult(report=report, json_path=json_path, png_path=png_path)


def _serving_section(sources: Sources, options: BenchOptions) -> dict[str, Any]:
    """The served model under load (``triton.bench``), beside the same ONNX in-process."""
    from stn_deploy.triton.bench import TritonBenchOptions, bench_triton

    assert options.url is not None  # BenchOptions: --backends triton comes with --url
    try:
        onnx = sources.onnx()
    except Skip:
        onnx = None  # an engine: no in-process baseline on the CPU
    result = bench_triton(TritonBenchOptions(
        url=options.url, model_name=options.model_name or options.model.stem, concurrency=options.concurrency,
        requests=options.iters, warmup=options.warmup, batch=options.batches[0], seed=options.seed,
        onnx=onnx if onnx is not None and detect_kind(onnx) == ModelKind.ONNX_STANDARD else None,
        threads=options.threads or 1))
    return result.to_dict()


def _ops_section(sources: Sources, options: BenchOptions, workdir: Path) -> dict[str, Any]:
    """Plugin vs native engines of the checkpoint; a reason instead when they cannot be built."""
    from stn_deploy.jobs.bench.ops import compare_ops

    if sources.kind != ModelKind.CHECKPOINT:
        return {"status": "skipped", "reason": "needs a checkpoint (both engines are built from it)"}
    try:
        result = compare_ops(options.model, workdir / "ops", batches=(min(options.batches), max(options.batches)))
    except UserError as exc:
        return {"status": "skipped", "reason": str(exc)}
    return {"status": "ok", **result.to_dict()}


def _bench_backend(name: str, sources: Sources, options: BenchOptions, device: str, dims: list,
                   say: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    base: dict[str, Any] = {"backend": name}
    try:
        backend = open_backend(name, sources, device, options.seed, options.threads)
    except Skip as exc:
        say(f"{name}: skipped: {exc}")
        return [{**base, "batch": b, "status": "skipped", "reason": str(exc)} for b in options.batches]
    except UserError as exc:  # e.g. the plugin library is not built: this backend cannot run here
        say(f"{name}: skipped: {exc}")
        return [{**base, "batch": b, "status": "skipped", "reason": str(exc)} for b in options.batches]
    except Exception as exc:  # a broken backend is reported in its rows; the others still run
        say(f"{name}: failed: {short_reason(exc)}")
        return [{**base, "batch": b, "status": "failed", "reason": short_reason(exc)} for b in options.batches]
    try:
        for batch in options.batches:
            row: dict[str, Any] = {**base, "batch": batch, "device": backend.device, "input_shape": [batch, *dims]}
            if backend.note:
                row["note"] = backend.note
            try:
                fn = backend.prepare(batch)
                samples = time_callable(fn, warmup=options.warmup, iters=options.iters, cuda=backend.cuda_timing)
            except Skip as exc:
                row.update(status="skipped", reason=str(exc))
            except Exception as exc:  # as above: record and go on
                row.update(status="failed", reason=short_reason(exc))
            else:
                stats = latency_stats(samples)
                row.update(status="ok", **stats, throughput_sps=batch / (stats["p50_ms"] * 1e-3),
                           noisy=stats["p90_ms"] > NOISY_P90_OVER_P50 * stats["p50_ms"])
                if backend.compile_s is not None:
                    row["compile_s"] = round(backend.compile_s, 3)
            say(row_line(row))
            rows.append(row)
    finally:
        backend.close()
    return rows
