"""The report's environment block, the latency plot and the rich tables."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path
from typing import Any

from stn_deploy.io import save_figure
from stn_deploy.jobs.bench.options import NOISY_P90_OVER_P50


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
        "cpu": cpu_name(),
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


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
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


def row_line(row: dict[str, Any]) -> str:
    if row["status"] == "ok":
        noisy = f" (noisy: p90 {row['p90_ms']:.3f} ms)" if row.get("noisy") else ""
        return f"{row['backend']} batch {row['batch']}: p50 {row['p50_ms']:.3f} ms{noisy}"
    return f"{row['backend']} batch {row['batch']}: {row['status']}: {row.get('reason', '')}"


def add_ratios(rows: list[dict[str, Any]]) -> None:
    torch_p50 = {r["batch"]: r["p50_ms"] for r in rows if r["backend"] == "torch" and r["status"] == "ok"}
    for row in rows:
        base = torch_p50.get(row["batch"])
        row["speedup_vs_torch"] = base / row["p50_ms"] if row["status"] == "ok" and base else None


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
                p90 = f"{r['p90_ms']:.3f}" + (" !" if r.get("noisy") else "")
                table.add_row(backend, str(r["batch"]), f"{r['p50_ms']:.3f}", p90,
                              f"{r['p99_ms']:.3f}", f"{r['throughput_sps']:,.0f}", ratio)
                if r.get("noisy"):
                    notes.append(f"{backend} batch {r['batch']}: noisy (p90 > {NOISY_P90_OVER_P50:g}x p50; a busy machine?): "
                                 "re-measure before quoting")
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
    tables.extend(_serving_tables(report.get("serving")))
    tables.extend(_ops_tables(report.get("ops")))
    return tables


def _serving_tables(serving: dict | None) -> list[Any]:
    from rich.table import Table

    if not serving:
        return []
    table = Table(title="served by Triton (closed loop, async gRPC)")
    for col in ("backend", "concurrency", "batch", "requests", "failed", "req/s", "p50 ms", "p99 ms", "batches"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in [*serving.get("rows", []), *([serving["baseline"]] if serving.get("baseline") else [])]:
        merged = ",".join(f"{k}x{v}" for k, v in sorted((r.get("batch_sizes") or {}).items(), key=lambda kv: int(kv[0])))
        table.add_row(r["backend"], str(r.get("concurrency", "-")), str(r.get("batch", "-")), str(r.get("requests", "-")),
                      str(r.get("failed", 0)), f"{r.get('throughput_rps', 0):,.0f}", f"{r.get('p50_ms', 0):.3f}",
                      f"{r.get('p99_ms', 0):.3f}", merged or "-")
    return [table]


def _ops_tables(ops: dict | None) -> list[Any]:
    from rich.table import Table

    if not ops:
        return []
    if ops.get("status") != "ok":
        return [f"plugin vs native engines: {ops.get('status')}: {ops.get('reason', '')}"]
    table = Table(title=f"plugin vs native engines ({ops['flavour']} {ops['flavour_version']})")
    for col in ("ops", "build s", "engine bytes", "layers", "latency ms"):
        table.add_column(col, justify="left" if col == "ops" else "right")
    for name in ("plugin", "native"):
        e = ops[name]
        latency = ", ".join(f"b{b}: {ms:.3f}" for b, ms in (e.get("latency_ms") or {}).items()) or "needs a GPU"
        table.add_row(name, f"{e['build_seconds']:.2f}", f"{e['engine_bytes']:,}", str(len(e["layers"])), latency)
    return [table]
