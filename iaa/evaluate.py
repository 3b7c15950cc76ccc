"""Evaluation stage: metrics of one test protocol of an embeddings Parquet, written as JSON.

Protocols, chosen from the ``split`` column:

* ``test`` or ``test-*`` (e.g. VehicleID's ``test-800``): all-vs-all within that split, each
  image querying all the others (itself excluded). Each such split is evaluated on its own.
* ``query`` + ``gallery`` (In-Shop): query images against the gallery.

Other splits (``train``...) are ignored. With ``split=None`` the protocol is inferred when the
file holds exactly one: a single test-like split, or query and gallery. Otherwise ``split``
names it: a test-like split, or ``query`` / ``gallery`` for the query/gallery protocol.

A trained run is evaluated twice, on the final model's embeddings and on the model its
selection rule picked (SPEC 2.5 item 12, :mod:`iaa.provenance`); both land in one JSON.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from iaa.errors import IAAError
from iaa.index import INDEX_KINDS
from iaa.io import EmbeddingTable, embedding_splits, read_embeddings, write_json
from iaa.metrics import DEFAULT_KMEANS_NITER, retrieval_metrics
from iaa.provenance import META_EPOCH_KIND, metrics_payload, read_provenance

log = logging.getLogger(__name__)

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
    selected: str | os.PathLike[str] | None = None,
    split: str | None = None,
    nmi: bool = True,
    index: str = "flat",
    seed: int = 0,
    nmi_redo: int = 1,
    nmi_niter: int = DEFAULT_KMEANS_NITER,
    nlist: int | None = None,
    nprobe: int | None = None,
) -> dict[str, Any]:
    """Evaluate one protocol of the final and the selected model's embeddings; write the JSON.

    Returns the dict written (:mod:`iaa.provenance`)::

        {"final": {<metrics>, "epoch": E | null}, "selected": {<metrics>, "epoch": e | null},
         "selection": "last" | "best_test" | "best_val", "recipe": "paper" | "released" | null}

    ``<metrics>``: ``recall@K`` per K, ``map@r``, ``rp``, ``nmi`` (if ``nmi``), ``num_queries``,
    ``num_gallery``, ``num_classes``, ``num_queries_without_match`` (and ``approx_recall_vs_exact``
    for an approximate ``index``), fractions in [0, 1]; retrieval metrics average over queries
    that have a same-class gallery item. Epoch, rule and recipe come from the files' Parquet
    metadata (``iaa export``); a features file without it (the pretrained row) reads as epoch
    null, rule ``last``, recipe null. Without ``selected``, or when its epoch is the final one,
    "selected" is a copy of "final" (not computed twice).
    """
    if index not in INDEX_KINDS:
        raise IAAError(f"unknown index kind {index!r}; expected one of {', '.join(INDEX_KINDS)}")
    if not recall_k or any(int(k) < 1 for k in recall_k):
        raise IAAError(f"recall_k must be positive integers, got {recall_k}")
    options: dict[str, Any] = dict(
        recall_k=recall_k, nmi=nmi, index=index, seed=seed, nmi_redo=nmi_redo, nmi_niter=nmi_niter,
        nlist=nlist, nprobe=nprobe,
    )  # fmt: skip
    final_prov = read_provenance(embeddings_path)
    if final_prov.epoch_kind == "selected":
        raise IAAError(
            f"embeddings file {embeddings_path} holds a selected model's embeddings "
            f"(metadata {META_EPOCH_KIND}); pass the final one first and this one as --selected"
        )
    final = evaluate_file(embeddings_path, split, **options)
    final["epoch"] = final_prov.epoch
    selection, chosen = final_prov.selection, None
    if selected is None:
        if selection != "last":
            log.warning(
                "%s comes from a run selecting by %s, but no --selected was given: 'selected' reports "
                "the final model (rule last)",
                embeddings_path,
                selection,
            )
        selection = "last"
    else:
        sel_prov = read_provenance(selected)
        if sel_prov.epoch_kind == "final":
            raise IAAError(
                f"embeddings file {selected} holds a final model's embeddings (metadata "
                f"{META_EPOCH_KIND}); --selected takes the selected model's"
            )
        if (sel_prov.selection, sel_prov.recipe) != (final_prov.selection, final_prov.recipe) or not (
            sel_prov.same_run(final_prov)
        ):
            raise IAAError(
                f"embeddings file {selected} (selection {sel_prov.selection}, recipe {sel_prov.recipe}) "
                f"and {embeddings_path} (selection {final_prov.selection}, recipe {final_prov.recipe}) "
                f"are not the same run's (models {sel_prov.model} and {final_prov.model})"
            )
        selection = sel_prov.selection
        if sel_prov.epoch is not None and sel_prov.epoch == final_prov.epoch:
            log.info("selected epoch %d is the final one: 'selected' copies 'final'", sel_prov.epoch)
        else:
            chosen = evaluate_file(selected, split, **options)
            chosen["epoch"] = sel_prov.epoch
            for key in ("num_queries", "num_gallery", "num_classes"):
                if chosen[key] != final[key]:
                    raise IAAError(
                        f"embeddings file {selected}: {key} {chosen[key]} differs from {embeddings_path}'s "
                        f"{final[key]}; not the same images"
                    )
    payload = metrics_payload(final, chosen, selection, final_prov.recipe)
    write_json(out_path, payload)
    return payload


def evaluate_file(
    embeddings_path: str | os.PathLike[str],
    split: str | None,
    *,
    recall_k: Sequence[int],
    nmi: bool = True,
    index: str = "flat",
    seed: int = 0,
    nmi_redo: int = 1,
    nmi_niter: int = DEFAULT_KMEANS_NITER,
    nlist: int | None = None,
    nprobe: int | None = None,
) -> dict[str, Any]:
    """The metrics of one protocol of one embeddings Parquet (keys as in :func:`evaluate_stage`)."""
    present = embedding_splits(embeddings_path)
    protocol = resolve_protocol(present, split, source=f"embeddings file {embeddings_path}")
    # only the protocol's rows are read, and read_embeddings refuses bad ones (NaN, all-zero, ...)
    wanted = sorted({protocol.query_split, protocol.gallery_split})
    table = read_embeddings(embeddings_path, splits=wanted, with_paths=False)
    try:
        metrics: dict[str, Any] = dict(
            evaluate_table(
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
    return metrics
