"""Generation: the per-class task plan, the worker pool and the manifest."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from iaa.data.synth.families import _class, _family
from iaa.data.synth.render import _render, _save_png
from iaa.data.synth.spec import _STREAM_COUNT, _STREAM_IMAGE, SPLITS, SynthSpec, _rng, class_name

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class _Task:
    out_dir: Path
    spec: SynthSpec
    seed: int
    split: str
    class_id: int
    family: int
    n_images: int


def _n_images(low: int, high: int, tail: float, rng: np.random.Generator) -> int:
    if tail <= 0:
        return int(rng.integers(low, high + 1))
    weights = np.arange(1, high - low + 2, dtype=np.float64) ** -tail
    return low + int(rng.choice(weights.size, p=weights / weights.sum()))


def _plan(out_dir: Path, spec: SynthSpec, seed: int) -> list[_Task]:
    tasks = []
    offset = 0
    for split in SPLITS:
        low, high = spec.images_range(split)
        for j in range(spec.classes(split)):
            cid = offset + j
            n = _n_images(low, high, spec.tail(split), _rng(seed, _STREAM_COUNT, cid))
            tasks.append(_Task(out_dir, spec, seed, split, cid, spec.family_of(split, j), n))
        offset += spec.classes(split)
    return tasks


def _relpath(task: _Task, index: int) -> str:
    return f"images/{task.split}/{class_name(task.family, task.class_id)}/{index:03d}.png"


def _run_task(task: _Task) -> int:
    fam = _family(task.seed, task.family)
    cls = _class(task.seed, task.spec, fam, task.class_id)
    folder = task.out_dir / Path(_relpath(task, 0)).parent
    folder.mkdir(parents=True, exist_ok=True)
    size, ss = task.spec.image_size, task.spec.supersample
    for i in range(task.n_images):
        img = _render(fam, cls, _rng(task.seed, _STREAM_IMAGE, task.class_id, i), size, ss)
        _save_png(img, task.out_dir / _relpath(task, i))
    return task.n_images


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork where the platform has it: workers need no re-import of the caller's main
    # module (Snakemake scripts and notebooks have no ``if __name__ == "__main__"``).
    # The pool starts before any tqdm thread exists.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def generate_synth(
    out_dir: Path, spec: SynthSpec, seed: int, workers: int = 1, progress: bool = False
) -> pd.DataFrame:
    """Render every image of ``spec`` under ``out_dir/images/<split>/<class>/<i>.png``.

    Returns the manifest: ``path`` (relative to ``out_dir``), ``label`` (global class
    id), ``split``, ``class_name`` (``f<family>_c<class id>``) and ``family``. The
    output depends only on ``spec`` and ``seed``, not on ``workers``.
    """
    import pandas as pd

    out_dir = Path(out_dir)
    tasks = _plan(out_dir, spec, seed)
    total = sum(t.n_images for t in tasks)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc=f"{spec.variant} seed {seed}")

    def consume(counts: Iterable[int]) -> None:
        for n in counts:
            if bar is not None:
                bar.update(n)

    try:
        if workers <= 1:
            consume(map(_run_task, tasks))
        else:
            chunk = max(1, min(32, len(tasks) // (workers * 8)))
            with _pool_context().Pool(workers) as pool:
                consume(pool.imap(_run_task, tasks, chunksize=chunk))
    finally:
        if bar is not None:
            bar.close()

    rows = [
        (_relpath(t, i), t.class_id, t.split, class_name(t.family, t.class_id), t.family)
        for t in tasks
        for i in range(t.n_images)
    ]
    frame = pd.DataFrame(rows, columns=["path", "label", "split", "class_name", "family"])
    return frame.astype({"label": np.int64, "family": np.int64})


def write_synth(
    out_dir: Path,
    manifest_path: Path,
    spec: SynthSpec,
    seed: int,
    workers: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Generate the benchmark and write its manifest Parquet (paths relative to ``out_dir``)."""
    from iaa.io import write_manifest

    manifest = generate_synth(out_dir, spec, seed, workers=workers, progress=progress)
    write_manifest(manifest_path, manifest, root=Path(out_dir))
    return manifest
