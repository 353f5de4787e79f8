"""Localisation nets, grid generators, the ``SpatialTransformer`` module and the model zoo.

Public API:
    ``MODEL_NAMES``, ``MODEL_DESCRIPTIONS``, ``TRANSFORMS`` (plain data, importable without torch);
    ``ModelConfig``, ``build_model``, ``model_table`` (name, parameter count, description),
    ``count_parameters``, ``spatial_transformers``;
    ``SpatialTransformer``, ``FCLocalisation``, ``ConvLocalisation``, ``Regression``;
    generators ``AffineGenerator``, ``ProjectiveGenerator``, ``TPSGenerator``,
    ``AttentionGenerator``, ``Affine3DGenerator``, ``GridGenerator``, ``make_generator``,
    ``GENERATOR_KINDS``.

Everything but the names is loaded on first access (PEP 562), so importing this package for
``MODEL_NAMES`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from stn_deploy.models.names import MODEL_DESCRIPTIONS, MODEL_NAMES, TRANSFORMS

_LAZY = {
    **dict.fromkeys(
        ("GENERATOR_KINDS", "Affine3DGenerator", "AffineGenerator", "AttentionGenerator", "GridGenerator",
         "ProjectiveGenerator", "TPSGenerator", "make_generator"),
        "generators",
    ),
    **dict.fromkeys(
        ("ConvLocalisation", "FCLocalisation", "Regression", "SpatialTransformer"), "transformer"
    ),
    **dict.fromkeys(
        ("ModelConfig", "build_model", "count_parameters", "model_table", "spatial_transformers"), "zoo"
    ),
}

__all__ = ["MODEL_DESCRIPTIONS", "MODEL_NAMES", "TRANSFORMS", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
