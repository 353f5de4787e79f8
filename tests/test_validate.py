"""stn_deploy.jobs.validate: passes real exports, fails deliberately wrong candidates, bad input.

The checkpoint is an untrained ST-CNN (affine) with perturbed weights, so that its
localisation net produces non-identity transforms without a training run; its task accuracy
is near chance, which the accuracy check handles like any other (candidate == reference).
"""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest

from helpers_export import perturbed_checkpoint
from stn_deploy.errors import UserError, ValidationFailed
from stn_deploy.jobs.validate import (
    CRAFTED_TARGETS,
    ValidateOptions,
    check,
    crafted_images,
    parse_tolerance,
    stress_images,
    validate,
)

torch = pytest.importorskip("torch")

#: Small and quick for the failing-candidate cases; the passing real export uses everything.
QUICK = {"max_images": 128, "crafted_steps": 20}


def _plugin_missing() -> str | None:
    try:
        from stn_deploy import kernels

        kernels.load_library()
    except Exception as exc:
        return f"plugin kernel library not available: {exc}"
    if importlib.util.find_spec("onnxruntime_extensions") is None:
        return "onnxruntime-extensions is not installed"
    return None


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """checkpoint + standard and plugin exports + deliberately wrong copies of each."""
    import onnx

    from stn_deploy.jobs import export

    d = tmp_path_factory.mktemp("validate")
    perturbed_checkpoint(d / "model.pt", "st-cnn-affine", seed=0)
    paths = {"checkpoint": d / "model.pt"}
    flavours = ["standard"] + ([] if _plugin_missing() else ["plugin"])
    for ops in flavours:
        out = d / f"{ops}.onnx"
        export.export(export.ExportOptions(checkpoint=d / "model.pt", output=out, ops=ops))
        paths[ops] = out
        for wrong in ("align_corners", "padding"):
            m = onnx.load(str(out))
            for node in m.graph.node:
                for attr in node.attribute:
                    if wrong == "align_corners" and attr.name == "align_corners":
                        attr.i = 1 - attr.i
                    if wrong == "padding" and attr.name == "padding_mode":
                        if attr.type == onnx.AttributeProto.STRING:
                            attr.s = b"border"
                        else:
                            attr.i = 1
            onnx.save(m, str(d / f"{ops}-wrong-{wrong}.onnx"))
            paths[f"{ops}-wrong-{wrong}"] = d / f"{ops}-wrong-{wrong}.onnx"
    return paths


# --------------------------------------------------------------------------- passing


def test_validate_passes_real_standard_export(models, tmp_path):
    report_path = tmp_path / "report.json"
    report = validate(ValidateOptions(models["standard"], models["checkpoint"], report=report_path))
    assert report.passed, report.failures()
    check(report)  # no exception
    data = json.loads(report_path.read_text())
    assert data["passed"] is True and data["dataset"] == "R"
    assert [s["name"] for s in data["sets"]] == ["test-images", "adversarial-stress", "adversarial-crafted"]
    test_set = data["sets"][0]
    assert test_set["count"] == 539 * 4
    stats = test_set["outputs"]["output"]
    for key in ("max_abs", "mean_abs", "median_abs", "max_rel", "mean_rel", "median_rel", "worst_index"):
        assert key in stats
    assert stats["max_abs"] < 1e-4
    assert data["tolerances"]["output"] == {"atol": 1e-4, "rtol": 1e-4, "dtype": "float32"}
    acc = data["accuracy"]
    assert acc["images"] == 539 * 4 and acc["difference"] <= 0.1 and acc["limit"] == 0.1
    targets = {t["target"]: t for t in data["sets"][2]["targets"]}
    assert set(targets) == set(CRAFTED_TARGETS)
    # How far each target is reached depends on the net; some grids must leave the image.
    assert max(t["grid_outside_image"] for t in targets.values()) > 0.2


@pytest.mark.plugin
def test_validate_passes_plugin_export(models):
    if "plugin" not in models:
        pytest.skip(_plugin_missing())
    report = validate(ValidateOptions(models["plugin"], models["checkpoint"], max_images=512, crafted_steps=30))
    assert report.passed, report.failures()
    assert report.candidate["kind"] == "onnx-plugin"


def test_validate_onnx_reference_uses_stress_images_only(models):
    report = validate(ValidateOptions(models["standard"], models["standard"], dataset="R", **QUICK))
    assert report.passed
    assert [s.name for s in report.sets] == ["test-images", "adversarial-stress"]
    assert all(s.outputs["output"].max_abs == 0 for s in report.sets)


