"""Variants: one point of an ablation sweep, as a name the workflow can put in a path.

A variant is a ``+``-joined list of ``axis-value`` items, e.g. ``lam-0.2``, ``k-10+corr-on``
or ``nper-3+corr-off``; each axis sets one training key (``AXES``). A variant run of
benchmark ``cub200`` lives under the experiment name ``cub200/variants/<variant>``
(``results/cub200/variants/lam-0.2/runs/...``) and reads the benchmark's manifest and
features; its config is the benchmark's with the variant's keys laid on top.

A point whose keys all equal the benchmark's own settings *is* the main-table run: the
sweep reads that run instead of training it again (:func:`resolve_variant`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iaa.errors import IAAError
from iaa.method.correction import MODES

VARIANTS_DIR = "variants"
_SEP = f"/{VARIANTS_DIR}/"


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) and text != "inf":
        raise ValueError(text)
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
        return text

    return parse


@dataclass(frozen=True)
class Axis:
    """One swept setting: where it lives in the config (``keys``) and how its value reads."""

    keys: tuple[tuple[str, ...], ...]  # config paths the value is written to
    parse: Callable[[str], Any]
    meaning: str


AXES: dict[str, Axis] = {
    "lam": Axis((("train", "iaa", "lam"),), _number, "λ (Fig. 6a; Table IX's λ = 0 row)"),
    "k": Axis((("train", "iaa", "k"),), int, "K neighbours of the correction (Fig. 6b)"),
    "copies": Axis((("train", "iaa", "copies"),), int, "M synthetic copies (Fig. 7a, 11)"),
    "interval": Axis((("train", "iaa", "update_every"),), int, "epochs between estimations (Fig. 7b)"),
    "dim": Axis((("train", "embedding_dim"),), int, "embedding size (Fig. 8)"),
    "beta": Axis((("train", "iaa", "beta"),), _number, "β of α(n_k) (Fig. 9b)"),
    "cov": Axis((("train", "iaa", "correction_mode"),), _choice(*MODES), "covariance form (Table IX)"),
    "sigma": Axis(
        (("train", "iaa", "sigma_m"), ("train", "iaa", "sigma_cv")), _number, "σ_m = σ_cv (Table IX)"
    ),
    "corr": Axis((("train", "iaa", "correction"),), _choice("on", "off", "auto"), "correction (Table XI)"),
    "nper": Axis((("train", "iaa", "estimation_images"),), int, "images per class estimated from (XI)"),
    "mean": Axis((("train", "iaa", "mean"),), _choice("dynamic", "fixed"), "synthesis centre (XII)"),
}


def parse_variant(variant: str) -> dict[str, Any]:
    """``"k-10+corr-on"`` -> ``{"k": 10, "corr": "on"}``. Raises IAAError naming the bad item."""
    items: dict[str, Any] = {}
    for item in variant.split("+"):
        axis, sep, text = item.partition("-")
        if not sep or axis not in AXES:
            raise IAAError(
                f"variant {variant!r}: bad item {item!r}; expected <axis>-<value>, axis in {list(AXES)}"
            )
        if axis in items:
            raise IAAError(f"variant {variant!r}: axis {axis!r} given twice")
        try:
            items[axis] = AXES[axis].parse(text)
        except ValueError as err:
            raise IAAError(f"variant {variant!r}: bad value for {axis}: {err}") from None
    return items


def format_value(value: Any) -> str:
    """A value as it appears in a variant name: ``0.2``, ``10``, ``inf``, ``on``."""
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def variant_name(items: dict[str, Any]) -> str:
    """The canonical name of a set of axis values (axes in ``AXES`` order)."""
    unknown = set(items) - set(AXES)
    if unknown:
        raise IAAError(f"unknown variant axes {sorted(unknown)}; known: {list(AXES)}")
    return "+".join(f"{axis}-{format_value(items[axis])}" for axis in AXES if axis in items)


def _get(cfg: dict[str, Any], keys: tuple[str, ...]) -> Any:
    node: Any = cfg
    for key in keys:
        node = node[key]
    return node


def resolve_variant(main_config: dict[str, Any], items: dict[str, Any]) -> str | None:
    """The variant to train for these axis values, given the benchmark's full (defaulted)
    config: axes whose value the benchmark already has are dropped; None means the point is
    the main-table run itself (nothing to train twice)."""
    kept = {
        axis: value
        for axis, value in items.items()
        if any(_get(main_config, keys) != value for keys in AXES[axis].keys)
    }
    return variant_name(kept) if kept else None


def split_experiment(name: str) -> tuple[str, str | None]:
    """``"cub200/variants/lam-0.2"`` -> ``("cub200", "lam-0.2")``; a plain name -> ``(name, None)``."""
    base, sep, variant = name.partition(_SEP)
    return (base, variant) if sep else (name, None)


def experiment_name(bench: str, variant: str | None) -> str:
    """Where a (benchmark, variant) run's files live, relative to the results folder."""
    return bench if variant is None else f"{bench}{_SEP}{variant}"


def with_variant(config: dict[str, Any], variant: str | None) -> dict[str, Any]:
    """A copy of a benchmark's config with the variant's keys laid on top."""
    out = copy.deepcopy(config)
    if variant is None:
        return out
    for axis, value in parse_variant(variant).items():
        for keys in AXES[axis].keys:
            node = out
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = value
    return out
