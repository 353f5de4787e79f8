"""The plugin library's kernels (stn_deploy/kernels.py -> plugins/common/stnKernelApi.h) against
PyTorch: the CPU reference always, the CUDA launchers on a GPU (``gpu`` marker).

fp16/bf16 outputs are compared with the fp32 PyTorch result of the same (exactly upcast) inputs,
rounded to the dtype: the kernels accumulate in fp32.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from stn_deploy import kernels, schema  # noqa: E402
from stn_deploy.errors import UserError  # noqa: E402
from stn_deploy.tolerances import assert_close  # noqa: E402

if not kernels.library_path().exists():
    pytest.skip(
        f"plugin library {kernels.library_path()} not built (run `stn-deploy plugins build`)", allow_module_level=True
    )

pytestmark = pytest.mark.plugin

MODES = list(schema.INTERPOLATION_NAMES)  # bilinear, nearest, bicubic
PADDINGS = list(schema.PADDING_NAMES)  # zeros, border, reflection
#: 5-D sampling: PyTorch has no bicubic for volumes.
CASES_5D = [
    pytest.param(m, p, ac, id=f"{m}-{p}-ac{int(ac)}")
    for m, p, ac in itertools.product(("bilinear", "nearest"), PADDINGS, (False, True))
]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# (name, N, C, input spatial, output spatial): odd sizes, 1x1, 1xN, batch 1 and > 1, C from 1 to 17.
SHAPES_4D = [
    ("n1c1_1x1_to_3x2", 1, 1, (1, 1), (3, 2)),
    ("n2c3_1x9_to_2x5", 2, 3, (1, 9), (2, 5)),
    ("n3c17_7x5_to_4x6", 3, 17, (7, 5), (4, 6)),
    ("n1c5_6x8_to_5x5", 1, 5, (6, 8), (5, 5)),
]
SHAPES_5D = [
    ("n1c1_1x1x1_to_2x2x3", 1, 1, (1, 1, 1), (2, 2, 3)),
    ("n2c3_3x1x7_to_2x3x2", 2, 3, (3, 1, 7), (2, 3, 2)),
    ("n2c17_4x5x3_to_3x2x5", 2, 17, (4, 5, 3), (3, 2, 5)),
]

NONFINITE = [float("nan"), float("inf"), -float("inf")]


def _random_grid(gen: torch.Generator, n: int, out: tuple[int, ...], with_nonfinite: bool = True) -> torch.Tensor:
    """U(-1.3, 1.3) coordinates (they leave the image), with NaN/+-inf planted in some of them."""
    rank_coords = len(out)
    grid = torch.rand((n, *out, rank_coords), generator=gen) * 2.6 - 1.3
    if with_nonfinite:
        flat = grid.view(-1)
        count = min(flat.numel() // 4, 6)
        idx = torch.randperm(flat.numel(), generator=gen)[:count]
        for k, i in enumerate(idx.tolist()):
            flat[i] = NONFINITE[k % 3]
    return grid


def _reference(x, grid, mode, padding, align_corners, dtype):
    """PyTorch in fp32 on the (exactly upcast) inputs, rounded to ``dtype``."""
    out = F.grid_sample(x.float(), grid.float(), mode=mode, padding_mode=padding, align_corners=align_corners)
    return out.to(dtype)


def _matrix_4d():
    for mode, padding, ac, dtype, shape in itertools.product(MODES, PADDINGS, (False, True), DTYPES, SHAPES_4D):
        yield pytest.param(mode, padding, ac, dtype, shape, id=f"4d-{mode}-{padding}-ac{int(ac)}-{dtype}-{shape[0]}")


def _matrix_5d():
    for mode, padding, ac, dtype, shape in itertools.product(
        ("bilinear", "nearest"), PADDINGS, (False, True), DTYPES, SHAPES_5D
    ):
        yield pytest.param(mode, padding, ac, dtype, shape, id=f"5d-{mode}-{padding}-ac{int(ac)}-{dtype}-{shape[0]}")


def _seed(*parts) -> torch.Generator:
    """A generator seeded from the test's parameters (stable across runs, unlike hash())."""
    return torch.Generator().manual_seed(zlib.crc32("/".join(map(str, parts)).encode()))


# ------------------------------------------------------------------------------ CPU reference


