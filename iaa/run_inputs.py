"""What a training run reads and trains: its data sources and its model (``iaa train``).

- :func:`build_sources`: the train rows, the monitored split (``train.val_split``, its R@1
  logged for the curves) and the rows the model-selection rule reads (:mod:`iaa.selection`):
  the monitored split for ``best_test``, train classes held out of training for ``best_val``.
- :func:`build_model`: an embedding head on features (head mode) or a backbone + head
  (finetune mode) with the recipe's model options (SPEC 2.5 items 7, 8).
- :func:`samples_per_class`: m, with the released code's rule for large train sets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iaa import checkpoints
from iaa.config import TrainSettings
from iaa.data.decoded_cache import default_cache_dir
from iaa.data.decoded_store import DecodedStore
from iaa.data.sources import FeatureSource, ImageOptions, ImageSource
from iaa.data.store_source import StoreSource
from iaa.errors import IAAError
from iaa.io import Manifest, read_embeddings, read_manifest
from iaa.models.backbone import backbone_options, load_backbone
from iaa.models.embedder import EmbeddingModel
from iaa.selection import VAL_SPLIT, held_out_classes, protocol_splits

log = logging.getLogger(__name__)

LARGE_TRAIN_SET = 10_000  # images; above it samples_per_class_large applies (released run.py)


@dataclass
class TrainInputs:
    """Where a run's data come from: features (head mode), or in finetune mode a manifest and
    either a backbone checkpoint (synth's pretrain stage) or an ImageNet architecture
    (``arch``, with its weights file looked up by ``iaa.models.weights``)."""

    features: Path | None = None
    manifest: Path | None = None
    backbone: Path | None = None
    arch: str | None = None
    weights: Path | None = None  # the weights file or its folder; default: the torch hub cache
    allow_download: bool = True
    # the decoded store (iaa.decode) of the manifest: how images are read, never what they are,
    # so it is not part of identity() (train.loader decides whether it is used)
    decoded_store: Path | None = None

    def identity(self) -> dict[str, str]:
        """What the resume fingerprint records of the inputs (``iaa.checkpoints``)."""
        out = {name: checkpoints.file_identity(p) for name in ("features", "manifest", "backbone")
               if (p := getattr(self, name)) is not None}  # fmt: skip
        if self.manifest is not None and self.features is None:
            # the images themselves: a prepare rerun (another cache filter or size) can rewrite
            # them under the same paths, leaving the manifest's bytes unchanged
            out["images"] = checkpoints.sizes_identity(read_manifest(self.manifest).absolute_paths())
        if self.arch is not None:
            out["arch"] = f"{self.arch} weights={self.weights or 'hub cache'}"
        return out


@dataclass
class Sources:
    """Train rows, the monitored split (``val_split``) and the rows the selection rule reads."""

    train: FeatureSource | ImageSource
    monitor: FeatureSource | ImageSource | None
    select: FeatureSource | ImageSource | None


def build_model(inputs: TrainInputs, settings: TrainSettings, in_dim: int | None) -> EmbeddingModel:
    """Head mode: an embedding head on ``in_dim`` features; finetune: backbone + head."""
    common = {"head_hidden": settings.head_hidden, "head_init": settings.head_init}
    if settings.mode == "head":
        return EmbeddingModel(settings.embedding_dim, in_dim=in_dim, **common)
    if inputs.backbone is not None:
        backbone, name, kwargs = load_backbone(str(inputs.backbone))
        options = backbone_options(
            name, pooling=settings.pooling, googlenet_transform_input=settings.googlenet_transform_input
        )
        model = EmbeddingModel(
            settings.embedding_dim, backbone=name, backbone_kwargs={**kwargs, **options}, **common
        )
        assert model.trunk is not None
        model.trunk.load_state_dict(backbone.state_dict())
        return model
    assert inputs.arch is not None
    options = backbone_options(
        inputs.arch, pooling=settings.pooling, googlenet_transform_input=settings.googlenet_transform_input
    )
    # ImageNet weights, looked up (and checksummed) before any image is read
    weights = {"pretrained": True, "weights": inputs.weights, "allow_download": inputs.allow_download}
    return EmbeddingModel(
        settings.embedding_dim, backbone=inputs.arch, backbone_kwargs={**weights, **options}, **common
    )


def hold_out(splits: np.ndarray, labels: np.ndarray, settings: TrainSettings) -> np.ndarray:
    """``splits`` with the held-out train classes renamed ``val`` (selection best_val)."""
    if settings.selection != "best_val":
        return splits
    train = splits == "train"
    held = np.zeros(len(splits), dtype=bool)
    held[train] = held_out_classes(labels[train], settings.val_class_fraction)
    log.info(
        "selection best_val: %d of %d train classes (%d images) held out of training to select on",
        len(np.unique(labels[held])), len(np.unique(labels[train])), int(held.sum()),
    )  # fmt: skip
    return np.where(held, VAL_SPLIT, splits).astype(object)


def build_sources(inputs: TrainInputs, settings: TrainSettings) -> tuple[Sources, EmbeddingModel]:
    monitor_splits = protocol_splits(settings.val_split) if settings.val_split else None
    if settings.mode not in ("head", "finetune"):
        raise IAAError(f"unknown train mode {settings.mode!r} (head or finetune)")
    if settings.mode == "head":
        if inputs.features is None:
            raise IAAError("train in head mode needs --features")
        # only the splits training uses are read (and checked: read_embeddings refuses bad rows)
        used = sorted({"train", *(monitor_splits or ())})
        table = read_embeddings(inputs.features, splits=used)
        table = replace(table, splits=hold_out(table.splits, table.labels, settings))
        make: Any = lambda splits: FeatureSource(table.split(*splits))  # noqa: E731
        train = make(("train",))
        if len(train) == 0:
            raise IAAError(f"{inputs.features} has no train rows")
        model = build_model(inputs, settings, train.input_dim)
    else:
        if inputs.manifest is None or (inputs.backbone is None and inputs.arch is None):
            raise IAAError("train in finetune mode needs --manifest and --backbone or --arch")
        model = build_model(inputs, settings, None)
        manifest = read_manifest(inputs.manifest)
        frame = manifest.frame
        splits = hold_out(frame["split"].to_numpy(object), frame["label"].to_numpy(), settings)
        manifest = Manifest(frame=frame.assign(split=splits), root=manifest.root)
        opts = ImageOptions(
            settings.image_size,
            settings.resize,
            crop_scale_min=settings.crop_scale_min,
            workers=settings.workers,
            square=settings.square_resize,
            interpolation=settings.interpolation,
            cache_dir=default_cache_dir(inputs.manifest),
            # loader workers: the JPEG files through PIL transforms even where the images would
            # fit in memory (auto preloads small sets and crops them with tensor ops)
            preload=False if settings.loader == "workers" else "auto",
        )
        make = _image_sources(manifest, opts, inputs, settings)
        train = make(("train",))
    monitor = make(monitor_splits) if monitor_splits else None
    if monitor is not None and len(monitor) == 0:
        raise IAAError(
            f"train.val_split is {settings.val_split!r} but the data have no such rows "
            "(set it to a split of the manifest, or null)"
        )
    select = monitor if settings.selection == "best_test" else None
    if settings.selection == "best_val":
        select = make((VAL_SPLIT,))
    return Sources(train, monitor, select), model


def use_store(settings: TrainSettings, store: Path | None, device: torch.device) -> bool:
    """train.loader: ``cache`` reads the decoded store (an IAAError without one), ``workers``
    the JPEGs, ``auto`` the store on CUDA when the workflow gave one (on a CPU the JPEG path
    with its in-memory preload is as fast: the crop is the cost there, not the decoding)."""
    if settings.loader == "cache":
        if store is None:
            raise IAAError(
                "train.loader is cache but no decoded store was given: set prepare.decoded_store: true "
                "(or pass --decoded-store DIR, written by iaa decode)"
            )
        return True
    return settings.loader == "auto" and store is not None and device.type == "cuda"


def _image_sources(manifest: Manifest, opts: ImageOptions, inputs: TrainInputs, settings: TrainSettings):
    """A function of splits -> their image source: the decoded store's or the JPEGs'."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not use_store(settings, inputs.decoded_store, device):
        log.info("images: image files (%d DataLoader workers)", settings.workers)
        return lambda splits: ImageSource(manifest, splits, opts)
    square = settings.square_resize  # a store that keeps the originals (CUB) has no resize
    store = DecodedStore.open(  # check_images: an image rewritten in place is refused, not served stale
        inputs.decoded_store, inputs.manifest, square=square,
        resize=settings.resize if square else None, interpolation=settings.interpolation if square else None,
        check_images=True,
    )  # fmt: skip
    log.info("images: decoded store %s, augmented on %s", inputs.decoded_store, device)
    frame = manifest.frame

    def make(splits: tuple[str, ...]) -> StoreSource:
        rows = np.flatnonzero(frame["split"].isin(splits).to_numpy())
        part = frame.iloc[rows]
        return StoreSource(store, rows, part["label"].to_numpy(), part["split"].to_numpy(), opts, device)

    return make


def samples_per_class(settings: TrainSettings, train_size: int) -> int:
    """m: ``samples_per_class``, or ``samples_per_class_large`` when the train set has more
    than 10,000 images (the released code's rule, run.py: ``len(dataset_train) > 1e4``)."""
    if settings.samples_per_class_large is not None and train_size > LARGE_TRAIN_SET:
        return settings.samples_per_class_large
    return settings.samples_per_class
