"""The paper's qualitative figures drawn from exported embeddings (SPEC 7, Fig. 12, 13, 14).

* Fig. 12, :func:`similarity_histogram`: cosine similarity of positive and negative pairs of a
  split, baseline vs IAA.
* Fig. 13, :func:`retrieval_grid`: random queries with their top retrieved images, right ones
  framed in green, wrong ones in red.
* Fig. 14, :func:`tsne_figure`: t-SNE of originals and IAA synthetic samples of a few classes.

Every figure reads its embeddings through :func:`iaa.io.read_embeddings` (which refuses bad rows
with one line) and writes a PNG and a CSV of what is drawn, each atomically. Row numbers in the
CSVs (``query_row``, ``retrieved_row``, ``source_row``) are 0-based row numbers in the embeddings
Parquet file.

matplotlib, torch, PIL and scikit-learn are imported inside the functions: the ``iaa`` command
imports this module at start-up.
"""

from __future__ import annotations

import argparse
import logging
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from iaa.errors import IAAError
from iaa.io import (
    ROOT_METADATA_KEY,
    EmbeddingTable,
    atomic_path,
    read_embeddings,
    read_manifest,
    require_file,
)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

RIGHT_COLOUR = (26, 152, 80)  # green frame: retrieved image of the query's class
WRONG_COLOUR = (215, 48, 39)  # red frame: retrieved image of another class
QUERY_COLOUR = (60, 60, 60)  # dark grey frame: the query
MISSING_GREY = (190, 190, 190)  # tile of an image file that is missing or unreadable
TILE = 96  # side of an image tile, in pixels of the tile array
BORDER = 8  # frame width, in pixels of the tile array
DPI = 100

HISTOGRAM_COLUMNS = ("model", "pair", "bin_left", "bin_right", "density", "pairs", "mean_similarity")
RETRIEVAL_COLUMNS = (
    "query_row", "query_path", "rank", "retrieved_row", "retrieved_path", "similarity", "correct",
)  # fmt: skip
TSNE_COLUMNS = ("x", "y", "label", "kind", "source_row")


# --------------------------------------------------------------------------- shared helpers


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _file_rows(path: PathLike, splits: list[str]) -> np.ndarray:
    """0-based Parquet row numbers of the rows of ``splits``, in the order read_embeddings returns them."""
    column = pq.read_table(path, columns=["split"], memory_map=True).column("split")
    values = column.to_numpy(zero_copy_only=False).astype(str)
    return np.flatnonzero(np.isin(values, splits))


def _read(path: PathLike, splits: list[str], *, with_paths: bool) -> tuple[EmbeddingTable, np.ndarray]:
    table = read_embeddings(path, splits=splits, with_paths=with_paths)
    rows = _file_rows(path, splits)
    if len(rows) != len(table):  # cannot happen: both keep the rows of ``splits`` in file order
        raise IAAError(f"embeddings file {path}: rows of {splits} changed while reading")
    return table, rows


def _save_figure(fig, out_png: PathLike) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)


def _save_csv(frame: pd.DataFrame, out_csv: PathLike) -> None:
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)


def _agg_pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise IAAError(f"{name} must be positive, got {value}")


# --------------------------------------------------------------------------- Fig. 12


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
    z = _normalise(x)
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
    plt = _agg_pyplot()
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
    _save_figure(fig, out_png)
    _save_csv(pd.concat(frames, ignore_index=True).loc[:, list(HISTOGRAM_COLUMNS)], out_csv)
    return summary


# --------------------------------------------------------------------------- Fig. 13


def resolve_image_root(
    embeddings_path: PathLike,
    *,
    image_root: PathLike | None = None,
    manifest: PathLike | None = None,
    paths: np.ndarray | None = None,
) -> Path | None:
    """The folder the image paths of an embeddings file are relative to.

    In order: ``image_root``; the root of ``manifest`` (:func:`iaa.io.read_manifest`); an
    ``iaa.root`` entry in the embeddings Parquet's metadata (export does not write one today);
    a ``manifest.parquet`` next to the file or one folder up (the pipeline writes
    ``results/<bench>/embeddings/<run>.parquet`` and ``results/<bench>/manifest.parquet``).
    None when every path in ``paths`` is absolute; else a one-line :class:`IAAError` asking
    for ``--image-root``.
    """
    if image_root is not None:
        root = Path(image_root)
        if not root.is_dir():
            raise IAAError(f"image root not found: {root}")
        return root
    if manifest is not None:
        return read_manifest(manifest).root
    p = require_file(embeddings_path, "embeddings file")
    meta = pq.read_schema(p).metadata or {}
    if ROOT_METADATA_KEY in meta:
        return Path(meta[ROOT_METADATA_KEY].decode())
    for candidate in (p.parent / "manifest.parquet", p.parent.parent / "manifest.parquet"):
        if candidate.is_file():
            root = read_manifest(candidate).root
            log.info("image paths taken relative to %s (root of %s)", root, candidate)
            return root
    if paths is not None and len(paths) and all(Path(str(s)).is_absolute() for s in paths):
        return None
    raise IAAError(
        f"{p} does not say which folder its image paths are relative to: pass --image-root DIR "
        "(or --manifest MANIFEST, whose root is used)"
    )


