"""The ``stn-deploy`` command line. Each command maps its options onto one library function.

Exit codes: 0 ok, 1 a check failed (validate, doctor), 2 bad input.
Heavy modules (torch, onnx, tensorrt) are imported inside the commands so that
``stn-deploy --help`` works anywhere.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import click

# Names and option defaults only: none of these modules imports torch, onnx or TensorRT
# at import time.
from stn_deploy import __version__, interrupts
from stn_deploy import bench as _bench
from stn_deploy import demo as _demo
from stn_deploy.data import DATASETS
from stn_deploy.doctor import RULES as DOCTOR_RULES
from stn_deploy.doctor import TARGETS as DOCTOR_TARGETS
from stn_deploy.errors import UserError, ValidationFailed
from stn_deploy.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, OPS_CHOICES
from stn_deploy.io import require_file
from stn_deploy.models import MODEL_NAMES
from stn_deploy.run import BACKENDS as RUN_BACKENDS
from stn_deploy.schema import INTERPOLATION_NAMES, PADDING_NAMES, PRECISION_NAMES
from stn_deploy.train import TrainOptions
from stn_deploy.trt import options as trt_options

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130

#: Exceptions of the libraries we drive that mean "this input is not what it claims to be":
#: (module, class name) anywhere in the exception's MRO. Matched by name so that the CLI
#: imports none of them.
_BAD_INPUT_TYPES = {
    ("onnx.onnx_cpp2py_export.checker", "ValidationError"),
    ("google.protobuf.message", "Error"),
    ("google.protobuf.text_format", "Error"),
    ("google.protobuf.json_format", "Error"),
    ("polygraphy.exception.exception", "PolygraphyException"),
}


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def _bad_input_message(exc: BaseException) -> str | None:
    """The one line for an expected failure that is not one of ours, else None (a bug: traceback)."""
    if isinstance(exc, MemoryError):
        return "out of memory: the input or batch is too large for this machine"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or _first_line(exc)}"
    if any((t.__module__, t.__name__) in _BAD_INPUT_TYPES for t in type(exc).__mro__):
        return f"{type(exc).__name__}: {_first_line(exc)}"
    return None


class _Group(click.Group):
    """The one error boundary: our errors and the expected failures of the libraries become
    one line and an exit code; anything else keeps its traceback (that is a bug to find)."""

    def invoke(self, ctx: click.Context):
        try:
            # Ctrl-C and SIGTERM: registered clean-ups, one line, exit 130 / 143 (interrupts).
            with interrupts.handled():
                return super().invoke(ctx)
        except click.UsageError as exc:
            # Click would print a usage screen; one line names the problem instead.
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            click.echo(f"error: {where}{exc.format_message()}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except ValidationFailed as exc:
            click.echo(f"failed: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:  # raised by other means than our handler (which exits itself)
            click.echo("error: interrupted; no partial output was left", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            message = _bad_input_message(exc)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            sys.exit(EXIT_BAD_INPUT)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stn-deploy")
@click.option("-v", "--verbose", count=True,
              help="Also show TensorRT's, ONNX Runtime's and Polygraphy's messages (-vv: their verbose ones).")
@click.option("-q", "--quiet", is_flag=True, help="Only results and errors.")
def main(verbose: int, quiet: bool) -> None:
    """Spatial Transformer Networks from PyTorch training to TensorRT engines."""
    from stn_deploy import verbosity

    if verbose and quiet:
        raise UserError("--verbose and --quiet contradict each other; give one")
    verbosity.set_level(verbosity.QUIET if quiet else min(verbose, verbosity.VERY_VERBOSE))
    verbosity.configure_polygraphy()



_TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainOptions)}
#: Seeds every library we seed accepts (numpy takes no negative seed, torch none past 2^64).
SEED = click.IntRange(0, 2**32 - 1)


class _NameChoice(click.Choice):
    """A case-insensitive choice (``--precision FP16``, ``--dataset rts``) whose bad value is a
    ``UserError`` (one line, exit 2) rather than a usage screen."""

    def __init__(self, choices, case_sensitive: bool = False) -> None:
        super().__init__(choices, case_sensitive=case_sensitive)

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            flag = f" ({param.opts[-1]})" if getattr(param, "opts", None) else ""
            raise UserError(f"unknown {param.name} {value!r}{flag}; choose from {', '.join(self.choices)}") from None


@main.command("models")
@click.option("--dataset", type=_NameChoice(DATASETS), default="R", show_default=True,
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
@click.option("--model", type=_NameChoice(MODEL_NAMES), required=True, help="Model to train.")
@click.option("--dataset", type=_NameChoice(DATASETS), required=True,
              help="Distorted digits: R, RTS, P, E (Table 1) or cluttered (60x60).")
@click.option("--epochs", type=click.IntRange(min=1), default=_TRAIN_DEFAULTS["epochs"], show_default=True,
              help="Passes over the training digits, fresh distortions each.")
@click.option("--seed", type=SEED, default=_TRAIN_DEFAULTS["seed"], show_default=True,
              help="Seeds initialisation, distortions and shuffling.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_TRAIN_DEFAULTS["batch_size"], show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_TRAIN_DEFAULTS["lr"], show_default=True,
              help="Peak Adam learning rate (cosine schedule).")
@click.option("--mode", type=_NameChoice(INTERPOLATION_NAMES), default="bilinear", show_default=True,
              help="Sampler interpolation of the spatial transformers.")
@click.option("--padding-mode", type=_NameChoice(PADDING_NAMES), default="zeros", show_default=True,
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

    from stn_deploy.schema import SamplerSettings
    from stn_deploy.train import train

    if threads is not None:
        torch.set_num_threads(threads)
    options = TrainOptions(
        model=model, dataset=dataset, output_dir=output_dir, epochs=epochs, seed=seed, batch_size=batch_size,
        lr=lr, sampler=SamplerSettings(mode, padding_mode, align_corners), progress=progress,
    )
    metrics = train(options, on_epoch=None if sys.stdout.isatty() else _step_lines("train"))
    click.echo(f"{model} on {dataset}: test error {metrics['test_error']:.2f}% after {epochs} epochs "
               f"({metrics['seconds']:.1f} s) -> {output_dir}")


@main.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--dataset", type=_NameChoice(DATASETS), default=None,
              help="Test set  [default: the one the model was trained on]")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Test-set seed.")
def evaluate_command(checkpoint, dataset, seed):
    """Print the test error (%) of a checkpoint."""
    from stn_deploy.train import evaluate, load_checkpoint, resolve_dataset

    model, config = load_checkpoint(checkpoint)
    dataset = resolve_dataset(checkpoint, config, dataset)
    click.echo(f"{config.name} on {dataset} (test seed {seed}): test error {evaluate(model, dataset, seed):.2f}%")


@main.command("visualize")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="File: the picture to write (.png, .pdf, .svg, .jpg).")
@click.option("--dataset", type=_NameChoice(DATASETS), default=None,
              help="Test set to draw from  [default: the one the model was trained on]")
@click.option("--count", type=click.IntRange(min=1, max=32), default=8, show_default=True, help="Examples drawn.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Test-set seed.")
def visualize_command(checkpoint, output, dataset, count, seed):
    """Draw test inputs with the sampling grid beside the transformed outputs."""
    from stn_deploy.viz import VisualizeOptions, visualize

    path = visualize(VisualizeOptions(checkpoint, output, dataset=dataset, count=count, seed=seed))
    click.echo(f"wrote {path}")



@main.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="File: the .onnx to write.")
@click.option("--ops", type=_NameChoice(OPS_CHOICES), default="standard", show_default=True,
              help="standard: AffineGrid + GridSample (any runtime); plugin: stn_deploy::STNGridSample / "
                   "STNAffineGridSample (our TensorRT plugin); native: ops stock TensorRT imports, no plugin.")
@click.option("--opset", type=click.IntRange(MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET,
              show_default=True, help="ONNX opset.")
@click.option("--dynamic-batch/--static-batch", default=True, show_default=True, help="Dynamic batch dimension.")
@click.option("--dynamic-hw", type=_NameChoice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Dynamic input H/W; auto = where the model allows.")
def export_command(checkpoint, output, ops, opset, dynamic_batch, dynamic_hw):
    """Export a checkpoint, or your own model saved as a torch.export program (.pt2), to ONNX
    with standard, plugin or native grid-sample ops. A program keeps the dynamic dims of its
    dynamic_shapes."""
    from stn_deploy.export import ExportOptions, export

    hw = {"auto": None, "yes": True, "no": False}[dynamic_hw]
    res = export(ExportOptions(checkpoint, output, ops=ops, opset=opset, dynamic_batch=dynamic_batch, dynamic_hw=hw))
    samplers = ", ".join(f"{s['generator']}/{s['mode']}" for s in res.samplers) or "none"
    inputs = ", ".join(f"{k} [{', '.join(map(str, v))}]" for k, v in res.inputs.items())
    click.echo(f"wrote {res.path}: {ops} ops, opset {res.opset}, input{'s' if len(res.inputs) > 1 else ''} {inputs}, "
               f"samplers: {samplers if res.samplers or not res.op_counts else _sampler_ops(res.op_counts)}")


def _sampler_ops(op_counts: dict[str, int]) -> str:
    """``2 STNAffineGridSample, 1 GridSample``: the sampler ops of an exported program."""
    names = ("STNAffineGridSample", "STNGridSample", "AffineGrid", "GridSample")
    return ", ".join(f"{op_counts[n]} {n}" for n in names if op_counts.get(n)) or "none"


@main.command("rewrite")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="File: the rewritten ONNX to write.")
@click.option("--fuse/--no-fuse", default=True, show_default=True,
              help="Fuse AffineGrid -> GridSample pairs into STNAffineGridSample (an AffineGrid not fused "
                   "is lowered to standard ops).")
@click.option("--to", "to", type=click.Choice(["plugin", "native"]), default="plugin", show_default=True,
              help="plugin: our plugin ops; native: ops stock TensorRT imports (AffineGrid as MatMul on a "
                   "base grid, opset 17 where the graph allows it), no plugin.")
@click.option("--target", type=_NameChoice(DOCTOR_TARGETS), default=None,
              help="Runtime the result must pass doctor for (nothing is written otherwise)  "
                   "[default: what build would use]")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def rewrite_command(model, output, fuse, to, target, as_json):
    """Replace GridSample / AffineGrid of a third-party ONNX with our plugin ops (or native ops).

    The result is linted by doctor for the target before it is written (exit 1 if it would fail).
    """
    import json

    from stn_deploy.rewriter import RewriteOptions, rewrite

    report = rewrite(RewriteOptions(model, output, fuse=fuse, to=to, target=target))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo("\n".join(report.lines()))
        click.echo(f"wrote {report.output}")


@main.command("doctor", epilog="\b\nRules:\n" + "\n".join(f"  {k:24s} {v}" for k, v in DOCTOR_RULES.items()))
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", type=_NameChoice(DOCTOR_TARGETS), default=None,
              help="Runtime to lint for: TensorRT 10, TensorRT 11, TensorRT-RTX 1.7, ONNX Runtime  "
                   "[default: what build would use: the installed TensorRT's major, else rtx, else trt11]")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor_command(model, target, as_json):
    """Lint an ONNX model for known STN deployment traps (exit 1 on an error).

    Each finding has a rule id, the node, a severity (error, warning, info) and a fix hint.
    """
    from stn_deploy.doctor import doctor

    report = doctor(model, target)
    click.echo(report.to_json() if as_json else "\n".join(report.lines()))
    if not report.ok:
        raise ValidationFailed(f"doctor found {len(report.errors)} error(s) for {report.target}")


@main.command("run")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--inputs", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help=".npz or Polygraphy JSON keyed by input name (every iteration of a "
                   "polygraphy --save-inputs file is run)  [default: seeded random inputs]")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="File: FILE.json = Polygraphy RunResults (polygraphy inspect data reads it), "
                   "otherwise .npz keyed by output name.")
@click.option("--backend", type=_NameChoice(RUN_BACKENDS), default=None,
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

    from stn_deploy.run import RunOptions, run
    from stn_deploy.user_model import parse_shapes

    res = run(RunOptions(model, output, inputs=inputs, backend=backend, batch=batch, seed=seed, url=url,
                         model_name=model_name, shapes=parse_shapes(shapes)))
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
        return
    shapes = ", ".join(f"{k} {v}" for k, v in res.outputs.items())
    runs = f"{res.iterations} iterations, median " if res.iterations > 1 else ""
    click.echo(f"{res.kind} on {res.backend}: {shapes} in {runs}{res.inference_ms:.2f} ms -> {res.output}")


@main.command("quantize")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The INT8 (QDQ) ONNX to write.")
@click.option("--calibration", default="RTS", show_default=True, metavar="DATASET|FILE.npz",
              help=f"Calibration images: a dataset ({', '.join(DATASETS)}; its training split) or an .npz of images.")
@click.option("--samples", type=int, default=512, show_default=True, help="Calibration images used.")
@click.option("--quantize-regression", is_flag=True,
              help="Also quantise the localisation nets' FC and regression layers (moves theta; to measure it).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def quantize_command(model, output, calibration, samples, quantize_regression, as_json):
    """INT8 post-training quantisation (ONNX Runtime, QDQ, per-channel) with the samplers in float.

    Convolutions and the classifier's FC layers go to INT8; the localisation nets' FC and
    regression layers, the grid generators and the samplers stay float. Standard, native and
    plugin ONNX.
    """
    import json

    from stn_deploy.quantize import QuantizeOptions, quantize

    report = quantize(QuantizeOptions(model, output, calibration=calibration, samples=samples,
                                      quantize_regression=quantize_regression))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else "\n".join(report.lines()))
    if not as_json:
        click.echo(f"wrote {report.output}")



@main.group("plugins")
def plugins_group() -> None:
    """Build or locate the TensorRT plugin + kernel library (libstn_deploy_plugins.so)."""


@plugins_group.command("build")
@click.option(
    "--archs",
    default=None,
    metavar="LIST",
    help="CUDA architectures, ';' or ',' separated (SASS for each, PTX of the lowest). "
    "[default: $STN_CUDA_ARCHS, else 75;80;86;89;90;100;103;110;120 (CUDA 13)]",
)
@click.option(
    "--cuda",
    "cuda_major",
    type=click.Choice(["12", "13"]),
    default=None,
    help="CUDA toolkit major (cudart is linked statically: 13 needs driver r580+, 12 runs on r525+). "
    "[default: the installed TensorRT's CUDA major, else the nvcc on PATH]",
)
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None, help="Parallel build jobs. [default: CPU count]")
@click.option(
    "--build-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="CMake build folder. [default: plugins/build]",
)
@click.option(
    "--tensorrt-include",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder with TensorRT's C++ headers (NvInferRuntime.h; TensorRT 10 or 11). [default: $TENSORRT_ROOT/include, "
    "else a system install (/usr/include/x86_64-linux-gnu, /usr/include, /usr/local/tensorrt/include), "
    "else third_party/tensorrt/include]",
)
@click.option("--verbose", is_flag=True, help="Show CMake's output.")
def plugins_build(
    archs: str | None, cuda_major: str | None, jobs: int | None, build_dir: Path | None,
    tensorrt_include: Path | None, verbose: bool
) -> None:
    """Configure and build the plugin library with CMake; print its path."""
    from stn_deploy import kernels

    path = kernels.build_library(
        build_dir=build_dir, archs=archs, jobs=jobs, tensorrt_include=tensorrt_include, verbose=verbose,
        cuda_major=int(cuda_major) if cuda_major else None,
    )
    click.echo(str(path))


@plugins_group.command("path")
@click.option("--json", "as_json", is_flag=True,
              help="Print the path with the library's version, CUDA runtime, minimum driver, architectures, "
              "TensorRT headers and supported TensorRT runtimes.")
def plugins_path(as_json: bool) -> None:
    """Print the plugin library's path ($STN_DEPLOY_PLUGIN_LIBRARY overrides); exit 2 if it is missing."""
    from stn_deploy import kernels

    path = require_file(kernels.library_path(), "plugin library",
                        hint="build it with `stn-deploy plugins build` (source tree) or reinstall the package")
    if as_json:
        import json

        click.echo(json.dumps(kernels.build_info(path), indent=2))
        return
    click.echo(str(path))




