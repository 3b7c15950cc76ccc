"""ResNet-50 trunk from torchvision: the ImageNet classifier removed, 2048-d pool.

Parameter names are torchvision's, so ``resnet50-0676ba61.pth`` (the V1 weights) loads once
its classifier (``fc``) is dropped. Input: ImageNet-standardised RGB.

``pooling`` chooses the global pool after ``layer4`` (torchvision's ``avgpool`` slot):
``"avg"`` (the paper, torchvision) or ``"max_avg"``, max + average pooling summed, as the
authors' released code does (model/backbone/resnet.py, SPEC 2.5 item 8; pooling.py). The pool
has no parameters, so the weights file loads either way.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from iaa.models.inputs import IMAGENET_RGB
from iaa.models.pooling import global_pool


class ResNet50Trunk(ResNet):
    """(N, 3, H, W) ImageNet-standardised RGB -> (N, 2048) pooled features.

    ``pooling``: ``"avg"`` or ``"max_avg"`` (see pooling.py); an unknown name is an IAAError.
    """

    feature_dim = 2048
    input_spec = IMAGENET_RGB

    def __init__(self, pooling: str = "avg") -> None:
        final_pool = global_pool(pooling)  # first: a bad name fails before the network is built
        super().__init__(Bottleneck, [3, 4, 6, 3])
        # torchvision's forward flattens whatever ``avgpool`` returns, (N, 2048, 1, 1) here.
        self.avgpool = final_pool  # type: ignore[assignment]
        self.fc = nn.Identity()  # type: ignore[assignment]
