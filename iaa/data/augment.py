"""Batched image transforms on tensors: the paper's train/eval transforms for a whole batch.

Used when a dataset's images are preloaded into memory (small images such as synth's,
squashed to resize x resize): one ``roi_align`` call crops, rescales and flips a batch,
instead of a PIL round trip per image. :func:`random_resized_crop_flip` draws its crops from
torchvision's RandomResizedCrop distribution and flips with probability 1/2
(``iaa.data.device_augment``, which also says how its pixels differ from torchvision's).
"""

from __future__ import annotations

import torch

from iaa.data.device_augment import random_resized_crop_flip_device


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
    """RandomResizedCrop(size, scale, ratio) + RandomHorizontalFlip of a batch of same-size images
    (uint8, or float in [0, 1]) -> float32 (B, 3, size, size) in [0, 1], on the images' device.

    Boxes from torchvision's own distribution (:func:`iaa.data.device_augment.sample_crop_boxes`),
    cropped and resized with one ``roi_align`` call (:func:`iaa.data.device_augment.crop_resize`).
    """
    b, _, h, w = images.shape
    heights = torch.full((b,), h, device=images.device)
    widths = torch.full((b,), w, device=images.device)
    return random_resized_crop_flip_device(
        images, heights, widths, size, scale=scale, ratio=ratio, generator=generator
    )


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Center crop of a batch already resized to the eval resolution (dtype kept)."""
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]
