"""ONNX graphs: our plugin ops' schemas, safe loading, and the rewrite of third-party graphs.

``rewrite_model`` turns the samplers of any ONNX graph into our plugin ops (``stn_deploy.rewriter``
is the ``rewrite`` job around it):

- ``GridSample`` (opset 16 names ``bilinear|nearest|bicubic`` and opset 20 names
  ``linear|nearest|cubic``, 4-D and 5-D) -> ``stn_deploy::STNGridSample``;
- ``AffineGrid`` -> ``GridSample`` with a static output size -> ``stn_deploy::STNAffineGridSample``
  (theta in, no grid tensor), ``transform=0``;
- the projective grid that ``models.ProjectiveGenerator`` exports (two ``AffineGrid`` and a
  ``Div``) -> ``STNAffineGridSample`` with ``transform=1``.

Whatever it cannot replace it leaves in place, with the reason in the report. The doctor
(``stn_deploy.jobs.doctor``) lints what is left.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stn_deploy import schema
from stn_deploy.errors import UserError
from stn_deploy.io import require_file

if TYPE_CHECKING:
    import onnx

#: Name of the string attribute that carries the plugin version (the TensorRT parser reads it).
PLUGIN_VERSION_ATTR = schema.FIELD_PLUGIN_VERSION
#: Opset of our domain in the graphs we write.
PLUGIN_OPSET = 1

#: GridSample ``mode`` names of both ONNX spellings (opset 16-19 and opset 20+).
ONNX_MODE_NAMES: dict[str, schema.InterpolationMode] = {
    "bilinear": schema.InterpolationMode.BILINEAR,
    "linear": schema.InterpolationMode.BILINEAR,
    "nearest": schema.InterpolationMode.NEAREST,
    "bicubic": schema.InterpolationMode.BICUBIC,
    "cubic": schema.InterpolationMode.BICUBIC,
}

_SCHEMA_LOCK = threading.Lock()


# --------------------------------------------------------------------------- schemas


def _spatial_out_type(ctx, spatial: list) -> onnx.TypeProto:
    import onnx

    x_type = ctx.get_input_type(0)
    out = onnx.TypeProto()
    out.tensor_type.elem_type = x_type.tensor_type.elem_type
    if not x_type.tensor_type.HasField("shape"):
        return out
    dims = list(x_type.tensor_type.shape.dim)
    shape = out.tensor_type.shape
    for d in dims[:2]:
        shape.dim.add().CopyFrom(d)
    for s in spatial:
        nd = shape.dim.add()
        if isinstance(s, int):
            nd.dim_value = s
        elif s is not None:
            nd.CopyFrom(s)
    return out


def _infer_grid_sample(ctx) -> None:
    grid = ctx.get_input_type(1)
    spatial: list = []
    if grid.tensor_type.HasField("shape"):
        spatial = list(grid.tensor_type.shape.dim)[1:-1]
    elif ctx.get_input_type(0).tensor_type.HasField("shape"):
        spatial = [None] * (len(ctx.get_input_type(0).tensor_type.shape.dim) - 2)
    ctx.set_output_type(0, _spatial_out_type(ctx, spatial))


def _infer_affine_grid_sample(ctx) -> None:
    def attr(name: str) -> int:
        a = ctx.get_attribute(name)
        return int(a.i) if a is not None else 0

    d = attr(schema.FIELD_OUT_D)
    spatial = [d] if d > 0 else []
    spatial += [attr(schema.FIELD_OUT_H), attr(schema.FIELD_OUT_W)]
    ctx.set_output_type(0, _spatial_out_type(ctx, spatial))


def register_onnx_schemas() -> None:
    """Teach ``onnx.checker`` and shape inference our two ops (idempotent)."""
    import onnx.defs as defs

    with _SCHEMA_LOCK:
        S = defs.OpSchema
        ints = [schema.FIELD_INTERPOLATION_MODE, schema.FIELD_PADDING_MODE, schema.FIELD_ALIGN_CORNERS]
        fused_ints = ints + [schema.FIELD_TRANSFORM, schema.FIELD_OUT_D, schema.FIELD_OUT_H, schema.FIELD_OUT_W]
        specs = [
            (schema.GRID_SAMPLE_OP, "grid", ints, _infer_grid_sample,
             "F.grid_sample(X, grid): grid [N, *out, 2|3] in normalised coordinates."),
            (schema.AFFINE_GRID_SAMPLE_OP, "theta", fused_ints, _infer_affine_grid_sample,
             "F.grid_sample(X, F.affine_grid(theta, size)); projective theta [N,3,3] when transform=1."),
        ]
        for name, second, attr_names, infer, doc in specs:
            if defs.has(name, schema.PLUGIN_DOMAIN):
                continue
            attrs = [S.Attribute(PLUGIN_VERSION_ATTR, defs.OpSchema.AttrType.STRING, "plugin version", required=False)]
            attrs += [S.Attribute(a, defs.OpSchema.AttrType.INT, a, required=False) for a in attr_names]
            op = S(
                name, schema.PLUGIN_DOMAIN, PLUGIN_OPSET, doc,
                inputs=[S.FormalParameter("X", "T"), S.FormalParameter(second, "T")],
                outputs=[S.FormalParameter("Y", "T")],
                type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float tensors")],
                attributes=attrs,
            )
            op.set_type_and_shape_inference_function(infer)
            defs.register_schema(op)


# --------------------------------------------------------------------------- loading


def load_onnx(path: Path | str | bytes, *, check: bool = True) -> onnx.ModelProto:
    """Load an ONNX model; any unreadable, non-ONNX or truncated file is a one-line UserError.

    Args:
        path: a file path, or the serialised model.
        check: also run ``onnx.checker`` (catches truncated files that still parse).
    """
    import onnx

    register_onnx_schemas()
    label = "the model bytes" if isinstance(path, bytes) else str(path)
    if not isinstance(path, bytes):
        require_file(path, "ONNX model")
    try:
        # From a path, onnx.load also reads external data files (the dynamo exporter writes them).
        model = onnx.load_from_string(path) if isinstance(path, bytes) else onnx.load(str(path))
    except OSError as exc:
        raise UserError(f"{label}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # protobuf's binary, text and JSON parsers each raise their own types
        raise UserError(f"{label} is not an ONNX model (or it is truncated): {type(exc).__name__}") from None
    if not model.graph.node or not model.opset_import:
        raise UserError(f"{label} is not an ONNX model (or it is truncated): no graph")
    model = _fill_missing_shapes(model)
    if check:
        try:
            onnx.checker.check_model(model)
        except Exception as exc:  # ValidationError and friends
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{label} is not a valid ONNX model (truncated?): {first}") from None
    return model


def _fill_missing_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give graph inputs/outputs typed without a ``shape`` field (onnx-graphsurgeon writes
    them; ONNX Runtime and TensorRT run them, the checker refuses them) the shape that shape
    inference finds. An empty shape would mean rank 0, so what inference cannot find stays
    missing and the checker says so."""
    import onnx

    values = [*model.graph.input, *model.graph.output]
    if all(v.type.tensor_type.HasField("shape") for v in values if v.type.HasField("tensor_type")):
        return model
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a best effort here; the checker below still runs
        return model
    shapes = {v.name: v.type for v in [*inferred.graph.output, *inferred.graph.value_info, *inferred.graph.input]}
    for v in values:
        tensor = v.type.tensor_type
        if v.type.HasField("tensor_type") and not tensor.HasField("shape") and v.name in shapes:
            known = shapes[v.name].tensor_type
            if known.HasField("shape"):
                tensor.shape.CopyFrom(known.shape)
    return model


