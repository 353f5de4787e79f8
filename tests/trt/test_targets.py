"""stn_deploy.trt.targets: where an engine runs, and whether the plugin's SASS/PTX runs there."""

from __future__ import annotations

import pytest

from stn_deploy.trt import targets


@pytest.mark.parametrize("archs,sass,ptx", [
    (["90-real", "90-virtual"], {90}, {90}),
    (["86"], {86}, {86}),  # a bare architecture is both, as in CMAKE_CUDA_ARCHITECTURES
    (["75-real", "120-real", "75-virtual"], {75, 120}, {75}),
    (["90a-real"], {90}, set()),
])
def test_library_code_reads_cmake_syntax(archs, sass, ptx):
    assert targets.library_code(archs) == (frozenset(sass), frozenset(ptx))


@pytest.mark.parametrize("cc,sass,ptx,how", [
    (86, {80}, set(), "sass sm_80"),        # same major, higher minor: binary compatible
    (80, {86}, set(), None),                # never downwards
    (90, {80, 86, 89}, set(), None),        # another major needs PTX
    (90, {80}, {75}, "ptx compute_75 (JIT)"),
    (120, {90}, {90}, "ptx compute_90 (JIT)"),
    (121, {120}, set(), "sass sm_120"),
    (75, set(), {80}, None),                # PTX only runs on its own capability and newer
])
def test_how_plugin_runs(cc, sass, ptx, how):
    assert targets.how_plugin_runs(cc, sass, ptx) == how


def test_check_names_missing_targets_in_the_warning():
    checked = targets.check([80, 86, 89, 120], "TensorRT-RTX default", ["90-real", "90-virtual"])
    assert checked.plugin_missing == ("sm80", "sm86", "sm89")
    assert checked.plugin_runs == {"sm120": "ptx compute_90 (JIT)"}
    assert not checked.ok and "sm80, sm86, sm89" in (checked.warning() or "")
    full = targets.check([80, 86, 89, 120], "TensorRT-RTX default",
                         ["75-real", "80-real", "86-real", "89-real", "90-real", "120-real", "75-virtual"])
    assert full.ok and full.warning() is None and full.to_dict()["ok"]


def test_engine_targets_for_rtx_options():
    assert targets.engine_targets("rtx", ()) == (list(targets.RTX_DEFAULT_TARGETS), "TensorRT-RTX default")
    assert targets.engine_targets("rtx", ("sm86", "sm120")) == ([86, 120], "--compute-capability")


def test_cc_number_rejects_junk():
    assert targets.cc_number("sm_86") == 86 and targets.cc_number("SM120") == 120
    with pytest.raises(ValueError):
        targets.cc_number("ampere")
