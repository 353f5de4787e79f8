"""docs/tensorrt-api.md lists every TensorRT module attribute ``stn_deploy/trt`` uses, with the
versions that have it; the RTX column is re-checked on the installed tensorrt_rtx."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "tensorrt-api.md"


def used_attributes() -> set[str]:
    """``trt.X.Y`` chains in stn_deploy/trt, where ``trt`` is always TensorRT's module."""
    found = set()
    for path in (ROOT / "stn_deploy" / "trt").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            chain, value = [], node
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id == "trt":
                names = [c for c in reversed(chain) if c != "__init__"]
                found.add(".".join(names))
    # An enum or class is listed with its members; its bare name is covered by them.
    return {a for a in found if not any(b.startswith(a + ".") for b in found)}


def table() -> dict[str, list[str]]:
    rows = {}
    for line in TABLE.read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_attribute_used_is_in_the_table():
    listed = table()
    missing = sorted(a for a in used_attributes() if a not in listed)
    assert not missing, f"add these to {TABLE.name} (checked against the 10.14 / 11.1 bindings): {missing}"
    assert "BuilderFlag.FP16" in listed  # the scan sees real uses


def test_attributes_absent_in_11_say_why():
    for name, cells in table().items():
        if "no" in cells[1]:
            assert cells[4], f"{name} is missing in TensorRT 11.1: the table must say how the code copes"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="needs tensorrt_rtx")
def test_rtx_column_matches_the_installed_module():
    import tensorrt_rtx

    def has(name: str) -> bool:
        obj = tensorrt_rtx
        for part in name.split("."):
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True

    wrong = {name: cells[2] for name, cells in table().items() if (cells[2] == "yes") != has(name)}
    assert not wrong, wrong
