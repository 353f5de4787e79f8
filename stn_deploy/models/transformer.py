"""Localisation networks and the ``SpatialTransformer`` module (paper Sect. 3).

A spatial transformer = localisation net (input -> transformation parameters) -> grid
generator (parameters -> sampling grid) -> sampler (``F.grid_sample``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn_deploy.models.generators import GridGenerator
from stn_deploy.schema import SamplerSettings


class Regression(nn.Linear):
    """The final regression layer of a localisation net, initialised to the identity transform.

    Zero weights and a bias equal to the generator's identity parameters: at initialisation
    every input is passed through unchanged, as the paper and the PyTorch tutorial do.
    """

    def __init__(self, in_features: int, generator: GridGenerator) -> None:
        super().__init__(in_features, generator.num_params)
        with torch.no_grad():
            self.weight.zero_()
            self.bias.copy_(generator.identity_params())


def _flat_features(body: nn.Module, input_shape: Sequence[int]) -> int:
    """Number of features ``body`` produces for one input of shape (C, H, W) or (C, D, H, W)."""
    with torch.no_grad():
        return int(body(torch.zeros(1, *input_shape)).flatten(1).shape[1])


class FCLocalisation(nn.Module):
    """Fully connected localisation net: flatten -> FC hidden -> ReLU (x2) -> regression.

    Works for images and volumes alike (it only flattens). Smaller than the paper's.

    Args:
        input_shape: (C, H, W) or (C, D, H, W) of the transformer's input.
        generator: the grid generator whose parameters are regressed.
        hidden: width of the hidden layers; default 32.
    """

    def __init__(self, input_shape: Sequence[int], generator: GridGenerator, hidden: int = 32) -> None:
        super().__init__()
        n_in = 1
        for d in input_shape:
            n_in *= int(d)
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.regression = Regression(hidden, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.regression(self.body(x))


class ConvLocalisation(nn.Module):
    """Convolutional localisation net for images (the ST-CNN's).

    maxpool 2 -> conv 5x5 (8) -> maxpool 2 -> ReLU -> conv 5x5 (16) -> maxpool 2 -> ReLU -> FC 32
    -> ReLU -> regression. The paper's MNIST localisation nets are wider (20 filters); ours are
    scaled down, and see the input at half resolution (as the paper's cluttered-MNIST one
    does), so that CPU training stays within seconds.

    Args:
        input_shape: (C, H, W) of the transformer's input.
        generator: the grid generator whose parameters are regressed.
        channels: filters of the two conv layers; default (8, 16).
        hidden: width of the FC layer; default 32.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        generator: GridGenerator,
        channels: tuple[int, int] = (8, 16),
        hidden: int = 32,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.body = nn.Sequential(
            nn.MaxPool2d(2),
            nn.Conv2d(int(input_shape[0]), c1, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(c1, c2, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(_flat_features(self.body, input_shape), hidden), nn.ReLU())
        self.regression = Regression(hidden, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.regression(self.fc(self.body(x)))


class SpatialTransformer(nn.Module):
    """Localisation -> grid generator -> sampler.

    ``forward(x) == self.warp(x, self.localisation(x))``. The export replaces ``warp`` to emit
    plugin ops, so all sampling goes through that one method.

    Args:
        localisation: maps the input [N, C, *spatial] to parameters [N, generator.num_params].
        generator: a ``GridGenerator``.
        out_size: output spatial size (H, W), or (D, H, W) for volumes.
        settings: ``F.grid_sample``'s mode, padding_mode and align_corners; default bilinear,
            zeros, align_corners=False.
    """

    def __init__(
        self,
        localisation: nn.Module,
        generator: GridGenerator,
        out_size: Sequence[int],
        settings: SamplerSettings | None = None,
    ) -> None:
        super().__init__()
        self.localisation = localisation
        self.generator = generator
        self.out_size = tuple(int(s) for s in out_size)
        self.settings = settings or SamplerSettings()

    def sampling_grid(self, x: Tensor, params: Tensor) -> Tensor:
        """The grid ``warp`` samples ``x`` with: [N, *out_size, 2 or 3], normalised coordinates."""
        size = (x.shape[0], x.shape[1], *self.out_size)
        return self.generator.grid(params, size, self.settings.align_corners)

    def warp(self, x: Tensor, params: Tensor) -> Tensor:
        """Sample ``x`` [N, C, *spatial] at the grid that ``params`` define -> [N, C, *out_size]."""
        grid = self.sampling_grid(x, params)
        s = self.settings
        return F.grid_sample(x, grid, mode=s.mode, padding_mode=s.padding_mode, align_corners=s.align_corners)

    def forward(self, x: Tensor) -> Tensor:
        return self.warp(x, self.localisation(x))

    def transform(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(output, grid) for ``x``: what ``forward`` returns and the grid it sampled at."""
        params = self.localisation(x)
        return self.warp(x, params), self.sampling_grid(x, params)