def opset_version(model: onnx.ModelProto, domain: str = "") -> int:
    """The model's opset for ``domain`` ("" = the default ONNX domain); 0 when not imported."""
    for imp in model.opset_import:
        if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(imp.version)
    return 0


def check_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.checker`` (full) + strict shape inference; returns the shape-inferred model.

    Raises:
        UserError: the graph is invalid.
    """
    import onnx

    register_onnx_schemas()
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"the ONNX graph fails the checker: {first}") from None




def attr_value(node, name: str, default: Any = None) -> Any:
    """An attribute of an ONNX ``NodeProto`` as a Python value (str decoded), or ``default``."""
    import onnx

    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def plugin_nodes(model: onnx.ModelProto) -> list:
    """Our plugin nodes (op type ours, in our domain), in the graph and its local functions."""
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return [n for n in nodes if n.domain == schema.PLUGIN_DOMAIN and n.op_type in schema.OP_FIELD_SPECS]


def plugin_node_problems(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(node name, problem) for every attribute of our plugin nodes that its creator would
    reject (``schema.plugin_attribute_problems``)."""
    found = []
    for i, node in enumerate(plugin_nodes(model)):
        attrs = {a.name: attr_value(node, a.name) for a in node.attribute}
        name = node.name or f"{node.op_type}#{i}"
        found += [(name, problem) for problem in schema.plugin_attribute_problems(node.op_type, attrs)]
    return found


