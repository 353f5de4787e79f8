"""Helpers shared by the export / rewrite / doctor / run / ort_ops tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stn_deploy.tolerances import Tolerance, compare, tolerance_for

#: ONNX Runtime's standard ops against PyTorch eager (fp32): the issue's bound.
STANDARD_TOL = Tolerance(atol=1e-5, rtol=1e-5)
#: Our plugin ops (the plugin's CPU reference) against PyTorch: the shared table that the
#: plugin's and validate's checks use (its fused projective maths divides in another order).
PLUGIN_TOL = tolerance_for("float32")


def assert_close(actual, expected, *, tol: Tolerance = STANDARD_TOL, what: str = "") -> None:
    """|a - e| <= atol + rtol * |e| elementwise; on failure reports max/mean abs and rel error
    and the worst index (``stn_deploy.tolerances.compare``)."""
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    stats = compare(a, e, tol)
    if not stats.passed:
        pytest.fail(f"{what}: {stats.line()}")


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


def perturbed_checkpoint(path, model_name: str, seed: int, dataset: str = "R"):
    """Save a checkpoint of ``model_name`` whose weights are moved off the identity
    initialisation (so transformers really warp), as a trained model would be."""
    import torch

    from stn_deploy.models import ModelConfig, build_model
    from stn_deploy.train import save_checkpoint

    torch.manual_seed(seed)
    config = ModelConfig(model_name)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return save_checkpoint(path, model, config, {"dataset": dataset})