def _tile(path: Path | None, colour: tuple[int, int, int]) -> tuple[np.ndarray, bool]:
    """A (TILE, TILE, 3) uint8 image framed in ``colour``; False when the file could not be read."""
    from PIL import Image

    tile = np.empty((TILE, TILE, 3), dtype=np.uint8)
    tile[:] = colour
    inner = TILE - 2 * BORDER
    body = np.empty((inner, inner, 3), dtype=np.uint8)
    body[:] = MISSING_GREY
    ok = False
    if path is not None:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((inner, inner))
                body[:] = 255
                w, h = im.size
                y0, x0 = (inner - h) // 2, (inner - w) // 2
                body[y0 : y0 + h, x0 : x0 + w] = np.asarray(im)
                ok = True
        except (OSError, ValueError) as err:
            log.debug("cannot read image %s (%s): drawn as a grey tile", path, err)
    tile[BORDER : TILE - BORDER, BORDER : TILE - BORDER] = body
    return tile, ok


@dataclass(frozen=True)
class RetrievalGrid:
    """What :func:`retrieval_grid` drew.

    ``frame`` holds the CSV's rows; ``tiles`` maps ``(grid row, column)`` (column 0 the query,
    column r the rank-r result) to the tile's box ``(left, top, right, bottom)`` in pixels of the
    written PNG (origin top-left), frame included.
    """

    frame: pd.DataFrame
    tiles: dict[tuple[int, int], tuple[float, float, float, float]] = field(default_factory=dict)


