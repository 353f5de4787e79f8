"""``import stn_deploy``: the jobs and their options, lazily; the CLI calls exactly these objects."""

from __future__ import annotations

import subprocess
import sys

import pytest

import stn_deploy
from helpers_cli import invoke


class _Called(Exception):
    """Raised by the spies: the CLI reached the API's function with these arguments."""


def test_import_is_lazy():
    code = ("import sys, stn_deploy as sd; sd.TrainOptions; sd.RunOptions; sd.BuildOptions; sd.rewrite; "
            "print(sorted(m for m in ('torch', 'tensorrt_rtx', 'tensorrt', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_job_and_option_is_exposed_with_a_docstring():
    for name in stn_deploy.__all__:
        obj = getattr(stn_deploy, name)
        assert obj is not None
    for name, (module, function) in stn_deploy.JOBS.items():
        fn = getattr(__import__(module, fromlist=[function]), function)
        doc = fn.__doc__ or ""
        assert "Args:" in doc and "Returns:" in doc and "Raises:" in doc, f"{name}: Google-style docstring"
    from stn_deploy import train

    assert callable(train) and train.TrainOptions is stn_deploy.TrainOptions  # still the module


#: command line -> (job, options class the CLI must hand it)
_CASES = {
    "train": (["train", "--model", "cnn", "--dataset", "R", "-o", "{tmp}/t"], "TrainOptions"),
    "export": (["export", "{tmp}/m.pt", "-o", "{tmp}/m.onnx"], "ExportOptions"),
    "rewrite": (["rewrite", "{tmp}/m.onnx", "-o", "{tmp}/p.onnx"], "RewriteOptions"),
    "doctor": (["doctor", "{tmp}/m.onnx"], None),
    "build": (["build", "{tmp}/m.onnx", "-o", "{tmp}/m.engine"], "BuildOptions"),
    "validate": (["validate", "{tmp}/m.onnx", "--reference", "{tmp}/m.pt"], "ValidateOptions"),
    "bench": (["bench", "{tmp}/m.pt"], "BenchOptions"),
    "run": (["run", "{tmp}/m.onnx", "-o", "{tmp}/o.npz"], "RunOptions"),
}


@pytest.mark.parametrize("job", sorted(_CASES))
def test_cli_calls_the_api_objects(job, tmp_path, monkeypatch):
    """Replace the API's function; the CLI command must reach the replacement, with the API's options."""
    import importlib

    module_name, function = stn_deploy.JOBS[job]
    module = importlib.import_module(module_name)
    seen = []

    def spy(*args, **kwargs):
        seen.append(args)
        raise _Called

    monkeypatch.setattr(module, function, spy)
    args, options_class = _CASES[job]
    with pytest.raises(_Called):
        invoke(*[a.format(tmp=tmp_path) for a in args])
    if options_class is not None:
        assert isinstance(seen[0][0], getattr(stn_deploy, options_class))
    # The API name reaches the same function.
    with pytest.raises(_Called):
        getattr(stn_deploy, job)(*seen[0])
    assert len(seen) == 2


def test_jobs_take_plain_string_paths(tmp_path):
    from helpers_trt import matmul_graph

    onnx_path = str(matmul_graph(tmp_path / "mm.onnx"))
    result = stn_deploy.run(stn_deploy.RunOptions(onnx_path, str(tmp_path / "out.json"), batch=2))
    assert result.format == "polygraphy-run-results" and result.outputs == {"y": [2, 4]}
    options = stn_deploy.ValidateOptions(onnx_path, str(tmp_path / "ref.json"))
    assert options.reference.suffix == ".json"
