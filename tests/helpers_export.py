"""Helpers shared by the export / rewrite / doctor / run / ort_ops tests."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

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

    from stn_deploy.jobs.train import save_checkpoint
    from stn_deploy.models import ModelConfig, build_model

    torch.manual_seed(seed)
    config = ModelConfig(model_name)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return save_checkpoint(path, model, config, {"dataset": dataset})


class UserSTN(torch.nn.Module):
    """An STN as a user writes it (the PyTorch tutorial's pattern), not built by our zoo."""

    def __init__(self, projective: bool = False):
        super().__init__()
        self.projective = projective
        self.loc = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5), torch.nn.MaxPool2d(2), torch.nn.ReLU(), torch.nn.Flatten())
        self.fc = torch.nn.Linear(4 * 10 * 10, 9 if projective else 6)
        torch.nn.init.normal_(self.fc.weight, std=0.01)
        with torch.no_grad():
            self.fc.bias.copy_(torch.eye(3).flatten()[: self.fc.out_features] + 0.05 * torch.randn(self.fc.out_features))
            if projective:
                self.fc.bias[8] = 1.0

    def forward(self, x):
        t = self.fc(self.loc(x))
        if self.projective:
            theta = t.view(-1, 3, 3)
            size = [x.shape[0], x.shape[1], 20, 20]
            xy = F.affine_grid(theta[:, :2, :], size, align_corners=False)
            w = F.affine_grid(torch.cat([theta[:, 2:3, :], theta[:, 2:3, :]], dim=1), size, align_corners=False)
            grid = xy / w[..., :1]
        else:
            grid = F.affine_grid(t.view(-1, 2, 3), x.size(), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)


def user_export(model: torch.nn.Module) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 1, 24, 24),), buf, dynamo=False, opset_version=20,
                          input_names=["img"], output_names=["warped"],
                          dynamic_axes={"img": {0: "n"}, "warped": {0: "n"}})
    return onnx.load_from_string(buf.getvalue())


def dynamo_export(path, seed: int = 1) -> tuple[UserSTN, object]:
    """(model, path) of ``torch.onnx.export``'s default (dynamo) export of a ``UserSTN``,
    which decomposes ``F.affine_grid`` into Mul+ReduceSum."""
    torch.manual_seed(seed)
    model = UserSTN().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 1, 24, 24),), str(path), input_names=["img"], verbose=False)
    return model, path