@pytest.mark.parametrize(("mode", "padding", "align_corners", "dtype", "shape"), list(_matrix_4d()) + list(_matrix_5d()))
def test_cpu_reference_matches_grid_sample(mode, padding, align_corners, dtype, shape):
    _, n, c, spatial_in, spatial_out = shape
    gen = _seed(mode, padding, align_corners, dtype, shape)
    x = torch.randn((n, c, *spatial_in), generator=gen).to(DTYPES[dtype])
    grid = _random_grid(gen, n, spatial_out)
    out = kernels.grid_sample(x, grid, mode, padding, align_corners)
    assert out.dtype == x.dtype and out.shape == (n, c, *spatial_out)
    assert_close(out, _reference(x, grid, mode, padding, align_corners, x.dtype), what=f"{mode}/{padding}")


def _tie_grid(size_in: int, size_out: int, align_corners: bool) -> torch.Tensor:
    """Coordinates whose unnormalised position is exactly k + 0.5 (k = -1 .. size), exact in float."""
    k = torch.arange(-1, size_in + 1, dtype=torch.float64) + 0.5
    k = k[torch.arange(size_out) % k.numel()]
    coords = (2 * k / (size_in - 1) - 1) if align_corners else ((2 * k + 1) / size_in - 1)
    return coords.float()


@pytest.mark.parametrize(
    ("padding", "align_corners", "rank"),
    [pytest.param(p, ac, r, id=f"{r}d-{p}-ac{int(ac)}") for p, ac, r in itertools.product(PADDINGS, (False, True), (4, 5))],
)
def test_nearest_rounds_exact_half_ties_to_even(padding, align_corners, rank):
    # Sizes where (x + 1) * size / 2 is exact in float: 4 / 8 (align_corners=False), 5 / 9 (True).
    size = (5, 9) if align_corners else (4, 8)
    gen = _seed("ties", padding, align_corners, rank)
    if rank == 4:
        x = torch.randn((2, 3, size[0], size[1]), generator=gen)
        gy = _tie_grid(size[0], 6, align_corners)
        gx = _tie_grid(size[1], 11, align_corners)
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).expand(2, -1, -1, -1).contiguous()
    else:
        x = torch.randn((1, 2, size[0], size[1], size[0]), generator=gen)
        g = [_tie_grid(s, 5, align_corners) for s in (size[0], size[1], size[0])]
        grid = torch.stack(torch.meshgrid(*g, indexing="ij")[::-1], dim=-1).unsqueeze(0).contiguous()
    out = kernels.grid_sample(x, grid, "nearest", padding, align_corners)
    ref = F.grid_sample(x, grid, mode="nearest", padding_mode=padding, align_corners=align_corners)
    assert torch.equal(out, ref), "nearest must round .5 ties to even (nearbyint) exactly as PyTorch"


@pytest.mark.parametrize(
    ("mode", "padding", "align_corners"),
    [pytest.param(m, p, ac, id=f"{m}-{p}-ac{int(ac)}") for m, p, ac in itertools.product(MODES, PADDINGS, (False, True))],
)
def test_every_nonfinite_coordinate_combination(mode, padding, align_corners):
    """NaN, +-inf and huge finite values in x and/or y, as PyTorch on the CPU."""
    values = [float("nan"), float("inf"), -float("inf"), 0.3, -0.7]
    if padding != "reflection":
        values += [1e20, -1e20]  # reflection of |u| >> 2^24 depends on float formula details
    pairs = torch.tensor(list(itertools.product(values, values)), dtype=torch.float32)
    grid = pairs.view(1, 1, -1, 2)
    x = torch.arange(1, 1 + 2 * 4 * 5, dtype=torch.float32).view(1, 2, 4, 5)
    out = kernels.grid_sample(x, grid, mode, padding, align_corners)
    ref = F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)
    assert_close(out, ref)


