"""Grid generators: transformation parameters -> sampling grid.

Every grid is in PyTorch's normalised coordinates (``F.grid_sample``): x, y (and z) in
[-1, 1] across the *input*, the last grid dimension ordered (x, y[, z]). A generator maps
each point of the regular *output* grid to the input location it samples (the paper's
T_theta(G), eq. 1).

Matrix-type generators (affine, attention, projective, 3-D affine) build their grids from
``F.affine_grid`` only, so the legacy ONNX exporter emits ``AffineGrid`` nodes with dynamic
output H/W rather than a decomposed Mul/ReduceSum grid (DESIGN.md, "Export"). The
thin-plate spline has no matrix; its grid is a few matmuls against a precomputed buffer.

Common interface:
    ``num_params``: length of the parameter vector the localisation net regresses.
    ``identity_params()``: the parameters of the identity transform (initial bias of the
        localisation net's regression layer).
    ``theta(params)``: the transform matrix, or ``None`` (TPS).
    ``grid(params, size, align_corners)``: the sampling grid; ``size`` is the output size
        as for ``F.affine_grid``: (N, C, H, W), or (N, C, D, H, W) for 3-D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GridGenerator(nn.Module):
    """Base class; subclasses set ``kind`` and ``num_params`` and implement the methods."""

    kind: str = ""
    num_params: int = 0

    def identity_params(self) -> Tensor:
        raise NotImplementedError

    def theta(self, params: Tensor) -> Tensor | None:
        raise NotImplementedError

    def grid(self, params: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
        raise NotImplementedError

    def forward(self, params: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
        return self.grid(params, size, align_corners)


class AffineGenerator(GridGenerator):
    """2-D affine transform: 6 parameters, theta [N, 2, 3] (row-major), as ``F.affine_grid``."""

    kind = "affine"
    num_params = 6

    def identity_params(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def theta(self, params: Tensor) -> Tensor:
        return params.reshape(-1, 2, 3)

    def grid(self, params: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
        return F.affine_grid(self.theta(params), list(size), align_corners=align_corners)


class AttentionGenerator(GridGenerator):
    """Attention: isotropic scale + translation, 3 parameters (s, tx, ty).

    theta = [[s, 0, tx], [0, s, ty]] ([N, 2, 3]); the paper's constrained transform for
    attention/cropping (Sect. 3.1).
    """

    kind = "attention"
    num_params = 3

    def identity_params(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0])

    def theta(self, params: Tensor) -> Tensor:
        s, tx, ty = params[:, 0:1], params[:, 1:2], params[:, 2:3]
        zero = torch.zeros_like(s)
        return torch.cat([s, zero, tx, zero, s, ty], dim=1).reshape(-1, 2, 3)

    def grid(self, params: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
        return F.affine_grid(self.theta(params), list(size), align_corners=align_corners)


class ProjectiveGenerator(GridGenerator):
    """Projective transform (homography): 8 parameters, theta [N, 3, 3] with h33 = 1.

    The grid is (x', y') = (h1 . p, h2 . p) / (h3 . p) with p = (x, y, 1). It is built from two
    ``F.affine_grid`` calls, one with rows (h1; h2) and one with rows (h3; h3), followed by
    the homogeneous divide, so it exports as two ``AffineGrid`` nodes and a ``Div``. No guard
    against h3 . p crossing zero (a point at the horizon): such points land at +-inf and
    sample padding, which is also what our plugin does.
    """

    kind = "projective"
    num_params = 8

    def identity_params(self) -> Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])

    def theta(self, params: Tensor) -> Tensor:
        one = torch.ones_like(params[:, :1])
        return torch.cat([params, one], dim=1).reshape(-1, 3, 3)

    def grid(self, params: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
        return projective_grid(self.theta(params), size, align_corners)


def projective_grid(theta: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
    """Sampling grid of homographies ``theta`` [N, 3, 3]: two ``F.affine_grid`` calls (rows
    (h1; h2) and (h3; h3)) and the homogeneous divide, so it exports as ``AffineGrid`` nodes."""
    xy = F.affine_grid(theta[:, :2, :], list(size), align_corners=align_corners)
    w_rows = torch.cat([theta[:, 2:3, :], theta[:, 2:3, :]], dim=1)
    w = F.affine_grid(w_rows, list(size), align_corners=align_corners)
    return xy / w[..., :1]


class Affine3DGenerator(GridGenerator):
    """3-D affine transform for volumes: 12 parameters, theta [N, 3, 4]; grid [N, D, H, W, 3]."""

    kind = "affine3d"
    num_params = 12

    def identity_params(self) -> Tensor:
        return torch.eye(3, 4).reshape(-1)

    def theta(self, params: Tensor) -> Tensor:
        return params.reshape(-1, 3, 4)

    def grid(self, params: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
        return F.affine_grid(self.theta(params), list(size), align_corners=align_corners)


def _tps_kernel(r2: Tensor) -> Tensor:
    """U(r) = r^2 log r^2, with U(0) = 0 (the clamp makes 0 * log(tiny) = 0, not NaN)."""
    return r2 * torch.log(torch.clamp(r2, min=1e-12))


class TPSGenerator(GridGenerator):
    """Thin-plate spline with a regular grid of control points (paper Sect. 3.4 / appendix).

    The localisation net regresses the input-space positions (x, y) of K = gh * gw control
    points whose output-space positions are fixed on a regular grid over [-1, 1]^2 (rows of
    the grid y-major, x varying fastest); 2K parameters ordered (x1, y1, x2, y2, ...). The
    spline through them is f(p) = a0 + a1 x + a2 y + sum_k w_k U(|p - c_k|). The inverse of
    the (K+3)x(K+3) system matrix depends only on the control grid, so it is precomputed as
    the buffer ``l_inv`` and export needs no matrix inverse.

    Args:
        grid_size: control points (rows, columns); default (4, 4) as in the paper.
    """

    control_points: Tensor  # buffers (register_buffer), typed for the checker
    l_inv: Tensor

    kind = "tps"

    def __init__(self, grid_size: tuple[int, int] = (4, 4)) -> None:
        super().__init__()
        gh, gw = int(grid_size[0]), int(grid_size[1])
        if gh < 2 or gw < 2:
            raise ValueError(f"TPS control grid must be at least 2x2, got {gh}x{gw}")
        self.grid_size = (gh, gw)
        self.num_params = 2 * gh * gw
        ys, xs = torch.meshgrid(
            torch.linspace(-1.0, 1.0, gh, dtype=torch.float64),
            torch.linspace(-1.0, 1.0, gw, dtype=torch.float64),
            indexing="ij",
        )
        ctrl = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # [K, 2]
        k = ctrl.shape[0]
        kernel = _tps_kernel(torch.cdist(ctrl, ctrl).pow(2))
        p = torch.cat([torch.ones(k, 1, dtype=torch.float64), ctrl], dim=1)  # [K, 3]
        system = torch.zeros(k + 3, k + 3, dtype=torch.float64)
        system[:k, :k], system[:k, k:], system[k:, :k] = kernel, p, p.T
        # Only the first K columns are ever used: the right-hand side is [targets; 0].
        l_inv = torch.linalg.inv(system)[:, :k]
        self.register_buffer("control_points", ctrl.float())
        self.register_buffer("l_inv", l_inv.float())

    def identity_params(self) -> Tensor:
        return self.control_points.reshape(-1).clone()

    def theta(self, params: Tensor) -> None:
        return None

    def grid(self, params: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
        n, h, w = params.shape[0], int(size[-2]), int(size[-1])
        ctrl = self.control_points.to(params.dtype)
        # The spline of the control points' displacements, added to the identity grid: the
        # same map as the spline of the targets (a TPS reproduces the identity exactly), but
        # exact at rest instead of off by float32 round-off of the solve.
        offsets = (params.reshape(n, -1, 2) - ctrl).to(params.dtype)  # [N, K, 2]
        coeffs = torch.matmul(self.l_inv.to(params.dtype), offsets)  # [N, K+3, 2]
        # Output-space points with the same convention as the affine generators.
        eye = torch.eye(2, 3, dtype=params.dtype, device=params.device).unsqueeze(0)
        base = F.affine_grid(eye, [1, 1, h, w], align_corners=align_corners)  # [1, H, W, 2]
        points = base.reshape(-1, 2)  # [HW, 2]
        diff = points.unsqueeze(1) - ctrl.unsqueeze(0)  # [HW, K, 2]
        u = _tps_kernel((diff * diff).sum(-1))  # [HW, K]
        basis = torch.cat([u, torch.ones_like(points[:, :1]), points], dim=1)  # [HW, K+3]
        return base + torch.matmul(basis, coeffs).reshape(n, h, w, 2)


GENERATOR_KINDS = ("affine", "projective", "tps", "attention", "affine3d")


def make_generator(kind: str, tps_grid: tuple[int, int] = (4, 4)) -> GridGenerator:
    """Build a generator by name (one of ``GENERATOR_KINDS``)."""
    if kind == "affine":
        return AffineGenerator()
    if kind == "projective":
        return ProjectiveGenerator()
    if kind == "tps":
        return TPSGenerator(tps_grid)
    if kind == "attention":
        return AttentionGenerator()
    if kind == "affine3d":
        return Affine3DGenerator()
    raise ValueError(f"unknown grid generator {kind!r}; choose from {', '.join(GENERATOR_KINDS)}")
