"""Evaluation stage: metrics of one test protocol of an embeddings Parquet, written as JSON.

Protocols, chosen from the ``split`` column:

* ``test`` or ``test-*`` (e.g. VehicleID's ``test-800``): all-vs-all within that split, each
  image querying all the others (itself excluded). Each such split is evaluated on its own.
* ``query`` + ``gallery`` (In-Shop): query images against the gallery.

Other splits (``train``...) are ignored. With ``split=None`` the protocol is inferred when the
file holds exactly one: a single test-like split, or query and gallery. Otherwise ``split``
names it: a test-like split, or ``query`` / ``gallery`` for the query/gallery protocol.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from iaa.errors import IAAError
from iaa.index import INDEX_KINDS
from iaa.io import EmbeddingTable, read_embeddings, write_json
from iaa.metrics import DEFAULT_KMEANS_NITER, retrieval_metrics

QUERY_GALLERY = ("query", "gallery")


@dataclass(frozen=True)
class Protocol:
    kind: Literal["all-vs-all", "query-gallery"]
    query_split: str
    gallery_split: str


def is_test_split(name: str) -> bool:
    return name == "test" or name.startswith("test-")


def resolve_protocol(splits_present: Iterable[str], split: str | None, *, source: str) -> Protocol:
    """The protocol for ``split`` (or the only one present); one-line IAAError otherwise."""
    present = sorted({str(s) for s in splits_present})
    listed = ", ".join(present) if present else "none"
    has_qg = all(s in present for s in QUERY_GALLERY)
    tests = [s for s in present if is_test_split(s)]
    if split is None:
        options = tests + (["query/gallery"] if has_qg else [])
        if len(options) != 1:
            what = "no test split" if not options else f"several protocols ({', '.join(options)})"
            raise IAAError(f"{source}: {what} to evaluate; splits present: {listed}")
        split = tests[0] if tests else "query"
    if split in QUERY_GALLERY:
        if not has_qg:
            raise IAAError(
                f"{source}: split {split!r} needs both query and gallery; splits present: {listed}"
            )
        return Protocol("query-gallery", "query", "gallery")
    if not is_test_split(split):
        raise IAAError(
            f"{source}: split {split!r} is not a test split (test, test-*, query, gallery); "
            f"splits present: {listed}"
        )
    if split not in present:
        raise IAAError(f"{source}: no split {split!r}; splits present: {listed}")
    return Protocol("all-vs-all", split, split)


def evaluate_table(
    table: EmbeddingTable,
    protocol: Protocol,
    *,
    recall_k: Sequence[int],
    nmi: bool = True,
    index: str = "flat",
    seed: int = 0,
    nmi_redo: int = 1,
    nmi_niter: int = DEFAULT_KMEANS_NITER,
    nlist: int | None = None,
    nprobe: int | None = None,
) -> dict[str, float | int]:
    """:func:`iaa.metrics.retrieval_metrics` on the rows of ``protocol``."""
    query = table.split(protocol.query_split)
    if protocol.kind == "all-vs-all":
        gallery, exclude_self = query, True
    else:
        gallery, exclude_self = table.split(protocol.gallery_split), False
    return retrieval_metrics(
        query.embeddings,
        query.labels,
        gallery.embeddings,
        gallery.labels,
        ks=recall_k,
        exclude_self=exclude_self,
        nmi=nmi,
        index=index,
        seed=seed,
        nmi_niter=nmi_niter,
        nmi_redo=nmi_redo,
        nlist=nlist,
        nprobe=nprobe,
    )


def evaluate_stage(
    embeddings_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    recall_k: list[int],
    split: str | None = None,
    nmi: bool = True,
    index: str = "flat",
    seed: int = 0,
    nmi_redo: int = 1,
    nmi_niter: int = DEFAULT_KMEANS_NITER,
    nlist: int | None = None,
    nprobe: int | None = None,
) -> dict[str, float | int]:
    """Evaluate one protocol of an embeddings Parquet and write the metrics JSON atomically.

    Returns the dict written: ``recall@K`` per K, ``map@r``, ``rp``, ``nmi`` (if ``nmi``),
    ``num_queries``, ``num_gallery``, ``num_classes``, ``num_queries_without_match`` (and
    ``approx_recall_vs_exact`` for an approximate ``index``). Retrieval metrics average over
    queries that have a same-class gallery item.
    """
    if index not in INDEX_KINDS:
        raise IAAError(f"unknown index kind {index!r}; expected one of {', '.join(INDEX_KINDS)}")
    if not recall_k or any(int(k) < 1 for k in recall_k):
        raise IAAError(f"recall_k must be positive integers, got {recall_k}")
    table = read_embeddings(embeddings_path)
    protocol = resolve_protocol(table.splits, split, source=f"embeddings file {embeddings_path}")
    if not np.isfinite(table.embeddings).all():
        raise IAAError(f"embeddings file {embeddings_path} contains NaN or infinite values")
    try:
        metrics = evaluate_table(
            table,
            protocol,
            recall_k=recall_k,
            nmi=nmi,
            index=index,
            seed=seed,
            nmi_redo=nmi_redo,
            nmi_niter=nmi_niter,
            nlist=nlist,
            nprobe=nprobe,
        )
    except ValueError as exc:  # inputs the metrics cannot handle (sizes, shapes)
        raise IAAError(f"embeddings file {embeddings_path}: {exc}") from exc
    if metrics["num_queries"] == metrics["num_queries_without_match"]:
        raise IAAError(
            f"embeddings file {embeddings_path}: no query of split {protocol.query_split!r} has a "
            f"same-class item in split {protocol.gallery_split!r}"
        )
    bad = [key for key, value in metrics.items() if isinstance(value, float) and not math.isfinite(value)]
    if bad:
        raise IAAError(f"embeddings file {embeddings_path}: non-finite metrics {bad}")
    write_json(out_path, metrics)
    return metrics
