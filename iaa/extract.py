"""Stage ``extract``: pretrained-backbone features of every image that later stages use.

The features Parquet has the same layout as an embeddings file, so it is evaluated as the
"Pretrained" row of the results table and feeds ``train`` in head mode.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from iaa.benchmarks import get_benchmark
from iaa.data.sources import ImageOptions, ImageSource, embed_all
from iaa.io import read_manifest, write_embeddings
from iaa.models.backbone import load_backbone

log = logging.getLogger(__name__)


def extract_stage(
    manifest_path: Path,
    backbone_path: Path,
    out: Path,
    *,
    benchmark: str,
    image_size: int,
    resize: int,
    batch_size: int = 256,
    workers: int = 0,
) -> int:
    bench = get_benchmark(benchmark)
    manifest = read_manifest(manifest_path)
    source = ImageSource(manifest, bench.embed_splits, ImageOptions(image_size, resize, workers=workers))
    backbone, name, _ = load_backbone(str(backbone_path))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone.to(device)
    log.info("extracting %s features of %d images (%s)", name, len(source), ", ".join(bench.embed_splits))
    features = embed_all(backbone, source, batch_size, device)
    write_embeddings(
        out, features.numpy(), source.labels, source.splits, source.paths, metadata={"iaa.backbone": name}
    )
    return len(source)
