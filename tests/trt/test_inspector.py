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
