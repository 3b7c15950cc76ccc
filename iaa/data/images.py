"""Images listed in a manifest, as a torch Dataset, with the paper's transforms (SPEC 3).

Transforms stop at uint8 pixels: batches cross to the GPU at a quarter of the float size,
and each backbone's own input convention (``iaa.models.inputs``) is applied there.

torchvision is imported inside the functions that build its transforms, never at module
level: it costs ~1.5 s of import time in every ``iaa`` process, and the stages that preload
their images (synth: :func:`squash_image`, then tensor ops in ``iaa.data.augment``) never
need it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from iaa.data.datasets.image_checks import to_rgb
from iaa.errors import IAAError

if TYPE_CHECKING:  # annotations only: the runtime import is lazy (see the module docstring)
    from torchvision.transforms import v2

# SPEC 3 says "resize"; the released code resizes with PIL's Lanczos filter (SPEC 2.5 item 9).
# Name -> the PIL filter; torchvision's InterpolationMode of the same name resizes a PIL image
# with exactly this filter (its ``pil_modes_mapping``), antialiased when shrinking.
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
}


def pil_filter(name: str) -> Image.Resampling:
    """The PIL resampling filter called ``name`` ("bilinear" or "lanczos"); anything else is an
    IAAError naming the known ones. Checks a name without importing torchvision."""
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        known = ", ".join(INTERPOLATIONS)
        raise IAAError(f"unknown interpolation {name!r}; expected one of {known}") from None


def interpolation_mode(name: str) -> v2.InterpolationMode:
    """torchvision's resizing filter called ``name``: "bilinear" or "lanczos"; anything else is
    an IAAError."""
    pil_filter(name)  # the same check and message, before torchvision is imported
    from torchvision.transforms import v2

    return v2.InterpolationMode(name)


def squash(size: int, interpolation: str = "bilinear") -> v2.Resize:
    """Resize a PIL image to ``size`` x ``size`` whatever its aspect ratio (SPEC 3's 256 x 256)."""
    from torchvision.transforms import v2

    return v2.Resize((size, size), interpolation=interpolation_mode(interpolation), antialias=True)


def squash_image(image: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """``squash(size, interpolation)(image)`` without torchvision: the same PIL call.

    torchvision resizes a PIL image with ``image.resize((w, h), <PIL filter>)`` and returns
    it unchanged when it already has the requested size; both are repeated here, so the
    pixels are identical (tests/test_decoded_cache.py checks it). An unknown
    ``interpolation`` is an IAAError.
    """
    resample = pil_filter(interpolation)
    if image.size == (size, size):
        return image
    return image.resize((size, size), resample=resample)


# Every geometric step runs on the PIL image and ``ToImage`` comes last: PIL is what the
# released code resized with, it low-pass filters when shrinking (antialias) for both filters,
# and torchvision implements Lanczos for PIL images only.


def train_transform(
    image_size: int,
    crop_scale_min: float = 0.16,
    square_resize: int | None = None,
    interpolation: str = "bilinear",
) -> Callable:
    """SPEC 3 training transform of a PIL image -> uint8 tensor (3, image_size, image_size).

    With ``square_resize``: squash to square_resize x square_resize first (every dataset but
    CUB); without: crop the original image. Then RandomResizedCrop(image_size, scale=
    (crop_scale_min, 1), ratio=(3/4, 4/3)) and a horizontal flip with probability 1/2.
    """
    from torchvision.transforms import v2

    mode = interpolation_mode(interpolation)
    steps: list[Callable] = [squash(square_resize, interpolation)] if square_resize else []
    steps += [
        v2.RandomResizedCrop(
            image_size, scale=(crop_scale_min, 1.0), ratio=(3 / 4, 4 / 3), interpolation=mode, antialias=True
        ),
        v2.RandomHorizontalFlip(),
        v2.ToImage(),
    ]
    return v2.Compose(steps)


def eval_transform(
    image_size: int, resize: int, square: bool = True, interpolation: str = "bilinear"
) -> Callable:
    """SPEC 3 test transform of a PIL image -> uint8 tensor (3, image_size, image_size).

    ``square``: squash to resize x resize (the whole image is kept, as in training), then
    center-crop image_size. Not square (CUB): the shorter side to ``resize``, aspect kept,
    then center-crop image_size.
    """
    from torchvision.transforms import v2

    first = (
        squash(resize, interpolation)
        if square
        else v2.Resize(resize, interpolation=interpolation_mode(interpolation), antialias=True)
    )
    return v2.Compose([first, v2.CenterCrop(image_size), v2.ToImage()])


def load_rgb(path: Path) -> Image.Image:
    """The image at ``path`` as 8-bit RGB, by :func:`iaa.data.datasets.image_checks.to_rgb`: 16-bit
    images scaled to 8 bits (not clipped to white), alpha dropped. EXIF orientation is not
    applied: photos are read as stored, as torchvision's loaders read them (README, "Images").
    A missing or undecodable file is a one-line IAAError."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise IAAError(f"image listed in the manifest is missing: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise IAAError(f"image cannot be decoded: {path} ({err})") from None


class ImageDataset(Dataset):
    """(image tensor, index) pairs; labels stay with the caller, which knows their mapping."""

    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.paths[index])), index


def check_images_exist(paths: Sequence[Path]) -> None:
    """Fail before training on a dataset with missing files, naming the first and the count."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise IAAError(f"{len(missing)} image(s) listed in the manifest are missing, e.g. {missing[0]}")


def contiguous_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary class ids to 0..C-1; returns (mapped labels, the original id of each class)."""
    classes, mapped = np.unique(labels, return_inverse=True)
    return mapped.astype(np.int64), classes
