"""The user's own model (a ``torch.export`` ``.pt2``) and models with any inputs: ``user_model``
and the export / run / validate / bench commands on them, end to end through the CLI."""

from __future__ import annotations

import importlib
import inspect
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers_cli import assert_one_line_error, invoke
from helpers_export import kernels_available
from stn_deploy import user_model as um
from stn_deploy.errors import UserError
from stn_deploy.tolerances import TOLERANCES


class ResidualThetaSTN(nn.Module):
    """A user-written two-input STN (not from the zoo): a localisation net predicts theta from
    the image, the caller's theta [N, 2, 3] is added to it, then F.affine_grid + F.grid_sample."""

    def __init__(self, padding_mode: str = "border") -> None:
        super().__init__()
        self.padding_mode = padding_mode
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 6)
        nn.init.normal_(self.head.weight, std=0.05)
        with torch.no_grad():
            self.head.bias.zero_()

    def forward(self, image, theta):
        theta = theta + self.head(self.features(image)).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        return F.grid_sample(image, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)


def _examples(batch: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"image": torch.randn(batch, 3, 24, 20, generator=gen),
            "theta": torch.eye(2, 3).expand(batch, 2, 3) + 0.1 * torch.randn(batch, 2, 3, generator=gen)}


def _save(tmp, name: str, padding_mode: str = "border"):
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=256)
    return um.save_program(ResidualThetaSTN(padding_mode), _examples(), tmp / name,
                           dynamic_shapes={"image": {0: batch}, "theta": {0: batch}})


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """The user's .pt2 and its standard / plugin / native ONNX, exported through the CLI."""
    d = tmp_path_factory.mktemp("user")
    paths = {"pt2": _save(d, "stn.pt2"), "dir": d}
    for ops in ("standard", "plugin", "native"):
        paths[ops] = d / f"stn-{ops}.onnx"
        result = invoke("export", paths["pt2"], "-o", paths[ops], "--ops", ops)
        assert result.exit_code == 0, result.stderr
        assert "inputs image [" in result.stdout and "theta [" in result.stdout
    return paths


# --------------------------------------------------------------------------- input specs and kinds


