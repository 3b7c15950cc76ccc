"""GoogLeNet (Inception-v1) trunk from torchvision: the ImageNet classifier removed, 1024-d pool.

Parameter names are torchvision's, so ``googlenet-1378be20.pth`` loads once its classifier
(``fc``) and auxiliary heads (``aux1``, ``aux2``) are dropped. The declared input convention
is the usual ImageNet one (``IMAGENET_RGB``) whatever ``transform_input`` says:

- ``transform_input=True`` (default, the paper): as in torchvision's pretrained model, whose
  weights expect inputs scaled as (x - 0.5) / 0.5 for x in [0, 1]; the model converts the
  ImageNet-standardised input to that itself before ``conv1``. It is on for random init too,
  so a model rebuilt from a checkpoint computes the same function whatever it was
  initialised with.
- ``transform_input=False``: ``conv1`` sees the ImageNet-standardised input directly. This
  is the authors' released code (model/backbone/googlenet.py builds
  ``torchvision.models.GoogLeNet(init_weights=True)``, whose ``transform_input`` defaults to
  off, then loads the same weights file; SPEC 2.5 item 8). The weights load unchanged; they
  just see inputs scaled a little differently from what they were trained on.

Pooling stays global average pooling either way: the released code's GoogLeNet uses
torchvision's ``avgpool`` too (its max + average pooling is for BN-Inception and ResNet-50 only),
so this trunk takes no ``pooling`` argument and ``build_backbone`` refuses one.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import GoogLeNet

from iaa.models.inputs import IMAGENET_RGB


class GoogLeNetTrunk(GoogLeNet):
    """(N, 3, H, W) ImageNet-standardised RGB -> (N, 1024) pooled features.

    ``transform_input``: rescale to torchvision's (x - 0.5) / 0.5 before ``conv1`` (True,
    the paper) or feed ``conv1`` the standardised input as is (False, the released code)."""

    feature_dim = 1024
    input_spec = IMAGENET_RGB

    def __init__(self, transform_input: bool = True) -> None:
        super().__init__(aux_logits=False, transform_input=transform_input, init_weights=True)
        # The classifier (dropout + fc) goes; the embedding head replaces it.
        self.dropout = nn.Identity()  # type: ignore[assignment]
        self.fc = nn.Identity()  # type: ignore[assignment]
