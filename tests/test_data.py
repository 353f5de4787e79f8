"""Distorted digits (stn_deploy/data.py): determinism, splits, labels, the distortions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stn_deploy import data
from stn_deploy.errors import UserError


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return load_digits()


@pytest.mark.parametrize("name", data.DATASETS)
def test_dataset_is_deterministic_by_seed_and_labelled_from_its_sources(name, digits):
    a = data.make_dataset(name, "test", seed=3)
    b = data.make_dataset(name, "test", seed=3)
    c = data.make_dataset(name, "test", seed=4)
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=0)
    assert not torch.equal(a.images, c.images)
    assert torch.equal(a.labels, c.labels)  # the test set's digits do not depend on the seed
    assert a.images.shape == (len(a), 1, *data.IMAGE_SIZES[name]) and a.images.dtype == torch.float32
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
    assert torch.equal(a.labels, torch.as_tensor(digits.target)[a.sources])
    image, label = a[5]
    assert torch.equal(image, a.images[5]) and int(label) == int(a.labels[5])


def test_train_and_test_come_from_disjoint_source_digits():
    split = data.source_split()
    train, test = set(split["train"].tolist()), set(split["test"].tolist())
    assert not train & test and len(train | test) == 1797
    for name in ("R", "cluttered"):
        tr = data.make_dataset(name, "train", seed=0)
        te = data.make_dataset(name, "test", seed=0)
        assert set(tr.sources.tolist()) == train and len(tr) == data.TRAIN_REPEATS * len(train)
        assert set(te.sources.tolist()) == test and len(te) == data.TEST_REPEATS * len(test)


def test_training_distortions_change_with_the_seed_and_differ_from_the_test_set():
    a = data.make_dataset("RTS", "train", seed=1)
    b = data.make_dataset("RTS", "train", seed=2)
    assert torch.equal(a.sources, b.sources) and not torch.equal(a.images, b.images)


def test_unknown_dataset_or_split_is_a_user_error():
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        data.make_dataset("mnist")
    with pytest.raises(UserError, match="unknown split"):
        data.make_dataset("R", "val")


def _sources(ds):
    return data._digits()[0][ds.sources]


def test_rotation_is_a_rotation_of_the_source_within_90_degrees():
    ds = data.make_dataset("R", "test", seed=0)
    n, x, src = 20, ds.images[:20], _sources(ds)[:20]
    angles = torch.linspace(-math.pi / 2, math.pi / 2, 91)  # 2 degree steps over the range
    cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
    theta = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
    a = len(angles)
    grid = F.affine_grid(theta.repeat(n, 1, 1), [n * a, 1, 28, 28], align_corners=False)
    rotated = F.grid_sample(src.repeat_interleave(a, 0), grid, align_corners=False).reshape(n, a, -1)
    best = (rotated - x.reshape(n, 1, -1)).pow(2).mean(-1).min(1).values
    # Within 1 degree of the true angle the residual is tiny next to the image's energy
    # (a wrong source digit leaves > 5 %).
    assert bool((best < 0.02 * x.pow(2).mean((1, 2, 3))).all())


def test_rts_keeps_the_ink_mass_within_the_scale_range():
    ds = data.make_dataset("RTS", "test", seed=0)
    ratio = ds.images.sum((1, 2, 3)) / _sources(ds).sum((1, 2, 3))
    # Area scales with scale^2 in [0.49, 1.44]; bilinear resampling and rare clipping add a little.
    assert float(ratio.min()) > 0.4 and float(ratio.max()) < 1.55
    assert float(ratio.max()) - float(ratio.min()) > 0.5  # the scale does vary


@pytest.mark.parametrize("name", ["P", "E"])
def test_projective_and_elastic_images_resemble_their_own_source(name):
    ds = data.make_dataset(name, "test", seed=0)
    x, src = ds.images[:300].flatten(1), _sources(ds)[:300].flatten(1)

    def corr(a, b):
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))

    own, other = corr(x, src), corr(x, src.roll(1, 0))
    assert float(own.mean()) > float(other.mean()) + 0.1
    assert float((own > other).float().mean()) > 0.85
    assert not torch.allclose(x, src, atol=0.05)  # and they are distorted


def test_cluttered_contains_its_source_digit_pixel_exactly():
    ds = data.make_dataset("cluttered", "test", seed=0)
    x, src = ds.images[:30], _sources(ds)[:30]
    windows = F.unfold(x, kernel_size=28)  # [N, 784, 33*33]: every placement of the digit
    digit = src.flatten(1).unsqueeze(-1)
    # Clutter is max-blended, so at the digit's placement the canvas is >= the digit everywhere.
    covered = (windows >= digit - 1e-6).all(1)
    assert bool(covered.any(1).all())
    ink = (x > 0.3).sum((1, 2, 3)).float()
    assert float((ink - (src > 0.3).sum((1, 2, 3)).float()).min()) > 0  # fragments add ink
