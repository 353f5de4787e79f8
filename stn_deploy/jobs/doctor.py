"""``stn-deploy doctor``: lint an ONNX graph for the known spatial-transformer deployment traps.

One rule per trap (DESIGN.md, "Known traps"); each finding names the rule, the node, a
severity (``error`` fails the command with exit 1, ``warning``, ``info``) and a fix hint.
What is an error depends on the target runtime (``--target``).

| rule | trap |
|---|---|
| ``trt-gridsample-mode`` | opset-20 GridSample ``linear``/``cubic`` become nearest in TensorRT 10's and 11's parser (NVIDIA/TensorRT#4646, open) |
| ``trt-affinegrid`` | no AffineGrid importer in TensorRT 10, 11 or TensorRT-RTX 1.7 |
| ``trt-gridsample-5d`` | native GridSample is 4-D only before TensorRT 11.2 (#3890); TensorRT-RTX 1.7 parses and builds it (GPU results unchecked) |
| ``plugin-gpu-targets`` | the plugin library has no SASS/PTX for some GPU the engine will target |
| ``bicubic-outside-plugin`` | bicubic sampling by anything but our plugin (mmdeploy falls back to bilinear; TensorRT/ORT border reads differ) |
| ``decomposed-affine-grid`` | the dynamo exporter's Mul+ReduceSum affine grid: fixed H/W, 200x slower in ONNX Runtime |
| ``fp16-large-coordinates`` | fp16 grid coordinates on inputs wider or taller than 2048 |
| ``plugin-version`` | plugin_version of a node unknown to the built plugin library |
| ``plugin-ops-on-ort`` | plugin ops in ONNX Runtime run as Python ops (validation speed, not serving) |
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from stn_deploy import schema
from stn_deploy.errors import UserError
from stn_deploy.graph import (
    ONNX_MODE_NAMES,
    PLUGIN_VERSION_ATTR,
    attr_value,
    load_onnx,
    opset_version,
    plugin_node_problems,
    plugin_nodes,
    tensor_table,
)

if TYPE_CHECKING:
    import onnx

TARGETS = ("trt10", "trt11", "rtx", "ort")
SEVERITIES = ("error", "warning", "info")
#: Op types (lower case) of mmdeploy's grid-sample TensorRT plugin.
MMDEPLOY_SAMPLERS = ("grid_sampler", "gridsampler", "mmcvgridsample")
#: Above this size, fp16 coordinates (10-bit mantissa) cannot address every pixel.
FP16_MAX_EXACT_SIZE = 2048

RULES: dict[str, str] = {
    "trt-gridsample-mode": "GridSample mode names through TensorRT's ONNX parser (NVIDIA/TensorRT#4646)",
    "trt-affinegrid": "AffineGrid has no TensorRT importer",
    "trt-gridsample-5d": "5-D GridSample needs TensorRT 11.2+",
    "bicubic-outside-plugin": "bicubic sampling outside stn-deploy's plugin",
    "decomposed-affine-grid": "decomposed affine grid (Mul+ReduceSum) with fixed H/W",
    "fp16-large-coordinates": "fp16 grid coordinates on images larger than 2048",
    "plugin-version": "plugin_version unknown to the built plugin library",
    "plugin-ops-on-ort": "plugin ops run as Python ops in ONNX Runtime",
    "plugin-attribute": "a plugin attribute its creator rejects (range, missing, combination)",
    "plugin-input-rank": "a plugin input of a rank the plugin rejects",
    "plugin-library": "the plugin library cannot be loaded",
    "plugin-gpu-targets": "the plugin library cannot run on some GPU the engine targets",
}
#: First TensorRT 11 release whose ONNX parser imports 5-D GridSample.
TRT11_NATIVE_5D = (11, 2)


@dataclass(frozen=True)
class Finding:
    """One problem found by a rule."""

    rule: str
    node: str
    severity: str
    message: str
    hint: str

    def line(self) -> str:
        return f"{self.severity:7s} {self.rule:24s} {self.node}: {self.message} -> {self.hint}"


@dataclass
class DoctorReport:
    """All findings for one model and target."""

    model: str
    target: str
    findings: list[Finding] = field(default_factory=list)
    plugin_versions: dict[str, list[str]] = field(default_factory=dict)
    plugin_versions_source: str = ""

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["counts"] = {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def lines(self) -> list[str]:
        out = [f.line() for f in self.findings]
        c = self.to_dict()["counts"]
        out.append(f"{self.model} for {self.target}: {c['error']} error(s), {c['warning']} warning(s), {c['info']} info")
        return out


# --------------------------------------------------------------------------- helpers


def _installed_tensorrt() -> tuple[int, int]:
    """(major, minor) of the installed ``tensorrt`` distribution, (0, 0) when there is none
    (read from its metadata: importing TensorRT is slow and needs its libraries)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        parts = version("tensorrt").split(".")
        return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except (PackageNotFoundError, ValueError):
        return 0, 0


