"""Stage ``prepare``: a dataset on disk -> manifest Parquet (path, label, split, class_name).

The built-in synth benchmarks generate their images under ``data_dir``; the five real
benchmarks read the copy the user downloaded under ``root`` (``iaa.data.datasets``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from iaa.benchmarks import get_benchmark
from iaa.data.datasets import READERS, prepare_dataset
from iaa.data.datasets.custom import FORMATS as CUSTOM_FORMATS
from iaa.data.datasets.custom import prepare_custom
from iaa.data.synth import SynthSpec, write_synth
from iaa.errors import IAAError

log = logging.getLogger(__name__)


def prepare_stage(
    benchmark: str,
    out: Path,
    *,
    data_dir: Path | None = None,
    seed: int = 0,
    workers: int | None = 1,
    synth_overrides: dict[str, Any] | None = None,
    root: Path | None = None,
    skip_bad_images: bool = False,
    resized_cache: Path | None = None,
    cache_size: int = 256,
    cache_square: bool = True,
    cache_interpolation: str = "bilinear",
    manifest: Path | None = None,
    test_fraction: float | None = None,
) -> pd.DataFrame:
    """Write the manifest of ``benchmark`` to ``out``.

    ``benchmark`` ``folder`` or ``csv`` reads your own images under ``root``: a class-folder
    tree, or the table ``manifest`` (``iaa.data.datasets.custom``); their classes without a
    given split are split in sorted halves, or randomly (``test_fraction``, ``seed``).

    Synth images are generated under ``data_dir`` (``workers`` processes, default 1);
    a real dataset is read from ``root`` and its images decoded in full by ``workers`` threads
    (default: one per CPU), optionally squashed to ``cache_size`` x ``cache_size`` into
    ``resized_cache`` (with ``cache_square``; without it, CUB, the originals are kept).
    """
    if benchmark in CUSTOM_FORMATS:
        if root is None:
            raise IAAError(f"{benchmark}: pass --root DIR, the folder holding your images")
        threads = workers or os.cpu_count() or 1
        log.info("reading your %s dataset under %s (%d threads)", benchmark, root, threads)
        frame = prepare_custom(
            benchmark, Path(root), Path(out), manifest=manifest, test_fraction=test_fraction, seed=seed,
            threads=threads, skip_bad_images=skip_bad_images, resized_cache=resized_cache,
            cache_size=cache_size, cache_square=cache_square, cache_interpolation=cache_interpolation,
        )  # fmt: skip
        _log_summary(frame, out)
        return frame
    bench = get_benchmark(benchmark)
    if bench.builtin and bench.synth_variant is not None:
        if data_dir is None:
            raise IAAError(f"benchmark {benchmark!r} generates its images: pass --data-dir DIR")
        try:
            spec = SynthSpec.for_variant(bench.synth_variant, **(synth_overrides or {}))
        except IAAError as err:  # names the field: --synth: train_classes must be >= 1, got -3
            raise IAAError(f"--synth: {err}") from None
        workers = workers or 1
        log.info("generating %s into %s (seed %d, %d workers)", benchmark, data_dir, seed, workers)
        manifest = write_synth(Path(data_dir), Path(out), spec, seed=seed, workers=workers)
    elif bench.dataset in READERS:
        if root is None:
            raise IAAError(f"benchmark {benchmark!r} reads a downloaded dataset: pass --root DIR")
        threads = workers or os.cpu_count() or 1
        log.info("reading %s under %s (%d threads)", bench.dataset, root, threads)
        manifest = prepare_dataset(
            READERS[bench.dataset],
            Path(root),
            Path(out),
            threads=threads,
            skip_bad_images=skip_bad_images,
            resized_cache=None if resized_cache is None else Path(resized_cache),
            cache_size=cache_size,
            cache_square=cache_square,
            cache_interpolation=cache_interpolation,
        )
    else:
        raise IAAError(f"benchmark {benchmark!r} has no preparation recipe yet")
    _log_summary(manifest, out)
    return manifest


def _log_summary(manifest: pd.DataFrame, out: Path) -> None:
    summary = manifest.groupby("split")["label"].agg(images="size", classes="nunique")
    log.info("manifest %s:\n%s", out, summary.to_string())