@pytest.mark.parametrize("padding", PADDINGS)
def test_cuda_semantics_on_the_cpu(padding):
    """semantics="cuda" reproduces ATen's CUDA kernel (what a TensorRT engine computes): a NaN/inf
    coordinate samples nothing in bilinear/nearest, clipping sends NaN to 0, bicubic gives NaN;
    finite coordinates agree with the CPU semantics."""
    x = torch.arange(1, 1 + 4 * 5, dtype=torch.float32).view(1, 1, 4, 5)
    nan, inf = float("nan"), float("inf")
    grid = torch.tensor([[[[nan, 0.1], [inf, 0.1], [-inf, 0.1], [0.3, -0.2]]]])
    out = {m: kernels.grid_sample(x, grid, m, padding, False, semantics="cuda")[0, 0, 0] for m in MODES}
    # Column 0 of the row at y = 0.1: 1.7 in pixels -> 6 * 0.3 + 11 * 0.7.
    clipped = {"zeros": [0.0, 0.0, 0.0], "border": [9.5, 13.5, 9.5], "reflection": [9.5, 9.5, 9.5]}[padding]
    assert out["bilinear"][:3].tolist() == pytest.approx(clipped)
    assert out["nearest"][:3].tolist() == {"zeros": [0.0] * 3, "border": [11.0, 15.0, 11.0], "reflection": [11.0] * 3}[
        padding
    ]
    assert torch.isnan(out["bicubic"][:3]).all()
    for mode in MODES:
        cpu = kernels.grid_sample(x, grid[:, :, 3:], mode, padding, False)
        assert_close(out[mode][3:], cpu[0, 0, 0], what=mode)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("mode", MODES)
def test_grid_in_input_dtype(dtype, mode):
    gen = _seed("griddtype", dtype, mode)
    x = torch.randn((2, 4, 7, 5), generator=gen).to(DTYPES[dtype])
    grid = _random_grid(gen, 2, (5, 6)).to(DTYPES[dtype])
    out = kernels.grid_sample(x, grid, mode, "border", False)
    assert_close(out, _reference(x, grid, mode, "border", False, x.dtype))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_conversions_are_exact(dtype):
    """Every finite 16-bit value survives a nearest-neighbour copy bit for bit, and fp32 -> 16-bit
    rounding equals torch's (round to nearest even)."""
    tdt = DTYPES[dtype]
    bits = torch.arange(0, 2**16, dtype=torch.int32).to(torch.int16).view(tdt)
    bits = bits[torch.isfinite(bits.float())]
    n = bits.numel()
    w = 256
    h = math.ceil(n / w)
    x = torch.zeros(h * w, dtype=tdt)
    x[:n] = bits
    x = x.view(1, 1, h, w)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grid = torch.stack([(2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1], dim=-1).float().unsqueeze(0)
    out = kernels.grid_sample(x, grid, "nearest", "zeros", False)
    assert torch.equal(out.view(torch.int16), x.view(torch.int16))
    # Rounding: fp32 results of bilinear sampling, rounded by the kernel vs by torch.
    gen = _seed("round", dtype)
    x32 = torch.randn((1, 3, 9, 9), generator=gen) * 100
    x16 = x32.to(tdt)
    g = _random_grid(gen, 1, (16, 16), with_nonfinite=False)
    ours = kernels.grid_sample(x16, g, "bilinear")
    theirs = kernels.grid_sample(x16.float(), g, "bilinear").to(tdt)
    assert torch.equal(ours.view(torch.int16), theirs.view(torch.int16))


def test_numpy_arrays_in_numpy_out():
    gen = np.random.default_rng(0)
    x = gen.standard_normal((2, 3, 5, 6), dtype=np.float32)
    grid = gen.uniform(-1.3, 1.3, (2, 4, 7, 2)).astype(np.float32)
    out = kernels.grid_sample(x, grid, "bicubic", "reflection", True)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 3, 4, 7)
    ref = F.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), "bicubic", "reflection", True)
    assert_close(out, ref)
    x16 = x.astype(np.float16)
    out16 = kernels.grid_sample(x16, grid, "nearest")
    assert out16.dtype == np.float16
    # Modes also as the plugin's integers (ONNX attributes): 1 = nearest.
    assert np.array_equal(kernels.grid_sample(x16, grid, 1, 0, 0), out16)
    # Non-contiguous input is accepted (copied once).
    out_nc = kernels.grid_sample(np.asfortranarray(x), grid)
    assert_close(out_nc, kernels.grid_sample(x, grid))


def test_threads_do_not_change_the_result():
    gen = _seed("threads")
    x = torch.randn((2, 3, 40, 50), generator=gen)
    grid = _random_grid(gen, 2, (64, 70))
    one = kernels.grid_sample(x, grid, "bicubic", "zeros", False, num_threads=1)
    many = kernels.grid_sample(x, grid, "bicubic", "zeros", False, num_threads=4)
    assert torch.equal(one.nan_to_num(7.0), many.nan_to_num(7.0))


# ------------------------------------------------------------------------------- fused op


