"""Backbones. ``synth``: a small CNN that trains in seconds on two CPU cores.

The paper's backbones (GoogLeNet, BN-Inception, ResNet-50) come with the real benchmarks.
The synth backbone is four conv-BN-ReLU stages (width, 2w, 4w, 8w channels) with max
pooling between them and global average pooling at the end: at 32 px it is ~4 M
multiply-adds per image for width 16, so a CPU core pushes thousands of images a second,
yet BatchNorm is there to be frozen exactly as the paper's protocol freezes it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from iaa.errors import IAAError


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SynthConvNet(nn.Module):
    """Backbone for the built-in benchmark; ``feature_dim`` = 8 * width."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _stage(3, w),
            nn.MaxPool2d(2),
            _stage(w, 2 * w),
            nn.MaxPool2d(2),
            _stage(2 * w, 4 * w),
            nn.MaxPool2d(2),
            _stage(4 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = 8 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build a backbone by name; it exposes ``feature_dim``."""
    if name == "synth":
        return SynthConvNet(**kwargs)
    raise IAAError(f"unknown backbone {name!r}; known: synth")


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics frozen), per SPEC 3."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def save_backbone(path: str, backbone: nn.Module, name: str, kwargs: dict[str, Any], **extra: Any) -> None:
    from iaa.io import atomic_path

    payload = {"backbone": name, "backbone_kwargs": kwargs, "state_dict": backbone.state_dict(), **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_backbone(path: str) -> tuple[nn.Module, str, dict[str, Any]]:
    """Load a backbone written by ``pretrain``: returns (module, name, constructor kwargs)."""
    from iaa.io import require_file

    p = require_file(path, "backbone checkpoint")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
        backbone = build_backbone(payload["backbone"], **payload["backbone_kwargs"])
        backbone.load_state_dict(payload["state_dict"])
    except IAAError:
        raise
    except Exception as err:  # truncated file, foreign checkpoint, mismatched shapes
        raise IAAError(f"cannot load backbone checkpoint {p}: {err}") from None
    return backbone, payload["backbone"], payload["backbone_kwargs"]
