"""``stn-deploy build`` / ``inspect`` / ``validate`` on the command line: exit codes 0/1/2 and
one-line errors for bad input."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from helpers_export import perturbed_checkpoint
from helpers_trt import affine_grid_graph, matmul_graph, plugin_graph

from stn_deploy import schema
from stn_deploy.cli import main

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="needs tensorrt_rtx (pip install 'stn-deploy[rtx]')")


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, code: int, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:" if code == 2 else "failed:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr


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
        "missing": (["build", tmp_path / "nope.onnx"], ["not found"]),
        "malformed-shapes": (["build", mm, "--shapes", "x:1x4,8x4"], ["malformed --shapes"]),
        "unknown-shape-input": (["build", mm, "--shapes", "y:1x4,2x4,3x4"], ["not an input"]),
        "missing-plugin-library": (["build", mm, "--plugin-library", tmp_path / "lib.so"], ["plugin library not found"]),
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
        "missing": (["inspect", tmp_path / "x.engine"], ["engine not found"]),
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

    from stn_deploy import export

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
