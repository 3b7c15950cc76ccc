"""FAISS indexes over embeddings: build, save and load them atomically, search them.

Scores are inner products of L2-normalised embeddings (cosine similarity); every function
here normalises a copy of what it is given. Neighbours come back ordered by decreasing
score, equal scores by increasing index id (the row position in the indexed split), so
results never depend on FAISS's internal tie order. For a flat (exact) index the tie rule
also holds at the k-th place: when ties reach the end of what FAISS returned, the search is
repeated with a larger k for those queries until every tied candidate has been seen.

Kinds: ``flat`` (exact, ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``, approximate: only the
``nprobe`` nearest of ``nlist`` k-means lists are scanned) and ``hnsw`` (``IndexHNSWFlat``,
approximate graph search, ``m`` links per node, ``ef_search`` candidates per query).

Stage functions: :func:`index_stage` writes one index for one split plus a sidecar
``<index>.ids.parquet`` (path, label, split of every indexed row, in index-id order);
:func:`search_stage` writes the k nearest neighbours of every query as a Parquet table.
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

from iaa.errors import IAAError
from iaa.io import EmbeddingTable, atomic_path, embedding_splits, read_embeddings, require_file

IndexKind = Literal["flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")

IDS_SUFFIX = ".ids.parquet"
NEIGHBOUR_COLUMNS = (
    "query_path",
    "query_label",
    "rank",
    "neighbour_id",
    "score",
    "neighbour_path",
    "neighbour_label",
)

# Below this many multiply-adds, FAISS runs single-threaded: starting and synchronising
# OpenMP threads costs more than it saves, badly so on a busy machine.
_PARALLEL_WORK = 1e8

# Extra neighbours fetched from an exact index so that ties at the k-th place can be resolved
# by gallery order without a second search in the common case.
_TIE_MARGIN = 8


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


@contextlib.contextmanager
def _search_parameters(
    index: faiss.Index, k: int, nprobe: int | None, ef_search: int | None
) -> Iterator[None]:
    """Temporarily set nprobe (IVF) or efSearch (HNSW, at least ``k``) on ``index``."""
    concrete = faiss.downcast_index(index)
    saved: list[tuple[object, str, int]] = []
    if isinstance(concrete, faiss.IndexIVF) and nprobe is not None:
        saved.append((concrete, "nprobe", concrete.nprobe))
        concrete.nprobe = int(nprobe)
    if isinstance(concrete, faiss.IndexHNSW):
        ef = concrete.hnsw.efSearch if ef_search is None else int(ef_search)
        saved.append((concrete.hnsw, "efSearch", concrete.hnsw.efSearch))
        concrete.hnsw.efSearch = max(ef, k)
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _order_candidates(
    scores: np.ndarray, ids: np.ndarray, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Drop invalid and excluded ids, then sort each row by (-score, id)."""
    ids = ids.astype(np.int64, copy=True)
    scores = scores.astype(np.float32, copy=True)
    bad = ids < 0
    if exclude is not None:
        bad |= ids == exclude[:, None]
    ids[bad] = -1
    scores[bad] = -np.inf
    key_ids = np.where(bad, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key_ids, -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    *,
    exclude_ids: np.ndarray | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    batch_size: int = 4096,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest index items of each query: ``(scores, ids)``, both shaped (Q, k).

    Rows are sorted by decreasing score, equal scores by increasing id. ``exclude_ids[i]``
    (if given; -1 for none) is never returned for query ``i``: pass ``arange(Q)`` to search a
    set against itself without the query itself. Missing entries (fewer than ``k`` items) have
    id -1 and score -inf. ``nprobe``/``ef_search`` override the values stored in the index.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    x = l2_normalize(queries) if normalize else np.ascontiguousarray(queries, np.float32)
    nq = x.shape[0]
    if exclude_ids is not None:
        exclude_ids = np.asarray(exclude_ids, dtype=np.int64)
        if exclude_ids.shape != (nq,):
            raise ValueError("exclude_ids must hold one id per query")
    ntotal = int(index.ntotal)
    out_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    if ntotal == 0 or nq == 0:
        return out_scores, out_ids
    exact = index_kind(index) == "flat"
    extra = 0 if exclude_ids is None else 1
    first_k = min(ntotal, k + extra + (_TIE_MARGIN if exact else 0))
    work = float(nq) * ntotal * x.shape[1]
    with _search_parameters(index, first_k, nprobe, ef_search), faiss_threads(work):
        for start in range(0, nq, batch_size):
            rows = np.arange(start, min(start + batch_size, nq))
            kk = first_k
            while rows.size:
                scores, ids = index.search(x[rows], kk)
                excl = None if exclude_ids is None else exclude_ids[rows]
                s, i = _order_candidates(scores, ids, excl)
                width = min(k, s.shape[1])
                out_scores[rows, :width] = s[:, :width]
                out_ids[rows, :width] = i[:, :width]
                if not exact or kk >= ntotal:
                    break
                # An item that FAISS did not return scores at most the last returned score; if
                # that equals the k-th kept score, an unseen tie with a lower id may exist.
                last = scores[:, -1]
                kth = s[:, width - 1]
                unresolved = np.isfinite(last) & (kth == last) & (ids[:, -1] >= 0)
                rows = rows[unresolved]
                kk = min(ntotal, 2 * kk)
    return out_scores, out_ids


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
    return pq.read_table(p).to_pandas()


def _read_split(
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
    table = _read_split(embeddings_path, split, embedding_splits(embeddings_path))
    index = build_index(table.embeddings, kind, nlist=nlist, nprobe=nprobe, m=m, seed=seed)
    out = Path(out_path)
    write_index_ids(ids_path(out), table)
    write_index(index, out)
    return out


def _query_split(present: list[str], indexed: pd.DataFrame | None, path: str | os.PathLike[str]) -> str:
    if "query" in present:
        return "query"
    if len(present) == 1:
        return present[0]
    if indexed is not None:
        indexed_splits = sorted(set(indexed["split"]))
        if len(indexed_splits) == 1 and indexed_splits[0] in present:
            return indexed_splits[0]
    raise IAAError(
        f"cannot tell which split of {path} holds the queries (splits present: "
        f"{', '.join(present)}); pass split="
    )


def search_stage(
    index_path: str | os.PathLike[str],
    query_embeddings_path: str | os.PathLike[str],
    k: int,
    out_path: str | os.PathLike[str],
    split: str | None = None,
    *,
    exclude_self: bool | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> pd.DataFrame:
    """Write the ``k`` nearest indexed rows of every query row as a Parquet table; return it.

    Queries are the rows of ``split`` (default: ``query`` if present, else the only split, else
    the split that was indexed). Columns: query_path, query_label, rank (1 = nearest),
    neighbour_id (row of the indexed split), score, and neighbour_path / neighbour_label when
    the index has its sidecar. ``exclude_self`` (default: whether the queries are exactly the
    indexed rows, which needs the sidecar) drops query ``i`` from its own neighbours by id.
    """
    if k < 1:
        raise IAAError(f"k must be at least 1, got {k}")
    index = read_index(index_path)
    indexed = read_index_ids(index_path)
    if indexed is not None and len(indexed) != index.ntotal:
        raise IAAError(
            f"sidecar {ids_path(index_path)} has {len(indexed)} rows, index {index_path} has {index.ntotal}"
        )
    present = embedding_splits(query_embeddings_path)
    chosen = split if split is not None else _query_split(present, indexed, query_embeddings_path)
    queries = _read_split(query_embeddings_path, chosen, present)
    if queries.dim != index.d:
        raise IAAError(
            f"queries in {query_embeddings_path} have dimension {queries.dim}, index {index_path} "
            f"has {index.d}"
        )
    same_rows = indexed is not None and np.array_equal(
        indexed["path"].to_numpy(dtype=object), queries.paths.astype(object)
    )
    if exclude_self is None:
        exclude_self = same_rows
    elif exclude_self and len(queries) != index.ntotal:
        raise IAAError("exclude_self needs the queries to be exactly the indexed rows")
    exclude = np.arange(len(queries), dtype=np.int64) if exclude_self else None
    scores, ids = search(
        index, queries.embeddings, k, exclude_ids=exclude, nprobe=nprobe, ef_search=ef_search
    )
    valid = ids >= 0
    q_rows, ranks = np.nonzero(valid)
    neighbour = ids[valid]
    frame = pd.DataFrame(
        {
            "query_path": queries.paths[q_rows].astype(str),
            "query_label": queries.labels[q_rows].astype(np.int64),
            "rank": (ranks + 1).astype(np.int64),
            "neighbour_id": neighbour.astype(np.int64),
            "score": scores[valid].astype(np.float32),
        }
    )
    if indexed is not None:
        frame["neighbour_path"] = indexed["path"].to_numpy(dtype=object)[neighbour].astype(str)
        frame["neighbour_label"] = indexed["label"].to_numpy(dtype=np.int64)[neighbour]
    with atomic_path(out_path) as tmp:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    return frame
