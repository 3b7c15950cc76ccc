"""Stage ``export``: a trained model's embeddings of every train and evaluation image -> Parquet.

A training run keeps two models (SPEC 2.5 item 12): ``model.pt``, the final epoch's, and
``selected.pt``, the epoch its selection rule picked (``last``, ``best_test`` or ``best_val``,
see :mod:`iaa.provenance`). Export embeds both, each to its own file; when the selected epoch
is the final one the weights are the same and the final embeddings are written twice, without
a second pass. Each file's Parquet schema metadata records ``iaa.model`` (the checkpoint),
``iaa.epoch``, ``iaa.selection``, ``iaa.recipe`` and ``iaa.epoch_kind`` (final / selected).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from iaa.benchmarks import get_benchmark
from iaa.data.decoded_cache import default_cache_dir
from iaa.data.sources import FeatureSource, ImageOptions, ImageSource, embed_all, place_model
from iaa.errors import IAAError
from iaa.io import (
    embedding_splits,
    read_embeddings,
    read_manifest,
    require_file,
    require_splits,
    write_embeddings,
)
from iaa.models.embedder import EmbeddingModel, load_model, read_checkpoint
from iaa.provenance import Provenance, provenance_from_checkpoint

log = logging.getLogger(__name__)


def export_stage(
    model_path: Path,
    out: Path,
    *,
    benchmark: str | None = None,
    splits: tuple[str, ...] | None = None,
    selected: Path | None = None,
    out_selected: Path | None = None,
    features: Path | None = None,
    manifest: Path | None = None,
    image_size: int = 224,
    resize: int = 256,
    batch_size: int = 256,
    workers: int = 0,
    square: bool = True,
    interpolation: str = "bilinear",
) -> int:
    """Embed with ``model_path``: from ``features`` if the model has no backbone, else from images
    (SPEC 3's test transform: ``square`` and ``interpolation`` as in :class:`ImageOptions`).

    With ``selected`` (the run's ``selected.pt``) also writes its embeddings to ``out_selected``,
    reusing the final embeddings when both checkpoints are from the same epoch. Returns the
    number of rows of each file.
    """
    if (selected is None) != (out_selected is None):
        raise IAAError("export: --selected and --out-selected go together (give both or neither)")
    if splits is None:  # by hand: from a registered benchmark
        if benchmark is None:
            raise IAAError("export needs --benchmark or --splits")
        splits = get_benchmark(benchmark).embed_splits
    model = load_model(model_path)
    final_prov = checkpoint_provenance(model_path, "final")
    chosen: Provenance | None = None
    if selected is not None:  # checked before any embedding pass
        chosen = checkpoint_provenance(selected, "selected")
        check_same_run(final_prov, chosen, model_path, selected)
    source: FeatureSource | ImageSource
    if model.trunk is None:
        if features is None:
            raise IAAError(f"{model_path} is an embedding head: export needs --features")
        in_dim = model.config.get("in_dim")  # features of another dimension are refused on reading
        require_splits(embedding_splits(features), splits, f"features file {features}")
        source = FeatureSource(read_embeddings(features, splits=list(splits), dim=in_dim))
    else:
        if manifest is None:
            raise IAAError(f"{model_path} has a backbone: export needs --manifest")
        cache = default_cache_dir(manifest)
        opts = ImageOptions(
            image_size, resize, workers=workers, square=square, interpolation=interpolation, cache_dir=cache
        )
        table = read_manifest(manifest)
        require_splits(table.frame["split"], splits, f"manifest {manifest}")
        source = ImageSource(table, tuple(splits), opts)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    emb = _embed(model, source, batch_size, device)
    write_embeddings(
        out, emb, source.labels, source.splits, source.paths, metadata=final_prov.metadata(model_path)
    )
    log.info("exported %d embeddings of dimension %d to %s (epoch %s)", *emb.shape, out, final_prov.epoch)
    if selected is not None and out_selected is not None and chosen is not None:
        if chosen.epoch is not None and chosen.epoch == final_prov.epoch:
            log.info("selected epoch %d is the final one: same weights, same embeddings", chosen.epoch)
        else:
            del model  # one model in (GPU) memory at a time
            selected_model = load_model(selected)
            if (selected_model.trunk is None) != isinstance(source, FeatureSource):
                raise IAAError(f"{selected} and {model_path} differ in kind (embedding head vs backbone)")
            emb = _embed(selected_model, source, batch_size, device)
        write_embeddings(
            out_selected, emb, source.labels, source.splits, source.paths, metadata=chosen.metadata(selected)
        )
        log.info(
            "exported the selected model (epoch %s, %s) to %s", chosen.epoch, chosen.selection, out_selected
        )
    return int(emb.shape[0])


def _embed(
    model: EmbeddingModel, source: FeatureSource | ImageSource, batch_size: int, device: torch.device
) -> np.ndarray:
    """(N, D) float32 raw embeddings of every row of ``source``, in row order."""
    channels_last = device.type == "cuda" and model.trunk is not None
    place_model(model, device, channels_last)
    return embed_all(model, source, batch_size, device, channels_last).numpy()


def checkpoint_provenance(path: Path, epoch_kind: str) -> Provenance:
    """The ``epoch``, ``selection`` and ``recipe`` keys a training checkpoint carries.

    Memory-mapped: only the small top-level values are read, not the weights.
    """
    require_file(path, "model checkpoint")
    payload = read_checkpoint(path, mmap=True)
    return provenance_from_checkpoint(payload, f"model checkpoint {path}", epoch_kind)


def check_same_run(final: Provenance, chosen: Provenance, final_path: Path, selected_path: Path) -> None:
    """One-line IAAError when the two checkpoints cannot be the same run's final and selected models."""
    if (final.selection, final.recipe) != (chosen.selection, chosen.recipe):
        raise IAAError(
            f"{selected_path} (selection {chosen.selection}, recipe {chosen.recipe}) and {final_path} "
            f"(selection {final.selection}, recipe {final.recipe}) are not the same run's models"
        )
    if final.epoch is not None and chosen.epoch is not None and chosen.epoch > final.epoch:
        raise IAAError(
            f"{selected_path}: epoch {chosen.epoch} is after the final model's ({final_path}: {final.epoch})"
        )
