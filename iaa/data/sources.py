"""What a model is fed: images from a manifest, or backbone features from a Parquet file.

Both sources expose the same two loaders, so training, global estimation and export run
one code path whatever the training mode:
- ``train_batches(sampler)``: (inputs, row indices) for each index batch the sampler yields,
  with training transforms;
- ``eval_batches(batch_size)``: (inputs, row indices) over all rows in order, eval transforms.

Image batches are pixels (uint8, or float in [0, 1] after batched augmentation);
:func:`model_input` moves a batch to the device and applies the model's input convention.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader
from tqdm import tqdm

from iaa.data.augment import center_crop, random_resized_crop_flip, to_unit
from iaa.data.decoded_cache import cached_decode
from iaa.data.images import (
    ImageDataset,
    check_images_exist,
    eval_transform,
    load_rgb,
    pil_filter,
    squash_image,
    train_transform,
)
from iaa.io import EmbeddingTable, Manifest
from iaa.models.inputs import InputSpec

log = logging.getLogger(__name__)


class FeatureSource:
    """Rows of a features table (head mode): no transforms, everything in memory."""

    def __init__(self, table: EmbeddingTable) -> None:
        self.table = table
        self.inputs = torch.from_numpy(np.ascontiguousarray(table.embeddings))
        self.labels = table.labels
        self.splits = table.splits
        self.paths = table.paths

    @property
    def input_dim(self) -> int:
        return int(self.inputs.shape[1])

    def __len__(self) -> int:
        return len(self.labels)

    def train_batches(self, sampler: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in sampler:
            yield self.inputs[idx], idx

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(self)))
            yield self.inputs[idx], idx


@dataclass
class ImageOptions:
    """How images become model inputs (SPEC 3); sizes in pixels.

    ``square``: every pass squashes the image to resize x resize first (train: random crop
    of that; eval: center crop of that); not square (CUB): train crops the original image,
    eval resizes the shorter side to ``resize``. ``interpolation``: "bilinear" or "lanczos".
    ``cache_dir``: where preloaded images are cached once decoded (``iaa.data.decoded_cache``;
    the stages pass ``decoded/`` beside the manifest); None decodes every time.
    """

    image_size: int
    resize: int
    crop_scale_min: float = 0.16
    workers: int = 0
    square: bool = True
    interpolation: str = "bilinear"
    # Decode every image once into memory (squashed to resize x resize) and augment whole
    # batches with tensor ops; "auto" does so when that takes under PRELOAD_LIMIT bytes.
    preload: bool | str = "auto"
    cache_dir: Path | None = None


PRELOAD_LIMIT = 1 << 30


class ImageSource:
    """Images of some manifest rows (finetune mode, extraction)."""

    def __init__(self, manifest: Manifest, splits: tuple[str, ...], options: ImageOptions) -> None:
        frame = manifest.split(*splits)
        self.labels = frame["label"].to_numpy(np.int64)
        self.splits = frame["split"].to_numpy(object)
        self.paths = frame["path"].to_numpy(object)
        self.files = manifest.absolute_paths(frame)
        check_images_exist(self.files)
        self.options = options
        pil_filter(options.interpolation)  # an unknown filter fails before any decoding
        preload = options.preload
        if preload == "auto":
            preload = len(self.files) * 3 * options.resize**2 <= PRELOAD_LIMIT
        if preload and not options.square and not _all_square(self.files):
            # Preloaded images are squashed to resize x resize; without ``square`` training
            # crops the original, which only matches when every image is square already.
            log.info("not preloading %d images: training crops the originals (square off)", len(self.files))
            preload = False
        o = options
        self.images = _decode_all(self.files, o.resize, o.interpolation, o.cache_dir) if preload else None

    def __len__(self) -> int:
        return len(self.labels)

    def _loader(self, dataset: ImageDataset, **kwargs: object) -> DataLoader:
        workers = self.options.workers
        return DataLoader(
            dataset,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
            **kwargs,  # type: ignore[arg-type]
        )

    def train_batches(self, sampler: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        o = self.options
        if self.images is not None:
            for idx in sampler:
                yield random_resized_crop_flip(self.images[idx], o.image_size, (o.crop_scale_min, 1.0)), idx
            return
        square_resize = o.resize if o.square else None
        transform = train_transform(o.image_size, o.crop_scale_min, square_resize, o.interpolation)
        dataset = ImageDataset(self.files, transform)
        batches = [b.tolist() for b in sampler]
        for x, idx in self._loader(dataset, batch_sampler=batches):
            yield x, idx

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        o = self.options
        if self.images is not None:
            for start in range(0, len(self), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(self)))
                yield center_crop(self.images[idx], o.image_size), idx
            return
        dataset = ImageDataset(self.files, eval_transform(o.image_size, o.resize, o.square, o.interpolation))
        yield from self._loader(dataset, batch_size=batch_size, shuffle=False)


def _all_square(files: list[Path]) -> bool:
    """Whether every image is square, from the file headers (no pixels decoded)."""
    for path in files:
        try:
            with Image.open(path) as img:
                if img.width != img.height:
                    return False
        except (OSError, UnidentifiedImageError):
            return False  # let the DataLoader path name the bad file
    return True


def _decode_all(
    files: list[Path], resize: int, interpolation: str, cache_dir: Path | None = None
) -> torch.Tensor:
    """All images as one uint8 tensor (N, 3, resize, resize), each squashed to resize x resize.

    That is the first step of both SPEC 3 transforms (``images.squash``, the same filter), so
    a center crop of it is exactly the eval transform and a random crop of it the train one.
    Decoded with PIL alone (``images.squash_image``: the same pixels as torchvision's
    ``squash``, without importing torchvision). With ``cache_dir`` the array is read from
    there when a job already decoded the same files, and written there otherwise
    (``iaa.data.decoded_cache``: the same bytes either way).
    """

    def decode() -> np.ndarray:
        out = np.empty((len(files), 3, resize, resize), dtype=np.uint8)
        for i, path in enumerate(tqdm(files, desc="decode", leave=False, mininterval=5)):
            # (H, W, 3) -> (3, H, W), as torchvision's ToImage lays out a PIL image
            out[i] = np.asarray(squash_image(load_rgb(path), resize, interpolation)).transpose(2, 0, 1)
        return out

    images = decode() if cache_dir is None else cached_decode(files, resize, interpolation, cache_dir, decode)
    return torch.from_numpy(images)


def model_input(
    x: torch.Tensor, spec: InputSpec | None, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    """A batch from a source -> the model's input on ``device``.

    Features (``spec`` None) pass through; pixels become float in [0, 1] on the device (uint8
    crosses the bus, not float) and then take the backbone's convention (``spec.convert``).
    """
    x = x.to(device, non_blocking=True)
    if spec is None:
        return x
    x = spec.convert(to_unit(x))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def place_model(model: torch.nn.Module, device: torch.device, channels_last: bool = False) -> None:
    """Move ``model`` to ``device``, its convolution weights channels-last if asked."""
    if channels_last:
        model.to(device, memory_format=torch.channels_last)
    else:
        model.to(device)


def model_forward(
    model: torch.nn.Module,
    x: torch.Tensor,
    device: torch.device,
    *,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Raw float32 outputs of ``model`` for a source batch ``x``: its input convention
    (``input_spec``, None for an embedding head on features), optionally under autocast."""
    inputs = model_input(x, getattr(model, "input_spec", None), device, channels_last)
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model(inputs)
    return out.float()


@torch.no_grad()
def embed_all(
    model: torch.nn.Module,
    source: FeatureSource | ImageSource,
    batch_size: int,
    device: torch.device,
    channels_last: bool = False,
) -> torch.Tensor:
    """Raw model outputs for every row of ``source``, in row order (eval mode, no grad).

    ``model`` is an EmbeddingModel or a bare backbone (see :func:`model_forward`).
    """
    was_training = model.training
    model.eval()
    chunks = [
        model_forward(model, x, device, channels_last=channels_last).cpu()
        for x, _ in source.eval_batches(batch_size)
    ]
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)
