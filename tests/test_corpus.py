"""Real public models that sample with grid_sample (tests/corpus), through the CLI as a user would.

Each model of the corpus, with random weights, is exported with a plain ``torch.onnx.export``
(legacy exporter at opset 20, and the dynamo exporter with its defaults), then:
``doctor`` -> ``rewrite`` -> ``run`` (plugin ops in ONNX Runtime vs PyTorch) -> RTX ``build``
(CPU-only AOT, in a child process as the CLI does) + ``inspect`` -> ``rewrite --to native``
(opset 17 wherever 4-D; ONNX Runtime vs PyTorch) + ``build`` -> ``doctor --target trt10``
clean where 4-D. The README's corpus table is this test's result.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from corpus import CORPUS, CorpusModel

from helpers_cli import invoke
from helpers_export import PLUGIN_TOL, assert_close, kernels_available
from helpers_trt import needs_rtx
from stn_deploy import schema

EXPORTERS = ("legacy", "dynamo")
#: What the legacy exporter is given: the opset that emits AffineGrid + GridSample.
LEGACY_OPSET = 20
#: Corpus models whose dynamo export fails in torch.export itself (library code, not ours).
DYNAMO_EXPORT_FAILS = {
    "oflib-apply-flow": "apply_flow branches on the flow's values (is_zero_flow): torch.export cannot trace it",
}


def _skip_if_missing(entry: CorpusModel) -> None:
    why = entry.missing()
    if why:
        pytest.skip(why)


def _ids(entry: CorpusModel) -> str:
    return entry.name


# --------------------------------------------------------------------------- the corpus itself (fast)


def test_corpus_spans_libraries_and_ranks():
    names = [e.name for e in CORPUS]
    assert len(names) == len(set(names)) >= 6
    assert len({e.library for e in CORPUS}) >= 4
    assert {e.rank for e in CORPUS} == {4, 5}
    for e in CORPUS:
        assert re.fullmatch(r"[a-z0-9-]+", e.name), e.name
        assert all(isinstance(axis, int) for axes in e.dynamic.values() for axis in axes)


@pytest.mark.parametrize("entry", CORPUS, ids=_ids)
def test_corpus_model_samples_with_grid_sample(entry, one_torch_thread):
    """Each model builds the same on every call (seeded), runs, and really calls grid_sample
    (ATen's grid sampler of its rank) - the library's code, not a stand-in."""
    import torch

    _skip_if_missing(entry)
    assert entry.version is not None
    model, inputs = entry.build()
    model2, inputs2 = entry.build()
    assert not model.training
    assert inputs.keys() == inputs2.keys() and all(torch.equal(inputs[k], inputs2[k]) for k in inputs)
    assert set(entry.dynamic) <= set(inputs)
    with torch.no_grad(), warnings.catch_warnings(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        warnings.simplefilter("ignore")
        out = model(*inputs.values())
        again = model2(*inputs2.values())
    assert torch.equal(out, again) and torch.isfinite(out).all()
    sampler = "aten::grid_sampler_2d" if entry.rank == 4 else "aten::grid_sampler_3d"
    assert any(ev.name == sampler for ev in prof.events()), f"{entry.name} never called {sampler}"


# --------------------------------------------------------------------------- the pipeline (slow)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(entry, exporter) -> (onnx path, inputs .npz, {input: array}, PyTorch output), exported once
    per module."""
    import torch

    root = tmp_path_factory.mktemp("corpus")
    cache: dict = {}

    def get(entry: CorpusModel, exporter: str):
        key = (entry.name, exporter)
        if key not in cache:
            model, inputs = entry.build()
            with torch.no_grad():
                expected = model(*inputs.values()).numpy()
            feeds = {k: v.numpy() for k, v in inputs.items()}
            npz = root / f"{entry.name}.inputs.npz"
            np.savez(npz, **feeds)
            path = root / f"{entry.name}.{exporter}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if exporter == "legacy":
                    torch.onnx.export(model, tuple(inputs.values()), str(path), input_names=list(inputs),
                                      output_names=["out"], dynamic_axes=entry.dynamic_axes(),
                                      opset_version=LEGACY_OPSET, dynamo=False)
                else:
                    torch.onnx.export(model, tuple(inputs.values()), str(path), input_names=list(inputs),
                                      output_names=["out"], dynamo=True)
            cache[key] = (path, npz, feeds, expected)
        return cache[key]

    return get


def _cases():
    for entry in CORPUS:
        for exporter in EXPORTERS:
            marks = []
            if exporter == "dynamo" and entry.name in DYNAMO_EXPORT_FAILS:
                marks.append(pytest.mark.xfail(reason=DYNAMO_EXPORT_FAILS[entry.name], strict=True,
                                               raises=torch_export_error()))
            yield pytest.param(entry, exporter, marks=marks, id=f"{entry.name}-{exporter}")


def torch_export_error() -> type[BaseException]:
    from torch.onnx import errors

    return getattr(errors, "TorchExportError", Exception)


def _ort(path: Path, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})[0]


