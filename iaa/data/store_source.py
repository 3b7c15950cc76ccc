"""Images from the decoded store, augmented on the model's device (``train.loader: cache``).

The same interface as :class:`iaa.data.sources.ImageSource` (``labels``, ``splits``,
``train_batches``, ``eval_batches``), fed differently:

- rows are gathered from the memory-mapped store (:class:`iaa.data.decoded_store.DecodedStore`)
  by a background thread into pinned memory and copied to the device asynchronously
  (:class:`iaa.data.cache_loader.CacheLoader`); no worker processes;
- the train transform (RandomResizedCrop with torchvision's distribution + horizontal flip)
  and the eval transform (squash or shorter side to ``resize``, centre crop) run on the
  whole batch on the device (:mod:`iaa.data.device_augment`, one ``roi_align`` call).

Batches come out as float32 in [0, 1] on the device; :func:`iaa.data.sources.model_input`
then applies the backbone's input convention. The device's default generator draws the
crops (seeded by :func:`iaa.seeding.seed_everything`), so, as with DataLoader workers, a
resumed run does not replay the exact crops of an uninterrupted one.

Where a recipe asks for Lanczos resizing, the store's squash uses it (PIL, as the JPEG path),
but the crop is resized bilinearly by ``roi_align``: see docs/recipes.md.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from iaa.data.cache_loader import CacheLoader
from iaa.data.decoded_store import DecodedStore
from iaa.data.device_augment import eval_crop, random_resized_crop_flip_device
from iaa.data.sources import ImageOptions


class StoreSource:
    """The images of manifest rows ``rows`` (positions in the manifest = store rows)."""

    def __init__(
        self,
        store: DecodedStore,
        rows: np.ndarray,
        labels: np.ndarray,
        splits: np.ndarray,
        options: ImageOptions,
        device: torch.device,
    ) -> None:
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.splits = np.asarray(splits, dtype=object)
        self.options = options
        self.device = device

    def __len__(self) -> int:
        return len(self.rows)

    def _batches(self, positions: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, ...]]:
        """(images uint8 on the device, heights, widths, positions) for each batch of positions."""
        order: collections.deque[torch.Tensor] = collections.deque()

        def store_rows() -> Iterator[np.ndarray]:
            for idx in positions:  # the loader reads ahead: remember which positions come next
                order.append(idx)
                yield self.rows[idx.numpy()]

        for images, heights, widths, _ in CacheLoader(self.store, store_rows(), self.device):
            idx = order.popleft()
            yield images.contiguous(), heights.to(self.device), widths.to(self.device), idx

    def train_batches(self, sampler: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        o = self.options
        scale = (o.crop_scale_min, 1.0)
        for images, h, w, idx in self._batches(sampler):
            yield random_resized_crop_flip_device(images, h, w, o.image_size, scale=scale), idx

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        o = self.options
        chunks = [torch.arange(s, min(s + batch_size, len(self))) for s in range(0, len(self), batch_size)]
        for images, h, w, idx in self._batches(chunks):
            yield eval_crop(images, h, w, resize=o.resize, size=o.image_size, square=o.square), idx