def _fused_matrix():
    for mode, padding, ac, dtype in itertools.product(MODES, PADDINGS, (False, True), ("float32", "bfloat16")):
        yield pytest.param(mode, padding, ac, dtype, id=f"{mode}-{padding}-ac{int(ac)}-{dtype}")


def _homography_grid(h: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """The homography reference: affine_grid's base grid (x, y, 1) times H^T, divided by w."""
    n = h.shape[0]
    eye = torch.eye(2, 3).expand(n, 2, 3)
    base = F.affine_grid(eye, (n, 1, *size), align_corners=align_corners)  # exact base coordinates
    homog = torch.cat([base, torch.ones_like(base[..., :1])], dim=-1) @ h.transpose(1, 2).unsqueeze(1)
    return homog[..., :2] / homog[..., 2:]


@pytest.mark.parametrize(("mode", "padding", "align_corners", "dtype"), list(_fused_matrix()))
def test_fused_affine_matches_affine_grid_then_grid_sample(mode, padding, align_corners, dtype):
    gen = _seed("affine", mode, padding, align_corners, dtype)
    x = torch.randn((2, 5, 7, 9), generator=gen).to(DTYPES[dtype])
    theta = torch.eye(2, 3) + 0.4 * torch.randn((2, 2, 3), generator=gen)
    size = (6, 5)
    out = kernels.affine_grid_sample(x, theta, size, mode, padding, align_corners)
    grid = F.affine_grid(theta, (2, 5, *size), align_corners=align_corners)
    assert_close(out, _reference(x, grid, mode, padding, align_corners, x.dtype))


@pytest.mark.parametrize(("mode", "padding", "align_corners", "dtype"), list(_fused_matrix()))
def test_fused_projective_matches_homography_reference(mode, padding, align_corners, dtype):
    gen = _seed("projective", mode, padding, align_corners, dtype)
    x = torch.randn((3, 2, 8, 6), generator=gen).to(DTYPES[dtype])
    h = torch.eye(3) + 0.25 * torch.randn((3, 3, 3), generator=gen)
    h[:, 2, :2] *= 0.3  # keep w away from 0
    h[:, 2, 2] = 1.0
    size = (5, 7)
    out = kernels.affine_grid_sample(x, h, size, mode, padding, align_corners)
    grid = _homography_grid(h, size, align_corners)
    assert_close(out, _reference(x, grid, mode, padding, align_corners, x.dtype))


@pytest.mark.parametrize(
    ("mode", "padding", "align_corners"),
    CASES_5D,
)
def test_fused_3d_affine_matches_affine_grid_then_grid_sample(mode, padding, align_corners):
    gen = _seed("affine3d", mode, padding, align_corners)
    x = torch.randn((2, 3, 4, 5, 6), generator=gen)
    theta = torch.eye(3, 4) + 0.3 * torch.randn((2, 3, 4), generator=gen)
    size = (3, 4, 5)
    out = kernels.affine_grid_sample(x, theta, size, mode, padding, align_corners)
    grid = F.affine_grid(theta, (2, 3, *size), align_corners=align_corners)
    assert_close(out, _reference(x, grid, mode, padding, align_corners, x.dtype))


@pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid behavior")
@pytest.mark.parametrize("size", [(1, 1), (1, 4), (3, 1)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_fused_degenerate_output_sizes(size):
    gen = _seed("degenerate", size)
    x = torch.randn((1, 2, 5, 5), generator=gen)
    theta = torch.eye(2, 3).unsqueeze(0) + 0.1 * torch.randn((1, 2, 3), generator=gen)
    for ac in (False, True):
        out = kernels.affine_grid_sample(x, theta, size, align_corners=ac)
        grid = F.affine_grid(theta, (1, 2, *size), align_corners=ac)
        assert_close(out, F.grid_sample(x, grid, align_corners=ac))


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda x, g: kernels.grid_sample(x.double(), g), "float64", id="float64-input"),
        pytest.param(lambda x, g: kernels.grid_sample(x.to(torch.int8), g), "int8", id="int8-input"),
        pytest.param(lambda x, g: kernels.grid_sample(x[0], g), "4-D", id="rank3-input"),
        pytest.param(lambda x, g: kernels.grid_sample(x, g[..., :1].contiguous()), "grid must be", id="grid-last-dim"),
        pytest.param(lambda x, g: kernels.grid_sample(x, g.half()), "grid has dtype", id="grid-dtype"),
        pytest.param(lambda x, g: kernels.grid_sample(x, g, mode="lanczos"), "interpolation", id="mode-name"),
        pytest.param(lambda x, g: kernels.grid_sample(x, g, padding_mode="wrap"), "padding", id="padding-name"),
        pytest.param(lambda x, g: kernels.grid_sample(x, g, mode=7), "interpolation", id="mode-int-7"),
        pytest.param(
            lambda x, g: kernels.grid_sample(x.unsqueeze(2), g.unsqueeze(1).expand(-1, 1, -1, -1, -1)[..., :1].repeat(1, 1, 1, 1, 3), "bicubic"),
            "bicubic",
            id="bicubic-5d",
        ),
        pytest.param(lambda x, g: kernels.affine_grid_sample(x, torch.zeros(2, 2, 4), (3, 3)), "theta", id="theta-shape"),
        pytest.param(lambda x, g: kernels.affine_grid_sample(x, torch.zeros(2, 2, 3), (3,)), "size", id="size-length"),
        pytest.param(lambda x, g: kernels.affine_grid_sample(x, torch.zeros(2, 2, 3), (0, 3)), "size", id="size-zero"),
        pytest.param(lambda x, g: kernels.grid_sample(x.numpy(), g), "both", id="numpy-and-torch"),
    ],
)
def test_bad_inputs_raise_one_line_user_error(call, message):
    x = torch.randn(2, 3, 5, 5)
    g = torch.rand(2, 4, 4, 2) * 2 - 1
    with pytest.raises(UserError) as info:
        call(x, g)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_missing_library_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv(kernels.LIBRARY_ENV, str(tmp_path / "nope.so"))
    assert kernels.library_path() == tmp_path / "nope.so"
    with pytest.raises(UserError, match="stn-deploy plugins build"):
        kernels.grid_sample(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 2))


