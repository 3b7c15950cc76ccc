"""Backbones and the embedding model."""

from iaa.models.backbone import BACKBONES, SynthConvNet, architecture_kwargs, build_backbone, freeze_batchnorm
from iaa.models.embedder import EmbeddingModel, load_model, save_model
from iaa.models.inputs import InputSpec, input_spec

__all__ = [
    "BACKBONES",
    "EmbeddingModel",
    "InputSpec",
    "SynthConvNet",
    "architecture_kwargs",
    "build_backbone",
    "freeze_batchnorm",
    "input_spec",
    "load_model",
    "save_model",
]
