"""The retrieval problem every metric ranks: unit embeddings, dense class ids, positive counts.

:func:`_prepare` checks the inputs, L2-normalises query and gallery (float32), maps the labels
of both sides to dense class ids they share, and counts each query's positives R: the gallery
items of its class, the query itself excluded with ``exclude_self=True`` (all-vs-all, where the
gallery must be the query set itself). :class:`_Ranks` is what every ranking path returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iaa.index import l2_normalize


@dataclass(frozen=True)
class _Problem:
    query: np.ndarray  # (Q, D) float32, unit rows
    gallery: np.ndarray  # (G, D) float32, unit rows; the same array as query with exclude_self
    query_class: np.ndarray  # (Q,) int64 class ids, dense and shared with gallery_class
    gallery_class: np.ndarray  # (G,)
    num_classes: int  # distinct labels over query and gallery
    num_positives: np.ndarray  # (Q,) R: gallery items of the query's class, itself excluded
    exclude_self: bool


@dataclass(frozen=True)
class _Ranks:
    valid: np.ndarray  # (Q,) bool: R > 0
    first: np.ndarray  # (Q,) int64: 0-based rank of the first positive (capped); -1 if not valid
    average_precision: np.ndarray  # (Q,) float64 per-query MAP@R (0 where not valid)
    r_precision: np.ndarray  # (Q,) float64


def _labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _prepare(
    query: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    exclude_self: bool,
) -> _Problem:
    q = l2_normalize(query)
    ql = _labels(query_labels, q.shape[0], "query_labels")
    if exclude_self:
        same = np.shape(gallery) == q.shape and np.array_equal(np.asarray(gallery_labels), ql)
        if not same:
            raise ValueError("with exclude_self=True the gallery must be the query set itself")
        g, gl = q, ql
    else:
        g = l2_normalize(gallery)
        gl = _labels(gallery_labels, g.shape[0], "gallery_labels")
        if g.shape[1] != q.shape[1]:
            raise ValueError(f"query dimension {q.shape[1]} differs from gallery dimension {g.shape[1]}")
    classes = np.unique(np.concatenate([ql, gl]))
    qc = np.searchsorted(classes, ql).astype(np.int64)
    gc = qc if exclude_self else np.searchsorted(classes, gl).astype(np.int64)
    per_class = np.bincount(gc, minlength=classes.size)
    num_pos = per_class[qc] - (1 if exclude_self else 0)
    return _Problem(q, g, qc, gc, int(classes.size), num_pos.astype(np.int64), exclude_self)
