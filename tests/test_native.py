"""stn_deploy.native: the no-plugin flavour (export --ops native, rewrite --to native).

Parity in ONNX Runtime against PyTorch at batch and H/W other than the export's; the
structure TensorRT needs (no AffineGrid, no plugin op, opset-16 mode names); real
TensorRT-RTX parses + CPU builds in one child process.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from onnx import TensorProto, helper

from helpers_export import PLUGIN_TOL, assert_close, perturb_transformers
from helpers_trt import affine_grid_graph, grid_sample_graph
from stn_deploy import schema
from stn_deploy.cli import main
from stn_deploy.jobs.export import export_module, transformers
from stn_deploy.models import MODEL_NAMES, ModelConfig, build_model
from stn_deploy.native import NATIVE_OPSET, native_problems, to_native

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="needs tensorrt_rtx (pip install 'stn-deploy[rtx]')")
FLOAT = TensorProto.FLOAT


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _assert_native(model: onnx.ModelProto) -> None:
    ops = {n.op_type for n in model.graph.node}
    assert "AffineGrid" not in ops and not any(n.domain == schema.PLUGIN_DOMAIN for n in model.graph.node)
    for n in model.graph.node:
        if n.op_type == "GridSample":
            mode = next((a.s.decode() for a in n.attribute if a.name == "mode"), None)
            assert mode in ("bilinear", "nearest", "bicubic"), f"{n.name}: mode {mode!r}"
    assert native_problems(model) == []


# --------------------------------------------------------------------------- zoo export


@pytest.fixture(scope="module")
def zoo_native(tmp_path_factory):
    """Native export of every zoo model (perturbed so every transformer really warps)."""
    d = tmp_path_factory.mktemp("native-zoo")
    out = {}
    for i, name in enumerate(MODEL_NAMES):
        torch.manual_seed(i)
        model = perturb_transformers(build_model(ModelConfig(name)), seed=i, scale=0.1)
        path = d / f"{name}.onnx"
        export_module(model, (1, 28, 28), path, ops="native")
        out[name] = (model, path)
    return out


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_native_export_matches_torch_at_another_batch(zoo_native, name, one_torch_thread):
    model, path = zoo_native[name]
    proto = onnx.load(str(path))
    _assert_native(proto)
    assert [i.version for i in proto.opset_import if i.domain in ("", "ai.onnx")] == [NATIVE_OPSET]
    n_samplers = len(transformers(model))
    assert sum(n.op_type == "GridSample" for n in proto.graph.node) == n_samplers
    if n_samplers and name.split("-")[-1] in ("affine", "attention", "projective", "multi", "stn"):
        assert "MatMul" in {n.op_type for n in proto.graph.node} and "Range" in {n.op_type for n in proto.graph.node}
    x = torch.rand(5, 1, 28, 28)  # the export traced batch 2
    with torch.no_grad():
        expected = model(x).numpy()
    assert_close(_session(proto).run(None, {"input": x.numpy()})[0], expected, what=f"{name} native in ORT")


@pytest.mark.parametrize("name, in_size, out_size", [
    ("st-cnn-affine", (42, 42), (30, 26)),
    ("st-fcn-projective", (33, 21), None),
    ("st-cnn-attention", (60, 60), (24, 24)),
])
def test_native_export_at_other_sizes(tmp_path, name, in_size, out_size, one_torch_thread):
    """The grid follows the model's sizes (nothing is baked for 28x28)."""
    model = perturb_transformers(build_model(ModelConfig(name, in_size=in_size, out_size=out_size)), scale=0.1)
    export_module(model, (1, *in_size), tmp_path / "m.onnx", ops="native")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    _assert_native(proto)
    x = torch.rand(3, 1, *in_size)
    with torch.no_grad():
        expected = model(x).numpy()
    assert_close(_session(proto).run(None, {"input": x.numpy()})[0], expected, what=f"{name} {in_size}")


# --------------------------------------------------------------------------- graphs with dynamic sizes


