"""stn_deploy.model_files: what kind of file a model is, how a checkpoint opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from stn_deploy.errors import UserError
from stn_deploy.jobs.export import export_module
from stn_deploy.jobs.train import save_checkpoint
from stn_deploy.model_files import (
    ModelKind,
    detect_kind,
    load_model,
    onnx_metadata,
    require_kind,
    sample_shape,
)
from stn_deploy.models import ModelConfig, build_model


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
    assert [k.family for k in ModelKind] == ["checkpoint", "program", "onnx", "onnx", "engine", "served"]
    assert f"{ModelKind.ONNX_PLUGIN}" == "onnx-plugin"  # what reports print
    assert ModelKind.ONNX_STANDARD.is_onnx and not ModelKind.ENGINE.is_onnx
    assert [k for k in ModelKind if k.is_torch] == [ModelKind.CHECKPOINT, ModelKind.PROGRAM]


def test_programs_and_other_pytorch_files(tmp_path):
    import torch

    from stn_deploy.user_model import save_program

    save_program(torch.nn.Linear(2, 3), (torch.zeros(1, 2),), tmp_path / "m.pt2")
    assert detect_kind(tmp_path / "m.pt2") == ModelKind.PROGRAM
    (tmp_path / "m.pt2").rename(tmp_path / "renamed.pt")  # told by content, not suffix
    assert detect_kind(tmp_path / "renamed.pt") == ModelKind.PROGRAM
    torch.save({"w": torch.zeros(2)}, tmp_path / "fake.pt2")
    with pytest.raises(UserError, match="not a torch.export program"):
        detect_kind(tmp_path / "fake.pt2")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), tmp_path / "ts.pt")
    with pytest.raises(UserError, match=r"TorchScript archive .*torch.export.save"):
        detect_kind(tmp_path / "ts.pt")


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
