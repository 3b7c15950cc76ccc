"""What the paper's qualitative figures share (:mod:`iaa.visualize`, :mod:`iaa.similarity_histogram`,
:mod:`iaa.tsne`): reading embeddings with their row numbers and writing a PNG and a CSV atomically.

Every figure reads its embeddings through :func:`iaa.io.read_embeddings` (which refuses bad rows
with one line) and writes a PNG and a CSV of what is drawn, each atomically. Row numbers in the
CSVs (``query_row``, ``retrieved_row``, ``source_row``) are 0-based row numbers in the embeddings
Parquet file.

matplotlib is imported inside the functions: the ``iaa`` command imports this module at start-up.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from iaa.atomic import atomic_path
from iaa.errors import IAAError
from iaa.io import EmbeddingTable, read_embeddings

PathLike = str | os.PathLike[str]

DPI = 100


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` as float64 scaled to unit L2 norm."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _file_rows(path: PathLike, splits: list[str]) -> np.ndarray:
    """0-based Parquet row numbers of the rows of ``splits``, in the order read_embeddings returns them."""
    column = pq.read_table(path, columns=["split"], memory_map=True).column("split")
    values = column.to_numpy(zero_copy_only=False).astype(str)
    return np.flatnonzero(np.isin(values, splits))


def read(path: PathLike, splits: list[str], *, with_paths: bool) -> tuple[EmbeddingTable, np.ndarray]:
    """The rows of ``splits`` (:func:`iaa.io.read_embeddings`) and their 0-based Parquet row numbers."""
    table = read_embeddings(path, splits=splits, with_paths=with_paths)
    rows = _file_rows(path, splits)
    if len(rows) != len(table):  # cannot happen: both keep the rows of ``splits`` in file order
        raise IAAError(f"embeddings file {path}: rows of {splits} changed while reading")
    return table, rows


def save_figure(fig, out_png: PathLike) -> None:
    """Write ``fig`` to ``out_png`` atomically at :data:`DPI`, then close it."""
    import matplotlib.pyplot as plt

    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)


def save_csv(frame: pd.DataFrame, out_csv: PathLike) -> None:
    """Write ``frame`` to ``out_csv`` atomically, without its index."""
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)


def agg_pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def positive(name: str, value: float) -> None:
    """Refuse (one-line :class:`IAAError`) a ``value`` of setting ``name`` that is not positive."""
    if not value > 0:
        raise IAAError(f"{name} must be positive, got {value}")
