"""Backbones and the embedding model."""

from iaa.models.backbone import (
    BACKBONES,
    SynthConvNet,
    architecture_kwargs,
    backbone_options,
    build_backbone,
    freeze_batchnorm,
)
from iaa.models.embedder import HEAD_INITS, EmbeddingModel, load_model, save_model
from iaa.models.inputs import InputSpec, input_spec
from iaa.models.pooling import POOLINGS

__all__ = [
    "BACKBONES",
    "HEAD_INITS",
    "POOLINGS",
    "EmbeddingModel",
    "InputSpec",
    "SynthConvNet",
    "architecture_kwargs",
    "backbone_options",
    "build_backbone",
    "freeze_batchnorm",
    "input_spec",
    "load_model",
    "save_model",
]