def test_validate_inputs_file_is_compared(models, tmp_path):
    x = np.random.default_rng(1).uniform(-2, 2, (5, 1, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input=x)
    report = validate(ValidateOptions(models["standard"], models["checkpoint"], inputs=tmp_path / "in.npz",
                                      adversarial=False, max_images=64))
    assert [s.name for s in report.sets] == ["test-images", "inputs-file"]
    assert report.sets[1].count == 5 and report.passed


# --------------------------------------------------------------------------- failing


@pytest.mark.parametrize("flavour", ["standard", "plugin"])
@pytest.mark.parametrize("wrong", ["align_corners", "padding"])
def test_validate_fails_wrong_candidate(models, flavour, wrong, tmp_path):
    if flavour not in models:
        pytest.skip(_plugin_missing())
    report = validate(ValidateOptions(models[f"{flavour}-wrong-{wrong}"], models["checkpoint"],
                                      report=tmp_path / "r.json", **QUICK))
    assert not report.passed
    failed = {s.name for s in report.sets if not s.passed}
    # Grids that leave the image tell the padding modes apart; every set shows align_corners.
    assert failed & {"adversarial-stress", "adversarial-crafted"}
    with pytest.raises(ValidationFailed, match="outside tolerance"):
        check(report)
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is False


def test_validate_fails_on_tight_tolerance(models):
    report = validate(ValidateOptions(models["standard"], models["checkpoint"], atol={"": 0.0}, rtol={"output": 0.0},
                                      adversarial=False, max_images=64))
    # ORT and PyTorch differ in the last bits: a zero tolerance must catch that.
    assert not report.passed and report.sets[0].outputs["output"].atol == 0.0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case, message", [
    ("checkpoint-candidate", "is a checkpoint"),
    ("missing-candidate", "not found|no such|does not exist"),
    ("bad-inputs-shape", "does not fit"),
    ("unknown-dataset", "unknown dataset"),
    ("wrong-size-dataset", "has \\(42, 42\\) images"),
])
def test_validate_bad_input(models, tmp_path, case, message):
    np.savez(tmp_path / "bad.npz", input=np.zeros((2, 1, 5, 5), np.float32))
    options = {
        "checkpoint-candidate": ValidateOptions(models["checkpoint"], models["checkpoint"]),
        "missing-candidate": ValidateOptions(tmp_path / "none.onnx", models["checkpoint"]),
        "bad-inputs-shape": ValidateOptions(models["standard"], models["checkpoint"], inputs=tmp_path / "bad.npz",
                                            adversarial=False, max_images=8),
        "unknown-dataset": ValidateOptions(models["standard"], models["checkpoint"], dataset="MNIST"),
        "wrong-size-dataset": ValidateOptions(models["standard"], models["checkpoint"], dataset="RTS"),
    }[case]
    with pytest.raises(UserError, match=message):
        validate(options)


