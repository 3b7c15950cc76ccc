"""Exact order of scores: the float32 rounding bound, and float64 re-scoring of near-ties.

Exactness. Float32 scores decide the order of two items only when they differ by more than
a rigorous bound on float32 rounding (``2.02 * D * 2**-24`` for unit vectors of dimension D).
Closer pairs, exact duplicates included, are re-scored in float64 from exactly computed
products summed in sorted order, so identical vectors tie exactly and the tie goes to the
lower gallery index. The result is the ranking by exact (float64) dot product of the
normalised float32 embeddings, ties by gallery index, whatever BLAS does.
"""

from __future__ import annotations

import numpy as np

from iaa.metrics.problem import _Problem

_PAIR_BUDGET = 1 << 22  # entries per temporary array in the sparse and per-class steps


def _tolerance(dim: int) -> float:
    """Bound on |a - b| where a, b are two computations of the same score of unit vectors.

    Any float32 summation order of ``dim`` products of unit vectors errs by at most
    ``dim * 2**-24`` (times the norms, which are at most 1 up to rounding); two such results
    differ by at most twice that. The slack covers the norms and the float64 re-scoring.
    """
    return 2.0 * 1.01 * dim * 2.0**-24 + 1e-12


def _canonical_scores(p: _Problem, q_ids: np.ndarray, g_ids: np.ndarray) -> np.ndarray:
    """Scores of pairs recomputed in float64, identical for identical vectors.

    Products of two float32 values are exact in float64, and ``einsum`` sums them in a fixed
    order for a given dimension, so the result is a function of the two vectors alone and
    exact duplicates tie exactly. Used only for pairs whose float32 scores are too close to
    order safely (all of them when a collapsed model maps everything to one point, hence
    no per-pair sort here: that made such embeddings take minutes).
    """
    return _pair_scores(p.query, p.gallery, q_ids, g_ids, np.float64)


def _pair_scores(
    query: np.ndarray, gallery: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray, dtype: type
) -> np.ndarray:
    """Scores of (query, gallery) pairs computed in ``dtype``, in chunks of bounded memory."""
    out = np.empty(q_ids.size, dtype=dtype)
    step = max(1, _PAIR_BUDGET // max(1, query.shape[1]))
    for s0 in range(0, q_ids.size, step):
        s1 = min(q_ids.size, s0 + step)
        a = query[q_ids[s0:s1]].astype(dtype, copy=False)
        b = gallery[g_ids[s0:s1]].astype(dtype, copy=False)
        out[s0:s1] = np.einsum("ij,ij->i", a, b)
    return out