def retrieval_grid(
    embeddings_path: PathLike,
    out_png: PathLike,
    out_csv: PathLike,
    *,
    image_root: PathLike | None = None,
    split: str = "test",
    queries: int = 8,
    top: int = 5,
    seed: int = 0,
    query_split: str | None = None,
    gallery_split: str | None = None,
    manifest: PathLike | None = None,
) -> RetrievalGrid:
    """Fig. 13: ``queries`` random queries (``seed``), each with its ``top`` nearest images.

    Similarity is the cosine of the L2-normalised embeddings; ties go to the lower row. With
    ``query_split`` and ``gallery_split`` (both, as In-Shop's query/gallery) queries of the one
    are searched in the other; else queries and gallery are the ``split``'s rows and a query
    never retrieves itself. Retrieved images of the query's class are framed in green (right),
    the others in red (wrong), the query in dark grey; the similarity is written under each.
    Image paths are relative to :func:`resolve_image_root` (``image_root``, else ``manifest``'s
    root, ...). A missing or unreadable image is drawn as a grey tile with its name.

    CSV columns: query_row, query_path, rank (1..top), retrieved_row, retrieved_path,
    similarity, correct.
    """
    if queries < 1 or top < 1:
        raise IAAError(f"queries and top must be at least 1, got {queries} and {top}")
    if (query_split is None) != (gallery_split is None):
        raise IAAError("give both --query-split and --gallery-split, or neither (then --split is used)")
    if query_split is None or gallery_split is None:
        query_split = gallery_split = split
    same = query_split == gallery_split
    wanted = [query_split] if same else [query_split, gallery_split]
    table, rows = _read(embeddings_path, wanted, with_paths=True)
    root = resolve_image_root(embeddings_path, image_root=image_root, manifest=manifest, paths=table.paths)
    q_mask, g_mask = table.splits == query_split, table.splits == gallery_split
    if not q_mask.any() or not g_mask.any():
        missing = query_split if not q_mask.any() else gallery_split
        raise IAAError(f"embeddings file {embeddings_path} has no rows with split {missing!r}")
    q_idx, g_idx = np.flatnonzero(q_mask), np.flatnonzero(g_mask)
    available = len(g_idx) - (1 if same else 0)
    if available < top:
        raise IAAError(
            f"the gallery ({gallery_split!r}) has {available} candidate images, fewer than top={top}"
        )
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(q_idx), size=min(queries, len(q_idx)), replace=False))
    q_idx = q_idx[picked]
    z = _normalise(table.embeddings)
    sims = z[q_idx] @ z[g_idx].T  # (Q, G)
    if same:
        sims[np.arange(len(q_idx)), picked] = -np.inf  # q_idx[k] is g_idx[picked[k]]
    order = np.argsort(-sims, axis=1, kind="stable")[:, :top]

    def full(rel: str) -> Path:
        return Path(rel) if root is None else root / rel

    records = []
    for qi, qrow in enumerate(q_idx):
        for rank, col in enumerate(order[qi], start=1):
            grow = g_idx[col]
            records.append(
                {
                    "query_row": int(rows[qrow]),
                    "query_path": str(table.paths[qrow]),
                    "rank": rank,
                    "retrieved_row": int(rows[grow]),
                    "retrieved_path": str(table.paths[grow]),
                    "similarity": float(sims[qi, col]),
                    "correct": bool(table.labels[grow] == table.labels[qrow]),
                    "q_index": int(qrow),
                    "g_index": int(grow),
                }
            )
    frame = pd.DataFrame.from_records(records)

    plt = _agg_pyplot()
    from matplotlib.patches import Patch

    n_rows, n_cols = len(q_idx), top + 1
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(max(1.45 * n_cols, 6.0), 1.6 * n_rows + 1.3), squeeze=False, dpi=DPI
    )
    missing: list[str] = []
    for r in range(n_rows):
        group = frame.iloc[r * top : (r + 1) * top]
        qrow = int(group["q_index"].iloc[0])
        cells = [(qrow, QUERY_COLOUR, f"query, class {table.labels[qrow]}")]
        for rec in group.itertuples():
            colour = RIGHT_COLOUR if rec.correct else WRONG_COLOUR
            cells.append((rec.g_index, colour, f"sim {rec.similarity:.3f}"))
        for c, (row, colour, caption) in enumerate(cells):
            ax = axes[r, c]
            tile, ok = _tile(full(str(table.paths[row])), colour)
            ax.imshow(tile, interpolation="nearest")
            if not ok:
                missing.append(str(table.paths[row]))
                name = textwrap.fill(Path(str(table.paths[row])).name, 14)
                ax.text(TILE / 2, TILE / 2, name, ha="center", va="center", fontsize=5)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_xlabel(caption, fontsize=7, labelpad=2)
            if r == 0:
                ax.set_title("query" if c == 0 else f"rank {c}", fontsize=8)
    if missing:
        names = sorted(set(missing))
        more = ", ..." if len(names) > 3 else ""
        log.warning(
            "%d image tile(s) drawn grey, file missing or unreadable under %s: %s%s",
            len(missing), root, ", ".join(names[:3]), more,
        )  # fmt: skip
    where = f"{query_split} queries vs {gallery_split} gallery" if not same else f"{split} split"
    title = (
        f"Fig. 13: top-{top} retrieval of {n_rows} random queries ({where}, seed {seed}); cosine "
        "similarity under each image. Green frame = right (same class as the query), red frame = "
        "wrong (another class)."
    )
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 13)), fontsize=9)
    hex_of = "#{:02x}{:02x}{:02x}".format
    fig.legend(
        handles=[
            Patch(facecolor=hex_of(*RIGHT_COLOUR), label="right: same class"),
            Patch(facecolor=hex_of(*WRONG_COLOUR), label="wrong: other class"),
            Patch(facecolor=hex_of(*QUERY_COLOUR), label="query"),
        ],
        loc="lower center",
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.93))
    fig.canvas.draw()
    height = fig.bbox.height
    tiles = {}
    for r in range(n_rows):
        for c in range(n_cols):
            box = axes[r, c].get_window_extent()  # display pixels, origin bottom-left
            tiles[(r, c)] = (box.x0, height - box.y1, box.x1, height - box.y0)
    _save_figure(fig, out_png)
    frame = frame.drop(columns=["q_index", "g_index"]).loc[:, list(RETRIEVAL_COLUMNS)]
    _save_csv(frame, out_csv)
    log.info(
        "%d queries, top-%d: %d of %d retrieved images right",
        n_rows, top, int(frame["correct"].sum()), len(frame),
    )  # fmt: skip
    return RetrievalGrid(frame=frame, tiles=tiles)


# --------------------------------------------------------------------------- Fig. 14


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
    _positive("perplexity", perplexity)
    try:
        from sklearn.manifold import TSNE
    except ImportError as err:
        raise IAAError("the t-SNE figure needs scikit-learn: pip install scikit-learn") from err
    table, rows = _read(embeddings_path, [split], with_paths=False)
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
    points = _normalise(np.concatenate([pts.originals, pts.synthetic]))
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
    plt = _agg_pyplot()
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
    _save_figure(fig, out_png)
    _save_csv(frame.loc[:, list(TSNE_COLUMNS)], out_csv)
    log.info("t-SNE of %d originals and %d synthetic samples of %d classes", n, len(pts.synthetic), classes)
    return frame