def require_valid_plugin_nodes(model: onnx.ModelProto, where: str) -> None:
    """UserError naming the first bad plugin node and attribute (and how many more)."""
    problems = plugin_node_problems(model)
    if problems:
        node, problem = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{where}: node {node}: {problem}{more}")


# --------------------------------------------------------------------------- rewrite


@dataclass
class RewriteEntry:
    node: str
    op: str
    replaced_by: str | None = None
    reason: str = ""
    attributes: dict = field(default_factory=dict)


@dataclass
class RewriteReport:
    """What ``rewrite`` replaced and what it left (with reasons)."""

    input: str
    output: str | None
    replaced: list[RewriteEntry] = field(default_factory=list)
    left: list[RewriteEntry] = field(default_factory=list)
    #: The doctor target the written graph was checked for, and its warnings/errors as lines.
    target: str | None = None
    doctor: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"replaced {len(self.replaced)} node(s), left {len(self.left)}"]
        for e in self.replaced:
            out.append(f"  replaced {e.op} {e.node!r} -> {e.replaced_by}" + (f" ({e.reason})" if e.reason else ""))
        for e in self.left:
            out.append(f"  left     {e.op} {e.node!r}: {e.reason}")
        return out + doctor_lines(self.target, self.doctor)


def doctor_lines(target: str | None, findings: list[str]) -> list[str]:
    """The doctor's verdict on a rewritten graph, for a report's ``lines``."""
    if target is None:
        return []
    return [f"doctor for {target}: no errors" + (f", {len(findings)} warning(s):" if findings else "")] + \
        [f"  {line}" for line in findings]


