"""The model zoo and training: ``models``, ``train``, ``evaluate``, ``visualize``, ``demo``."""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import click

# Names and option defaults only: none of these modules imports torch, onnx or TensorRT
# at import time.
from stn_deploy import demo as _demo
from stn_deploy.cli.group import SEED, NameChoice, main, step_lines, timing_options
from stn_deploy.data import DATASETS
from stn_deploy.errors import ValidationFailed
from stn_deploy.jobs import bench as _bench
from stn_deploy.jobs.train import TrainOptions
from stn_deploy.models import MODEL_NAMES
from stn_deploy.schema import INTERPOLATION_NAMES, PADDING_NAMES

_TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainOptions)}


@main.command("models")
@click.option("--dataset", type=NameChoice(DATASETS), default="R", show_default=True,
              help="Count parameters at this dataset's input size.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def models_command(dataset, as_json):
    """List the model zoo: names, parameter counts and descriptions."""
    from stn_deploy.data import IMAGE_SIZES
    from stn_deploy.models import model_table

    rows = model_table(IMAGE_SIZES[dataset])
    h, w = IMAGE_SIZES[dataset]
    if as_json:
        import json

        click.echo(json.dumps({"dataset": dataset, "input_size": [h, w], "models": [
            {"name": n, "parameters": c, "description": d} for n, c, d in rows]}, indent=2))
        return
    width = max(len(name) for name, _, _ in rows)
    click.echo(f"{'model':<{width}}  {'parameters':>10}  description   (input {h}x{w})")
    for name, count, description in rows:
        click.echo(f"{name:<{width}}  {count:>10,}  {description}")


@main.command("train")
@click.option("--model", type=NameChoice(MODEL_NAMES), required=True, help="Model to train.")
@click.option("--dataset", type=NameChoice(DATASETS), required=True,
              help="Distorted digits: R, RTS, P, E (Table 1) or cluttered (60x60).")
@click.option("--epochs", type=click.IntRange(min=1), default=_TRAIN_DEFAULTS["epochs"], show_default=True,
              help="Passes over the training digits, fresh distortions each.")
@click.option("--seed", type=SEED, default=_TRAIN_DEFAULTS["seed"], show_default=True,
              help="Seeds initialisation, distortions and shuffling.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_TRAIN_DEFAULTS["batch_size"], show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_TRAIN_DEFAULTS["lr"], show_default=True,
              help="Peak Adam learning rate (cosine schedule).")
@click.option("--mode", type=NameChoice(INTERPOLATION_NAMES), default="bilinear", show_default=True,
              help="Sampler interpolation of the spatial transformers.")
@click.option("--padding-mode", type=NameChoice(PADDING_NAMES), default="zeros", show_default=True,
              help="Sampler padding of the spatial transformers.")
@click.option("--align-corners/--no-align-corners", default=False, show_default=True,
              help="Sampler align_corners of the spatial transformers.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads  [default: torch's]")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Draw a progress bar.")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder (created if new) for model.pt and metrics.json.")
def train_command(model, dataset, epochs, seed, batch_size, lr, mode, padding_mode, align_corners, threads,
                  progress, output_dir):
    """Train a model; write OUTPUT_DIR/model.pt and OUTPUT_DIR/metrics.json."""
    import torch

    from stn_deploy.jobs.train import train
    from stn_deploy.schema import SamplerSettings

    if threads is not None:
        torch.set_num_threads(threads)
    options = TrainOptions(
        model=model, dataset=dataset, output_dir=output_dir, epochs=epochs, seed=seed, batch_size=batch_size,
        lr=lr, sampler=SamplerSettings(mode, padding_mode, align_corners), progress=progress,
    )
    metrics = train(options, on_epoch=None if sys.stdout.isatty() else step_lines("train"))
    click.echo(f"{model} on {dataset}: test error {metrics['test_error']:.2f}% after {epochs} epochs "
               f"({metrics['seconds']:.1f} s) -> {output_dir}")


@main.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--dataset", type=NameChoice(DATASETS), default=None,
              help="Test set  [default: the one the model was trained on]")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Test-set seed.")
def evaluate_command(checkpoint, dataset, seed):
    """Print the test error (%) of a checkpoint."""
    from stn_deploy.jobs.train import evaluate, load_checkpoint, resolve_dataset

    model, config = load_checkpoint(checkpoint)
    dataset = resolve_dataset(checkpoint, config, dataset)
    click.echo(f"{config.name} on {dataset} (test seed {seed}): test error {evaluate(model, dataset, seed):.2f}%")


