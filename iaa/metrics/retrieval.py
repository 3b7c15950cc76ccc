"""Retrieval and clustering metrics for deep metric learning: Recall@K, MAP@R, R-precision, NMI.

Conventions (all functions):

* Embeddings are L2-normalised copies, so the score of a pair is its cosine similarity
  (inner product). A query's *positives* are the gallery items of its class, its
  *negatives* all other gallery items.
* The gallery is ranked by decreasing score; equal scores rank by increasing gallery index.
* ``exclude_self=True`` is the all-vs-all protocol: query ``i`` *is* gallery item ``i`` and is
  never its own neighbour (excluded by index, not by distance, so an exact duplicate elsewhere
  in the gallery still counts). Otherwise (query/gallery protocol) nothing is excluded.
* A query with R = 0 positives (a singleton class in all-vs-all) is left out of every retrieval
  metric and counted in ``num_queries_without_match``.
* Recall@K: fraction of queries whose first positive ranks within the top K. MAP@R (Musgrave et
  al. 2020): ``(1/R) sum_{i<=R} P(i) rel(i)``. RP: fraction of the top R that are positives.

How: exact ranks in :mod:`iaa.metrics.ranks` (exactness: :mod:`iaa.metrics.scores`),
approximate ones in :mod:`iaa.metrics.approximate`, NMI in :mod:`iaa.metrics.clustering`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from iaa.index import INDEX_KINDS, build_index
from iaa.metrics.approximate import _approx_recall_vs_exact, _approximate_ranks
from iaa.metrics.clustering import DEFAULT_KMEANS_NITER, kmeans_nmi
from iaa.metrics.problem import _prepare, _Ranks
from iaa.metrics.ranks import _exact_ranks
from iaa.metrics.scan import DEFAULT_BLOCK_SIZE


@dataclass(frozen=True)
class RecallAtK:
    recall: dict[int, float]  # K -> Recall@K over queries with at least one positive
    num_queries: int  # all queries
    num_queries_without_match: int  # queries with no positive, left out of ``recall``


@dataclass(frozen=True)
class MapAtR:
    map_at_r: float
    r_precision: float
    num_queries: int
    num_queries_without_match: int


def _check_ks(ks: Sequence[int]) -> list[int]:
    out = sorted({int(k) for k in ks})
    if not out or out[0] < 1:
        raise ValueError(f"recall K values must be positive integers, got {list(ks)}")
    return out


def _recall_values(ranks: _Ranks, ks: list[int]) -> dict[int, float]:
    first = ranks.first[ranks.valid]
    if first.size == 0:
        return {k: float("nan") for k in ks}
    return {k: float(np.mean(first < k)) for k in ks}


def first_positive_ranks(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    exclude_self: bool,
    cap: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> np.ndarray:
    """0-based rank of each query's first positive; -1 for queries without one.

    With ``cap``, ranks of ``cap`` or more are reported as ``cap`` (and cost less to find).
    """
    p = _prepare(query, query_labels, gallery, gallery_labels, exclude_self)
    return _exact_ranks(p, recall_cap=cap, need_map=False, block_size=block_size).first


def recall_at_k(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int],
    *,
    exclude_self: bool,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> RecallAtK:
    """Exact Recall@K for each K in ``ks`` (see the module docstring for conventions)."""
    kvals = _check_ks(ks)
    p = _prepare(query, query_labels, gallery, gallery_labels, exclude_self)
    ranks = _exact_ranks(p, recall_cap=kvals[-1], need_map=False, block_size=block_size)
    return RecallAtK(
        recall=_recall_values(ranks, kvals),
        num_queries=int(ranks.valid.size),
        num_queries_without_match=int((~ranks.valid).sum()),
    )


def map_at_r_and_rp(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    exclude_self: bool,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> MapAtR:
    """Exact MAP@R and R-precision, averaged over queries with at least one positive."""
    p = _prepare(query, query_labels, gallery, gallery_labels, exclude_self)
    # recall_cap=0: the first positive matters only as far as MAP@R needs it.
    ranks = _exact_ranks(p, recall_cap=0, need_map=True, block_size=block_size)
    valid = ranks.valid
    nan = float("nan")
    return MapAtR(
        map_at_r=float(ranks.average_precision[valid].mean()) if valid.any() else nan,
        r_precision=float(ranks.r_precision[valid].mean()) if valid.any() else nan,
        num_queries=int(valid.size),
        num_queries_without_match=int((~valid).sum()),
    )


def retrieval_metrics(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    ks: Sequence[int],
    exclude_self: bool,
    nmi: bool = True,
    index: str = "flat",
    seed: int = 0,
    nmi_niter: int = DEFAULT_KMEANS_NITER,
    nmi_redo: int = 1,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_search: int | None = None,
    approx_sample: int = 1000,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> dict[str, float | int]:
    """All metrics of one protocol as a JSON-ready dict.

    Keys: ``recall@K`` for each K, ``map@r``, ``rp``, ``nmi`` (if ``nmi``), ``num_queries``,
    ``num_gallery``, ``num_classes`` (distinct labels over query and gallery),
    ``num_queries_without_match``, and ``approx_recall_vs_exact`` for an approximate
    ``index``. Retrieval metrics average over the queries that have a positive (NaN if none).
    ``index="flat"`` is exact; ``"ivf"``/``"hnsw"`` search a FAISS index built with ``nlist``,
    ``nprobe``, ``hnsw_m``, ``ef_search`` and ``seed``. NMI runs k-means with ``seed``,
    ``nmi_niter`` iterations and ``nmi_redo`` restarts on the query set (all-vs-all) or on
    query and gallery together.
    """
    kvals = _check_ks(ks)
    if index not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {index!r}; expected one of {', '.join(INDEX_KINDS)}")
    p = _prepare(query, query_labels, gallery, gallery_labels, exclude_self)
    approx: float | None = None
    if index == "flat":
        ranks = _exact_ranks(p, recall_cap=kvals[-1], need_map=True, block_size=block_size)
    else:
        built = build_index(
            p.gallery,
            index,
            nlist=nlist,
            nprobe=nprobe,
            m=hnsw_m,
            ef_search=ef_search if ef_search is not None else 128,
            seed=seed,
            normalize=False,
        )
        depth = max(kvals[-1], int(p.num_positives.max()) if p.num_positives.size else 0)
        ranks = _approximate_ranks(p, built, depth, nprobe=nprobe, ef_search=ef_search)
        approx = _approx_recall_vs_exact(
            p, built, kvals[-1], sample=approx_sample, seed=seed, nprobe=nprobe, ef_search=ef_search
        )
    valid = ranks.valid
    nan = float("nan")
    out: dict[str, float | int] = {f"recall@{k}": v for k, v in _recall_values(ranks, kvals).items()}
    out["map@r"] = float(ranks.average_precision[valid].mean()) if valid.any() else nan
    out["rp"] = float(ranks.r_precision[valid].mean()) if valid.any() else nan
    if nmi:
        if exclude_self:
            emb, lab = p.query, p.query_class
        else:
            emb = np.concatenate([p.query, p.gallery])
            lab = np.concatenate([p.query_class, p.gallery_class])
        out["nmi"] = kmeans_nmi(emb, lab, seed=seed, niter=nmi_niter, nredo=nmi_redo)
    out["num_queries"] = int(p.query.shape[0])
    out["num_gallery"] = int(p.gallery.shape[0])
    out["num_classes"] = p.num_classes
    out["num_queries_without_match"] = int((~valid).sum())
    if approx is not None:
        out["approx_recall_vs_exact"] = approx
    return out
