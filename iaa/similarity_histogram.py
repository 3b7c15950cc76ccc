"""Fig. 12 of the paper (SPEC 7), :func:`similarity_histogram`: cosine similarity of positive and
negative pairs of a split, baseline vs IAA, drawn from exported embeddings.

Embeddings are read and the PNG and CSV written as :mod:`iaa.figure_io` says. matplotlib is
imported inside the functions: the ``iaa`` command imports this module at start-up.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from iaa.cli_args import nonnegative_int, positive_int
from iaa.errors import IAAError
from iaa.figure_io import PathLike, agg_pyplot, normalise, save_csv, save_figure
from iaa.io import read_embeddings

log = logging.getLogger(__name__)

HISTOGRAM_COLUMNS = ("model", "pair", "bin_left", "bin_right", "density", "pairs", "mean_similarity")


def pair_indices(
    labels: np.ndarray, *, max_pairs: int = 200_000, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Index pairs ``(i, j)``, ``i < j``, of positive (same label) and negative pairs of ``labels``.

    Every positive pair is kept unless there are more than ``max_pairs`` (then ``max_pairs`` are
    drawn without replacement with ``seed``). Negatives likewise: all of them when there are at
    most ``max_pairs``, else ``max_pairs`` pairs drawn uniformly (with replacement, which at the
    sizes where it happens is the same for a histogram) from the pairs of different labels.
    """
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    pos_i, pos_j = [], []
    for start, count in zip(starts, counts):
        if count < 2:
            continue
        members = np.sort(order[start : start + count])
        a, b = np.triu_indices(count, 1)
        pos_i.append(members[a])
        pos_j.append(members[b])
    pi = np.concatenate(pos_i) if pos_i else np.zeros(0, dtype=np.int64)
    pj = np.concatenate(pos_j) if pos_j else np.zeros(0, dtype=np.int64)
    if len(pi) > max_pairs:
        keep = np.sort(rng.choice(len(pi), size=max_pairs, replace=False))
        pi, pj = pi[keep], pj[keep]
    total_negative = n * (n - 1) // 2 - int((counts * (counts - 1) // 2).sum())
    if total_negative <= max_pairs:
        a, b = np.triu_indices(n, 1)
        differ = labels[a] != labels[b]
        ni, nj = a[differ], b[differ]
    else:
        got_i, got_j, have = [], [], 0
        while have < max_pairs:
            i = rng.integers(0, n, size=2 * (max_pairs - have))
            j = rng.integers(0, n, size=2 * (max_pairs - have))
            ok = labels[i] != labels[j]
            got_i.append(np.minimum(i, j)[ok])
            got_j.append(np.maximum(i, j)[ok])
            have += int(ok.sum())
        ni = np.concatenate(got_i)[:max_pairs]
        nj = np.concatenate(got_j)[:max_pairs]
    return (pi.astype(np.int64), pj.astype(np.int64)), (ni.astype(np.int64), nj.astype(np.int64))


