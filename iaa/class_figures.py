"""Class-level figures of the paper drawn from the stats Parquet (``iaa stats --out``).

- Fig. 3/4, :func:`scatter_figure`: mean distance ``||mu_i^2 - mu_j^2||_p`` against covariance
  distance ``||Sigma_i - Sigma_j||_p`` for class pairs ``i < j`` of the classes with at least
  ``min_count`` images (the paper: more than 5), at most ``max_pairs`` pairs drawn at random.
- Fig. 5, :func:`global_distance_figure`: ``||Sigma_k - Sigma_global||_p`` of every class,
  uncorrected and neighbour-corrected, against its image count.
- Fig. 9a, :func:`alpha_figure`: alpha of Eq. 16 against ``n_k`` for several beta.

Sigma is the diagonal covariance (the ``var`` column), so the norms are over its diagonal.
Each figure writes a PNG (matplotlib, Agg backend) and a CSV of the points drawn, atomically.
Heavy modules (numpy, torch, pyarrow, matplotlib) are imported inside the functions: the
``iaa`` command imports this module at start-up to register the ``class-figures`` subcommand.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from iaa.cli_args import (
    ListAction,
    at_least_one,
    nonnegative_float,
    nonnegative_int,
    positive_float_list,
    positive_int,
)
from iaa.errors import IAAError

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

PathLike = str | os.PathLike[str]
# iaa/cli.py's stage(name, fn, help) -> the subcommand's parser
Stage = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]

STATS_COLUMNS = ("label", "count", "mean", "var", "var_corrected", "alpha")
SCATTER_COLUMNS = ("class_i", "class_j", "mean_distance", "covariance_distance")
GLOBAL_COLUMNS = ("label", "count", "distance", "distance_corrected")
ALPHA_COLUMNS = ("n", "beta", "alpha")
DEFAULT_BETAS = (0.05, 0.1, 0.2, 0.5, 1.0)

_NORM = {1: "\u2081", 2: "\u2082", 3: "\u2083", 4: "\u2084"}  # subscripts of the common p


# --------------------------------------------------------------------------- helpers


def _p_label(p: float) -> str:
    return _NORM.get(int(p), f"_{p:g}") if float(p).is_integer() else f"_{p:g}"


def _check_p(p: float) -> float:
    if not p >= 1:
        raise IAAError(f"the norm order p must be at least 1, got {p:g}")
    return float(p)


def _norms(diff: np.ndarray, p: float) -> np.ndarray:
    """Row-wise p-norms of ``diff`` in float64."""
    import numpy as np

    return (np.abs(diff) ** p).sum(axis=1) ** (1.0 / p)


def read_class_stats(stats_path: PathLike, columns: Sequence[str] = STATS_COLUMNS) -> dict[str, np.ndarray]:
    """The stats Parquet as float64/int64 arrays: vector columns (C, D), scalar columns (C,).

    Raises a one-line :class:`IAAError` for a missing file, missing columns or ragged vectors.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from iaa.io import require_file

    path = require_file(stats_path, "stats Parquet")
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as err:
        raise IAAError(f"not a readable Parquet file: {path} ({str(err).splitlines()[0]})") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise IAAError(f"stats file {path} lacks column(s) {', '.join(missing)} (written by `iaa stats`)")
    table = pq.read_table(path, columns=list(columns))
    out: dict[str, np.ndarray] = {}
    for name in columns:
        col = table.column(name).combine_chunks()
        if (
            pa.types.is_list(col.type)
            or pa.types.is_fixed_size_list(col.type)
            or pa.types.is_large_list(col.type)
        ):
            flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
            if len(col) and flat.size % len(col):
                raise IAAError(f"stats file {path}: column {name} holds vectors of unequal length")
            out[name] = flat.reshape(len(col), -1 if len(col) else 0)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def _usable(stats_path: PathLike, keep: np.ndarray, what: str) -> None:
    n = int(keep.sum())
    if n < 2:
        raise IAAError(f"stats file {stats_path}: {what} needs at least 2 classes, found {n}")


def _write_csv(out_csv: PathLike, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """CSV with a header; floats written with repr (round-trips exactly)."""
    import csv

    from iaa.atomic import atomic_path

    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)


