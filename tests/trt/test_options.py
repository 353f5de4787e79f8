"""stn_deploy.trt.options: --shapes syntax, BuildOptions checks, the build job, lazy import."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from stn_deploy.errors import UserError
from stn_deploy.trt import options as trt_options
from stn_deploy.trt.options import BuildOptions, ShapeRange, parse_shape_spec

# --------------------------------------------------------------------------- options (no TensorRT)


@pytest.mark.parametrize("spec, expected", [
    ("x:1x4,2x4,8x4", ShapeRange("x", (1, 4), (2, 4), (8, 4))),
    ("input:1x1x28x28", ShapeRange("input", (1, 1, 28, 28), (1, 1, 28, 28), (1, 1, 28, 28))),
    ("in:put:1x2,1x2,3x2", ShapeRange("in:put", (1, 2), (1, 2), (3, 2))),
], ids=["range", "single-shape", "colon-in-name"])
def test_parse_shape_spec_accepts(spec, expected):
    assert parse_shape_spec(spec) == expected
    assert parse_shape_spec(expected.spec()) == expected


@pytest.mark.parametrize("spec", ["x", "x:1x4,2x4", "x:1xa,2x4,3x4", ":1,2,3", "x:4x4,2x4,8x4", "x:1x4,2x4,8x4x1",
                                  "x:1x-4,2x4,8x4", "x:,,"],
                         ids=["no-shapes", "two-shapes", "letter", "no-name", "min-above-opt", "rank-mismatch",
                              "negative", "empty"])
def test_parse_shape_spec_rejects(spec):
    with pytest.raises(UserError, match="--shapes"):
        parse_shape_spec(spec)


@pytest.mark.parametrize("field, value, message", [
    ("precision", "int8", "precision"), ("flavour", "trt9", "flavour"), ("opt_level", 9, "opt-level"),
    ("workspace_mib", 0, "workspace"), ("compute_capabilities", ("sm90",), "compute capability"),
    ("shapes", (ShapeRange("x", (1,), (1,), (1,)),) * 2, "twice"),
])
def test_build_options_reject(tmp_path, field, value, message):
    with pytest.raises(UserError, match=message):
        BuildOptions(onnx=tmp_path / "m.onnx", engine=tmp_path / "m.engine", **{field: value})


def test_sidecar_path_appends_json():
    assert trt_options.sidecar_path(Path("a/model.engine")) == Path("a/model.engine.json")


def test_import_is_lazy():
    """``from stn_deploy import trt`` loads no TensorRT (so --help works anywhere)."""
    code = ("import sys; from stn_deploy import trt; import stn_deploy.cli; "
            "assert 'tensorrt_rtx' not in sys.modules and 'tensorrt' not in sys.modules, sorted(sys.modules)")
    subprocess.run([os.sys.executable, "-c", code], check=True)


def test_build_job_round_trips_through_json(tmp_path):
    from stn_deploy.schema import Precision
    from stn_deploy.trt.options import BuildJob

    job = BuildJob(onnx=tmp_path / "m.onnx", flavour="rtx", precision=Precision.FP16,
                   shapes=(parse_shape_spec("x:1x4,2x4,8x4"),), default_batch=(1, 8, 64), timing_cache=None,
                   opt_level=2, workspace_mib=None, compute_capabilities=("sm86",), plugin_library=tmp_path / "p.so",
                   plugin_ops=("STNGridSample",), out=tmp_path / ".m.engine.tmp")
    assert BuildJob.from_json(job.to_json()) == job
    with pytest.raises(ValueError, match="unknown keys: colour"):
        BuildJob.from_json(job.to_json()[:-1] + ', "colour": 1}')


@pytest.mark.parametrize("spec, expected", [
    ("x:1x4", ((1, 4), (1, 4), (1, 4))),
    ("x:[1,3,224,224]", ((1, 3, 224, 224),) * 3),
    ("x:[1, 4],[2, 4],[8, 4]", ((1, 4), (2, 4), (8, 4))),
    ("in:put:1x4,2x4,8x4", ((1, 4), (2, 4), (8, 4))),
])
def test_shape_syntaxes(spec, expected):
    from stn_deploy.trt.options import parse_shape_spec

    r = parse_shape_spec(spec)
    assert (r.min, r.opt, r.max) == expected


def test_trtexec_ranges_combine_per_input():
    from stn_deploy.trt.options import shapes_from_ranges

    both = shapes_from_ranges(["x:1x4,y:[1,2]"], ["x:2x4", "y:[2,2]"], ["x:8x4,y:3x2"])
    assert [(r.name, r.min, r.opt, r.max) for r in both] == [
        ("x", (1, 4), (2, 4), (8, 4)), ("y", (1, 2), (2, 2), (3, 2))]
    (only_opt,) = shapes_from_ranges((), ["x:2x4"], ())
    assert only_opt.min == only_opt.max == (2, 4)
    with pytest.raises(UserError, match="--opt-shapes is missing for x"):
        shapes_from_ranges(["x:1x4"], (), ["x:8x4"])
    with pytest.raises(UserError, match="names x twice"):
        shapes_from_ranges((), ["x:2x4,x:3x4"], ())