def tensor_table(model: onnx.ModelProto) -> tuple[dict, dict]:
    """name -> dims (int or None) and name -> elem_type for every typed tensor after inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        inferred = model
    dims: dict = {}
    types: dict = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        types[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for init in g.initializer:
        dims[init.name] = list(init.dims)
        types[init.name] = init.data_type
    return dims, types


def _const_values(tensor) -> list | None:
    """Values of a graph-surgeon constant tensor (or a Constant node's output), else None."""
    import onnx_graphsurgeon as gs

    if isinstance(tensor, gs.Constant):
        return [int(v) for v in tensor.values.reshape(-1)]
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        v = tensor.inputs[0].attrs.get("value")
        if v is not None and hasattr(v, "values"):
            return [int(x) for x in v.values.reshape(-1)]
    return None


def _grid_sample_fields(node, opset: int) -> tuple[dict[str, int] | None, str]:
    """Plugin fields of an ONNX GridSample node, or (None, reason)."""
    default_mode = "linear" if opset >= 20 else "bilinear"
    mode = node.attrs.get("mode", default_mode)
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    padding = node.attrs.get("padding_mode", "zeros")
    padding = padding.decode() if isinstance(padding, bytes) else str(padding)
    if mode not in ONNX_MODE_NAMES:
        return None, f"mode {mode!r} is not a GridSample mode our plugin implements"
    if padding not in schema.PADDING_NAMES:
        return None, f"padding_mode {padding!r} is not one our plugin implements"
    return {
        schema.FIELD_INTERPOLATION_MODE: int(ONNX_MODE_NAMES[mode]),
        schema.FIELD_PADDING_MODE: int(schema.padding_from_name(padding)),
        schema.FIELD_ALIGN_CORNERS: int(node.attrs.get("align_corners", 0)),
    }, ""


def _single_consumer(tensor, graph_outputs: set) -> bool:
    return len(tensor.outputs) == 1 and tensor.name not in graph_outputs


def _producer(tensor, op: str | None = None):
    if len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    return node if op is None or node.op == op else None


def _is_slice(node, start: int, end: int, axes: tuple[int, ...]) -> bool:
    """``node`` is a Slice of [start:end] along one of ``axes`` with step 1 (constant inputs)."""
    if node is None or node.op != "Slice" or len(node.inputs) < 3:
        return False
    maybe = [_const_values(t) for t in node.inputs[1:]]
    vals = [v for v in maybe if v is not None]
    if len(vals) != len(maybe):
        return False
    starts, ends = vals[0], vals[1]
    ax = vals[2] if len(vals) > 2 else [0]
    steps = vals[3] if len(vals) > 3 else [1]
    return starts == [start] and ends == [end] and len(ax) == 1 and ax[0] in axes and steps == [1]


def _match_projective(grid, graph_outputs: set):
    """Match what ``models.ProjectiveGenerator`` exports (any user code written the same way)::

        xy = AffineGrid(theta[:, 0:2], size); w = AffineGrid(concat(theta[:, 2:3], theta[:, 2:3]), size)
        grid = xy / w[..., 0:1]

    with theta [N, 3, 3], both AffineGrids on the same size and align_corners. Returns
    (theta tensor, xy AffineGrid node, w AffineGrid node) or None.
    """
    div = _producer(grid, "Div")
    if div is None:
        return None
    ag_xy = _producer(div.inputs[0], "AffineGrid")
    den = _producer(div.inputs[1], "Slice")
    if ag_xy is None or not _is_slice(den, 0, 1, (-1, 3)):
        return None
    ag_w = _producer(den.inputs[0], "AffineGrid")
    sl_xy = _producer(ag_xy.inputs[0], "Slice")
    if ag_w is None or not _is_slice(sl_xy, 0, 2, (1, -2)):
        return None
    theta = sl_xy.inputs[0]
    cat = _producer(ag_w.inputs[0], "Concat")
    if cat is None or cat.attrs.get("axis") not in (1, -2) or len(cat.inputs) != 2:
        return None
    rows = [_producer(t, "Slice") for t in cat.inputs]
    if not all(_is_slice(r, 2, 3, (1, -2)) and r.inputs[0] is theta for r in rows):
        return None
    same_size = ag_xy.inputs[1] is ag_w.inputs[1] or (
        _const_values(ag_xy.inputs[1]) is not None and _const_values(ag_xy.inputs[1]) == _const_values(ag_w.inputs[1]))
    if not same_size:
        # Sizes built by Shape/Gather/Concat chains: equal when their constant tails agree and
        # their leading (N, C) entries come from the same tensors.
        a, b = _producer(ag_xy.inputs[1], "Concat"), _producer(ag_w.inputs[1], "Concat")
        same_size = a is not None and b is not None and len(a.inputs) == len(b.inputs) and all(
            x is y or (_const_values(x) is not None and _const_values(x) == _const_values(y))
            or _same_source(x, y) for x, y in zip(a.inputs, b.inputs))
    if not same_size or int(ag_xy.attrs.get("align_corners", 0)) != int(ag_w.attrs.get("align_corners", 0)):
        return None
    return theta, ag_xy, ag_w


#: Ops that may stand between an AffineGrid and its GridSample and still let the two fuse, when
#: ``_pass_through_step`` finds that they keep the grid's values (see there).
PASS_THROUGH_OPS = frozenset({"Identity", "Cast", "Expand", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})


def _pass_through_step(node, dims: dict) -> tuple[bool, bool]:
    """Whether ``node`` (between an AffineGrid and its sampler) keeps the grid's values:
    (passes, broadcasts the batch).

    Identity passes. Cast passes to float32/float16 (the fused op computes the grid in the
    sampler's type). Reshape/Squeeze/Unsqueeze/Flatten pass when their output shape is their
    input shape (a no-op, e.g. kornia's reshape to the same size). Expand passes when it changes
    at most the batch dimension (kornia's ``warp_affine`` expands the grid to the image batch);
    theta is then broadcast the same way.
    """
    import onnx

    src, out = node.inputs[0].name, node.outputs[0].name
    if node.op == "Identity":
        return True, False
    if node.op == "Cast":
        return int(node.attrs.get("to", 0)) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16), False
    a, b = dims.get(src), dims.get(out)
    if a is None or b is None or len(a) != len(b) or len(a) not in (4, 5):
        return False, False
    if any(x is None or y is None or x != y for x, y in zip(a[1:], b[1:])):
        return False, False
    if node.op == "Expand":
        shape_len = (dims.get(node.inputs[1].name) or [None])[0]
        # A shape as long as the grid may broadcast the batch; a shorter one leaves it as it is.
        return shape_len is not None and shape_len <= len(a), shape_len == len(a)
    # Same rank, same dims past the batch: these ops keep the element count, so the batch is the same too.
    return True, False


