"""Stage ``stats``: per-class statistics of an embeddings file, and the Table I correlation.

One row per class of the chosen split: image count, mean, variance (the diagonal of Σ,
computed on the raw embeddings in one pass, SPEC 2.1), the neighbor-corrected variance
and α (SPEC 2.2, defaults K=25, β=0.1, γ=0.1, τ=40). With ``correlation_out``, the
analysis behind the paper's Table I / VIII: for each class, the Spearman correlation
between its row of D_m(i, j) = ||μ_i² - μ_j²||_p and its row of D_cv(i, j) = ||σ²_i - σ²_j||_p
over the other classes, averaged over classes, for p = 1, 2, 3, 4.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from iaa.errors import IAAError
from iaa.io import atomic_path, read_embeddings, write_json
from iaa.method import ClassStatistics, neighbor_correction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassTable:
    labels: np.ndarray  # (C,) the class ids as in the embeddings file
    count: torch.Tensor  # (C,) float64
    mean: torch.Tensor  # (C, D) float64
    var: torch.Tensor  # (C, D) float64


def class_table(embeddings: np.ndarray, labels: np.ndarray) -> ClassTable:
    """Class means and biased variances from one pass (a fresh estimator takes the set as is)."""
    classes, index = np.unique(labels, return_inverse=True)
    stats = ClassStatistics(len(classes), embeddings.shape[1])
    stats.update(torch.from_numpy(np.ascontiguousarray(embeddings)), torch.from_numpy(index.astype(np.int64)))
    return ClassTable(classes, stats.count.clone(), stats.mean.clone(), stats.var.clone())


def _ranks(rows: torch.Tensor) -> torch.Tensor:
    """Ranks along each row (0..n-1); distances between distinct classes are continuous, so
    exact ties are negligible and get consecutive ranks."""
    return rows.argsort(dim=1).argsort(dim=1).double()


def distance_correlation(
    mean: torch.Tensor, var: torch.Tensor, ps: Sequence[int] = (1, 2, 3, 4), chunk_size: int = 1024
) -> dict[int, float]:
    """Mean over classes of Spearman(D_m row, D_cv row), self excluded, for each p-norm."""
    c = mean.shape[0]
    if c < 3:
        raise IAAError(f"the correlation needs at least 3 classes, got {c}")
    sq_mean = mean.double().square()
    v = var.double()
    out: dict[int, float] = {}
    for p in ps:
        total = 0.0
        for r0 in range(0, c, chunk_size):
            rows = torch.arange(r0, min(c, r0 + chunk_size))
            d_m = torch.cdist(sq_mean[rows], sq_mean, p=float(p))
            d_cv = torch.cdist(v[rows], v, p=float(p))
            keep = torch.ones_like(d_m, dtype=torch.bool)
            keep[torch.arange(len(rows)), rows] = False  # drop the class itself
            d_m = d_m[keep].view(len(rows), c - 1)
            d_cv = d_cv[keep].view(len(rows), c - 1)
            a, b = _ranks(d_m), _ranks(d_cv)
            a = a - a.mean(dim=1, keepdim=True)
            b = b - b.mean(dim=1, keepdim=True)
            rho = (a * b).sum(1) / (a.square().sum(1).sqrt() * b.square().sum(1).sqrt())
            total += float(rho.sum())
        out[p] = total / c
    return out


def _list_column(values: torch.Tensor) -> pa.FixedSizeListArray:
    flat = values.float().contiguous().numpy().reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), values.shape[1])


def stats_stage(
    embeddings_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    split: str = "train",
    k: int = 25,
    beta: float = 0.1,
    gamma: float = 0.1,
    tau: float = 40.0,
    correlation_out: str | os.PathLike[str] | None = None,
    ps: Sequence[int] = (1, 2, 3, 4),
) -> ClassTable:
    """Write the per-class statistics Parquet (and the correlation JSON) of one split."""
    table = read_embeddings(embeddings_path, splits=[split], with_paths=False)
    stats = class_table(table.embeddings, table.labels)
    result = neighbor_correction(stats.mean, stats.var, stats.count, k=k, beta=beta, gamma=gamma, tau=tau)
    arrow = pa.table(
        {
            "label": pa.array(stats.labels.astype(np.int64)),
            "count": pa.array(stats.count.numpy().astype(np.int64)),
            "mean": _list_column(stats.mean),
            "var": _list_column(stats.var),
            "var_corrected": _list_column(result.var_corrected),
            "alpha": pa.array(result.alpha.double().numpy()),
        }
    )
    with atomic_path(out_path) as tmp:
        pq.write_table(arrow, tmp)
    log.info("%d classes of split %s: %d with fewer than tau=%g images", len(stats.labels), split,
             int((stats.count < tau).sum()), tau)  # fmt: skip
    if correlation_out is not None:
        valid = stats.count > 1  # single-image classes have no variance
        rho = distance_correlation(stats.mean[valid], stats.var[valid], ps)
        payload = {f"spearman_p{p}": value for p, value in rho.items()}
        payload.update(num_classes=int(valid.sum()), split=split, source=str(embeddings_path))
        write_json(correlation_out, payload)
        log.info("Spearman(D_m, D_cv): %s", ", ".join(f"p={p}: {v:.3f}" for p, v in rho.items()))
    return stats
