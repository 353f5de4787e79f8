"""The ``stn-deploy`` command line, command by command: outputs, exit codes 0/1/2 and one-line
errors for bad input (models, train, evaluate, visualize, build, inspect, validate)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers_cli import assert_one_line_error, invoke
from helpers_export import perturbed_checkpoint
from helpers_trt import HAS_RTX, affine_grid_graph, matmul_graph, needs_rtx, plugin_graph
from stn_deploy import schema
from stn_deploy.jobs import train
from stn_deploy.models import MODEL_NAMES, ModelConfig, build_model, count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- models, train, evaluate, visualize


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An ST-FCN trained for one epoch through the CLI."""
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    res = invoke("train", "--model", "st-fcn-affine", "--dataset", "R", "--epochs", "1", "--no-progress",
                  "--padding-mode", "border", "-o", out)
    assert res.exit_code == 0, res.output
    return out, res


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory):
    config = ModelConfig("cnn")
    return train.save_checkpoint(tmp_path_factory.mktemp("cnn") / "model.pt", build_model(config), config,
                                 {"dataset": "R"})


def test_models_lists_names_and_parameter_counts():
    res = invoke("models", "--dataset", "cluttered")
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split()[1] for line in res.stdout.splitlines()[1:]}
    assert list(rows) == list(MODEL_NAMES)
    for name, count in rows.items():
        expected = count_parameters(build_model(ModelConfig(name, in_size=(60, 60))))
        assert int(count.replace(",", "")) == expected


def test_train_writes_checkpoint_and_metrics(trained):
    out, res = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"test error {metrics['test_error']:.2f}%" in res.stdout
    model, config = train.load_checkpoint(out / "model.pt")
    assert config.name == "st-fcn-affine" and config.sampler.padding_mode == "border"


def test_evaluate_prints_the_test_error_of_the_training_set(trained):
    out, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    res = invoke("evaluate", out / "model.pt")
    assert res.exit_code == 0, res.output
    assert "on R" in res.stdout and f"test error {metrics['test_error']:.2f}%" in res.stdout
    res = invoke("evaluate", out / "model.pt", "--dataset", "E")
    assert res.exit_code == 0 and "on E" in res.stdout


