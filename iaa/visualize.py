"""Fig. 13 of the paper (SPEC 7), :func:`retrieval_grid`: random queries with their top retrieved
images, right ones framed in green, wrong ones in red, drawn from exported embeddings.

The other qualitative figures have their own modules and subcommands: Fig. 12 in
:mod:`iaa.similarity_histogram`, Fig. 14 in :mod:`iaa.tsne`. Embeddings are read and the PNG and
CSV written as :mod:`iaa.figure_io` says (``query_row`` and ``retrieved_row`` are 0-based row
numbers in the embeddings Parquet file).

matplotlib and PIL are imported inside the functions: the ``iaa`` command imports this module at
start-up.
"""

from __future__ import annotations

import argparse
import logging
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from iaa.cli_args import nonnegative_int, positive_int
from iaa.errors import IAAError
from iaa.figure_io import DPI, PathLike, agg_pyplot, normalise, read, save_csv, save_figure
from iaa.io import ROOT_METADATA_KEY, read_manifest, require_parquet

log = logging.getLogger(__name__)

RIGHT_COLOUR = (26, 152, 80)  # green frame: retrieved image of the query's class
WRONG_COLOUR = (215, 48, 39)  # red frame: retrieved image of another class
QUERY_COLOUR = (60, 60, 60)  # dark grey frame: the query
MISSING_GREY = (190, 190, 190)  # tile of an image file that is missing or unreadable
TILE = 96  # side of an image tile, in pixels of the tile array
BORDER = 8  # frame width, in pixels of the tile array

RETRIEVAL_COLUMNS = (
    "query_row", "query_path", "rank", "retrieved_row", "retrieved_path", "similarity", "correct",
)  # fmt: skip


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
    p = require_parquet(embeddings_path, "embeddings file")
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
    table, rows = read(embeddings_path, wanted, with_paths=True)
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
    z = normalise(table.embeddings)
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

    plt = agg_pyplot()
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
    save_figure(fig, out_png)
    frame = frame.drop(columns=["q_index", "g_index"]).loc[:, list(RETRIEVAL_COLUMNS)]
    save_csv(frame, out_csv)
    log.info(
        "%d queries, top-%d: %d of %d retrieved images right",
        n_rows, top, int(frame["correct"].sum()), len(frame),
    )  # fmt: skip
    return RetrievalGrid(frame=frame, tiles=tiles)


# --------------------------------------------------------------------------- command line


def _cmd_visualize(a: argparse.Namespace) -> None:
    out_csv = a.csv if a.csv is not None else a.out.with_suffix(".csv")
    retrieval_grid(
        a.embeddings, a.out, out_csv, image_root=a.image_root, manifest=a.manifest, split=a.split,
        queries=a.queries, top=a.top, seed=a.seed, query_split=a.query_split, gallery_split=a.gallery_split,
    )  # fmt: skip


def register(
    stage: Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser],
) -> None:
    """Add the subcommand ``visualize`` (Fig. 13); ``stage(name, fn, help)`` returns a subcommand's
    parser (as in iaa.cli.build_parser)."""
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
    sp.add_argument(
        "--queries", type=positive_int, default=8, help="number of random queries, grid rows (default: 8)"
    )
    sp.add_argument("--top", type=positive_int, default=5, help="retrieved images per query (default: 5)")
    sp.add_argument(
        "--seed", type=nonnegative_int, default=0, help="random seed of the query choice (default: 0)"
    )
