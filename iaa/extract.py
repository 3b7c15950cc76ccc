"""Stage ``extract``: pretrained-backbone features of every image that later stages use.

The features Parquet has the same layout as an embeddings file, so it is evaluated as the
"Pretrained" row of the results table and feeds ``train`` in head mode.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from iaa.benchmarks import get_benchmark
from iaa.data.decoded_cache import default_cache_dir
from iaa.data.sources import ImageOptions, ImageSource, embed_all, place_model
from iaa.errors import IAAError
from iaa.io import read_manifest, require_splits, write_embeddings
from iaa.models.backbone import backbone_options, build_backbone, load_backbone

log = logging.getLogger(__name__)


def extract_stage(
    manifest_path: Path,
    backbone_path: Path | None,
    out: Path,
    *,
    benchmark: str | None = None,
    image_size: int,
    resize: int,
    batch_size: int = 256,
    workers: int = 0,
    weights: Path | None = None,
    allow_download: bool = True,
    square: bool = True,
    interpolation: str = "bilinear",
    pooling: str = "avg",
    googlenet_transform_input: bool = True,
    arch: str | None = None,
    splits: tuple[str, ...] | None = None,
) -> int:
    """Features of every embedded image: from a backbone checkpoint (synth's pretrain stage)
    or, without one, from the benchmark's ImageNet backbone (weights looked up first).

    Images take SPEC 3's test transform: squashed to ``resize`` x ``resize`` (``square``;
    not on CUB: shorter side to ``resize``), center crop ``image_size``, filter ``interpolation``.
    ``pooling`` and ``googlenet_transform_input`` are the recipe's backbone options
    (:func:`iaa.models.backbone.backbone_options`; ignored for a backbone checkpoint).
    ``arch`` and ``splits`` (the splits embedded: train and every evaluated one) default to
    ``benchmark``'s; the workflow passes them, so datasets of your own need no registry here.
    """
    if arch is None or splits is None:  # by hand: from a registered benchmark
        if benchmark is None:
            raise IAAError("extract needs --benchmark, or --arch and --splits")
        bench = get_benchmark(benchmark)
        arch, splits = arch or bench.arch, splits or bench.embed_splits
    manifest = read_manifest(manifest_path)  # before any weights are loaded: a bad split fails fast
    require_splits(manifest.frame["split"], splits, f"manifest {manifest_path}")
    if backbone_path is not None:
        backbone, name, _ = load_backbone(str(backbone_path))
    else:
        name = arch
        options = backbone_options(name, pooling=pooling, googlenet_transform_input=googlenet_transform_input)
        backbone = build_backbone(
            name, pretrained=True, weights=weights, allow_download=allow_download, **options
        )
    cache = default_cache_dir(manifest_path)
    opts = ImageOptions(
        image_size, resize, workers=workers, square=square, interpolation=interpolation, cache_dir=cache
    )
    source = ImageSource(manifest, tuple(splits), opts)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    channels_last = device.type == "cuda"
    place_model(backbone, device, channels_last)
    log.info("extracting %s features of %d images (%s)", name, len(source), ", ".join(splits))
    features = embed_all(backbone, source, batch_size, device, channels_last)
    write_embeddings(
        out, features.numpy(), source.labels, source.splits, source.paths, metadata={"iaa.backbone": name}
    )
    return len(source)