def test_cmake_arch_list():
    assert kernels._cmake_archs(["75", "86"]) == "75-real;86-real;75-virtual"
    assert kernels._cmake_archs("120;90") == "120-real;90-real;90-virtual"  # PTX of the lowest
    assert kernels._cmake_archs("86-real,90-virtual") == "86-real;90-virtual"
    with pytest.raises(UserError):
        kernels._cmake_archs("sm_86")


def test_cli_plugins_path_and_build_errors(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from stn_deploy.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["plugins", "path"])
    assert result.exit_code == 0 and result.output.strip() == str(kernels.library_path())
    monkeypatch.setenv(kernels.LIBRARY_ENV, str(tmp_path / "missing.so"))
    result = runner.invoke(main, ["plugins", "path"])
    assert result.exit_code == 2 and "stn-deploy plugins build" in result.output
    result = runner.invoke(main, ["plugins", "build", "--archs", "sm_86", "--build-dir", str(tmp_path / "b")])
    assert result.exit_code == 2 and "bad CUDA architecture" in result.output


def test_library_exports_the_tensorrt_entry_points():
    out = subprocess.run(
        ["nm", "-D", "--defined-only", str(kernels.library_path())], capture_output=True, text=True, check=True
    ).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
    assert {"getCreators", "setLoggerFinder", "stn_grid_sample_cpu", "stn_grid_sample_cuda"} <= exported
    # Hidden visibility: no C++ (mangled) symbol of ours leaks.
    assert not [s for s in exported if s.startswith("_ZN10stn_deploy")]


# ------------------------------------------------------------------------------- fuzz driver

FUZZ = kernels.library_path().parent / "stn_plugin_fuzz"


