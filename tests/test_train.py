"""Training, evaluation and checkpoints (stn_deploy/train.py)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torch.nn.functional as F

from stn_deploy import data
from stn_deploy.errors import UserError
from stn_deploy.jobs import train
from stn_deploy.models import ModelConfig, build_model, spatial_transformers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", ["st-cnn-affine", "st-cnn-projective", "st-cnn-tps", "st-cnn-attention", "fcn"])
def test_a_few_training_steps_lower_the_loss_and_move_the_transformer(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name))
    batch = data.make_dataset("R", "train", seed=0)
    x, y = batch.images[:32], batch.labels[:32]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sts = spatial_transformers(model)
    before = [st.localisation.regression.bias.detach().clone() for st in sts]
    losses = []
    for _ in range(10):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    # Gradients reach the localisation net through the sampler.
    for st, b in zip(sts, before):
        assert not torch.equal(st.localisation.regression.bias, b)


def test_train_writes_a_checkpoint_that_rebuilds_the_model(tmp_path):
    metrics = train.train(train.TrainOptions("st-fcn-affine", "R", output_dir=tmp_path, epochs=2, progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model.pt"]
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["test_error"] == metrics["test_error"] and len(on_disk["train_loss"]) == 2
    assert metrics["train_loss"][1] < metrics["train_loss"][0]
    assert 0.0 <= metrics["test_error"] < 90.0  # better than chance after two epochs
    model, config = train.load_checkpoint(tmp_path / "model.pt")
    assert config == ModelConfig("st-fcn-affine", in_size=(28, 28)) and not model.training
    assert train.evaluate(model, "R") == pytest.approx(metrics["test_error"])
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    assert raw["format"] == "stn-deploy-checkpoint" and raw["version"] == 1
    assert raw["train"]["dataset"] == "R" and raw["train"]["epochs"] == 2


def test_training_is_deterministic_and_draws_fresh_distortions_each_epoch(monkeypatch):
    seen = []
    real = data.make_dataset

    def spy(name, split="train", seed=0):
        seen.append((split, seed))
        return real(name, split, seed)

    monkeypatch.setattr(data, "make_dataset", spy)
    options = train.TrainOptions("fcn", "R", epochs=2, seed=7, progress=False)
    a, b = train.train(options), train.train(options)
    assert a["train_loss"] == b["train_loss"] and a["test_error"] == b["test_error"]
    epoch_seeds = [s for split, s in seen[: len(seen) // 2] if split == "train"][1:]  # [0] sizes the run
    assert len(epoch_seeds) == 2 and len(set(epoch_seeds)) == 2
    assert ("test", 0) in seen


def test_evaluate_counts_wrong_predictions():
    class Constant(torch.nn.Module):
        def forward(self, x):
            return F.one_hot(torch.full((x.shape[0],), 3), 10).float()

    test = data.make_dataset("E", "test", 0)
    expected = 100.0 * float((test.labels != 3).float().mean())
    assert train.evaluate(Constant(), "E") == pytest.approx(expected)


def test_checkpoint_round_trip_keeps_weights_and_config(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig("st-cnn-tps", in_size=(42, 42), tps_grid=(3, 3))
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = train.save_checkpoint(tmp_path / "sub" / "m.pt", model, config, {"dataset": "RTS"})
    loaded, again = train.load_checkpoint(path)
    assert again == config
    x = torch.rand(2, 1, 42, 42)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left beside it


def _foreign(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "missing":
        return path
    if kind == "folder":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif kind == "plain-state-dict":
        torch.save(build_model(ModelConfig("cnn")).state_dict(), path)
    elif kind == "pickled-object":
        path.write_bytes(pickle.dumps(ValueError("x")))
        torch.save({"format": "stn-deploy-checkpoint", "obj": ValueError("x")}, path)
    elif kind == "other-version":
        train.save_checkpoint(path, build_model(ModelConfig("cnn")), ModelConfig("cnn"))
        raw = torch.load(path, weights_only=True)
        raw["version"] = 99
        torch.save(raw, path)
    elif kind == "wrong-weights":
        train.save_checkpoint(path, build_model(ModelConfig("fcn")), ModelConfig("fcn"))
        raw = torch.load(path, weights_only=True)
        raw["config"]["name"] = "cnn"
        torch.save(raw, path)
    elif kind == "unknown-model":
        train.save_checkpoint(path, build_model(ModelConfig("cnn")), ModelConfig("cnn"))
        raw = torch.load(path, weights_only=True)
        raw["config"]["name"] = "resnet"
        torch.save(raw, path)
    return path


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("missing", "no such file"),
        ("folder", "not a file"),
        ("garbage", "is not an stn-deploy checkpoint"),
        ("plain-state-dict", "not an stn-deploy checkpoint"),
        ("pickled-object", "weights-only"),
        ("other-version", "version 99"),
        ("wrong-weights", "do not match"),
        ("unknown-model", "unknown model 'resnet'"),
    ],
)
def test_bad_checkpoints_are_one_line_user_errors(tmp_path, kind, needle):
    path = _foreign(tmp_path, kind)
    with pytest.raises(UserError, match=needle) as info:
        train.load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_train_rejects_unwritable_output_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot create output folder"):
        train.train(train.TrainOptions("cnn", "R", output_dir=blocker / "run", epochs=1, progress=False))


@pytest.mark.parametrize(
    "model,dataset,needle",
    [("resnet", "R", "unknown model"), ("cnn", "MNIST", "unknown dataset")],
)
def test_train_rejects_unknown_names(model, dataset, needle):
    with pytest.raises(UserError, match=needle):
        train.train(train.TrainOptions(model, dataset, epochs=1, progress=False))


def test_resolve_dataset_defaults_to_the_training_set_and_checks_sizes(tmp_path):
    config = ModelConfig("cnn", in_size=(42, 42))
    path = train.save_checkpoint(tmp_path / "m.pt", build_model(config), config, {"dataset": "RTS"})
    assert train.resolve_dataset(path, config) == "RTS"
    with pytest.raises(UserError, match="takes 42x42 images but dataset R has 28x28"):
        train.resolve_dataset(path, config, "R")
    bare = train.save_checkpoint(tmp_path / "bare.pt", build_model(config), config)
    with pytest.raises(UserError, match="pass --dataset"):
        train.resolve_dataset(bare, config)
