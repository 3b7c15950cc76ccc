"""Stage ``export``: a trained model's embeddings of every train and evaluation image -> Parquet."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from iaa.benchmarks import get_benchmark
from iaa.data.sources import FeatureSource, ImageOptions, ImageSource, embed_all, place_model
from iaa.errors import IAAError
from iaa.io import read_embeddings, read_manifest, write_embeddings
from iaa.models.embedder import load_model

log = logging.getLogger(__name__)


def export_stage(
    model_path: Path,
    out: Path,
    *,
    benchmark: str,
    features: Path | None = None,
    manifest: Path | None = None,
    image_size: int = 224,
    resize: int = 256,
    batch_size: int = 256,
    workers: int = 0,
) -> int:
    """Embed with ``model_path``: from ``features`` if the model has no backbone, else from images."""
    bench = get_benchmark(benchmark)
    model = load_model(model_path)
    source: FeatureSource | ImageSource
    if model.trunk is None:
        if features is None:
            raise IAAError(f"{model_path} is an embedding head: export needs --features")
        source = FeatureSource(read_embeddings(features, splits=list(bench.embed_splits)))
    else:
        if manifest is None:
            raise IAAError(f"{model_path} has a backbone: export needs --manifest")
        opts = ImageOptions(image_size, resize, workers=workers)
        source = ImageSource(read_manifest(manifest), bench.embed_splits, opts)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    channels_last = device.type == "cuda" and model.trunk is not None
    place_model(model, device, channels_last)
    emb = embed_all(model, source, batch_size, device, channels_last)
    write_embeddings(
        out, emb.numpy(), source.labels, source.splits, source.paths, metadata={"iaa.model": str(model_path)}
    )
    log.info("exported %d embeddings of dimension %d to %s", emb.shape[0], emb.shape[1], out)
    return int(emb.shape[0])
