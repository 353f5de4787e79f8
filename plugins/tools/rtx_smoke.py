"""Smoke check: TensorRT-RTX's ONNX parser finds our plugins and builds engines on the CPU.

Each case runs in its own subprocess (a parser/builder abort kills the interpreter). Valid
cases must build; invalid ones must fail with our one-line message naming the field or input.

    .venv/bin/python plugins/tools/rtx_smoke.py [path/to/libstn_deploy_plugins.so]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# (name, op, X dtype, X shape, coordinate input shape, attributes, expected message or None)
CASES = [
    ("grid-bilinear-fp32", "STNGridSample", "FLOAT", [1, 3, 8, 8], [1, 5, 6, 2], {}, None),
    ("grid-bicubic-fp16", "STNGridSample", "FLOAT16", [1, 3, 8, 8], [1, 5, 6, 2], {"interpolation_mode": 2}, None),
    ("grid-nearest-bf16-5d", "STNGridSample", "BFLOAT16", [2, 3, 4, 6, 8], [2, 2, 3, 4, 3], {"interpolation_mode": 1}, None),
    ("affine-projective", "STNAffineGridSample", "FLOAT", [1, 3, 8, 8], [1, 3, 3], {"transform": 1, "out_h": 5, "out_w": 6}, None),
    ("affine-3d", "STNAffineGridSample", "FLOAT16", [1, 2, 4, 6, 8], [1, 3, 4], {"out_d": 3, "out_h": 4, "out_w": 5}, None),
    ("bad-mode-7", "STNGridSample", "FLOAT", [1, 3, 8, 8], [1, 5, 6, 2], {"interpolation_mode": 7}, "field 'interpolation_mode' = 7"),
    ("bad-padding-affine", "STNAffineGridSample", "FLOAT", [1, 3, 8, 8], [1, 2, 3], {"padding_mode": 9, "out_h": 5, "out_w": 6},
     "field 'padding_mode' = 9"),
    ("bad-int8-input", "STNGridSample", "INT8", [1, 3, 8, 8], [1, 5, 6, 2], {}, "input 'X' has dtype INT8"),
    ("bad-rank-3", "STNGridSample", "FLOAT", [3, 8, 8], [1, 5, 6, 2], {}, "input 'X' must have rank 4"),
]

CHILD = r"""
import sys, json
from onnx import helper, TensorProto
import tensorrt_rtx as trt
lib, op, dtype, xs, cs, attrs = sys.argv[1], sys.argv[2], sys.argv[3], *map(json.loads, sys.argv[4:7])
fields = dict(interpolation_mode=0, padding_mode=0, align_corners=0)
if op == "STNAffineGridSample":
    fields.update(transform=0, out_d=0, out_h=1, out_w=1)
fields.update(attrs)
coord = "grid" if op == "STNGridSample" else "theta"
node = helper.make_node(op, ["X", coord], ["Y"], domain="stn_deploy", plugin_version="1", **fields)
inputs = [helper.make_tensor_value_info("X", getattr(TensorProto, dtype), xs),
          helper.make_tensor_value_info(coord, TensorProto.FLOAT, cs)]
graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", getattr(TensorProto, dtype), None)])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("stn_deploy", 1)])
logger = trt.Logger(trt.Logger.WARNING)
builder = trt.Builder(logger)                     # a Builder first, then load the library
builder.get_plugin_registry().load_library(lib)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
if not parser.parse(model.SerializeToString()):
    sys.exit(3)
engine = builder.build_serialized_network(network, builder.create_builder_config())
sys.exit(0 if engine is not None else 4)
"""


def main() -> int:
    import json

    if len(sys.argv) > 1:
        lib = Path(sys.argv[1])
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from stn_deploy import kernels

        lib = kernels.library_path()
    failures = 0
    for name, op, dtype, xs, cs, attrs, expect in CASES:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(lib), op, dtype, json.dumps(xs), json.dumps(cs), json.dumps(attrs)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        log = proc.stdout + proc.stderr
        if expect is None:
            ok = proc.returncode == 0
            detail = "built" if ok else f"rc={proc.returncode}: {log.strip().splitlines()[-1:]}"
        else:
            ok = proc.returncode not in (0, 4) and proc.returncode > 0 and expect in log
            line = next((ln for ln in log.splitlines() if expect in ln), "no message")
            detail = f"rc={proc.returncode} {line.strip()}"
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name:24s} {detail}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
