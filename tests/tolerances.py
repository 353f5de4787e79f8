"""The one tolerance helper of the numerical tests: a per-dtype table and a comparison that reports
the max abs/rel error and the worst index.

Usage:
    report = assert_close(actual, expected, "float16", what="bilinear zeros")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """An element passes when ``|actual - expected| <= atol + rtol * |expected|``."""

    atol: float
    rtol: float


#: Per-dtype tolerances of an fp32-accumulating kernel against an fp32 reference rounded to the
#: dtype: fp32 allows summation-order differences; fp16/bf16 allow one rounding step (1 ulp) of
#: values up to ~8 (float16 ulp 2^-8 at 4..8, bfloat16 ulp 2^-5 at 4..8).
TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(atol=2e-5, rtol=2e-5),
    "float16": Tolerance(atol=1e-3, rtol=2e-3),
    "bfloat16": Tolerance(atol=8e-3, rtol=8e-3),
}


@dataclass(frozen=True)
class ErrorReport:
    """Error statistics of one comparison."""

    dtype: str
    total: int
    mismatched: int
    max_abs: float
    max_rel: float
    worst_index: tuple[int, ...] | None
    worst_actual: float
    worst_expected: float
    nonfinite_mismatch: int

    def __str__(self) -> str:
        tol = TOLERANCES[self.dtype]
        where = (
            f" worst at {self.worst_index}: got {self.worst_actual!r}, expected {self.worst_expected!r};"
            if self.worst_index is not None
            else ""
        )
        return (
            f"{self.mismatched}/{self.total} elements outside atol={tol.atol:g} rtol={tol.rtol:g} ({self.dtype});"
            f"{where} max abs err {self.max_abs:.3g}, max rel err {self.max_rel:.3g};"
            f" NaN/inf pattern mismatches {self.nonfinite_mismatch}"
        )


def _to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a.astype(np.float64)
    return a.detach().float().cpu().double().numpy()  # torch tensor (bfloat16 included)


def _dtype_name(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return a.dtype.name
    return str(a.dtype).removeprefix("torch.")


def compare(actual: Any, expected: Any, dtype: str | None = None) -> ErrorReport:
    """Compare two arrays/tensors of the same shape under the tolerance of ``dtype``.

    ``dtype`` defaults to the dtype of ``actual``. NaN must be NaN at the same places and infinities
    must match exactly; they are excluded from the abs/rel statistics.
    """
    dtype = dtype or _dtype_name(actual)
    tol = TOLERANCES[dtype]
    a = _to_numpy(actual)
    e = _to_numpy(expected)
    if a.shape != e.shape:
        raise AssertionError(f"shape mismatch: got {a.shape}, expected {e.shape}")
    finite = np.isfinite(a) & np.isfinite(e)
    same_nonfinite = (np.isnan(a) & np.isnan(e)) | (np.isinf(a) & np.isinf(e) & (a == e))
    nonfinite_bad = ~finite & ~same_nonfinite
    with np.errstate(invalid="ignore", divide="ignore"):
        abs_err = np.where(finite, np.abs(a - e), 0.0)
        rel_err = np.where(finite & (e != 0), abs_err / np.abs(e), 0.0)
        excess = np.where(finite, abs_err - (tol.atol + tol.rtol * np.abs(e)), 0.0)
    bad = (excess > 0) | nonfinite_bad
    worst: tuple[int, ...] | None = None
    if a.size:
        if nonfinite_bad.any():
            flat = int(np.argmax(nonfinite_bad))
        else:
            flat = int(np.argmax(excess)) if bad.any() else int(np.argmax(abs_err))
        worst = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    return ErrorReport(
        dtype=dtype,
        total=int(a.size),
        mismatched=int(bad.sum()),
        max_abs=float(abs_err.max()) if a.size else 0.0,
        max_rel=float(rel_err.max()) if a.size else 0.0,
        worst_index=worst,
        worst_actual=float(a[worst]) if worst is not None else float("nan"),
        worst_expected=float(e[worst]) if worst is not None else float("nan"),
        nonfinite_mismatch=int(nonfinite_bad.sum()),
    )


def assert_close(actual: Any, expected: Any, dtype: str | None = None, what: str = "") -> ErrorReport:
    """Raise AssertionError with the error report unless every element is within tolerance."""
    report = compare(actual, expected, dtype)
    if report.mismatched:
        raise AssertionError(f"{what + ': ' if what else ''}{report}")
    return report
