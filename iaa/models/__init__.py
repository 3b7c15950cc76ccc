"""Backbones and the embedding model."""

from iaa.models.backbone import SynthConvNet, build_backbone, freeze_batchnorm
from iaa.models.embedder import EmbeddingModel, load_model, save_model

__all__ = [
    "EmbeddingModel",
    "SynthConvNet",
    "build_backbone",
    "freeze_batchnorm",
    "load_model",
    "save_model",
]