# --------------------------------------------------------------------------- command line


def _cmd_visualize(a: argparse.Namespace) -> None:
    out_csv = a.csv if a.csv is not None else a.out.with_suffix(".csv")
    retrieval_grid(
        a.embeddings, a.out, out_csv, image_root=a.image_root, manifest=a.manifest, split=a.split,
        queries=a.queries, top=a.top, seed=a.seed, query_split=a.query_split, gallery_split=a.gallery_split,
    )  # fmt: skip


def _cmd_similarity_histogram(a: argparse.Namespace) -> None:
    similarity_histogram(
        a.baseline, a.iaa, a.out, a.csv, split=a.split, bins=a.bins, max_pairs=a.max_pairs, seed=a.seed
    )


def _cmd_tsne(a: argparse.Namespace) -> None:
    tsne_figure(
        a.embeddings, a.out, a.csv, split=a.split, classes=a.classes, per_class=a.per_class,
        copies=a.copies, lam=a.lam, seed=a.seed, perplexity=a.perplexity,
    )  # fmt: skip


def register(
    stage: Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser],
) -> None:
    """Add the subcommands ``visualize`` (Fig. 13), ``similarity-histogram`` (Fig. 12) and ``tsne``
    (Fig. 14); ``stage(name, fn, help)`` returns a subcommand's parser (as in iaa.cli.build_parser)."""
    sp = stage(
        "visualize", _cmd_visualize, "Fig. 13: random queries and their top retrieved images -> PNG, CSV"
    )
    sp.add_argument("embeddings", type=Path, help="embeddings Parquet (export)")
    sp.add_argument("--out", type=Path, required=True, help="figure (PNG)")
    sp.add_argument(
        "--csv", type=Path, default=None, help="table of what is drawn (default: --out with suffix .csv)"
    )
    root = sp.add_mutually_exclusive_group()
    root.add_argument(
        "--image-root", type=Path, default=None,
        help="folder the image paths are relative to (default: the manifest's root, see --manifest)",
    )  # fmt: skip
    root.add_argument(
        "--manifest", type=Path, default=None,
        help="manifest Parquet whose root the image paths are relative to (default: a manifest.parquet "
        "next to the embeddings file or one folder up)",
    )  # fmt: skip
    sp.add_argument("--split", default="test", help="split of queries and gallery (default: test)")
    sp.add_argument(
        "--query-split", default=None, help="split of the queries, with --gallery-split (default: --split)"
    )
    sp.add_argument(
        "--gallery-split", default=None, help="split searched, with --query-split (default: --split)"
    )
    sp.add_argument("--queries", type=int, default=8, help="number of random queries, grid rows (default: 8)")
    sp.add_argument("--top", type=int, default=5, help="retrieved images per query (default: 5)")
    sp.add_argument("--seed", type=int, default=0, help="random seed of the query choice (default: 0)")

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
    sp.add_argument("--bins", type=int, default=50, help="histogram bins over [-1, 1] (default: 50)")
    sp.add_argument(
        "--max-pairs", type=int, default=200_000,
        help="pairs of each kind kept, a random sample beyond it (default: 200000)",
    )  # fmt: skip
    sp.add_argument("--seed", type=int, default=0, help="random seed of the pair sample (default: 0)")

    sp = stage("tsne", _cmd_tsne, "Fig. 14: t-SNE of originals and IAA synthetic samples -> PNG, CSV")
    sp.add_argument("embeddings", type=Path, help="embeddings Parquet (export) of the final model")
    sp.add_argument("--out", type=Path, required=True, help="figure (PNG)")
    sp.add_argument("--csv", type=Path, required=True, help="t-SNE coordinates (CSV)")
    sp.add_argument("--split", default="train", help="split whose classes are drawn (default: train)")
    sp.add_argument("--classes", type=int, default=10, help="random classes drawn (default: 10)")
    sp.add_argument("--per-class", type=int, default=20, help="originals per class, at most (default: 20)")
    sp.add_argument("--copies", type=int, default=3, help="synthetic samples M per original (default: 3)")
    sp.add_argument("--lam", type=float, default=0.8, help="synthesis strength λ, unitless (default: 0.8)")
    sp.add_argument(
        "--seed", type=int, default=0, help="random seed: classes, originals, noise, t-SNE (default: 0)"
    )
    sp.add_argument("--perplexity", type=float, default=30, help="t-SNE perplexity, in points (default: 30)")