def _step_lines(prefix: str, err: bool = False):
    """A progress callback printing ``<prefix>: <step> (<elapsed> s)``, one line per step, so
    that logs show where a long command is and how long it has run; nothing with --quiet."""
    import time

    from stn_deploy import verbosity

    started = time.perf_counter()

    def say(message: str) -> None:
        if verbosity.level() > verbosity.QUIET:
            click.echo(f"{prefix}: {message} ({time.perf_counter() - started:.1f} s)", err=err)

    return say


def _build_progress():
    """A progress callback for ``trt.build``: a live status line on a terminal, else one
    line per top-level build phase on stdout (logs and CI; stderr keeps only errors)."""
    depth: dict[str, int] = {}
    tty = sys.stderr.isatty()
    if tty:
        from rich.console import Console

        status = Console(stderr=True).status("building: starting")
        status.start()
    else:
        status = None

    import time

    from stn_deploy import verbosity

    started = time.perf_counter()

    def progress(event: dict) -> None:
        if event.get("event") == "log" and verbosity.level() >= verbosity.VERBOSE:
            click.echo(f"[TensorRT] {event.get('severity')}: {event.get('message')}", err=True)
        # TensorRT's error lines are folded into the one-line error of a failed build.
        if event.get("event") != "progress" or event.get("kind") != "start":
            return
        if verbosity.level() <= verbosity.QUIET:
            return
        level = depth.get(str(event.get("parent")), -1) + 1
        depth[event["phase"]] = level
        if status is not None:
            status.update(f"building: {event['phase']}")
        elif level <= 1:
            click.echo(f"building: {event['phase']} ({time.perf_counter() - started:.1f} s)")

    progress.stop = (lambda: status.stop()) if status is not None else (lambda: None)
    return progress