@pytest.mark.parametrize(("name", "dtype", "shape", "kind"), [
    ("image", "float32", (2, 3, 8, 8), um.IMAGE),
    ("x", "float32", (2, 8, 8, 2), um.GRID),
    ("x", "float32", (2, 4, 8, 8, 3), um.GRID),
    ("matrix", "float32", (2, 2, 3), um.THETA),
    ("h", "float32", (2, 3, 3), um.THETA),
    ("flow", "float32", (2, 2, 8, 8), um.DISPLACEMENT),
    ("ddf", "float32", (1, 3, 4, 8, 8), um.DISPLACEMENT),
    ("image", "float32", (2, 2, 8, 8), um.IMAGE),  # two channels, not named like a field
    ("ids", "int64", (2, 5), um.INDEX),
    ("queries", "float32", (2, 10, 32), um.TENSOR),
], ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_input_kind_by_shape_and_name(name, dtype, shape, kind):
    assert um.input_kind(name, dtype, shape) == kind


def test_resolve_shapes_fills_dynamic_dims_and_names_what_is_missing():
    specs = [um.InputSpec("image", "float32", ("s0", 3, "h", 20)), um.InputSpec("theta", "float32", ("s0", 2, 3))]
    assert um.resolve_shapes(specs, batch=4, examples={"image": (2, 3, 24, 20)}) == {
        "image": (4, 3, 24, 20), "theta": (4, 2, 3)}
    # A shape given for one input fixes its symbols in the other (s0 is one number).
    assert um.resolve_shapes(specs, shapes={"image": (5, 3, 16, 20)})["theta"] == (5, 2, 3)
    with pytest.raises(UserError, match=r"dimension 2 \(h\) is dynamic; give its shape with --shapes image:"):
        um.resolve_shapes(specs)
    with pytest.raises(UserError, match="does not fit input image"):
        um.resolve_shapes(specs, shapes={"image": (5, 1, 16, 20)})
    with pytest.raises(UserError, match="names input.s. cond; the model takes image, theta"):
        um.resolve_shapes(specs, shapes={"cond": (1,)})
    assert um.parse_shapes(["image:2x3x8x8", "theta:[2,2,3]"]) == {"image": (2, 3, 8, 8), "theta": (2, 2, 3)}


def test_describe_mismatch_names_each_difference():
    ref = [um.InputSpec("image", "float32", ("n", 3, 24, 20)), um.InputSpec("theta", "float32", ("n", 2, 3))]
    assert um.describe_mismatch(ref, ref) is None
    text = um.describe_mismatch([ref[0], um.InputSpec("flow", "float32", ("n", 2, 24, 20))], ref)
    assert "candidate lacks input(s) theta" in text and "reference lacks input(s) flow" in text
    assert "dtype float64 (candidate) vs float32" in um.describe_mismatch(
        [ref[0], um.InputSpec("theta", "float64", ("n", 2, 3))], ref)
    assert "rank 2" in um.describe_mismatch([ref[0], um.InputSpec("theta", "float32", ("n", 6))], ref)
    assert "dimension 2 is 32 (candidate) vs 24" in um.describe_mismatch(
        [um.InputSpec("image", "float32", ("n", 3, 32, 20)), ref[1]], ref)


def test_random_and_adversarial_feeds_follow_each_kind():
    specs = [um.InputSpec("image", "float32", (2, 1, 6, 8)), um.InputSpec("grid", "float32", (2, 5, 7, 2)),
             um.InputSpec("theta", "float32", (2, 3, 3)), um.InputSpec("flow", "float32", (2, 2, 6, 8)),
             um.InputSpec("ids", "int64", (2, 3))]
    base = um.random_feed(specs, {s.name: s.dims for s in specs}, seed=1)
    assert np.abs(base["grid"]).max() <= 1.3 and (np.abs(base["grid"]) > 1).any()  # partly outside the image
    assert np.abs(base["theta"] - np.eye(3)).max() < 1 and base["ids"].dtype == np.int64
    cases = {name: (feed, how) for name, feed, how in um.adversarial_feeds(specs, base)}
    assert {"image:blank", "grid:leave-image", "grid:half-pixel-ties", "theta:zoom-in-x0.05",
            "theta:projective-near-singular", "flow:half-pixel-ties"} <= set(cases)
    assert not any(name.startswith("ids:") for name in cases)
    for name, (feed, how) in cases.items():
        changed = [k for k in feed if not np.array_equal(feed[k], base[k])]
        assert changed == list(how) == [name.split(":")[0]], name
        assert all(feed[k].dtype == base[k].dtype for k in feed)
    assert (np.abs(cases["grid:leave-image"][0]["grid"]) >= 1.5).all()
    # Half-pixel ties: on even rows (align_corners=False) x maps to k + 0.5 of the 8-pixel-wide image.
    ties = cases["grid:half-pixel-ties"][0]["grid"][:, ::2, :, 0].astype(np.float64)
    pixel = ((ties + 1) * 8 - 1) / 2
    assert np.allclose(pixel - np.floor(pixel), 0.5, atol=1e-5)


def test_fp32_tolerance_is_tight_enough_to_catch_a_real_bug():
    tol = TOLERANCES["float32"]
    assert tol.atol <= 1e-4 and tol.rtol <= 1e-4  # real models agree to <= 3e-5


# --------------------------------------------------------------------------- other formats


def test_other_pytorch_formats_get_one_line_with_the_recipe(tmp_path):
    module = nn.Linear(2, 3)
    torch.jit.save(torch.jit.script(module), tmp_path / "scripted.pt")
    torch.save(module, tmp_path / "module.pt")
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    for name, what in (("scripted.pt", "TorchScript"), ("module.pt", "pickled Python objects"),
                       ("weights.pt", "state dict")):
        for args in (["run", tmp_path / name, "-o", tmp_path / "o.npz"],
                     ["export", tmp_path / name, "-o", tmp_path / "o.onnx"]):
            assert_one_line_error(invoke(*args), 2, what, "torch.export.save(ep, 'model.pt2')")
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "o.onnx").exists()
    (tmp_path / "broken.pt2").write_bytes(b"not a zip")
    assert_one_line_error(invoke("run", tmp_path / "broken.pt2", "-o", tmp_path / "o.npz"), 2, "not a torch.export program")


# --------------------------------------------------------------------------- end to end


def _program_outputs(pt2, feed: dict) -> np.ndarray:
    program = um.load_program(pt2)
    (out,) = um.call_program(program.module(), program, {k: torch.from_numpy(v) for k, v in feed.items()})
    return out.detach().numpy()


