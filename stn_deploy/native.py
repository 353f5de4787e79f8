"""The native flavour: graphs that stock TensorRT parses with no plugin.

TensorRT has no ``AffineGrid`` importer, and some TensorRT 10 parsers read the opset-20
GridSample mode names ``linear``/``cubic`` as nearest (NVIDIA/TensorRT#4646). A native graph
therefore has

- every ``AffineGrid`` replaced by ops TensorRT imports: a base grid built at run time from
  the size tensor (Slice/Squeeze/Range/Cast/Expand/Concat, so batch and H/W stay dynamic,
  nothing baked for one size), ``MatMul`` with theta transposed, and the existing ``Div``
  of a projective grid left as it is (the dynamo exporter's Mul/ReduceSum decomposition is
  never used: it is ~200x slower in ONNX Runtime and fixes H/W);
- our plugin ops (``STNGridSample``, ``STNAffineGridSample``) replaced by the same grid and
  a standard ``GridSample``; a projective grid (two AffineGrid + Div) as one MatMul with
  theta [N,3,3] and a Div; the dynamo exporter's Mul+ReduceSum grid (a third party's) as the
  same MatMul grid, its size staying what that export fixed;
- 4-D ``GridSample`` with the opset-16 mode names ``bilinear|nearest|bicubic`` and the
  default-domain opset lowered to ``NATIVE_OPSET`` (17), where those are the spec's names.
  A 5-D ``GridSample`` exists only from opset 20 (with ``linear|nearest``), so a graph with
  one keeps its opset; only TensorRT >= 11.2 imports it (``doctor`` says so per target).

The default-domain opset then goes down to 17 wherever every node has an opset-17 form: ONNX's
version converter for the ops it has adapters for (Resize, ScatterND, Reduce* with constant axes,
...), our own for those whose newer versions only added types or unused attributes, and the
GridSample mode names; the converted graph is checked in ONNX Runtime against the opset-20 one,
and what could not be converted is reported per node.

``to_native`` is the one transform behind ``export --ops native`` (standard export, then this)
and ``rewrite --to native`` (``stn_deploy.rewriter``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from stn_deploy import schema
from stn_deploy.errors import UserError

if TYPE_CHECKING:
    import onnx

#: Default-domain opset of native graphs: opset-16 GridSample names, and what TensorRT 8.6+
#: and TensorRT-RTX import.
NATIVE_OPSET = 17
#: Opset-20 GridSample mode names -> the opset-16 names (``nearest`` is the same in both).
OPSET16_MODE_NAMES = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest",
                      "bilinear": "bilinear", "bicubic": "bicubic"}
#: Opset-20 mode names for a 5-D GridSample (opset 16 has no 5-D GridSample at all).
OPSET20_MODE_NAMES = {"bilinear": "linear", "bicubic": "cubic", "linear": "linear", "cubic": "cubic",
                      "nearest": "nearest"}


@dataclass
class NativeChange:
    node: str
    op: str
    replaced_by: str
    note: str = ""


@dataclass
class NativeReport:
    """What ``to_native`` changed, what it left and the opset it ended with."""

    input: str
    output: str | None
    opset_in: int = 0
    opset_out: int = 0
    replaced: list[NativeChange] = field(default_factory=list)
    left: list[NativeChange] = field(default_factory=list)
    #: The doctor target the written graph was checked for, and its warnings/errors as lines.
    target: str | None = None
    doctor: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [(f"native: replaced {len(self.replaced)} node(s), left {len(self.left)}; "
                f"opset {self.opset_in} -> {self.opset_out}")]
        for c in self.replaced:
            out.append(f"  replaced {c.op} {c.node!r} -> {c.replaced_by}" + (f" ({c.note})" if c.note else ""))
        for c in self.left:
            out.append(f"  left     {c.op} {c.node!r}: {c.note}")
        from stn_deploy.graph import doctor_lines

        return out + doctor_lines(self.target, self.doctor)


class _Emitter:
    """Appends nodes and constants with names under one prefix (traceable to the source op)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []
        self._n = 0

    def name(self, what: str) -> str:
        self._n += 1
        return f"{self.prefix}/{what}_{self._n}"

    def const(self, values, dtype) -> str:
        import numpy as np
        from onnx import numpy_helper

        name = self.name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> str:
        from onnx import helper

        outs = outputs or [self.name(op_type) + "_out"]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0]