def default_target(flavour: str = "auto") -> str:
    """The target a build with ``--trt flavour`` would meet: the installed full TensorRT's major
    (``trt10`` / ``trt11``), else ``rtx`` where only TensorRT-RTX is installed, else ``trt11``
    (what ``pip install tensorrt`` installs today)."""
    from stn_deploy.trt.flavour import available_flavours

    name = flavour if flavour != "auto" else (available_flavours() or ["tensorrt"])[0]
    if name == "rtx":
        return "rtx"
    major = _installed_tensorrt()[0]
    return "trt10" if major == 10 else "trt11"


def _name(node) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _is_onnx_domain(node) -> bool:
    return node.domain in ("", "ai.onnx")


def decomposed_grid_nodes(model: onnx.ModelProto) -> list:
    """GridSample nodes whose grid is the dynamo exporter's decomposed affine grid.

    The pattern: grid <- (Reshape/Transpose/...)* <- ReduceSum <- Mul(constant base grid, theta).
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    consts = {i.name for i in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    passthrough = {"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Cast", "Identity", "Div", "Slice"}
    found = []
    for node in model.graph.node:
        if node.op_type != "GridSample" or len(node.input) < 2:
            continue
        t, hops = node.input[1], 0
        while t in producers and hops < 6:
            p = producers[t]
            if p.op_type == "ReduceSum":
                mul = producers.get(p.input[0])
                if mul is not None and mul.op_type == "Mul" and any(i in consts for i in mul.input):
                    found.append(node)
                break
            if p.op_type not in passthrough:
                break
            t, hops = p.input[0], hops + 1
    return found


def library_plugin_versions() -> tuple[dict[str, list[str]], str]:
    """Versions of each plugin op that the built library's creators implement, and the source.

    Without a built library it falls back on ``schema.PLUGIN_VERSION`` and says so in the source.
    """
    from stn_deploy import kernels

    try:
        found = kernels.plugin_versions()
    except UserError as exc:  # no library built, or not ours: fall back, and say so
        found = {}
        if kernels.library_path().exists():
            return ({op: [schema.PLUGIN_VERSION] for op in schema.OP_FIELD_SPECS},
                    f"schema.PLUGIN_VERSION (the plugin library could not be read: {exc})")
    if found:
        return found, f"plugin library {kernels.library_path()}"
    fallback = {op: [schema.PLUGIN_VERSION] for op in (schema.GRID_SAMPLE_OP, schema.AFFINE_GRID_SAMPLE_OP)}
    return fallback, "schema.PLUGIN_VERSION (plugin library not built or not queried)"


# --------------------------------------------------------------------------- rules


def _rules(model, target: str, report: DoctorReport) -> None:
    add = report.findings.append
    trt = target in ("trt10", "trt11", "rtx")
    opset = opset_version(model)
    dims, types = tensor_table(model)
    import onnx

    for node in model.graph.node:
        name = _name(node)
        if node.op_type == "GridSample" and _is_onnx_domain(node):
            mode = attr_value(node, "mode", "linear" if opset >= 20 else "bilinear")
            interp = ONNX_MODE_NAMES.get(mode)
            if target in ("trt10", "trt11") and opset >= 20 and mode in ("linear", "cubic"):
                add(Finding("trt-gridsample-mode", name, "error",
                            f"opset-{opset} GridSample mode {mode!r} becomes 'nearest' in TensorRT {target[3:]}'s "
                            "parser (NVIDIA/TensorRT#4646, still open)",
                            "stn-deploy rewrite (plugin op), or rewrite --to native / export --ops native "
                            "(opset 17, mode names bilinear/bicubic)"))
            elif target == "rtx" and opset >= 20 and mode in ("linear", "cubic"):
                add(Finding("trt-gridsample-mode", name, "info",
                            f"GridSample mode {mode!r}: TensorRT-RTX 1.7 maps it correctly, TensorRT 10 may not",
                            "stn-deploy rewrite for one engine path on every TensorRT"))
            x_dims = dims.get(node.input[0])
            if trt and x_dims is not None and len(x_dims) == 5:
                installed = _installed_tensorrt()  # reads package metadata: once per node, not per branch
                if target == "rtx":
                    # Checked by a real parse + CPU build with TensorRT-RTX 1.7.1: a GRID_SAMPLE
                    # layer (LINEAR) is built; its results on a GPU are not checked yet.
                    add(Finding("trt-gridsample-5d", name, "warning",
                                "5-D GridSample: TensorRT-RTX 1.7 parses and builds it (native flavour), "
                                "but its GPU results are unverified; TensorRT 10 rejects it",
                                "validate the engine on a GPU, or stn-deploy rewrite (the plugin samples 5-D)"))
                elif target == "trt11" and installed >= TRT11_NATIVE_5D:
                    add(Finding("trt-gridsample-5d", name, "info",
                                "5-D GridSample: native in TensorRT 11.2+ (installed: "
                                f"{'.'.join(map(str, installed))})",
                                "validate the engine on a GPU; stn-deploy rewrite gives the plugin's 5-D sampler"))
                else:
                    sev = "warning" if target == "trt11" and installed == (0, 0) else "error"
                    add(Finding("trt-gridsample-5d", name, sev,
                                "5-D (volumetric) GridSample: TensorRT's native layer is 4-D only before 11.2"
                                + (f" (installed: {'.'.join(map(str, installed))})" if installed != (0, 0) else ""),
                                "stn-deploy rewrite (the plugin samples 5-D); the native flavour needs TensorRT 11.2+"))
            if interp == schema.InterpolationMode.BICUBIC:
                add(Finding("bicubic-outside-plugin", name, "warning" if trt else "info",
                            "bicubic GridSample outside our plugin: runtimes differ from PyTorch at the 2-pixel border",
                            "stn-deploy rewrite, then validate against PyTorch"))
        elif node.op_type == "AffineGrid" and _is_onnx_domain(node) and trt:
            add(Finding("trt-affinegrid", name, "error",
                        "AffineGrid: TensorRT 10, 11 and TensorRT-RTX 1.7 have no importer (UNSUPPORTED_NODE)",
                        "stn-deploy rewrite (fuses AffineGrid+GridSample into STNAffineGridSample), or "
                        "rewrite --to native (MatMul on a base grid, no plugin)"))
        elif node.op_type.lower() in MMDEPLOY_SAMPLERS and node.domain != schema.PLUGIN_DOMAIN:
            # mmdeploy's TensorRT plugin: bicubic silently falls back to bilinear.
            if int(attr_value(node, "interpolation_mode", 0)) == int(schema.InterpolationMode.BICUBIC):
                add(Finding("bicubic-outside-plugin", name, "error",
                            f"{node.op_type} (mmdeploy plugin) silently samples bicubic as bilinear",
                            "replace with stn_deploy::STNGridSample"))
        elif node.domain == schema.PLUGIN_DOMAIN:
            version = attr_value(node, PLUGIN_VERSION_ATTR, None)
            known = report.plugin_versions.get(node.op_type, [])
            if version is not None and version not in known:
                add(Finding("plugin-version", name, "error",
                            f"{node.op_type} plugin_version {version!r} unknown to the plugin library "
                            f"(it has {', '.join(known) or 'no such op'}; {report.plugin_versions_source})",
                            "rebuild the plugin library, or re-export/rewrite with this stn-deploy"))
            elif version is None:
                add(Finding("plugin-version", name, "info",
                            "no plugin_version attribute: TensorRT's parser assumes '1'",
                            "re-export or rewrite to stamp the version"))
            if target == "ort":
                add(Finding("plugin-ops-on-ort", name, "info",
                            "plugin op runs in ONNX Runtime as a Python op (about a millisecond per call)",
                            "serve the standard export (stn-deploy export --ops standard) on the CPU"))

        # fp16 coordinates: any sampler with a float16 grid/input.
        if node.op_type in ("GridSample", schema.GRID_SAMPLE_OP, schema.AFFINE_GRID_SAMPLE_OP) and len(node.input) >= 2:
            if onnx.TensorProto.FLOAT16 in (types.get(node.input[0]), types.get(node.input[1])):
                x_dims = dims.get(node.input[0]) or []
                spatial = x_dims[2:]
                if any(d is None for d in spatial) or not spatial:
                    add(Finding("fp16-large-coordinates", name, "info",
                                "fp16 sampler with dynamic H/W: inputs larger than 2048 lose sub-pixel precision",
                                "keep the grid/theta in float32 (Cast before the sampler) for large images"))
                elif max(spatial) > FP16_MAX_EXACT_SIZE:
                    add(Finding("fp16-large-coordinates", name, "error" if trt else "warning",
                                f"fp16 coordinates on a {'x'.join(map(str, spatial))} input: "
                                f"unnormalised coordinates above {FP16_MAX_EXACT_SIZE} are not exact in fp16",
                                "keep the grid/theta in float32 (Cast before the sampler)"))

    _plugin_rules(model, dims, report)

    for node in decomposed_grid_nodes(model):
        out = dims.get(node.input[1]) or []
        add(Finding("decomposed-affine-grid", _name(node), "warning",
                    f"grid is a decomposed affine grid (Mul+ReduceSum) with fixed size {out[1:-1]}: "
                    "ONNX Runtime runs it ~200x slower than AffineGrid and the output H/W cannot change",
                    "re-export with torch.onnx.export(..., dynamo=False, opset_version=20) or stn-deploy export; "
                    "for TensorRT, stn-deploy rewrite fuses it into STNAffineGridSample"))


#: Rank our plugins take for their second input: grid as X, theta always 3 ([N,2,3], [N,3,3], [N,3,4]).
_COORD_RANK = {schema.AFFINE_GRID_SAMPLE_OP: 3}


def _plugin_rules(model, dims: dict, report: DoctorReport) -> None:
    """What the plugin creators would reject: attributes (``schema``), input ranks, the library."""
    add = report.findings.append
    for node, problem in plugin_node_problems(model):
        add(Finding("plugin-attribute", node, "error", problem,
                    "fix the attribute (stn-deploy export / rewrite write valid ones)"))
    nodes = plugin_nodes(model)
    for i, node in enumerate(nodes):
        name = node.name or f"{node.op_type}#{i}"
        x = dims.get(node.input[0]) if node.input else None
        coords = dims.get(node.input[1]) if len(node.input) > 1 else None
        if x is not None and len(x) not in (4, 5):
            add(Finding("plugin-input-rank", name, "error", f"input X has rank {len(x)}; the plugin takes 4 or 5",
                        "feed [N,C,H,W] or [N,C,D,H,W]"))
        want = _COORD_RANK.get(node.op_type, len(x) if x is not None else None)
        if coords is not None and want is not None and len(coords) != want:
            what = "theta" if node.op_type == schema.AFFINE_GRID_SAMPLE_OP else "grid"
            add(Finding("plugin-input-rank", name, "error", f"input {what} has rank {len(coords)}; the plugin takes {want}",
                        "theta is [N,2,3] / [N,3,3] / [N,3,4]; a grid has X's rank"))
    if nodes:
        _gpu_target_rule(report)
    if nodes and report.plugin_versions_source.startswith("schema.PLUGIN_VERSION (the plugin library could"):
        add(Finding("plugin-library", "-", "error" if report.target != "ort" else "warning",
                    report.plugin_versions_source.split("(", 1)[1].rstrip(")"),
                    "stn-deploy plugins build, or point STN_DEPLOY_PLUGIN_LIBRARY at a library it built"))


def _gpu_target_rule(report: DoctorReport) -> None:
    """A graph with plugin ops, whose library has no code for the GPUs an engine for this target
    runs on: TensorRT-RTX's default targets, or this machine's GPU for full TensorRT (skipped
    without one)."""
    if report.target == "ort":
        return
    from stn_deploy import kernels
    from stn_deploy.trt import targets

    ccs, source = targets.engine_targets("rtx" if report.target == "rtx" else "tensorrt", ())
    if not ccs:
        return
    checked = targets.check_library(ccs, source, str(kernels.library_path()))
    if checked is not None and not checked.ok:
        report.findings.append(Finding(
            "plugin-gpu-targets", "-", "warning",
            f"the plugin library has no code for {', '.join(checked.plugin_missing)} "
            f"(built for {','.join(checked.library_architectures)}), which {source} engines target",
            "stn-deploy plugins build (every architecture)"
            + (f", or build for the GPUs it has: --compute-capability {' '.join(sorted(checked.plugin_runs))}"
               if report.target == "rtx" and checked.plugin_runs else "")))


def doctor(path: Path | str, target: str | None = None) -> DoctorReport:
    """Lint an ONNX model for spatial-transformer deployment traps.

    Args:
        path: the ``.onnx`` file.
        target: ``trt10``, ``trt11``, ``rtx`` (TensorRT-RTX 1.7) or ``ort``; default
            :func:`default_target` (the installed TensorRT's major, as ``build`` would meet it).

    Returns:
        The report; ``report.ok`` is False when any finding is an error.

    Raises:
        UserError: an unreadable or non-ONNX file, or an unknown target.
    """
    if target is None:
        target = default_target()
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    return lint(load_onnx(path), target, str(path))


def lint(model: onnx.ModelProto, target: str, label: str) -> DoctorReport:
    """``doctor`` on a loaded model (``rewrite`` checks what it would write with it)."""
    versions, source = library_plugin_versions()
    report = DoctorReport(model=label, target=target, plugin_versions=versions, plugin_versions_source=source)
    _rules(model, target, report)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    report.findings.sort(key=lambda f: (order[f.severity], f.rule, f.node))
    return report
