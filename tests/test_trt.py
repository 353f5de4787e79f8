"""stn_deploy.trt: shapes, options, precision conversion, TensorRT-RTX engine builds (in a child
process), plugin-op builds, inspect without a GPU, the engine runner.

Engine builds are batched: each module fixture sends its builds to one worker process
(``build_many``), which is restarted only after a crash; each test then asserts on its own
build's outcome, so failures stay distinguishable.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers_trt import affine_grid_graph, dynamic_hw_graph, grid_sample_graph, matmul_graph, plugin_graph
from stn_deploy import schema
from stn_deploy.errors import UserError
from stn_deploy.trt import options as trt_options
from stn_deploy.trt.options import BuildOptions, ShapeRange, parse_shape_spec

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="needs tensorrt_rtx (pip install 'stn-deploy[rtx]')")


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- options (no TensorRT)


@pytest.mark.parametrize("spec, expected", [
    ("x:1x4,2x4,8x4", ShapeRange("x", (1, 4), (2, 4), (8, 4))),
    ("input:1x1x28x28", ShapeRange("input", (1, 1, 28, 28), (1, 1, 28, 28), (1, 1, 28, 28))),
    ("in:put:1x2,1x2,3x2", ShapeRange("in:put", (1, 2), (1, 2), (3, 2))),
], ids=["range", "single-shape", "colon-in-name"])
def test_parse_shape_spec_accepts(spec, expected):
    assert parse_shape_spec(spec) == expected
    assert parse_shape_spec(expected.spec()) == expected


@pytest.mark.parametrize("spec", ["x", "x:1x4,2x4", "x:1xa,2x4,3x4", ":1,2,3", "x:4x4,2x4,8x4", "x:1x4,2x4,8x4x1",
                                  "x:1x-4,2x4,8x4", "x:,,"],
                         ids=["no-shapes", "two-shapes", "letter", "no-name", "min-above-opt", "rank-mismatch",
                              "negative", "empty"])
def test_parse_shape_spec_rejects(spec):
    with pytest.raises(UserError, match="--shapes"):
        parse_shape_spec(spec)


@pytest.mark.parametrize("field, value, message", [
    ("precision", "int8", "precision"), ("backend", "trt9", "backend"), ("opt_level", 9, "opt-level"),
    ("workspace_mib", 0, "workspace"), ("compute_capabilities", ("sm90",), "compute capability"),
    ("shapes", (ShapeRange("x", (1,), (1,), (1,)),) * 2, "twice"),
])
def test_build_options_reject(tmp_path, field, value, message):
    with pytest.raises(UserError, match=message):
        BuildOptions(onnx=tmp_path / "m.onnx", engine=tmp_path / "m.engine", **{field: value})


def test_sidecar_path_appends_json():
    assert trt_options.sidecar_path(Path("a/model.engine")) == Path("a/model.engine.json")


def test_import_is_lazy():
    """``from stn_deploy import trt`` loads no TensorRT (so --help works anywhere)."""
    code = ("import sys; from stn_deploy import trt; import stn_deploy.cli; "
            "assert 'tensorrt_rtx' not in sys.modules and 'tensorrt' not in sys.modules, sorted(sys.modules)")
    subprocess.run([os.sys.executable, "-c", code], check=True)


def test_precision_convert_fp16_runs_in_ort_with_fp32_io(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    from stn_deploy.trt import precision

    model = onnx.load(str(matmul_graph(tmp_path / "mm.onnx")))
    half = precision.convert(model, "fp16")
    onnx.checker.check_model(half)
    assert [i.data_type for i in half.graph.initializer] == [TensorProto.FLOAT16]
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = np.maximum(x @ (np.arange(16, dtype=np.float32).reshape(4, 4) / 16), 0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=1e-2)
    assert precision.convert(model, "fp32") is model


def test_precision_bf16_bits_round_to_nearest_even():
    from stn_deploy.trt.precision import _to_bf16_bits

    values = np.array([1.0, -2.5, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, np.nan], np.float32)
    bits = _to_bf16_bits(values)
    back = (bits.astype(np.uint32) << 16).view(np.float32)
    assert back[:2].tolist() == [1.0, -2.5]
    assert back[2] == 1.0  # a tie rounds to the even mantissa
    assert back[3] == 1.0 + 2 ** -6
    assert np.isnan(back[4])


# --------------------------------------------------------------------------- backend


@needs_rtx
def test_backend_rtx_properties():
    from stn_deploy.trt import get_backend

    be = get_backend("rtx")
    assert be.name == "rtx" and be.version.startswith("1.")
    assert be.strongly_typed, "TensorRT-RTX has no FP16 builder flag"
    assert be.has_compute_capabilities


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="full TensorRT is installed here")
def test_backend_tensorrt_missing_is_user_error():
    from stn_deploy.trt import get_backend

    with pytest.raises(UserError, match="tensorrt"):
        get_backend("tensorrt")


def test_engine_header_detection():
    from stn_deploy.trt.backend import engine_backend_from_header, engine_version_from_header

    head = b"vtrt" + bytes(20) + bytes([1, 7, 1]) + bytes(37)
    assert engine_backend_from_header(head) == "rtx"
    assert engine_version_from_header(head) == (1, 7, 1)
    assert engine_backend_from_header(b"ftrt" + bytes(60)) == "tensorrt"
    assert engine_backend_from_header(b"\x08\x01onnx") is None


# --------------------------------------------------------------------------- standard builds


@pytest.fixture(scope="module")
def standard_builds(tmp_path_factory):
    """Several RTX builds in one worker process: name -> BuildOutcome."""
    if not HAS_RTX:
        pytest.skip("needs tensorrt_rtx")
    from stn_deploy.trt import build_many

    d = tmp_path_factory.mktemp("builds")
    mm, gs = matmul_graph(d / "mm.onnx"), grid_sample_graph(d / "gs.onnx")
    cases = {
        "fp32": BuildOptions(mm, d / "fp32.engine", shapes=(parse_shape_spec("x:1x4,2x4,16x4"),)),
        "fp16": BuildOptions(mm, d / "fp16.engine", precision="fp16"),
        "bf16": BuildOptions(mm, d / "bf16.engine", precision="bf16"),
        "sm86": BuildOptions(mm, d / "sm86.engine", compute_capabilities=("sm86", "sm89"), opt_level=1,
                             workspace_mib=64, timing_cache=d / "tc.bin"),
        "gridsample": BuildOptions(gs, d / "gs.engine"),
        "affine-grid": BuildOptions(affine_grid_graph(d / "ag.onnx"), d / "ag.engine", doctor=False),
        "dynamic-hw": BuildOptions(dynamic_hw_graph(d / "dyn.onnx"), d / "dyn.engine"),
        "dynamic-hw-shapes": BuildOptions(d / "dyn.onnx", d / "dyn2.engine",
                                          shapes=(parse_shape_spec("x:1x1x8x8,2x1x16x16,4x1x32x32"),)),
        "sm75-fp32-gemm": BuildOptions(mm, d / "sm75.engine", compute_capabilities=("sm75",)),
    }
    events: list[dict] = []
    outcomes = build_many(list(cases.values()), progress=events.append)
    return {"dir": d, "events": events, **dict(zip(cases, outcomes))}


@needs_rtx
@pytest.mark.parametrize("case", ["fp32", "fp16", "bf16", "sm86", "gridsample", "dynamic-hw-shapes"])
def test_build_writes_engine_and_sidecar(standard_builds, case):
    outcome = standard_builds[case]
    assert outcome.ok, outcome.error
    engine = outcome.options.engine
    side = json.loads(engine.with_name(engine.name + ".json").read_text())
    from stn_deploy.trt.backend import get_backend, sha256

    assert engine.read_bytes()[:4] == b"vtrt"
    assert side["engine"]["sha256"] == sha256(engine) and side["engine"]["bytes"] == engine.stat().st_size
    assert side["backend"]["name"] == "rtx" and side["backend"]["version"] == get_backend("rtx").version
    assert side["precision"] == outcome.options.precision
    assert side["build_seconds"] > 0 and side["build_seconds"] == outcome.result.seconds
    assert side["onnx"]["sha256"] == sha256(outcome.options.onnx)
    assert side["profiles"] and side["network"]["inputs"] and side["network"]["layers"]
    assert side["plugin_library"] is None
    # Written like any other file, not with mkstemp's 0600.
    assert engine.stat().st_mode & 0o044 == 0o044 & ~_umask()
    assert _no_temp_files(engine.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@needs_rtx
def test_build_records_profiles_precision_and_targets(standard_builds):
    fp32 = standard_builds["fp32"].result.sidecar
    assert fp32["profiles"] == [[{"name": "x", "min": [1, 4], "opt": [2, 4], "max": [16, 4]}]]
    default = standard_builds["fp16"].result.sidecar
    assert default["profiles"][0][0]["max"] == [trt_options.DEFAULT_BATCH_RANGE[2], 4]
    assert default["precision_method"].startswith("graph converted")
    assert {"float16"} <= {t for layer in default["network"]["layers"] for t in layer["outputs"]}
    assert default["network"]["inputs"][0]["dtype"] == "float32"  # I/O stays fp32
    assert "bfloat16" in {t for layer in standard_builds["bf16"].result.sidecar["network"]["layers"] for t in layer["outputs"]}
    sm = standard_builds["sm86"].result.sidecar
    assert sm["compute_capabilities"] == ["sm86", "sm89"]
    assert sm["opt_level"] == 1 and sm["workspace_mib"] == 64
    assert sm["timing_cache"] == {"path": str(standard_builds["dir"] / "tc.bin"), "used": False}
    assert "no sm90" in default["compute_capabilities"][0]
    dyn = standard_builds["dynamic-hw-shapes"].result.sidecar
    assert dyn["profiles"][0][0]["max"] == [4, 1, 32, 32]


@needs_rtx
def test_build_native_gridsample_layer(standard_builds):
    layers = standard_builds["gridsample"].result.sidecar["network"]["layers"]
    assert [layer["type"] for layer in layers] == ["GRID_SAMPLE"]


@needs_rtx
def test_build_reports_progress(standard_builds):
    phases = [e["phase"] for e in standard_builds["events"] if e.get("event") == "progress" and e["kind"] == "start"]
    assert "Building engine" in phases


@needs_rtx
@pytest.mark.parametrize("case, words", [
    ("affine-grid", ["AffineGrid", "UNSUPPORTED_NODE"]),
    ("dynamic-hw", ["input x", "--shapes"]),
    ("sm75-fp32-gemm", ["Turing", "FP32 GEMM"]),
])
def test_build_failure_is_one_line_naming_the_cause(standard_builds, case, words):
    outcome = standard_builds[case]
    assert not outcome.ok
    assert "\n" not in outcome.error
    for word in words:
        assert word in outcome.error
    assert not outcome.options.engine.exists() and not outcome.options.sidecar.exists()


@needs_rtx
def test_build_raises_build_error(tmp_path):
    from stn_deploy.trt import BuildError, build

    with pytest.raises(BuildError, match="AffineGrid"):
        build(BuildOptions(affine_grid_graph(tmp_path / "ag.onnx"), tmp_path / "ag.engine", doctor=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ag.onnx"]


@needs_rtx
def test_build_doctor_stops_before_tensorrt(tmp_path):
    from stn_deploy.trt import build

    with pytest.raises(UserError, match="doctor found .*AffineGrid.*--no-doctor"):
        build(BuildOptions(affine_grid_graph(tmp_path / "ag.onnx"), tmp_path / "ag.engine"))


@pytest.mark.parametrize("make, kwargs, message", [
    (lambda d: d / "missing.onnx", {}, "ONNX model not found"),
    (lambda d: (d / "text.onnx").write_text("not a model") and d / "text.onnx", {}, "not an ONNX model"),
    (lambda d: matmul_graph(d / "mm.onnx"), {"shapes": (parse_shape_spec("y:1x4,1x4,2x4"),)}, "not an input"),
    (lambda d: matmul_graph(d / "mm.onnx"), {"plugin_library": Path("/nonexistent/libx.so")}, "plugin library not found"),
], ids=["missing", "not-onnx", "unknown-shape-input", "missing-plugin-library"])
def test_bad_input_before_tensorrt(tmp_path, make, kwargs, message):
    from stn_deploy.trt import build

    path = make(tmp_path)
    with pytest.raises(UserError, match=message):
        build(BuildOptions(path, tmp_path / "out.engine", **kwargs))
    assert not (tmp_path / "out.engine").exists()


def test_plugin_graph_without_library_is_user_error(tmp_path, monkeypatch):
    from stn_deploy.trt import build

    monkeypatch.setenv("STN_DEPLOY_PLUGIN_LIBRARY", str(tmp_path / "absent.so"))
    path = plugin_graph(tmp_path / "p.onnx", schema.GRID_SAMPLE_OP, {schema.FIELD_INTERPOLATION_MODE: 0})
    with pytest.raises(UserError, match="plugin library is missing"):
        build(BuildOptions(path, tmp_path / "p.engine", doctor=False))


@pytest.fixture(scope="module")
def abort_library(tmp_path_factory):
    """A shared library whose loading aborts the process, as a broken plugin would."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler (cc) to make a library that aborts on load")
    d = tmp_path_factory.mktemp("abort")
    (d / "abort.c").write_text("#include <stdlib.h>\n__attribute__((constructor)) static void boom(void) { abort(); }\n")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / "libabort.so"), str(d / "abort.c")], check=True)
    return d / "libabort.so"