def _affine_grid_graph(rank: int, align: int, mode: str, projective: bool = False) -> onnx.ModelProto:
    """x [N, C, *spatial] (dynamic), theta, and the output size as a graph input: the grid
    size is known only at run time."""
    spatial_in = ["H", "W"] if rank == 4 else ["D", "H", "W"]
    t_shape = ["N", 3, 3] if projective else (["N", 2, 3] if rank == 4 else ["N", 3, 4])
    nodes = []
    if projective:  # what models.ProjectiveGenerator exports: two AffineGrids and a Div
        c = lambda n, v: helper.make_node("Constant", [], [n], value=helper.make_tensor(n, TensorProto.INT64, [len(v)], v))  # noqa: E731
        nodes += [c("s0", [0]), c("s2", [2]), c("s3", [3]), c("ax", [1]), c("l0", [0]), c("l1", [1]), c("lax", [-1]),
                  helper.make_node("Slice", ["theta", "s0", "s2", "ax"], ["t01"]),
                  helper.make_node("Slice", ["theta", "s2", "s3", "ax"], ["t2"]),
                  helper.make_node("Concat", ["t2", "t2"], ["t22"], axis=1),
                  helper.make_node("AffineGrid", ["t01", "size"], ["xy"], align_corners=align),
                  helper.make_node("AffineGrid", ["t22", "size"], ["ww"], align_corners=align),
                  helper.make_node("Slice", ["ww", "l0", "l1", "lax"], ["w"]),
                  helper.make_node("Div", ["xy", "w"], ["grid"])]
    else:
        nodes.append(helper.make_node("AffineGrid", ["theta", "size"], ["grid"], name="ag", align_corners=align))
    nodes.append(helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs", mode=mode, align_corners=align))
    graph = helper.make_graph(
        nodes, "ag",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 2, *spatial_in]),
         helper.make_tensor_value_info("theta", FLOAT, t_shape),
         helper.make_tensor_value_info("size", TensorProto.INT64, [rank])],
        [helper.make_tensor_value_info("y", FLOAT, [f"y{i}" for i in range(rank)])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _torch_affine(x, theta, size, align, mode, projective):
    from stn_deploy.models.generators import projective_grid

    x, theta = torch.from_numpy(x), torch.from_numpy(theta)
    with warnings.catch_warnings():  # H = 1 with align_corners=True: on purpose
        warnings.filterwarnings("ignore", "Since version 1.3.0, affine_grid")
        grid = projective_grid(theta, size, bool(align)) if projective else F.affine_grid(theta, size, align_corners=bool(align))
    return F.grid_sample(x, grid, mode=mode, align_corners=bool(align)).numpy()


@pytest.mark.parametrize("rank, align, mode, projective", [
    (4, 0, "linear", False), (4, 1, "cubic", False), (4, 0, "nearest", True), (4, 1, "linear", True),
    (5, 0, "linear", False), (5, 1, "nearest", False),
], ids=lambda v: str(v))
def test_to_native_grid_is_dynamic(rank, align, mode, projective):
    """One native graph, run at several batches and output sizes, against PyTorch."""
    native = to_native(_affine_grid_graph(rank, align, mode, projective))
    assert "AffineGrid" not in {n.op_type for n in native.graph.node}
    # One MatMul per grid: a projective grid's two AffineGrids are fused (theta [N,3,3]).
    assert sum(n.op_type == "MatMul" for n in native.graph.node) == 1
    opset = next(i.version for i in native.opset_import if i.domain in ("", "ai.onnx"))
    gs = next(n for n in native.graph.node if n.op_type == "GridSample")
    new_mode = next(a.s.decode() for a in gs.attribute if a.name == "mode")
    if rank == 4:  # opset-16 names; a 5-D GridSample exists from opset 20 only
        assert opset == NATIVE_OPSET and new_mode == {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode)
    else:
        assert opset == 20 and new_mode == mode
    sess = _session(native)
    rng = np.random.default_rng(rank + align)
    torch_mode = {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode)
    sizes = [(1, 2, 7, 9), (3, 2, 16, 5), (2, 2, 1, 4)] if rank == 4 else [(1, 2, 3, 4, 5), (2, 2, 6, 2, 7)]
    for size in sizes:
        n = size[0]
        x = rng.standard_normal((n, 2, *[s + 3 for s in size[2:]])).astype(np.float32)
        shape = (3, 3) if projective else ((2, 3) if rank == 4 else (3, 4))
        theta = (np.eye(*shape) + 0.2 * rng.standard_normal((n, *shape))).astype(np.float32)
        if projective:
            theta[:, 2, :2] *= 0.3
            theta[:, 2, 2] = 1.0
        got = sess.run(None, {"x": x, "theta": theta, "size": np.array(size, dtype=np.int64)})[0]
        assert_close(got, _torch_affine(x, theta, list(size), align, torch_mode, projective), what=f"size {size}")


def test_to_native_mixed_plugin_and_affine_grid():
    """A projective plugin op followed by an AffineGrid + GridSample in one graph."""
    fields = {schema.FIELD_INTERPOLATION_MODE: 0, schema.FIELD_PADDING_MODE: 1, schema.FIELD_ALIGN_CORNERS: 0,
              schema.FIELD_TRANSFORM: 1, schema.FIELD_OUT_D: 0, schema.FIELD_OUT_H: 6, schema.FIELD_OUT_W: 7}
    nodes = [
        helper.make_node(schema.AFFINE_GRID_SAMPLE_OP, ["x", "h"], ["x2"], name="plugin", domain=schema.PLUGIN_DOMAIN,
                         plugin_version=schema.PLUGIN_VERSION, **fields),
        helper.make_node("AffineGrid", ["theta", "size"], ["grid"], name="ag", align_corners=1),
        helper.make_node("GridSample", ["x2", "grid"], ["y"], name="gs", mode="linear", align_corners=1),
    ]
    graph = helper.make_graph(
        nodes, "mixed",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 2, 9, 8]), helper.make_tensor_value_info("h", FLOAT, ["N", 3, 3]),
         helper.make_tensor_value_info("theta", FLOAT, ["N", 2, 3])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 2, 5, 4])],
        initializer=[helper.make_tensor("size", TensorProto.INT64, [4], [2, 2, 5, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(schema.PLUGIN_DOMAIN, 1)])
    native = to_native(model)
    _assert_native(native)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 9, 8)).astype(np.float32)
    h = (np.eye(3) + 0.1 * rng.standard_normal((2, 3, 3))).astype(np.float32)
    h[:, 2, 2] = 1.0
    theta = (np.eye(2, 3) + 0.2 * rng.standard_normal((2, 2, 3))).astype(np.float32)
    from stn_deploy.models.generators import projective_grid

    x2 = F.grid_sample(torch.from_numpy(x), projective_grid(torch.from_numpy(h), [2, 2, 6, 7], False),
                       padding_mode="border", align_corners=False)
    expected = F.grid_sample(x2, F.affine_grid(torch.from_numpy(theta), [2, 2, 5, 4], align_corners=True),
                             align_corners=True).numpy()
    assert_close(_session(native).run(None, {"x": x, "h": h, "theta": theta})[0], expected, what="mixed graph")


