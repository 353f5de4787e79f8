"""Helpers shared by the export / rewrite / doctor / run / ort_ops tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

#: Tolerances (atol, rtol) per dtype for ONNX Runtime (standard ops or our plugin's CPU
#: reference) against PyTorch eager.
TOLERANCES = {np.dtype(np.float32): (1e-5, 1e-5), np.dtype(np.float16): (2e-3, 2e-3)}


def assert_close(actual, expected, *, atol: float | None = None, rtol: float | None = None, what: str = "") -> None:
    """Element-wise |a - e| <= atol + rtol * |e|; reports max abs/rel error and the worst index."""
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    d_atol, d_rtol = TOLERANCES.get(e.dtype, (1e-5, 1e-5))
    atol, rtol = (d_atol if atol is None else atol), (d_rtol if rtol is None else rtol)
    err = np.abs(a.astype(np.float64) - e.astype(np.float64))
    bound = atol + rtol * np.abs(e.astype(np.float64))
    bad = err > bound
    if bad.any():
        worst = np.unravel_index(int(np.argmax(err - bound)), err.shape)
        rel = err / np.maximum(np.abs(e), 1e-12)
        pytest.fail(
            f"{what}: {int(bad.sum())}/{err.size} elements off; max abs {err.max():.3g}, "
            f"max rel {rel.max():.3g}, worst at {tuple(int(i) for i in worst)}: {a[worst]} vs {e[worst]}"
        )


def kernels_available() -> str | None:
    """None when the plugin's CPU reference can run, else why not (for skip reasons)."""
    try:
        from stn_deploy import kernels
    except ImportError as exc:
        return f"stn_deploy.kernels not importable: {exc}"
    try:
        kernels.load_library()
    except Exception as exc:  # UserError when the library is not built
        return f"plugin kernel library not available: {exc}"
    return None


def perturb_transformers(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Give every localisation regression small random weights so the warps are not identities."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "regression" in name:
                p.add_(scale * torch.randn(p.shape, generator=gen))
    return model.eval()