def pair_similarities(x: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Cosine similarity of rows ``i`` and ``j`` of ``x`` (L2-normalised here), clipped to [-1, 1]."""
    z = normalise(x)
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):
        out[s : s + chunk] = np.einsum("nd,nd->n", z[i[s : s + chunk]], z[j[s : s + chunk]])
    return np.clip(out, -1.0, 1.0)


def similarity_histogram(
    baseline_path: PathLike,
    iaa_path: PathLike,
    out_png: PathLike,
    out_csv: PathLike,
    *,
    split: str = "test",
    bins: int = 50,
    max_pairs: int = 200_000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Fig. 12: histograms of cosine similarity of positive and negative pairs, baseline vs IAA.

    Pairs are unordered (``i < j``) pairs of the ``split``'s rows: positive = same label,
    negative = different labels; embeddings are L2-normalised first. More than ``max_pairs``
    pairs of a kind are subsampled with ``seed`` (see :func:`pair_indices`). Histograms share
    ``bins`` equal bins over [-1, 1] and are densities (area 1). Two panels (baseline, IAA), each
    with the positive and the negative histogram.

    CSV columns: model (baseline/iaa), pair (positive/negative), bin_left, bin_right, density,
    then pairs (pairs in the histogram) and mean_similarity (their mean), the same on every row
    of a group. Returns ``{model: {pair: mean similarity}}`` (also logged).
    """
    if bins < 1 or max_pairs < 1:
        raise IAAError(f"bins and max_pairs must be at least 1, got {bins} and {max_pairs}")
    edges = np.linspace(-1.0, 1.0, bins + 1)
    frames, sims_of, summary = [], {}, {}
    for model, path in (("baseline", baseline_path), ("iaa", iaa_path)):
        table = read_embeddings(path, splits=[split], with_paths=False)
        (pi, pj), (ni, nj) = pair_indices(table.labels, max_pairs=max_pairs, seed=seed)
        if len(pi) == 0 or len(ni) == 0:
            kind = "positive" if len(pi) == 0 else "negative"
            raise IAAError(
                f"embeddings file {path} (split {split!r}) has no {kind} pairs: "
                "it needs a class with two images and two classes"
            )
        summary[model] = {}
        for pair, (i, j) in (("positive", (pi, pj)), ("negative", (ni, nj))):
            sims = pair_similarities(table.embeddings, i, j)
            density, _ = np.histogram(sims, bins=edges, density=True)
            mean = float(sims.mean())
            summary[model][pair] = mean
            sims_of[(model, pair)] = (sims, mean)
            frames.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "pair": pair,
                        "bin_left": edges[:-1],
                        "bin_right": edges[1:],
                        "density": density,
                        "pairs": len(sims),
                        "mean_similarity": mean,
                    }
                )
            )
            log.info("%s %s pairs (%s): %d, mean cosine similarity %.4f", model, pair, split, len(sims), mean)
    plt = agg_pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharex=True, sharey=True)
    widths = np.diff(edges)
    for ax, model, name in zip(axes, ("baseline", "iaa"), ("baseline", "IAA")):
        for pair, colour in (("positive", "tab:blue"), ("negative", "tab:orange")):
            sims, mean = sims_of[(model, pair)]
            density, _ = np.histogram(sims, bins=edges, density=True)
            ax.bar(
                edges[:-1], density, width=widths, align="edge", alpha=0.55, color=colour,
                label=f"{pair} pairs (n={len(sims):,}, mean {mean:.3f})",
            )  # fmt: skip
            ax.axvline(mean, color=colour, linestyle="--", linewidth=1)
        ax.set_title(f"{name}")
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("density")
    fig.suptitle(
        f"Fig. 12: cosine similarity of positive (same class) and negative pairs, {split} split, "
        "baseline vs IAA (dashed: means)"
    )
    fig.tight_layout()
    save_figure(fig, out_png)
    save_csv(pd.concat(frames, ignore_index=True).loc[:, list(HISTOGRAM_COLUMNS)], out_csv)
    return summary


# --------------------------------------------------------------------------- command line


def _cmd_similarity_histogram(a: argparse.Namespace) -> None:
    similarity_histogram(
        a.baseline, a.iaa, a.out, a.csv, split=a.split, bins=a.bins, max_pairs=a.max_pairs, seed=a.seed
    )


def register(
    stage: Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser],
) -> None:
    """Add the subcommand ``similarity-histogram`` (Fig. 12); ``stage(name, fn, help)`` returns a
    subcommand's parser (as in iaa.cli.build_parser)."""
    sp = stage(
        "similarity-histogram",
        _cmd_similarity_histogram,
        "Fig. 12: cosine similarity of positive and negative pairs, baseline vs IAA -> PNG, CSV",
    )
    sp.add_argument("--baseline", type=Path, required=True, help="the baseline's embeddings Parquet")
    sp.add_argument("--iaa", type=Path, required=True, help="the IAA model's embeddings Parquet")
    sp.add_argument("--out", type=Path, required=True, help="figure (PNG)")
    sp.add_argument("--csv", type=Path, required=True, help="histogram table (CSV)")
    sp.add_argument("--split", default="test", help="split whose pairs are counted (default: test)")
    sp.add_argument("--bins", type=positive_int, default=50, help="histogram bins over [-1, 1] (default: 50)")
    sp.add_argument(
        "--max-pairs", type=positive_int, default=200_000,
        help="pairs of each kind kept, a random sample beyond it (default: 200000)",
    )  # fmt: skip
    sp.add_argument(
        "--seed", type=nonnegative_int, default=0, help="random seed of the pair sample (default: 0)"
    )
