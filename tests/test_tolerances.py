"""stn_deploy.tolerances: the one comparison helper and its per-dtype tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stn_deploy.errors import UserError
from stn_deploy.schema import PRECISION_NAMES, Precision
from stn_deploy.tolerances import KERNEL_TOLERANCES, TOLERANCES, Tolerance, assert_close, compare, tolerance_for


def test_compare_statistics_and_worst_index():
    expected = np.zeros((2, 3))
    actual = expected.copy()
    actual[1, 2] = 0.5
    actual[0, 0] = 0.01
    stats = compare(actual, expected, Tolerance(atol=0.1, rtol=0.0))
    assert stats.mismatches == 1 and not stats.passed
    assert stats.worst_index == (1, 2) and stats.worst_actual == 0.5 and stats.worst_expected == 0.0
    assert stats.max_abs == 0.5 and stats.mean_abs == pytest.approx(0.51 / 6)
    assert "worst at [1, 2]" in stats.line() and stats.to_dict()["passed"] is False


def test_rtol_scales_with_the_expected_value():
    expected = np.array([100.0, 1.0])
    actual = np.array([100.5, 1.5])
    stats = compare(actual, expected, Tolerance(atol=0.0, rtol=0.01))
    assert stats.mismatches == 1 and stats.worst_index == (1,)


def test_non_finite_values():
    tol = Tolerance(1e-3, 1e-3)
    assert compare(np.array([np.nan, np.inf]), np.array([np.nan, np.inf]), tol).passed
    assert not compare(np.array([np.nan]), np.array([1.0]), tol).passed
    assert not compare(np.array([np.inf]), np.array([-np.inf]), tol).passed


def test_shape_mismatch_and_empty():
    with pytest.raises(ValueError, match="shape mismatch"):
        compare(np.zeros(2), np.zeros(3), Tolerance(0, 0))
    assert compare(np.zeros((0, 4)), np.zeros((0, 4)), Tolerance(0, 0)).passed


def test_assert_close_uses_the_dtype_of_actual():
    expected = torch.linspace(0, 1, 64)
    assert_close(expected.to(torch.bfloat16), expected)  # bf16 rounding is inside the bf16 entry
    with pytest.raises(AssertionError, match="max abs"):
        assert_close(expected.to(torch.bfloat16), expected, dtype="float32")


def test_tables_cover_every_precision_and_loosen_with_it():
    for table in (TOLERANCES, KERNEL_TOLERANCES):
        assert set(table) == {Precision(p).dtype for p in PRECISION_NAMES}
        assert table["float32"].atol < table["float16"].atol < table["bfloat16"].atol


def test_tolerance_for_precision_names_dtypes_and_overrides():
    assert tolerance_for("fp16") == tolerance_for("float16") == TOLERANCES["float16"]
    assert tolerance_for("float32", atol=0.5) == Tolerance(0.5, TOLERANCES["float32"].rtol)
    with pytest.raises(UserError, match="no tolerance for dtype 'int7'"):
        tolerance_for("int7")


def test_statistics_agree_with_polygraphy_where_both_define_them():
    """Finite values, no zero expected: Polygraphy's CompareFunc.simple reports the same
    max/mean/median absolute and relative errors; its pass rule differs (documented)."""
    from polygraphy.comparator import CompareFunc, IterationResult
    from polygraphy.logger import G_LOGGER

    rng = np.random.default_rng(5)
    expected = rng.uniform(0.5, 2.0, (4, 10)).astype(np.float32)
    actual = expected + rng.normal(0, 1e-3, expected.shape).astype(np.float32)
    ours = compare(actual, expected, Tolerance(atol=1e-3, rtol=1e-3))
    severity = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.ERROR
    try:
        result = CompareFunc.simple(atol=1e-3, rtol=1e-3)(
            IterationResult({"y": actual}, runner_name="a"), IterationResult({"y": expected}, runner_name="b"))["y"]
    finally:
        G_LOGGER.module_severity = severity
    for mine, theirs in ((ours.max_abs, result.max_absdiff), (ours.mean_abs, result.mean_absdiff),
                         (ours.median_abs, result.median_absdiff), (ours.max_rel, result.max_reldiff),
                         (ours.mean_rel, result.mean_reldiff), (ours.median_rel, result.median_reldiff)):
        assert mine == pytest.approx(theirs, rel=1e-5)
