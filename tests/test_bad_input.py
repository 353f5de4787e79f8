"""A battery of bad input and faults over every command: exit code 2 (1 where a check ran and
failed), one ``error:`` line, no traceback, the output that was already there byte-identical,
nothing left behind in the output folder or in /tmp; SIGINT/SIGTERM in the middle of a run."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers_cli import assert_one_line_error, invoke
from helpers_export import kernels_available, perturbed_checkpoint
from helpers_trt import HAS_RTX, matmul_graph
from stn_deploy import schema

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OLD = b"the output of an earlier run\n"
#: What a command may leave in /tmp while it runs; none of it may outlive the command.
TMP_PATTERNS = ("stn-deploy-build-*.log", "stn-bench-*")


# --------------------------------------------------------------------------- the workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """Good models and inputs, and every kind of bad file, made once."""
    import onnx
    import torch

    from stn_deploy.jobs.export import export_module
    from stn_deploy.model_files import load_model

    d = tmp_path_factory.mktemp("bad-input")
    perturbed_checkpoint(d / "m.pt", "tutorial-stn", seed=0)
    model, config = load_model(d / "m.pt")
    export_module(model, config.input_shape, d / "std.onnx", ops="standard", source=d / "m.pt")
    shutil.copy(d / "std.onnx", d / "std.json")
    matmul_graph(d / "mm.onnx")  # builds with TensorRT-RTX (the standard export has AffineGrid)
    if kernels_available() is None:
        export_module(model, config.input_shape, d / "plugin.onnx", ops="plugin", source=d / "m.pt")
        bad = onnx.load(str(d / "plugin.onnx"))
        for node in bad.graph.node:
            if node.domain == schema.PLUGIN_DOMAIN:
                for a in node.attribute:
                    if a.name == schema.FIELD_ALIGN_CORNERS:
                        a.i = 5
        onnx.save(bad, str(d / "plugin-align5.onnx"))
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    np.savez(d / "in.npz", input=x)
    np.savez(d / "in-wrong-name.npz", image=x)
    from polygraphy.json import save_json

    save_json([{"input": x}], str(d / "in.json"))
    # Bad files, one of each kind.
    (d / "empty.onnx").write_bytes(b"")
    (d / "text.txt").write_text("hello, not a model\n")
    (d / "data.json").write_text(json.dumps({"input": [1, 2, 3]}))
    data = (d / "std.onnx").read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 3])
    (d / "random.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    (d / "random.pt").write_bytes(np.random.default_rng(2).bytes(4096))
    torch.save({"a": collections.OrderedDict, "b": Path("x")}, d / "pickled.pt")  # Python objects, not weights
    (d / "short.engine").write_bytes(b"vtrt" + bytes(28))
    (d / "garbage.engine").write_bytes(np.random.default_rng(3).bytes(1024))
    (d / "folder").mkdir()
    # An engine-looking file (RTX 1.7.1 header) with sidecars of the wrong shape.
    head = bytearray(512)
    head[:4], head[24:27] = b"vtrt", bytes([1, 7, 1])
    for name, sidecar in {"side-list": [1, 2], "side-profiles": {"format": "stn-deploy-engine", "profiles": "x"},
                          "side-backend": {"format": "stn-deploy-engine", "backend": "rtx"},
                          "side-garbage": None}.items():
        (d / f"{name}.engine").write_bytes(bytes(head))
        side = d / f"{name}.engine.json"
        side.write_text("{not json" if sidecar is None else json.dumps(sidecar))
    # An ONNX whose external data file is gone.
    ext = onnx.load(str(d / "std.onnx"))
    onnx.save(ext, str(d / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    (d / "ext.data").unlink()
    # A reference that takes another input shape than the candidate.
    from stn_deploy.models import ModelConfig, build_model

    other_config = ModelConfig("st-cnn-affine", in_size=(42, 42))
    export_module(build_model(other_config), other_config.input_shape, d / "other.onnx", ops="standard",
                  dynamic_hw=False)
    np.savez(d / "in-float64.npz", input=x.astype(np.float64))
    torch.set_num_threads(1)
    return d


def _leftovers_in_tmp() -> set[str]:
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    return {p.name for pattern in TMP_PATTERNS for p in tmp.glob(pattern)}


def _fill_outputs(out: Path) -> dict[str, bytes]:
    """The outputs an earlier run left: every path a case may write to."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("o.onnx", "o.npz", "o.json", "o.engine", "o.engine.json", "r.json", "w.png", "b.json", "b.png"):
        (out / name).write_bytes(OLD)
    return {p.name: p.read_bytes() for p in out.iterdir()}


