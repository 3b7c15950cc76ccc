"""FAISS indexes over embeddings: build them, save and load them atomically.

Scores are inner products of L2-normalised embeddings (cosine similarity); every function
here normalises a copy of what it is given. Searching an index is :mod:`iaa.search`.

Kinds: ``flat`` (exact, ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``, approximate: only the
``nprobe`` nearest of ``nlist`` k-means lists are scanned) and ``hnsw`` (``IndexHNSWFlat``,
approximate graph search, ``m`` links per node, ``ef_search`` candidates per query).

Stage function: :func:`index_stage` writes one index for one split plus a sidecar
``<index>.ids.parquet`` (path, label, split of every indexed row, in index-id order).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from iaa.atomic import atomic_path
from iaa.errors import IAAError
from iaa.io import EmbeddingTable, embedding_splits, read_embeddings, require_file, require_parquet

IndexKind = Literal["flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")

IDS_SUFFIX = ".ids.parquet"

# Below this many multiply-adds, FAISS runs single-threaded: starting and synchronising
# OpenMP threads costs more than it saves, badly so on a busy machine.
_PARALLEL_WORK = 1e8


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Return a C-contiguous float32 copy of the (N, D) array ``x`` with unit-norm rows.

    All-zero rows stay zero. Raises ``ValueError`` on NaN or infinite values, which would
    otherwise make every comparison silently false.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {arr.shape}")
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(out).all():
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))
    norms[norms == 0] = 1.0
    out /= norms[:, None]
    return out


@contextlib.contextmanager
def faiss_threads(work: float) -> Iterator[None]:
    """Run FAISS on one thread inside the block when ``work`` (multiply-adds) is small."""
    if work >= _PARALLEL_WORK:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def default_nlist(n: int) -> int:
    """FAISS rule of thumb: about 4·sqrt(n) inverted lists, with at least 39 points per list."""
    return int(max(1, min(round(4 * math.sqrt(n)), n // 39)))


def build_index(
    embeddings: np.ndarray,
    kind: str = "flat",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
    seed: int = 0,
    train_size: int | None = None,
    normalize: bool = True,
) -> faiss.Index:
    """Build an inner-product index over (a normalised copy of) ``embeddings``; ids are row numbers.

    ``ivf``: ``nlist`` lists (default :func:`default_nlist`), trained with seeded k-means on a
    seeded sample of ``train_size`` rows (default ``64 * nlist``); ``nprobe`` (default
    ``min(nlist, 16)``) is stored in the index. ``hnsw``:
    ``m`` links per node, ``ef_construction`` and a default ``ef_search`` stored in the index.
    ``normalize=False`` skips the copy for data that is already L2-normalised float32.
    """
    x = l2_normalize(embeddings) if normalize else np.ascontiguousarray(embeddings, np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {x.shape}")
    n, d = x.shape
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        if n == 0:
            raise ValueError("cannot train an IVF index on zero vectors")
        lists = default_nlist(n) if nlist is None else int(nlist)
        if not 1 <= lists <= n:
            raise ValueError(f"nlist must be in [1, {n}], got {lists}")
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)
        index.cp.min_points_per_centroid = 1  # small sets: no warning, same algorithm
        size = min(n, 64 * lists if train_size is None else int(train_size))
        rows = np.random.default_rng(seed).choice(n, size=size, replace=False) if size < n else None
        sample = x if rows is None else x[np.sort(rows)]
        with faiss_threads(float(size) * d * lists * index.cp.niter):
            index.train(sample)
        index.nprobe = min(lists, 16) if nprobe is None else int(nprobe)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
        index.hnsw.efSearch = int(ef_search)
    else:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
    with faiss_threads(float(n) * d * (ef_construction * m if kind == "hnsw" else 1)):
        index.add(x)
    return index


def index_kind(index: faiss.Index) -> str:
    """``flat``, ``ivf``, ``hnsw`` or the FAISS class name for anything else."""
    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexFlat):
        return "flat"
    if isinstance(concrete, faiss.IndexIVF):
        return "ivf"
    if isinstance(concrete, faiss.IndexHNSW):
        return "hnsw"
    return type(concrete).__name__


# --------------------------------------------------------------------------- files


def write_index(index: faiss.Index, path: str | os.PathLike[str]) -> None:
    """Write ``index`` to ``path`` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def read_index(path: str | os.PathLike[str]) -> faiss.Index:
    p = require_file(path, "FAISS index")
    try:
        return faiss.read_index(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IAAError(f"cannot read FAISS index {p}: {first}") from exc


def ids_path(index_path: str | os.PathLike[str]) -> Path:
    """Where :func:`index_stage` puts the path/label/split of each indexed row."""
    p = Path(index_path)
    return p.with_name(p.name + IDS_SUFFIX)


def write_index_ids(path: str | os.PathLike[str], table: EmbeddingTable) -> None:
    ids = pa.table(
        {
            "path": pa.array([str(s) for s in table.paths], type=pa.string()),
            "label": pa.array(np.asarray(table.labels, dtype=np.int64)),
            "split": pa.array([str(s) for s in table.splits], type=pa.string()),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(ids, tmp)


def read_index_ids(index_path: str | os.PathLike[str]) -> pd.DataFrame | None:
    """The sidecar of ``index_path`` (columns path, label, split), or None if there is none."""
    p = ids_path(index_path)
    if not p.is_file():
        return None
    return pq.read_table(require_parquet(p, "index ids file")).to_pandas()


def read_split(
    path: str | os.PathLike[str], split: str, present: list[str], dim: int | None = None
) -> EmbeddingTable:
    """The rows of ``split`` only, checked by :func:`read_embeddings` (rows of other splits are
    neither read nor checked)."""
    if split not in present:
        raise IAAError(
            f"embeddings file {path} has no split {split!r} (splits present: {', '.join(present)})"
        )
    return read_embeddings(path, splits=[split], dim=dim)


def index_stage(
    embeddings_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    split: str,
    kind: str = "flat",
    nlist: int | None = None,
    nprobe: int | None = None,
    m: int = 32,
    seed: int = 0,
) -> Path:
    """Index the rows of one split of an embeddings Parquet; write ``out_path`` and its sidecar.

    Index id ``i`` is the ``i``-th row of that split in file order; the sidecar
    (:func:`ids_path`) records its path, label and split. Both files are written atomically,
    the sidecar first. Returns ``out_path``.
    """
    if kind not in INDEX_KINDS:
        raise IAAError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
    table = read_split(embeddings_path, split, embedding_splits(embeddings_path))
    index = build_index(table.embeddings, kind, nlist=nlist, nprobe=nprobe, m=m, seed=seed)
    out = Path(out_path)
    write_index_ids(ids_path(out), table)
    write_index(index, out)
    return out
