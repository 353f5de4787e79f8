"""stn_deploy.ort_ops: our plugin ops in ONNX Runtime, computed by the plugin's CPU reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from helpers_export import PLUGIN_TOL, assert_close, kernels_available
from stn_deploy import schema
from stn_deploy.errors import UserError
from stn_deploy.graph import PLUGIN_VERSION_ATTR
from stn_deploy.ort_ops import ort_session, register_ops

pytestmark = pytest.mark.plugin


@pytest.fixture(autouse=True)
def _need_kernels():
    why = kernels_available()
    if why:
        pytest.skip(why)


def _plugin_model(op: str, x_shape, second_shape, out_shape, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x", "coords"], ["y"], name="n", domain=schema.PLUGIN_DOMAIN, **attrs)
    graph = helper.make_graph(
        [node], "plugin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
         helper.make_tensor_value_info("coords", TensorProto.FLOAT, second_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(schema.PLUGIN_DOMAIN, 1)])


def _fields(mode, padding, align):
    return {PLUGIN_VERSION_ATTR: schema.PLUGIN_VERSION, **schema.SamplerSettings(mode, padding, align).plugin_fields()}


SETTINGS = [(m, p, a) for m in ("bilinear", "nearest", "bicubic") for p in ("zeros", "border", "reflection") for a in (False, True)]


@pytest.mark.parametrize("mode,padding,align", SETTINGS, ids=[f"{m}-{p}-ac{int(a)}" for m, p, a in SETTINGS])
def test_grid_sample_op_matches_torch(mode, padding, align):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, (2, 5, 6, 2)).astype(np.float32)
    model = _plugin_model(schema.GRID_SAMPLE_OP, ["N", 3, 7, 9], ["N", 5, 6, 2], ["N", 3, 5, 6], **_fields(mode, padding, align))
    actual = ort_session(model).run(None, {"x": x, "coords": grid})[0]
    expected = F.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), mode=mode, padding_mode=padding,
                             align_corners=align).numpy()
    assert_close(actual, expected, tol=PLUGIN_TOL, what="STNGridSample")


def test_grid_sample_op_5d():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 4, 5, 6)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, (2, 3, 4, 5, 3)).astype(np.float32)
    model = _plugin_model(schema.GRID_SAMPLE_OP, [2, 2, 4, 5, 6], [2, 3, 4, 5, 3], [2, 2, 3, 4, 5],
                          **_fields("bilinear", "border", False))
    actual = ort_session(model).run(None, {"x": x, "coords": grid})[0]
    expected = F.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), padding_mode="border", align_corners=False).numpy()
    assert_close(actual, expected, tol=PLUGIN_TOL, what="STNGridSample 5-D")


FUSED = [("affine", (2, 3), (5, 6)), ("projective", (3, 3), (5, 6)), ("affine3d", (3, 4), (3, 4, 5))]


@pytest.mark.parametrize("kind,theta_rows_cols,out", FUSED, ids=[f[0] for f in FUSED])
def test_affine_grid_sample_op_matches_torch(kind, theta_rows_cols, out):
    rng = np.random.default_rng(2)
    rank = len(out) + 2
    x = rng.standard_normal((2, 3, *([4] * (rank - 2)))).astype(np.float32)
    r, c = theta_rows_cols
    theta = (np.eye(r, c) + 0.1 * rng.standard_normal((2, r, c))).astype(np.float32)
    transform = schema.Transform.PROJECTIVE if kind == "projective" else schema.Transform.AFFINE
    attrs = {**_fields("bilinear", "zeros", False), schema.FIELD_TRANSFORM: int(transform),
             schema.FIELD_OUT_D: out[0] if len(out) == 3 else 0, schema.FIELD_OUT_H: out[-2], schema.FIELD_OUT_W: out[-1]}
    model = _plugin_model(schema.AFFINE_GRID_SAMPLE_OP, list(x.shape), [2, r, c], [2, 3, *out], **attrs)
    actual = ort_session(model).run(None, {"x": x, "coords": theta})[0]
    t, size = torch.from_numpy(theta), [2, 3, *out]
    if kind == "projective":
        xy = F.affine_grid(t[:, :2], size, align_corners=False)
        w = F.affine_grid(torch.cat([t[:, 2:3]] * 2, 1), size, align_corners=False)
        grid = xy / w[..., :1]
    else:
        grid = F.affine_grid(t, size, align_corners=False)
    expected = F.grid_sample(torch.from_numpy(x), grid, align_corners=False).numpy()
    assert_close(actual, expected, tol=PLUGIN_TOL, what=f"STNAffineGridSample {kind}")


def test_op_errors_are_user_errors_not_aborts():
    """onnxruntime-extensions aborts the process when a Python op raises; ours must not."""
    x = np.zeros((1, 1, 4, 4), np.float32)
    grid = np.zeros((1, 2, 2, 2), np.float32)
    bad_version = _plugin_model(schema.GRID_SAMPLE_OP, [1, 1, 4, 4], [1, 2, 2, 2], [1, 1, 2, 2],
                                **{**_fields("bilinear", "zeros", False), PLUGIN_VERSION_ATTR: "7"})
    with pytest.raises(UserError, match="plugin_version '7'"):
        ort_session(bad_version).run(None, {"x": x, "coords": grid})
    bad_mode = _plugin_model(schema.GRID_SAMPLE_OP, [1, 1, 4, 4], [1, 2, 2, 2], [1, 1, 2, 2],
                             **{**_fields("bilinear", "zeros", False), schema.FIELD_INTERPOLATION_MODE: 9})
    with pytest.raises(UserError, match="'interpolation_mode' = 9"):
        ort_session(bad_mode).run(None, {"x": x, "coords": grid})
    fused_attrs = {**_fields("bilinear", "zeros", False), schema.FIELD_TRANSFORM: 1, schema.FIELD_OUT_D: 0,
                   schema.FIELD_OUT_H: 2, schema.FIELD_OUT_W: 2}
    wrong_transform = _plugin_model(schema.AFFINE_GRID_SAMPLE_OP, [1, 1, 4, 4], [1, 2, 3], [1, 1, 2, 2], **fused_attrs)
    with pytest.raises(UserError, match="transform=1"):
        ort_session(wrong_transform).run(None, {"x": x, "coords": np.zeros((1, 2, 3), np.float32)})
    # And the session still works afterwards.
    good = _plugin_model(schema.GRID_SAMPLE_OP, [1, 1, 4, 4], [1, 2, 2, 2], [1, 1, 2, 2], **_fields("nearest", "zeros", False))
    assert ort_session(good).run(None, {"x": x, "coords": grid})[0].shape == (1, 1, 2, 2)


def test_missing_attributes():
    # Optional ones get their defaults; a fused op without its output size is rejected.
    x = np.ones((1, 1, 4, 4), np.float32)
    grid = np.zeros((1, 2, 2, 2), np.float32)
    bare = _plugin_model(schema.GRID_SAMPLE_OP, [1, 1, 4, 4], [1, 2, 2, 2], [1, 1, 2, 2])
    assert ort_session(bare).run(None, {"x": x, "coords": grid})[0].shape == (1, 1, 2, 2)
    no_size = _plugin_model(schema.AFFINE_GRID_SAMPLE_OP, [1, 1, 4, 4], [1, 2, 3], [1, 1, 2, 2])
    with pytest.raises(UserError, match="out_h"):
        ort_session(no_size)


def test_register_is_idempotent():
    register_ops()
    register_ops()