def _plugin_node_count(path: Path) -> int:
    return sum(n.domain == schema.PLUGIN_DOMAIN for n in onnx.load(str(path)).graph.node)


@pytest.mark.slow
@needs_rtx
@pytest.mark.parametrize("entry,exporter", list(_cases()))
def test_corpus_model_reaches_an_engine(entry, exporter, exported, tmp_path, one_torch_thread):
    """Plain export -> one rewrite -> one build, and the native form -> build, for every model."""
    _skip_if_missing(entry)
    if kernels_available() is not None:
        pytest.skip(kernels_available())
    src, npz, feeds, expected = exported(entry, exporter)

    res = invoke("doctor", src)  # the plain export: errors (AffineGrid, #4646) are what rewrite is for
    assert res.exit_code in (0, 1), res.output

    plugin = tmp_path / "plugin.onnx"
    res = invoke("rewrite", src, "-o", plugin)
    assert res.exit_code == 0, res.output
    assert "doctor for" in res.output and "AffineGrid" not in {n.op_type for n in onnx.load(str(plugin)).graph.node}
    n_plugin = _plugin_node_count(plugin)
    assert n_plugin >= 1

    res = invoke("run", plugin, "--inputs", npz, "-o", tmp_path / "out.npz")
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "out.npz") as got:
        assert_close(got[got.files[0]], expected, tol=PLUGIN_TOL, what=f"{entry.name} plugin ONNX (ORT) vs PyTorch")

    engine = tmp_path / "plugin.engine"
    res = invoke("build", plugin, "-o", engine)
    assert res.exit_code == 0, res.output
    res = invoke("inspect", engine)
    assert res.exit_code == 0, res.output
    assert f"plugins  {n_plugin} layer(s)" in res.output
    assert len(res.output.splitlines()) < 40  # a summary, not every layer

    native = tmp_path / "native.onnx"
    res = invoke("rewrite", src, "--to", "native", "-o", native)
    assert res.exit_code == 0, res.output
    model = onnx.load(str(native))
    opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
    assert opset == (17 if entry.rank == 4 else 20), res.output
    assert not any(n.domain == schema.PLUGIN_DOMAIN or n.op_type == "AffineGrid" for n in model.graph.node)
    assert_close(_ort(native, feeds), expected, tol=PLUGIN_TOL, what=f"{entry.name} native ONNX (ORT) vs PyTorch")
    res = invoke("build", native, "-o", tmp_path / "native.engine")
    assert res.exit_code == 0, res.output

    res = invoke("doctor", native, "--target", "trt10")
    if entry.rank == 4:
        assert res.exit_code == 0, res.output
    else:  # 5-D native GridSample: TensorRT 10 has none (the plugin form is the way there)
        assert res.exit_code == 1 and "trt-gridsample-5d" in res.output