@main.command("build")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="File: the engine; a sidecar JSON goes to OUTPUT.json  [default: MODEL with .engine]")
@click.option("--precision", type=_NameChoice(PRECISION_NAMES), default="fp32", show_default=True,
              help="Compute precision (engine I/O stays fp32).")
@click.option("--shapes", "shapes", multiple=True, metavar="NAME:MIN,OPT,MAX",
              help="Profile range of a dynamic input, shapes as 1x1x28x28 or [1,1,28,28]; NAME:SHAPE = "
                   "min=opt=max; repeat per input  "
                   f"[default: batch {'/'.join(map(str, trt_options.DEFAULT_BATCH_RANGE))} on a dynamic first dimension]")
@click.option("--min-shapes", multiple=True, metavar="NAME:SHAPE[,...]", help="trtexec-style profile minimum.")
@click.option("--opt-shapes", multiple=True, metavar="NAME:SHAPE[,...]",
              help="trtexec-style profile optimum (alone: min = max = opt).")
@click.option("--max-shapes", multiple=True, metavar="NAME:SHAPE[,...]", help="trtexec-style profile maximum.")
@click.option("--timing-cache", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Timing cache to read and update (TensorRT; a no-op in TensorRT-RTX).")
@click.option("--opt-level", type=click.IntRange(*trt_options.OPT_LEVEL_RANGE), default=None,
              help="Builder optimisation level  [default: TensorRT's, 3]")
@click.option("--workspace", "workspace_mib", type=click.IntRange(min=1), default=None, metavar="MiB",
              help="Workspace memory limit in MiB  [default: TensorRT's]")
@click.option("--compute-capability", "compute_capabilities", multiple=True,
              type=_NameChoice(trt_options.COMPUTE_CAPABILITY_CHOICES), default=("default",), show_default=True,
              help="TensorRT-RTX target GPUs (repeatable); 'default' = sm80/86/89/120+, no sm90.")
@click.option("--trt", "flavour", type=_NameChoice(trt_options.FLAVOUR_CHOICES), default="auto", show_default=True,
              help="TensorRT flavour: full TensorRT where installed, else TensorRT-RTX.")
@click.option("--plugin-library", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Plugin library to load  [default: the one stn-deploy plugins build made]")
@click.option("--doctor/--no-doctor", default=True, show_default=True,
              help="Lint the ONNX first and stop on its errors.")
def build_command(model, output, precision, shapes, min_shapes, opt_shapes, max_shapes, timing_cache, opt_level,
                  workspace_mib, compute_capabilities, flavour, plugin_library, doctor):
    """Build a TensorRT engine from MODEL.onnx (standard or plugin ops), with a sidecar JSON.

    The build runs in a child process: a TensorRT abort or Ctrl-C leaves no partial engine.
    """
    from stn_deploy import trt

    options = trt.BuildOptions(
        onnx=model, engine=output or model.with_suffix(".engine"), flavour=flavour, precision=precision,
        shapes=tuple(trt.parse_shape_spec(s) for s in shapes)
        + trt_options.shapes_from_ranges(min_shapes, opt_shapes, max_shapes),
        timing_cache=timing_cache, opt_level=opt_level,
        workspace_mib=workspace_mib, compute_capabilities=tuple(c for c in compute_capabilities if c != "default"),
        plugin_library=plugin_library, doctor=doctor)
    progress = _build_progress()
    try:
        result = trt.build(options, progress=progress)
    finally:
        progress.stop()
    side = result.sidecar
    if side["timing_cache"] and not side["timing_cache"]["used"]:
        click.echo("note: --timing-cache is a no-op in TensorRT-RTX (it keeps no timing cache)")
    click.echo(f"built {result.engine} ({side['engine']['bytes']} bytes) with "
               f"{'TensorRT-RTX' if side['backend']['name'] == 'rtx' else 'TensorRT'} {side['backend']['version']} "
               f"in {result.seconds:.2f} s; sidecar {result.sidecar_path}")
    targets = side["gpu_targets"]
    if targets["plugin"] is not None and not targets["plugin"]["ok"]:
        click.echo(f"warning: {side['warnings'][0]}", err=True)


@main.command("inspect")
@click.argument("engine", type=click.Path(path_type=Path))
@click.option("--trt", "flavour", type=_NameChoice(trt_options.FLAVOUR_CHOICES), default="auto", show_default=True,
              help="TensorRT flavour (auto: from the engine header).")
@click.option("--layers", "all_layers", is_flag=True, help="Also list every layer (the summary counts them by type).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report (every layer included) as JSON.")
def inspect_command(engine, flavour, all_layers, as_json):
    """Summarise ENGINE: inputs, outputs, profiles, plugin layers, layer counts by type, precision,
    sidecar; every layer with --layers.

    Without a GPU, what only a deserialised engine can tell is marked as needing one.
    """
    import json

    from stn_deploy import trt

    report = trt.inspect(engine, flavour=flavour)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in trt.format_report(report, layers=all_layers):
            click.echo(line)


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
    from stn_deploy import validate as _validate
    from stn_deploy.user_model import parse_shapes

    options = _validate.ValidateOptions(
        candidate=candidate, reference=reference, atol=_validate.parse_tolerance(atol, "--atol"),
        rtol=_validate.parse_tolerance(rtol, "--rtol"), inputs=inputs, dataset=dataset, report=report,
        adversarial=adversarial, max_images=max_images, batch_size=batch_size, max_accuracy_drop=max_accuracy_drop,
        shapes=parse_shapes(shapes), batch=batch)
    result = _validate.validate(options, progress=_step_lines("validate", err=as_json))
    if as_json:
        import json

        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.lines():
            click.echo(line)
        if report is not None:
            click.echo(f"report: {report}")
    _validate.check(result)



def timing_options(backends: tuple[str, ...], batches: tuple[int, ...], warmup: int, iters: int):
    """The options that say what ``bench`` times, shared by ``bench`` and ``demo`` (which
    benchmarks too) with each command's own defaults."""
    decorators = [
        click.option("--backend", "--backends", "backends", default=",".join(backends), show_default=True,
                     help=f"Comma-separated backends from: {', '.join(_bench.BACKENDS)} (as run --backend)."),
        click.option("--batch", "batches", default=",".join(map(str, batches)), show_default=True,
                     help="Comma-separated batch sizes."),
        click.option("--warmup", type=click.IntRange(min=0), default=warmup, show_default=True,
                     help="Untimed iterations first."),
        click.option("--iters", type=click.IntRange(min=1), default=iters, show_default=True,
                     help="Timed iterations per backend and batch."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for torch, ONNX Runtime and the plugin alike  [default: each library's own]"),
    ]

    def apply(fn):
        for decorate in reversed(decorators):
            fn = decorate(fn)
        return fn

    return apply


@main.command("bench")
@click.argument("model", type=click.Path(path_type=Path))
@timing_options(_bench.DEFAULT_BACKENDS, _bench.DEFAULT_BATCHES, _bench.DEFAULT_WARMUP, _bench.DEFAULT_ITERS)
@click.option("-o", "--output-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help=f"Folder of the JSON and PNG  [default: a new folder {_bench.DEFAULT_OUTPUT_DIR}/bench-<model>-<UTC time>]")
@click.option("--name", default=None, help="File stem of the outputs  [default: bench-<model stem>]")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=None,
              help="ONNX for the ort backend when MODEL is a checkpoint or a .pt2  [default: export a standard ONNX to a temp folder]")
@click.option("--engine", type=click.Path(path_type=Path), default=None, help="Engine for the trt backend when MODEL is not one.")
@click.option("--device", type=_NameChoice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
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
    result = _bench.bench(options, progress=_step_lines("bench", err=True))
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


# === section: triton, serve (stn_deploy/triton/) ===


@main.command("triton")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Repository folder to create (must not exist).")
@click.option("--name", default=None, help="Model name (one MODEL only)  [default: the file's stem]")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=None,
              help="Largest batch per execution  [default: an engine's profile max batch; 64 for ONNX]")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True, help="Instances per model.")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=100, show_default=True,
              help="How long the dynamic batcher may hold a request to fill a batch, µs.")
@click.option("--dynamic-batching/--no-dynamic-batching", default=True, show_default=True,
              help="Let the server merge concurrent requests into batches.")
@click.option("--serve-as", default="tensorrt,onnx,python", show_default=True,
              help="Entries to write where they apply: tensorrt (engines), onnx (onnxruntime backend), "
                   "python (python backend running ONNX Runtime).")
@click.option("--intra-op-threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="ONNX Runtime threads per python-backend instance (0 = ONNX Runtime's default).")
@click.option("--plugin-library", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Plugin library to copy for engines  [default: the engine sidecar's, else plugins path]")
@click.option("--kserve", is_flag=True, help="Also write a KServe InferenceService (inferenceservice.yaml).")
@click.option("--storage-uri", default="pvc://stn-models/triton", show_default=True,
              help="Where the repository will be uploaded, for --kserve.")
def triton_command(models, output, name, max_batch_size, instances, max_queue_delay_us, dynamic_batching,
                   serve_as, intra_op_threads, plugin_library, kserve, storage_uri):
    """Write a Triton model repository for checkpoints, standard ONNX models and engines.

    An engine becomes NAME (tensorrt_plan, plugin library copied in, server flags in
    tritonserver-flags.txt); a standard ONNX or a checkpoint NAME-onnx (onnxruntime backend)
    and NAME-python (python backend running ONNX Runtime, what the bundled server serves).
    Every config.pbtxt is checked against Triton's model-config schema; the repository is
    written to a temporary folder and renamed into place.
    """
    from stn_deploy.triton.repository import RepositoryOptions, write_repository

    options = RepositoryOptions(
        models=tuple(models), output=output, name=name, max_batch_size=max_batch_size, instances=instances,
        max_queue_delay_us=max_queue_delay_us, dynamic_batching=dynamic_batching,
        serve_as=tuple(f.strip() for f in serve_as.split(",") if f.strip()), intra_op_threads=intra_op_threads,
        plugin_library=plugin_library, kserve=kserve, storage_uri=storage_uri)
    result = write_repository(options)
    for m in result.models:
        click.echo(f"{m.name}: {m.serve_as}, max batch {m.max_batch_size}, preferred {m.preferred_batch_sizes}")
        for note in m.notes:
            click.echo(f"  note: {note}")
    click.echo(f"wrote {result.path}" + (f" and {result.kserve}" if result.kserve else ""))


@main.command("serve")
@click.argument("repository", type=click.Path(path_type=Path, file_okay=False))
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Interface every endpoint binds (0.0.0.0 exposes the server to the network).")
@click.option("--server", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="tritonserver binary  [default: $STN_DEPLOY_TRITONSERVER, PATH, then the bundled one]")
@click.option("--model", "models", multiple=True, help="Load only this model; repeatable  [default: all]")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Server log  [default: a temporary file]")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to wait for the server to become ready.")
@click.option("--python-env", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Environment for python-backend models (numpy<2, onnxruntime)  "
                   "[default: $STN_DEPLOY_TRITON_PYTHON_ENV, else third_party/triton/python-env]")
def serve_command(repository, http_port, grpc_port, metrics_port, address, server, models, log_file, ready_timeout,
                  python_env):
    """Serve REPOSITORY with a real Triton Inference Server until Ctrl-C / SIGTERM.

    Loads every model the server has a backend for and names the ones it skips (the bundled
    server has only the python backend). Python-backend models run with the numpy<2 +
    onnxruntime environment set-up made.
    Stopping stops the server and its python-backend stubs.
    """
    from stn_deploy.triton.server import ServerOptions, serve

    def ready(s):
        for model, why in s.selection.skipped.items():
            click.echo(f"skipped  {model}: {why}")
        click.echo(f"tritonserver ready (pid {s.pid}, log {s.log_path})"
                   + (f"; serving {', '.join(s.selection.load)}" if s.selection.load else ""))
        click.echo(f"  HTTP     http://{s.http_url}")
        click.echo(f"  gRPC     {s.grpc_url}")
        click.echo(f"  metrics  {s.metrics_url}")
        click.echo("Ctrl-C stops it.")

    serve(ServerOptions(repository=repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                        address=address, server=server, models=tuple(models), log_file=log_file,
                        ready_timeout_s=ready_timeout, python_env=python_env), on_ready=ready)
    click.echo("stopped")


if __name__ == "__main__":
    main()
