"""stn_deploy.trt.inspector: what an engine file holds, without a GPU (sidecar) and with one."""

from __future__ import annotations

import shutil

import pytest

from helpers_trt import (
    needs_rtx,
)
from stn_deploy.errors import UserError

# --------------------------------------------------------------------------- inspect, runner


@needs_rtx
def test_inspect_without_gpu_reads_sidecar(standard_builds):
    from stn_deploy.trt import gpu_available, inspect

    if gpu_available():
        pytest.skip("a GPU is present: inspect reads the engine itself")
    report = inspect(standard_builds["fp32"].options.engine)
    assert report["needs_gpu"] and "GPU" in report["needs_gpu"]
    assert report["sidecar_matches"] is True
    assert report["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 4]}]
    assert report["profiles"][0][0]["max"] == [16, 4]
    assert report["layers_source"].startswith("sidecar")


@needs_rtx
def test_inspect_flags_foreign_version_and_non_engine(standard_builds, tmp_path):
    from stn_deploy.trt import inspect

    data = bytearray(standard_builds["fp32"].options.engine.read_bytes())
    data[24:27] = bytes([1, 3, 0])
    (tmp_path / "old.engine").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"built by TensorRT-RTX 1\.3\.0"):
        inspect(tmp_path / "old.engine")
    (tmp_path / "x.engine").write_bytes(b"\x08\x07onnx-ish" + bytes(64))
    with pytest.raises(UserError, match="not a TensorRT engine"):
        inspect(tmp_path / "x.engine")
    with pytest.raises(UserError, match="engine .*: no such file"):
        inspect(tmp_path / "none.engine")


@needs_rtx
def test_inspect_notices_stale_sidecar(standard_builds, tmp_path):
    from stn_deploy.trt import inspect

    src = standard_builds["fp32"].options.engine
    shutil.copy(standard_builds["fp16"].options.engine, tmp_path / "e.engine")
    shutil.copy(src.with_name(src.name + ".json"), tmp_path / "e.engine.json")
    assert inspect(tmp_path / "e.engine")["sidecar_matches"] is False


@needs_rtx
def test_inspect_engine_built_by_another_tool(standard_builds, tmp_path):
    """No sidecar (polygraphy convert, trtexec): the report says what is unknown, not '0 layers'."""
    from stn_deploy.trt import format_report, gpu_available, inspect

    engine = tmp_path / "foreign.engine"
    shutil.copyfile(standard_builds["fp32"].options.engine, engine)
    report = inspect(engine)
    if gpu_available():  # the engine itself answers
        assert [t["name"] for t in report["inputs"]] == ["x"] and report["profiles"]
        return
    lines = format_report(report)
    assert report["sidecar"] is None and report["engine"]["header_version"].startswith("1.7")
    assert any(line.startswith("io       unknown") for line in lines)
    assert not any(line.startswith("layers") for line in lines)


# --------------------------------------------------------------------------- summary / --layers / --json


def _report_with_layers(layers: list[dict]) -> dict:
    return {"engine": {"path": "m.engine", "bytes": 10, "backend": {"name": "rtx", "version": "1.7.1"}},
            "sidecar": {"precision": "fp16", "backend": {"version": "1.7.1"}}, "sidecar_matches": True,
            "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 1, 8, 8]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 1, 8, 8]}],
            "profiles": [[{"name": "x", "min": [1, 1, 8, 8], "opt": [8, 1, 8, 8], "max": [64, 1, 8, 8]}]],
            "layers": layers, "layers_source": "sidecar: network as parsed", "needs_gpu": None}


def test_summary_counts_layers_by_type_and_names_plugin_layers():
    """A network of hundreds of layers reads as a few lines: counts by type, output dtypes, the
    plugin layers by name; every layer only with layers=True."""
    from stn_deploy.trt import format_report

    layers = [{"name": f"/Shape_{i}", "type": "SHAPE", "outputs": ["int64"]} for i in range(300)]
    layers += [{"name": f"/Mul_{i}", "type": "ELEMENTWISE", "outputs": ["float16"]} for i in range(120)]
    layers.insert(200, {"name": "/GridSample/STNGridSample", "type": "PLUGIN_V3", "outputs": ["float16"],
                        "plugin": {"name": "STNGridSample", "version": "1", "namespace": ""}})
    report = _report_with_layers(layers)
    summary = format_report(report)
    assert "layers   421 (sidecar: network as parsed)" in summary
    assert "by type  SHAPE 300, ELEMENTWISE 120, PLUGIN_V3 1" in summary
    assert "precision fp16 (layer outputs: int64 300, float16 121)" in summary
    assert "plugins  1 layer(s):" in summary and "  /GridSample/STNGridSample  plugin STNGridSample v1" in summary
    assert len(summary) < 20 and not any("/Shape_7" in line for line in summary)
    every = format_report(report, layers=True)
    assert sum("/Shape_" in line for line in every) == 300 and any("plugin STNGridSample v1" in line for line in every)


@needs_rtx
def test_cli_inspect_summary_layers_and_json(standard_builds):
    """``inspect`` summarises, ``--layers`` lists every layer, ``--json`` keeps everything (every
    layer and the summary)."""
    import json

    from helpers_cli import invoke

    engine = standard_builds["gridsample"].options.engine
    summary, every, as_json = (invoke("inspect", engine, *extra) for extra in ((), ("--layers",), ("--json",)))
    assert summary.exit_code == every.exit_code == as_json.exit_code == 0
    report = json.loads(as_json.output)
    names = [layer["name"] for layer in report["layers"]]
    assert names and report["summary"]["layers"] == len(names)
    assert "by type  " in summary.output and "all layers:" not in summary.output
    assert "all layers:" in every.output and all(name in every.output for name in names)
    assert len(every.output.splitlines()) == len(summary.output.splitlines()) + len(names)