@pytest.mark.skipif(not FUZZ.exists(), reason=f"fuzz driver {FUZZ} not built (STN_BUILD_FUZZ=ON)")
def test_fuzz_creators_and_shape_functions():
    proc = subprocess.run([str(FUZZ), "10000", "1234"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "0 crashes" in proc.stdout


# --------------------------------------------------------------------------- 64-bit offsets


@pytest.mark.slow
def test_offsets_beyond_2_pow_31_elements():
    side = 46341  # side**2 > 2**31
    try:
        x = torch.zeros((1, 1, side, side), dtype=torch.float16)
    except RuntimeError:
        pytest.skip("needs ~4.3 GB of memory")
    x[0, 0, -3:, -4:] = torch.arange(1, 13, dtype=torch.float16).view(3, 4)
    rows = torch.tensor([side - 3, side - 2, side - 1], dtype=torch.float64)
    cols = torch.tensor([side - 4, side - 3, side - 2, side - 1], dtype=torch.float64)
    ys, xs = torch.meshgrid(2 * rows / (side - 1) - 1, 2 * cols / (side - 1) - 1, indexing="ij")
    grid = torch.stack([xs, ys], dim=-1).float().unsqueeze(0)
    for mode in ("nearest", "bilinear"):
        out = kernels.grid_sample(x, grid, mode, "zeros", True)
        assert out.shape == (1, 1, 3, 4)
        # float32 coordinates near 1.0 are spaced ~6e-8: they land within ~0.002 px of the centres.
        assert_close(out[0, 0].float(), torch.arange(1, 13, dtype=torch.float32).view(3, 4), "bfloat16")


# ------------------------------------------------------------------------------- CUDA (gpu)


def _cuda_matrix():
    for mode, padding, ac, dtype in itertools.product(MODES, PADDINGS, (False, True), DTYPES):
        yield pytest.param(mode, padding, ac, dtype, id=f"{mode}-{padding}-ac{int(ac)}-{dtype}")


@pytest.mark.gpu
@pytest.mark.parametrize(("mode", "padding", "align_corners", "dtype"), list(_cuda_matrix()))
@pytest.mark.parametrize("out_size", [(6, 8), (5, 7)], ids=["even-paired", "odd-scalar"])
def test_cuda_grid_sample_matches_torch_cuda(mode, padding, align_corners, dtype, out_size):
    gen = _seed("cuda", mode, padding, align_corners, dtype, out_size)
    x = torch.randn((2, 17, 7, 9), generator=gen).to(DTYPES[dtype]).cuda()
    grid = _random_grid(gen, 2, out_size).cuda()
    out = kernels.grid_sample(x, grid, mode, padding, align_corners)
    assert out.is_cuda
    assert_close(out, _reference(x, grid, mode, padding, align_corners, x.dtype))
    # The CPU reference with CUDA semantics predicts the CUDA result (what a TensorRT engine gives).
    cpu = kernels.grid_sample(x.cpu(), grid.cpu(), mode, padding, align_corners, semantics="cuda")
    assert_close(out.cpu(), cpu)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("mode", "padding", "align_corners"),
    CASES_5D,
)
def test_cuda_grid_sample_5d_matches_torch_cuda(mode, padding, align_corners):
    gen = _seed("cuda5d", mode, padding, align_corners)
    x = torch.randn((2, 5, 4, 5, 6), generator=gen).cuda()
    grid = _random_grid(gen, 2, (3, 4, 5)).cuda()
    out = kernels.grid_sample(x, grid, mode, padding, align_corners)
    assert_close(out, _reference(x, grid, mode, padding, align_corners, x.dtype))


@pytest.mark.gpu
@pytest.mark.parametrize(("mode", "padding", "align_corners", "dtype"), list(_cuda_matrix()))
def test_cuda_fused_matches_torch_cuda(mode, padding, align_corners, dtype):
    gen = _seed("cudafused", mode, padding, align_corners, dtype)
    x = torch.randn((2, 6, 9, 7), generator=gen).to(DTYPES[dtype]).cuda()
    theta = (torch.eye(2, 3) + 0.4 * torch.randn((2, 2, 3), generator=gen)).cuda()
    for size in ((6, 8), (5, 7)):
        out = kernels.affine_grid_sample(x, theta, size, mode, padding, align_corners)
        grid = F.affine_grid(theta, (2, 6, *size), align_corners=align_corners)
        assert_close(out, _reference(x, grid, mode, padding, align_corners, x.dtype))
    h = (torch.eye(3) + 0.2 * torch.randn((2, 3, 3), generator=gen)).cuda()
    h[:, 2, 2] = 1.0
    out = kernels.affine_grid_sample(x, h, (6, 8), mode, padding, align_corners)
    grid = _homography_grid(h.cpu(), (6, 8), align_corners).cuda()
    assert_close(out, _reference(x, grid, mode, padding, align_corners, x.dtype))


@pytest.mark.gpu
def test_cuda_runs_on_the_current_stream():
    x = torch.randn(4, 3, 64, 64, device="cuda")
    grid = torch.rand(4, 32, 32, 2, device="cuda") * 2 - 1
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = kernels.grid_sample(x, grid)
    stream.synchronize()
    assert_close(out, F.grid_sample(x, grid, align_corners=False))
