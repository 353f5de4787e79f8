"""A corpus of real public models that sample with ``F.grid_sample`` / ``F.affine_grid``.

Each entry builds a model from a real library installed by set-up (``tests/corpus/requirements.txt``,
pure-Python packages installed with ``--no-deps`` beside our CPU torch), in eval mode, with random
weights drawn from a fixed seed, and small example inputs (fast CPU tests). The thin wrappers below
only call the library's public layer or function the way its documentation shows; the sampling
itself is always the library's own code.

Use::

    from corpus import CORPUS
    for entry in CORPUS:
        if entry.missing():            # the library is not installed: skip, naming it
            continue
        model, inputs = entry.build()  # torch.nn.Module (eval), {input name: tensor}
        torch.onnx.export(model, tuple(inputs.values()), path, input_names=list(inputs),
                          dynamic_axes=entry.dynamic_axes(), dynamo=False)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: Seed of every model's weights and example inputs.
SEED = 20261207


@dataclass(frozen=True)
class CorpusModel:
    """One model of the corpus.

    Attributes:
        name: a short id (kebab-case), used as the test id.
        library: the PyPI distribution the sampling code comes from (``version`` says which is
            installed).
        module: the import name of that library.
        rank: 4 (images, ``GridSample`` 4-D) or 5 (volumes).
        what: the library call sampled, with mode / padding / align_corners as the model uses them.
        dynamic: {input name: {axis: dim name}} of the dims that may be dynamic at export (batch
            and, where the model allows, spatial sizes).
        make: builds (model, example inputs); called by ``build`` under the seed.
    """

    name: str
    library: str
    module: str
    rank: int
    what: str
    # Not compared or hashed: an entry is identified by its name (the entries go into sets and dict keys).
    make: Callable[[], tuple[Any, dict[str, Any]]] = field(repr=False, compare=False)
    dynamic: Mapping[str, Mapping[int, str]] = field(default_factory=lambda: MappingProxyType({}), compare=False)

    @property
    def version(self) -> str | None:
        """The installed version of ``library``, None when it is not installed."""
        try:
            return importlib.metadata.version(self.library)
        except importlib.metadata.PackageNotFoundError:
            return None

    def missing(self) -> str | None:
        """Why this model cannot be built here (library not importable), else None."""
        if importlib.util.find_spec(self.module) is None:
            return f"{self.library} is not installed (bash scripts/setup.sh installs tests/corpus/requirements.txt)"
        return None

    def build(self) -> tuple[Any, dict[str, Any]]:
        """(torch.nn.Module in eval mode with random weights, {input name: example tensor}),
        the same on every call (fixed seed)."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model, inputs = self.make()
        return model.eval(), inputs

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``dynamic`` in the form ``torch.onnx.export(dynamo=False, dynamic_axes=...)`` takes."""
        return {k: dict(v) for k, v in self.dynamic.items()}


def _frozen(d: dict[str, dict[int, str]]) -> Mapping[str, Mapping[int, str]]:
    return MappingProxyType({k: MappingProxyType(v) for k, v in d.items()})


def _batch(*names: str) -> Mapping[str, Mapping[int, str]]:
    return _frozen({n: {0: "batch"} for n in names})


def _random_affine(batch: int, rows: int):
    """Affine matrices near the identity (rotation, scale, shift): [batch, rows, rows + 1]."""
    import torch

    eye = torch.eye(rows, rows + 1).expand(batch, rows, rows + 1)
    return eye + 0.2 * torch.randn(batch, rows, rows + 1)


# --------------------------------------------------------------------------- kornia


def _kornia_module(fn: Callable, **kwargs):
    import torch

    class KorniaWarp(torch.nn.Module):
        """``fn(image, matrix, **kwargs)`` of kornia as a module (what an STN head calls)."""

        def forward(self, image, matrix):
            return fn(image, matrix, **kwargs)

    return KorniaWarp()


def _kornia_warp_affine(mode: str, padding: str, align_corners: bool, dsize: tuple[int, int]):
    def make():
        import torch
        from kornia.geometry.transform import warp_affine

        image = torch.rand(2, 3, 16, 20)
        # Pixel-space matrix: rotate ~10 degrees about the centre, scale 0.9, shift (1.5, -2).
        matrix = torch.tensor([[[0.886, -0.156, 3.1], [0.156, 0.886, -0.6]]]).repeat(2, 1, 1) + 0.02 * torch.randn(2, 2, 3)
        model = _kornia_module(warp_affine, dsize=dsize, mode=mode, padding_mode=padding, align_corners=align_corners)
        return model, {"image": image, "matrix": matrix}

    return make


def _kornia_warp_perspective(mode: str, padding: str, align_corners: bool):
    def make():
        import torch
        from kornia.geometry.transform import warp_perspective

        image = torch.rand(2, 3, 16, 16)
        matrix = torch.eye(3).repeat(2, 1, 1) + torch.tensor([[0.05, -0.1, 1.0], [0.1, 0.05, -1.0], [0.004, -0.003, 0.0]])
        model = _kornia_module(warp_perspective, dsize=(16, 16), mode=mode, padding_mode=padding, align_corners=align_corners)
        return model, {"image": image, "homography": matrix}

    return make


def _kornia_flow_warp():
    """Backward warp by an optical-flow field with kornia's ``remap`` (pixel maps from
    ``create_meshgrid``), the warp of flow networks' photometric losses."""

    def make():
        import torch
        from kornia.geometry.transform import remap
        from kornia.utils import create_meshgrid

        class FlowWarp(torch.nn.Module):
            def forward(self, image, flow):
                _, _, h, w = image.shape
                grid = create_meshgrid(h, w, normalized_coordinates=False, device=image.device, dtype=image.dtype)
                map_x = grid[..., 0] + flow[:, 0]
                map_y = grid[..., 1] + flow[:, 1]
                return remap(image, map_x, map_y, mode="bilinear", padding_mode="border", align_corners=True)

        return FlowWarp(), {"image": torch.rand(2, 3, 12, 16), "flow": 2.0 * torch.randn(2, 2, 12, 16)}

    return make


