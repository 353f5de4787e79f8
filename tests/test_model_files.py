"""stn_deploy.model_files: what kind of file a model is, how a checkpoint opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from stn_deploy.errors import UserError
from stn_deploy.export import export_module
from stn_deploy.model_files import (
    ModelKind,
    detect_kind,
    load_model,
    onnx_metadata,
    require_kind,
    sample_shape,
)
from stn_deploy.models import ModelConfig, build_model
from stn_deploy.train import save_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of tutorial-stn and its two exports."""
    d = tmp_path_factory.mktemp("model_files")
    config = ModelConfig("tutorial-stn")
    model = build_model(config)
    save_checkpoint(d / "m.pt", model, config)
    export_module(model, config.input_shape, d / "std.onnx", ops="standard", source=d / "m.pt")
    export_module(model, config.input_shape, d / "plugin.onnx", ops="plugin", source=d / "m.pt")
    return {"ckpt": d / "m.pt", "standard": d / "std.onnx", "plugin": d / "plugin.onnx"}


def test_detect_kind(models, tmp_path):
    assert detect_kind(models["ckpt"]) == ModelKind.CHECKPOINT
    assert detect_kind(models["standard"]) == ModelKind.ONNX_STANDARD
    assert detect_kind(models["plugin"]) == ModelKind.ONNX_PLUGIN
    (tmp_path / "m.engine").write_bytes(b"\0" * 16)
    assert detect_kind(tmp_path / "m.engine") == ModelKind.ENGINE
    truncated = tmp_path / "t.onnx"
    data = models["standard"].read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for bad in (truncated, text, tmp_path / "missing.onnx"):
        with pytest.raises(UserError):
            detect_kind(bad)


def test_kind_families_and_values():
    assert [k.family for k in ModelKind] == ["checkpoint", "onnx", "onnx", "engine", "served"]
    assert f"{ModelKind.ONNX_PLUGIN}" == "onnx-plugin"  # what reports print
    assert ModelKind.ONNX_STANDARD.is_onnx and not ModelKind.ENGINE.is_onnx


def test_require_kind_names_both(models):
    assert require_kind(models["ckpt"], ModelKind.CHECKPOINT) == ModelKind.CHECKPOINT
    with pytest.raises(UserError, match="std.onnx is onnx-standard, not checkpoint: hint"):
        require_kind(models["standard"], ModelKind.CHECKPOINT, hint="hint")


def test_load_model_and_recorded_shape(models, tmp_path):
    module, config = load_model(models["ckpt"])
    assert config.name == "tutorial-stn" and not module.training
    assert sample_shape(models["standard"]) == tuple(config.input_shape)
    assert sample_shape(models["ckpt"]) is None
    assert onnx_metadata(models["plugin"])["ops"] == "plugin"
    with pytest.raises(UserError, match="no such file"):
        load_model(tmp_path / "none.pt")
