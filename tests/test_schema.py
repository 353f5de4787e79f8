"""The one schema (stn_deploy/schema.py) against its C++ copies: the plugin creators' fields (asked
through TensorRT-RTX), the enums of gridSampleMath.h and the C descriptor that kernels.py mirrors."""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_trt import HAS_RTX
from stn_deploy import kernels, schema

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _c_enum(header: Path, name: str) -> dict[str, int]:
    """``enum class NAME : int32_t { kA = 0, ... }`` -> {"A": 0, ...}."""
    text = header.read_text()
    body = re.search(rf"enum class {name}\b[^{{]*\{{(.*?)\}}", text, re.S).group(1)
    return {k: int(v) for k, v in re.findall(r"k(\w+)\s*=\s*(-?\d+)", body)}


@pytest.mark.parametrize("python_enum, c_name", [(schema.InterpolationMode, "Interpolation"),
                                                   (schema.PaddingMode, "Padding")])
def test_enums_match_the_maths_header(python_enum, c_name):
    c_values = _c_enum(PLUGINS / "common" / "gridSampleMath.h", c_name)
    assert c_values == {m.name: int(m) for m in python_enum}


def test_descriptor_mirror_matches_the_c_struct():
    text = (PLUGINS / "common" / "stnKernelApi.h").read_text()
    body = re.search(r"typedef struct StnSampleDesc\s*\{(.*?)\}", text, re.S).group(1)
    c_fields = []
    for ctype, names in re.findall(r"(int32_t|int64_t)\s+([^;]+);", body):
        c_fields += [(n.strip(), ctype) for n in names.split(",")]
    py_fields = [(name, {ctypes.c_int32: "int32_t", ctypes.c_int64: "int64_t"}[t]) for name, t in kernels._Desc._fields_]
    assert py_fields == c_fields


def test_dtype_codes_match_the_c_api():
    text = (PLUGINS / "common" / "stnKernelApi.h").read_text()
    c_codes = {k.lower(): int(v) for k, v in re.findall(r"STN_DTYPE_(\w+)\s*=\s*(\d+)", text)}
    assert c_codes == kernels._DTYPE_CODES


def test_every_op_field_is_a_named_constant():
    constants = {v for k, v in vars(schema).items() if k.startswith("FIELD_") and k != "FIELD_PLUGIN_VERSION"}
    assert set().union(*map(set, schema.OP_FIELDS.values())) == constants
    assert schema.OP_FIELDS[schema.AFFINE_GRID_SAMPLE_OP][:3] == schema.OP_FIELDS[schema.GRID_SAMPLE_OP]


_ASK_CREATORS = """
import json, sys
import tensorrt_rtx as trt
builder = trt.Builder(trt.Logger(trt.Logger.ERROR))  # the registry takes plugins only after a Builder exists
registry = builder.get_plugin_registry()
registry.load_library(sys.argv[1])
out = {}
for name in sys.argv[2:]:
    creator = registry.get_creator(name, "1", "")
    out[name] = {"fields": [[f.name, str(f.type).split(".")[-1]] for f in creator.field_names],
                 "version": creator.plugin_version, "namespace": creator.plugin_namespace}
print(json.dumps(out))
"""


@pytest.mark.plugin
@pytest.mark.skipif(not HAS_RTX, reason="needs tensorrt_rtx to ask the creators")
def test_creators_fields_match_the_schema():
    lib = kernels.library_path()
    if not lib.is_file():
        pytest.skip(f"needs the plugin library ({lib}); stn-deploy plugins build")
    ops = list(schema.OP_FIELDS)
    # A child process: a TensorRT abort must not take the test run down.
    proc = subprocess.run([sys.executable, "-c", _ASK_CREATORS, str(lib), *ops], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    for op, names in schema.OP_FIELDS.items():
        assert found[op]["version"] == schema.PLUGIN_VERSION and found[op]["namespace"] == ""
        assert [n for n, _ in found[op]["fields"]] == list(names), op
        assert {t for _, t in found[op]["fields"]} == {"INT32"}, op  # ONNX INT attributes arrive as kINT32