# --------------------------------------------------------------------------- MONAI


def _monai_warp(mode: str, padding: str):
    def make():
        import torch
        from monai.networks.blocks import Warp

        image = torch.rand(1, 2, 6, 8, 10)
        ddf = 1.5 * torch.randn(1, 3, 6, 8, 10)
        return Warp(mode=mode, padding_mode=padding), {"image": image, "ddf": ddf}

    return make


def _monai_affine_transform():
    def make():
        import torch
        from monai.networks.layers import AffineTransform

        image = torch.rand(2, 3, 16, 16)
        theta = _random_affine(2, 2)
        model = AffineTransform(spatial_size=(16, 16), normalized=True, mode="bilinear", padding_mode="zeros", align_corners=False)
        return model, {"image": image, "theta": theta}

    return make


def _monai_globalnet():
    """MONAI's affine registration network (GlobalNet: a CNN regressing an affine DDF) with its
    ``Warp`` of the moving volume: the whole registration model."""

    def make():
        import torch
        from monai.networks.blocks import Warp
        from monai.networks.nets import GlobalNet

        class Registration(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = GlobalNet(image_size=[8, 8, 8], spatial_dims=3, in_channels=2, num_channel_initial=4, depth=2)
                self.warp = Warp(mode="bilinear", padding_mode="border")

            def forward(self, moving, fixed):
                ddf = self.net(torch.cat([moving, fixed], dim=1))
                return self.warp(moving, ddf)

        return Registration(), {"moving": torch.rand(1, 1, 8, 8, 8), "fixed": torch.rand(1, 1, 8, 8, 8)}

    return make


# --------------------------------------------------------------------------- deformable-attention


def _deformable_attention_2d():
    def make():
        import torch
        from deformable_attention import DeformableAttention2D

        model = DeformableAttention2D(dim=16, dim_head=8, heads=2, downsample_factor=4, offset_scale=4, offset_kernel_size=6)
        return model, {"x": torch.randn(1, 16, 16, 16)}

    return make


def _deformable_attention_3d():
    def make():
        import torch
        from deformable_attention import DeformableAttention3D

        model = DeformableAttention3D(dim=8, dim_head=4, heads=2, downsample_factor=(2, 4, 4), offset_kernel_size=(4, 6, 6))
        return model, {"x": torch.randn(1, 8, 4, 8, 8)}

    return make


# --------------------------------------------------------------------------- oflibpytorch


def _oflib_apply_flow():
    """oflibpytorch's ``apply_flow``: warp a target by an optical-flow field referenced to the
    target (``ref='t'``), bilinear zeros align_corners=True."""

    def make():
        import oflibpytorch
        import torch

        class ApplyFlow(torch.nn.Module):
            def forward(self, image, flow):
                return oflibpytorch.apply_flow(flow, image, "t")

        return ApplyFlow(), {"image": torch.rand(2, 3, 12, 16), "flow": 2.0 * torch.randn(2, 2, 12, 16)}

    return make


CORPUS: tuple[CorpusModel, ...] = (
    CorpusModel("kornia-warp-affine", "kornia", "kornia", 4,
                "warp_affine bilinear zeros align_corners=True (AffineGrid reaches GridSample through Expand)",
                _kornia_warp_affine("bilinear", "zeros", True, (16, 20)), _batch("image", "matrix")),
    CorpusModel("kornia-warp-affine-nearest-border", "kornia", "kornia", 4,
                "warp_affine nearest border align_corners=False, output 12x24",
                _kornia_warp_affine("nearest", "border", False, (12, 24)), _batch("image", "matrix")),
    CorpusModel("kornia-warp-perspective", "kornia", "kornia", 4,
                "warp_perspective bilinear reflection align_corners=True",
                _kornia_warp_perspective("bilinear", "reflection", True), _batch("image", "homography")),
    CorpusModel("kornia-flow-warp", "kornia", "kornia", 4,
                "remap by an optical-flow field, bilinear border align_corners=True",
                _kornia_flow_warp(), _batch("image", "flow")),
    CorpusModel("monai-affine-transform", "monai", "monai", 4,
                "AffineTransform (affine_grid + grid_sample) bilinear zeros align_corners=False",
                _monai_affine_transform(), _batch("image", "theta")),
    CorpusModel("monai-warp-bilinear", "monai", "monai", 5,
                "Warp (3-D DDF) bilinear border", _monai_warp("bilinear", "border"), _batch("image", "ddf")),
    CorpusModel("monai-warp-nearest", "monai", "monai", 5,
                "Warp (3-D DDF) nearest zeros", _monai_warp("nearest", "zeros"), _batch("image", "ddf")),
    CorpusModel("monai-globalnet", "monai", "monai", 5,
                "GlobalNet affine registration + Warp bilinear border", _monai_globalnet(), _batch("moving", "fixed")),
    CorpusModel("deformable-attention-2d", "deformable-attention", "deformable_attention", 4,
                "DeformableAttention2D: grid_sample of keys/values at learned offsets, bilinear zeros",
                _deformable_attention_2d(), _batch("x")),
    CorpusModel("deformable-attention-3d", "deformable-attention", "deformable_attention", 5,
                "DeformableAttention3D: 3-D grid_sample at learned offsets, bilinear zeros",
                _deformable_attention_3d(), _batch("x")),
    CorpusModel("oflib-apply-flow", "oflibpytorch", "oflibpytorch", 4,
                "apply_flow (backward warp by an optical-flow field), bilinear zeros align_corners=True",
                _oflib_apply_flow(), _batch("image", "flow")),
)

#: The corpus by name.
BY_NAME: Mapping[str, CorpusModel] = MappingProxyType({m.name: m for m in CORPUS})