def _coords(e: _Emitter, size: str, axis: int, align_corners: bool) -> tuple[str, str]:
    """(coordinates [n] as float, n as int64 [1]) of one spatial axis of the size tensor.

    x_i = (2 i - (n - 1)) / d with d = n (align_corners=False) or max(n - 1, 1) (True): the
    points of ``F.affine_grid``, including n = 1 (0 in both conventions).
    """
    import numpy as np
    from onnx import TensorProto

    n1 = e.op("Slice", [size, e.const([axis], np.int64), e.const([axis + 1], np.int64), e.const([0], np.int64)])
    n = e.op("Squeeze", [n1, e.const([0], np.int64)])
    idx = e.op("Range", [e.const(0, np.int64), n, e.const(1, np.int64)])
    i = e.op("Cast", [idx], to=TensorProto.FLOAT)
    nf = e.op("Cast", [n], to=TensorProto.FLOAT)
    one = e.const(1.0, np.float32)
    nm1 = e.op("Sub", [nf, one])
    num = e.op("Sub", [e.op("Mul", [i, e.const(2.0, np.float32)]), nm1])
    den = e.op("Max", [nm1, one]) if align_corners else nf
    return e.op("Div", [num, den]), n1


def emit_affine_grid(e: _Emitter, theta: str, size: str, rank: int, align_corners: bool, output: str,
                     projective: bool = False) -> None:
    """Nodes computing ``F.affine_grid(theta, size)`` into ``output``.

    Args:
        e: where the nodes go.
        theta: [N, r, r+1] (affine) or [N, 3, 3] (projective, 2-D only).
        size: int64 [rank] tensor (N, C, [D,] H, W), read at run time.
        rank: 4 (images) or 5 (volumes).
        align_corners: as ``F.affine_grid``.
        output: name of the grid [N, [D,] H, W, r].
        projective: divide (x', y') by w' (a homography).
    """
    import numpy as np

    spatial = rank - 2
    axes = [_coords(e, size, 2 + k, align_corners) for k in range(spatial)]  # (D,) H, W
    shape = e.op("Concat", [n for _, n in axes] + [e.const([1], np.int64)], axis=0)  # [(D,) H, W, 1]
    columns = []
    for k, (c, _) in enumerate(reversed(axes)):  # x (fastest), y(, z)
        view = [1] * (spatial + 1)
        view[spatial - 1 - k] = -1
        columns.append(e.op("Expand", [e.op("Reshape", [c, e.const(view, np.int64)]), shape]))
    columns.append(e.op("Expand", [e.const(np.ones([1] * (spatial + 1)), np.float32), shape]))
    base = e.op("Concat", columns, axis=-1)  # [(D,) H, W, spatial + 1]
    flat = e.op("Reshape", [base, e.const([1, -1, spatial + 1], np.int64)])
    points = e.op("MatMul", [flat, e.op("Transpose", [theta], perm=[0, 2, 1])])  # [N, P, r or 3]
    if projective:
        xy = e.op("Slice", [points, e.const([0], np.int64), e.const([2], np.int64), e.const([2], np.int64)])
        w = e.op("Slice", [points, e.const([2], np.int64), e.const([3], np.int64), e.const([2], np.int64)])
        points = e.op("Div", [xy, w])
    out_shape = e.op("Concat", [e.const([-1], np.int64)] + [n for _, n in axes] + [e.const([spatial], np.int64)], axis=0)
    e.op("Reshape", [points, out_shape], [output])


