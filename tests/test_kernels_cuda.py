"""The CUDA launchers (stn_deploy/kernels.py) on what the GPU check asks for beyond the matrix in
tests/test_kernels.py: offsets past 2**31 elements, misaligned input pointers, non-finite theta.

Every test is ``gpu``: skipped cleanly without CUDA (conftest). References are PyTorch's own
CUDA ops on (exactly) upcast fp32 inputs, rounded to the dtype, as in tests/test_kernels.py.
"""

from __future__ import annotations

import itertools
import zlib

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from stn_deploy import kernels  # noqa: E402
from stn_deploy.tolerances import assert_close  # noqa: E402

if not kernels.library_path().exists():
    pytest.skip(
        f"plugin library {kernels.library_path()} not built (run `stn-deploy plugins build`)", allow_module_level=True
    )

pytestmark = [pytest.mark.gpu, pytest.mark.plugin]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MODES = ("bilinear", "nearest", "bicubic")


def _seed(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32("/".join(map(str, parts)).encode()))


def _reference(x, grid, mode, padding, align_corners, dtype):
    out = F.grid_sample(x.float(), grid.float(), mode=mode, padding_mode=padding, align_corners=align_corners)
    return out.to(dtype)


def _needs_free_gib(gib: float) -> None:
    free, _ = torch.cuda.mem_get_info()
    if free < gib * 2**30:
        pytest.skip(f"needs {gib:g} GiB of free GPU memory, {free / 2**30:.1f} free")


