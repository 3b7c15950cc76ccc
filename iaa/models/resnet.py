"""ResNet-50 trunk from torchvision: the ImageNet classifier removed, 2048-d pool.

Parameter names are torchvision's, so ``resnet50-0676ba61.pth`` (the V1 weights) loads once
its classifier (``fc``) is dropped. Input: ImageNet-standardised RGB.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from iaa.models.inputs import IMAGENET_RGB


class ResNet50Trunk(ResNet):
    """(N, 3, H, W) ImageNet-standardised RGB -> (N, 2048) pooled features."""

    feature_dim = 2048
    input_spec = IMAGENET_RGB

    def __init__(self) -> None:
        super().__init__(Bottleneck, [3, 4, 6, 3])
        self.fc = nn.Identity()  # type: ignore[assignment]
