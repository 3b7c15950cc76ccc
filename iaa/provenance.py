"""Which model produced a set of numbers: the recipe, the model-selection rule and the epoch.

Every training run keeps two models (``runs/<run>/model.pt``, the final epoch's, and
``selected.pt``, the epoch its selection rule picked), each exported to its own embeddings
Parquet and evaluated side by side. The rules (SPEC 2.5 item 12):

* ``last``: no selection, the final epoch's model (the paper's recipe);
* ``best_test``: the epoch with the best test R@1, every other metric from that epoch (the
  released code's protocol, MDR's; optimistic: the test set picks the model, criticised by
  Musgrave et al. 2020, "A Metric Learning Reality Check");
* ``best_val``: the epoch with the best R@1 on train classes held out of training (honest
  model selection: the test classes are never looked at).

The record travels as Parquet schema metadata on the embeddings (keys below, string values)
and as the metrics JSON that ``iaa evaluate`` writes::

    {"final": {<metrics>, "epoch": E | null}, "selected": {<metrics>, "epoch": e | null},
     "selection": "last" | "best_test" | "best_val", "recipe": "paper" | "released" | null}

This module imports no torch, FAISS or matplotlib: the light stages (report, compare) read it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from iaa.errors import IAAError
from iaa.io import require_file

SELECTION_RULES = ("last", "best_test", "best_val")
EPOCH_KINDS = ("final", "selected")

# Parquet schema-metadata keys of an embeddings file (values are strings).
META_MODEL = "iaa.model"
META_EPOCH = "iaa.epoch"
META_SELECTION = "iaa.selection"
META_RECIPE = "iaa.recipe"
META_EPOCH_KIND = "iaa.epoch_kind"

# Short labels for table cells and the long notes for table headers.
SELECTION_LABELS = {
    "last": "last epoch",
    "best_test": "best test R@1 epoch",
    "best_val": "best held-out-train R@1 epoch",
}
SELECTION_NOTES = {
    "last": "model = last epoch (no selection; the paper's protocol)",
    "best_test": (
        "selected = best test R@1 epoch (the released code's protocol; optimistic, Musgrave et al. 2020)"
    ),
    "best_val": (
        "selected = best R@1 epoch on held-out train classes (honest selection; test never seen; "
        "final and selected models alike trained without those classes)"
    ),
}


@dataclass(frozen=True)
class Provenance:
    """Where one embeddings file's model came from.

    ``epoch``: the (1-based) epoch the weights are from, None when unknown (pretrained
    features, old checkpoints); ``selection``: the run's rule; ``recipe``: "paper" or
    "released", None when unknown; ``epoch_kind``: "final" or "selected", None for files
    that are neither (pretrained features).
    """

    epoch: int | None
    selection: str = "last"
    recipe: str | None = None
    epoch_kind: str | None = None
    model: str | None = None  # the checkpoint the embeddings came from (metadata iaa.model)

    def same_run(self, other: Provenance) -> bool:
        """Whether two files' checkpoints sit in one run folder (unknown counts as the same)."""
        if self.model is None or other.model is None:
            return True
        return Path(self.model).parent == Path(other.model).parent

    def metadata(self, model: str | os.PathLike[str]) -> dict[str, str]:
        """The Parquet schema metadata recording this provenance (unknown values left out)."""
        meta = {META_MODEL: str(model), META_SELECTION: self.selection}
        if self.epoch is not None:
            meta[META_EPOCH] = str(self.epoch)
        if self.recipe is not None:
            meta[META_RECIPE] = self.recipe
        if self.epoch_kind is not None:
            meta[META_EPOCH_KIND] = self.epoch_kind
        return meta


def check_selection(value: Any, source: str, key: str) -> str:
    """``value`` if it is a selection rule, else a one-line IAAError naming ``source`` and ``key``."""
    if value not in SELECTION_RULES:
        raise IAAError(f"{source}: {key} is {value!r}, expected one of {', '.join(SELECTION_RULES)}")
    return str(value)