def _through_pass_through(grid, dims: dict, graph_outputs: set):
    """Where ``grid`` comes from through a chain of ``PASS_THROUGH_OPS`` that keep its values (each
    output read only by the next step), and the Expand nodes on the way (theta is broadcast by
    their shapes). Returns (source tensor, expands); (grid, []) when nothing passes."""
    expands: list = []
    t = grid
    for _ in range(8):
        node = _producer(t)
        if node is None or node.op not in PASS_THROUGH_OPS or (node.domain or "") not in ("", "ai.onnx"):
            break
        if t is not grid and not _single_consumer(t, graph_outputs):
            break
        passes, broadcast = _pass_through_step(node, dims)
        if not passes:
            break
        if broadcast:
            expands.append(node)
        t = node.inputs[0]
    return t, expands


def _chain_ops(grid, source) -> list[str]:
    """Op types from ``source`` to ``grid`` (the pass-through chain), in graph order."""
    ops = []
    t = grid
    while t is not source and (node := _producer(t)) is not None:
        ops.append(node.op)
        t = node.inputs[0]
    return ops[::-1]


def _broadcast_theta(graph, theta, expands: list, name: str):
    """theta [N, r, c] expanded over the batch the way ``expands`` expand the grid: the first
    entry of each Expand's shape, the other dims kept (Expand broadcasts 1s)."""
    import numpy as np
    import onnx_graphsurgeon as gs

    for i, node in enumerate(expands):
        first = gs.Variable(f"{name}/theta_batch_{i}", dtype=np.int64, shape=[1])
        shape = gs.Variable(f"{name}/theta_shape_{i}", dtype=np.int64, shape=[3])
        out = gs.Variable(f"{name}/theta_expanded_{i}", dtype=theta.dtype)
        graph.nodes.append(gs.Node("Slice", name=f"{name}/theta_batch_{i}", inputs=[
            node.inputs[1], gs.Constant(f"{name}/zero_{i}", np.array([0], np.int64)),
            gs.Constant(f"{name}/one_{i}", np.array([1], np.int64))], outputs=[first]))
        graph.nodes.append(gs.Node("Concat", name=f"{name}/theta_shape_{i}", attrs={"axis": 0}, inputs=[
            first, gs.Constant(f"{name}/ones_{i}", np.array([1, 1], np.int64))], outputs=[shape]))
        graph.nodes.append(gs.Node("Expand", name=f"{name}/theta_expand_{i}", inputs=[theta, shape], outputs=[out]))
        theta = out
    return theta


def _same_source(a, b, depth: int = 4) -> bool:
    """Whether two tensors are computed by identical chains of single-input-shaped ops
    (e.g. Unsqueeze(Gather(Shape(x), 0)) twice)."""
    if a is b:
        return True
    if depth == 0:
        return False
    pa, pb = _producer(a), _producer(b)
    try:
        same_attrs = pa is not None and pb is not None and bool(pa.attrs == pb.attrs)
    except (ValueError, TypeError):  # array-valued attributes
        same_attrs = False
    if not same_attrs or pa.op != pb.op or len(pa.inputs) != len(pb.inputs):
        va, vb = _const_values(a), _const_values(b)
        return va is not None and va == vb
    return all(_same_source(x, y, depth - 1) for x, y in zip(pa.inputs, pb.inputs))


def _affine_base_grid(spatial: list[int], align_corners: bool):
    """The base points [P, r+1] (x fastest, then y, z; last column 1) of ``F.affine_grid``."""
    import numpy as np

    def coords(n: int):
        c = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
        return c if align_corners else c * (n - 1) / n

    axes = [coords(n) for n in spatial]  # (D,) H, W
    mesh = np.meshgrid(*axes, indexing="ij")
    cols = [m.reshape(-1) for m in reversed(mesh)]  # x, y(, z)
    return np.stack([*cols, np.ones_like(cols[0])], axis=1)


