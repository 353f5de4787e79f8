"""Model benchmark: ``stn_deploy.jobs.bench`` over several zoo models, one summary.

For each model a freshly initialised checkpoint is written to a temporary folder (latency does
not depend on the weights), then ``bench.bench`` times it on the requested backends and
batches (torch eager is every ratio's baseline; ort runs the standard export; trt needs an
engine and a GPU and is otherwise reported skipped). With ``--engines`` on a GPU machine, an
engine is built from each model's plugin ONNX first so that trt runs too.

Writes ``model-<cpu|cuda>.json`` (every model's full bench report plus a summary table) and
``model-<cpu|cuda>.png`` (throughput per model and backend at the largest batch) into
``benchmarks/results/`` (``-o`` to change). Not collected by pytest.

Usage:
    python benchmarks/model.py                                  # default models, torch + ort (+ trt)
    python benchmarks/model.py --models st-cnn-affine --backends torch,torch-compile,ort
    python benchmarks/model.py --quick                          # 2 models, batch 1,8, few runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from stn_deploy.errors import UserError  # noqa: E402
from stn_deploy.io import save_figure, write_json  # noqa: E402
from stn_deploy.jobs import bench  # noqa: E402

DEFAULT_MODELS = ("cnn", "st-cnn-affine", "st-cnn-projective", "st-cnn-tps", "st-cnn-multi", "tutorial-stn")


def _checkpoint(name: str, in_size: tuple[int, int], folder: Path) -> Path:
    from stn_deploy.jobs.train import save_checkpoint
    from stn_deploy.models import ModelConfig, build_model

    config = ModelConfig(name, in_size=in_size)
    return save_checkpoint(folder / f"{name}.pt", build_model(config), config, {"note": "untrained, for timing"})


def _engine(checkpoint: Path, folder: Path) -> Path | None:
    """Plugin ONNX -> engine for the trt backend (GPU machines); None when it cannot be built."""
    from stn_deploy import trt
    from stn_deploy.jobs import export

    onnx_path = folder / f"{checkpoint.stem}.plugin.onnx"
    engine = folder / f"{checkpoint.stem}.engine"
    try:
        export.export(export.ExportOptions(checkpoint=checkpoint, output=onnx_path, ops="plugin"))
        trt.build(trt.BuildOptions(onnx=onnx_path, engine=engine))
    except UserError as exc:
        print(f"  no engine for {checkpoint.stem}: {exc}", file=sys.stderr)
        return None
    return engine


def plot(summary: list[dict], batch: int, target: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in summary))
    backends = list(dict.fromkeys(r["backend"] for r in summary if r["status"] == "ok"))
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(models) + 2), 4.2), dpi=110)
    width = 0.8 / max(1, len(backends))
    for j, backend in enumerate(backends):
        ys = []
        for m in models:
            row = next((r for r in summary if r["model"] == m and r["backend"] == backend and r["batch"] == batch), None)
            ys.append(row["throughput_sps"] if row and row["status"] == "ok" else 0.0)
        ax.bar([i - 0.4 + width * (j + 0.5) for i in range(len(models))], ys, width, label=backend)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, fontsize=8, rotation=15)
    ax.set_ylabel(f"samples/s at batch {batch}")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated zoo names")
    parser.add_argument("--backends", default="torch,ort,trt", help=f"comma-separated from {', '.join(bench.BACKENDS)}")
    parser.add_argument("--batch", default="1,8,64", help="comma-separated batch sizes")
    parser.add_argument("--in-size", type=int, default=28, help="input height = width in pixels (RTS digits: 42)")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch, ORT and the plugin alike (default: each library's own)")
    parser.add_argument("--engines", action="store_true", help="build an engine per model so that trt runs (GPU)")
    parser.add_argument("--quick", action="store_true", help="cnn and st-cnn-affine, batch 1,8, 5 runs")
    parser.add_argument("-o", "--output-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)

    try:
        models = ["cnn", "st-cnn-affine"] if args.quick else args.models.split(",")
        backends = bench.parse_backends(args.backends)
        batches = (1, 8) if args.quick else bench.parse_batches(args.batch)
        from stn_deploy.models import MODEL_NAMES

        for m in models:
            if m not in MODEL_NAMES:
                raise UserError(f"unknown model {m!r}; choose from {', '.join(MODEL_NAMES)}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    iters = 5 if args.quick else args.iters
    warmup = 1 if args.quick else args.warmup

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    reports: dict[str, Any] = {}
    summary: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="stn-model-bench-") as tmp:
        folder = Path(tmp)
        for name in models:
            print(f"{name} …", file=sys.stderr, flush=True)
            ckpt = _checkpoint(name, (args.in_size, args.in_size), folder)
            engine = _engine(ckpt, folder) if args.engines and "trt" in backends and device == "cuda" else None
            result = bench.bench(bench.BenchOptions(
                model=ckpt, backends=backends, batches=batches, warmup=warmup, iters=iters,
                output_dir=folder / "out", name=name, engine=engine, threads=args.threads,
            ))
            report = result.report
            reports[name] = report
            for row in report["results"]:
                entry = {"model": name, "backend": row["backend"], "batch": row["batch"], "status": row["status"]}
                if row["status"] == "ok":
                    entry.update(p50_ms=row["p50_ms"], p99_ms=row["p99_ms"], throughput_sps=row["throughput_sps"],
                                 speedup_vs_torch=row["speedup_vs_torch"])
                else:
                    entry["reason"] = row.get("reason")
                summary.append(entry)
                if row["status"] == "ok":
                    print(f"  {row['backend']:>13} batch {row['batch']:>3}: p50 {row['p50_ms']:8.3f} ms  "
                          f"{row['throughput_sps']:10,.0f}/s  {row['speedup_vs_torch'] or 0:.2f}x torch", file=sys.stderr)

    first = next(iter(reports.values()))
    out = {
        "format": "stn-deploy-model-bench",
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": first["device"],
        "versions": first["versions"],
        "settings": {"models": models, "backends": list(backends), "batches": list(batches), "in_size": args.in_size,
                     "iters": iters, "warmup": warmup, "threads": args.threads, "baseline": "torch eager, same run"},
        "summary": summary,
        "reports": reports,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / f"model-{device}"
    where = first["device"].get("gpu") or first["device"].get("cpu")
    plot(summary, max(batches), stem.with_suffix(".png"), f"zoo models at {args.in_size}x{args.in_size} on {where}")
    write_json(stem.with_suffix(".json"), out)
    print(f"wrote {stem}.json and {stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