def run_case(args: list[str], code: int, words: tuple[str, ...], out: Path, protect: tuple[Path, ...] = ()):
    before = _fill_outputs(out)
    protected = {p: p.read_bytes() for p in protect if p.is_file()}
    tmp_before = _leftovers_in_tmp()
    result = invoke(*args)
    assert_one_line_error(result, code, *words)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before, "the output folder changed: " + str(sorted(set(after) ^ set(before)) or "contents")
    for p, content in protected.items():
        assert p.read_bytes() == content, f"{p} was overwritten"
    assert _leftovers_in_tmp() <= tmp_before


def _fill(template: list[str], ws: Path, out: Path) -> list[str]:
    return [a.format(ws=ws, out=out) for a in template]


# --------------------------------------------------------------------------- bad model files, every command

BAD_FILES = {
    "missing": ("{ws}/missing.onnx", "no such file"),
    "directory": ("{ws}/folder", "directory"),
    "empty": ("{ws}/empty.onnx", "ONNX"),
    "text": ("{ws}/text.txt", "not"),
    "json": ("{ws}/data.json", "not"),
    "truncated-onnx": ("{ws}/truncated.onnx", "ONNX"),
    "random-onnx": ("{ws}/random.onnx", "ONNX"),
    "random-pt": ("{ws}/random.pt", "checkpoint"),
    "pickled-pt": ("{ws}/pickled.pt", "checkpoint"),
    "short-engine": ("{ws}/short.engine", "engine"),
    "garbage-engine": ("{ws}/garbage.engine", "engine"),
}
MODEL_COMMANDS = {
    "evaluate": ["evaluate", "{m}"],
    "visualize": ["visualize", "{m}", "-o", "{out}/w.png"],
    "export": ["export", "{m}", "-o", "{out}/o.onnx"],
    "rewrite": ["rewrite", "{m}", "-o", "{out}/o.onnx"],
    "doctor": ["doctor", "{m}"],
    "run": ["run", "{m}", "-o", "{out}/o.npz"],
    "build": ["build", "{m}", "-o", "{out}/o.engine"],
    "inspect": ["inspect", "{m}"],
    "validate-candidate": ["validate", "{m}", "--reference", "{ws}/m.pt", "--report", "{out}/r.json"],
    "validate-reference": ["validate", "{ws}/std.onnx", "--reference", "{m}", "--report", "{out}/r.json"],
    "bench": ["bench", "{m}", "-o", "{out}", "--name", "b", "--iters", "1", "--warmup", "0", "--batch", "1",
              "--backends", "torch,ort"],
    "quantize": ["quantize", "{m}", "-o", "{out}/o.onnx", "--samples", "8"],
    "triton": ["triton", "{m}", "-o", "{out}/repo"],
}
BAD_MODEL_CASES = list(itertools.product(MODEL_COMMANDS, BAD_FILES))


@pytest.mark.parametrize("command, bad", BAD_MODEL_CASES, ids=[f"{c}-{b}" for c, b in BAD_MODEL_CASES])
def test_bad_model_file(ws, tmp_path, command, bad):
    path, _word = BAD_FILES[bad]
    template = [a.replace("{m}", path) for a in MODEL_COMMANDS[command]]
    # Each command says it in its own words; that it is one line, exit 2, is the contract.
    run_case(_fill(template, ws, tmp_path / "out"), 2, (), tmp_path / "out")


# --------------------------------------------------------------------------- an output that is an input

