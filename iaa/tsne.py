"""Fig. 14 of the paper (SPEC 7), :func:`tsne_figure`: t-SNE of originals and IAA synthetic samples
of a few classes, drawn from exported embeddings.

Embeddings are read and the PNG and CSV written as :mod:`iaa.figure_io` says (``source_row`` is a
0-based row number in the embeddings Parquet file). matplotlib, torch and scikit-learn are
imported inside the functions: the ``iaa`` command imports this module at start-up.
"""

from __future__ import annotations

import argparse
import logging
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from iaa.cli_args import nonnegative_float, nonnegative_int, positive_float, positive_int
from iaa.errors import IAAError
from iaa.figure_io import PathLike, agg_pyplot, normalise, positive, read, save_csv, save_figure

log = logging.getLogger(__name__)

TSNE_COLUMNS = ("x", "y", "label", "kind", "source_row")


@dataclass(frozen=True)
class SyntheticPoints:
    """Originals of the chosen classes and their synthetic samples, all RAW (not normalised).

    ``original_index`` (n,) indexes the arrays given to :func:`synthetic_points`;
    ``synthetic_source`` (n*copies,) is the position in ``originals`` each synthetic row
    derives from (copy-major, as :func:`iaa.method.synthesize`).
    """

    classes: np.ndarray  # (classes,) chosen labels, ascending
    originals: np.ndarray  # (n, D) float32
    original_labels: np.ndarray  # (n,)
    original_index: np.ndarray  # (n,)
    synthetic: np.ndarray  # (n*copies, D) float32
    synthetic_labels: np.ndarray  # (n*copies,)
    synthetic_source: np.ndarray  # (n*copies,)
    variance: np.ndarray  # (classes, D) float64, the diagonal variance used per chosen class


def synthetic_points(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    classes: int = 10,
    per_class: int = 20,
    copies: int = 3,
    lam: float = 0.8,
    seed: int = 0,
) -> SyntheticPoints:
    """Pick ``classes`` random classes with >= 2 rows (``seed``), up to ``per_class`` random rows
    of each, and draw ``copies`` synthetic samples per row with :func:`iaa.method.synthesize`
    (SPEC 2.3: ``z + sqrt(lam) * sigma_y * eps``).

    ``sigma_y`` is the square root of the class's diagonal variance (SPEC 2.1) over ALL its rows in
    ``embeddings`` (raw): the biased variance, which is what :class:`iaa.method.ClassStatistics`
    holds after one update from empty.
    """
    import torch

    from iaa.method import synthesize

    if classes < 1 or per_class < 1 or copies < 1:
        raise IAAError(
            f"classes, per_class and copies must be at least 1, got {classes}, {per_class}, {copies}"
        )
    if lam < 0:
        raise IAAError(f"lam must be non-negative, got {lam}")
    x = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    eligible = values[counts >= 2]
    if len(eligible) < classes:
        raise IAAError(
            f"t-SNE of {classes} classes needs {classes} classes with >= 2 images, found {len(eligible)}"
        )
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(eligible, size=classes, replace=False))
    index, variance = [], np.empty((classes, x.shape[1]), dtype=np.float64)
    for k, label in enumerate(chosen):
        members = np.flatnonzero(labels == label)
        variance[k] = x[members].astype(np.float64).var(axis=0)
        take = min(per_class, len(members))
        index.append(np.sort(rng.choice(members, size=take, replace=False)))
    original_index = np.concatenate(index)
    originals = x[original_index]
    position = np.searchsorted(chosen, labels[original_index])  # class position 0..classes-1
    generator = torch.Generator().manual_seed(seed)
    synth = synthesize(
        torch.from_numpy(originals),
        torch.from_numpy(position.astype(np.int64)),
        torch.from_numpy(np.sqrt(variance)).to(torch.float32),
        lam=lam,
        copies=copies,
        generator=generator,
    )
    source = synth.source.numpy()
    return SyntheticPoints(
        classes=chosen,
        originals=originals,
        original_labels=labels[original_index],
        original_index=original_index,
        synthetic=synth.embeddings.numpy(),
        synthetic_labels=labels[original_index][source],
        synthetic_source=source,
        variance=variance,
    )