def test_export_flavours_of_the_program(program):
    import onnx

    ops = {flavour: [n.op_type for n in onnx.load(str(program[flavour])).graph.node]
           for flavour in ("standard", "plugin", "native")}
    assert ops["standard"].count("AffineGrid") == 1 and ops["standard"].count("GridSample") == 1
    assert ops["plugin"].count("STNAffineGridSample") == 1 and "GridSample" not in ops["plugin"]
    assert "AffineGrid" not in ops["native"] and ops["native"].count("GridSample") == 1
    model = onnx.load(str(program["native"]))
    assert [i.version for i in model.opset_import if i.domain in ("", "ai.onnx")] == [17]
    batch_dims = {i.name: i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input}
    assert set(batch_dims) == {"image", "theta"} and len(set(batch_dims.values())) == 1 and batch_dims["image"]


def test_run_each_flavour_matches_the_program(program, tmp_path):
    feed = {k: v.numpy() for k, v in _examples(3).items()}
    np.savez(tmp_path / "in.npz", **feed)
    expected = _program_outputs(program["pt2"], feed)
    flavours = ["pt2", "standard", "native"] + ([] if kernels_available() else ["plugin"])
    for flavour in flavours:
        out = tmp_path / f"{flavour}.npz"
        result = invoke("run", program[flavour], "--inputs", tmp_path / "in.npz", "-o", out)
        assert result.exit_code == 0, result.stderr
        with np.load(out) as got:
            (name,) = got.files
            np.testing.assert_allclose(got[name], expected, atol=3e-5, rtol=0, err_msg=flavour)
    # Random inputs: the batch from --batch, the rest from the examples recorded at export.
    result = invoke("run", program["standard"], "-o", tmp_path / "r.npz", "--batch", "5", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["inputs"] == {"image": [5, 3, 24, 20], "theta": [5, 2, 3]}


def test_validate_onnx_against_the_program_and_the_program_as_candidate(program, tmp_path):
    report_path = tmp_path / "report.json"
    result = invoke("validate", program["standard"], "--reference", program["pt2"], "--report", report_path)
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["dataset"] == "none (generated inputs)"
    assert report["inputs"]["theta"]["kind"] == "theta" and report["inputs"]["image"]["kind"] == "image"
    sets = {s["name"]: s for s in report["sets"]}
    assert {"random", "random-2", "adversarial:theta:zoom-out-x3", "adversarial:theta:leave-image",
            "adversarial:image:blank"} <= set(sets)
    assert sets["adversarial:theta:zoom-in-x0.05"]["perturbed"] == {"theta": "identity x0.05"}
    # The theta the program computes (input theta + the localisation net's) steered through the image.
    crafted = [s for name, s in sets.items() if name.startswith("crafted:")]
    assert [s["reached"]["target"] for s in crafted] == ["zoom-out-x3", "zoom-in-x0.05", "leave-image", "rotate-180"]
    assert all(list(s["perturbed"]) == ["image"] and s["reached"]["kind"] == "theta" for s in crafted)
    assert report["tolerances"]["grid_sampler"]["atol"] == TOLERANCES["float32"].atol
    assert "perturbed: theta: identity x3" in result.stdout
    if kernels_available() is None:
        result = invoke("validate", program["pt2"], "--reference", program["plugin"], "--no-adversarial")
        assert result.exit_code == 0, result.stdout + result.stderr
        assert "candidate" in result.stdout and "(program, float32)" in result.stdout


def test_validate_fails_a_wrong_padding_mode(program, tmp_path):
    """A real bug (zeros padding where the user's model pads with the border) fails, exit 1,
    on the sets where the grid leaves the image."""
    wrong = _save(tmp_path, "zeros.pt2", padding_mode="zeros")
    assert invoke("export", wrong, "-o", tmp_path / "zeros.onnx").exit_code == 0
    result = invoke("validate", tmp_path / "zeros.onnx", "--reference", program["pt2"])
    assert_one_line_error(result, 1, "outside tolerance")
    assert "FAIL adversarial:theta:leave-image" in result.stdout


def test_validate_names_an_input_mismatch(program, tmp_path):
    class ImageOnly(nn.Module):
        def forward(self, image):
            return image * 2

    other = um.save_program(ImageOnly(), {"image": torch.randn(2, 3, 24, 20)}, tmp_path / "one.pt2")
    result = invoke("validate", program["standard"], "--reference", other, "--no-adversarial")
    assert_one_line_error(result, 2, "do not take the same inputs", "the reference lacks input(s) theta")


def test_python_api_exports_an_nn_module_directly(tmp_path):
    from stn_deploy.jobs.export import export_user_module
    from stn_deploy.jobs.run import open_runner

    torch.manual_seed(0)
    module = ResidualThetaSTN("reflection")
    examples = _examples()
    result = export_user_module(module, examples, tmp_path / "api.onnx", ops="plugin")
    assert result.op_counts.get("STNAffineGridSample") == 1 and set(result.inputs) == {"image", "theta"}
    if kernels_available() is None:
        with open_runner(tmp_path / "api.onnx") as runner:
            (got,) = runner.infer({k: v.numpy() for k, v in examples.items()}).values()
        np.testing.assert_allclose(got, module(**examples).detach().numpy(), atol=3e-5)


def test_bench_the_program(program, tmp_path):
    result = invoke("bench", program["pt2"], "--backends", "torch,ort", "--batch", "1,2", "--iters", "3",
                    "--warmup", "1", "--no-sampler", "-o", tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"]["kind"] == "program"
    assert report["model"]["inputs"] == {"image": [1, 3, 24, 20], "theta": [1, 2, 3]}
    rows = {(r["backend"], r["batch"]): r for r in report["results"]}
    assert all(rows[(b, n)]["status"] == "ok" for b in ("torch", "ort") for n in (1, 2)), report["results"]


@pytest.mark.slow
def test_bench_the_program_with_torch_compile(program, tmp_path):
    result = invoke("bench", program["pt2"], "--backends", "torch,torch-compile", "--batch", "2", "--iters", "3",
                    "--warmup", "1", "--no-sampler", "-o", tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    rows = {r["backend"]: r for r in json.loads(result.stdout)["results"]}
    assert rows["torch-compile"]["status"] == "ok" and rows["torch-compile"]["compile_s"] > 0


# --------------------------------------------------------------------------- the real-model corpus


def _corpus() -> list:
    try:
        return list(getattr(importlib.import_module("corpus"), "CORPUS", []))
    except ImportError:
        return []


@pytest.mark.slow
@pytest.mark.parametrize("entry", _corpus(), ids=lambda e: e.name)
def test_corpus_model_validates_and_exports_from_pt2(entry, tmp_path):
    """A real model: the user's ONNX (plain torch.onnx.export) against the user's .pt2, and the
    .pt2 through export -> plugin ONNX -> run."""
    why = entry.missing()
    if why:
        pytest.skip(why)
    model, inputs = entry.build()
    user_onnx, pt2 = tmp_path / "user.onnx", tmp_path / "user.pt2"
    # The user names the ONNX inputs as the forward's arguments (what the .pt2 is keyed by).
    names = list(inspect.signature(model.forward).parameters)[:len(inputs)]
    dynamic = [entry.dynamic.get(k, {}) for k in inputs]
    torch.onnx.export(model, tuple(inputs.values()), str(user_onnx), input_names=names,
                      dynamic_axes={n: dict(d) for n, d in zip(names, dynamic) if d}, dynamo=False, opset_version=20)
    try:
        um.save_program(model, tuple(inputs.values()), pt2,
                        dynamic_shapes=tuple({axis: torch.export.Dim.AUTO for axis in d} or None for d in dynamic))
    except UserError:  # a batch torch.export cannot keep dynamic (data-dependent guards): a static program
        try:
            um.save_program(model, tuple(inputs.values()), pt2)
        except UserError as exc:  # data-dependent Python control flow: no .pt2 can be made of it
            pytest.skip(f"torch.export cannot capture {entry.name}: {exc}")
    np.savez(tmp_path / "in.npz", **{n: v.numpy() for n, v in zip(names, inputs.values())})
    result = invoke("validate", user_onnx, "--reference", pt2, "--inputs", tmp_path / "in.npz")
    assert result.exit_code == 0, result.stdout + result.stderr
    if kernels_available() is not None:
        pytest.skip(f"the plugin ONNX runs on the kernels: {kernels_available()}")
    plugin = tmp_path / "plugin.onnx"
    result = invoke("export", pt2, "-o", plugin, "--ops", "plugin")
    assert result.exit_code == 0, result.stderr
    result = invoke("run", plugin, "--inputs", tmp_path / "in.npz", "-o", tmp_path / "out.json")
    assert result.exit_code == 0, result.stderr
    result = invoke("validate", plugin, "--reference", pt2, "--no-adversarial", "--inputs", tmp_path / "in.npz")
    assert result.exit_code == 0, result.stdout + result.stderr


class GridSampler(nn.Module):
    """A user's warp by a sampling grid given as an input (nearest, reflection, align_corners)."""

    def forward(self, image, grid):
        return F.grid_sample(image, grid, mode="nearest", padding_mode="reflection", align_corners=True)


def test_dynamic_image_size_from_shapes_and_grid_inputs(tmp_path):
    """Dynamic H/W from the program's dynamic_shapes; --shapes sets them in run and validate;
    a grid input gets the grid's adversarial cases; --ops plugin gives STNGridSample."""
    import onnx

    dim = torch.export.Dim
    examples = {"image": torch.randn(2, 3, 12, 10), "grid": torch.rand(2, 5, 7, 2) * 2 - 1}
    pt2 = um.save_program(GridSampler(), examples, tmp_path / "grid.pt2", dynamic_shapes={
        "image": {0: dim("batch"), 2: dim("h", min=2), 3: dim("w", min=2)}, "grid": {0: dim("batch")}})
    for ops in ("standard", "plugin"):
        result = invoke("export", pt2, "-o", tmp_path / f"{ops}.onnx", "--ops", ops)
        assert result.exit_code == 0, result.stderr
    plugin_ops = [n.op_type for n in onnx.load(str(tmp_path / "plugin.onnx")).graph.node]
    assert plugin_ops == ["STNGridSample"]
    result = invoke("run", tmp_path / "standard.onnx", "-o", tmp_path / "o.npz", "--shapes", "image:3x3x40x30", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["inputs"] == {"image": [3, 3, 40, 30], "grid": [3, 5, 7, 2]}
    assert_one_line_error(invoke("run", tmp_path / "standard.onnx", "-o", tmp_path / "o.npz", "--shapes", "image:3x3x40"),
                          2, "does not fit input image")
    result = invoke("validate", tmp_path / "standard.onnx", "--reference", pt2, "--shapes", "image:1x3x33x17", "--json")
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["inputs"]["image"]["shape"] == [1, 3, 33, 17] and report["inputs"]["grid"]["kind"] == "grid"
    names = [s["name"] for s in report["sets"]]
    assert {"adversarial:grid:leave-image", "adversarial:grid:half-pixel-ties", "adversarial:grid:one-point"} <= set(names)


def test_a_decomposed_program_still_gets_the_fused_op(program, tmp_path):
    """After ``run_decompositions()`` the program spells F.affine_grid as view/mul/sum and
    F.grid_sample as grid_sampler_2d: the plugin export still fuses them into one op."""
    import onnx

    decomposed = um.load_program(program["pt2"]).run_decompositions()
    targets = {str(n.target) for n in decomposed.graph.nodes if n.op == "call_function"}
    assert "aten.affine_grid_generator.default" not in targets and "aten.grid_sampler_2d.default" in targets
    torch.export.save(decomposed, str(tmp_path / "decomposed.pt2"))
    result = invoke("export", tmp_path / "decomposed.pt2", "-o", tmp_path / "d.onnx", "--ops", "plugin")
    assert result.exit_code == 0, result.stderr
    ops = [n.op_type for n in onnx.load(str(tmp_path / "d.onnx")).graph.node]
    assert ops.count("STNAffineGridSample") == 1 and not {"GridSample", "AffineGrid", "ReduceSum"} & set(ops)
    if kernels_available() is None:
        result = invoke("validate", tmp_path / "d.onnx", "--reference", program["pt2"], "--no-adversarial")
        assert result.exit_code == 0, result.stdout + result.stderr


def test_the_issue_command_two_onnx_models_with_two_inputs(program, tmp_path):
    """``validate ours.onnx --reference theirs.onnx --inputs in.npz --no-adversarial`` on a
    two-input model: compared on the file's inputs and generated ones, not refused."""
    np.savez(tmp_path / "in.npz", **{k: v.numpy() for k, v in _examples(3).items()})
    result = invoke("validate", program["native"], "--reference", program["standard"], "--inputs", tmp_path / "in.npz",
                    "--no-adversarial", "--json")
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["sets"]] == ["random", "random-2", "inputs-file"]
    assert report["sets"][-1]["count"] == 3 and report["reference"]["kind"] == "onnx-standard"
