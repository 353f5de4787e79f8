"""Engines built once for the builder, inspector and runner tests (TensorRT-RTX, CPU-only AOT)."""

from __future__ import annotations

import pytest

from helpers_trt import HAS_RTX, affine_grid_graph, dynamic_hw_graph, grid_sample_graph, matmul_graph
from stn_deploy.trt.options import BuildOptions, parse_shape_spec, shapes_from_ranges


@pytest.fixture(scope="session")
def standard_builds(tmp_path_factory):
    """Several RTX builds in one worker process: name -> BuildOutcome."""
    if not HAS_RTX:
        pytest.skip("needs tensorrt_rtx")
    from stn_deploy.trt import build_many

    d = tmp_path_factory.mktemp("builds")
    mm, gs = matmul_graph(d / "mm.onnx"), grid_sample_graph(d / "gs.onnx")
    cases = {
        "fp32": BuildOptions(mm, d / "fp32.engine", shapes=(parse_shape_spec("x:1x4,2x4,16x4"),)),
        "fp16": BuildOptions(mm, d / "fp16.engine", precision="fp16"),
        "bf16": BuildOptions(mm, d / "bf16.engine", precision="bf16"),
        "sm86": BuildOptions(mm, d / "sm86.engine", compute_capabilities=("sm86", "sm89"), opt_level=1,
                             workspace_mib=64, timing_cache=d / "tc.bin"),
        "gridsample": BuildOptions(gs, d / "gs.engine"),
        "affine-grid": BuildOptions(affine_grid_graph(d / "ag.onnx"), d / "ag.engine", doctor=False),
        "dynamic-hw": BuildOptions(dynamic_hw_graph(d / "dyn.onnx"), d / "dyn.engine"),
        "dynamic-hw-shapes": BuildOptions(d / "dyn.onnx", d / "dyn2.engine",
                                          shapes=(parse_shape_spec("x:1x1x8x8,2x1x16x16,4x1x32x32"),)),
        "sm75-fp32-gemm": BuildOptions(mm, d / "sm75.engine", compute_capabilities=("sm75",)),
        # The three shape syntaxes: NAME:SHAPE (min = opt = max), Polygraphy's, trtexec's.
        "shapes-fixed": BuildOptions(d / "dyn.onnx", d / "fixed.engine", shapes=(parse_shape_spec("x:2x1x8x8"),)),
        "shapes-polygraphy": BuildOptions(d / "dyn.onnx", d / "pg.engine",
                                          shapes=(parse_shape_spec("x:[1,1,8,8],[2,1,16,16],[4,1,32,32]"),)),
        "shapes-trtexec": BuildOptions(d / "dyn.onnx", d / "trtexec.engine", shapes=shapes_from_ranges(
            ["x:1x1x8x8"], ["x:2x1x16x16"], ["x:4x1x32x32"])),
    }
    events: list[dict] = []
    outcomes = build_many(list(cases.values()), progress=events.append)
    return {"dir": d, "events": events, **dict(zip(cases, outcomes))}
