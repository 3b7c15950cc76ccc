"""Batched image transforms on tensors: the paper's train/eval transforms for a whole batch.

Used when a dataset's images are preloaded into memory (small images such as synth's):
one ``grid_sample`` call crops, rescales and flips a batch, instead of a PIL round trip
per image. Semantics follow torchvision's RandomResizedCrop + RandomHorizontalFlip:
a crop covering ``scale`` of the image area with aspect ratio in ``ratio`` (clamped to
fit), resized to ``size``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,3,H,W) -> float32 in [0, 1]; float input is taken to be in [0, 1] already."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def random_resized_crop_flip(
    images: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.16, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop (area fraction in ``scale``, aspect in ``ratio``), resize to ``size``, random flip."""
    b = images.shape[0]
    g = dict(generator=generator)
    area = torch.empty(b).uniform_(*scale, **g)
    log_ratio = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), **g)
    aspect = log_ratio.exp()
    # Crop width/height as fractions of the image side; clamp so the crop fits.
    w = (area * aspect).sqrt().clamp(max=1.0)
    h = (area / aspect).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, **g) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, **g) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, **g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    x = to_unit(images)  # [0, 1]: the backbone's standardisation is affine, so it commutes
    grid = F.affine_grid(theta.to(x.device), [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Center crop of a batch already resized to the eval resolution (dtype kept)."""
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]
