"""stn_deploy.trt.precision: reduced-precision graph copies for strongly typed builders."""

from __future__ import annotations

import numpy as np
from helpers_trt import (
    matmul_graph,
)


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