def tsne_figure(
    embeddings_path: PathLike,
    out_png: PathLike,
    out_csv: PathLike,
    *,
    split: str = "train",
    classes: int = 10,
    per_class: int = 20,
    copies: int = 3,
    lam: float = 0.8,
    seed: int = 0,
    perplexity: float = 30,
) -> pd.DataFrame:
    """Fig. 14: t-SNE of originals and IAA synthetic samples of ``classes`` random classes.

    Points come from :func:`synthetic_points` on the ``split``'s rows; originals and synthetics
    are L2-normalised, then embedded together by ``sklearn.manifold.TSNE(random_state=seed)``
    (``perplexity`` lowered below the number of points when it is not). Originals are filled
    dots, synthetic samples crosses of the same class colour.

    sigma is estimated from the exported embeddings in this file (the final model's, by default
    the train split), NOT the training-time running estimate (SPEC 2.1's merged statistics that
    the synthesis used during training): those are not saved with the embeddings.

    CSV columns: x, y, label, kind (original/synthetic), source_row (the Parquet row of the
    original; a synthetic sample's is that of the original it was drawn around).
    """
    positive("perplexity", perplexity)
    try:
        from sklearn.manifold import TSNE
    except ImportError as err:
        raise IAAError("the t-SNE figure needs scikit-learn: pip install scikit-learn") from err
    table, rows = read(embeddings_path, [split], with_paths=False)
    pts = synthetic_points(
        table.embeddings,
        table.labels,
        classes=classes,
        per_class=per_class,
        copies=copies,
        lam=lam,
        seed=seed,
    )
    n = len(pts.originals)
    points = normalise(np.concatenate([pts.originals, pts.synthetic]))
    used = min(float(perplexity), max(1.0, (len(points) - 1) / 3.0))
    if used != perplexity:
        log.info("perplexity %.3g lowered to %.3g for %d points", perplexity, used, len(points))
    xy = TSNE(
        n_components=2, perplexity=used, random_state=seed, init="pca", learning_rate="auto"
    ).fit_transform(points)
    file_rows = rows[pts.original_index]
    frame = pd.DataFrame(
        {
            "x": xy[:, 0],
            "y": xy[:, 1],
            "label": np.concatenate([pts.original_labels, pts.synthetic_labels]).astype(np.int64),
            "kind": ["original"] * n + ["synthetic"] * len(pts.synthetic),
            "source_row": np.concatenate([file_rows, file_rows[pts.synthetic_source]]).astype(np.int64),
        }
    )
    plt = agg_pyplot()
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if classes <= 10 else "tab20"]
    colours = [cmap(k % cmap.N) for k in range(classes)]
    fig, ax = plt.subplots(figsize=(7.5, 7.2))
    for k, label in enumerate(pts.classes):
        mine = frame["label"].to_numpy() == label
        syn = mine & (frame["kind"].to_numpy() == "synthetic")
        org = mine & (frame["kind"].to_numpy() == "original")
        ax.scatter(frame.x[syn], frame.y[syn], marker="x", s=14, linewidths=0.8, color=colours[k], alpha=0.7)
        ax.scatter(
            frame.x[org], frame.y[org], marker="o", s=24, color=colours[k], edgecolors="black",
            linewidths=0.4, label=f"class {label}",
        )  # fmt: skip
    ax.set_xlabel("t-SNE dimension 1")
    ax.set_ylabel("t-SNE dimension 2")
    ax.set_title(
        f"Fig. 14: t-SNE of {classes} {split} classes: originals (dots) and IAA synthetic samples "
        f"(crosses, M={copies}, λ={lam:g})",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="best", ncol=2, markerscale=0.8)
    caption = (
        f"σ is the diagonal standard deviation of each class over all its exported {split} embeddings "
        f"of the final model ({Path(embeddings_path).name}), not the training-time running estimate; "
        f"up to {per_class} originals per class, seed {seed}, perplexity {used:g}."
    )
    fig.text(0.5, 0.01, textwrap.fill(caption, 120), ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(fig, out_png)
    save_csv(frame.loc[:, list(TSNE_COLUMNS)], out_csv)
    log.info("t-SNE of %d originals and %d synthetic samples of %d classes", n, len(pts.synthetic), classes)
    return frame


# --------------------------------------------------------------------------- command line


def _cmd_tsne(a: argparse.Namespace) -> None:
    tsne_figure(
        a.embeddings, a.out, a.csv, split=a.split, classes=a.classes, per_class=a.per_class,
        copies=a.copies, lam=a.lam, seed=a.seed, perplexity=a.perplexity,
    )  # fmt: skip


def register(
    stage: Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser],
) -> None:
    """Add the subcommand ``tsne`` (Fig. 14); ``stage(name, fn, help)`` returns a subcommand's parser
    (as in iaa.cli.build_parser)."""
    sp = stage("tsne", _cmd_tsne, "Fig. 14: t-SNE of originals and IAA synthetic samples -> PNG, CSV")
    sp.add_argument("embeddings", type=Path, help="embeddings Parquet (export) of the final model")
    sp.add_argument("--out", type=Path, required=True, help="figure (PNG)")
    sp.add_argument("--csv", type=Path, required=True, help="t-SNE coordinates (CSV)")
    sp.add_argument("--split", default="train", help="split whose classes are drawn (default: train)")
    sp.add_argument("--classes", type=positive_int, default=10, help="random classes drawn (default: 10)")
    sp.add_argument(
        "--per-class", type=positive_int, default=20, help="originals per class, at most (default: 20)"
    )
    sp.add_argument(
        "--copies", type=positive_int, default=3, help="synthetic samples M per original (default: 3)"
    )
    sp.add_argument(
        "--lam", type=nonnegative_float, default=0.8, help="synthesis strength λ, unitless (default: 0.8)"
    )
    sp.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        help="random seed: classes, originals, noise, t-SNE (default: 0)",
    )
    sp.add_argument(
        "--perplexity", type=positive_float, default=30, help="t-SNE perplexity, in points (default: 30)"
    )
