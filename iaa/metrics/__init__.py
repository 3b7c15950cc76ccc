"""Retrieval and clustering metrics for deep metric learning: Recall@K, MAP@R, R-precision, NMI.

The public API, with its conventions, is :mod:`iaa.metrics.retrieval`, re-exported here:

- :mod:`iaa.metrics.retrieval`: ``retrieval_metrics``, ``recall_at_k``, ``map_at_r_and_rp``,
  ``first_positive_ranks`` and their result types;
- :mod:`iaa.metrics.problem`: the inputs as a problem (unit rows, dense class ids, positives);
- :mod:`iaa.metrics.scores`: the float32 rounding bound and exact float64 re-scoring of near-ties;
- :mod:`iaa.metrics.ranks`: exact ranks of each query's positives, from dense score rows or
  from the blocked pass;
- :mod:`iaa.metrics.counter`: per query, the negatives ranked before each positive;
- :mod:`iaa.metrics.scan`: the blocked pass over the score matrix and its bfloat16 screening;
- :mod:`iaa.metrics.approximate`: ranks from a FAISS IVF or HNSW index;
- :mod:`iaa.metrics.clustering`: NMI from FAISS k-means (``nmi_from_clusters``, ``kmeans_nmi``).

Switches read at call time live in their own modules, and only setting them there takes
effect: ``iaa.metrics.scan.SCREEN`` and ``iaa.metrics.ranks.DENSE_GALLERY_MAX`` (re-exported
here for reading).
"""

from iaa.metrics.clustering import DEFAULT_KMEANS_NITER, kmeans_clusters, kmeans_nmi, nmi_from_clusters
from iaa.metrics.ranks import DENSE_GALLERY_MAX
from iaa.metrics.retrieval import (
    MapAtR,
    RecallAtK,
    first_positive_ranks,
    map_at_r_and_rp,
    recall_at_k,
    retrieval_metrics,
)
from iaa.metrics.scan import DEFAULT_BLOCK_SIZE

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_KMEANS_NITER",
    "DENSE_GALLERY_MAX",
    "MapAtR",
    "RecallAtK",
    "first_positive_ranks",
    "kmeans_clusters",
    "kmeans_nmi",
    "map_at_r_and_rp",
    "nmi_from_clusters",
    "recall_at_k",
    "retrieval_metrics",
]