def check_epoch(value: Any, source: str, key: str) -> int | None:
    """``value`` as an epoch (a non-negative int, or None), else a one-line IAAError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise IAAError(f"{source}: {key} is {value!r}, expected a non-negative integer or null")
    return int(value)


def check_recipe(value: Any, source: str, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise IAAError(f"{source}: {key} is {value!r}, expected a recipe name or null")
    return value


def provenance_from_checkpoint(payload: dict[str, Any], source: str, epoch_kind: str) -> Provenance:
    """The provenance keys a training checkpoint carries (``epoch``, ``selection``, ``recipe``).

    Checkpoints written before model selection existed carry none: epoch unknown, rule
    ``last`` (they are final models), recipe unknown.
    """
    return Provenance(
        epoch=check_epoch(payload.get("epoch"), source, "epoch"),
        selection=check_selection(payload.get("selection", "last"), source, "selection"),
        recipe=check_recipe(payload.get("recipe"), source, "recipe"),
        epoch_kind=epoch_kind,
    )


def read_provenance(path: str | os.PathLike[str]) -> Provenance:
    """The provenance recorded in an embeddings Parquet's schema metadata.

    A file without it (the pretrained features of ``iaa extract``) reads as epoch None, rule
    ``last``, recipe None, kind None.
    """
    p = require_file(path, "embeddings file")
    try:
        raw = pq.read_schema(p).metadata or {}
    except Exception as err:  # not a Parquet file
        raise IAAError(f"cannot read embeddings file {p}: {err}") from None
    meta = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
    source = f"embeddings file {p}"
    epoch: int | None = None
    if META_EPOCH in meta:
        try:
            epoch = check_epoch(int(meta[META_EPOCH]), source, f"metadata {META_EPOCH}")
        except ValueError:
            raise IAAError(
                f"{source}: metadata {META_EPOCH} is {meta[META_EPOCH]!r}, not an integer"
            ) from None
    kind = meta.get(META_EPOCH_KIND)
    if kind is not None and kind not in EPOCH_KINDS:
        raise IAAError(f"{source}: metadata {META_EPOCH_KIND} is {kind!r}, expected final or selected")
    return Provenance(
        epoch=epoch,
        selection=check_selection(meta.get(META_SELECTION, "last"), source, f"metadata {META_SELECTION}"),
        recipe=check_recipe(meta.get(META_RECIPE), source, f"metadata {META_RECIPE}"),
        epoch_kind=kind,
        model=meta.get(META_MODEL),
    )


# --------------------------------------------------------------------------- metrics JSON


@dataclass(frozen=True)
class MetricsRecord:
    """One metrics JSON of ``iaa evaluate``: the final and the selected model's metrics.

    Metric values are fractions (0-1) as the JSON holds them; ``epoch`` is each model's
    epoch (None when unknown) and is also the ``"epoch"`` key of its metrics dict.
    """

    final: dict[str, Any]
    selected: dict[str, Any]
    selection: str
    recipe: str | None

    def models(self, which: str) -> dict[str, Any]:
        """``final`` or ``selected`` metrics."""
        if which not in EPOCH_KINDS:
            raise ValueError(f"which must be final or selected, got {which!r}")
        return self.final if which == "final" else self.selected


def metrics_payload(
    final: dict[str, Any], selected: dict[str, Any] | None, selection: str, recipe: str | None
) -> dict[str, Any]:
    """The JSON object ``iaa evaluate`` writes; ``selected`` None means a copy of ``final``."""
    return {
        "final": dict(final),
        "selected": dict(final if selected is None else selected),
        "selection": selection,
        "recipe": recipe,
    }


def read_metrics(path: str | os.PathLike[str]) -> MetricsRecord:
    """Read and check a metrics JSON (format above); one-line IAAError naming file and key."""
    p = require_file(path, "metrics JSON")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise IAAError(f"metrics JSON {p} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise IAAError(f"metrics JSON {p}: expected an object with keys final, selected, selection, recipe")
    for key in EPOCH_KINDS:
        if key not in data:
            raise IAAError(
                f"metrics JSON {p}: no {key!r} key (written by an older `iaa evaluate`? evaluate it again)"
            )
        if not isinstance(data[key], dict):
            raise IAAError(f"metrics JSON {p}: {key!r} is not an object")
        for name, value in data[key].items():
            if name == "epoch":
                check_epoch(value, f"metrics JSON {p}", f"{key}.epoch")
            elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise IAAError(f"metrics JSON {p}: {key}.{name} is {value!r}, not a finite number")
    return MetricsRecord(
        final=data["final"],
        selected=data["selected"],
        selection=check_selection(data.get("selection", "last"), f"metrics JSON {p}", "selection"),
        recipe=check_recipe(data.get("recipe"), f"metrics JSON {p}", "recipe"),
    )


def describe(recipes: Iterable[str | None], selections: Iterable[str]) -> str:
    """One header line naming the recipe(s) and selection rule(s) behind a table's numbers."""
    rec = sorted({r for r in recipes if r is not None})
    present = set(selections)
    sel = [s for s in SELECTION_RULES if s in present] or ["last"]
    recipe_text = f"{'recipes' if len(rec) > 1 else 'recipe'}: {', '.join(rec) if rec else 'unrecorded'}"
    return f"{recipe_text}; " + "; ".join(SELECTION_NOTES[s] for s in sel)