def _match_decomposed(grid, dims: dict):
    """Match the dynamo exporter's decomposed ``F.affine_grid``:
    ``Reshape(ReduceSum(Mul(base [P, r+1, 1], Unsqueeze(Transpose(theta, [0, 2, 1]))), -2))``.

    Returns (theta tensor, spatial sizes, align_corners) or None. align_corners is read back
    from the base grid's values.
    """
    import numpy as np
    import onnx_graphsurgeon as gs

    reshape = _producer(grid, "Reshape")
    rs = _producer(reshape.inputs[0], "ReduceSum") if reshape is not None else None
    mul = _producer(rs.inputs[0], "Mul") if rs is not None else None
    if mul is None:
        return None
    base_t = next((t for t in mul.inputs if isinstance(t, gs.Constant)), None)
    other = next((t for t in mul.inputs if not isinstance(t, gs.Constant)), None)
    if base_t is None or other is None:
        return None
    unsq = _producer(other, "Unsqueeze")
    tr = _producer(unsq.inputs[0], "Transpose") if unsq is not None else None
    if unsq is None or tr is None or rs is None or list(tr.attrs.get("perm", [])) != [0, 2, 1]:
        return None
    # [N, r+1, r] -> [N, 1, r+1, r] times base [P, r+1, 1], summed over the r+1 axis.
    unsq_axes = _const_values(unsq.inputs[1]) if len(unsq.inputs) > 1 else list(unsq.attrs.get("axes", []))
    rs_axes = _const_values(rs.inputs[1]) if len(rs.inputs) > 1 else list(rs.attrs.get("axes", []))
    if unsq_axes != [1] or rs_axes not in ([-2], [2]) or int(rs.attrs.get("keepdims", 1)) != 0:
        return None
    base = np.asarray(base_t.values, dtype=np.float64)
    grid_dims = dims.get(grid.name) or []
    if base.ndim != 3 or base.shape[2] != 1 or len(grid_dims) not in (4, 5):
        return None
    spatial = grid_dims[1:-1]
    if any(not isinstance(d, int) or d <= 0 for d in spatial) or base.shape[1] != len(spatial) + 1:
        return None
    for ac in (False, True):
        ref = _affine_base_grid(list(spatial), ac)
        if ref.shape == base[..., 0].shape and np.allclose(ref, base[..., 0], atol=1e-6):
            return tr.inputs[0], [int(d) for d in spatial], ac
    return None


