"""ONNX graphs: ``export``, ``rewrite``, ``doctor``, ``quantize``."""

from __future__ import annotations

from pathlib import Path

import click

# Names and option defaults only: none of these modules imports torch, onnx or TensorRT
# at import time.
from stn_deploy.cli.group import NameChoice, main
from stn_deploy.data import DATASETS
from stn_deploy.errors import ValidationFailed
from stn_deploy.jobs.doctor import RULES as DOCTOR_RULES
from stn_deploy.jobs.doctor import TARGETS as DOCTOR_TARGETS
from stn_deploy.jobs.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, OPS_CHOICES


@main.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="File: the .onnx to write.")
@click.option("--ops", type=NameChoice(OPS_CHOICES), default="standard", show_default=True,
              help="standard: AffineGrid + GridSample (any runtime); plugin: stn_deploy::STNGridSample / "
                   "STNAffineGridSample (our TensorRT plugin); native: ops stock TensorRT imports, no plugin.")
@click.option("--opset", type=click.IntRange(MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET,
              show_default=True, help="ONNX opset.")
@click.option("--dynamic-batch/--static-batch", default=True, show_default=True, help="Dynamic batch dimension.")
@click.option("--dynamic-hw", type=NameChoice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Dynamic input H/W; auto = where the model allows.")
def export_command(checkpoint, output, ops, opset, dynamic_batch, dynamic_hw):
    """Export a checkpoint, or your own model saved as a torch.export program (.pt2), to ONNX
    with standard, plugin or native grid-sample ops. A program keeps the dynamic dims of its
    dynamic_shapes."""
    from stn_deploy.jobs.export import ExportOptions, export

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
@click.option("--target", type=NameChoice(DOCTOR_TARGETS), default=None,
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
@click.option("--target", type=NameChoice(DOCTOR_TARGETS), default=None,
              help="Runtime to lint for: TensorRT 10, TensorRT 11, TensorRT-RTX 1.7, ONNX Runtime  "
                   "[default: what build would use: the installed TensorRT's major, else rtx, else trt11]")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor_command(model, target, as_json):
    """Lint an ONNX model for known STN deployment traps (exit 1 on an error).

    Each finding has a rule id, the node, a severity (error, warning, info) and a fix hint.
    """
    from stn_deploy.jobs.doctor import doctor

    report = doctor(model, target)
    click.echo(report.to_json() if as_json else "\n".join(report.lines()))
    if not report.ok:
        raise ValidationFailed(f"doctor found {len(report.errors)} error(s) for {report.target}")


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
