"""stn_deploy.verbosity and the group's --verbose/--quiet: one level, mapped onto each library."""

from __future__ import annotations

import numpy as np
import pytest

from helpers_cli import assert_one_line_error, invoke
from helpers_trt import matmul_graph, needs_rtx
from stn_deploy import verbosity


@pytest.fixture(autouse=True)
def _restore_level(monkeypatch):
    """The CLI sets the level in os.environ; put it (and Polygraphy's logger) back afterwards."""
    monkeypatch.setenv(verbosity.ENV_VAR, "0")
    yield
    monkeypatch.setenv(verbosity.ENV_VAR, "0")
    verbosity.configure_polygraphy()


@pytest.mark.parametrize("level, trt, ort, polygraphy", [
    (verbosity.QUIET, "ERROR", 3, 50), (verbosity.DEFAULT, "WARNING", 3, 40),
    (verbosity.VERBOSE, "INFO", 1, 20), (verbosity.VERY_VERBOSE, "VERBOSE", 0, 10),
])
def test_one_level_maps_onto_each_library(level, trt, ort, polygraphy):
    verbosity.set_level(level)
    assert (verbosity.tensorrt_severity(), verbosity.ort_severity(), verbosity.polygraphy_severity()) == \
        (trt, ort, polygraphy)


def test_level_is_clamped_and_survives_garbage(monkeypatch):
    verbosity.set_level(7)
    assert verbosity.level() == verbosity.VERY_VERBOSE
    monkeypatch.setenv(verbosity.ENV_VAR, "loud")
    assert verbosity.level() == verbosity.DEFAULT


def test_polygraphy_lines_do_not_leak_at_the_default_level(tmp_path):
    """Loading a Polygraphy inputs file used to print '[I] Loading inputs from ...'."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from polygraphy.json import save_json

    g = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 3])],
                     [h.make_tensor_value_info("y", T.FLOAT, [2, 3])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(tmp_path / "relu.onnx"))
    save_json([{"x": np.ones((2, 3), np.float32)}] * 2, str(tmp_path / "in.json"))
    result = invoke("run", tmp_path / "relu.onnx", "--inputs", tmp_path / "in.json", "-o", tmp_path / "o.json")
    assert result.exit_code == 0, result.output
    text = result.stdout + result.stderr
    assert "[I]" not in text and "[W]" not in text and "2 iterations" in result.stdout


@needs_rtx
def test_verbose_shows_tensorrt_and_quiet_hides_progress(tmp_path):
    mm = matmul_graph(tmp_path / "mm.onnx")
    loud = invoke("--verbose", "build", mm, "-o", tmp_path / "loud.engine")
    assert loud.exit_code == 0, loud.output
    assert "[TensorRT] INFO:" in loud.stderr
    quiet = invoke("--quiet", "build", mm, "-o", tmp_path / "quiet.engine")
    assert quiet.exit_code == 0, quiet.output
    assert "building:" not in quiet.stdout and "[TensorRT]" not in quiet.stderr
    assert quiet.stdout.startswith("built ")


def test_verbose_and_quiet_together_is_one_line():
    assert_one_line_error(invoke("-v", "-q", "models"), 2, "--verbose and --quiet")
