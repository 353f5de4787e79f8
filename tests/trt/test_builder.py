"""stn_deploy.trt.builder: engine builds in a child process (TensorRT-RTX here), sidecars, failures,
interrupts, plugin builds."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers_trt import (
    HAS_RTX,
    affine_grid_graph,
    matmul_graph,
    needs_rtx,
    no_temp_files,
    plugin_graph,
)
from stn_deploy import schema
from stn_deploy.errors import UserError
from stn_deploy.trt import options as trt_options
from stn_deploy.trt.options import BuildOptions, parse_shape_spec


@needs_rtx
@pytest.mark.parametrize("case", ["fp32", "fp16", "bf16", "sm86", "gridsample", "dynamic-hw-shapes"])
def test_build_writes_engine_and_sidecar(standard_builds, case):
    outcome = standard_builds[case]
    assert outcome.ok, outcome.error
    engine = outcome.options.engine
    side = json.loads(engine.with_name(engine.name + ".json").read_text())
    from stn_deploy.io import file_sha256 as sha256
    from stn_deploy.trt.flavour import get_flavour

    assert engine.read_bytes()[:4] == b"vtrt"
    assert side["engine"]["sha256"] == sha256(engine) and side["engine"]["bytes"] == engine.stat().st_size
    assert side["backend"]["name"] == "rtx" and side["backend"]["version"] == get_flavour("rtx").version
    assert side["precision"] == outcome.options.precision
    assert side["build_seconds"] > 0 and side["build_seconds"] == outcome.result.seconds
    assert side["onnx"]["sha256"] == sha256(outcome.options.onnx)
    assert side["profiles"] and side["network"]["inputs"] and side["network"]["layers"]
    assert side["plugin_library"] is None
    # Written like any other file, not with mkstemp's 0600.
    assert engine.stat().st_mode & 0o044 == 0o044 & ~_umask()
    assert no_temp_files(engine.parent)


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
    (lambda d: d / "missing.onnx", {}, "ONNX model .*: no such file"),
    (lambda d: (d / "text.onnx").write_text("not a model") and d / "text.onnx", {}, "not an ONNX model"),
    (lambda d: matmul_graph(d / "mm.onnx"), {"shapes": (parse_shape_spec("y:1x4,1x4,2x4"),)}, "not an input"),
    (lambda d: matmul_graph(d / "mm.onnx"), {"plugin_library": Path("/nonexistent/libx.so")}, "plugin library .*: no such file"),
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
    assert no_temp_files(tmp_path)


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


# --------------------------------------------------------------------------- plugin builds


def _plugin_library() -> Path | None:
    from stn_deploy.trt.flavour import default_plugin_library

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
def test_plugin_engine_records_where_the_plugin_runs(plugin_builds):
    """The sidecar holds the engine's GPUs (RTX default) and the library's code for each; the
    warning names exactly the targets the library cannot serve (a one-arch build misses some)."""
    from stn_deploy import kernels
    from stn_deploy.trt import targets

    side = plugin_builds[sorted(VALID_CASES)[0]].result.sidecar
    recorded = side["gpu_targets"]
    assert recorded["engine"] == [targets.cc_name(c) for c in targets.RTX_DEFAULT_TARGETS]
    expected = targets.check(targets.RTX_DEFAULT_TARGETS, "TensorRT-RTX default",
                             kernels.build_info()["architectures"])
    assert recorded["plugin"] == expected.to_dict()
    assert (expected.warning() in side["warnings"]) == (not expected.ok)


@pytest.mark.plugin
@needs_plugin
def test_inspect_warns_when_the_plugin_cannot_run_on_a_target(plugin_builds, monkeypatch):
    """inspect checks the engine's GPUs again against the library the sidecar names: a library
    rebuilt for sm90 only (STN_CUDA_ARCHS=90) cannot serve the RTX default targets sm80/86/89."""
    from stn_deploy import kernels
    from stn_deploy.trt import format_report, inspect

    engine = plugin_builds[sorted(VALID_CASES)[0]].result.engine
    monkeypatch.setattr(kernels, "build_info", lambda path=None: {"architectures": ["90-real", "90-virtual"]})
    report = inspect(engine)
    assert list(report["gpu_targets"]["plugin"]["plugin_missing"]) == ["sm80", "sm86", "sm89"]
    lines = format_report(report)
    assert any(line.startswith("gpus     sm80, sm86, sm89, sm120") for line in lines), lines
    assert any(line.startswith("warning  the plugin library has no code for sm80, sm86, sm89") for line in lines), lines
    monkeypatch.setattr(kernels, "build_info", lambda path=None: {"architectures": ["80-real", "86-real", "120-real"]})
    lines = format_report(inspect(engine))
    assert not any("has no code" in line for line in lines), lines
    assert any("sm86: sass sm_86" in line for line in lines), lines


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
    from stn_deploy.jobs import export
    from stn_deploy.jobs.train import save_checkpoint
    from stn_deploy.models import MODEL_NAMES, ModelConfig, build_model
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


@needs_rtx
@pytest.mark.parametrize("case, expected", [
    ("shapes-fixed", {"min": [2, 1, 8, 8], "opt": [2, 1, 8, 8], "max": [2, 1, 8, 8]}),
    ("shapes-polygraphy", {"min": [1, 1, 8, 8], "opt": [2, 1, 16, 16], "max": [4, 1, 32, 32]}),
    ("shapes-trtexec", {"min": [1, 1, 8, 8], "opt": [2, 1, 16, 16], "max": [4, 1, 32, 32]}),
])
def test_each_shape_syntax_builds(standard_builds, case, expected):
    outcome = standard_builds[case]
    assert outcome.ok, outcome.error
    assert outcome.result.sidecar["profiles"] == [[{"name": "x", **expected}]]
