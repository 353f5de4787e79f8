"""Engines and the plugin library: ``plugins``, ``build``, ``inspect``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

# Names and option defaults only: none of these modules imports torch, onnx or TensorRT
# at import time.
from stn_deploy.cli.group import NameChoice, main
from stn_deploy.io import require_file
from stn_deploy.schema import PRECISION_NAMES
from stn_deploy.trt import options as trt_options


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
@click.option("--precision", type=NameChoice(PRECISION_NAMES), default="fp32", show_default=True,
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
              type=NameChoice(trt_options.COMPUTE_CAPABILITY_CHOICES), default=("default",), show_default=True,
              help="TensorRT-RTX target GPUs (repeatable); 'default' = sm80/86/89/120+, no sm90.")
@click.option("--trt", "flavour", type=NameChoice(trt_options.FLAVOUR_CHOICES), default="auto", show_default=True,
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
@click.option("--trt", "flavour", type=NameChoice(trt_options.FLAVOUR_CHOICES), default="auto", show_default=True,
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
