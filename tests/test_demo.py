"""Tests of ``stn_deploy.demo`` and ``stn-deploy demo``: the quick configuration runs the whole
path end to end and leaves a complete run folder; bad input exits 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from stn_deploy import demo
from stn_deploy.cli import main
from stn_deploy.errors import UserError

STEPS = ["train", "export-standard", "export-plugin", "doctor", "build", "validate", "visualize", "bench"]


def _plugin_library_built() -> bool:
    try:
        from stn_deploy import kernels

        kernels.load_library()
    except Exception:
        return False
    return True


def _rtx_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt_rtx") is not None or importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> demo.DemoResult:
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    return demo.demo(demo.DemoOptions(output_dir=run_dir, progress=False, **demo.QUICK))


@pytest.mark.slow
def test_quick_demo_writes_the_run_folder(quick_run):
    run_dir = quick_run.run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == json.loads(json.dumps(quick_run.summary, default=str))
    assert [s["step"] for s in summary["steps"]] == STEPS
    statuses = {s["step"]: s for s in summary["steps"]}
    failed = {k: v.get("reason") for k, v in statuses.items() if v["status"] == "failed"}
    assert not failed, failed
    assert summary["ok"] is True and quick_run.ok

    expected = {"model.pt", "metrics.json", "model.onnx", "model.plugin.onnx", "doctor.json", "bench.json",
                "bench.png", "warp.png", "summary.json"}
    if _plugin_library_built():
        expected |= {"validate.json"}
        if _rtx_installed():
            expected |= {"model.engine", "model.engine.json"}
    names = {p.name for p in run_dir.iterdir()}
    assert expected <= names, expected - names
    assert not [n for n in names if n.startswith(".")], "atomic writes left temporary files"
    assert set(summary["artefacts"]) == names
    for step in summary["steps"]:
        assert step["seconds"] >= 0
        assert all((run_dir / a).is_file() for a in step["artefacts"])
        if step["status"] == "skipped":
            assert step["reason"]


@pytest.mark.slow
def test_quick_demo_steps_are_consistent(quick_run):
    import torch

    steps = {s["step"]: s for s in quick_run.summary["steps"]}
    train = steps["train"]["detail"]
    assert 0.0 <= train["test_error"] <= 100.0 and train["epochs"] == 1
    # --quick says its model is untrained for accuracy purposes.
    assert train["undertrained"] is True and "UNDERTRAINED" in demo._headline(steps["train"])
    metrics = json.loads((quick_run.run_dir / "metrics.json").read_text())
    assert metrics["test_error"] == train["test_error"]
    assert steps["export-plugin"]["detail"]["op_counts"].get("STNAffineGridSample") == 1
    assert "GridSample" in steps["export-standard"]["detail"]["op_counts"]

    doctor = json.loads((quick_run.run_dir / "doctor.json").read_text())
    assert doctor["model.onnx@ort"]["gating"] and doctor["model.plugin.onnx@rtx"]["gating"]
    # The standard graph cannot be built by TensorRT (no AffineGrid importer): shown, not gating.
    assert doctor["model.onnx@rtx"]["gating"] is False
    assert steps["doctor"]["detail"]["model.onnx@rtx"]["errors"]

    bench = json.loads((quick_run.run_dir / "bench.json").read_text())
    assert bench["settings"]["batches"] == [1, 8] and bench["settings"]["backends"] == ["torch", "ort", "trt"]
    rows = {(r["backend"], r["batch"]): r for r in bench["results"]}
    for batch in (1, 8):
        assert rows[("torch", batch)]["status"] == "ok" and rows[("ort", batch)]["status"] == "ok"
        if not torch.cuda.is_available():
            assert rows[("trt", batch)]["reason"] == "needs a GPU"
    # The bench ran ort on the standard ONNX of the run folder, not a temporary export.
    assert bench["model"]["onnx"].endswith("model.onnx")

    if steps["validate"]["status"] == "ok":
        report = json.loads((quick_run.run_dir / "validate.json").read_text())
        assert report["model.plugin.onnx"]["passed"] is True
        if not torch.cuda.is_available():
            assert "needs a GPU" in steps["validate"]["detail"]["engine"]


@pytest.mark.slow
def test_summary_renders(quick_run):
    from rich.console import Console

    console = Console(record=True, width=120)
    for item in demo.render_summary(quick_run):
        console.print(item)
    text = console.export_text()
    for step in STEPS:
        assert step in text
    assert str(quick_run.run_dir) in text


def test_default_run_dir_is_timestamped():
    import datetime as dt

    path = demo.default_run_dir(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert path == Path("runs/demo-20260102-030405")


def test_options_reject_bad_numbers():
    with pytest.raises(UserError):
        demo.DemoOptions(epochs=0)
    with pytest.raises(UserError):
        demo.DemoOptions(iters=0)


def test_non_empty_run_folder_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        demo.demo(demo.DemoOptions(output_dir=tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--backends", "torch,keras"], "unknown backend 'keras'"),
        (["--batch", "8,a"], "malformed --batch"),
        (["--model", "resnet"], "unknown model"),
        (["--dataset", "mnist"], "unknown dataset"),
        (["--epochs", "0"], "--epochs"),
    ],
    ids=["unknown-backend", "malformed-batch", "unknown-model", "unknown-dataset", "epochs-zero"],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    res = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "run"), "--no-progress", *args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
    assert not (tmp_path / "run").exists()


def test_cli_non_empty_folder_exits_2(tmp_path):
    (tmp_path / "x").write_text("")
    res = CliRunner().invoke(main, ["demo", "-o", str(tmp_path), "--quick", "--no-progress"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [f"error: run folder {tmp_path} is not empty; choose another with -o"]