SAME_FILE_CASES = {
    "export-onto-checkpoint": (["export", "{ws}/m.pt", "-o", "{ws}/m.pt"], "{ws}/m.pt"),
    "export-onto-hardlink": (["export", "{ws}/m.pt", "-o", "{ws}/m-link.pt"], "{ws}/m.pt"),
    "rewrite-onto-input": (["rewrite", "{ws}/std.onnx", "-o", "{ws}/std.onnx"], "{ws}/std.onnx"),
    "build-onto-onnx": (["build", "{ws}/std.onnx", "-o", "{ws}/std.onnx"], "{ws}/std.onnx"),
    # -o std: its sidecar is std.json, which here is the ONNX given as MODEL
    "build-sidecar-onto-onnx": (["build", "{ws}/std.json", "-o", "{ws}/std"], "{ws}/std.json"),
    "run-onto-inputs": (["run", "{ws}/std.onnx", "--inputs", "{ws}/in.npz", "-o", "{ws}/in.npz"], "{ws}/in.npz"),
    "run-onto-model": (["run", "{ws}/std.onnx", "-o", "{ws}/std.onnx"], "{ws}/std.onnx"),
    "validate-report-onto-candidate": (["validate", "{ws}/std.onnx", "--reference", "{ws}/m.pt", "--report",
                                        "{ws}/std.onnx"], "{ws}/std.onnx"),
    "validate-report-onto-inputs": (["validate", "{ws}/std.onnx", "--reference", "{ws}/m.pt", "--inputs",
                                     "{ws}/in.npz", "--report", "{ws}/in.npz"], "{ws}/in.npz"),
    "visualize-onto-checkpoint": (["visualize", "{ws}/m.pt", "-o", "{ws}/m.pt"], "{ws}/m.pt"),
}


@pytest.mark.parametrize("case", sorted(SAME_FILE_CASES))
def test_output_that_is_an_input_is_refused(ws, tmp_path, case):
    link = ws / "m-link.pt"
    if not link.exists():
        os.link(ws / "m.pt", link)
    args, protected = SAME_FILE_CASES[case]
    run_case(_fill(args, ws, tmp_path), 2, ("same file",), tmp_path / "out",
             protect=(Path(protected.format(ws=ws)),))


# --------------------------------------------------------------------------- bad options and values

