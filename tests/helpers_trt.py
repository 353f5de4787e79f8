"""ONNX graphs for the engine-build tests (tests/trt, test_cli.py), made with onnx.helper."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from stn_deploy import schema


def _save(graph, path: Path, opset: int = 17, domains=()) -> Path:
    import onnx
    from onnx import helper

    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    onnx.save(helper.make_model(graph, opset_imports=imports), str(path))
    return path


def matmul_graph(path: Path) -> Path:
    """y = relu(x @ W) with x [N, 4] (dynamic batch)."""
    from onnx import TensorProto as T
    from onnx import helper as h

    w = h.make_tensor("W", T.FLOAT, [4, 4], np.arange(16, dtype=np.float32) / 16)
    g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
                      h.make_node("Relu", ["h"], ["y"], name="relu")], "mm",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 4])], [w])
    return _save(g, path)


def grid_sample_graph(path: Path) -> Path:
    """Native opset-20 GridSample (linear, zeros), x [N,1,8,8], grid [N,8,8,2]."""
    from onnx import TensorProto as T
    from onnx import helper as h

    g = h.make_graph([h.make_node("GridSample", ["x", "grid"], ["y"], name="sampler", mode="linear",
                                  padding_mode="zeros", align_corners=0)], "gs",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 8, 8]),
                      h.make_tensor_value_info("grid", T.FLOAT, ["N", 8, 8, 2])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 1, 8, 8])])
    return _save(g, path, opset=20)


def affine_grid_graph(path: Path) -> Path:
    """AffineGrid + GridSample at opset 20: the legacy STN export TensorRT cannot import."""
    from onnx import TensorProto as T
    from onnx import helper as h

    g = h.make_graph([
        h.make_node("Constant", [], ["size"], value=h.make_tensor("s", T.INT64, [4], [1, 1, 8, 8])),
        h.make_node("AffineGrid", ["theta", "size"], ["grid"], name="affine_grid", align_corners=0),
        h.make_node("GridSample", ["x", "grid"], ["y"], name="sampler", mode="linear")], "ag",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 1, 8, 8]), h.make_tensor_value_info("theta", T.FLOAT, [1, 2, 3])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 1, 8, 8])])
    return _save(g, path, opset=20)


def dynamic_hw_graph(path: Path) -> Path:
    """Relu on x [N, 1, H, W]: dynamic beyond the batch, so a profile must be given."""
    from onnx import TensorProto as T
    from onnx import helper as h

    g = h.make_graph([h.make_node("Relu", ["x"], ["y"], name="relu")], "dyn",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, "H", "W"])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 1, "H", "W"])])
    return _save(g, path)


def plugin_graph(path: Path, op: str, fields: dict, x_shape=(2, 3, 8, 8), x_type=None,
                 second_shape=None, out_shape=None) -> Path:
    """One of our plugin ops as the only node (x, grid|theta) -> y."""
    from onnx import TensorProto as T
    from onnx import helper as h

    x_type = T.FLOAT if x_type is None else x_type
    n = x_shape[0]
    if op == schema.GRID_SAMPLE_OP:
        second = ("grid", second_shape or (n, 5, 7, 2))
        out = out_shape or (n, x_shape[1], 5, 7)
    else:
        transform = fields.get(schema.FIELD_TRANSFORM, 0)
        second = ("theta", second_shape or ((n, 3, 3) if transform == 1 else (n, 2, 3)))
        out = out_shape or (n, x_shape[1], fields.get(schema.FIELD_OUT_H, 6), fields.get(schema.FIELD_OUT_W, 5))
    node = h.make_node(op, ["x", second[0]], ["y"], name=f"{op}_node", domain=schema.PLUGIN_DOMAIN,
                       plugin_version=schema.PLUGIN_VERSION, **fields)
    g = h.make_graph([node], "plugin",
                     [h.make_tensor_value_info("x", x_type, list(x_shape)),
                      h.make_tensor_value_info(second[0], T.FLOAT, list(second[1]))],
                     [h.make_tensor_value_info("y", x_type, list(out))])
    return _save(g, path, opset=17, domains=[schema.PLUGIN_DOMAIN])


HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="needs tensorrt_rtx (pip install 'stn-deploy[rtx]')")


def no_temp_files(folder: Path) -> bool:
    """No atomic-write temporary (``.X.<rand>.tmp``) left in ``folder``."""
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
