"""stn_deploy.jobs.doctor: each trap found in a crafted graph, nothing in a clean one."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from stn_deploy import schema
from stn_deploy.cli import main
from stn_deploy.errors import UserError
from stn_deploy.graph import PLUGIN_VERSION_ATTR
from stn_deploy.jobs.doctor import RULES, TARGETS, doctor

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def _model(nodes, inputs, outputs, inits=(), opset=20, plugin=False):
    opsets = [helper.make_opsetid("", opset)]
    if plugin:
        opsets.append(helper.make_opsetid(schema.PLUGIN_DOMAIN, 1))
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)),
                             opset_imports=opsets)


def grid_sample(mode="linear", opset=20, rank=4, dtype=F32, hw=(8, 8)):
    spatial = list(hw) if rank == 4 else [4, *hw]
    return _model(
        [helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs", mode=mode)],
        [_vi("x", dtype, [1, 1, *spatial]), _vi("grid", dtype, [1, *spatial, rank - 2])],
        [_vi("y", dtype, [1, 1, *spatial])], opset=opset,
    )


def affine_grid():
    return _model(
        [helper.make_node("AffineGrid", ["theta", "size"], ["grid"], name="ag"),
         helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs", mode="nearest")],
        [_vi("x", F32, [2, 1, 8, 8]), _vi("theta", F32, [2, 2, 3])], [_vi("y", F32, [2, 1, 8, 8])],
        inits=[helper.make_tensor("size", TensorProto.INT64, [4], [2, 1, 8, 8])],
    )


def decomposed_grid():
    """The dynamo exporter's affine grid: Mul(constant base, theta) -> ReduceSum -> Reshape."""
    base = numpy_helper.from_array(np.zeros((64, 3, 1), np.float32), "base")
    axes = numpy_helper.from_array(np.array([-2], np.int64), "axes")
    shape = numpy_helper.from_array(np.array([2, 8, 8, 2], np.int64), "shape")
    nodes = [
        helper.make_node("Transpose", ["theta"], ["tt"], perm=[0, 2, 1]),
        helper.make_node("Unsqueeze", ["tt", "one"], ["tu"]),
        helper.make_node("Mul", ["base", "tu"], ["prod"]),
        helper.make_node("ReduceSum", ["prod", "axes"], ["summed"], keepdims=0),
        helper.make_node("Reshape", ["summed", "shape"], ["grid"]),
        helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs", mode="nearest"),
    ]
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    return _model(nodes, [_vi("x", F32, [2, 1, 8, 8]), _vi("theta", F32, [2, 2, 3])],
                  [_vi("y", F32, [2, 1, 8, 8])], inits=[base, axes, shape, one])


def plugin_op(version=schema.PLUGIN_VERSION, dtype=F32, hw=(8, 8)):
    node = helper.make_node(schema.GRID_SAMPLE_OP, ["x", "grid"], ["y"], name="stn", domain=schema.PLUGIN_DOMAIN,
                            **{PLUGIN_VERSION_ATTR: version, **schema.SamplerSettings().plugin_fields()})
    return _model([node], [_vi("x", dtype, [1, 1, *hw]), _vi("grid", dtype, [1, *hw, 2])],
                  [_vi("y", dtype, [1, 1, *hw])], plugin=True)


def fused_plugin_op(theta_shape=(1, 2, 3), **fields):
    """STNAffineGridSample with valid fields unless overridden (None removes a field)."""
    attrs = {**schema.SamplerSettings().plugin_fields(), schema.FIELD_TRANSFORM: 0, schema.FIELD_OUT_D: 0,
             schema.FIELD_OUT_H: 8, schema.FIELD_OUT_W: 8, **fields}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    node = helper.make_node(schema.AFFINE_GRID_SAMPLE_OP, ["x", "theta"], ["y"], name="fused",
                            domain=schema.PLUGIN_DOMAIN, **{PLUGIN_VERSION_ATTR: schema.PLUGIN_VERSION, **attrs})
    return _model([node], [_vi("x", F32, [1, 1, 8, 8]), _vi("theta", F32, list(theta_shape))],
                  [_vi("y", F32, [1, 1, 8, 8])], plugin=True)


def mmdeploy_bicubic():
    node = helper.make_node("grid_sampler", ["x", "grid"], ["y"], name="mm", domain="mmdeploy",
                            interpolation_mode=2, padding_mode=0, align_corners=0)
    model = _model([node], [_vi("x", F32, [1, 1, 8, 8]), _vi("grid", F32, [1, 8, 8, 2])],
                   [_vi("y", F32, [1, 1, 8, 8])], opset=16)
    model.opset_import.append(helper.make_opsetid("mmdeploy", 1))
    return model


