"""What :func:`iaa.train.train_stage` sets up before its loop: the optimiser, mixed precision and
the compiled module the training step calls."""

from __future__ import annotations

import logging

import torch

from iaa.config import TrainSettings
from iaa.models.embedder import EmbeddingModel

log = logging.getLogger(__name__)


def build_optimizer(
    model: EmbeddingModel, settings: TrainSettings, lr: float, loss_fn: torch.nn.Module | None = None
) -> torch.optim.Optimizer:
    """Adam; the embedding layer (the head) learns ``embedding_lr_multiplier`` times faster
    (1: one parameter group's rate for all, as the released code). The loss's own parameters
    (proxies), if any, are a last group at ``loss_lr`` (pml's advice: proxies want a larger
    rate than the network); the same weight decay and the same lr schedule apply to them."""
    groups = [{"params": model.head.parameters(), "lr": lr * settings.embedding_lr_multiplier}]
    if model.trunk is not None:
        groups.append({"params": model.trunk.parameters(), "lr": lr})
    loss_params = list(loss_fn.parameters()) if isinstance(loss_fn, torch.nn.Module) else []
    if loss_params:
        groups.append({"params": loss_params, "lr": settings.loss_lr})
    return torch.optim.Adam(groups, lr=lr, weight_decay=settings.weight_decay)


def compiled(model: EmbeddingModel, settings: TrainSettings, device: torch.device) -> torch.nn.Module:
    """The module the training step calls: ``torch.compile(model)`` on CUDA when
    ``settings.compile`` (the same parameters, so checkpoints keep their keys), else the model."""
    if not settings.compile:
        return model
    if device.type != "cuda":
        log.info("compile: ignored on %s (CUDA only)", device)
        return model
    return torch.compile(model)  # type: ignore[return-value]


def precision(settings: TrainSettings, device: torch.device) -> tuple[bool, torch.dtype]:
    """Mixed precision on CUDA when ``amp``: bfloat16 where the GPU has it (no loss scaling
    needed), else float16 with a GradScaler. Off on CPU, where it would only slow things."""
    if not settings.amp or device.type != "cuda":
        return False, torch.float32
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