def _affine_grid_rank(node, dims: dict) -> int:
    """4 or 5 (the grid's rank) from the grid's inferred shape, the size's length or theta's
    shape ([N, 2, 3] or [N, 3, 4]); 0 when none is known."""
    grid, size, theta = (dims.get(t) for t in (node.output[0], node.input[1], node.input[0]))
    if grid and len(grid) in (4, 5):
        return len(grid)
    if size and size[0] in (4, 5):
        return int(size[0])
    if theta and len(theta) == 3 and theta[1] in (2, 3):
        return int(theta[1]) + 2
    return 0


def _attr(node, name: str, default=None):
    from stn_deploy.graph import attr_value

    return attr_value(node, name, default)


#: Ops whose newer versions (18-21) only add element types (float8, int4, ...) or attributes
#: that keep the old meaning at their defaults: a float graph means the same at opset 17, so the
#: node is kept as it is (ONNX's version converter has no down-adapter for most of them).
_TYPE_ONLY_CHANGES = frozenset({
    "Cast", "CastLike", "Constant", "ConstantOfShape", "Equal", "Identity", "Reshape", "Shape", "Size",
    "Flatten", "Squeeze", "Unsqueeze", "Transpose",
})
#: Private domain that hides nodes from the version converter while it runs (restored after).
_HIDDEN_DOMAIN = "stn_deploy.hidden"


def _same_at(node, target: int) -> bool:
    """Whether ``node`` (newer than ``target``) means the same at ``target`` as it stands (our own
    adapter: keep it unchanged)."""
    attrs = {a.name for a in node.attribute}
    if node.op_type in _TYPE_ONLY_CHANGES:
        return True
    if node.op_type == "AveragePool":  # 19 added dilations
        return "dilations" not in attrs
    if node.op_type == "Split":  # 18 added num_outputs
        return "num_outputs" not in attrs
    if node.op_type == "Pad":  # 18 added the axes input, 19 the wrap mode
        return len(node.input) <= 3 and _attr(node, "mode", "constant") != "wrap"
    return False


def _changed_nodes(model: onnx.ModelProto, opset: int, target: int) -> tuple[list, list, list[tuple]]:
    """Default-domain nodes whose op changed between ``target`` and ``opset`` (GridSample aside):
    (kept as they are by ``_same_at``, left to ONNX's version converter, [(node, reason)] with no
    opset-``target`` form at all)."""
    import onnx.defs as defs

    own: list = []
    converter: list = []
    impossible: list[tuple] = []
    for n in model.graph.node:
        if (n.domain or "") not in ("", "ai.onnx") or n.op_type == "GridSample":
            continue
        try:
            now = defs.get_schema(n.op_type, opset).since_version
            then = defs.get_schema(n.op_type, target).since_version
        except defs.SchemaError:
            if n.op_type not in _EXPANSIONS:
                impossible.append((n, f"{n.op_type} does not exist at opset {target}, and no adapter expands it"))
            continue
        if now == then:
            continue
        (own if _same_at(n, target) else converter).append(n)
    return own, converter, impossible


def _expand_gelu(node, dtype) -> tuple[list, list]:
    """Gelu (opset 20) as the opset-13 ops it is defined by: x/2 (1 + erf(x/sqrt 2)), or with
    ``approximate='tanh'`` x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    import math

    e = _Emitter(f"{node.name or node.output[0]}/opset17")
    x = node.input[0]
    if _attr(node, "approximate", "none") == "tanh":
        cube = e.op("Mul", [e.op("Mul", [x, x]), x])
        inner = e.op("Mul", [e.op("Add", [x, e.op("Mul", [cube, e.const(0.044715, dtype)])]),
                             e.const(math.sqrt(2.0 / math.pi), dtype)])
        curve = e.op("Tanh", [inner])
    else:
        curve = e.op("Erf", [e.op("Mul", [x, e.const(1.0 / math.sqrt(2.0), dtype)])])
    half_x = e.op("Mul", [x, e.const(0.5, dtype)])
    e.op("Mul", [half_x, e.op("Add", [curve, e.const(1.0, dtype)])], [node.output[0]])
    return e.nodes, e.initializers


#: Our own adapters for ops that have no opset-17 version but an exact opset-17 expansion:
#: op type -> (node, numpy dtype of its input) -> (nodes, initializers).
_EXPANSIONS = {"Gelu": _expand_gelu}


def _converter_error(exc: BaseException) -> str:
    """The converter's reason without its C++ source location."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.split("failed: ", 1)[-1]