# (case id, model builder, target, rule expected, severity expected)
TRAPS = [
    ("opset20-linear-trt10", lambda: grid_sample("linear"), "trt10", "trt-gridsample-mode", "error"),
    ("opset20-cubic-trt10", lambda: grid_sample("cubic"), "trt10", "trt-gridsample-mode", "error"),
    # NVIDIA/TensorRT#4646 is still open in 11.x.
    ("opset20-linear-trt11", lambda: grid_sample("linear"), "trt11", "trt-gridsample-mode", "error"),
    ("affinegrid-trt10", affine_grid, "trt10", "trt-affinegrid", "error"),
    ("affinegrid-trt11", affine_grid, "trt11", "trt-affinegrid", "error"),
    ("affinegrid-rtx", affine_grid, "rtx", "trt-affinegrid", "error"),
    ("gridsample-5d-trt10", lambda: grid_sample("nearest", rank=5), "trt10", "trt-gridsample-5d", "error"),
    ("gridsample-5d-trt11", lambda: grid_sample("nearest", rank=5), "trt11", "trt-gridsample-5d", "warning"),
    ("bicubic-opset16-ort", lambda: grid_sample("bicubic", opset=16), "ort", "bicubic-outside-plugin", "info"),
    ("bicubic-opset16-rtx", lambda: grid_sample("bicubic", opset=16), "rtx", "bicubic-outside-plugin", "warning"),
    ("bicubic-mmdeploy", mmdeploy_bicubic, "trt10", "bicubic-outside-plugin", "error"),
    ("decomposed-grid", decomposed_grid, "ort", "decomposed-affine-grid", "warning"),
    ("fp16-4096-trt10", lambda: grid_sample("nearest", dtype=F16, hw=(8, 4096)), "trt10", "fp16-large-coordinates", "error"),
    ("fp16-plugin-4096", lambda: plugin_op(dtype=F16, hw=(3000, 8)), "rtx", "fp16-large-coordinates", "error"),
    ("plugin-version-unknown", lambda: plugin_op(version="99"), "trt10", "plugin-version", "error"),
    ("plugin-on-ort", plugin_op, "ort", "plugin-ops-on-ort", "info"),
    ("plugin-mode-99", lambda: fused_plugin_op(interpolation_mode=99), "rtx", "plugin-attribute", "error"),
    ("plugin-align-corners-5", lambda: fused_plugin_op(align_corners=5), "ort", "plugin-attribute", "error"),
    ("plugin-padding-7", lambda: fused_plugin_op(padding_mode=7), "trt10", "plugin-attribute", "error"),
    ("plugin-transform-9", lambda: fused_plugin_op(transform=9), "trt10", "plugin-attribute", "error"),
    ("plugin-out-h-negative", lambda: fused_plugin_op(out_h=-5), "trt10", "plugin-attribute", "error"),
    ("plugin-out-h-zero", lambda: fused_plugin_op(out_h=0), "trt10", "plugin-attribute", "error"),
    ("plugin-out-h-2e31", lambda: fused_plugin_op(out_h=2**31), "trt10", "plugin-attribute", "error"),
    ("plugin-out-h-missing", lambda: fused_plugin_op(out_h=None), "trt10", "plugin-attribute", "error"),
    ("plugin-projective-5d", lambda: fused_plugin_op(transform=1, out_d=4), "trt10", "plugin-attribute", "error"),
    ("plugin-theta-rank-2", lambda: fused_plugin_op(theta_shape=(2, 3)), "trt10", "plugin-input-rank", "error"),
]


@pytest.mark.parametrize("case,build,target,rule,severity", TRAPS, ids=[t[0] for t in TRAPS])
def test_doctor_finds_trap(case, build, target, rule, severity, tmp_path):
    path = tmp_path / f"{case}.onnx"
    onnx.save(build(), path)
    report = doctor(path, target)
    hits = [f for f in report.findings if f.rule == rule]
    assert hits, f"{rule} not found; got {[f.rule for f in report.findings]}"
    assert hits[0].severity == severity
    assert hits[0].node and hits[0].hint and hits[0].message
    assert report.ok == (not any(f.severity == "error" for f in report.findings))


def test_every_rule_is_tested():
    # plugin-library, plugin-gpu-targets: their own tests below (they need a library, not a graph).
    assert {t[3] for t in TRAPS} | {"plugin-library", "plugin-gpu-targets"} == set(RULES)


@pytest.mark.parametrize("installed,severity", [((0, 0), "warning"), ((11, 1), "error"), ((11, 2), "info"),
                                                 ((11, 4), "info")])
def test_trt11_5d_follows_the_installed_minor(installed, severity, tmp_path, monkeypatch):
    """5-D GridSample is native from TensorRT 11.2: an error for 11.0/11.1, a warning when unknown."""
    import stn_deploy.jobs.doctor as doctor_mod

    monkeypatch.setattr(doctor_mod, "_installed_tensorrt", lambda: installed)
    onnx.save(grid_sample("nearest", rank=5), tmp_path / "v.onnx")
    (hit,) = [f for f in doctor(tmp_path / "v.onnx", "trt11").findings if f.rule == "trt-gridsample-5d"]
    assert hit.severity == severity


