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


def test_public_jobs_are_plain_functions_with_real_signatures():
    """``help(sd.export)`` and ``inspect.signature(sd.export)`` show the job itself: the public
    names are the functions, never a module made callable."""
    import importlib
    import inspect

    for name in stn_deploy.JOBS:
        fn = getattr(stn_deploy, name)
        assert inspect.isfunction(fn), f"sd.{name} is a {type(fn).__name__}"
        params = inspect.signature(fn).parameters
        assert params and all(p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values()), name
        assert fn.__doc__ and fn.__name__ == name
        unannotated = [p for p, v in params.items() if v.annotation is inspect.Parameter.empty]
        assert not unannotated and inspect.signature(fn).return_annotation is not inspect.Signature.empty, \
            f"sd.{name}: annotate {unannotated or 'the return type'}"
    for name in stn_deploy.OPTIONS:
        cls = getattr(stn_deploy, name)
        assert inspect.isclass(cls) and cls.__doc__, name
    # A job's module is imported under its own name; the public name stays the function.
    importlib.import_module("stn_deploy.jobs.export")
    assert inspect.isfunction(stn_deploy.export)


def test_type_stub_lists_exactly_the_public_names():
    """``__init__.pyi`` (what type checkers and editors read) names every public object, from the
    module the lazy lookup takes it from."""
    import ast
    from pathlib import Path

    stub = ast.parse((Path(stn_deploy.__file__).with_suffix(".pyi")).read_text())
    imported = {a.asname: (node.module, a.name) for node in stub.body if isinstance(node, ast.ImportFrom)
                for a in node.names}
    public = {**{k: v for k, v in stn_deploy.JOBS.items()}, **{k: (m, k) for k, m in stn_deploy.OPTIONS.items()}}
    assert imported == public


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
