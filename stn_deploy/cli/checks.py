"""Running and checking models: ``run``, ``validate``, ``bench``."""

from __future__ import annotations

from pathlib import Path

import click

# Names and option defaults only: none of these modules imports torch, onnx or TensorRT
# at import time.
from stn_deploy.cli.group import SEED, NameChoice, main, step_lines, timing_options
from stn_deploy.errors import UserError
from stn_deploy.jobs import bench as _bench
from stn_deploy.jobs.run import BACKENDS as RUN_BACKENDS


@main.command("run")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--inputs", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help=".npz or Polygraphy JSON keyed by input name (every iteration of a "
                   "polygraphy --save-inputs file is run)  [default: seeded random inputs]")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="File: FILE.json = Polygraphy RunResults (polygraphy inspect data reads it), "
                   "otherwise .npz keyed by output name.")
@click.option("--backend", type=NameChoice(RUN_BACKENDS), default=None,
              help="torch (checkpoint), ort (ONNX), trt (engine), triton (served)  [default: by model kind]")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch of random inputs.")
@click.option("--shapes", "shapes", multiple=True, metavar="NAME:SHAPE",
              help="Shape of a random input with dynamic dims, e.g. image:1x3x64x64; repeatable  "
                   "[default: the program's example inputs, the export's recorded shape]")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of random inputs.")
@click.option("--url", default=None, help="With --backend triton: the server, HOST:PORT (gRPC) or http://HOST:PORT.")
@click.option("--model-name", default=None, help="With --backend triton: the served model  [default: MODEL]")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run_command(model, inputs, output, backend, batch, shapes, seed, url, model_name, as_json):
    """Run a checkpoint, torch.export program (.pt2), ONNX model or engine on its inputs, or a model
    served by Triton (--backend triton --url HOST:PORT; MODEL is then the served model's name), and
    save the outputs."""
    import json

    from stn_deploy.jobs.run import RunOptions, run
    from stn_deploy.user_model import parse_shapes

    res = run(RunOptions(model, output, inputs=inputs, backend=backend, batch=batch, seed=seed, url=url,
                         model_name=model_name, shapes=parse_shapes(shapes)))
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
        return
    shapes = ", ".join(f"{k} {v}" for k, v in res.outputs.items())
    runs = f"{res.iterations} iterations, median " if res.iterations > 1 else ""
    click.echo(f"{res.kind} on {res.backend}: {shapes} in {runs}{res.inference_ms:.2f} ms -> {res.output}")


@main.command("validate")
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--reference", required=True, type=click.Path(path_type=Path),
              help="Checkpoint or torch.export .pt2 (run in PyTorch) or ONNX model (run in ONNX Runtime) to compare with, or "
                   "a Polygraphy outputs JSON (polygraphy run --save-outputs) of the --inputs given.")
@click.option("--atol", multiple=True, metavar="[OUTPUT:]VALUE",
              help="Absolute tolerance, for all outputs or one; repeatable  [default: per dtype of the candidate]")
@click.option("--rtol", multiple=True, metavar="[OUTPUT:]VALUE",
              help="Relative tolerance, for all outputs or one; repeatable  [default: per dtype of the candidate]")
