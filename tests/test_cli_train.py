"""CLI commands models, train, evaluate, visualize: outputs and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from stn_deploy import train
from stn_deploy.cli import main
from stn_deploy.models import MODEL_NAMES, ModelConfig, build_model, count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(res, needle):
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr
    assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An ST-FCN trained for one epoch through the CLI."""
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    res = _invoke("train", "--model", "st-fcn-affine", "--dataset", "R", "--epochs", "1", "--no-progress",
                  "--padding-mode", "border", "-o", out)
    assert res.exit_code == 0, res.output
    return out, res


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory):
    config = ModelConfig("cnn")
    return train.save_checkpoint(tmp_path_factory.mktemp("cnn") / "model.pt", build_model(config), config,
                                 {"dataset": "R"})


def test_models_lists_names_and_parameter_counts():
    res = _invoke("models", "--dataset", "cluttered")
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
    res = _invoke("evaluate", out / "model.pt")
    assert res.exit_code == 0, res.output
    assert "on R" in res.stdout and f"test error {metrics['test_error']:.2f}%" in res.stdout
    res = _invoke("evaluate", out / "model.pt", "--dataset", "E")
    assert res.exit_code == 0 and "on E" in res.stdout


def test_visualize_writes_a_picture(trained, tmp_path):
    out, _ = trained
    target = tmp_path / "warp.png"
    res = _invoke("visualize", out / "model.pt", "-o", target, "--count", "3")
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
        (["evaluate", "{tmp}/missing.pt"], "not found"),
        (["evaluate", "{tmp}/file"], "cannot read checkpoint"),
        (["evaluate", "{cnn}", "--dataset", "RTS"], "takes 28x28 images but dataset RTS has 42x42"),
        (["evaluate", "{cnn}", "--dataset", "SVHN"], "unknown dataset 'SVHN'"),
        (["visualize", "{cnn}", "-o", "{tmp}/w.png"], "has no spatial transformer"),
        (["visualize", "{tmp}/file", "-o", "{tmp}/w.png"], "cannot read checkpoint"),
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
    _one_line_error(_invoke(*filled), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_help_does_not_import_torch():
    code = "import sys, stn_deploy.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
