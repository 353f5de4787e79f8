"""Reproduce the paper's Table 1 (distorted MNIST) on sklearn's digits, on one CPU thread.

Trains CNN, FCN, ST-CNN and ST-FCN (affine, projective, TPS) on R, RTS, P and E under one
fixed budget (same epochs, batch, learning rate for every model), for several seeds, and
writes ``benchmarks/results/accuracy.json`` (errors per seed, mean, std, the budget, torch
version, date) and prints a markdown table beside the paper's numbers.

Our setting is far smaller than the paper's: 1258 training digits (4 fresh distortions of
each per epoch) (sklearn's 8x8 digits
upscaled to 28x28) instead of 60000 MNIST digits, models scaled down, and a budget of
seconds per run. Absolute errors are therefore much higher; the comparison that carries over
is between models under the same budget.

    nice -n 19 python benchmarks/table1.py                 # the full run (about an hour)
    python benchmarks/table1.py --table-only               # re-print the table from the JSON
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stn_deploy import io  # noqa: E402
from stn_deploy.errors import UserError  # noqa: E402

MODELS = ("fcn", "cnn", "st-fcn-affine", "st-fcn-projective", "st-fcn-tps", "st-cnn-affine", "st-cnn-projective", "st-cnn-tps")
DATASETS = ("R", "RTS", "P", "E")
#: The paper's Table 1, % test error on MNIST (Jaderberg et al. 2015).
PAPER = {
    "fcn": {"R": 2.1, "RTS": 5.2, "P": 3.1, "E": 3.2},
    "cnn": {"R": 1.2, "RTS": 0.8, "P": 1.5, "E": 1.4},
    "st-fcn-affine": {"R": 1.2, "RTS": 0.8, "P": 1.5, "E": 2.7},
    "st-fcn-projective": {"R": 1.3, "RTS": 0.9, "P": 1.4, "E": 2.6},
    "st-fcn-tps": {"R": 1.1, "RTS": 0.8, "P": 1.4, "E": 2.4},
    "st-cnn-affine": {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.2},
    "st-cnn-projective": {"R": 0.8, "RTS": 0.6, "P": 0.8, "E": 1.3},
    "st-cnn-tps": {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.1},
}
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "accuracy.json"


def markdown_table(report: dict) -> str:
    """Ours (mean ± std over seeds) beside the paper's error, % test error."""
    datasets = [d for d in DATASETS if any(d in report["results"].get(m, {}) for m in MODELS)]
    lines = [
        "| model | " + " | ".join(f"{d} ours | {d} paper" for d in datasets) + " |",
        "|---|" + "---:|---:|" * len(datasets),
    ]
    for model in MODELS:
        cells = []
        for d in datasets:
            r = report["results"].get(model, {}).get(d)
            ours = f"{r['mean']:.1f} ± {r['std']:.1f}" if r and r["errors"] else "–"
            cells += [ours, f"{PAPER[model][d]:.1f}"]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summarise(errors: list[float]) -> dict:
    return {
        "mean": statistics.fmean(errors) if errors else None,
        "std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True, help="Epochs of every run.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Seeds 0..N-1 per cell.")
@click.option("--models", default=",".join(MODELS), show_default=True, help="Comma-separated subset.")
@click.option("--datasets", default=",".join(DATASETS), show_default=True, help="Comma-separated subset.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_OUTPUT,
              show_default=True)
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Keep finished runs of an earlier report with the same budget.")
@click.option("--table-only", is_flag=True, help="Only print the table of an existing report.")
def main(epochs, seeds, models, datasets, output, resume, table_only):
    """Train the Table 1 grid on one CPU thread and write the accuracy report."""
    if table_only:
        click.echo(markdown_table(json.loads(output.read_text())))
        return
    import torch

    from stn_deploy.data import make_dataset
    from stn_deploy.jobs.train import TrainOptions, train

    torch.set_num_threads(1)  # the budget is defined on one thread; leaves the rest to others
    models = [m for m in models.split(",") if m]
    datasets = [d for d in datasets.split(",") if d]
    defaults = TrainOptions("cnn", "R")
    budget = {
        "epochs": epochs, "batch_size": defaults.batch_size, "lr": defaults.lr, "optimizer": "Adam, 1 epoch linear warm-up, cosine schedule",
        "loc_lr_scale": defaults.loc_lr_scale, "threads": 1, "train_images_per_epoch": len(make_dataset("R", "train", 0)),
        "test_images": 2156, "test_seed": defaults.test_seed,
    }
    report = {
        "what": "Table 1 of Jaderberg et al. 2015 on sklearn digits; % test error",
        "budget": budget,
        "seeds": list(range(seeds)),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "paper": PAPER,
        "results": {},
    }
    if resume and output.exists():
        old = json.loads(output.read_text())
        if old.get("budget") == budget:
            report["results"] = old["results"]
    started = time.perf_counter()
    for dataset in datasets:
        for model in models:
            cell = report["results"].setdefault(model, {}).setdefault(
                dataset, {"errors": [], "seeds": [], "seconds": []}
            )
            for seed in range(seeds):
                if seed in cell["seeds"]:
                    continue
                try:
                    metrics = train(TrainOptions(model, dataset, epochs=epochs, seed=seed, progress=False))
                except UserError as exc:  # a diverged run is a result too: count it, keep going
                    cell.setdefault("diverged", []).append(seed)
                    cell["seeds"].append(seed)
                    click.echo(f"{dataset:>4} {model:<18} seed {seed}: {exc}", err=True)
                    continue
                cell["errors"].append(round(metrics["test_error"], 3))
                cell["seeds"].append(seed)
                cell["seconds"].append(metrics["seconds"])
                cell.update(_summarise(cell["errors"]))
                report["total_seconds"] = round(time.perf_counter() - started, 1)
                io.write_json(output, report)  # after every run, so an interrupted grid resumes
                click.echo(f"{dataset:>4} {model:<18} seed {seed}: {metrics['test_error']:6.2f}% "
                           f"({metrics['seconds']:.0f} s)", err=True)
    io.write_json(output, report)
    click.echo(markdown_table(report))


if __name__ == "__main__":
    main()
