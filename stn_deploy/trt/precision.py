"""Reduced-precision copies of an ONNX graph for strongly typed builders.

TensorRT-RTX (and TensorRT 11) take precision from the network's tensor types: there is no
FP16 builder flag. ``convert`` casts every floating-point constant and computation of the
graph to fp16 or bf16 while the graph inputs and outputs stay fp32 (a Cast at each end), so
callers feed and read fp32 whatever the engine computes in. It is a plain cast, not NVIDIA
ModelOpt's AutoCast: no operator is kept in fp32 for range reasons, which is adequate for the
small STN graphs here and checked by ``stn-deploy validate``.
"""

from __future__ import annotations

import numpy as np

#: ONNX inputs that must stay fp32 whatever the precision: (op_type, input index).
_FP32_ONLY_INPUTS = {("Resize", 1), ("Resize", 2)}

#: Sampling coordinates of our plugin ops (theta / grid, input 1): they stay fp32 in fp16/bf16
#: graphs unless the source graph itself gives them in half precision. An fp16 coordinate is off
#: by up to 2^-11 * W/2 pixels (0.47 px at W = 1920); the plugins take fp32 coordinates beside
#: fp16/bf16 images at no cost (the kernels compute coordinates in fp32 anyway). Native
#: GridSample / AffineGrid are left as converted (doctor's fp16-large-coordinates warns).
_COORDINATE_INPUTS = {("STNGridSample", 1), ("STNAffineGridSample", 1)}


def _to_bf16_bits(array: np.ndarray) -> np.ndarray:
    """fp32 -> bf16 bit patterns (uint16), round to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(array)
    return np.where(nan, np.uint16(0x7FC0), rounded)


def _convert_tensor(tensor, elem_type: int) -> None:
    from onnx import TensorProto, numpy_helper

    array = numpy_helper.to_array(tensor).astype(np.float32)
    name = tensor.name
    tensor.Clear()
    tensor.name = name
    tensor.data_type = elem_type
    tensor.dims.extend(array.shape)
    if elem_type == TensorProto.FLOAT16:
        tensor.raw_data = array.astype(np.float16).tobytes()
    else:
        tensor.raw_data = _to_bf16_bits(array).tobytes()


def _half_tensors(model) -> set[str]:
    """Names of the tensors that are fp16/bf16 in the (unconverted) graph, by ONNX type inference."""
    import onnx
    from onnx import TensorProto

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # custom ops or a malformed model: only the declared types count
        inferred = model
    half = {TensorProto.FLOAT16, TensorProto.BFLOAT16}
    graph = inferred.graph
    found = {v.name for v in list(graph.input) + list(graph.value_info) + list(graph.output)
             if v.type.tensor_type.elem_type in half}
    found |= {i.name for i in graph.initializer if i.data_type in half}
    return found


def convert(model, precision: str):
    """Return a copy of ``model`` computing in ``precision`` ("fp16" or "bf16") with fp32 I/O.

    Args:
        model: an ``onnx.ModelProto`` (not modified).
        precision: "fp16" or "bf16"; "fp32" returns the model unchanged.
    """
    import onnx
    from onnx import TensorProto, helper

    if precision == "fp32":
        return model
    elem = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}[precision]
    half_in_source = _half_tensors(model)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    coordinates = {node.input[i] for node in graph.node for i in range(len(node.input))
                   if (node.op_type, i) in _COORDINATE_INPUTS and node.input[i] not in half_in_source}

    keep = {node.input[i] for node in graph.node for i in range(len(node.input))
            if (node.op_type, i) in _FP32_ONLY_INPUTS} | coordinates
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            _convert_tensor(init, elem)
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "to" and node.op_type == "Cast" and attr.i == TensorProto.FLOAT:
                attr.i = elem
            elif attr.name == "dtype" and attr.i == TensorProto.FLOAT:
                attr.i = elem
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT \
                    and not (set(node.output) & keep):
                _convert_tensor(attr.t, elem)

    initializers = {i.name for i in graph.initializer}
    casts_in = []
    for value in graph.input:
        if value.name in initializers or value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        low = f"{value.name}__{precision}"
        rewired = False
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == value.name and (node.op_type, i) not in _FP32_ONLY_INPUTS \
                        and not ((node.op_type, i) in _COORDINATE_INPUTS and name in coordinates):
                    node.input[i] = low
                    rewired = True
        if not rewired and value.name in coordinates:
            continue  # only the samplers read it, in fp32
        casts_in.append(helper.make_node("Cast", [value.name], [low], name=f"cast_in_{value.name}", to=elem))
    casts_out = []
    for value in graph.output:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        low = f"{value.name}__{precision}"
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == value.name:
                    node.output[i] = low
            for i, name in enumerate(node.input):
                if name == value.name:
                    node.input[i] = low
        casts_out.append(helper.make_node("Cast", [low], [value.name], name=f"cast_out_{value.name}",
                                          to=TensorProto.FLOAT))
    # Coordinates computed inside the graph (a localisation net's theta) are now half: back to
    # fp32 just before the sampler. Graph inputs, initializers and Constants among them stayed fp32.
    constant_outputs = {o for node in graph.node if node.op_type == "Constant" for o in node.output}
    computed = coordinates - initializers - {v.name for v in graph.input} - constant_outputs
    casts_coord = []
    for name in sorted(computed):
        wide = f"{name}__fp32"
        for node in graph.node:
            for i, inp in enumerate(node.input):
                if inp == name and (node.op_type, i) in _COORDINATE_INPUTS:
                    node.input[i] = wide
        casts_coord.append(helper.make_node("Cast", [name], [wide], name=f"cast_fp32_{name}", to=TensorProto.FLOAT))
    ordered = []
    for node in graph.node:
        ordered.append(node)
        ordered += [c for c in casts_coord if c.input[0] in node.output]
    nodes = casts_in + ordered + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    # Intermediate type annotations are now stale; TensorRT infers types itself.
    del graph.value_info[:]
    return model


def keep_coordinates_fp32(network, trt) -> int:
    """Weakly typed builds (TensorRT 10 with the FP16/BF16 flag): ask for fp32 theta/grid.

    The plugins accept fp32 or the image's 16-bit type for their coordinates, and with a
    reduced-precision flag TensorRT may pick the 16-bit one (smaller) unless told otherwise.
    This marks the producer of every ``STNGridSample`` / ``STNAffineGridSample`` coordinate
    input to emit fp32 (a precision constraint: set ``PREFER_PRECISION_CONSTRAINTS`` on the
    builder config when the count is > 0). Coordinates that are network inputs are left to
    their declared type. Strongly typed builds do not need this (``convert`` does it).

    Returns:
        The number of coordinate tensors constrained.
    """
    names = {"STNGridSample", "STNAffineGridSample"}
    producers = {}
    for li in range(network.num_layers):
        layer = network.get_layer(li)
        for oi in range(layer.num_outputs):
            producers[layer.get_output(oi).name] = (layer, oi)
    constrained = 0
    for li in range(network.num_layers):
        layer = network.get_layer(li)
        if layer.type != trt.LayerType.PLUGIN_V3 or layer.num_inputs < 2:
            continue
        try:
            core = layer.plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
            plugin_name = core.plugin_name
        except AttributeError:  # another plugin generation or binding: not ours to judge
            continue
        if plugin_name not in names:
            continue
        found = producers.get(layer.get_input(1).name)
        if found is None:
            continue
        producer, oi = found
        producer.set_output_type(oi, trt.float32)
        constrained += 1
    return constrained