def rewrite_model(model: onnx.ModelProto, report: RewriteReport | None = None, *, fuse: bool = True) -> onnx.ModelProto:
    """In-memory ``rewrite``: returns a new model; fills ``report`` when given."""
    import onnx
    import onnx_graphsurgeon as gs

    report = report if report is not None else RewriteReport(input="<memory>", output=None)
    opset = opset_version(model)
    dims, types = tensor_table(model)
    graph = gs.import_onnx(model)
    outputs = {t.name for t in graph.outputs}
    fused_grids: set[str] = set()
    n_new = 0

    for node in list(graph.nodes):
        if node.op != "GridSample" or (node.domain or "") not in ("", "ai.onnx"):
            continue
        x, grid = node.inputs[0], node.inputs[1]
        name = node.name or node.outputs[0].name
        fields, reason = _grid_sample_fields(node, opset)
        if fields is None:
            report.left.append(RewriteEntry(name, "GridSample", reason=reason))
            continue
        x_dims = dims.get(x.name)
        rank = len(x_dims) if x_dims is not None else None
        if rank not in (4, 5, None):
            report.left.append(RewriteEntry(name, "GridSample", reason=f"input rank {rank}: the plugin takes 4-D or 5-D"))
            continue
        dtype = types.get(x.name, onnx.TensorProto.FLOAT)
        if dtype not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            report.left.append(RewriteEntry(
                name, "GridSample",
                reason=f"input dtype {onnx.TensorProto.DataType.Name(dtype).lower()}: the plugin takes float32/float16"))
            continue

        attrs: dict[str, int | str] = dict(fields)
        new_op, new_inputs, note = schema.GRID_SAMPLE_OP, [x, grid], ""
        source, expands = _through_pass_through(grid, dims, outputs)
        ag = _producer(source, "AffineGrid")
        if ag is None:
            source, expands = grid, []
        proj = None if ag is not None else _match_projective(grid, outputs)
        gen = ag if ag is not None else (proj[1] if proj else None)
        decomposed = _match_decomposed(grid, dims) if gen is None and fuse else None
        if decomposed is not None:
            theta, spatial, ac_grid = decomposed
            if int(ac_grid) != fields[schema.FIELD_ALIGN_CORNERS]:
                note = "decomposed affine grid kept: its align_corners differs from the sampler's"
            elif not _single_consumer(grid, outputs):
                note = "decomposed affine grid kept: its grid has other consumers"
            else:
                attrs.update({
                    schema.FIELD_TRANSFORM: int(schema.Transform.AFFINE),
                    schema.FIELD_OUT_D: spatial[0] if len(spatial) == 3 else 0,
                    schema.FIELD_OUT_H: spatial[-2],
                    schema.FIELD_OUT_W: spatial[-1],
                })
                new_op, new_inputs = schema.AFFINE_GRID_SAMPLE_OP, [x, theta]
                note = "fused with the dynamo exporter's decomposed affine grid (Mul+ReduceSum)"
        elif gen is not None and fuse:
            ac_grid = int(gen.attrs.get("align_corners", 0))
            out_dims = dims.get(gen.outputs[0].name) or []
            size_vals = _const_values(gen.inputs[1])
            spatial = size_vals[2:] if size_vals else [d for d in out_dims[1:-1]]
            if ac_grid != fields[schema.FIELD_ALIGN_CORNERS]:
                note = "AffineGrid kept: its align_corners differs from the sampler's"
            elif not _single_consumer(source, outputs) or not _single_consumer(grid, outputs):
                note = "AffineGrid kept: its grid has other consumers"
            elif not spatial or any(not isinstance(s, int) or s <= 0 for s in spatial):
                note = "AffineGrid kept: its output size is not static (the fused op takes out_h/out_w attributes)"
            else:
                out_d = spatial[0] if len(spatial) == 3 else 0
                attrs.update({
                    schema.FIELD_TRANSFORM: int(schema.Transform.PROJECTIVE if proj else schema.Transform.AFFINE),
                    schema.FIELD_OUT_D: int(out_d),
                    schema.FIELD_OUT_H: int(spatial[-2]),
                    schema.FIELD_OUT_W: int(spatial[-1]),
                })
                theta = proj[0] if proj else _broadcast_theta(graph, gen.inputs[0], expands, name)
                new_op, new_inputs = schema.AFFINE_GRID_SAMPLE_OP, [x, theta]
                fused_grids.add(grid.name)
                via = "" if source is grid else f" through {' -> '.join(_chain_ops(grid, source))}"
                note = "fused with its projective grid (2 AffineGrid + Div)" if proj else f"fused with AffineGrid {gen.name!r}{via}"
        elif gen is None and _producer(grid) is not None and decomposed is None:
            note = f"grid made by {_producer(grid).op}: sampler replaced, grid kept"

        attrs[PLUGIN_VERSION_ATTR] = schema.PLUGIN_VERSION
        out = node.outputs[0]
        node.outputs = []  # detach; cleanup drops the old node (and a fused grid's producers)
        n_new += 1
        graph.nodes.append(gs.Node(
            op=new_op, name=f"{name}/{new_op}", domain=schema.PLUGIN_DOMAIN,
            attrs=attrs, inputs=new_inputs, outputs=[out],
        ))
        report.replaced.append(RewriteEntry(name, "GridSample", replaced_by=new_op, reason=note, attributes=dict(attrs)))

    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    # What is left that a TensorRT build would trip on.
    for node in graph.nodes:
        if node.op == "AffineGrid" and (node.domain or "") in ("", "ai.onnx"):
            report.left.append(RewriteEntry(
                node.name, "AffineGrid",
                reason="not fused (see above, or not followed by a GridSample); TensorRT has no AffineGrid importer"))
    new = gs.export_onnx(graph)
    new.ir_version = model.ir_version
    new.metadata_props.extend(model.metadata_props)
    if n_new and not any(i.domain == schema.PLUGIN_DOMAIN for i in new.opset_import):
        new.opset_import.append(onnx.helper.make_opsetid(schema.PLUGIN_DOMAIN, PLUGIN_OPSET))
    return new
