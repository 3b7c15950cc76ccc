"""GoogLeNet (Inception-v1) trunk from torchvision: the ImageNet classifier removed, 1024-d pool.

Parameter names are torchvision's, so ``googlenet-1378be20.pth`` loads once its classifier
(``fc``) and auxiliary heads (``aux1``, ``aux2``) are dropped. ``transform_input`` is on, as
in torchvision's pretrained model: those weights expect inputs scaled as (x - 0.5) / 0.5,
and the model converts ImageNet-standardised input to that itself, so the declared input
convention is the usual ImageNet one. It is on for random init too, so a model rebuilt from
a checkpoint computes the same function whatever it was initialised with.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import GoogLeNet

from iaa.models.inputs import IMAGENET_RGB


class GoogLeNetTrunk(GoogLeNet):
    """(N, 3, H, W) ImageNet-standardised RGB -> (N, 1024) pooled features."""

    feature_dim = 1024
    input_spec = IMAGENET_RGB

    def __init__(self, transform_input: bool = True) -> None:
        super().__init__(aux_logits=False, transform_input=transform_input, init_weights=True)
        # The classifier (dropout + fc) goes; the embedding head replaces it.
        self.dropout = nn.Identity()  # type: ignore[assignment]
        self.fc = nn.Identity()  # type: ignore[assignment]
