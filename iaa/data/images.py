"""Images listed in a manifest, as a torch Dataset, with the paper's transforms (SPEC 3).

Transforms stop at uint8 pixels: batches cross to the GPU at a quarter of the float size,
and each backbone's own input convention (``iaa.models.inputs``) is applied there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from iaa.errors import IAAError


def train_transform(
    image_size: int, crop_scale_min: float = 0.16, square_resize: int | None = None
) -> Callable:
    """[Resize to square_resize x square_resize], RandomResizedCrop (scale crop_scale_min-1,
    ratio 3/4-4/3) and horizontal flip; uint8 (3, image_size, image_size)."""
    steps: list[Callable] = [v2.ToImage()]
    if square_resize:  # SPEC 3: 256 x 256 first, except on CUB
        steps.append(v2.Resize((square_resize, square_resize), antialias=True))
    steps += [
        v2.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    return v2.Compose(steps)


def eval_transform(image_size: int, resize: int) -> Callable:
    """Resize the shorter side to ``resize``, then center-crop ``image_size``; uint8."""
    return v2.Compose([v2.ToImage(), v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)])


def load_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
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
