"""The model zoo: ``ModelConfig``, the one registry of model names, ``build_model``.

Models are the paper's MNIST families (Table 1) scaled down for CPU training in seconds:
the paper's CNN has two 9x9 conv layers of 32 and 64 filters and its FCN 128-unit layers;
ours use 5x5 convs of 8 and 16 filters. Every model returns logits [N, num_classes].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from stn_deploy.errors import UserError
from stn_deploy.models.generators import GridGenerator, make_generator
from stn_deploy.models.names import MODEL_DESCRIPTIONS, MODEL_NAMES
from stn_deploy.models.transformer import (
    ConvLocalisation,
    FCLocalisation,
    Regression,
    SpatialTransformer,
    _flat_features,
)
from stn_deploy.schema import SamplerSettings


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (stored in checkpoints).

    Attributes:
        name: a name from ``MODEL_NAMES``.
        in_channels: input channels; default 1.
        in_size: input (H, W) in pixels; default (28, 28). Our datasets: R/P/E 28x28,
            RTS 42x42, cluttered 60x60.
        num_classes: classifier outputs; default 10.
        sampler: the transformers' ``F.grid_sample`` settings.
        tps_grid: TPS control points (rows, columns); default (4, 4) as in the paper.
        out_size: the transformers' output (H, W); ``None`` (default) = ``in_size``.
    """

    name: str
    in_channels: int = 1
    in_size: tuple[int, int] = (28, 28)
    num_classes: int = 10
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    tps_grid: tuple[int, int] = (4, 4)
    out_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise UserError(f"unknown model {self.name!r}; choose from {', '.join(MODEL_NAMES)}")
        # Accept lists (from JSON) but store tuples so the config stays hashable.
        object.__setattr__(self, "in_size", _pair(self.in_size, "in_size"))
        object.__setattr__(self, "tps_grid", _pair(self.tps_grid, "tps_grid"))
        if self.out_size is not None:
            object.__setattr__(self, "out_size", _pair(self.out_size, "out_size"))
        if isinstance(self.sampler, dict):
            object.__setattr__(self, "sampler", SamplerSettings(**self.sampler))
        if self.in_channels < 1 or self.num_classes < 1:
            raise UserError("in_channels and num_classes must be positive")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input."""
        return (self.in_channels, *self.in_size)

    @property
    def transformer_size(self) -> tuple[int, int]:
        """(H, W) of the transformers' output."""
        return self.out_size or self.in_size

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); ``from_dict`` inverts it."""
        d = asdict(self)
        for key in ("in_size", "tps_grid", "out_size"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Rebuild a config; raises UserError for a malformed or unknown one."""
        if not isinstance(d, dict) or "name" not in d:
            raise UserError("model config is not a dict with a 'name'")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise UserError(f"model config has unknown keys: {', '.join(sorted(unknown))}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise UserError(f"malformed model config: {exc}") from None


def _pair(value: Sequence[int], what: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be two integers, got {value!r}") from None
    if a < 1 or b < 1:
        raise UserError(f"{what} must be positive, got {value!r}")
    return (a, b)


class CNNClassifier(nn.Module):
    """Baseline CNN: conv 5x5 (8) -> ReLU -> maxpool 2 -> conv 5x5 (16) -> ReLU -> maxpool 2
    -> FC 64 -> ReLU -> FC num_classes."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: tuple[int, int] = (8, 16)) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(int(input_shape[0]), c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(_flat_features(self.features, input_shape), 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class FCNClassifier(nn.Module):
    """Baseline fully connected net: flatten -> FC 128 -> ReLU -> FC 128 -> ReLU -> FC num_classes."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        n_in = 1
        for d in input_shape:
            n_in *= int(d)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class STNet(nn.Module):
    """A spatial transformer at the input, followed by a classifier (the paper's ST-CNN/ST-FCN)."""

    def __init__(self, transformer: SpatialTransformer, classifier: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.transformer(x))


class MultiSTNet(nn.Module):
    """Two spatial transformers in parallel on the input, each feeding its own conv branch;
    the branches' features are concatenated and classified (the paper's 2xST-CNN for CUB and
    multi-transformer SVHN models, scaled down)."""

    def __init__(self, transformers: Sequence[SpatialTransformer], branches: Sequence[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.transformers = nn.ModuleList(transformers)
        self.branches = nn.ModuleList(branches)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        feats = [branch(st(x)) for st, branch in zip(self.transformers, self.branches)]
        return self.head(torch.cat(feats, dim=1))


class TutorialSTN(nn.Module):
    """The PyTorch "Spatial Transformer Networks" tutorial model.

    Localisation: conv 1->8 k7, maxpool 2, ReLU, conv 8->10 k5, maxpool 2, ReLU, FC ->32, ReLU,
    FC 32->6 (identity). Classifier: conv 10 k5, maxpool, ReLU, conv 20 k5, dropout2d, maxpool,
    ReLU, FC ->50, ReLU, dropout, FC 50->num_classes. Returns logits (the tutorial returns
    log-softmax; the argmax is the same). FC input sizes follow ``in_size`` (90 and 320 at 28x28).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        generator = make_generator("affine")
        body = nn.Sequential(
            nn.Conv2d(config.in_channels, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
            nn.Flatten(),
        )
        loc = _TutorialLocalisation(body, _flat_features(body, config.input_shape), generator)
        self.transformer = SpatialTransformer(loc, generator, config.transformer_size, config.sampler)
        self.features = nn.Sequential(
            nn.Conv2d(config.in_channels, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(10, 20, kernel_size=5), nn.Dropout2d(), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(),
        )
        n_feat = _flat_features(self.features, (config.in_channels, *config.transformer_size))
        self.head = nn.Sequential(
            nn.Linear(n_feat, 50), nn.ReLU(), nn.Dropout(), nn.Linear(50, config.num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(self.transformer(x)))


class _TutorialLocalisation(nn.Module):
    def __init__(self, body: nn.Module, n_feat: int, generator: GridGenerator) -> None:
        super().__init__()
        self.body = body
        self.fc = nn.Sequential(nn.Linear(n_feat, 32), nn.ReLU(True))
        self.regression = Regression(32, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.regression(self.fc(self.body(x)))


def _transformer(config: ModelConfig, transform: str, localisation: str) -> SpatialTransformer:
    generator = make_generator(transform, config.tps_grid)
    if localisation == "conv":
        loc: nn.Module = ConvLocalisation(config.input_shape, generator)
    else:
        loc = FCLocalisation(config.input_shape, generator)
    return SpatialTransformer(loc, generator, config.transformer_size, config.sampler)


def _st_input(config: ModelConfig) -> tuple[int, int, int]:
    return (config.in_channels, *config.transformer_size)


def _build_st(classifier: str, transform: str) -> Callable[[ModelConfig], nn.Module]:
    def build(config: ModelConfig) -> nn.Module:
        if classifier == "cnn":
            return STNet(_transformer(config, transform, "conv"), CNNClassifier(_st_input(config), config.num_classes))
        return STNet(_transformer(config, transform, "fc"), FCNClassifier(_st_input(config), config.num_classes))

    return build


def _build_multi(config: ModelConfig) -> nn.Module:
    transformers = [_transformer(config, "affine", "conv") for _ in range(2)]
    branches = [CNNClassifier(_st_input(config), config.num_classes).features for _ in range(2)]
    n_feat = 2 * _flat_features(branches[0], _st_input(config))
    head = nn.Sequential(nn.Linear(n_feat, 64), nn.ReLU(), nn.Linear(64, config.num_classes))
    return MultiSTNet(transformers, branches, head)


def _builder(name: str) -> Callable[[ModelConfig], nn.Module]:
    """The builder of a name from ``MODEL_NAMES`` (the names' own structure picks it)."""
    if name == "cnn":
        return lambda c: CNNClassifier(c.input_shape, c.num_classes)
    if name == "fcn":
        return lambda c: FCNClassifier(c.input_shape, c.num_classes)
    if name == "st-cnn-multi":
        return _build_multi
    if name == "tutorial-stn":
        return TutorialSTN
    family, transform = name.split("-", 2)[1:]  # "st-cnn-tps" -> ("cnn", "tps")
    return _build_st(family, transform)


def build_model(config: ModelConfig) -> nn.Module:
    """Build a freshly initialised model (identity transformers) from its config."""
    return _builder(config.name)(config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_table(in_size: tuple[int, int] = (28, 28), in_channels: int = 1, num_classes: int = 10) -> list[tuple[str, int, str]]:
    """(name, parameter count, description) of every registered model at the given input size."""
    rows = []
    for name in MODEL_NAMES:
        config = ModelConfig(name, in_channels=in_channels, in_size=in_size, num_classes=num_classes)
        rows.append((name, count_parameters(build_model(config)), MODEL_DESCRIPTIONS[name]))
    return rows


def spatial_transformers(model: nn.Module) -> list[SpatialTransformer]:
    """The model's spatial transformers, in module order."""
    return [m for m in model.modules() if isinstance(m, SpatialTransformer)]