@main.command("visualize")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="File: the picture to write (.png, .pdf, .svg, .jpg).")
@click.option("--dataset", type=NameChoice(DATASETS), default=None,
              help="Test set to draw from  [default: the one the model was trained on]")
@click.option("--count", type=click.IntRange(min=1, max=32), default=8, show_default=True, help="Examples drawn.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Test-set seed.")
def visualize_command(checkpoint, output, dataset, count, seed):
    """Draw test inputs with the sampling grid beside the transformed outputs."""
    from stn_deploy.viz import VisualizeOptions, visualize

    path = visualize(VisualizeOptions(checkpoint, output, dataset=dataset, count=count, seed=seed))
    click.echo(f"wrote {path}")


@main.command("demo")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of the run (must be empty or new)  [default: runs/demo-<UTC timestamp>]")
@click.option("--model", default=_demo.DEFAULT_MODEL, show_default=True, help="Zoo model to train.")
@click.option("--dataset", default=_demo.DEFAULT_DATASET, show_default=True, help="Distorted-digit set to train on.")
@click.option("--epochs", type=click.IntRange(min=1), default=_demo.DEFAULT_EPOCHS, show_default=True, help="Training epochs.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of training and validation.")
@timing_options(_demo.DEFAULT_BACKENDS, _demo.DEFAULT_BATCHES, _demo.DEFAULT_WARMUP, _demo.DEFAULT_ITERS)
# --build-engine: bench's --engine names an engine file; --engine/--no-engine stays as an alias.
@click.option("--build-engine/--no-build-engine", "--engine/--no-engine", "build_engine", default=True,
              show_default=True,
              help="Build the CPU-AOT TensorRT-RTX engine with our plugin.")
@click.option("--validate-images", type=click.IntRange(min=1), default=None,
              help="Cap on the test images validation compares on  [default: the whole test set]")
@click.option("--crafted-steps", type=click.IntRange(min=1), default=None,
              help="Gradient steps of validation's crafted inputs  [default: validate's]")
@click.option("--quick", is_flag=True, help="About a minute: " + ", ".join(
              f"--{'batch' if k == 'batches' else k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, tuple) else v}"
              for k, v in _demo.QUICK.items()) + " (options given explicitly win).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show the training progress bar.")
@click.pass_context
def demo_command(ctx, output_dir, model, dataset, epochs, seed, backends, batches, warmup, iters, threads, build_engine,
                 validate_images, crafted_steps, quick, progress):
    """Walk the whole path on the bundled digits: train a small ST-CNN, export standard and
    plugin ONNX, run doctor, build a CPU-AOT engine with our plugin, validate the plugin ONNX
    on the CPU (and the engine on a GPU when present), benchmark the available backends.

    Everything lands in one run folder (model.pt, metrics.json, model.onnx,
    model.plugin.onnx, doctor.json, model.engine + .json, validate.json, bench.json/.png,
    warp.png, summary.json). Steps that need a GPU or TensorRT are skipped with a reason
    where those are missing. Exit 1 when a step failed. About 3-5 minutes on 2 CPU cores;
    --quick runs the same path in about a minute with an undertrained model.
    """
    from rich.console import Console

    values = dict(
        epochs=epochs, backends=_bench.parse_backends(backends), batches=_bench.parse_batches(batches),
        warmup=warmup, iters=iters, validate_images=validate_images, crafted_steps=crafted_steps,
    )
    if quick:  # the preset fills only what the user left at its default
        for key, value in _demo.QUICK.items():
            if ctx.get_parameter_source(key) == click.core.ParameterSource.DEFAULT:
                values[key] = value
    options = _demo.DemoOptions(output_dir=output_dir, model=model, dataset=dataset, seed=seed, threads=threads,
                                build_engine=build_engine, progress=progress, **values)
    err = Console(stderr=True)
    result = _demo.demo(options, progress=lambda line: err.print(line, highlight=False))
    console = Console()
    for item in _demo.render_summary(result):
        console.print(item, highlight=False)
    if not result.ok:
        failed = [s["step"] for s in result.summary["steps"] if s["status"] == "failed"]
        raise ValidationFailed(f"demo steps failed: {', '.join(failed)} (see {result.run_dir / 'summary.json'})")
