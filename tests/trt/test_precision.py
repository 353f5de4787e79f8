"""stn_deploy.trt.precision: reduced-precision graph copies for strongly typed builders; the
plugins' sampling coordinates (theta / grid) stay fp32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers_trt import (
    matmul_graph,
)
from stn_deploy.trt import precision


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


def _plugin_graph(coordinate_source: str):
    """X [1,1,8,8] -> a tiny localisation net (or a graph input, or a half Cast) -> theta ->
    stn_deploy::STNAffineGridSample(X, theta) -> Y, and a plain Relu of X beside it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8]),
               helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 1, 8, 8])]
    inputs, inits, nodes = [x], [], []
    if coordinate_source == "input":
        inputs.append(helper.make_tensor_value_info("theta", TensorProto.FLOAT, [1, 2, 3]))
    else:
        inits += [numpy_helper.from_array(np.zeros((64, 6), np.float32), "w"),
                  numpy_helper.from_array(np.array([1, 0, 0, 0, 1, 0], np.float32), "b"),
                  numpy_helper.from_array(np.array([1, 2, 3], np.int64), "shape")]
        nodes += [helper.make_node("Flatten", ["x"], ["flat"]),
                  helper.make_node("MatMul", ["flat", "w"], ["mm"]),
                  helper.make_node("Add", ["mm", "b"], ["theta_flat"]),
                  helper.make_node("Reshape", ["theta_flat", "shape"],
                                   ["theta" if coordinate_source == "computed" else "theta32"])]
        if coordinate_source == "half":
            nodes.append(helper.make_node("Cast", ["theta32"], ["theta"], to=TensorProto.FLOAT16))
    nodes += [helper.make_node("STNAffineGridSample", ["x", "theta"], ["y"], domain="stn_deploy",
                               out_h=8, out_w=8),
              helper.make_node("Relu", ["x"], ["r"])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("stn_deploy", 1)])


def _producer_types(model) -> dict[str, int]:
    """Element type of every tensor whose producer fixes it (Cast, graph inputs, initializers)."""
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.input}
    types |= {i.name: i.data_type for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Cast":
            types[node.output[0]] = next(a.i for a in node.attribute if a.name == "to")
    return types


def _plugin(model):
    return next(n for n in model.graph.node if n.op_type == "STNAffineGridSample")


@pytest.mark.parametrize("precision_name, half", [("fp16", TensorProto.FLOAT16), ("bf16", TensorProto.BFLOAT16)])
def test_computed_theta_is_cast_back_to_fp32_before_the_plugin(precision_name, half):
    model = precision.convert(_plugin_graph("computed"), precision_name)
    onnx.checker.check_model(model)
    plugin = _plugin(model)
    types = _producer_types(model)
    assert types[plugin.input[1]] == TensorProto.FLOAT  # theta: fp32
    assert types[plugin.input[0]] == half  # the image: converted
    # The localisation net itself computes in half (its weights were converted).
    assert {i.name: i.data_type for i in model.graph.initializer}["w"] == half
    # Topological order: the Cast comes after theta's producer and before the plugin.
    names = [o for n in model.graph.node for o in n.output]
    assert names.index("theta") < names.index(plugin.input[1]) < names.index("y__" + precision_name)


def test_graph_input_theta_stays_fp32_and_other_consumers_are_converted():
    model = precision.convert(_plugin_graph("input"), "fp16")
    plugin = _plugin(model)
    assert plugin.input[1] == "theta"  # the fp32 graph input itself, no Cast to half
    assert not [n for n in model.graph.node if n.op_type == "Cast" and n.input[0] == "theta"]
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    assert relu.input[0] == "x__fp16"


def test_half_coordinates_of_the_source_graph_are_kept():
    model = precision.convert(_plugin_graph("half"), "fp16")
    plugin = _plugin(model)
    assert plugin.input[1] == "theta"
    assert _producer_types(model)["theta"] == TensorProto.FLOAT16
    assert not [n for n in model.graph.node if n.name.startswith("cast_fp32_")]


def test_weakly_typed_networks_ask_for_fp32_coordinates():
    """``keep_coordinates_fp32`` on a stand-in network (full TensorRT is not installable here):
    the producer of our plugins' coordinate input gets an fp32 output type, nothing else does."""
    from types import SimpleNamespace as NS

    trt = NS(LayerType=NS(PLUGIN_V3="plugin_v3", SHUFFLE="shuffle"), PluginCapabilityType=NS(CORE="core"),
             float32="float32")

    class Layer:
        def __init__(self, kind, inputs, outputs, plugin_name=None):
            self.type, self._in, self._out = kind, [NS(name=n) for n in inputs], [NS(name=n) for n in outputs]
            self.num_inputs, self.num_outputs, self.output_types = len(inputs), len(outputs), {}
            if plugin_name:
                self.plugin = NS(get_capability_interface=lambda cap: NS(plugin_name=plugin_name))

        def get_input(self, i):
            return self._in[i]

        def get_output(self, i):
            return self._out[i]

        def set_output_type(self, i, t):
            self.output_types[i] = t

    loc = Layer(trt.LayerType.SHUFFLE, ["fc"], ["theta"])
    other_loc = Layer(trt.LayerType.SHUFFLE, ["fc2"], ["param"])
    ours = Layer(trt.LayerType.PLUGIN_V3, ["x", "theta"], ["y"], "STNAffineGridSample")
    theirs = Layer(trt.LayerType.PLUGIN_V3, ["y", "param"], ["z"], "SomeoneElsesPlugin")
    from_input = Layer(trt.LayerType.PLUGIN_V3, ["x", "grid_input"], ["w"], "STNGridSample")
    layers = [loc, other_loc, ours, theirs, from_input]
    network = NS(num_layers=len(layers), get_layer=lambda i: layers[i])
    assert precision.keep_coordinates_fp32(network, trt) == 1
    assert loc.output_types == {0: "float32"}
    assert other_loc.output_types == {}