def _new_figure(size: tuple[float, float] = (6.0, 4.5)) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global state
    return fig


def _save_png(fig: Figure, out_png: PathLike) -> None:
    from iaa.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def _pair_index(n: int, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map linear indices ``k`` of the pairs i < j of ``n`` items (row-major order) to (i, j)."""
    import numpy as np

    i_all = np.arange(n, dtype=np.int64)
    start = i_all * n - i_all * (i_all + 1) // 2  # index of the pair (i, i + 1)
    i = np.searchsorted(start, k, side="right") - 1
    j = i + 1 + (k - start[i])
    return i, j


# --------------------------------------------------------------------------- figures


def scatter_figure(
    stats_path: PathLike,
    out_png: PathLike | None,
    out_csv: PathLike | None,
    *,
    p: float = 2,
    min_count: int = 6,
    max_pairs: int = 20000,
    seed: int = 0,
) -> dict[str, float]:
    """Fig. 3/4: ``||mu_i^2 - mu_j^2||_p`` against ``||Sigma_i - Sigma_j||_p`` over class pairs.

    Classes with ``count >= min_count`` take part; of their pairs ``i < j`` (in the file's row
    order) at most ``max_pairs`` are drawn uniformly without replacement with ``seed``, and
    kept in pair order. The title gives the Spearman correlation over the plotted pairs.
    Returns ``{"spearman": rho, "pairs": n_pairs, "classes": n_classes}``.
    """
    import numpy as np
    from scipy.stats import spearmanr

    p = _check_p(p)
    if max_pairs < 1:
        raise IAAError(f"max_pairs must be positive, got {max_pairs}")
    s = read_class_stats(stats_path, ("label", "count", "mean", "var"))
    keep = s["count"] >= min_count
    _usable(stats_path, keep, f"the scatter (classes with at least {min_count} images)")
    labels, sq_mean, var = s["label"][keep], s["mean"][keep] ** 2, s["var"][keep]
    n = len(labels)
    total = n * (n - 1) // 2
    rng = np.random.default_rng(seed)
    k = np.sort(rng.choice(total, size=min(max_pairs, total), replace=False)).astype(np.int64)
    i, j = _pair_index(n, k)
    mean_d = np.empty(len(k))
    cov_d = np.empty(len(k))
    for a in range(0, len(k), 4096):  # bounded memory: 4096 x D differences at a time
        b = slice(a, a + 4096)
        mean_d[b] = _norms(sq_mean[i[b]] - sq_mean[j[b]], p)
        cov_d[b] = _norms(var[i[b]] - var[j[b]], p)
    rho = float(spearmanr(mean_d, cov_d).statistic) if len(k) > 1 else float("nan")
    if out_csv is not None:
        _write_csv(out_csv, SCATTER_COLUMNS, zip(labels[i].tolist(), labels[j].tolist(),
                                                 mean_d.tolist(), cov_d.tolist()))  # fmt: skip
    if out_png is not None:
        sub = _p_label(p)
        fig = _new_figure()
        ax = fig.add_subplot()
        ax.scatter(mean_d, cov_d, s=4, alpha=0.4 if len(k) > 2000 else 0.7, linewidths=0)
        ax.set_xlabel(f"mean distance \u2016\u03bc\u1d62\u00b2 \u2212 \u03bc\u2c7c\u00b2\u2016{sub} "
                      "(embedding units\u00b2)")  # fmt: skip
        ax.set_ylabel(f"covariance distance \u2016\u03a3\u1d62 \u2212 \u03a3\u2c7c\u2016{sub} "
                      "(embedding units\u00b2)")  # fmt: skip
        ax.set_title(f"Spearman \u03c1 = {rho:.3f} over {len(k)} class pairs "
                     f"({n} classes with \u2265 {min_count} images, p = {p:g})", fontsize=9)  # fmt: skip
        ax.grid(alpha=0.3)
        _save_png(fig, out_png)
    return {"spearman": rho, "pairs": int(len(k)), "classes": int(n)}


def global_distance_figure(
    stats_path: PathLike, out_png: PathLike | None, out_csv: PathLike | None, *, p: float = 2
) -> dict[str, float]:
    """Fig. 5: ``||Sigma_k - Sigma_global||_p`` of each class against its image count.

    ``Sigma_global`` is :func:`iaa.method.correction.global_variance` of the uncorrected
    variances (count-weighted over classes with more than one image); both the uncorrected
    (``var``) and the corrected (``var_corrected``) distances are taken to it. Every class of
    the file is drawn; a single-image class has ``var = 0``, so its uncorrected distance is
    ``||Sigma_global||_p``. Needs at least 2 classes with more than one image. Returns
    ``{"classes": C, "median_distance": ..., "median_distance_corrected": ...}``.
    """
    import numpy as np
    import torch

    from iaa.method.correction import global_variance

    p = _check_p(p)
    s = read_class_stats(stats_path, ("label", "count", "var", "var_corrected"))
    count = s["count"].astype(np.int64)
    _usable(stats_path, count > 1, "the global-covariance distance (classes with more than 1 image)")
    g = global_variance(torch.from_numpy(s["var"]), torch.from_numpy(count)).numpy()
    dist = _norms(s["var"] - g, p)
    dist_cr = _norms(s["var_corrected"] - g, p)
    if out_csv is not None:
        _write_csv(out_csv, GLOBAL_COLUMNS, zip(s["label"].tolist(), count.tolist(),
                                                dist.tolist(), dist_cr.tolist()))  # fmt: skip
    if out_png is not None:
        sub = _p_label(p)
        fig = _new_figure()
        ax = fig.add_subplot()
        ax.scatter(count, dist, s=6, alpha=0.6, linewidths=0, color="tab:blue",
                   label="\u03a3\u2096 (uncorrected)")  # fmt: skip
        ax.scatter(count, dist_cr, s=6, alpha=0.6, linewidths=0, color="tab:orange",
                   label="\u03a3\u2096\u1d9c\u02b3 (neighbour-corrected)")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("images in the class n\u2096 (count, log scale)")
        ax.set_ylabel(f"\u2016\u03a3\u2096 \u2212 \u03a3_global\u2016{sub} (embedding units\u00b2)")
        ax.set_title(f"distance of each class covariance to the global covariance ({len(count)} classes, "
                     f"p = {p:g})", fontsize=9)  # fmt: skip
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        _save_png(fig, out_png)
    return {
        "classes": int(len(count)),
        "median_distance": float(np.median(dist)),
        "median_distance_corrected": float(np.median(dist_cr)),
    }


def alpha_figure(
    out_png: PathLike | None,
    out_csv: PathLike | None,
    *,
    betas: Sequence[float] = DEFAULT_BETAS,
    tau: float = 40,
    n_max: int = 100,
) -> None:
    """Fig. 9a: alpha of Eq. 16 (:func:`iaa.method.correction.correction_alpha`) against
    ``n_k = 1..n_max`` for each beta; alpha is 0 from ``n_k = tau`` on. CSV rows (n, beta,
    alpha), beta-major."""
    import torch

    from iaa.method.correction import correction_alpha

    betas = [float(b) for b in betas]
    if not betas:
        raise IAAError("alpha figure: give at least one beta")
    if any(not b > 0 for b in betas):
        raise IAAError(f"alpha figure: every beta must be positive, got {betas}")
    if n_max < 1:
        raise IAAError(f"alpha figure: n_max must be at least 1, got {n_max}")
    n = torch.arange(1, n_max + 1, dtype=torch.float64)
    curves = {b: correction_alpha(n, beta=b, tau=float(tau)).tolist() for b in betas}
    ns = list(range(1, n_max + 1))
    if out_csv is not None:
        _write_csv(
            out_csv, ALPHA_COLUMNS, [(k, b, a) for b, alpha in curves.items() for k, a in zip(ns, alpha)]
        )
    if out_png is not None:
        fig = _new_figure()
        ax = fig.add_subplot()
        for b, alpha in curves.items():
            ax.plot(ns, alpha, drawstyle="steps-mid", label=f"\u03b2 = {b:g}")
        ax.axvline(float(tau), color="grey", linestyle=":", linewidth=1, label=f"\u03c4 = {float(tau):g}")
        ax.set_xlabel("images in the class n\u2096 (count)")
        ax.set_ylabel("\u03b1 (weight of the correction, unitless)")
        ax.set_title("\u03b1 = 1 / (1 + log(1 + \u03b2 (n\u2096 \u2212 1))) for n\u2096 < \u03c4, else 0",
                     fontsize=9)  # fmt: skip
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _save_png(fig, out_png)


# --------------------------------------------------------------------------- command line


def cmd_class_figures(a: argparse.Namespace) -> None:
    """Draw the figures whose outputs are given (a figure is drawn if its PNG or CSV is)."""
    scatter = a.scatter_png is not None or a.scatter_csv is not None
    global_ = a.global_png is not None or a.global_csv is not None
    alpha = a.alpha_png is not None or a.alpha_csv is not None
    if not (scatter or global_ or alpha):
        raise IAAError("class-figures: nothing to draw; give at least one of --scatter-png/--scatter-csv, "
                       "--global-png/--global-csv, --alpha-png/--alpha-csv")  # fmt: skip
    if (scatter or global_) and a.stats is None:
        raise IAAError("class-figures: the scatter and global-covariance figures need --stats")
    if scatter:
        scatter_figure(a.stats, a.scatter_png, a.scatter_csv, p=a.p, min_count=a.min_count,
                       max_pairs=a.max_pairs, seed=a.seed)  # fmt: skip
    if global_:
        global_distance_figure(a.stats, a.global_png, a.global_csv, p=a.p)
    if alpha:
        alpha_figure(a.alpha_png, a.alpha_csv, betas=a.betas, tau=a.tau, n_max=a.n_max)


def register(stage: Stage) -> None:
    """Add the ``class-figures`` subcommand through ``stage(name, fn, help)`` (iaa/cli.py)."""
    sp = stage(
        "class-figures",
        cmd_class_figures,
        "class-level figures from the stats Parquet: Fig. 3/4 mean vs covariance distance, "
        "Fig. 5 distance to the global covariance, Fig. 9a alpha vs n_k (PNG + CSV of the points)",
    )
    sp.add_argument(
        "--stats",
        type=Path,
        default=None,
        metavar="PATH",
        help="statistics Parquet written by `iaa stats --out` (needed by the scatter and global "
        "figures, not by alpha; default: none)",
    )
    for name, what in (
        ("scatter", "Fig. 3/4, mean distance vs covariance distance of class pairs"),
        ("global", "Fig. 5, distance of each class variance to the global variance vs image count"),
        ("alpha", "Fig. 9a, alpha vs n_k for each beta"),
    ):
        sp.add_argument(
            f"--{name}-png", type=Path, default=None, metavar="PATH", help=f"{what}: PNG (default: not drawn)"
        )
        sp.add_argument(
            f"--{name}-csv",
            type=Path,
            default=None,
            metavar="PATH",
            help=f"{what}: CSV of the points (default: not written)",
        )
    sp.add_argument(
        "--p", type=at_least_one, default=2.0,
        help="order of the norm ||.||_p of the distances, >= 1 (default: 2)",
    )  # fmt: skip
    sp.add_argument(
        "--min-count",
        type=positive_int,
        default=6,
        help="scatter: only classes with at least this many images (images; default: 6, i.e. more than 5)",
    )
    sp.add_argument(
        "--max-pairs",
        type=positive_int,
        default=20000,
        help="scatter: at most this many class pairs, drawn at random (pairs; default: 20000)",
    )
    sp.add_argument(
        "--betas",
        type=positive_float_list,
        action=ListAction,
        default=list(DEFAULT_BETAS),
        metavar="BETA",
        help="alpha: the beta of each curve (unitless), space- or comma-separated "
        "(default: 0.05 0.1 0.2 0.5 1.0)",
    )
    sp.add_argument(
        "--tau", type=nonnegative_float, default=40.0,
        help="alpha: alpha is 0 for classes with at least tau images (images; default: 40)",
    )  # fmt: skip
    sp.add_argument(
        "--n-max", type=positive_int, default=100,
        help="alpha: n_k runs from 1 to this (images; default: 100)",
    )  # fmt: skip
    sp.add_argument(
        "--seed", type=nonnegative_int, default=0,
        help="scatter: random seed of the drawn class pairs (default: 0)",
    )  # fmt: skip
