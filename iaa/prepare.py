"""Stage ``prepare``: a dataset on disk -> manifest Parquet (path, label, split, class_name)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from iaa.benchmarks import get_benchmark
from iaa.data.synth import SynthSpec, write_synth
from iaa.errors import IAAError

log = logging.getLogger(__name__)


def prepare_stage(
    benchmark: str,
    out: Path,
    *,
    data_dir: Path,
    seed: int = 0,
    workers: int = 1,
    synth_overrides: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Write the manifest of ``benchmark`` to ``out``; synth images are generated under ``data_dir``."""
    bench = get_benchmark(benchmark)
    if not bench.builtin or bench.synth_variant is None:
        raise IAAError(f"benchmark {benchmark!r} has no preparation recipe yet")
    try:
        spec = SynthSpec.for_variant(bench.synth_variant, **(synth_overrides or {}))
    except TypeError as err:
        raise IAAError(f"bad synth override: {err}") from None
    log.info("generating %s into %s (seed %d, %d workers)", benchmark, data_dir, seed, workers)
    manifest = write_synth(Path(data_dir), Path(out), spec, seed=seed, workers=workers)
    summary = manifest.groupby("split")["label"].agg(images="size", classes="nunique")
    log.info("manifest %s:\n%s", out, summary.to_string())
    return manifest