@pytest.mark.parametrize("installed,flavours,target", [
    ((10, 14), ["tensorrt", "rtx"], "trt10"), ((11, 4), ["tensorrt"], "trt11"),
    ((0, 0), ["rtx"], "rtx"), ((0, 0), [], "trt11")])
def test_default_target_follows_the_installed_tensorrt(installed, flavours, target, tmp_path, monkeypatch):
    import stn_deploy.jobs.doctor as doctor_mod
    import stn_deploy.trt.flavour as flavour_mod

    monkeypatch.setattr(doctor_mod, "_installed_tensorrt", lambda: installed)
    monkeypatch.setattr(flavour_mod, "available_flavours", lambda: flavours)
    onnx.save(grid_sample("nearest"), tmp_path / "m.onnx")
    assert doctor(tmp_path / "m.onnx").target == target
    res = CliRunner().invoke(main, ["doctor", str(tmp_path / "m.onnx"), "--json"])
    assert json.loads(res.output)["target"] == target


@pytest.mark.parametrize("archs,target,missing", [
    (["90-real", "90-virtual"], "rtx", ["sm80", "sm86", "sm89"]),  # a quick STN_CUDA_ARCHS=90 build
    (["75-real", "80-real", "86-real", "89-real", "90-real", "120-real", "75-virtual"], "rtx", []),
    (["80-real"], "rtx", ["sm120"]),  # no PTX: nothing for Blackwell
])
def test_plugin_gpu_targets_against_the_library(archs, target, missing, tmp_path, monkeypatch):
    """The library's SASS/PTX against the GPUs an RTX engine targets by default."""
    from stn_deploy import kernels

    monkeypatch.setattr(kernels, "build_info", lambda path=None: {"architectures": archs})
    onnx.save(plugin_op(), tmp_path / "p.onnx")
    hits = [f for f in doctor(tmp_path / "p.onnx", target).findings if f.rule == "plugin-gpu-targets"]
    if not missing:
        assert hits == []
    else:
        (hit,) = hits
        assert hit.severity == "warning" and all(m in hit.message for m in missing)
        assert not any(m in hit.message.split("(built")[0] for m in {"sm80", "sm86", "sm89", "sm120"} - set(missing))


def test_garbage_plugin_library_is_an_error(tmp_path, monkeypatch):
    garbage = tmp_path / "libgarbage.so"
    garbage.write_bytes(b"not a shared library")
    monkeypatch.setenv("STN_DEPLOY_PLUGIN_LIBRARY", str(garbage))
    path = tmp_path / "p.onnx"
    onnx.save(plugin_op(), str(path))
    report = doctor(path, "rtx")
    assert [f.rule for f in report.errors] == ["plugin-library"] and "libgarbage.so" in report.errors[0].message


CLEAN = [
    ("plugin", plugin_op),
    ("opset16-bilinear", lambda: grid_sample("bilinear", opset=16)),
    ("fp16-small", lambda: grid_sample("nearest", dtype=F16, hw=(64, 64))),
]


@pytest.mark.parametrize("name,build", CLEAN, ids=[c[0] for c in CLEAN])
@pytest.mark.parametrize("target", ["trt10", "trt11"])
def test_clean_graph_has_no_findings(name, build, target, tmp_path):
    path = tmp_path / "clean.onnx"
    onnx.save(build(), path)
    assert doctor(path, target).findings == []


def test_our_plugin_export_is_clean_for_every_trt_target(tmp_path):
    from stn_deploy.jobs.export import export_module
    from stn_deploy.models import ModelConfig, build_model

    config = ModelConfig("st-cnn-projective")
    res = export_module(build_model(config), config.input_shape, tmp_path / "p.onnx", ops="plugin")
    for target in ("trt10", "trt11", "rtx"):
        # plugin-gpu-targets depends on how this library was built (a quick one-arch build warns).
        assert [f for f in doctor(res.path, target).findings if f.rule != "plugin-gpu-targets"] == [], target


def test_cli_doctor_exit_codes_and_json(tmp_path):
    runner = CliRunner()
    bad, good = tmp_path / "bad.onnx", tmp_path / "good.onnx"
    onnx.save(affine_grid(), bad)
    onnx.save(plugin_op(), good)
    res = runner.invoke(main, ["doctor", str(bad), "--json"])
    assert res.exit_code == 1
    payload = json.loads(res.stdout)
    assert payload["ok"] is False and payload["counts"]["error"] >= 1
    assert {"rule", "node", "severity", "message", "hint"} <= set(payload["findings"][0])
    res = runner.invoke(main, ["doctor", str(good), "--target", "rtx"])
    assert res.exit_code == 0, res.output
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07junk")
    res = runner.invoke(main, ["doctor", str(junk)])
    assert res.exit_code == 2 and res.output.startswith("error: ") and res.output.count("\n") == 1


def test_unknown_target_is_user_error(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(plugin_op(), path)
    assert "ort" in TARGETS
    with pytest.raises(UserError, match="unknown target"):
        doctor(path, "trt9")
