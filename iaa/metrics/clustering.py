"""NMI of the evaluated embeddings: FAISS k-means clusters against the labels.

NMI clusters the evaluated embeddings with FAISS k-means (k = number of classes) and compares
cluster ids with labels: mutual information over the arithmetic mean of the two entropies,
as scikit-learn's default, computed here from the contingency table.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from iaa.index import faiss_threads, l2_normalize
from iaa.metrics.problem import _labels

DEFAULT_KMEANS_NITER = 25  # faiss.Kmeans default, as used by pytorch-metric-learning


def nmi_from_clusters(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Normalised mutual information of two labelings (arithmetic-mean normalisation).

    Same value and edge cases as scikit-learn's ``normalized_mutual_info_score``: 1.0 when both
    labelings are a single group (or empty), 0.0 when the mutual information is 0.
    """
    a = np.asarray(labels).ravel()
    b = np.asarray(clusters).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labels and clusters differ in length: {a.size} vs {b.size}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    ka = int(ai.max()) + 1 if a.size else 0
    kb = int(bi.max()) + 1 if b.size else 0
    if ka == kb and ka <= 1:
        return 1.0
    if ka == 1 or kb == 1:
        return 0.0
    n = float(a.size)
    pair, n_ij = np.unique(ai.astype(np.int64) * kb + bi, return_counts=True)
    row = np.bincount(ai, minlength=ka).astype(np.float64)
    col = np.bincount(bi, minlength=kb).astype(np.float64)
    n_ij = n_ij.astype(np.float64)
    outer = row[pair // kb] * col[pair % kb]
    mi = float(np.sum(n_ij / n * (np.log(n_ij) + math.log(n) - np.log(outer))))
    if mi <= 1e-15:
        return 0.0

    def entropy(counts: np.ndarray) -> float:
        prob = counts / n
        return float(-np.sum(prob * np.log(prob)))

    return mi / ((entropy(row) + entropy(col)) / 2.0)


def kmeans_clusters(
    embeddings: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    niter: int = DEFAULT_KMEANS_NITER,
    nredo: int = 1,
) -> np.ndarray:
    """Cluster ids from FAISS k-means on the L2-normalised embeddings (all points used)."""
    x = l2_normalize(embeddings)
    n, d = x.shape
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    km = faiss.Kmeans(
        d,
        int(k),
        niter=int(niter),
        nredo=int(nredo),
        seed=int(seed),
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max(256, -(-n // k) + 1),
    )
    with faiss_threads(float(n) * k * d * (niter + 1) * nredo):
        km.train(x)
        _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64)


def kmeans_nmi(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
    niter: int = DEFAULT_KMEANS_NITER,
    nredo: int = 1,
) -> float:
    """NMI between labels and FAISS k-means clusters, k = number of distinct labels."""
    lab = _labels(labels, np.asarray(embeddings).shape[0], "labels")
    k = int(np.unique(lab).size)
    return nmi_from_clusters(lab, kmeans_clusters(embeddings, k, seed=seed, niter=niter, nredo=nredo))
