"""``stn-deploy rewrite``: a third-party ONNX graph to one that TensorRT builds.

Two forms (``RewriteOptions.to``):

- ``plugin``: every sampler becomes our plugin op (``graph.rewrite_model``: an ``AffineGrid``
  fused into ``STNAffineGridSample`` where the semantics allow, pass-through nodes between the two
  included); an ``AffineGrid`` that cannot be fused is lowered to standard ops TensorRT imports
  (``native.lower_affine_grids``), so none is left for the parser to reject;
- ``native``: no plugin at all (``native.to_native``), opset 17 wherever the graph allows it.

Either way the result is linted by ``doctor`` for the target the user names (default: what
``build`` would use) before anything is written: a rewrite never exits 0 with a graph that
``doctor`` (and so ``build``) rejects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stn_deploy.errors import UserError, ValidationFailed

if TYPE_CHECKING:
    import onnx

    from stn_deploy.graph import RewriteReport
    from stn_deploy.jobs.doctor import DoctorReport
    from stn_deploy.native import NativeReport

#: What ``rewrite`` writes: our plugin ops, or ops stock TensorRT imports.
REWRITE_TARGETS = ("plugin", "native")

#: What to do instead when the rewritten graph still fails a doctor rule, by (form, rule).
_INSTEAD = {
    ("native", "trt-gridsample-5d"): "the plugin form (--to plugin) samples 5-D on every TensorRT; "
                                     "a native 5-D GridSample needs TensorRT 11.2+ (--target trt11) or TensorRT-RTX",
    ("native", "trt-gridsample-mode"): "the plugin form (--to plugin) has no mode names to misread",
    ("plugin", "trt-gridsample-mode"): "the GridSample named above was left as it was (see its reason); "
                                       "--to native renames its modes for TensorRT 10",
    ("plugin", "plugin-library"): "stn-deploy plugins build",
    ("plugin", "plugin-version"): "stn-deploy plugins build (a library of this stn-deploy's version)",
}


@dataclass(frozen=True)
class RewriteOptions:
    """Options of ``rewrite``.

    Attributes:
        input: the ONNX model to rewrite.
        output: where to write the result (atomically; never over ``input``).
        fuse: fuse ``AffineGrid`` -> ``GridSample`` pairs into ``STNAffineGridSample`` (plugin
            form); without, each AffineGrid is lowered to standard ops. Default True.
        to: ``plugin`` (our plugin ops, default) or ``native`` (no plugin, opset 17 where the
            graph allows it).
        target: the runtime the result must pass ``doctor`` for: ``trt10``, ``trt11``, ``rtx``
            or ``ort``; default None = what ``build`` would use (``doctor.default_target``).
    """

    input: Path
    output: Path
    fuse: bool = True
    to: str = "plugin"
    target: str | None = None


def rewrite(options: RewriteOptions) -> RewriteReport | NativeReport:
    """Rewrite a third-party ONNX graph into one TensorRT builds, and write it.

    Args:
        options: paths, form and target.

    Returns:
        A report listing each replaced node and each node left, with reasons, and the doctor's
        verdict for the target.

    Raises:
        UserError: the input is not a loadable ONNX model, an option is unknown, or nothing could
            be written.
        ValidationFailed: the rewritten graph would still fail ``doctor`` for the target (nothing
            is written).
    """
    import onnx

    from stn_deploy.graph import RewriteReport, load_onnx
    from stn_deploy.io import atomic_path, check_outputs_distinct
    from stn_deploy.jobs import doctor as doctor_module
    from stn_deploy.native import NativeReport, to_native

    if options.to not in REWRITE_TARGETS:
        raise UserError(f"unknown rewrite form {options.to!r}; choose from {', '.join(REWRITE_TARGETS)}")
    target = options.target or doctor_module.default_target()
    if target not in doctor_module.TARGETS:
        raise UserError(f"unknown target {target!r}; choose from {', '.join(doctor_module.TARGETS)}")
    check_outputs_distinct([options.output], [options.input])
    model = load_onnx(options.input)
    report: RewriteReport | NativeReport
    if options.to == "native":
        report = NativeReport(input=str(options.input), output=None)
        new = to_native(model, report)
    else:
        report = RewriteReport(input=str(options.input), output=None)
        new = _plugin(model, report, str(options.input), fuse=options.fuse)
    verdict = doctor_module.lint(new, target, str(options.output))
    report.target = target
    report.doctor = [f.line() for f in verdict.findings if f.severity != "info"]
    if not verdict.ok:
        raise ValidationFailed(_refusal(options, report, verdict))
    with atomic_path(options.output) as tmp:
        onnx.save(new, str(tmp))
    report.output = str(options.output)
    return report


def _plugin(model: onnx.ModelProto, report: RewriteReport, label: str, *, fuse: bool) -> onnx.ModelProto:
    from stn_deploy.graph import RewriteEntry, check_model, require_valid_plugin_nodes, rewrite_model
    from stn_deploy.native import lower_affine_grids

    new = rewrite_model(model, report, fuse=fuse)
    new, lowered = lower_affine_grids(new)
    if lowered:
        names = {c.node for c in lowered}
        reasons = {e.node: e.reason for e in report.left if e.op == "AffineGrid"}
        report.left = [e for e in report.left if not (e.op == "AffineGrid" and e.node in names)]
        for c in lowered:
            why = "not fused" if fuse else "--no-fuse"
            report.replaced.append(RewriteEntry(c.node, "AffineGrid", replaced_by=c.replaced_by,
                                                reason=f"{why}: lowered to standard ops TensorRT imports"
                                                + (f" ({reasons[c.node]})" if c.node in reasons and fuse else "")))
    require_valid_plugin_nodes(new, label)
    check_model(new)
    return new


def _refusal(options: RewriteOptions, report: RewriteReport | NativeReport, verdict: DoctorReport) -> str:
    """One line: the first doctor error of the rewritten graph, and what to do instead (never
    ``rewrite`` itself)."""
    first = verdict.errors[0]
    more = f" (and {len(verdict.errors) - 1} more)" if len(verdict.errors) > 1 else ""
    left = {e.node: e.note if hasattr(e, "note") else e.reason for e in report.left}
    why = f"; left because: {left[first.node]}" if first.node in left else ""
    instead = _INSTEAD.get((options.to, first.rule), "")
    return (f"the {options.to} rewrite of {options.input} would still fail doctor for {verdict.target}: "
            f"{first.rule} {first.node}: {first.message}{why}{more}; nothing written"
            + (f" (instead: {instead})" if instead else ""))
