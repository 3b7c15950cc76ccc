"""Stage ``stats``: per-class statistics of an embeddings file, and the Table I correlation.

One row per class of the chosen split: image count, mean, variance (the diagonal of Σ,
computed on the raw embeddings in one pass, SPEC 2.1), the neighbor-corrected variance
and α (SPEC 2.2, defaults K=25, β=0.1, γ=0.1, τ=40). With ``correlation_out``, the
analysis behind the paper's Table I / VIII: for each class, the Spearman correlation
between its row of D_m(i, j) = ||μ_i² - μ_j²||_p and its row of D_cv(i, j) = ||σ²_i - σ²_j||_p
over the other classes, averaged over classes, for p = 1, 2, 3, 4 (keys ``spearman_p<p>``),
and under ``pairs`` the same for the four pairs of Table VIII (:data:`PAIRS`):
``{"mu2-sigma": {"1": rho, ...}, "mu-sigma": ..., "mu2-sigma2": ..., "mu-sigma2": ...}``.
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

from iaa.atomic import atomic_path
from iaa.errors import IAAError
from iaa.io import read_embeddings, write_json
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


# Table VIII: (mean transform, covariance transform) of each pair, keyed as in the correlation JSON.
PAIRS: dict[str, tuple[str, str]] = {
    "mu2-sigma": ("mu2", "sigma"),  # ||mu_i^2 - mu_j^2||_p vs ||Sigma_i - Sigma_j||_p (Table I)
    "mu-sigma": ("mu", "sigma"),  # ||mu_i - mu_j||_p vs ||Sigma_i - Sigma_j||_p
    "mu2-sigma2": ("mu2", "sigma2"),  # ||mu_i^2 - mu_j^2||_p vs ||Sigma_i^2 - Sigma_j^2||_p
    "mu-sigma2": ("mu", "sigma2"),  # ||mu_i - mu_j||_p vs ||Sigma_i^2 - Sigma_j^2||_p
}


def _centred_ranks(x: torch.Tensor, rows: torch.Tensor, p: float) -> torch.Tensor:
    """Centred ranks of the p-norm distances from ``x[rows]`` to every row of ``x``, self dropped."""
    d = torch.cdist(x[rows], x, p=p)
    keep = torch.ones_like(d, dtype=torch.bool)
    keep[torch.arange(len(rows)), rows] = False  # drop the class itself
    r = _ranks(d[keep].view(len(rows), x.shape[0] - 1))
    return r - r.mean(dim=1, keepdim=True)


def pair_correlations(
    mean: torch.Tensor,
    var: torch.Tensor,
    ps: Sequence[int] = (1, 2, 3, 4),
    chunk_size: int = 1024,
    pairs: Sequence[str] = tuple(PAIRS),
) -> dict[str, dict[int, float]]:
    """Table VIII: for each pair of :data:`PAIRS` and each p-norm, the mean over classes of the
    Spearman correlation between a class's row of mean distances and its row of covariance
    distances over the other classes. ``mu2`` is the element-wise square of the mean, ``sigma``
    the diagonal covariance ``var``, ``sigma2`` its element-wise square. Rows are processed
    ``chunk_size`` at a time (memory O(chunk_size x C) per distance kind)."""
    unknown = [name for name in pairs if name not in PAIRS]
    if unknown:
        raise ValueError(f"unknown correlation pairs {unknown}; expected some of {tuple(PAIRS)}")
    c = mean.shape[0]
    if c < 3:
        raise IAAError(f"the correlation needs at least 3 classes, got {c}")
    m, v = mean.double(), var.double()
    sources = {"mu": m, "mu2": m.square(), "sigma": v, "sigma2": v.square()}
    needed = sorted({kind for name in pairs for kind in PAIRS[name]})
    out: dict[str, dict[int, float]] = {name: {} for name in pairs}
    for p in ps:
        totals = dict.fromkeys(pairs, 0.0)
        for r0 in range(0, c, chunk_size):
            rows = torch.arange(r0, min(c, r0 + chunk_size))
            ranks = {kind: _centred_ranks(sources[kind], rows, float(p)) for kind in needed}
            norms = {kind: r.square().sum(1).sqrt() for kind, r in ranks.items()}
            for name in pairs:
                a, b = PAIRS[name]
                rho = (ranks[a] * ranks[b]).sum(1) / (norms[a] * norms[b])
                totals[name] += float(rho.sum())
        for name in pairs:
            out[name][p] = totals[name] / c
    return out


def distance_correlation(
    mean: torch.Tensor, var: torch.Tensor, ps: Sequence[int] = (1, 2, 3, 4), chunk_size: int = 1024
) -> dict[int, float]:
    """Table I: mean over classes of Spearman(D_m row, D_cv row), self excluded, for each p-norm
    (the pair ``"mu2-sigma"`` of :func:`pair_correlations`)."""
    return pair_correlations(mean, var, ps, chunk_size, pairs=("mu2-sigma",))["mu2-sigma"]


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
    pairs: Sequence[str] = tuple(PAIRS),
) -> ClassTable:
    """Write the per-class statistics Parquet (and the correlation JSON) of one split.

    ``pairs``: the distance pairs of the correlation JSON's ``pairs`` (Table VIII's four by
    default); ``"mu2-sigma"`` (Table I) is always computed. Each costs C^2 distances per p, so
    the workflow asks for all four only on the runs Table VIII reads."""
    unknown = set(pairs) - set(PAIRS)
    if unknown:
        raise IAAError(f"unknown distance pair(s) {sorted(unknown)}; known: {', '.join(PAIRS)}")
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
        wanted = tuple(dict.fromkeys(("mu2-sigma", *pairs)))
        correlations = pair_correlations(stats.mean[valid], stats.var[valid], ps, pairs=wanted)
        rho = correlations["mu2-sigma"]
        payload: dict = {f"spearman_p{p}": value for p, value in rho.items()}
        payload.update(num_classes=int(valid.sum()), split=split, source=str(embeddings_path))
        payload["pairs"] = {
            name: {str(p): value for p, value in values.items()} for name, values in correlations.items()
        }
        write_json(correlation_out, payload)
        log.info("Spearman(D_m, D_cv): %s", ", ".join(f"p={p}: {v:.3f}" for p, v in rho.items()))
    return stats
