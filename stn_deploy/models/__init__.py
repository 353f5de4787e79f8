"""Localisation nets, grid generators, the ``SpatialTransformer`` module and the model zoo.

Public API:
    ``ModelConfig``, ``build_model``, ``MODEL_NAMES``, ``model_table`` (name, parameter count,
    description), ``count_parameters``, ``spatial_transformers``;
    ``SpatialTransformer``, ``FCLocalisation``, ``ConvLocalisation``;
    generators ``AffineGenerator``, ``ProjectiveGenerator``, ``TPSGenerator``,
    ``AttentionGenerator``, ``Affine3DGenerator``, ``make_generator``, ``GENERATOR_KINDS``.
"""

from stn_deploy.models.generators import (
    GENERATOR_KINDS,
    Affine3DGenerator,
    AffineGenerator,
    AttentionGenerator,
    GridGenerator,
    ProjectiveGenerator,
    TPSGenerator,
    make_generator,
)
from stn_deploy.models.transformer import ConvLocalisation, FCLocalisation, Regression, SpatialTransformer
from stn_deploy.models.zoo import (
    MODEL_NAMES,
    ModelConfig,
    build_model,
    count_parameters,
    model_table,
    spatial_transformers,
)

__all__ = [
    "GENERATOR_KINDS",
    "MODEL_NAMES",
    "Affine3DGenerator",
    "AffineGenerator",
    "AttentionGenerator",
    "ConvLocalisation",
    "FCLocalisation",
    "GridGenerator",
    "ModelConfig",
    "ProjectiveGenerator",
    "Regression",
    "SpatialTransformer",
    "TPSGenerator",
    "build_model",
    "count_parameters",
    "make_generator",
    "model_table",
    "spatial_transformers",
]