@click.option("--inputs", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Extra inputs to compare on (.npz or Polygraphy JSON, every iteration).")
@click.option("--dataset", default=None, help="Test set  [default: the checkpoint's training set, else by input size]")
@click.option("--report", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the JSON report here.")
@click.option("--adversarial/--no-adversarial", default=True, show_default=True,
              help="Also compare on adversarial inputs (stress images; crafted extreme grids for a checkpoint reference).")
@click.option("--max-images", type=click.IntRange(min=1), default=None, help="Use only the first N test images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Images per inference (capped by an engine's profile).")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=None,
              help="Allowed task-accuracy difference, percentage points  [default: 0.1; 0.5 for an INT8 candidate]")
@click.option("--shapes", "shapes", multiple=True, metavar="NAME:SHAPE",
              help="Shape of a generated input with dynamic dims, e.g. image:2x3x64x64; repeatable (models "
                   "without a digit test set)  [default: the program's example inputs, the export's record]")
@click.option("--batch", type=click.IntRange(min=1), default=2, show_default=True,
              help="Batch of generated inputs (models without a digit test set).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (progress goes to stderr).")
def validate_command(candidate, reference, atol, rtol, inputs, dataset, report, adversarial, max_images,
                     batch_size, max_accuracy_drop, shapes, batch, as_json):
    """Compare CANDIDATE (engine on the GPU, plugin or standard ONNX in ONNX Runtime, a torch.export
    .pt2) with PyTorch (a checkpoint or your .pt2) or another ONNX.

    Models with any inputs, or a .pt2 on either side, are compared on generated inputs: random
    ones per kind of input and adversarial ones for every image, grid, theta or displacement.
    Exit code 0 when every output of every input set is within tolerance and the task
    accuracies agree, 1 when not, 2 on bad input.
    """
    from stn_deploy.jobs import validate as _validate
    from stn_deploy.user_model import parse_shapes

    options = _validate.ValidateOptions(
        candidate=candidate, reference=reference, atol=_validate.parse_tolerance(atol, "--atol"),
        rtol=_validate.parse_tolerance(rtol, "--rtol"), inputs=inputs, dataset=dataset, report=report,
        adversarial=adversarial, max_images=max_images, batch_size=batch_size, max_accuracy_drop=max_accuracy_drop,
        shapes=parse_shapes(shapes), batch=batch)
    result = _validate.validate(options, progress=step_lines("validate", err=as_json))
    if as_json:
        import json

        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.lines():
            click.echo(line)
        if report is not None:
            click.echo(f"report: {report}")
    _validate.check(result)


@main.command("bench")
@click.argument("model", type=click.Path(path_type=Path))
@timing_options(_bench.DEFAULT_BACKENDS, _bench.DEFAULT_BATCHES, _bench.DEFAULT_WARMUP, _bench.DEFAULT_ITERS)
@click.option("-o", "--output-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help=f"Folder of the JSON and PNG  [default: a new folder {_bench.DEFAULT_OUTPUT_DIR}/bench-<model>-<UTC time>]")
@click.option("--name", default=None, help="File stem of the outputs  [default: bench-<model stem>]")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=None,
              help="ONNX for the ort backend when MODEL is a checkpoint or a .pt2  [default: export a standard ONNX to a temp folder]")
@click.option("--engine", type=click.Path(path_type=Path), default=None, help="Engine for the trt backend when MODEL is not one.")
@click.option("--device", type=NameChoice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the torch backends run.")
@click.option("--sampler/--no-sampler", default=True, show_default=True, help="Also time the sampler against a copy of its bytes.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--url", default=None, help="With --backends triton: the Triton server's gRPC endpoint, HOST:PORT.")
@click.option("--model-name", default=None, help="With --backends triton: the served model  [default: MODEL's stem]")
@click.option("--concurrency", default=",".join(map(str, _bench.options.DEFAULT_CONCURRENCY)), show_default=True,
              help="With --backends triton: requests in flight, comma-separated; --iters requests each.")
@click.option("--compare-ops", is_flag=True,
              help="Also build plugin and native engines of the checkpoint: build time, size, layers (latency on a GPU).")
@click.option("--shapes", "shapes", multiple=True, metavar="NAME:SHAPE",
              help="Input shape for dynamic dims other than the batch, e.g. image:1x3x64x64; repeatable  "
                   "[default: a .pt2's example inputs, the export's record]")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
def bench_command(model, backends, batches, warmup, iters, output_dir, name, onnx_path, engine, device, sampler, seed,
                  threads, url, model_name, concurrency, compare_ops, shapes, as_json):
    """Latency of MODEL per backend and batch: p50/p90/p99, throughput, speedup vs torch eager.

    MODEL is a checkpoint (.pt) or a torch.export program (.pt2: any inputs; eager = the
    program's module), run by torch and torch-compile, and ort on a standard ONNX exported
    to a temporary folder unless --onnx is given; an ONNX (.onnx: ort; a plugin ONNX runs its
    plugin ops as Python ops, a validation path, not serving) or an engine (.engine/.plan:
    trt). trt needs a GPU and is reported "skipped: needs a GPU" without one; a backend that
    cannot run MODEL is reported skipped with the reason. CUDA events time GPU runs.

    For a checkpoint the sampler is also timed alone, as effective GB/s against a copy of the
    same bytes measured in the same run. Writes <name>.json and <name>.png (p50 latency vs
    batch) into the output folder, atomically. Rows whose p90 exceeds 3x their p50 are flagged
    noisy. Exit 2 when no backend could run MODEL.
    """
    from rich.console import Console

    from stn_deploy.user_model import parse_shapes

    options = _bench.BenchOptions(
        model=model, backends=_bench.parse_backends(backends), batches=_bench.parse_batches(batches),
        warmup=warmup, iters=iters, output_dir=output_dir, name=name, onnx=onnx_path, engine=engine,
        device=device, sampler=sampler, seed=seed, threads=threads, url=url, model_name=model_name,
        concurrency=_bench.parse_batches(concurrency, "--concurrency"), compare_ops=compare_ops,
        shapes=parse_shapes(shapes),
    )
    result = _bench.bench(options, progress=step_lines("bench", err=True))
    if as_json:
        import json

        click.echo(json.dumps(result.report, indent=2))
    else:
        console = Console()
        for table in _bench.render_tables(result.report):
            console.print(table)
        console.print(f"wrote {result.json_path} and {result.png_path}", highlight=False)
    if not result.ran:
        reasons = sorted({f"{r['backend']}: {r.get('reason', r['status'])}" for r in result.report["results"]})
        raise UserError(f"no backend could run {model.name} ({'; '.join(reasons)}); the report says so in "
                        f"{result.json_path}")