@needs_rtx
def test_crash_in_worker_leaves_no_engine_and_later_builds_run(tmp_path, abort_library):
    from stn_deploy.trt import build_many

    mm = matmul_graph(tmp_path / "mm.onnx")
    crash, after = build_many([
        BuildOptions(mm, tmp_path / "crash.engine", plugin_library=abort_library),
        BuildOptions(mm, tmp_path / "after.engine"),
    ])
    assert not crash.ok and "SIGABRT" in crash.error and "\n" not in crash.error
    assert not (tmp_path / "crash.engine").exists() and not (tmp_path / "crash.engine.json").exists()
    assert after.ok, after.error
    assert _no_temp_files(tmp_path)


@needs_rtx
def test_interrupt_leaves_no_partial_engine(tmp_path):
    from stn_deploy.trt import build

    def interrupt(event):
        if event.get("event") == "progress":
            raise KeyboardInterrupt

    mm = matmul_graph(tmp_path / "mm.onnx")
    with pytest.raises(KeyboardInterrupt):
        build(BuildOptions(mm, tmp_path / "mm.engine"), progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mm.onnx"]


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
    with pytest.raises(UserError, match="engine not found"):
        inspect(tmp_path / "none.engine")


@needs_rtx
def test_inspect_notices_stale_sidecar(standard_builds, tmp_path):
    from stn_deploy.trt import inspect

    src = standard_builds["fp32"].options.engine
    shutil.copy(standard_builds["fp16"].options.engine, tmp_path / "e.engine")
    shutil.copy(src.with_name(src.name + ".json"), tmp_path / "e.engine.json")
    assert inspect(tmp_path / "e.engine")["sidecar_matches"] is False


class _FakeEngine:
    def get_tensor_profile_shape(self, name, profile):
        return (1, 1, 28, 28), (8, 1, 28, 28), (64, 1, 28, 28)


@pytest.mark.parametrize("shape, ok", [((1, 1, 28, 28), True), ((64, 1, 28, 28), True), ((65, 1, 28, 28), False),
                                       ((8, 1, 32, 32), False), ((8, 28, 28), False)],
                         ids=["min", "max", "batch-above", "size-off", "rank"])
def test_runner_checks_profile(shape, ok):
    from stn_deploy.trt.runner import EngineRunner

    runner = EngineRunner("unused.engine")
    runner.engine = _FakeEngine()
    if ok:
        runner.check_profile("input", shape)
    else:
        with pytest.raises(UserError, match="outside the engine's profile"):
            runner.check_profile("input", shape)


def test_runner_without_gpu_is_user_error(tmp_path):
    pytest.importorskip("torch")
    import torch

    from stn_deploy.trt import EngineRunner

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    (tmp_path / "e.engine").write_bytes(b"vtrt" + bytes(20) + bytes([1, 7, 1]) + bytes(100))
    with pytest.raises(UserError):
        EngineRunner(tmp_path / "e.engine").activate()


@pytest.mark.gpu
@needs_rtx
def test_runner_matches_numpy_on_gpu(standard_builds):
    from stn_deploy.trt import EngineRunner

    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with EngineRunner(standard_builds["fp32"].options.engine) as runner:
        y = runner.infer({"x": x})["y"]
        with pytest.raises(UserError, match="outside the engine's profile"):
            runner.infer({"x": np.zeros((17, 4), np.float32)})
    np.testing.assert_allclose(y, np.maximum(x @ (np.arange(16, dtype=np.float32).reshape(4, 4) / 16), 0),
                               atol=1e-3, rtol=1e-3)


# --------------------------------------------------------------------------- plugin builds


def _plugin_library() -> Path | None:
    from stn_deploy.trt.backend import default_plugin_library

    return default_plugin_library()


needs_plugin = pytest.mark.skipif(not HAS_RTX or _plugin_library() is None,
                                  reason="needs tensorrt_rtx and the plugin library (stn-deploy plugins build)")

MODES, PADDINGS = list(schema.InterpolationMode), list(schema.PaddingMode)
VALID_CASES = {
    f"{op}-{m.name.lower()}-{p.name.lower()}-ac{ac}" + (f"-t{t}" if op == schema.AFFINE_GRID_SAMPLE_OP else ""): (op, {
        schema.FIELD_INTERPOLATION_MODE: int(m), schema.FIELD_PADDING_MODE: int(p), schema.FIELD_ALIGN_CORNERS: ac,
        **({schema.FIELD_TRANSFORM: t, schema.FIELD_OUT_D: 0, schema.FIELD_OUT_H: 6, schema.FIELD_OUT_W: 5}
           if op == schema.AFFINE_GRID_SAMPLE_OP else {})})
    for op in (schema.GRID_SAMPLE_OP, schema.AFFINE_GRID_SAMPLE_OP)
    for (m, p, ac), t in zip(itertools.product(MODES, PADDINGS, (0, 1)), itertools.cycle((0, 1)))
}
_BASE = {schema.FIELD_INTERPOLATION_MODE: 0, schema.FIELD_PADDING_MODE: 0, schema.FIELD_ALIGN_CORNERS: 0}
_FUSED = {**_BASE, schema.FIELD_TRANSFORM: 0, schema.FIELD_OUT_D: 0, schema.FIELD_OUT_H: 6, schema.FIELD_OUT_W: 5}
#: name -> (op, fields, graph keyword arguments, words the error must contain)
INVALID_CASES = {
    "gs-mode-7": (schema.GRID_SAMPLE_OP, {**_BASE, schema.FIELD_INTERPOLATION_MODE: 7}, {}, [schema.FIELD_INTERPOLATION_MODE]),
    "gs-padding-9": (schema.GRID_SAMPLE_OP, {**_BASE, schema.FIELD_PADDING_MODE: 9}, {}, [schema.FIELD_PADDING_MODE]),
    "gs-int8-input": (schema.GRID_SAMPLE_OP, _BASE, {"x_type": "INT8"}, ["int8"]),
    "gs-rank-3": (schema.GRID_SAMPLE_OP, _BASE, {"x_shape": (2, 8, 8), "out_shape": (2, 8, 5)}, ["rank"]),
    "fused-mode-7": (schema.AFFINE_GRID_SAMPLE_OP, {**_FUSED, schema.FIELD_INTERPOLATION_MODE: 7}, {}, [schema.FIELD_INTERPOLATION_MODE]),
    "fused-transform-5": (schema.AFFINE_GRID_SAMPLE_OP, {**_FUSED, schema.FIELD_TRANSFORM: 5}, {}, [schema.FIELD_TRANSFORM]),
    "fused-int8-input": (schema.AFFINE_GRID_SAMPLE_OP, _FUSED, {"x_type": "INT8"}, ["int8"]),
    "fused-rank-3": (schema.AFFINE_GRID_SAMPLE_OP, _FUSED, {"x_shape": (2, 8, 8), "out_shape": (2, 6, 5)}, ["rank"]),
}


@pytest.fixture(scope="module")
def plugin_builds(tmp_path_factory):
    """Every valid field combination and every invalid case, in one worker (restarted on a crash)."""
    if not HAS_RTX or _plugin_library() is None:
        pytest.skip("needs tensorrt_rtx and the plugin library")
    from onnx import TensorProto

    from stn_deploy.trt import build_many

    d = tmp_path_factory.mktemp("plugin")
    names, opts = [], []
    for name, (op, fields) in VALID_CASES.items():
        names.append(name)
        opts.append(BuildOptions(plugin_graph(d / f"{name}.onnx", op, fields), d / f"{name}.engine"))
    for name, (op, fields, kw, _words) in INVALID_CASES.items():
        kw = {k: getattr(TensorProto, v) if k == "x_type" else v for k, v in kw.items()}
        names.append(name)
        opts.append(BuildOptions(plugin_graph(d / f"{name}.onnx", op, fields, **kw), d / f"{name}.engine",
                                 doctor=False))
    return dict(zip(names, build_many(opts)))


@pytest.mark.plugin
@needs_plugin
@pytest.mark.parametrize("case", sorted(VALID_CASES))
def test_plugin_valid_fields_build(plugin_builds, case):
    outcome = plugin_builds[case]
    assert outcome.ok, outcome.error
    side = outcome.result.sidecar
    op = VALID_CASES[case][0]
    assert side["plugin_library"]["ops"] == [op] and len(side["plugin_library"]["sha256"]) == 64
    assert side["plugin_library"]["version"].startswith("stn_deploy_plugins")
    plugins = [layer.get("plugin", {}) for layer in side["network"]["layers"] if layer["type"] == "PLUGIN_V3"]
    assert [p.get("name") for p in plugins] == [op]


@pytest.mark.plugin
@needs_plugin
@pytest.mark.parametrize("case", sorted(INVALID_CASES))
def test_plugin_invalid_fields_fail_naming_the_field(plugin_builds, case):
    outcome = plugin_builds[case]
    assert not outcome.ok, f"{case} built, but should have been rejected"
    assert "\n" not in outcome.error
    for word in INVALID_CASES[case][3]:
        assert word.lower() in outcome.error.lower(), outcome.error
    assert not outcome.options.engine.exists()


@pytest.mark.plugin
@pytest.mark.slow
@needs_plugin
def test_zoo_plugin_engines_build(tmp_path):
    """Plugin-flavour export of every zoo model builds with TensorRT-RTX (one worker)."""
    torch = pytest.importorskip("torch")
    from stn_deploy import export
    from stn_deploy.models import MODEL_NAMES, ModelConfig, build_model
    from stn_deploy.train import save_checkpoint
    from stn_deploy.trt import build_many

    torch.manual_seed(0)
    opts = []
    for name in MODEL_NAMES:
        config = ModelConfig(name)
        save_checkpoint(tmp_path / f"{name}.pt", build_model(config), config, {"dataset": "R"})
        export.export(export.ExportOptions(checkpoint=tmp_path / f"{name}.pt", output=tmp_path / f"{name}.onnx",
                                           ops="plugin"))
        opts.append(BuildOptions(tmp_path / f"{name}.onnx", tmp_path / f"{name}.engine"))
    # Reduced precision through the plugin (its X and theta/grid converted too), a few families.
    reduced = [BuildOptions(tmp_path / f"{name}.onnx", tmp_path / f"{name}-{precision}.engine", precision=precision)
               for name in ("st-cnn-projective", "st-fcn-tps") for precision in ("fp16", "bf16")]
    outcomes = build_many(opts + reduced)
    failed = {o.options.engine.stem: o.error for o in outcomes if not o.ok}
    assert not failed
    seconds = {o.options.engine.stem: o.result.seconds for o in outcomes}
    print("build seconds:", json.dumps(seconds))
    for name, o in zip(MODEL_NAMES, outcomes):
        layers = o.result.sidecar["network"]["layers"]
        has_st = name.startswith(("st-", "tutorial"))
        assert any(layer["type"] == "PLUGIN_V3" for layer in layers) == has_st, name
