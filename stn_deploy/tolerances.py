"""One comparison helper (max/mean/median abs and rel error, worst index) with per-dtype
tolerance tables, shared by ``validate``, the export tests and the kernel tests.

Two tables, one per level: ``KERNEL_TOLERANCES`` for one sampler op against PyTorch (an
fp32-accumulating kernel vs an fp32 reference rounded to the dtype), ``TOLERANCES`` for whole
models (logits after many layers, engines with other kernel orders).

A value passes when ``|actual - expected| <= atol + rtol * |expected|`` (numpy's allclose);
NaN matches NaN and nothing else, inf matches an equal inf.

Why not Polygraphy's ``CompareFunc.simple`` as the engine (``validate`` does use Polygraphy's
``Comparator`` to run the models): its max/mean/median absolute errors are the same numbers
(``tests/test_tolerances.py`` checks that), but an element passes there when it is within
``atol`` *or* within ``rtol`` (here: within ``atol + rtol * |expected|``, what the tables were
calibrated with), a NaN never matches a NaN, its relative error divides by 2.2e-16 where the
expected value is 0, and it has no worst index, no per-dtype tables and no bfloat16 tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from stn_deploy.errors import UserError
from stn_deploy.schema import PRECISION_NAMES, Precision


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


#: Per compute precision of the candidate, for whole models (``validate``; ``--atol`` /
#: ``--rtol`` override them, per output or for all). fp32: real models (an optical-flow net,
#: affine/perspective/remap warps, 3-D registration, deformable attention) agree with PyTorch
#: to <= 3e-5 in ONNX Runtime and through our plugin, and the zoo's logits to ~1e-5, so 1e-4
#: leaves 3x room for another kernel order yet fails a wrong pixel, mode or padding (errors
#: of 1e-2 and up). An engine built with TF32 reductions needs looser ones (``--atol 1e-3``).
#: fp16 has a 10-bit mantissa, bf16 a 7-bit one.
TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4),
    "float16": Tolerance(atol=3e-2, rtol=3e-2),
    "bfloat16": Tolerance(atol=1.5e-1, rtol=1e-1),
}
#: One sampler op vs PyTorch: fp32 allows summation-order differences; fp16/bf16 one rounding
#: step (1 ulp) of values up to ~8 (float16 ulp 2^-8 at 4..8, bfloat16 ulp 2^-5 at 4..8).
KERNEL_TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(atol=2e-5, rtol=2e-5),
    "float16": Tolerance(atol=1e-3, rtol=2e-3),
    "bfloat16": Tolerance(atol=8e-3, rtol=8e-3),
}


def tolerance_for(dtype: str, atol: float | None = None, rtol: float | None = None) -> Tolerance:
    """The table entry for ``dtype`` ("float32", "fp16", ...) with optional overrides."""
    key = Precision(dtype).dtype if dtype in PRECISION_NAMES else dtype
    if key not in TOLERANCES:
        raise UserError(f"no tolerance for dtype {dtype!r}; known: {', '.join(TOLERANCES)}")
    base = TOLERANCES[key]
    return Tolerance(base.atol if atol is None else atol, base.rtol if rtol is None else rtol)


@dataclass(frozen=True)
class ErrorStats:
    """How far ``actual`` is from ``expected``; ``worst_index`` is where the tolerance is
    exceeded most (or the largest absolute error when nothing exceeds it)."""

    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    median_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    worst_index: tuple[int, ...]
    worst_actual: float
    worst_expected: float
    mismatches: int
    atol: float
    rtol: float
    #: NaN/inf values in actual and in expected.
    nonfinite_actual: int = 0
    nonfinite_expected: int = 0

    @property
    def passed(self) -> bool:
        return self.mismatches == 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        for key in ("atol", "rtol"):  # an unbounded tolerance (INT8 candidates): JSON has no infinity
            if not np.isfinite(d[key]):
                d[key] = None
        return d

    def line(self) -> str:
        return (f"max abs {self.max_abs:.3g} (mean {self.mean_abs:.3g}, median {self.median_abs:.3g}), "
                f"max rel {self.max_rel:.3g} (mean {self.mean_rel:.3g}, median {self.median_rel:.3g}), "
                f"worst at {list(self.worst_index)}: {self.worst_actual:.6g} vs {self.worst_expected:.6g}, "
                f"{self.mismatches} outside atol {self.atol:g} + rtol {self.rtol:g}"
                + (f", {self.nonfinite_actual} non-finite (expected {self.nonfinite_expected})"
                   if self.nonfinite_actual or self.nonfinite_expected else ""))


def _as_float64(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor (bfloat16 has no numpy dtype)
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _dtype_name(values) -> str:
    return str(values.dtype).removeprefix("torch.")


def compare(actual, expected, tol: Tolerance, *, nan_equal: bool = True) -> ErrorStats:
    """Elementwise comparison of two arrays or tensors of the same shape (in float64).

    ``nan_equal``: NaN matches NaN (kernel parity: PyTorch's own NaN semantics); validation
    of a model passes False, since a NaN output validates nothing, whatever the reference.
    """
    a = _as_float64(actual)
    e = _as_float64(expected)
    if a.shape != e.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {e.shape}")
    both_nan = np.isnan(a) & np.isnan(e) if nan_equal else np.zeros(a.shape, dtype=bool)
    same_inf = np.isinf(a) & (a == e)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(both_nan | same_inf, 0.0, np.abs(a - e))
    diff = np.where(np.isnan(diff), np.inf, diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.maximum(np.abs(e), np.finfo(np.float64).tiny))
    allowed = tol.atol + tol.rtol * np.abs(np.where(np.isfinite(e), e, 0.0))
    excess = diff - allowed
    bad = excess > 0
    if a.size == 0:
        return ErrorStats(a.shape, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, (), 0.0, 0.0, 0, tol.atol, tol.rtol)
    flat = int(np.argmax(excess)) if bad.any() else int(np.argmax(diff))
    idx = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    return ErrorStats(
        shape=tuple(a.shape),
        max_abs=float(diff.max()), mean_abs=float(diff.mean()), median_abs=float(np.median(diff)),
        max_rel=float(rel.max()), mean_rel=float(rel.mean()), median_rel=float(np.median(rel)),
        worst_index=idx, worst_actual=float(a[idx]), worst_expected=float(e[idx]),
        mismatches=int(bad.sum()), atol=tol.atol, rtol=tol.rtol,
        nonfinite_actual=int((~np.isfinite(a)).sum()), nonfinite_expected=int((~np.isfinite(e)).sum()),
    )


def assert_close(actual, expected, dtype: str | None = None, what: str = "",
                 table: dict[str, Tolerance] = KERNEL_TOLERANCES) -> ErrorStats:
    """Raise AssertionError with the error statistics unless every element is within the
    tolerance of ``dtype`` (default: the dtype of ``actual``) in ``table``."""
    stats = compare(actual, expected, table[dtype or _dtype_name(actual)])
    if not stats.passed:
        raise AssertionError(f"{what + ': ' if what else ''}{stats.line()}")
    return stats
