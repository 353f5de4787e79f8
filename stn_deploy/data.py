"""Distorted handwritten digits for the paper's MNIST experiments, built offline.

MNIST is not reachable offline, so the source images are ``sklearn.datasets.load_digits``:
1797 real handwritten digits (8x8, 0..16) shipped inside scikit-learn. Each is upscaled
bilinearly to 20x20 and centred in a 28x28 canvas (MNIST's layout), values in [0, 1].

Datasets (paper Sect. 4.1; ``DATASETS``):
    R: rotation uniform in +-90 deg; 28x28.
    RTS: rotation +-45 deg, scale 0.7-1.2, translation so the digit lands anywhere in a
        42x42 canvas (+-7 px from the centre); 42x42.
    P: projective: scale 0.75-1.0, then each image corner moved by Gaussian noise
        (std 0.1 of the half-width); 28x28.
    E: elastic (Simard et al. 2003): a random displacement field smoothed by a Gaussian of
        sigma 4 px and scaled by alpha 34 px; 28x28.
    cluttered: the digit at a random position in a 60x60 canvas with 6 random 8x8
        fragments of other digits; 60x60.

The 1797 source digits are split once, by a fixed seed, into 1258 training and 539 test
digits, so train and test never share a source digit whatever the dataset seed. All
distortions are vectorised (``F.affine_grid``/``F.grid_sample`` on whole batches).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stn_deploy.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

# torch is imported inside the functions so that the CLI can build its choices from
# DATASETS without importing torch (``stn-deploy --help`` stays fast).

DATASETS: tuple[str, ...] = ("R", "RTS", "P", "E", "cluttered")
#: Image (H, W) of each dataset.
IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "R": (28, 28),
    "RTS": (42, 42),
    "P": (28, 28),
    "E": (28, 28),
    "cluttered": (60, 60),
}
SPLITS = ("train", "test")
#: Each test source digit appears this many times, each with its own fixed distortion, so the
#: test error has a resolution of 1/(539 * 4) = 0.05 %.
TEST_REPEATS = 4
#: Distortions of every training digit per epoch: 1258 digits alone give too few optimiser
#: steps per epoch (40 at batch 32) for the localisation nets to learn in a few epochs.
TRAIN_REPEATS = 4
_SPLIT_SEED = 20150605  # fixed: the train/test partition of the source digits never changes
_TEST_FRACTION = 0.3
_DIGIT = 28  # MNIST-style canvas of one digit


@dataclass(frozen=True)
class DigitSet:
    """A distorted-digit set; also a map-style dataset of (image, label) pairs (DataLoader-ready).

    Attributes:
        images: float32 [N, 1, H, W], values in [0, 1].
        labels: int64 [N], the digit class 0-9.
        sources: int64 [N], index of the source digit in ``load_digits()``.
    """

    images: Tensor
    labels: Tensor
    sources: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, Tensor]:
    """All 1797 sklearn digits as float32 [N, 1, 28, 28] in [0, 1], and their labels."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    raw = load_digits()
    small = torch.as_tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    return F.pad(big, (4, 4, 4, 4)).clamp_(0.0, 1.0), torch.as_tensor(raw.target, dtype=torch.int64)


@functools.lru_cache(maxsize=1)
def source_split() -> dict[str, Tensor]:
    """The fixed partition of source digit indices: {"train": ..., "test": ...}, disjoint."""
    import torch

    n = _digits()[1].shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_SPLIT_SEED))
    n_test = int(round(n * _TEST_FRACTION))
    return {"test": perm[:n_test].sort().values, "train": perm[n_test:].sort().values}


def make_dataset(name: str, split: str = "train", seed: int = 0) -> DigitSet:
    """Build a distorted-digit set.

    The same (name, split, seed) always gives the same tensors. Training draws fresh
    distortions each epoch by passing a different seed per epoch (``train.py`` does);
    the test set is fixed by its seed (default 0). The training split holds every
    training source digit ``TRAIN_REPEATS`` times and the test split ``TEST_REPEATS``
    times, each copy with its own distortion. Building the test split takes well under a second.

    Args:
        name: one of ``DATASETS``.
        split: "train" (1258 source digits x ``TRAIN_REPEATS``) or "test"
            (539 source digits x ``TEST_REPEATS``).
        seed: seeds the distortions; default 0.

    Returns:
        A ``DigitSet`` (images [N, 1, H, W] float32 with H, W from ``IMAGE_SIZES``).

    Raises:
        UserError: unknown dataset name or split.
    """
    import torch

    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    images, labels = _digits()
    sources = source_split()[split]
    sources = sources.repeat(TEST_REPEATS if split == "test" else TRAIN_REPEATS)
    # Disjoint generator streams for the two splits, so seed s of train and test differ.
    gen = torch.Generator().manual_seed(int(seed) * 2 + (1 if split == "test" else 0))
    batch = images[sources]
    distorted = _DISTORTIONS[name](batch, gen, sources)
    return DigitSet(distorted.contiguous(), labels[sources].clone(), sources.clone())


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> Tensor:
    import torch

    return torch.rand(n, generator=gen) * (high - low) + low


def _warp(images: Tensor, theta: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """Sample ``images`` with per-image theta [N, 2, 3] (output -> input, normalised coords)."""
    import torch.nn.functional as F

    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], *out_hw], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _similarity_theta(angle: Tensor, scale: Tensor, shift_px: Tensor, out_half: float, in_half: float) -> Tensor:
    """theta mapping an output canvas to a digit canvas for the forward transform
    p_out = scale * R(angle) p_in + shift (pixels, from the canvas centres).

    With align_corners=False a normalised coordinate u is u * half pixels from the centre, so
    u_in = (1 / in_half) * A^-1 (out_half * u_out - shift).
    """
    import torch

    cos, sin = torch.cos(angle), torch.sin(angle)
    inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2) / scale[:, None, None]
    linear = inv * (out_half / in_half)
    offset = -(inv @ shift_px.unsqueeze(-1)) / in_half
    return torch.cat([linear, offset], dim=2)