def test_visualize_writes_a_picture(trained, tmp_path):
    out, _ = trained
    target = tmp_path / "warp.png"
    res = invoke("visualize", out / "model.pt", "-o", target, "--count", "3")
    assert res.exit_code == 0, res.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == [target]  # written atomically, no temporary left


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--model", "resnet", "--dataset", "R", "-o", "{tmp}"], "unknown model 'resnet'"),
        (["train", "--model", "cnn", "--dataset", "MNIST", "-o", "{tmp}"], "unknown dataset 'MNIST'"),
        (["train", "--model", "cnn", "--dataset", "R", "--mode", "area", "-o", "{tmp}"], "unknown mode 'area'"),
        (["train", "--model", "cnn", "--dataset", "R", "-o", "{tmp}/file/run"], "cannot create output folder"),
        (["evaluate", "{tmp}/missing.pt"], "no such file"),
        (["evaluate", "{tmp}/file"], "is not an stn-deploy checkpoint"),
        (["evaluate", "{cnn}", "--dataset", "RTS"], "takes 28x28 images but dataset RTS has 42x42"),
        (["evaluate", "{cnn}", "--dataset", "SVHN"], "unknown dataset 'SVHN'"),
        (["visualize", "{cnn}", "-o", "{tmp}/w.png"], "has no spatial transformer"),
        (["visualize", "{tmp}/file", "-o", "{tmp}/w.png"], "is not an stn-deploy checkpoint"),
        (["visualize", "{cnn}", "-o", "{tmp}/w.txt"], "use one of"),
        (["models", "--dataset", "X"], "unknown dataset 'X'"),
    ],
    ids=[
        "train-unknown-model", "train-unknown-dataset", "train-unknown-mode", "train-unwritable-output",
        "evaluate-missing", "evaluate-foreign", "evaluate-size-mismatch", "evaluate-unknown-dataset",
        "visualize-no-transformer", "visualize-foreign", "visualize-bad-suffix", "models-unknown-dataset",
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, cnn_checkpoint, args, needle):
    (tmp_path / "file").write_text("not a checkpoint")
    filled = [a.format(tmp=tmp_path, cnn=cnn_checkpoint) for a in args]
    assert_one_line_error(invoke(*filled), 2, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_help_does_not_import_torch():
    code = "import sys, stn_deploy.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

# --------------------------------------------------------------------------- build, inspect, validate


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One engine built through the CLI."""
    if not HAS_RTX:
        pytest.skip("needs tensorrt_rtx")
    d = tmp_path_factory.mktemp("cli")
    onnx_path = matmul_graph(d / "mm.onnx")
    result = invoke("build", onnx_path, "-o", d / "mm.engine", "--shapes", "x:1x4,4x4,32x4", "--precision", "fp16",
                    "--opt-level", "2", "--workspace", "128", "--compute-capability", "sm86", "--trt", "rtx")
    return d, result


@needs_rtx
def test_build_writes_engine_sidecar_and_reports(built):
    d, result = built
    assert result.exit_code == 0, result.stderr
    assert "built" in result.stdout and "TensorRT-RTX" in result.stdout
    assert "building: Building engine" in result.stdout  # progress, not on a terminal
    side = json.loads((d / "mm.engine.json").read_text())
    assert side["precision"] == "fp16" and side["opt_level"] == 2 and side["workspace_mib"] == 128
    assert side["compute_capabilities"] == ["sm86"]
    assert side["profiles"] == [[{"name": "x", "min": [1, 4], "opt": [4, 4], "max": [32, 4]}]]


@needs_rtx
def test_build_default_output_next_to_model(tmp_path):
    onnx_path = matmul_graph(tmp_path / "m.onnx")
    result = invoke("build", onnx_path)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "m.engine").is_file() and (tmp_path / "m.engine.json").is_file()


@needs_rtx
def test_inspect_shows_io_profiles_layers_and_gpu_note(built):
    d, _ = built
    result = invoke("inspect", d / "mm.engine")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "input    x: float32 [-1, 4]" in out
    assert "profile  0 x: min [1, 4] opt [4, 4] max [32, 4]" in out
    assert "MATRIX_MULTIPLY" in out and "precision fp16" in out
    from stn_deploy.trt import gpu_available

    if not gpu_available():
        assert "needs a GPU" in out


@needs_rtx
def test_inspect_json(built):
    d, _ = built
    result = invoke("inspect", d / "mm.engine", "--json")
    report = json.loads(result.stdout)
    assert report["engine"]["backend"]["name"] == "rtx" and report["sidecar"]["precision"] == "fp16"


@pytest.mark.plugin
@needs_rtx
def test_inspect_names_plugin_layers(tmp_path):
    from stn_deploy.trt.flavour import default_plugin_library

    if default_plugin_library() is None:
        pytest.skip("plugin library not built (stn-deploy plugins build)")
    fields = {schema.FIELD_INTERPOLATION_MODE: 2, schema.FIELD_PADDING_MODE: 1, schema.FIELD_ALIGN_CORNERS: 1,
              schema.FIELD_TRANSFORM: 1, schema.FIELD_OUT_D: 0, schema.FIELD_OUT_H: 6, schema.FIELD_OUT_W: 5}
    path = plugin_graph(tmp_path / "p.onnx", schema.AFFINE_GRID_SAMPLE_OP, fields)
    assert invoke("build", path, "--no-doctor").exit_code == 0
    result = invoke("inspect", tmp_path / "p.engine")
    assert "plugin STNAffineGridSample v1" in result.stdout
    assert "plugin   " in result.stdout  # the plugin library line with its hash


# --------------------------------------------------------------------------- bad input: exit 2, one line


@needs_rtx
@pytest.mark.parametrize("case", ["not-onnx", "missing", "malformed-shapes", "unknown-shape-input",
                                  "missing-plugin-library", "doctor-error", "parser-error", "fixed-dim-shapes"])
def test_build_bad_input(tmp_path, case):
    mm = matmul_graph(tmp_path / "mm.onnx")
    (tmp_path / "notes.txt").write_text("hello")
    args, words = {
        "not-onnx": (["build", tmp_path / "notes.txt"], ["not an ONNX model"]),
        "missing": (["build", tmp_path / "nope.onnx"], ["no such file"]),
        "malformed-shapes": (["build", mm, "--shapes", "x:1x4,8x4"], ["malformed --shapes"]),
        "unknown-shape-input": (["build", mm, "--shapes", "y:1x4,2x4,3x4"], ["not an input"]),
        "missing-plugin-library": (["build", mm, "--plugin-library", tmp_path / "lib.so"], ["plugin library", "no such file"]),
        "doctor-error": (["build", affine_grid_graph(tmp_path / "ag.onnx")], ["doctor", "AffineGrid", "--no-doctor"]),
        "parser-error": (["build", affine_grid_graph(tmp_path / "ag.onnx"), "--no-doctor"], ["AffineGrid", "UNSUPPORTED_NODE"]),
        "fixed-dim-shapes": (["build", mm, "--shapes", "x:1x5,2x5,4x5"], ["fixed at 4"]),
    }[case]
    result = invoke(*args)
    assert_one_line_error(result, 2, *words)
    assert not list(tmp_path.glob("*.engine")) and not list(tmp_path.glob("*.tmp"))


def test_build_missing_plugin_library_for_plugin_graph(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_DEPLOY_PLUGIN_LIBRARY", str(tmp_path / "absent.so"))
    path = plugin_graph(tmp_path / "p.onnx", schema.GRID_SAMPLE_OP, {schema.FIELD_INTERPOLATION_MODE: 0})
    assert_one_line_error(invoke("build", path, "--no-doctor"), 2, "plugin library is missing", "STNGridSample")


@pytest.mark.plugin
@needs_rtx
def test_build_invalid_plugin_field_is_one_line(tmp_path):
    from stn_deploy.trt.flavour import default_plugin_library

    if default_plugin_library() is None:
        pytest.skip("plugin library not built (stn-deploy plugins build)")
    path = plugin_graph(tmp_path / "p.onnx", schema.GRID_SAMPLE_OP,
                        {schema.FIELD_INTERPOLATION_MODE: 7, schema.FIELD_PADDING_MODE: 0, schema.FIELD_ALIGN_CORNERS: 0})
    assert_one_line_error(invoke("build", path, "--no-doctor"), 2, "interpolation_mode")


@needs_rtx
@pytest.mark.parametrize("case", ["not-engine", "missing", "other-version", "wrong-backend"])
def test_inspect_bad_input(built, tmp_path, case):
    d, _ = built
    data = bytearray((d / "mm.engine").read_bytes())
    data[24:27] = bytes([1, 2, 0])
    (tmp_path / "old.engine").write_bytes(bytes(data))
    args, words = {
        "not-engine": (["inspect", d / "mm.onnx"], ["not a TensorRT engine"]),
        "missing": (["inspect", tmp_path / "x.engine"], ["engine", "no such file"]),
        "other-version": (["inspect", tmp_path / "old.engine"], ["built by TensorRT-RTX 1.2.0", "rebuild"]),
        "wrong-backend": (["inspect", d / "mm.engine", "--trt", "tensorrt"], ["TensorRT-RTX engine"]),
    }[case]
    assert_one_line_error(invoke(*args), 2, *words)


def test_cli_help_without_tensorrt():
    """``--help`` of our commands imports no TensorRT."""
    code = ("import sys; from click.testing import CliRunner; from stn_deploy.cli import main; "
            "r = [CliRunner().invoke(main, [c, '--help']) for c in ('build', 'inspect', 'validate')]; "
            "assert all(x.exit_code == 0 for x in r); "
            "assert 'tensorrt_rtx' not in sys.modules and 'tensorrt' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_interrupted_build_leaves_nothing(tmp_path):
    """Ctrl-C in the middle of a real CLI build: exit 130, no engine, no temp file."""
    if not HAS_RTX:
        pytest.skip("needs tensorrt_rtx")
    import signal
    import time

    onnx_path = matmul_graph(tmp_path / "mm.onnx")
    proc = subprocess.Popen([sys.executable, "-m", "stn_deploy.cli", "build", str(onnx_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait for the build worker to start (its temp engine file appears), then interrupt.
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".mm.engine.*.tmp")) and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the build finished before the interrupt arrived")
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mm.onnx"]


# --------------------------------------------------------------------------- validate


@pytest.fixture(scope="module")
def checkpoint_and_exports(tmp_path_factory):
    pytest.importorskip("torch")
    import onnx

    from stn_deploy.jobs import export

    d = tmp_path_factory.mktemp("cli-validate")
    perturbed_checkpoint(d / "m.pt", "st-fcn-affine", seed=1)
    export.export(export.ExportOptions(checkpoint=d / "m.pt", output=d / "m.onnx", ops="standard"))
    m = onnx.load(str(d / "m.onnx"))
    for node in m.graph.node:
        for attr in node.attribute:
            if attr.name == "align_corners":
                attr.i = 1 - attr.i
    onnx.save(m, str(d / "wrong.onnx"))
    return d


#: Test images only: the adversarial sets are covered by test_validate.py.
QUICK = ["--max-images", "64", "--no-adversarial"]


def test_validate_cli_pass_writes_report(checkpoint_and_exports):
    d = checkpoint_and_exports
    result = invoke("validate", d / "m.onnx", "--reference", d / "m.pt", "--report", d / "r.json", *QUICK)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout
    assert json.loads((d / "r.json").read_text())["passed"] is True


def test_validate_cli_fail_exits_1(checkpoint_and_exports):
    d = checkpoint_and_exports
    # align_corners flipped: every sampled image differs.
    result = invoke("validate", d / "wrong.onnx", "--reference", d / "m.pt", "--report", d / "w.json", *QUICK)
    assert_one_line_error(result, 1, "outside tolerance")
    assert "FAIL" in result.stdout
    assert json.loads((d / "w.json").read_text())["passed"] is False


@pytest.mark.parametrize("case", ["missing-reference", "bad-atol", "inputs-shape", "checkpoint-candidate"])
def test_validate_cli_bad_input(checkpoint_and_exports, tmp_path, case):
    d = checkpoint_and_exports
    np.savez(tmp_path / "x.npz", input=np.zeros((1, 1, 3, 3), np.float32))
    args, words = {
        "missing-reference": (["validate", d / "m.onnx", "--reference", tmp_path / "none.pt"], ["none.pt"]),
        "bad-atol": (["validate", d / "m.onnx", "--reference", d / "m.pt", "--atol", "big"], ["--atol"]),
        "inputs-shape": (["validate", d / "m.onnx", "--reference", d / "m.pt", "--inputs", tmp_path / "x.npz",
                          *QUICK], ["does not fit"]),
        "checkpoint-candidate": (["validate", d / "m.pt", "--reference", d / "m.pt"], ["is a checkpoint"]),
    }[case]
    assert_one_line_error(invoke(*args), 2, *words)


@needs_rtx
def test_build_current_compute_capability_needs_a_gpu(tmp_path):
    from stn_deploy.trt import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present: 'current' is valid here")
    result = invoke("build", matmul_graph(tmp_path / "mm.onnx"), "--compute-capability", "current")
    assert_one_line_error(result, 2, "current", "has none")


def test_choices_are_case_insensitive_and_bad_ones_one_line(tmp_path):
    result = invoke("models", "--dataset", "rts", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dataset"] == "RTS" and data["input_size"] == [42, 42]
    assert {m["name"] for m in data["models"]} >= {"cnn", "fcn"}
    assert_one_line_error(invoke("models", "--dataset", "XYZ"), 2, "unknown dataset 'XYZ'")


def test_trtexec_shapes_without_opt_is_one_line(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    assert_one_line_error(invoke("build", tmp_path / "m.onnx", "--min-shapes", "x:1x4", "--max-shapes", "x:8x4"),
                          2, "--opt-shapes is missing for x")


def test_messages_name_only_options_that_exist():
    """Every ``--option`` written in the package's messages and hints is an option of some
    stn-deploy command, or one of the other tools' that the messages quote on purpose."""
    import re

    import stn_deploy
    from stn_deploy.cli import main

    ours: set[str] = set()

    def walk(cmd):
        for p in cmd.params:
            ours.update(o for o in p.opts + p.secondary_opts if o.startswith("--"))
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(main)
    others = {"--save-inputs", "--save-outputs", "--iterations",  # polygraphy run
              "--build", "--minShapes", "--optShapes", "--maxShapes",  # cmake --build, trtexec
              # tritonserver's own flags, which stn-deploy serve and the repository notes pass on
              "--backend-config", "--model-repository", "--model-store", "--grpc-address", "--http-address",
              "--metrics-address", "--backend-directory", "--model-control-mode", "--exit-timeout-secs",
              "--load-model", "--allow-gpu-metrics", "--cache-directory",
              "--force-reinstall", "--no-deps"}  # pip, in the wheel install's rebuild advice
    from pathlib import Path

    package = Path(stn_deploy.__file__).parent
    named = {m for f in package.rglob("*.py") for m in re.findall(r"(?<![\w-])--[a-z][a-zA-Z-]*", f.read_text())}
    assert named - ours - others - {"--help", "--version"} == set()


def test_train_prints_a_line_per_epoch_when_not_on_a_terminal(trained):
    """CliRunner's stdout is no terminal, as in CI logs: one line per epoch with the elapsed time."""
    import re

    _, res = trained
    assert re.search(r"^train: epoch 1/1: loss \d+\.\d{4}, train error \d+\.\d% \(\d+\.\d s\)$", res.stdout, re.MULTILINE)