def _single_node_model(model: onnx.ModelProto, node, opset: int, table: tuple[dict, dict]) -> onnx.ModelProto:
    """``node`` alone, with its constant inputs (initializers, Constant nodes) and typed inputs
    (``table``: ``graph.tensor_table(model)``), to ask the version converter about this one node."""
    from onnx import helper

    dims, types = table
    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    nodes, inputs, initializers = [], [], []
    for name in node.input:
        if not name:
            continue
        if name in inits:
            initializers.append(inits[name])
        elif name in consts:
            nodes.append(consts[name])
        else:
            shape = dims.get(name)
            inputs.append(helper.make_tensor_value_info(name, types.get(name, 1), shape))
    outputs = [helper.make_tensor_value_info(o, types.get(o, 1), None) for o in node.output if o]
    graph = helper.make_graph([*nodes, node], "one", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _random_feeds(model: onnx.ModelProto) -> dict:
    """Seeded inputs for every graph input (symbolic dims as 2; the same name, the same size)."""
    import numpy as np
    from onnx import helper

    rng = np.random.default_rng(0)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 2 for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[vi.name] = np.zeros(shape, dtype)
    return feeds


def _same_in_ort(original: onnx.ModelProto, converted: onnx.ModelProto) -> str | None:
    """None when both graphs give the same outputs in ONNX Runtime on seeded inputs, else why not."""
    import numpy as np
    import onnxruntime as ort

    feeds = _random_feeds(original)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        want = ort.InferenceSession(original.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as exc:  # the original does not run on these inputs: nothing to compare
        return f"not checked in ONNX Runtime (the opset-20 graph does not run on seeded inputs: {_converter_error(exc)})"
    try:
        got = ort.InferenceSession(converted.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as exc:
        return f"the converted graph fails in ONNX Runtime: {_converter_error(exc)}"
    for out, a, b in zip(converted.graph.output, want, got):
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
            return f"output {out.name!r} differs from the opset-20 graph's in ONNX Runtime"
    return None


def _expanded(model: onnx.ModelProto, report: NativeReport) -> onnx.ModelProto:
    """A copy of ``model`` with every op of ``_EXPANSIONS`` replaced by its expansion."""
    import onnx
    from onnx import helper

    from stn_deploy.graph import tensor_table

    work = onnx.ModelProto.FromString(model.SerializeToString())
    if not any(n.op_type in _EXPANSIONS for n in work.graph.node):
        return work
    _, types = tensor_table(work)
    nodes = []
    for n in work.graph.node:
        if n.op_type in _EXPANSIONS and (n.domain or "") in ("", "ai.onnx"):
            dtype = helper.tensor_dtype_to_np_dtype(types.get(n.input[0], onnx.TensorProto.FLOAT))
            new_nodes, inits = _EXPANSIONS[n.op_type](n, dtype)
            nodes.extend(new_nodes)
            work.graph.initializer.extend(inits)
            report.replaced.append(NativeChange(n.name or n.output[0], n.op_type, " ".join(sorted({m.op_type for m in new_nodes})),
                                                f"no opset-{NATIVE_OPSET} {n.op_type}: its definition in opset-{NATIVE_OPSET} ops"))
        else:
            nodes.append(n)
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    return work


def _down_convert(model: onnx.ModelProto, opset: int, report: NativeReport) -> onnx.ModelProto | None:
    """``model`` (opset ``opset`` > 17, no AffineGrid, no plugin op, GridSample 4-D) at opset 17,
    checked in ONNX Runtime against ``model``; None (and the reasons per node in ``report.left``)
    where some node has no opset-17 form.

    Nodes whose meaning did not change (``_same_at``) and GridSample (no converter adapter; its
    mode names are renamed by the caller) are hidden from ONNX's version converter in a private
    domain; it converts the rest (Resize, ScatterND, Reduce* with constant axes, ...).
    """
    import onnx.version_converter as vc
    from onnx import helper

    from stn_deploy.graph import tensor_table

    own, by_converter, impossible = _changed_nodes(model, opset, NATIVE_OPSET)
    failed = list(impossible)
    table = tensor_table(model) if by_converter else ({}, {})  # shape inference: once, not per node
    for n in by_converter:
        try:
            vc.convert_version(_single_node_model(model, n, opset, table), NATIVE_OPSET)
        except Exception as exc:  # the converter raises RuntimeError / ConvertError / C++ asserts
            failed.append((n, f"no opset-{NATIVE_OPSET} form: {_converter_error(exc)}"))
    for n, why in failed:
        report.left.append(NativeChange(n.name or n.output[0], n.op_type, n.op_type, why))
    if failed:
        return None
    work = _expanded(model, report)
    own_outputs = {tuple(n.output) for n in own}
    hidden_nodes = [n for n in work.graph.node if (n.domain or "") in ("", "ai.onnx")
                    and (n.op_type == "GridSample" or tuple(n.output) in own_outputs)]
    for n in hidden_nodes:
        n.domain = _HIDDEN_DOMAIN
    work.opset_import.append(helper.make_opsetid(_HIDDEN_DOMAIN, 1))
    try:
        converted = vc.convert_version(work, NATIVE_OPSET)
    except Exception as exc:
        report.left.append(NativeChange("<graph>", "opset", "opset", f"ONNX's version converter failed: {_converter_error(exc)}"))
        return None
    for n in converted.graph.node:
        if n.domain == _HIDDEN_DOMAIN:
            n.domain = ""
        elif n.op_type.startswith("Reduce"):
            # The converter leaves Reduce*-18's noop_with_empty_axes on the opset-17 node (ONNX
            # Runtime rejects it there); its default 0 is what opset 17 always does.
            for a in list(n.attribute):
                if a.name == "noop_with_empty_axes" and a.i == 0:
                    n.attribute.remove(a)
    keep = [i for i in converted.opset_import if i.domain != _HIDDEN_DOMAIN]
    del converted.opset_import[:]
    converted.opset_import.extend(keep)
    for n in by_converter:
        report.replaced.append(NativeChange(n.name or n.output[0], n.op_type, f"{n.op_type} (opset {NATIVE_OPSET})",
                                            "ONNX's version converter"))
    return converted


def _rename_modes(model: onnx.ModelProto, names: dict[str, str], opset: int, report: NativeReport) -> None:
    """Write every default-domain GridSample's mode with the spelling ``names`` maps it to (the
    mode it had under ``opset``'s default when the attribute was absent)."""
    from onnx import helper

    for n in model.graph.node:
        if n.op_type != "GridSample" or (n.domain or "") not in ("", "ai.onnx"):
            continue
        mode = _attr(n, "mode", "linear" if opset >= 20 else "bilinear")
        new_mode = names.get(mode)
        if new_mode is None:
            raise UserError(f"GridSample {n.name!r}: unknown mode {mode!r}")
        for a in list(n.attribute):
            if a.name == "mode":
                n.attribute.remove(a)
        n.attribute.append(helper.make_attribute("mode", new_mode))
        if new_mode != mode and n.name:
            report.replaced.append(NativeChange(n.name, "GridSample", "GridSample", f"mode {mode} -> {new_mode}"))


def _opset_change(model: onnx.ModelProto, opset: int, target: int) -> str | None:
    """For a graph below opset 16 lifted to ``target``: None when every default-domain node means
    the same there, else the first op that does not."""
    _, changed, impossible = _changed_nodes(model, target, opset)
    first = changed[:1] or [n for n, _ in impossible[:1]]
    return f"{first[0].op_type} (changed after opset {opset})" if first else None


def to_native(model: onnx.ModelProto, report: NativeReport | None = None) -> onnx.ModelProto:
    """Return a copy of ``model`` in the native flavour (see the module docstring).

    Raises:
        UserError: a graph that cannot be made native (an AffineGrid or plugin op whose rank
            is unknown, a 5-D projective).
    """
    import onnx
    from onnx import helper

    from stn_deploy.graph import check_model, opset_version, register_onnx_schemas, tensor_table

    register_onnx_schemas()
    report = report if report is not None else NativeReport(input="<memory>", output=None)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    opset = opset_version(model)
    report.opset_in = opset
    dims, _ = tensor_table(model)
    ranks = {k: len(v) for k, v in dims.items()}
    fused = _projective_grids(model)  # xy AffineGrid output -> (theta, grid), and the nodes they replace
    skip = {t for _, _, dead in fused.values() for t in dead}
    decomposed = _decomposed_grids(model)  # grid -> (theta, spatial, align_corners)
    new_nodes: list = []
    new_inits: list = []
    five_d = False
    for node in model.graph.node:
        domain = node.domain or ""
        label = node.name or node.output[0]
        e = _Emitter(f"{label}/native")
        if node.output and node.output[0] in skip:
            continue
        if node.output and node.output[0] in decomposed:
            import numpy as np

            theta, spatial, ac = decomposed[node.output[0]]
            n = e.op("Slice", [e.op("Shape", [theta]), e.const([0], np.int64), e.const([1], np.int64), e.const([0], np.int64)])
            size = e.op("Concat", [n, e.const([1, *spatial], np.int64)], axis=0)
            emit_affine_grid(e, theta, size, 2 + len(spatial), ac, node.output[0])
            report.replaced.append(NativeChange(label, "Mul+ReduceSum affine grid", "MatMul on a Range base grid",
                                                f"the dynamo exporter's decomposed grid; its size {spatial} stays fixed"))
        elif node.op_type == "AffineGrid" and node.output[0] in fused:
            theta, grid, _ = fused[node.output[0]]
            emit_affine_grid(e, theta, node.input[1], 4, bool(_attr(node, "align_corners", 0)), grid, projective=True)
            report.replaced.append(NativeChange(label, "AffineGrid", "MatMul on a Range base grid, Div",
                                                "projective: 2 AffineGrid + Div as one MatMul with theta [N,3,3]"))
        elif node.op_type == "AffineGrid" and domain in ("", "ai.onnx"):
            rank = _affine_grid_rank(node, dims)
            if not rank:
                raise UserError(f"AffineGrid {label!r}: unknown output rank; cannot build its native grid")
            emit_affine_grid(e, node.input[0], node.input[1], rank, bool(_attr(node, "align_corners", 0)), node.output[0])
            report.replaced.append(NativeChange(label, "AffineGrid", "MatMul on a Range base grid"))
        elif domain == schema.PLUGIN_DOMAIN and node.op_type in (schema.GRID_SAMPLE_OP, schema.AFFINE_GRID_SAMPLE_OP):
            mode = schema.INTERPOLATION_NAMES[int(_attr(node, schema.FIELD_INTERPOLATION_MODE, 0))]
            padding = schema.PADDING_NAMES[int(_attr(node, schema.FIELD_PADDING_MODE, 0))]
            align = bool(_attr(node, schema.FIELD_ALIGN_CORNERS, 0))
            x = node.input[0]
            if node.op_type == schema.AFFINE_GRID_SAMPLE_OP:
                import numpy as np

                out_d = int(_attr(node, schema.FIELD_OUT_D, 0))
                spatial = ([out_d] if out_d > 0 else []) + [int(_attr(node, schema.FIELD_OUT_H)), int(_attr(node, schema.FIELD_OUT_W))]
                projective = int(_attr(node, schema.FIELD_TRANSFORM, 0)) == int(schema.Transform.PROJECTIVE)
                if projective and out_d > 0:
                    raise UserError(f"{label!r}: a projective transform of a volume has no native form")
                nc = e.op("Slice", [e.op("Shape", [x]), e.const([0], np.int64), e.const([2], np.int64), e.const([0], np.int64)])
                size = e.op("Concat", [nc, e.const(spatial, np.int64)], axis=0)
                grid = e.name("grid")
                emit_affine_grid(e, node.input[1], size, 2 + len(spatial), align, grid, projective=projective)
                rank = 2 + len(spatial)
                what = "Range base grid, MatMul" + (", Div" if projective else "") + ", GridSample"
            else:
                grid = node.input[1]
                rank = ranks.get(x, 4)
                what = "GridSample"
            five_d |= rank == 5
            e.op("GridSample", [x, grid], [node.output[0]], mode=mode, padding_mode=padding, align_corners=int(align))
            report.replaced.append(NativeChange(label, node.op_type, what))
        else:
            if node.op_type == "GridSample" and domain in ("", "ai.onnx"):
                five_d |= ranks.get(node.input[0], 4) == 5
            new_nodes.append(node)
            continue
        new_nodes.extend(e.nodes)
        new_inits.extend(e.initializers)
    del model.graph.node[:]
    model.graph.node.extend(_live(new_nodes, {o.name for o in model.graph.output}))
    model.graph.initializer.extend(new_inits)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    alive = [t for t in model.graph.initializer if t.name in used]  # a fused grid's base-grid constant, ...
    del model.graph.initializer[:]
    model.graph.initializer.extend(alive)
    if not any(n.domain == schema.PLUGIN_DOMAIN for n in model.graph.node):
        keep = [i for i in model.opset_import if i.domain != schema.PLUGIN_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(keep)
    if not opset:
        model.opset_import.append(helper.make_opsetid("", NATIVE_OPSET))
        opset = NATIVE_OPSET

    if five_d:
        names, target = OPSET20_MODE_NAMES, max(opset, 20)
        report.left.append(NativeChange("<graph>", "GridSample", "GridSample",
                                        "5-D GridSample exists from opset 20 only (mode linear|nearest); "
                                        "TensorRT imports it from 11.2"))
    elif 16 <= opset <= NATIVE_OPSET:
        names, target = OPSET16_MODE_NAMES, opset
    elif opset > NATIVE_OPSET:
        del model.graph.value_info[:]  # stale shapes of replaced tensors; the converter infers them again
        n_replaced = len(report.replaced)  # what the conversion adds goes again if it is not kept
        converted = _down_convert(model, opset, report)
        if converted is None:
            del report.replaced[n_replaced:]
            names, target = OPSET20_MODE_NAMES, opset
            report.left.append(NativeChange("<graph>", "opset", "opset",
                                            f"kept opset {opset}: the node(s) above have no opset-{NATIVE_OPSET} form, so "
                                            "GridSample keeps the opset-20 names (#4646 in TensorRT 10)"))
        else:
            _rename_modes(converted, OPSET16_MODE_NAMES, opset, report)
            mismatch = _same_in_ort(model, converted)  # _down_convert works on a copy: model is as it came
            if mismatch is None or mismatch.startswith("not checked"):
                if mismatch:
                    report.left.append(NativeChange("<graph>", "opset", "opset", mismatch))
                model, names, target = converted, OPSET16_MODE_NAMES, NATIVE_OPSET
            else:
                names, target = OPSET20_MODE_NAMES, opset
                del report.replaced[n_replaced:]
                report.left.append(NativeChange("<graph>", "opset", "opset", f"kept opset {opset}: {mismatch}"))
    elif (why := _opset_change(model, opset, NATIVE_OPSET)) is None:
        names, target = OPSET16_MODE_NAMES, NATIVE_OPSET
    else:
        raise UserError(f"opset {opset} graph: {why} differs at opset {NATIVE_OPSET}, which its GridSample needs")
    _rename_modes(model, names, opset, report)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = target
    report.opset_out = target
    del model.graph.value_info[:]  # stale shapes of replaced tensors; check_model infers them again
    return check_model(model)


def lower_affine_grids(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[NativeChange]]:
    """Every default-domain ``AffineGrid`` of ``model`` (in place) as the ops ``to_native`` builds
    it from (a Range base grid and a MatMul, batch and H/W dynamic); the rest of the graph, plugin
    ops included, stays. What ``rewrite`` does with an AffineGrid it could not fuse.

    Raises:
        UserError: an AffineGrid whose output rank is unknown.
    """
    from stn_deploy.graph import tensor_table

    dims, _ = tensor_table(model)
    nodes, inits, changes = [], [], []
    for node in model.graph.node:
        if node.op_type != "AffineGrid" or (node.domain or "") not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        label = node.name or node.output[0]
        rank = _affine_grid_rank(node, dims)
        if not rank:
            raise UserError(f"AffineGrid {label!r}: unknown output rank; cannot build its grid from standard ops")
        e = _Emitter(f"{label}/native")
        emit_affine_grid(e, node.input[0], node.input[1], rank, bool(_attr(node, "align_corners", 0)), node.output[0])
        nodes.extend(e.nodes)
        inits.extend(e.initializers)
        changes.append(NativeChange(label, "AffineGrid", "MatMul on a Range base grid"))
    if changes:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.initializer.extend(inits)
    return model, changes


def _projective_grids(model: onnx.ModelProto) -> dict[str, tuple[str, str, set[str]]]:
    """The projective grids ``models.ProjectiveGenerator`` exports (two AffineGrid + Div,
    matched by ``graph``'s rewrite): {xy AffineGrid output: (theta, grid (the Div's output),
    outputs of the nodes the fused grid replaces)}."""
    import onnx_graphsurgeon as gs

    from stn_deploy.graph import _match_projective

    graph = gs.import_onnx(model)
    outputs = {t.name for t in graph.outputs}
    found = {}
    for node in graph.nodes:
        if node.op != "GridSample" or len(node.inputs) < 2:
            continue
        m = _match_projective(node.inputs[1], outputs)
        if m is None:
            continue
        theta, ag_xy, ag_w = m
        grid = node.inputs[1]
        div = grid.inputs[0]
        found[ag_xy.outputs[0].name] = (theta.name, grid.name, {ag_w.outputs[0].name, div.outputs[0].name})
    return found


def _decomposed_grids(model: onnx.ModelProto) -> dict[str, tuple[str, list[int], bool]]:
    """The dynamo exporter's Mul+ReduceSum affine grids feeding a GridSample (matched by
    ``graph``'s rewrite): {grid: (theta, spatial sizes, align_corners)}."""
    import onnx_graphsurgeon as gs

    from stn_deploy.graph import _match_decomposed, tensor_table

    dims, _ = tensor_table(model)
    graph = gs.import_onnx(model)
    found = {}
    for node in graph.nodes:
        if node.op == "GridSample" and len(node.inputs) > 1:
            m = _match_decomposed(node.inputs[1], dims)
            if m is not None:
                found[node.inputs[1].name] = (m[0].name, list(m[1]), bool(m[2]))
    return found


def _live(nodes: list, graph_outputs: set[str]) -> list:
    """``nodes`` less those whose outputs nothing reads (left over from a fused grid)."""
    needed = set(graph_outputs)
    keep = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(n.input)
    return keep[::-1]


def native_problems(model: onnx.ModelProto) -> list[str]:
    """What keeps ``model`` from being native: AffineGrid, plugin ops, opset-20 names on 4-D."""
    from stn_deploy.graph import opset_version, tensor_table

    out = []
    opset = opset_version(model)
    dims, _ = tensor_table(model)
    for n in model.graph.node:
        label = n.name or n.output[0]
        if n.op_type == "AffineGrid":
            out.append(f"AffineGrid {label!r}: no TensorRT imports it")
        elif n.domain == schema.PLUGIN_DOMAIN:
            out.append(f"{n.op_type} {label!r}: a plugin op")
        elif n.op_type == "GridSample":
            mode = _attr(n, "mode", "linear" if opset >= 20 else "bilinear")
            if mode in ("linear", "cubic") and len(dims.get(n.input[0]) or [0] * 4) != 5:
                out.append(f"GridSample {label!r}: opset-20 mode {mode!r} (#4646)")
    return out