def _mixed_opset20_graph(reduce_axes_input: bool = False) -> onnx.ModelProto:
    """GridSample beside ops whose newest version is past 17, as the corpus's real exports have
    them: Resize (19), ReduceMax with axes as an input (18), ScatterND (18), Gelu (20, both
    approximations), Pad (18/19, constant mode), ConstantOfShape (20)."""
    i64 = TensorProto.INT64
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["xr"], name="resize", mode="linear"),
        helper.make_node("GridSample", ["xr", "grid"], ["y"], name="gs", mode="linear", align_corners=0),
        helper.make_node("ReduceMax", ["y", "axes"], ["m"], name="reduce_max", keepdims=0),
        helper.make_node("ScatterND", ["m", "idx", "upd"], ["ms"], name="scatter"),
        helper.make_node("Gelu", ["ms"], ["g1"], name="gelu"),
        helper.make_node("Gelu", ["g1"], ["g2"], name="gelu_tanh", approximate="tanh"),
        helper.make_node("Pad", ["g2", "pads"], ["gp"], name="pad", mode="constant"),
        helper.make_node("ConstantOfShape", ["cshape"], ["zeros"], name="zeros", value=helper.make_tensor("v", FLOAT, [1], [0.5])),
        helper.make_node("Add", ["gp", "zeros"], ["out"], name="add"),
    ]
    inits = [helper.make_tensor("scales", FLOAT, [4], [1, 1, 2, 2]),
             helper.make_tensor("idx", i64, [1, 1], [0]),
             helper.make_tensor("upd", FLOAT, [1, 6, 6], np.linspace(-1, 1, 36).tolist()),
             helper.make_tensor("pads", i64, [6], [0, 1, 0, 0, 1, 0]),
             helper.make_tensor("cshape", i64, [3], [2, 8, 6])]
    inputs = [helper.make_tensor_value_info("x", FLOAT, [2, 2, 4, 4]), helper.make_tensor_value_info("grid", FLOAT, [2, 6, 6, 2])]
    if reduce_axes_input:  # axes known only at run time: ReduceMax-13 cannot say that
        inputs.append(helper.make_tensor_value_info("axes", i64, [1]))
    else:
        inits.append(helper.make_tensor("axes", i64, [1], [1]))
    graph = helper.make_graph(nodes, "mixed", inputs, [helper.make_tensor_value_info("out", FLOAT, [2, 8, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_to_native_converts_newer_ops_to_opset_17():
    """Every node with an opset-17 form goes there (the version converter, our Gelu expansion,
    nodes that only gained types kept), and the result matches the opset-20 graph in ORT."""
    from stn_deploy.native import NativeReport

    model = _mixed_opset20_graph()
    report = NativeReport("<t>", None)
    native = to_native(model, report)
    assert (report.opset_in, report.opset_out) == (20, NATIVE_OPSET) and not report.left
    assert next(i.version for i in native.opset_import if i.domain == "") == NATIVE_OPSET
    _assert_native(native)
    ops = {n.op_type for n in native.graph.node}
    assert "Gelu" not in ops and {"Erf", "Tanh"} <= ops
    converted = {c.node for c in report.replaced if "version converter" in c.note}
    assert {"resize", "reduce_max", "scatter"} <= converted
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((2, 2, 4, 4)).astype(np.float32),
            "grid": rng.uniform(-1.3, 1.3, (2, 6, 6, 2)).astype(np.float32)}
    assert_close(_session(native).run(None, feed)[0], _session(model).run(None, feed)[0], what="opset 17 vs 20")


def test_to_native_reports_each_node_without_an_opset_17_form():
    """ReduceMax with its axes a run-time input has no opset-17 form: opset 20 is kept, the node
    and the converter's reason are reported, and GridSample keeps the opset-20 names."""
    from stn_deploy.native import NativeReport

    report = NativeReport("<t>", None)
    native = to_native(_mixed_opset20_graph(reduce_axes_input=True), report)
    assert report.opset_out == 20
    (node,) = [c for c in report.left if c.node != "<graph>"]
    assert node.node == "reduce_max" and node.op == "ReduceMax" and f"no opset-{NATIVE_OPSET} form" in node.note
    assert any(c.node == "<graph>" and "kept opset 20" in c.note for c in report.left)
    gs = next(n for n in native.graph.node if n.op_type == "GridSample")
    assert next(a.s.decode() for a in gs.attribute if a.name == "mode") == "linear"


def test_python_api_rewrites_to_native(tmp_path):
    """``stn_deploy.rewrite`` with ``RewriteOptions(to="native")``: the native form, checked for
    the target."""
    import stn_deploy as sd

    src = tmp_path / "mixed.onnx"
    onnx.save(_mixed_opset20_graph(), src)
    report = sd.rewrite(sd.RewriteOptions(src, tmp_path / "native.onnx", to="native", target="trt10"))
    assert report.opset_out == NATIVE_OPSET and report.target == "trt10" and report.output
    _assert_native(onnx.load(str(tmp_path / "native.onnx")))
    with pytest.raises(sd.UserError, match="unknown rewrite form"):
        sd.rewrite(sd.RewriteOptions(src, tmp_path / "x.onnx", to="tensorrt"))


# --------------------------------------------------------------------------- rewrite --to native


def test_rewrite_to_native_third_party_fixtures(tmp_path):
    """The opset-20 AffineGrid + GridSample graph (which no TensorRT imports) and an opset-20
    GridSample, through the CLI; ORT parity with the originals."""
    runner = CliRunner()
    rng = np.random.default_rng(0)
    for make, feed in [
        (affine_grid_graph, {"x": rng.standard_normal((1, 1, 8, 8)).astype(np.float32),
                             "theta": (np.eye(2, 3) + 0.2 * rng.standard_normal((1, 2, 3))).astype(np.float32)}),
        (grid_sample_graph, {"x": rng.standard_normal((2, 1, 8, 8)).astype(np.float32),
                             "grid": rng.uniform(-1.3, 1.3, (2, 8, 8, 2)).astype(np.float32)}),
    ]:
        src = make(tmp_path / f"{make.__name__}.onnx")
        dst = tmp_path / f"{make.__name__}.native.onnx"
        res = runner.invoke(main, ["rewrite", str(src), "-o", str(dst), "--to", "native"])
        assert res.exit_code == 0, res.output
        assert f"opset 20 -> {NATIVE_OPSET}" in res.output
        native = onnx.load(str(dst))
        _assert_native(native)
        expected = _session(onnx.load(str(src))).run(None, feed)[0]
        assert_close(_session(native).run(None, feed)[0], expected, what=make.__name__)


def test_rewrite_to_native_plugin_graph(tmp_path, one_torch_thread):
    """Our plugin ops back to standard ones (no kernels needed: ORT runs the result)."""
    torch.manual_seed(3)
    model = perturb_transformers(build_model(ModelConfig("st-cnn-multi")), scale=0.1)
    export_module(model, (1, 28, 28), tmp_path / "p.onnx", ops="plugin")
    res = CliRunner().invoke(main, ["rewrite", str(tmp_path / "p.onnx"), "-o", str(tmp_path / "n.onnx"),
                                    "--to", "native", "--json"])
    assert res.exit_code == 0, res.output
    native = onnx.load(str(tmp_path / "n.onnx"))
    _assert_native(native)
    assert all(i.domain != schema.PLUGIN_DOMAIN for i in native.opset_import)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        expected = model(x).numpy()
    assert_close(_session(native).run(None, {"input": x.numpy()})[0], expected, what="plugin -> native")


@pytest.mark.parametrize("projective", [False, True], ids=["affine", "projective"])
def test_rewrite_to_native_user_exported_stn(tmp_path, projective):
    """A user's own legacy torch.onnx.export of an STN (test_graph's fixture), batch 3 where
    the export traced 2."""
    from helpers_export import UserSTN, user_export

    torch.manual_seed(0)
    model = UserSTN(projective).eval()
    original = user_export(model)
    native = to_native(original)
    _assert_native(native)
    x = {"img": torch.randn(3, 1, 24, 24).numpy()}
    with torch.no_grad():
        expected = model(torch.from_numpy(x["img"])).numpy()
    got = _session(native).run(None, x)[0]
    # The AffineGrid graph itself is 1.1-1.35e-5 from PyTorch in ORT on this fixture (ORT's
    # GridSample on unbounded randn images), hence the plugin tests' bound here.
    assert_close(got, _session(original).run(None, x)[0], tol=PLUGIN_TOL, what="native vs AffineGrid in ORT")
    assert_close(got, expected, tol=PLUGIN_TOL, what="user STN, native vs PyTorch")


@pytest.mark.slow
def test_rewrite_to_native_dynamo_decomposed_grid(tmp_path):
    """The dynamo exporter's Mul+ReduceSum grid (200x slower in ORT) becomes the MatMul grid."""
    from helpers_export import dynamo_export

    model, src = dynamo_export(tmp_path / "dynamo.onnx")
    from stn_deploy.jobs.doctor import decomposed_grid_nodes
    from stn_deploy.rewriter import RewriteOptions, rewrite

    assert decomposed_grid_nodes(onnx.load(src)), "the dynamo export no longer decomposes affine_grid"
    report = rewrite(RewriteOptions(Path(src), tmp_path / "native.onnx", to="native"))
    assert any("decomposed" in c.note for c in report.replaced)
    native = onnx.load(str(tmp_path / "native.onnx"))
    _assert_native(native)
    assert not decomposed_grid_nodes(native) and "ReduceSum" not in {n.op_type for n in native.graph.node}
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        expected = model(x).numpy()
    assert_close(_session(native).run(None, {"img": x.numpy()})[0], expected, what="dynamo STN, native")


@pytest.mark.parametrize("content, words", [(b"not onnx at all", "not an ONNX model"), (None, "same file as input")])
def test_rewrite_to_native_bad_input_is_one_line(tmp_path, content, words):
    src = tmp_path / "in.onnx"
    if content is None:
        grid_sample_graph(src)
    else:
        src.write_bytes(content)
    out = src if content is None else tmp_path / "out.onnx"
    res = CliRunner().invoke(main, ["rewrite", str(src), "-o", str(out), "--to", "native"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], res.output


# --------------------------------------------------------------------------- TensorRT-RTX


def _five_d_graph(path: Path) -> Path:
    g = helper.make_graph([helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs5", mode="linear")], "g5",
                          [helper.make_tensor_value_info("x", FLOAT, ["N", 1, 4, 5, 6]),
                           helper.make_tensor_value_info("grid", FLOAT, ["N", 3, 4, 5, 3])],
                          [helper.make_tensor_value_info("y", FLOAT, ["N", 1, 3, 4, 5])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path


@pytest.fixture(scope="module")
def rtx_builds(zoo_native, tmp_path_factory):
    """Every zoo model's native export, the rewritten AffineGrid fixture and a 5-D
    GridSample, built with TensorRT-RTX on the CPU in one child process."""
    if not HAS_RTX:
        pytest.skip("needs tensorrt_rtx")
    from stn_deploy import trt
    from stn_deploy.rewriter import RewriteOptions, rewrite

    d = tmp_path_factory.mktemp("native-rtx")
    ag = affine_grid_graph(d / "ag.onnx")
    rewrite(RewriteOptions(ag, d / "ag.native.onnx", to="native", target="rtx"))
    cases = {name: trt.BuildOptions(path, d / f"{name}.engine", flavour="rtx") for name, (_, path) in zoo_native.items()}
    cases["third-party-affine-grid"] = trt.BuildOptions(d / "ag.native.onnx", d / "ag.engine", flavour="rtx")
    cases["gridsample-5d"] = trt.BuildOptions(_five_d_graph(d / "g5.onnx"), d / "g5.engine", flavour="rtx", doctor=False)
    return dict(zip(cases, trt.build_many(list(cases.values()))))


@needs_rtx
@pytest.mark.parametrize("name", [*MODEL_NAMES, "third-party-affine-grid"])
def test_native_builds_with_rtx_without_plugin(rtx_builds, name):
    outcome = rtx_builds[name]
    assert outcome.ok, outcome.error
    layers = outcome.result.sidecar["network"]["layers"]
    assert outcome.result.sidecar["plugin_library"] is None
    assert not [layer for layer in layers if layer["type"].startswith("PLUGIN")]
    samplers = [layer["grid_sample"] for layer in layers if layer["type"] == "GRID_SAMPLE"]
    # Bilinear stays bilinear (the opset-20 names become nearest in some TensorRT 10 parsers).
    assert all(s["interpolation"] == "LINEAR" for s in samplers)
    assert bool(samplers) == (name not in ("cnn", "fcn"))


@needs_rtx
def test_rtx_builds_5d_gridsample(rtx_builds):
    """What TensorRT-RTX 1.7 does with a 5-D GridSample: it parses and builds it (doctor warns
    that the GPU results are unverified). If a new RTX rejects it, doctor's rule must change."""
    outcome = rtx_builds["gridsample-5d"]
    assert outcome.ok, outcome.error
    (layer,) = outcome.result.sidecar["network"]["layers"]
    assert layer["type"] == "GRID_SAMPLE" and layer["grid_sample"]["interpolation"] == "LINEAR"


def test_doctor_native_5d_per_target(tmp_path):
    from stn_deploy.jobs.doctor import doctor

    path = _five_d_graph(tmp_path / "g5.onnx")
    severity = {t: [f.severity for f in doctor(path, t).findings if f.rule == "trt-gridsample-5d"] for t in
                ("trt10", "trt11", "rtx", "ort")}
    assert severity == {"trt10": ["error"], "trt11": ["warning"], "rtx": ["warning"], "ort": []}


@needs_rtx
def test_compare_ops_builds_both_engines(tmp_path):
    """``bench``'s plugin-vs-native comparison on the CPU: build seconds and engine bytes."""
    from helpers_export import kernels_available, perturbed_checkpoint
    from stn_deploy.jobs.bench.ops import compare_ops

    why = kernels_available()
    if why:
        pytest.skip(why)
    ckpt = perturbed_checkpoint(tmp_path / "m.pt", "st-cnn-projective", seed=2)
    res = compare_ops(ckpt, tmp_path / "work", flavour="rtx")
    assert res.flavour == "rtx" and not res.gpu
    assert "PLUGIN_V3" in res.plugin["layers"] and "PLUGIN_V3" not in res.native["layers"]
    assert res.native["layers"].count("GRID_SAMPLE") == 1 and "GRID_SAMPLE" not in res.plugin["layers"]
    for side in (res.plugin, res.native):
        assert side["build_seconds"] > 0 and side["engine_bytes"] == Path(side["engine"]).stat().st_size
        assert "latency_ms" not in side  # needs a GPU