OPTION_CASES = {
    # seeds every library accepts
    "train-seed-huge": (["train", "--model", "cnn", "--dataset", "R", "--seed", str(10**20), "-o", "{out}/t"], "seed"),
    "train-seed-negative": (["train", "--model", "cnn", "--dataset", "R", "--seed", "-1", "-o", "{out}/t"], "seed"),
    "run-seed-huge": (["run", "{ws}/std.onnx", "-o", "{out}/o.npz", "--seed", str(10**20)], "seed"),
    "bench-seed-huge": (["bench", "{ws}/std.onnx", "-o", "{out}", "--name", "b", "--seed", str(10**20)], "seed"),
    "evaluate-seed-huge": (["evaluate", "{ws}/m.pt", "--seed", str(10**20)], "seed"),
    "visualize-seed-huge": (["visualize", "{ws}/m.pt", "-o", "{out}/w.png", "--seed", str(10**20)], "seed"),
    "demo-seed-huge": (["demo", "-o", "{out}/demo", "--seed", str(10**20)], "seed"),
    # sizes
    "run-batch-huge": (["run", "{ws}/std.onnx", "-o", "{out}/o.npz", "--batch", "1000000000"], "GiB"),
    "run-batch-zero": (["run", "{ws}/std.onnx", "-o", "{out}/o.npz", "--batch", "0"], "batch"),
    "train-epochs-zero": (["train", "--model", "cnn", "--dataset", "R", "--epochs", "0", "-o", "{out}/t"], "epochs"),
    "train-lr-zero": (["train", "--model", "cnn", "--dataset", "R", "--lr", "0", "-o", "{out}/t"], "lr"),
    # validate numbers
    "validate-drop-nan": (["validate", "{ws}/std.onnx", "--reference", "{ws}/m.pt", "--max-accuracy-drop", "nan"],
                          "max-accuracy-drop"),
    "validate-drop-inf": (["validate", "{ws}/std.onnx", "--reference", "{ws}/m.pt", "--max-accuracy-drop", "inf"],
                          "max-accuracy-drop"),
    "validate-drop-negative": (["validate", "{ws}/std.onnx", "--reference", "{ws}/m.pt", "--max-accuracy-drop",
                                "-1"], "max-accuracy-drop"),
    "validate-atol-nan": (["validate", "{ws}/std.onnx", "--reference", "{ws}/m.pt", "--atol", "nan"], "atol"),
    "validate-atol-word": (["validate", "{ws}/std.onnx", "--reference", "{ws}/m.pt", "--atol", "tight"], "atol"),
    "validate-rtol-negative": (["validate", "{ws}/std.onnx", "--reference", "{ws}/m.pt", "--rtol", "-1e-3"], "rtol"),
    "validate-atol-unknown-output": (["validate", "{ws}/std.onnx", "--reference", "{ws}/m.pt", "--max-images", "8",
                                      "--no-adversarial", "--atol", "logits:1e-3"], "logits"),
    "validate-batch-zero": (["validate", "{ws}/std.onnx", "--reference", "{ws}/m.pt", "--batch-size", "0"], "batch"),
    "validate-other-input-shape": (["validate", "{ws}/std.onnx", "--reference", "{ws}/other.onnx",
                                    "--max-images", "8", "--no-adversarial"], ""),
    # bench
    "bench-name-parent": (["bench", "{ws}/std.onnx", "-o", "{out}", "--name", "../x"], "name"),
    "bench-name-slash": (["bench", "{ws}/std.onnx", "-o", "{out}", "--name", "a/b"], "name"),
    "bench-name-empty": (["bench", "{ws}/std.onnx", "-o", "{out}", "--name", ""], "name"),
    "bench-backend-unknown": (["bench", "{ws}/std.onnx", "-o", "{out}", "--backends", "tpu"], "tpu"),
    "bench-backends-empty": (["bench", "{ws}/std.onnx", "-o", "{out}", "--backends", ","], "backends"),
    "bench-batch-zero": (["bench", "{ws}/std.onnx", "-o", "{out}", "--batch", "0"], "batch"),
    "bench-batch-word": (["bench", "{ws}/std.onnx", "-o", "{out}", "--batch", "one"], "batch"),
    "bench-onnx-bad": (["bench", "{ws}/m.pt", "-o", "{out}", "--name", "b", "--onnx", "{ws}/random.onnx"], "ONNX"),
    "bench-onnx-missing": (["bench", "{ws}/m.pt", "-o", "{out}", "--name", "b", "--onnx", "{ws}/no.onnx"],
                           "no such file"),
    "bench-engine-bad": (["bench", "{ws}/m.pt", "-o", "{out}", "--name", "b", "--engine", "{ws}/garbage.engine"],
                         "engine"),
    "bench-engine-short": (["bench", "{ws}/m.pt", "-o", "{out}", "--name", "b", "--engine", "{ws}/short.engine"],
                           "truncated"),
    "bench-iters-zero": (["bench", "{ws}/std.onnx", "-o", "{out}", "--iters", "0"], "iters"),
    # build
    "build-shapes-malformed": (["build", "{ws}/std.onnx", "-o", "{out}/o.engine", "--shapes", "input:1x2"], ""),
    "build-shapes-letters": (["build", "{ws}/std.onnx", "-o", "{out}/o.engine", "--shapes", "input:axb,1,2"], "shapes"),
    "build-shapes-order": (["build", "{ws}/std.onnx", "-o", "{out}/o.engine", "--shapes",
                            "input:8x1x28x28,4x1x28x28,16x1x28x28"], "min <= opt <= max"),
    "build-shapes-unknown-input": (["build", "{ws}/std.onnx", "-o", "{out}/o.engine", "--no-doctor", "--shapes",
                                    "image:1x1x28x28,8x1x28x28,64x1x28x28"], "image"),
    "build-precision": (["build", "{ws}/std.onnx", "-o", "{out}/o.engine", "--precision", "int8"], "precision"),
    "build-opt-level": (["build", "{ws}/std.onnx", "-o", "{out}/o.engine", "--opt-level", "9"], "opt-level"),
    "build-workspace": (["build", "{ws}/std.onnx", "-o", "{out}/o.engine", "--workspace", "0"], "workspace"),
    "build-compute-capability": (["build", "{ws}/std.onnx", "-o", "{out}/o.engine", "--compute-capability",
                                  "sm90"], "compute-capability"),
    "build-plugin-library-missing": (["build", "{ws}/std.onnx", "-o", "{out}/o.engine", "--plugin-library",
                                      "{ws}/none.so"], "no such file"),
    "build-doctor-error": (["build", "{ws}/std.onnx", "-o", "{out}/o.engine"], "doctor"),
    "build-trt-unknown": (["build", "{ws}/std.onnx", "-o", "{out}/o.engine", "--trt", "trt9"], "trt"),
    # inputs files
    "run-inputs-missing": (["run", "{ws}/std.onnx", "--inputs", "{ws}/none.npz", "-o", "{out}/o.npz"], "no such file"),
    "run-inputs-text": (["run", "{ws}/std.onnx", "--inputs", "{ws}/text.txt", "-o", "{out}/o.npz"], "npz"),
    "run-inputs-json-not-polygraphy": (["run", "{ws}/std.onnx", "--inputs", "{ws}/data.json", "-o", "{out}/o.npz"],
                                       "not arrays"),
    "run-inputs-wrong-name": (["run", "{ws}/std.onnx", "--inputs", "{ws}/in-wrong-name.npz", "-o", "{out}/o.npz"],
                              "image"),
    "run-inputs-wrong-shape": (["run", "{ws}/other.onnx", "--inputs", "{ws}/in.npz", "-o", "{out}/o.npz"], "shape"),
    "run-inputs-wrong-dtype": (["run", "{ws}/std.onnx", "--inputs", "{ws}/in-float64.npz", "-o", "{out}/o.npz"],
                               "float64"),
    "run-backend-mismatch": (["run", "{ws}/std.onnx", "--backend", "torch", "-o", "{out}/o.npz"], "torch"),
    "run-engine-without-gpu": (["run", "{ws}/side-list.engine", "-o", "{out}/o.npz"], ""),
    "run-external-data-missing": (["run", "{ws}/ext.onnx", "-o", "{out}/o.npz"], "ext"),
    "doctor-external-data-missing": (["doctor", "{ws}/ext.onnx"], ""),
    # sidecars of the wrong shape
    "inspect-sidecar-list": (["inspect", "{ws}/side-list.engine"], "sidecar"),
    "inspect-sidecar-profiles": (["inspect", "{ws}/side-profiles.engine"], "profiles"),
    "inspect-sidecar-backend": (["inspect", "{ws}/side-backend.engine"], "backend"),
    "inspect-sidecar-garbage": (["inspect", "{ws}/side-garbage.engine"], "sidecar"),
    "validate-engine-sidecar-list": (["validate", "{ws}/side-list.engine", "--reference", "{ws}/m.pt"], "sidecar"),
    # names
    "train-unknown-model": (["train", "--model", "resnet", "--dataset", "R", "-o", "{out}/t"], "resnet"),
    "train-unknown-dataset": (["train", "--model", "cnn", "--dataset", "SVHN", "-o", "{out}/t"], "SVHN"),
    "train-output-is-file": (["train", "--model", "cnn", "--dataset", "R", "-o", "{out}/o.json"], ""),
    "export-unknown-ops": (["export", "{ws}/m.pt", "-o", "{out}/o.onnx", "--ops", "magic"], "magic"),
    "export-opset-low": (["export", "{ws}/m.pt", "-o", "{out}/o.onnx", "--opset", "11"], "opset"),
    "export-output-directory": (["export", "{ws}/m.pt", "-o", "{ws}/folder"], "directory"),
    "export-output-under-file": (["export", "{ws}/m.pt", "-o", "{ws}/text.txt/m.onnx"], ""),
    "export-output-under-proc": (["export", "{ws}/m.pt", "-o", "/proc/stn-deploy-test.onnx"], ""),
    "export-dynamic-hw-fc": (["export", "{ws}/m.pt", "-o", "{out}/o.onnx", "--dynamic-hw", "yes"], "H/W"),
    "doctor-unknown-target": (["doctor", "{ws}/std.onnx", "--target", "trt7"], "trt7"),
    "visualize-bad-suffix": (["visualize", "{ws}/m.pt", "-o", "{out}/w.docx"], "docx"),
    "visualize-count": (["visualize", "{ws}/m.pt", "-o", "{out}/w.png", "--count", "0"], "count"),
    "evaluate-unknown-dataset": (["evaluate", "{ws}/m.pt", "--dataset", "MNIST"], "MNIST"),
    "models-unknown-dataset": (["models", "--dataset", "MNIST"], "MNIST"),
    "demo-unknown-model": (["demo", "-o", "{out}/demo", "--model", "resnet"], "resnet"),
    "demo-output-not-empty": (["demo", "-o", "{out}"], "not empty"),
    "demo-backend-unknown": (["demo", "-o", "{out}/demo", "--backends", "tpu"], "tpu"),
    "plugins-build-bad-arch": (["plugins", "build", "--archs", "sm_xx", "--build-dir", "{out}/b"], "architecture"),
    "unknown-command": (["deploy"], "deploy"),
    "unknown-option": (["export", "{ws}/m.pt", "-o", "{out}/o.onnx", "--fast"], "fast"),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_bad_option(ws, tmp_path, case):
    args, word = OPTION_CASES[case]
    out = tmp_path / "out"
    run_case(_fill(args, ws, out), 2, (word,) if word else (), out)


@pytest.mark.parametrize("case, args, code, word", [
    ("doctor", ["doctor", "{ws}/plugin-align5.onnx"], 1, "doctor found"),
    ("run", ["run", "{ws}/plugin-align5.onnx", "-o", "{out}/o.npz"], 2, "align_corners"),
    ("validate", ["validate", "{ws}/plugin-align5.onnx", "--reference", "{ws}/m.pt"], 2, "align_corners"),
    ("rewrite", ["rewrite", "{ws}/plugin-align5.onnx", "-o", "{out}/o.onnx"], 2, "align_corners"),
    ("bench", ["bench", "{ws}/plugin-align5.onnx", "-o", "{out}", "--name", "b", "--backends", "ort"], 0, ""),
    ("build", ["build", "{ws}/plugin-align5.onnx", "-o", "{out}/o.engine", "--no-doctor"], 2, "align_corners"),
], ids=lambda v: v if isinstance(v, str) and " " not in v and "/" not in v else None)
def test_invalid_plugin_attribute_is_refused_everywhere(ws, tmp_path, case, args, code, word):
    if not (ws / "plugin-align5.onnx").exists():
        pytest.skip(f"needs the plugin library: {kernels_available()}")
    out = tmp_path / "out"
    if case == "bench":  # bench reports a backend that cannot run as a row; it must not be ok
        _fill_outputs(out)
        result = invoke(*_fill(args, ws, out))
        rows = json.loads((out / "b.json").read_text())["results"]
        assert result.exit_code in (0, 2) and all(r["status"] != "ok" for r in rows), rows
        assert "align_corners" in json.dumps(rows)
        return
    run_case(_fill(args, ws, out), code, (word,), out)


# --------------------------------------------------------------------------- files that belong together


@pytest.mark.skipif(not HAS_RTX, reason="needs tensorrt_rtx to build an engine")
def test_blocked_sidecar_keeps_the_old_engine(ws, tmp_path):
    onnx_path = matmul_graph(tmp_path / "mm.onnx")
    (tmp_path / "mm.engine").write_bytes(OLD)
    (tmp_path / "mm.engine.json").mkdir()  # the sidecar's path is taken by a folder
    result = invoke("build", onnx_path)
    assert_one_line_error(result, 2, "mm.engine.json")
    assert (tmp_path / "mm.engine").read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mm.engine", "mm.engine.json", "mm.onnx"]


def test_a_failed_rename_restores_what_was_replaced(tmp_path, monkeypatch):
    from stn_deploy import io
    from stn_deploy.errors import UserError

    (tmp_path / "a.json").write_bytes(OLD)
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the second file of the unit cannot be renamed
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", flaky_replace)
    with pytest.raises(UserError, match="No space left"):
        with io.atomic_paths(tmp_path / "a.json", tmp_path / "a.png") as (ta, tp):
            ta.write_text("new")
            tp.write_text("new")
    monkeypatch.undo()
    assert (tmp_path / "a.json").read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


# --------------------------------------------------------------------------- validate: no false pass


def test_validate_fails_a_model_whose_outputs_are_nan(ws, tmp_path):
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(ws / "std.onnx"))
    out_name = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Mul", [f"{out_name}_finite", "nan"], [out_name]))
    for node in model.graph.node[:-1]:
        node.output[:] = [f"{out_name}_finite" if o == out_name else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan"))
    onnx.save(model, str(tmp_path / "nan.onnx"))
    report = tmp_path / "r.json"
    result = invoke("validate", tmp_path / "nan.onnx", "--reference", ws / "m.pt", "--max-images", "16",
                    "--no-adversarial", "--report", report)
    assert_one_line_error(result, 1, "outside tolerance")
    stats = json.loads(report.read_text())["sets"][0]["outputs"][out_name]
    assert stats["nonfinite_actual"] == stats["shape"][0] * stats["shape"][1] and stats["nonfinite_expected"] == 0
    # and against itself: NaN against NaN is no pass either
    result = invoke("validate", tmp_path / "nan.onnx", "--reference", tmp_path / "nan.onnx", "--max-images", "16",
                    "--no-adversarial")
    assert_one_line_error(result, 1, "outside tolerance")


# --------------------------------------------------------------------------- disk full


@contextlib.contextmanager
def _small_disk(tmp_path: Path, size: str):
    """A tmpfs of ``size`` (e.g. "64k") mounted for the body; skips where mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_is_one_line_and_leaves_nothing(ws, tmp_path):
    with _small_disk(tmp_path, "64k") as mnt:
        (mnt / "m.onnx").write_bytes(OLD)
        result = invoke("export", ws / "m.pt", "-o", mnt / "m.onnx")
        assert_one_line_error(result, 2, "No space left")
        assert sorted(p.name for p in mnt.iterdir()) == ["m.onnx"] and (mnt / "m.onnx").read_bytes() == OLD


@pytest.mark.slow
def test_disk_full_in_train_keeps_the_old_checkpoint(tmp_path):
    """torch.save reported a full disk as a RuntimeError from its zip writer (a traceback)."""
    with _small_disk(tmp_path, "16k") as mnt:
        (mnt / "model.pt").write_bytes(OLD)
        result = invoke("train", "--model", "tutorial-stn", "--dataset", "R", "--epochs", "1", "--no-progress",
                        "-o", mnt)
        assert_one_line_error(result, 2, "No space left")
        assert sorted(p.name for p in mnt.iterdir()) == ["model.pt"] and (mnt / "model.pt").read_bytes() == OLD


# --------------------------------------------------------------------------- interrupts


def _sigterm_handler_installed(pid: int) -> bool:
    """Whether the CLI is past start-up: its error boundary catches SIGTERM (SigCgt bit 15)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


INTERRUPT_JOBS = {
    "train": (["train", "--model", "tutorial-stn", "--dataset", "R", "--epochs", "50", "--no-progress",
               "-o", "{out}"], "model.pt"),
    "export": (["export", "{ws}/m.pt", "-o", "{out}/model.pt.onnx", "--opset", "20"], "model.pt.onnx"),
    "build": (["build", "{ws}/mm.onnx", "-o", "{out}/model.engine"], "model.engine"),
    "bench": (["bench", "{ws}/m.pt", "-o", "{out}", "--name", "b", "--iters", "100000", "--backends", "torch",
               "--no-sampler"], "b.json"),
}


@pytest.mark.slow
def test_sigterm_while_bench_exports_leaves_no_temporary_folder(ws, tmp_path):
    """bench exports the checkpoint into a temporary folder first; a stop signal there removed
    nothing (the handler leaves with os._exit, past TemporaryDirectory's clean-up)."""
    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "stn_deploy.cli", "bench", str(ws / "m.pt"), "-o", str(out),
                             "--name", "b", "--backends", "ort", "--no-sampler"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(private_tmp)})
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not list(private_tmp.glob("stn-bench-*")):
        time.sleep(0.002)
    if proc.poll() is not None:
        pytest.skip(f"bench ended before its temporary folder appeared (exit {proc.returncode})")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error:"), err
    assert list(private_tmp.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
@pytest.mark.parametrize("job", sorted(INTERRUPT_JOBS))
def test_interrupt_in_the_middle(ws, tmp_path, job, sig):
    if job == "build" and not HAS_RTX:
        pytest.skip("needs tensorrt_rtx")
    args, output = INTERRUPT_JOBS[job]
    out = tmp_path / "out"
    out.mkdir()
    (out / output).write_bytes(OLD)
    before = sorted(p.name for p in out.iterdir())
    tmp_before = _leftovers_in_tmp()
    proc = subprocess.Popen([sys.executable, "-m", "stn_deploy.cli", *_fill(args, ws, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not _sigterm_handler_installed(proc.pid):
        time.sleep(0.005)
    if job == "build":  # into the build itself: its worker process has started
        while time.time() < deadline and proc.poll() is None and not _children(proc.pid):
            time.sleep(0.005)
    time.sleep(0.3 if job in ("train", "bench") else 0.05)  # into the work itself
    children = _children(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0 or proc.returncode < 0:  # < 0: the signal came after the command had finished
        pytest.skip(f"{job} finished before the signal arrived (exit {proc.returncode}: {err.strip()[-300:]!r})")
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error:"), err
    assert sorted(p.name for p in out.iterdir()) == before
    assert (out / output).read_bytes() == OLD
    assert _leftovers_in_tmp() <= tmp_before
    time.sleep(0.2)
    for child in children:  # the build worker went with its parent
        assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()