def _misaligned(t: torch.Tensor) -> torch.Tensor:
    """The same values, contiguous, one element past a 16-byte boundary (no vector load may assume it)."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    out = buf[1:].view(t.shape)
    out.copy_(t)
    assert out.is_contiguous() and out.data_ptr() % 16 != 0
    return out


# --------------------------------------------------------------------------- 64-bit offsets


def test_cuda_input_beyond_2_pow_31_elements():
    side = 46341  # side**2 > 2**31: the last pixels lie past any 32-bit offset
    _needs_free_gib(6)
    x = torch.zeros((1, 1, side, side), dtype=torch.float16, device="cuda")
    corner = torch.arange(1, 13, dtype=torch.float32).view(3, 4)
    x[0, 0, -3:, -4:] = corner.to(torch.float16).cuda()
    rows = torch.tensor([side - 3, side - 2, side - 1], dtype=torch.float64)
    cols = torch.tensor([side - 4, side - 3, side - 2, side - 1], dtype=torch.float64)
    ys, xs = torch.meshgrid(2 * rows / (side - 1) - 1, 2 * cols / (side - 1) - 1, indexing="ij")
    grid = torch.stack([xs, ys], dim=-1).float().unsqueeze(0).cuda()
    # The same pixel centres through the fused kernel: an affine map of the 3x4 output onto them.
    ax, ay = 3 / (side - 1), 2 / (side - 1)
    theta = torch.tensor([[[ax, 0.0, 2 * (side - 4) / (side - 1) - 1 + ax],
                           [0.0, ay, 2 * (side - 3) / (side - 1) - 1 + ay]]], dtype=torch.float64).float().cuda()
    for mode in ("nearest", "bilinear"):
        for out in (kernels.grid_sample(x, grid, mode, "zeros", True),
                    kernels.affine_grid_sample(x, theta, (3, 4), mode, "zeros", True)):
            assert out.shape == (1, 1, 3, 4)
            # float32 coordinates near 1.0 are spaced ~6e-8: they land within ~0.002 px of the centres.
            assert_close(out[0, 0].float().cpu(), corner, "bfloat16", what=mode)


@pytest.mark.parametrize(("n", "c"), [(3, 1), (1, 3)], ids=["batch-past-2^31", "channels-past-2^31"])
def test_cuda_fused_output_beyond_2_pow_31_elements(n, c):
    ho = wo = 30000  # n * c * ho * wo = 2.7e9 > 2**31: the last planes start past any 32-bit offset
    _needs_free_gib(8)
    gen = _seed("big-out", n, c)
    x = torch.randn((n, c, 5, 7), generator=gen).to(torch.float16).cuda()
    theta = (torch.eye(2, 3) + 0.3 * torch.randn((n, 2, 3), generator=gen)).cuda()
    out = kernels.affine_grid_sample(x, theta, (ho, wo), "bilinear", "zeros", False)
    assert out.shape == (n, c, ho, wo)
    # Rows first, middle and last of every plane against grid_sample on the same rows of the grid.
    rows = torch.tensor([0, ho // 2, ho - 1], dtype=torch.float32)
    base_x = (2 * torch.arange(wo, dtype=torch.float32) + 1) / wo - 1
    base_y = (2 * rows + 1) / ho - 1
    by, bx = torch.meshgrid(base_y, base_x, indexing="ij")
    base = torch.stack([bx, by, torch.ones_like(bx)], dim=-1).cuda()  # [3, wo, 3]
    grid = torch.einsum("rwk,njk->nrwj", base, theta)  # [n, 3, wo, 2]
    expected = _reference(x, grid, "bilinear", "zeros", False, torch.float16)
    actual = out[:, :, rows.long().cuda(), :]
    assert_close(actual.cpu(), expected.cpu())


# ------------------------------------------------------------------------ misaligned pointers


def _aligned_cases():
    for mode, dtype, size in itertools.product(MODES, DTYPES, [(8, 16), (7, 13)]):
        yield pytest.param(mode, dtype, size, id=f"{mode}-{dtype}-{size[0]}x{size[1]}")


@pytest.mark.parametrize(("mode", "dtype", "size"), list(_aligned_cases()))
def test_cuda_misaligned_input_grid_and_theta(mode, dtype, size):
    gen = _seed("misaligned", mode, dtype, size)
    x = torch.randn((2, 5, 9, 11), generator=gen).to(DTYPES[dtype]).cuda()
    grid = (torch.rand((2, *size, 2), generator=gen) * 2.6 - 1.3).cuda()
    theta = (torch.eye(2, 3) + 0.3 * torch.randn((2, 2, 3), generator=gen)).cuda()
    xm, gm, tm = _misaligned(x), _misaligned(grid), _misaligned(theta)
    expected = _reference(x, grid, mode, "zeros", False, x.dtype)
    assert_close(kernels.grid_sample(xm, gm, mode, "zeros", False), expected, what="grid kernel")
    # The aligned call gives the same bits: alignment changes the path, never the result.
    assert torch.equal(kernels.grid_sample(xm, gm, mode, "zeros", False), kernels.grid_sample(x, grid, mode, "zeros", False))
    fused_ref = _reference(x, F.affine_grid(theta, (2, 5, *size), align_corners=False), mode, "zeros", False, x.dtype)
    assert_close(kernels.affine_grid_sample(xm, tm, size, mode, "zeros", False), fused_ref, what="fused kernel")


# ------------------------------------------------------------------------------ non-finite theta


@pytest.mark.parametrize(("mode", "padding"), list(itertools.product(MODES, ("zeros", "border", "reflection"))),
                         ids=lambda v: str(v))
def test_cuda_fused_non_finite_theta_as_torch(mode, padding):
    gen = _seed("nonfinite-theta", mode, padding)
    x = torch.randn((4, 3, 6, 7), generator=gen).cuda()
    theta = torch.eye(2, 3).repeat(4, 1, 1) + 0.3 * torch.randn((4, 2, 3), generator=gen)
    theta[1, 0, 2] = float("nan")  # one coordinate NaN everywhere in sample 1
    theta[2, 1, 1] = float("inf")  # y infinite (NaN on the centre row, where inf * 0) in sample 2
    theta = theta.cuda()
    out = kernels.affine_grid_sample(x, theta, (5, 6), mode, padding, False)
    expected = _reference(x, F.affine_grid(theta, (4, 3, 5, 6), align_corners=False), mode, padding, False, x.dtype)
    assert_close(out, expected)
