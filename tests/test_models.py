"""Grid generators, the SpatialTransformer module and the model zoo (stn_deploy/models)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from stn_deploy.errors import UserError
from stn_deploy.models import (
    MODEL_NAMES,
    Affine3DGenerator,
    AffineGenerator,
    AttentionGenerator,
    ConvLocalisation,
    FCLocalisation,
    ModelConfig,
    ProjectiveGenerator,
    SpatialTransformer,
    TPSGenerator,
    build_model,
    count_parameters,
    make_generator,
    model_table,
    spatial_transformers,
)
from stn_deploy.schema import INTERPOLATION_NAMES, PADDING_NAMES, SamplerSettings

SIZE = (3, 2, 5, 7)  # odd, non-square
ALIGN = [False, True]


def _identity_grid(size, align_corners, dtype=torch.float32):
    eye = torch.eye(2, 3, dtype=dtype).expand(size[0], 2, 3)
    return F.affine_grid(eye, list(size), align_corners=align_corners)


@pytest.mark.parametrize("align_corners", ALIGN, ids=lambda a: f"ac{int(a)}")
def test_affine_equals_affine_grid(align_corners):
    params = torch.randn(SIZE[0], 6)
    gen = AffineGenerator()
    theta = gen.theta(params)
    assert theta.shape == (SIZE[0], 2, 3)
    expected = F.affine_grid(params.reshape(-1, 2, 3), list(SIZE), align_corners=align_corners)
    torch.testing.assert_close(gen.grid(params, SIZE, align_corners), expected, rtol=0, atol=0)


@pytest.mark.parametrize("align_corners", ALIGN, ids=lambda a: f"ac{int(a)}")
def test_attention_equals_matching_affine(align_corners):
    params = torch.randn(SIZE[0], 3)
    s, tx, ty = params.unbind(1)
    zero = torch.zeros_like(s)
    theta = torch.stack([s, zero, tx, zero, s, ty], 1).reshape(-1, 2, 3)
    gen = AttentionGenerator()
    torch.testing.assert_close(gen.theta(params), theta, rtol=0, atol=0)
    expected = F.affine_grid(theta, list(SIZE), align_corners=align_corners)
    torch.testing.assert_close(gen.grid(params, SIZE, align_corners), expected, rtol=0, atol=0)


@pytest.mark.parametrize("align_corners", ALIGN, ids=lambda a: f"ac{int(a)}")
def test_projective_with_zero_perspective_equals_affine(align_corners):
    affine = torch.randn(SIZE[0], 6)
    params = torch.cat([affine, torch.zeros(SIZE[0], 2)], 1)
    gen = ProjectiveGenerator()
    theta = gen.theta(params)
    assert theta.shape == (SIZE[0], 3, 3)
    torch.testing.assert_close(theta[:, 2], torch.tensor([0.0, 0.0, 1.0]).expand(SIZE[0], 3))
    expected = F.affine_grid(affine.reshape(-1, 2, 3), list(SIZE), align_corners=align_corners)
    torch.testing.assert_close(gen.grid(params, SIZE, align_corners), expected)


@pytest.mark.parametrize("align_corners", ALIGN, ids=lambda a: f"ac{int(a)}")
def test_projective_matches_explicit_homography(align_corners):
    torch.manual_seed(1)
    params = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]) + 0.2 * torch.randn(SIZE[0], 8)
    h = ProjectiveGenerator().theta(params)
    base = _identity_grid(SIZE, align_corners)
    p = torch.cat([base, torch.ones_like(base[..., :1])], -1)  # [N, H, W, 3]
    q = torch.einsum("nij,nhwj->nhwi", h, p)
    expected = q[..., :2] / q[..., 2:]
    torch.testing.assert_close(ProjectiveGenerator().grid(params, SIZE, align_corners), expected)


@pytest.mark.parametrize("grid_size", [(4, 4), (3, 5)], ids=["4x4", "3x5"])
@pytest.mark.parametrize("align_corners", ALIGN, ids=lambda a: f"ac{int(a)}")
def test_tps_at_rest_is_identity_grid(grid_size, align_corners):
    gen = TPSGenerator(grid_size)
    assert gen.num_params == 2 * grid_size[0] * grid_size[1]
    assert gen.theta(gen.identity_params()[None]) is None
    params = gen.identity_params().expand(SIZE[0], -1)
    torch.testing.assert_close(gen.grid(params, SIZE, align_corners), _identity_grid(SIZE, align_corners), atol=1e-5, rtol=0)


def test_tps_interpolates_its_control_points():
    # 7x7 output with align_corners=True puts pixels at -1, -2/3, ..., 1: every other pixel
    # is a control point of the 4x4 grid, where the spline must hit its target exactly.
    gen = TPSGenerator((4, 4))
    targets = gen.identity_params()[None] + 0.15 * torch.randn(2, 32)
    grid = gen.grid(targets, (2, 1, 7, 7), align_corners=True)
    at_controls = grid[:, ::2, ::2].reshape(2, -1)
    torch.testing.assert_close(at_controls, targets, atol=1e-5, rtol=0)


@pytest.mark.parametrize("align_corners", ALIGN, ids=lambda a: f"ac{int(a)}")
def test_tps_reproduces_an_affine_map(align_corners):
    # A thin-plate spline through affinely moved control points is that affine map.
    gen = TPSGenerator((4, 4))
    theta = torch.tensor([[[0.9, -0.3, 0.1], [0.2, 1.1, -0.2]]])
    ctrl = gen.control_points
    moved = ctrl @ theta[0, :, :2].T + theta[0, :, 2]
    grid = gen.grid(moved.reshape(1, -1), (1, 1, 9, 6), align_corners)
    torch.testing.assert_close(grid, F.affine_grid(theta, [1, 1, 9, 6], align_corners=align_corners), atol=1e-5, rtol=0)


def test_tps_inverse_is_a_buffer_in_the_state_dict():
    gen = TPSGenerator((4, 4))
    assert {"l_inv", "control_points"} <= set(gen.state_dict())
    assert not any(True for _ in gen.parameters())


@pytest.mark.parametrize("align_corners", ALIGN, ids=lambda a: f"ac{int(a)}")
def test_affine3d_equals_affine_grid(align_corners):
    size = (2, 1, 3, 4, 5)
    params = torch.randn(2, 12)
    gen = Affine3DGenerator()
    assert gen.theta(params).shape == (2, 3, 4)
    expected = F.affine_grid(params.reshape(-1, 3, 4), list(size), align_corners=align_corners)
    torch.testing.assert_close(gen.grid(params, size, align_corners), expected, rtol=0, atol=0)


_GRADCHECK = {
    "affine": (2, 1, 3, 4),
    "attention": (2, 1, 3, 4),
    "projective": (2, 1, 3, 4),
    "tps": (2, 1, 3, 4),
    "affine3d": (2, 1, 2, 3, 4),
}


@pytest.mark.parametrize("kind", list(_GRADCHECK))
@pytest.mark.parametrize("align_corners", ALIGN, ids=lambda a: f"ac{int(a)}")
def test_generator_gradcheck_float64(kind, align_corners):
    gen = make_generator(kind, tps_grid=(2, 3)).double()  # a small TPS keeps gradcheck fast
    size = _GRADCHECK[kind]
    # Near the identity, so the projective divide stays away from the horizon.
    params = (gen.identity_params().double() + 0.1 * torch.randn(size[0], gen.num_params, dtype=torch.float64))
    params.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: gen.grid(p, size, align_corners), (params,))


def test_make_generator_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown grid generator"):
        make_generator("similarity")


_COMBOS = list(itertools.product(INTERPOLATION_NAMES, PADDING_NAMES, ALIGN))


@pytest.mark.parametrize(
    "mode,padding,align_corners", _COMBOS, ids=[f"{m}-{p}-ac{int(a)}" for m, p, a in _COMBOS]
)
@pytest.mark.parametrize("kind", ["affine", "projective", "tps", "attention"])
def test_identity_initialised_stn_leaves_input_unchanged(kind, mode, padding, align_corners):
    torch.manual_seed(0)
    shape = (2, 9, 11)
    gen = make_generator(kind)
    settings = SamplerSettings(mode, padding, align_corners)
    x = torch.rand(3, *shape)
    # The regression layer alone makes the identity; the conv localisation's is checked in
    # the zoo test below.
    st = SpatialTransformer(FCLocalisation(shape, gen), gen, shape[1:], settings)
    torch.testing.assert_close(st(x), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode,padding", list(itertools.product(["bilinear", "nearest"], PADDING_NAMES)))
def test_identity_initialised_volume_stn_leaves_input_unchanged(mode, padding):
    shape = (1, 4, 5, 6)
    gen = Affine3DGenerator()
    st = SpatialTransformer(FCLocalisation(shape, gen), gen, shape[1:], SamplerSettings(mode, padding, False))
    x = torch.rand(2, *shape)
    torch.testing.assert_close(st(x), x, atol=1e-6, rtol=0)


def test_forward_is_warp_of_localisation_and_transform_returns_its_grid():
    torch.manual_seed(0)
    gen = AffineGenerator()
    st = SpatialTransformer(ConvLocalisation((1, 12, 12), gen), gen, (6, 8), SamplerSettings("bilinear", "border", True))
    with torch.no_grad():
        st.localisation.regression.weight.normal_(0, 0.1)  # leave the identity
    x = torch.rand(2, 1, 12, 12)
    params = st.localisation(x)
    out, grid = st.transform(x)
    torch.testing.assert_close(st(x), st.warp(x, params))
    torch.testing.assert_close(out, st(x))
    assert out.shape == (2, 1, 6, 8) and grid.shape == (2, 6, 8, 2)
    torch.testing.assert_close(grid, gen.grid(params, (2, 1, 6, 8), True))
    torch.testing.assert_close(out, F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True))


@pytest.mark.parametrize("in_size", [(28, 28), (42, 42), (60, 60)], ids=["28", "42", "60"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_builds_runs_and_starts_at_identity(name, in_size):
    torch.manual_seed(0)
    config = ModelConfig(name, in_size=in_size)
    model = build_model(config).eval()
    x = torch.rand(2, *config.input_shape)
    assert model(x).shape == (2, 10)
    sts = spatial_transformers(model)
    assert (len(sts) > 0) == name.startswith(("st-", "tutorial"))
    for st in sts:
        assert st.out_size == in_size
        torch.testing.assert_close(st(x), x, atol=1e-5, rtol=0)


def test_multi_model_has_two_transformers_in_parallel():
    model = build_model(ModelConfig("st-cnn-multi"))
    assert len(spatial_transformers(model)) == 2


def test_tutorial_model_has_the_tutorial_parameter_count():
    # conv 1->8 k7 (400) + conv 8->10 k5 (2010) + fc 90->32 (2912) + fc 32->6 (198)
    # + conv 1->10 k5 (260) + conv 10->20 k5 (5020) + fc 320->50 (16050) + fc 50->10 (510)
    assert count_parameters(build_model(ModelConfig("tutorial-stn"))) == 27360


def test_config_round_trips_through_json():
    config = ModelConfig(
        "st-cnn-tps", in_size=(42, 42), sampler=SamplerSettings("bicubic", "reflection", True), tps_grid=(3, 5),
        out_size=(20, 24),
    )
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.input_shape == (1, 42, 42)
    model = build_model(again)
    assert spatial_transformers(model)[0].out_size == (20, 24)
    assert spatial_transformers(model)[0].generator.num_params == 30
    assert model(torch.rand(1, 1, 42, 42)).shape == (1, 10)


@pytest.mark.parametrize(
    "bad,needle",
    [
        ({"name": "resnet"}, "unknown model"),
        ({"name": "cnn", "colour": 3}, "unknown keys"),
        ({"name": "cnn", "in_size": [28]}, "in_size"),
        ({"name": "cnn", "sampler": {"mode": "area"}}, "interpolation"),
        ({"in_size": [28, 28]}, "name"),
    ],
    ids=["unknown-name", "unknown-key", "short-size", "bad-mode", "no-name"],
)
def test_config_from_bad_dict_is_a_user_error(bad, needle):
    with pytest.raises(UserError, match=needle):
        ModelConfig.from_dict(bad)


def test_model_table_lists_every_model_with_its_parameter_count():
    rows = model_table((42, 42))
    assert [r[0] for r in rows] == list(MODEL_NAMES)
    for name, count, description in rows:
        assert count == count_parameters(build_model(ModelConfig(name, in_size=(42, 42)))) and description
