"""stn_deploy.jobs.run: model kinds, runners, inputs (npz / Polygraphy JSON), bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from helpers_export import PLUGIN_TOL, STANDARD_TOL, assert_close, kernels_available, perturb_transformers
from stn_deploy.cli import main
from stn_deploy.errors import UserError
from stn_deploy.jobs.export import export_module
from stn_deploy.jobs.run import (
    RunOptions,
    check_inputs,
    load_inputs,
    open_runner,
    random_inputs,
    run,
)
from stn_deploy.jobs.train import save_checkpoint
from stn_deploy.models import ModelConfig, build_model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of tutorial-stn and its two exports."""
    d = tmp_path_factory.mktemp("run")
    config = ModelConfig("tutorial-stn")
    model = perturb_transformers(build_model(config))
    save_checkpoint(d / "m.pt", model, config)
    export_module(model, config.input_shape, d / "std.onnx", ops="standard", source=d / "m.pt")
    export_module(model, config.input_shape, d / "plugin.onnx", ops="plugin", source=d / "m.pt")
    return {"ckpt": d / "m.pt", "standard": d / "std.onnx", "plugin": d / "plugin.onnx", "dir": d}


def test_torch_and_ort_runners_agree(models):
    feed = {"input": np.random.default_rng(3).standard_normal((4, 1, 28, 28)).astype(np.float32)}
    with open_runner(models["ckpt"]) as r:
        expected = r.infer(feed)["output"]
    assert expected.shape == (4, 10)
    with open_runner(models["standard"]) as r:
        assert_close(r.infer(feed)["output"], expected, tol=STANDARD_TOL, what="ort standard vs torch")
    why = kernels_available()
    if why:
        pytest.skip(f"plugin runner needs the kernels: {why}")
    with open_runner(models["plugin"]) as r:
        assert_close(r.infer(feed)["output"], expected, tol=PLUGIN_TOL, what="ort plugin vs torch")


def test_run_with_npz_and_polygraphy_json_inputs(models, tmp_path):
    from polygraphy.json import save_json

    feed = {"input": np.random.default_rng(4).standard_normal((2, 1, 28, 28)).astype(np.float32)}
    npz, js = tmp_path / "in.npz", tmp_path / "in.json"
    np.savez(npz, **feed)
    save_json([feed], str(js))
    assert np.array_equal(load_inputs(js)["input"], feed["input"])
    outs = []
    for inputs, model in ((npz, models["ckpt"]), (js, models["standard"])):
        res = run(RunOptions(model, tmp_path / f"out-{inputs.suffix[1:]}.npz", inputs=inputs))
        assert res.inputs == {"input": [2, 1, 28, 28]}
        with np.load(res.output) as data:
            outs.append(data["output"])
    assert_close(outs[1], outs[0], tol=STANDARD_TOL, what="run ort vs torch")


def test_random_inputs_are_seeded(models, tmp_path):
    a = run(RunOptions(models["standard"], tmp_path / "a.npz", batch=3, seed=7))
    b = run(RunOptions(models["standard"], tmp_path / "b.npz", batch=3, seed=7))
    assert a.inputs == {"input": [3, 1, 28, 28]}
    with np.load(a.output) as x, np.load(b.output) as y:
        assert np.array_equal(x["output"], y["output"])
    with open_runner(models["standard"]) as r:
        meta = r.get_input_metadata(use_numpy_dtypes=False)
    c = random_inputs(meta, batch=2, seed=1)["input"]
    assert c.shape == (2, 1, 28, 28) and np.array_equal(c, random_inputs(meta, batch=2, seed=1)["input"])


@pytest.mark.parametrize(
    "feed,match",
    [
        ({"image": np.zeros((1, 1, 28, 28), np.float32)}, "unknown input name"),
        ({"input": np.zeros((1, 1, 32, 32), np.float32)}, "shape 1x1x32x32"),
        ({"input": np.zeros((1, 28, 28), np.float32)}, "shape 1x28x28"),
        ({"input": np.zeros((1, 1, 28, 28), np.float64)}, "dtype float64"),
    ],
    ids=["unknown-name", "wrong-hw", "wrong-rank", "wrong-dtype"],
)
@pytest.mark.parametrize("kind", ["ckpt", "standard"])
def test_bad_inputs_are_one_line_exit_2(models, tmp_path, feed, match, kind):
    inputs = tmp_path / "bad.npz"
    np.savez(inputs, **feed)
    with pytest.raises(UserError, match=match):
        with open_runner(models[kind]) as r:
            check_inputs(feed, r.get_input_metadata(use_numpy_dtypes=False))
    out = tmp_path / "out.npz"
    res = CliRunner().invoke(main, ["run", str(models[kind]), "--inputs", str(inputs), "-o", str(out)])
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
    assert not out.exists() and not list(tmp_path.glob(".out.npz.*"))