def test_validate_engine_candidate_without_gpu_is_user_error(models, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    (tmp_path / "m.engine").write_bytes(b"vtrt" + bytes(20) + bytes([1, 7, 1]) + bytes(100))
    with pytest.raises(UserError, match="GPU"):
        validate(ValidateOptions(tmp_path / "m.engine", models["checkpoint"]))


@pytest.mark.gpu
@pytest.mark.plugin
def test_validate_plugin_engine_on_gpu(models, tmp_path):
    if "plugin" not in models:
        pytest.skip(_plugin_missing())
    from stn_deploy import trt

    trt.build(trt.BuildOptions(models["plugin"], tmp_path / "m.engine"))
    report = validate(ValidateOptions(tmp_path / "m.engine", models["checkpoint"]))
    assert report.passed, report.failures()


# --------------------------------------------------------------------------- pieces


@pytest.mark.parametrize("specs, expected", [
    ([], {}), (["1e-3"], {"": 1e-3}), (["output:0.5", "2"], {"output": 0.5, "": 2.0}), (["a:b:1"], {"a:b": 1.0}),
])
def test_parse_tolerance(specs, expected):
    assert parse_tolerance(specs) == expected


@pytest.mark.parametrize("spec", ["x", "output:", "-1", "nan", "inf"])
def test_parse_tolerance_rejects(spec):
    with pytest.raises(UserError, match="--atol"):
        parse_tolerance([spec], "--atol")


def test_stress_images_cover_the_cases():
    test = np.random.default_rng(0).uniform(0, 1, (6, 1, 9, 7)).astype(np.float32)
    images, names = stress_images((1, 9, 7), test)
    assert images.shape == (len(names), 1, 9, 7) and images.dtype == np.float32
    assert {"blank", "checkerboard", "saturated-x4-0", "negated-0", "gaussian-x3-0"} <= set(names)
    assert np.isfinite(images).all()


def test_crafted_images_reach_extreme_grids(models):
    from stn_deploy.data import make_dataset
    from stn_deploy.jobs.train import load_checkpoint

    model, _ = load_checkpoint(models["checkpoint"])
    images = make_dataset("R", "test").images[:32].numpy()
    crafted, notes = crafted_images(model, images, steps=40, per_target=2)
    assert crafted.shape == (2 * len(CRAFTED_TARGETS), 1, 28, 28)
    reached = {n["target"]: n for n in notes}
    assert set(reached) == set(CRAFTED_TARGETS)
    assert reached["zoom-out-x3"]["grid_outside_image"] > 0.2
    assert reached["half-pixel-shift"]["grid_rmse_to_target"] < 0.05
    assert all(n["finite"] for n in notes)


def test_crafted_images_skip_models_without_transformer():
    from stn_deploy.models import ModelConfig, build_model

    crafted, notes = crafted_images(build_model(ModelConfig("cnn")), np.zeros((4, 1, 28, 28), np.float32))
    assert crafted.shape[0] == 0 and notes == []


def test_validate_inputs_file_runs_every_iteration(models, tmp_path):
    from polygraphy.json import save_json

    rng = np.random.default_rng(2)
    iterations = [{"input": rng.uniform(-2, 2, (n, 1, 28, 28)).astype(np.float32)} for n in (2, 3, 4)]
    save_json(iterations, str(tmp_path / "in.json"))
    report = validate(ValidateOptions(models["standard"], models["checkpoint"], inputs=tmp_path / "in.json",
                                      adversarial=False, max_images=32))
    assert report.sets[1].name == "inputs-file" and report.sets[1].count == 2 + 3 + 4
    assert report.sets[1].notes == {"iterations": 3} and report.passed


def test_validate_against_polygraphy_outputs(models, tmp_path):
    """--reference outputs.json (Polygraphy RunResults) compares on its inputs, per iteration."""
    from polygraphy.json import save_json

    from stn_deploy.jobs.run import RunOptions, load_run_results, run, save_run_results

    rng = np.random.default_rng(3)
    save_json([{"input": rng.standard_normal((2, 1, 28, 28)).astype(np.float32)} for _ in range(2)],
              str(tmp_path / "in.json"))
    run(RunOptions(models["checkpoint"], tmp_path / "ref.json", inputs=tmp_path / "in.json"))
    report = validate(ValidateOptions(models["standard"], tmp_path / "ref.json", inputs=tmp_path / "in.json"))
    assert report.passed, report.failures()
    assert [s.name for s in report.sets] == ["iteration-0", "iteration-1"]
    assert report.reference["kind"] == "polygraphy-outputs" and report.accuracy == {}
    # A reference that disagrees fails, naming the iteration.
    name, outs = load_run_results(tmp_path / "ref.json")
    outs[1]["output"] = outs[1]["output"] + 0.5
    save_run_results(tmp_path / "bad.json", name, outs)
    bad = validate(ValidateOptions(models["standard"], tmp_path / "bad.json", inputs=tmp_path / "in.json"))
    assert not bad.passed and bad.failures()[0].startswith("iteration-1 output output")
    with pytest.raises(UserError, match="give the inputs"):
        validate(ValidateOptions(models["standard"], tmp_path / "ref.json"))


def test_recorded_outputs_check_tolerance_names_like_every_other_reference(models, tmp_path):
    """--atol naming an output the candidate lacks is refused against recorded outputs too."""
    from polygraphy.json import save_json

    from stn_deploy.jobs.run import RunOptions, run

    save_json([{"input": np.ones((1, 1, 28, 28), np.float32)}], str(tmp_path / "in.json"))
    run(RunOptions(models["checkpoint"], tmp_path / "ref.json", inputs=tmp_path / "in.json"))
    with pytest.raises(UserError, match="--atol/--rtol name output"):
        validate(ValidateOptions(models["standard"], tmp_path / "ref.json", inputs=tmp_path / "in.json",
                                 atol={"nope": 1.0}))


def test_validate_cli_json_and_progress_lines(models, tmp_path):
    from polygraphy.json import save_json

    from helpers_cli import invoke
    from stn_deploy.jobs.run import RunOptions, run

    save_json([{"input": np.ones((1, 1, 28, 28), np.float32)}], str(tmp_path / "in.json"))
    run(RunOptions(models["checkpoint"], tmp_path / "ref.json", inputs=tmp_path / "in.json"))
    result = invoke("validate", models["standard"], "--reference", tmp_path / "ref.json",
                    "--inputs", tmp_path / "in.json", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout is the JSON alone
    assert data["passed"] is True and data["reference"]["kind"] == "polygraphy-outputs"
    # Progress went to stderr, one line per step with the elapsed time.
    assert re.search(r"^validate: running candidate .* \(\d+\.\d s\)$", result.stderr, re.MULTILINE)
