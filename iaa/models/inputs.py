"""What each backbone expects as input, and the conversion from the data pipeline's batches.

The data pipeline produces float RGB batches in [0, 1], shape (N, 3, H, W), the same for
every backbone; ``backbone.input_spec.convert(x)`` turns such a batch into what that
backbone's weights were trained on, on whatever device the batch is on:
- torchvision models (and synth): RGB, standardised with the ImageNet mean and std;
- BN-Inception (Caffe weights): BGR, 0-255, minus the per-channel mean [104, 117, 128].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """Input convention of a backbone. ``mean``/``std`` are in the backbone's channel order
    and units: after the optional RGB->BGR swap and the optional x255 scaling."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False
    scale_255: bool = False

    def affine(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(scale, shift) per output channel: ``out[c] = in[src(c)] * scale[c] + shift[c]``."""
        k = 255.0 if self.scale_255 else 1.0
        scale = tuple(k / s for s in self.std)
        shift = tuple(-m / s for m, s in zip(self.mean, self.std, strict=True))
        return scale, shift

    def convert(self, x: torch.Tensor) -> torch.Tensor:
        """Float RGB in [0, 1], (N, 3, H, W) -> this backbone's input (same device and dtype)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, H, W) batch, got shape {tuple(x.shape)}")
        scale, shift = self.affine()
        a = torch.tensor(scale, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        b = torch.tensor(shift, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        if self.bgr:
            x = x.flip(1)
        return torch.addcmul(b, x, a)


IMAGENET_RGB = InputSpec(mean=IMAGENET_MEAN, std=IMAGENET_STD)
CAFFE_BGR = InputSpec(mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0), bgr=True, scale_255=True)


def input_spec(module: nn.Module) -> InputSpec:
    """The input convention a backbone declares (``input_spec`` attribute)."""
    spec = getattr(module, "input_spec", None)
    if not isinstance(spec, InputSpec):
        raise TypeError(f"{type(module).__name__} declares no input_spec")
    return spec