def test_backend_and_engine_errors(models, tmp_path):
    with pytest.raises(UserError, match="runs checkpoints"):
        open_runner(models["standard"], "torch")
    with pytest.raises(UserError, match="export it first"):
        open_runner(models["ckpt"], "ort")
    with pytest.raises(UserError, match="build it first"):
        open_runner(models["standard"], "trt")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="needs a CUDA GPU"):
            open_runner(engine)


def test_cli_run(models, tmp_path):
    out = tmp_path / "o.npz"
    res = CliRunner().invoke(main, ["run", str(models["standard"]), "-o", str(out), "--batch", "2"])
    assert res.exit_code == 0, res.output
    with np.load(out) as data:
        assert data["output"].shape == (2, 10)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x0a\x05hello")
    res = CliRunner().invoke(main, ["run", str(junk), "-o", str(tmp_path / "never.npz")])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert not (tmp_path / "never.npz").exists()


def _polygraphy() -> str:
    import sys

    return str(Path(sys.executable).with_name("polygraphy"))


@pytest.fixture(scope="module")
def polygraphy_files(models):
    """Real ``polygraphy run`` on the standard export: 3 iterations of inputs and its outputs."""
    import subprocess

    d = models["dir"]
    r = subprocess.run([_polygraphy(), "run", str(models["standard"]), "--onnxrt", "--iterations", "3",
                        "--input-shapes", "input:[2,1,28,28]", "--save-inputs", str(d / "pg-in.json"),
                        "--save-outputs", str(d / "pg-out.json")], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return d / "pg-in.json", d / "pg-out.json"


def test_polygraphy_inputs_every_iteration_and_run_results_out(models, polygraphy_files, tmp_path):
    """polygraphy run --save-inputs -> stn-deploy run -o x.json -> polygraphy inspect data."""
    import subprocess

    from polygraphy.comparator import RunResults

    inputs, polygraphy_outputs = polygraphy_files
    out = tmp_path / "out.json"
    result = CliRunner().invoke(main, ["run", str(models["standard"]), "--inputs", str(inputs), "-o", str(out),
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert '"iterations": 3' in result.output and '"format": "polygraphy-run-results"' in result.output
    r = subprocess.run([_polygraphy(), "inspect", "data", str(out)], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(3 iterations)" in r.stdout + r.stderr
    ours = next(iter(RunResults.load(str(out)).values()))
    theirs = next(iter(RunResults.load(str(polygraphy_outputs)).values()))
    assert len(ours) == len(theirs) == 3
    distinct = set()
    for a, b in zip(ours, theirs):
        assert np.array_equal(a["output"], b["output"])  # the same ONNX Runtime on the same inputs
        distinct.add(a["output"].tobytes())
    assert len(distinct) == 3  # every iteration ran, not the first three times


def test_several_iterations_into_npz_are_keyed_by_iteration(models, polygraphy_files, tmp_path):
    inputs, _ = polygraphy_files
    res = run(RunOptions(models["standard"], tmp_path / "o.npz", inputs=inputs))
    assert res.iterations == 3 and res.format == "npz"
    with np.load(res.output) as data:
        assert sorted(data.files) == ["0/output", "1/output", "2/output"]
    with pytest.raises(UserError, match="3 input iterations"):
        load_inputs(inputs)


def test_outputs_file_given_as_inputs_is_named(models, polygraphy_files, tmp_path):
    _, outputs = polygraphy_files
    with pytest.raises(UserError, match=r"holds outputs \(Polygraphy RunResults\), not inputs"):
        run(RunOptions(models["standard"], tmp_path / "o.npz", inputs=outputs))


@pytest.mark.parametrize("target", ["inputs", "model"])
def test_run_never_writes_over_its_input(models, polygraphy_files, target):
    inputs, _ = polygraphy_files
    out = inputs if target == "inputs" else models["standard"]
    with pytest.raises(UserError, match="is the same file as input"):
        run(RunOptions(models["standard"], out, inputs=inputs))


def test_json_given_as_model_is_one_line_exit_2(polygraphy_files, tmp_path):
    inputs, _ = polygraphy_files
    result = CliRunner().invoke(main, ["run", str(inputs), "-o", str(tmp_path / "o.npz")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "is a JSON file, not a model" in result.output
