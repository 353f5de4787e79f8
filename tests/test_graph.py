"""stn_deploy.graph.rewrite_model and the rewrite job (stn_deploy.rewriter): hand-built graphs and a user's own torch.onnx.export of an STN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from onnx import TensorProto, helper

from helpers_export import PLUGIN_TOL, UserSTN, assert_close, dynamo_export, kernels_available, perturb_transformers, user_export
from stn_deploy import schema
from stn_deploy.cli import main
from stn_deploy.errors import UserError
from stn_deploy.graph import (
    PLUGIN_VERSION_ATTR,
    attr_value,
    load_onnx,
    rewrite_model,
)
from stn_deploy.jobs.export import export_module, transformers
from stn_deploy.models import MODEL_NAMES, ModelConfig, build_model
from stn_deploy.ort_ops import ort_session
from stn_deploy.rewriter import RewriteOptions, rewrite

FLOAT = TensorProto.FLOAT


def _out(name: str, rank: int = 4):
    return helper.make_tensor_value_info(name, FLOAT, [f"{name}{i}" for i in range(rank)])
needs_kernels = pytest.mark.plugin


def _skip_without_kernels():
    why = kernels_available()
    if why:
        pytest.skip(why)


def _assert_rewritten_matches_torch(new: onnx.ModelProto, model, x, what: str) -> None:
    """Parity of a rewritten graph (ORT, plugin ops on the CPU reference) with the PyTorch model;
    skipped, after the structural checks above it, when the kernels are not built."""
    why = kernels_available()
    if why:
        pytest.skip(f"structure checked; parity needs the kernels: {why}")
    with torch.no_grad():
        expected = model(x).numpy()
    name = new.graph.input[0].name
    assert_close(ort_session(new).run(None, {name: x.numpy()})[0], expected, tol=PLUGIN_TOL, what=what)


def _grid_sample_model(opset: int, mode: str, padding: str = "zeros", align: int = 0, rank: int = 4) -> onnx.ModelProto:
    spatial_in = ["H", "W"] if rank == 4 else [5, 6, 7]
    spatial_out = [4, 5] if rank == 4 else [3, 4, 5]
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, padding_mode=padding, align_corners=align)
    graph = helper.make_graph(
        [node], "gs",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 2, *spatial_in]),
         helper.make_tensor_value_info("grid", FLOAT, ["N", *spatial_out, rank - 2])],
        [_out("y", rank)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _affine_grid_model(size, align_x: int = 0, align_s: int = 0, mode: str = "linear", dynamic_size: bool = False):
    rank = len(size)
    nodes, inits = [], []
    if dynamic_size:
        inputs = [helper.make_tensor_value_info("size", TensorProto.INT64, [rank])]
        size_name = "size"
    else:
        inputs = []
        inits.append(helper.make_tensor("size", TensorProto.INT64, [rank], list(size)))
        size_name = "size"
    nodes.append(helper.make_node("AffineGrid", ["theta", size_name], ["grid"], align_corners=align_x))
    nodes.append(helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, align_corners=align_s))
    t_shape = [size[0], 2, 3] if rank == 4 else [size[0], 3, 4]
    graph = helper.make_graph(
        nodes, "ag",
        [helper.make_tensor_value_info("x", FLOAT, [size[0], size[1], 9, 10] if rank == 4 else [size[0], size[1], 5, 6, 7]),
         helper.make_tensor_value_info("theta", FLOAT, t_shape), *inputs],
        [_out("y", rank)],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _random_feed(model: onnx.ModelProto, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feed = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else 3 for d in vi.type.tensor_type.shape.dim]
        if vi.name == "grid":
            feed[vi.name] = rng.uniform(-1.3, 1.3, dims).astype(np.float32)  # leaves the image too
        elif vi.name == "theta":
            base = np.eye(dims[1], dims[2], dtype=np.float32)
            feed[vi.name] = (base + 0.2 * rng.standard_normal(dims)).astype(np.float32)
        elif vi.name == "size":
            feed[vi.name] = np.array([2, 2, 4, 5], dtype=np.int64)
        else:
            feed[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feed


def _parity(original: onnx.ModelProto, rewritten: onnx.ModelProto) -> None:
    feed = _random_feed(original)
    expected = ort_session(original).run(None, feed)[0]
    actual = ort_session(rewritten).run(None, {k: v for k, v in feed.items() if k in {i.name for i in rewritten.graph.input}})[0]
    assert_close(actual, expected, tol=PLUGIN_TOL, what="rewritten vs original in ONNX Runtime")


def _plugin_nodes(model):
    return [n for n in model.graph.node if n.domain == schema.PLUGIN_DOMAIN]


GRID_SAMPLE_CASES = [
    (16, "bilinear", 4), (16, "nearest", 4), (16, "bicubic", 4),
    (20, "linear", 4), (20, "nearest", 4), (20, "cubic", 4),
    (20, "linear", 5), (20, "nearest", 5),
]


@pytest.mark.parametrize("opset,mode,rank", GRID_SAMPLE_CASES, ids=[f"opset{o}-{m}-{r}d" for o, m, r in GRID_SAMPLE_CASES])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample_becomes_plugin_op(opset, mode, rank, padding):
    original = _grid_sample_model(opset, mode, padding, align=1, rank=rank)
    new = rewrite_model(original)
    (node,) = _plugin_nodes(new)
    assert node.op_type == schema.GRID_SAMPLE_OP
    expected_mode = {"bilinear": 0, "linear": 0, "nearest": 1, "bicubic": 2, "cubic": 2}[mode]
    assert attr_value(node, schema.FIELD_INTERPOLATION_MODE) == expected_mode
    assert attr_value(node, schema.FIELD_PADDING_MODE) == int(schema.padding_from_name(padding))
    assert attr_value(node, schema.FIELD_ALIGN_CORNERS) == 1
    assert attr_value(node, PLUGIN_VERSION_ATTR) == schema.PLUGIN_VERSION
    assert not [n for n in new.graph.node if n.op_type == "GridSample"]


@needs_kernels
@pytest.mark.parametrize("opset,mode,rank", GRID_SAMPLE_CASES, ids=[f"opset{o}-{m}-{r}d" for o, m, r in GRID_SAMPLE_CASES])
def test_grid_sample_rewrite_parity(opset, mode, rank):
    _skip_without_kernels()
    original = _grid_sample_model(opset, mode, "border", align=0, rank=rank)
    _parity(original, rewrite_model(original))


@pytest.mark.parametrize("rank", [4, 5], ids=["2d", "3d"])
def test_affine_grid_pair_is_fused(rank):
    size = [2, 3, 4, 5] if rank == 4 else [2, 3, 2, 3, 4]
    original = _affine_grid_model(size, mode="linear")
    new = rewrite_model(original)
    (node,) = _plugin_nodes(new)
    assert node.op_type == schema.AFFINE_GRID_SAMPLE_OP
    assert list(node.input) == ["x", "theta"]
    assert attr_value(node, schema.FIELD_TRANSFORM) == int(schema.Transform.AFFINE)
    spatial = size[2:]
    assert [attr_value(node, k) for k in (schema.FIELD_OUT_D, schema.FIELD_OUT_H, schema.FIELD_OUT_W)] == \
        ([0] if rank == 4 else []) + spatial
    assert not [n for n in new.graph.node if n.op_type in ("AffineGrid", "GridSample")]
    if kernels_available() is None:
        _parity(original, new)


@pytest.mark.parametrize(
    "case,reason",
    [("align-differs", "align_corners differs"), ("dynamic-size", "not static")],
)
def test_affine_grid_not_fused_is_reported(case, reason):
    if case == "align-differs":
        original = _affine_grid_model([2, 3, 4, 5], align_x=1, align_s=0)
    else:
        original = _affine_grid_model([2, 3, 4, 5], dynamic_size=True)
    from stn_deploy.graph import RewriteReport

    report = RewriteReport("<memory>", None)
    new = rewrite_model(original, report)
    (node,) = _plugin_nodes(new)
    assert node.op_type == schema.GRID_SAMPLE_OP
    assert reason in report.replaced[0].reason
    assert [e.op for e in report.left] == ["AffineGrid"]
    assert "no AffineGrid importer" in report.left[0].reason


def test_grid_made_by_other_ops():
    nodes = [helper.make_node("Tanh", ["g0"], ["grid"]),
             helper.make_node("GridSample", ["x", "grid"], ["y"], mode="linear")]
    graph = helper.make_graph(
        nodes, "other",
        [helper.make_tensor_value_info("x", FLOAT, [2, 1, 8, 8]),
         helper.make_tensor_value_info("g0", FLOAT, [2, 5, 6, 2])],
        [_out("y")],
    )
    from stn_deploy.graph import RewriteReport

    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    report = RewriteReport("<memory>", None)
    new = rewrite_model(original, report)
    assert [n.op_type for n in new.graph.node] == ["Tanh", schema.GRID_SAMPLE_OP]
    assert "Tanh" in report.replaced[0].reason
    if kernels_available() is None:
        _parity(original, new)


def test_lone_affine_grid_is_left_with_reason():
    nodes = [helper.make_node("AffineGrid", ["theta", "size"], ["grid"])]
    graph = helper.make_graph(
        nodes, "lone", [helper.make_tensor_value_info("theta", FLOAT, [2, 2, 3])],
        [_out("grid")],
        initializer=[helper.make_tensor("size", TensorProto.INT64, [4], [2, 1, 4, 4])],
    )
    from stn_deploy.graph import RewriteReport

    report = RewriteReport("<memory>", None)
    rewrite_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), report)
    assert not report.replaced and report.left[0].op == "AffineGrid"


@pytest.mark.parametrize("projective", [False, True], ids=["affine", "projective"])
def test_user_exported_stn_is_fused_and_matches_pytorch(projective, tmp_path):
    torch.manual_seed(0)
    model = UserSTN(projective).eval()
    src = tmp_path / "user.onnx"
    onnx.save(user_export(model), src)
    report = rewrite(RewriteOptions(src, tmp_path / "plugin.onnx"))
    assert [e.replaced_by for e in report.replaced] == [schema.AFFINE_GRID_SAMPLE_OP]
    assert not report.left
    new = onnx.load(report.output)
    (node,) = _plugin_nodes(new)
    want = schema.Transform.PROJECTIVE if projective else schema.Transform.AFFINE
    assert attr_value(node, schema.FIELD_TRANSFORM) == int(want)
    assert [attr_value(node, schema.FIELD_OUT_H), attr_value(node, schema.FIELD_OUT_W)] == ([20, 20] if projective else [24, 24])
    _assert_rewritten_matches_torch(new, model, torch.randn(3, 1, 24, 24), "rewritten user STN vs PyTorch")


def test_cli_rewrite_reports_and_rejects_bad_input(tmp_path):
    src = tmp_path / "gs.onnx"
    onnx.save(_grid_sample_model(20, "linear"), src)
    runner = CliRunner()
    out = tmp_path / "out.onnx"
    res = runner.invoke(main, ["rewrite", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "replaced 1 node(s)" in res.output and load_onnx(out)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])
    for bad in (junk, tmp_path / "missing.onnx"):
        target = tmp_path / "never.onnx"
        res = runner.invoke(main, ["rewrite", str(bad), "-o", str(target)])
        assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
        assert not target.exists()


def test_load_onnx_rejects_non_onnx(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_text("hello, I am not a protobuf")
    with pytest.raises(UserError, match="not an ONNX model"):
        load_onnx(p)


@pytest.mark.slow
def test_user_dynamo_export_decomposed_grid_is_fused(tmp_path):
    """``torch.onnx.export``'s default (dynamo) decomposes F.affine_grid into Mul+ReduceSum;
    rewrite recognises it (align_corners read back from the base grid) and fuses it."""
    model, src = dynamo_export(tmp_path / "dynamo.onnx")
    from stn_deploy.jobs.doctor import decomposed_grid_nodes

    assert decomposed_grid_nodes(onnx.load(src)), "the dynamo export no longer decomposes affine_grid"
    report = rewrite(RewriteOptions(src, tmp_path / "plugin.onnx"))
    assert [e.replaced_by for e in report.replaced] == [schema.AFFINE_GRID_SAMPLE_OP]
    assert "decomposed" in report.replaced[0].reason
    new = onnx.load(report.output)
    assert not [n for n in new.graph.node if n.op_type in ("ReduceSum", "GridSample")]
    _assert_rewritten_matches_torch(new, model, torch.randn(2, 1, 24, 24), "dynamo STN rewritten")


ZOO_WITH_SAMPLERS = [n for n in MODEL_NAMES if n not in ("cnn", "fcn")]


@pytest.mark.parametrize("name", ZOO_WITH_SAMPLERS)
def test_rewrite_of_standard_zoo_export(name, tmp_path):
    """Rewrite recovers the plugin ops from each standard export: fused for matrix generators
    (projective: 2 AffineGrid + Div -> transform=1), STNGridSample for TPS; nothing left."""
    config = ModelConfig(name)
    model = perturb_transformers(build_model(config))
    src = export_module(model, config.input_shape, tmp_path / "std.onnx").path
    report = rewrite(RewriteOptions(Path(src), tmp_path / "plugin.onnx"))
    assert not report.left
    kinds = [st.generator.kind for _, st in transformers(model)]
    want = [schema.GRID_SAMPLE_OP if k == "tps" else schema.AFFINE_GRID_SAMPLE_OP for k in kinds]
    assert [e.replaced_by for e in report.replaced] == want
    new = onnx.load(report.output)
    for node, kind in zip(_plugin_nodes(new), kinds):
        if kind != "tps":
            want_t = schema.Transform.PROJECTIVE if kind == "projective" else schema.Transform.AFFINE
            assert attr_value(node, schema.FIELD_TRANSFORM) == int(want_t)
    _assert_rewritten_matches_torch(new, model, torch.randn(3, *config.input_shape), name)


@pytest.mark.parametrize("case", ["unknown-mode", "uint8-input"])
def test_grid_sample_left_with_reason(case):
    from stn_deploy.graph import RewriteReport

    dtype = TensorProto.UINT8 if case == "uint8-input" else FLOAT
    mode = "foo" if case == "unknown-mode" else "linear"
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs", mode=mode)
    graph = helper.make_graph(
        [node], "left",
        [helper.make_tensor_value_info("x", dtype, [1, 1, 4, 4]), helper.make_tensor_value_info("grid", FLOAT, [1, 2, 2, 2])],
        [helper.make_tensor_value_info("y", dtype, [1, 1, 2, 2])],
    )
    report = RewriteReport("<memory>", None)
    new = rewrite_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), report)
    assert not report.replaced and [e.node for e in report.left] == ["gs"]
    assert ("foo" if case == "unknown-mode" else "uint8") in report.left[0].reason
    assert [n.op_type for n in new.graph.node] == ["GridSample"]


class _NotProjectiveSTN(UserSTN):
    """Looks like the projective pattern but samples xy from rows 1:3: must not be fused."""

    def __init__(self):
        super().__init__(projective=True)

    def forward(self, x):
        theta = self.fc(self.loc(x)).view(-1, 3, 3)
        size = [x.shape[0], x.shape[1], 20, 20]
        xy = F.affine_grid(theta[:, 1:3, :], size, align_corners=False)
        w = F.affine_grid(torch.cat([theta[:, 2:3, :], theta[:, 2:3, :]], dim=1), size, align_corners=False)
        return F.grid_sample(x, xy / w[..., :1], align_corners=False)


def test_projective_lookalike_is_not_fused(tmp_path):
    src = tmp_path / "lookalike.onnx"
    torch.manual_seed(0)
    model = _NotProjectiveSTN().eval()
    onnx.save(user_export(model), src)
    report = rewrite(RewriteOptions(src, tmp_path / "out.onnx"))
    # Not fused: the sampler becomes STNGridSample and both AffineGrids standard ops TensorRT imports.
    assert [e.replaced_by for e in report.replaced][0] == schema.GRID_SAMPLE_OP
    assert [e.op for e in report.replaced[1:]] == ["AffineGrid", "AffineGrid"] and not report.left
    new = onnx.load(report.output)
    assert "AffineGrid" not in {n.op_type for n in new.graph.node}
    _assert_rewritten_matches_torch(new, model, torch.randn(2, 1, 24, 24), "lookalike rewritten")


# --------------------------------------------------------------------------- always buildable


def _affine_grid_through(chain: list[str], batch_theta: int = 1, x_batch="N") -> onnx.ModelProto:
    """AffineGrid(theta [batch_theta, 2, 3], [batch_theta, 1, 4, 5]) -> ``chain`` -> GridSample(x):
    the ops a library puts between the two (kornia's warp_affine: an Expand to the image batch)."""
    nodes = [helper.make_node("AffineGrid", ["theta", "size"], ["g0"], name="ag", align_corners=1)]
    inits = [helper.make_tensor("size", TensorProto.INT64, [4], [batch_theta, 1, 4, 5])]
    t = "g0"
    for i, op in enumerate(chain):
        out = f"g{i + 1}"
        if op == "Expand":  # to x's batch: shape [N, 4, 5, 2] from Shape(x)
            nodes += [helper.make_node("Shape", ["x"], ["xs"], start=0, end=1),
                      helper.make_node("Concat", ["xs", "tail"], ["eshape"], axis=0),
                      helper.make_node("Expand", [t, "eshape"], [out], name="expand")]
            inits.append(helper.make_tensor("tail", TensorProto.INT64, [3], [4, 5, 2]))
        elif op == "Reshape":
            nodes.append(helper.make_node("Reshape", [t, "same"], [out], name="reshape"))
            inits.append(helper.make_tensor("same", TensorProto.INT64, [4], [0, 4, 5, 2]))
        elif op == "Cast":
            nodes.append(helper.make_node("Cast", [t], [out], to=TensorProto.FLOAT, name="cast"))
        else:
            nodes.append(helper.make_node(op, [t], [out], name=op.lower()))
        t = out
    nodes.append(helper.make_node("GridSample", ["x", t], ["y"], name="gs", mode="linear", align_corners=1))
    graph = helper.make_graph(
        nodes, "through",
        [helper.make_tensor_value_info("x", FLOAT, [x_batch, 2, 7, 8]),
         helper.make_tensor_value_info("theta", FLOAT, [batch_theta, 2, 3])],
        [_out("y")], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("chain", [["Expand"], ["Identity", "Cast", "Reshape"], ["Reshape", "Expand", "Identity"]],
                         ids=lambda c: "-".join(c))
def test_affine_grid_fused_through_pass_through_nodes(chain):
    """kornia's warp_affine expands the AffineGrid's grid to the image batch before sampling:
    the pair still fuses (theta broadcast the same way), and nothing else is left."""
    from stn_deploy.graph import RewriteReport

    original = _affine_grid_through(chain)
    report = RewriteReport("<memory>", None)
    new = rewrite_model(original, report)
    (node,) = _plugin_nodes(new)
    assert node.op_type == schema.AFFINE_GRID_SAMPLE_OP and not report.left
    assert "through" in report.replaced[0].reason and chain[-1] in report.replaced[0].reason
    assert [attr_value(node, k) for k in (schema.FIELD_OUT_H, schema.FIELD_OUT_W)] == [4, 5]
    assert not {"AffineGrid", "GridSample"} & {n.op_type for n in new.graph.node}
    _skip_without_kernels()
    batch = 3 if "Expand" in chain else 1  # one theta for the whole batch, as kornia allows
    feed = {"x": np.random.default_rng(1).standard_normal((batch, 2, 7, 8)).astype(np.float32),
            "theta": (np.eye(2, 3) + 0.2 * np.random.default_rng(2).standard_normal((1, 2, 3))).astype(np.float32)}
    expected = ort_session(original).run(None, feed)[0]
    assert_close(ort_session(new).run(None, feed)[0], expected, tol=PLUGIN_TOL, what="fused through " + "-".join(chain))


def test_grid_changed_on_the_way_is_not_fused_but_lowered(tmp_path):
    """A Pad between AffineGrid and GridSample changes the grid: no fusion; the job lowers
    the AffineGrid to standard ops so the result still builds."""
    original = _affine_grid_through([])
    g = original.graph
    gs_node = g.node[-1]
    g.node.insert(len(g.node) - 1, helper.make_node("Expand", ["g0", "wide"], ["gw"], name="widen"))
    g.initializer.append(helper.make_tensor("wide", TensorProto.INT64, [4], [1, 4, 5, 2]))
    g.initializer.append(helper.make_tensor("pad", TensorProto.INT64, [8], [0, 0, 0, 0, 0, 1, 0, 0]))
    g.node.insert(len(g.node) - 1, helper.make_node("Pad", ["gw", "pad"], ["gp"], name="pad"))
    gs_node.input[1] = "gp"
    src = tmp_path / "pad.onnx"
    onnx.save(original, src)
    report = rewrite(RewriteOptions(src, tmp_path / "out.onnx"))
    assert [e.replaced_by for e in report.replaced][0] == schema.GRID_SAMPLE_OP
    lowered = [e for e in report.replaced if e.op == "AffineGrid"]
    assert len(lowered) == 1 and "lowered to standard ops" in lowered[0].reason and not report.left
    new = onnx.load(report.output)
    assert "AffineGrid" not in {n.op_type for n in new.graph.node}
    _skip_without_kernels()
    feed = {"x": np.random.default_rng(1).standard_normal((1, 2, 7, 8)).astype(np.float32),
            "theta": (np.eye(2, 3) + 0.2 * np.random.default_rng(2).standard_normal((1, 2, 3))).astype(np.float32)}
    expected = ort_session(original).run(None, feed)[0]
    assert_close(ort_session(new).run(None, feed)[0], expected, tol=PLUGIN_TOL, what="lowered AffineGrid")


@pytest.mark.parametrize("flag", ["--fuse", "--no-fuse"])
def test_cli_rewrite_leaves_no_affine_grid(flag, tmp_path):
    """With or without fusion the written graph passes doctor for the build target: an AffineGrid
    that is not fused is lowered in the same rewrite, and the report says so."""
    from stn_deploy.jobs.doctor import doctor

    src = tmp_path / "ag.onnx"
    onnx.save(_affine_grid_model([2, 3, 4, 5], align_x=1, align_s=0 if flag == "--fuse" else 1), src)
    out = tmp_path / "out.onnx"
    res = CliRunner().invoke(main, ["rewrite", str(src), "-o", str(out), flag, "--target", "trt10"])
    assert res.exit_code == 0, res.output
    assert "lowered to standard ops" in res.output and "doctor for trt10: no errors" in res.output
    assert doctor(out, "trt10").ok and doctor(out, "rtx").ok
    assert "AffineGrid" not in {n.op_type for n in onnx.load(str(out)).graph.node}


def test_cli_rewrite_refuses_what_the_target_rejects(tmp_path):
    """A 5-D GridSample has no native form TensorRT 10 imports: ``rewrite --to native --target
    trt10`` writes nothing and says what to do instead (never 'rewrite' again); the plugin form
    of the same graph is fine for trt10, and the native one for rtx."""
    from helpers_cli import assert_one_line_error

    src = tmp_path / "g5.onnx"
    onnx.save(_grid_sample_model(20, "linear", rank=5), src)
    out = tmp_path / "out.onnx"
    res = CliRunner().invoke(main, ["rewrite", str(src), "-o", str(out), "--to", "native", "--target", "trt10"])
    assert_one_line_error(res, 1, "trt-gridsample-5d", "nothing written", "--to plugin")
    assert "stn-deploy rewrite" not in res.stderr and not out.exists()
    for args in (["--target", "trt10"], ["--to", "native", "--target", "rtx"]):
        res = CliRunner().invoke(main, ["rewrite", str(src), "-o", str(out), *args])
        assert res.exit_code == 0, res.output
        out.unlink()


def test_rewrite_default_target_is_what_build_uses(tmp_path):
    from stn_deploy.jobs.doctor import default_target

    src = tmp_path / "gs.onnx"
    onnx.save(_grid_sample_model(20, "linear"), src)
    report = rewrite(RewriteOptions(src, tmp_path / "out.onnx"))
    assert report.target == default_target()
