"""Global pooling at the end of a trunk: the paper's average pooling, or the released code's
max + average (SPEC 2.5 item 8).

The authors' released code (model/backbone/bninception.py and model/backbone/resnet.py, class
``GMP_and_GAP``) replaces the final average pool of BN-Inception and ResNet-50 by the SUM of a
global max pool and a global average pool; its GoogLeNet keeps the average pool. Neither pool
has parameters, so the ImageNet weight files load whichever is chosen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iaa.errors import IAAError

# "avg": global average pooling (the paper, torchvision); "max_avg": global max + global
# average pooling, summed (the released code).
POOLINGS = ("avg", "max_avg")


class MaxAvgPool2d(nn.Module):
    """(N, C, H, W) float -> (N, C, 1, 1): per-channel max over H, W plus per-channel mean.

    Same output shape as ``nn.AdaptiveAvgPool2d(1)``, so it drops in where that pool was.
    Source: the released code's ``GMP_and_GAP`` (model/backbone/resnet.py).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_max_pool2d(x, 1) + F.adaptive_avg_pool2d(x, 1)


def global_pool(kind: str) -> nn.Module:
    """The global pooling module named ``kind`` (one of ``POOLINGS``); output (N, C, 1, 1).

    An unknown name is an IAAError (one line, listing the known ones)."""
    if kind == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "max_avg":
        return MaxAvgPool2d()
    raise IAAError(f"unknown pooling {kind!r}; known: {', '.join(POOLINGS)}")