def _rotate(images: Tensor, gen: torch.Generator, sources: Tensor) -> Tensor:
    import torch

    n = images.shape[0]
    angle = _uniform(gen, n, -math.pi / 2, math.pi / 2)
    theta = _similarity_theta(angle, torch.ones(n), torch.zeros(n, 2), _DIGIT / 2, _DIGIT / 2)
    return _warp(images, theta, (_DIGIT, _DIGIT))


def _rts(images: Tensor, gen: torch.Generator, sources: Tensor) -> Tensor:
    import torch

    n = images.shape[0]
    size = IMAGE_SIZES["RTS"][0]
    angle = _uniform(gen, n, -math.pi / 4, math.pi / 4)
    scale = _uniform(gen, n, 0.7, 1.2)
    max_shift = (size - _DIGIT) / 2
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * max_shift
    theta = _similarity_theta(angle, scale, shift, size / 2, _DIGIT / 2)
    return _warp(images, theta, (size, size))


def _homography(src: Tensor, dst: Tensor) -> Tensor:
    """Batched DLT: H [N, 3, 3] (h33 = 1) with H src_k ~ dst_k for 4 point pairs [N, 4, 2]."""
    import torch

    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], dim=1)  # [N, 8, 8]
    b = torch.cat([u, v], dim=1)  # [N, 8]
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).reshape(-1, 3, 3)


def _projective(images: Tensor, gen: torch.Generator, sources: Tensor) -> Tensor:
    import torch
    import torch.nn.functional as F

    n = images.shape[0]
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    scale = _uniform(gen, n, 0.75, 1.0)
    moved = corners * scale[:, None, None] + 0.1 * torch.randn(n, 4, 2, generator=gen)
    # The grid maps output -> input, so solve for the homography from the moved corners back.
    h = _homography(moved, corners.expand(n, 4, 2))
    base = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, 1, _DIGIT, _DIGIT], align_corners=False)
    homog = torch.cat([base, torch.ones_like(base[..., :1])], dim=-1) @ h.transpose(1, 2).unsqueeze(1)
    grid = homog[..., :2] / homog[..., 2:]
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gaussian_kernel(sigma: float) -> Tensor:
    import torch

    radius = int(math.ceil(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _elastic(images: Tensor, gen: torch.Generator, sources: Tensor, alpha: float = 34.0, sigma: float = 4.0) -> Tensor:
    import torch
    import torch.nn.functional as F

    n = images.shape[0]
    field = torch.rand(n * 2, 1, _DIGIT, _DIGIT, generator=gen) * 2 - 1
    k = _gaussian_kernel(sigma)
    r = k.numel() // 2
    # Separable Gaussian smoothing of both displacement channels at once.
    field = F.conv2d(F.pad(field, (r, r, 0, 0), mode="reflect"), k.reshape(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, r, r), mode="reflect"), k.reshape(1, 1, -1, 1))
    disp_px = alpha * field.reshape(n, 2, _DIGIT, _DIGIT).permute(0, 2, 3, 1)
    base = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, 1, _DIGIT, _DIGIT], align_corners=False)
    grid = base + disp_px * (2.0 / _DIGIT)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _paste(canvas: Tensor, patches: Tensor, owner: Tensor, at: Tensor) -> None:
    """Paste square ``patches`` [M, k, k] into ``canvas`` [N, S, S] in place (maximum where they
    overlap); patch m goes to image ``owner[m]`` with its top-left pixel at ``at[m]`` = (x, y)."""
    import torch

    n, size, _ = canvas.shape
    k = patches.shape[-1]
    r = torch.arange(k)
    rows = at[:, 1, None] + r  # [M, k]
    cols = at[:, 0, None] + r
    flat = (owner[:, None, None] * size + rows[:, :, None]) * size + cols[:, None, :]
    canvas.view(-1).scatter_reduce_(0, flat.reshape(-1), patches.reshape(-1), reduce="amax")


def _cluttered(images: Tensor, gen: torch.Generator, sources: Tensor, fragments: int = 6, frag: int = 8) -> Tensor:
    import torch

    n = images.shape[0]
    size = IMAGE_SIZES["cluttered"][0]
    canvas = torch.zeros(n, size, size)
    # The digit at a random pixel position (whole digit inside the canvas).
    at = torch.randint(0, size - _DIGIT + 1, (n, 2), generator=gen)
    _paste(canvas, images[:, 0], torch.arange(n), at)
    # Clutter: 8x8 windows cut from the ink area of random digits of the same split.
    all_images = _digits()[0][:, 0]
    pool = sources.unique()
    m = n * fragments
    donors = pool[torch.randint(0, pool.numel(), (m,), generator=gen)]
    crop = torch.randint(4, _DIGIT - 4 - frag + 1, (m, 2), generator=gen)
    r = torch.arange(frag)
    patches = all_images[donors[:, None, None], crop[:, 1, None, None] + r[:, None], crop[:, 0, None, None] + r]
    at = torch.randint(0, size - frag + 1, (m, 2), generator=gen)
    _paste(canvas, patches, torch.arange(m) // fragments, at)
    return canvas.unsqueeze(1)


_DISTORTIONS = {"R": _rotate, "RTS": _rts, "P": _projective, "E": _elastic, "cluttered": _cluttered}
