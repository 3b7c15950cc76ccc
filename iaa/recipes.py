"""Recipes: named bundles of training settings, one per source of truth (SPEC 2.5, 3).

``paper`` is the paper's text (Sec. VI-B; SPEC 3): the schema's defaults plus the
per-dataset values the paper gives. ``released`` is what the authors' released code
(github darkpromise98/IAA: ``run.py``, ``utils/common.py``, ``intra.py``, ``model/``,
``metric/batchsampler.py``) and its README commands do. Every item of a bundle is an
ordinary config key, so a user switches one difference with one config line; the table of
every difference, with the paper's section and the released code's file and line, is
``docs/recipes.md``.

A recipe is a config fragment laid UNDER the user's config: any key the user sets (in a
``--configfile``, ``--config`` or ``benchmark_overrides``) wins over the bundle.
"""

from __future__ import annotations

import copy
from typing import Any

from iaa.benchmarks import get_benchmark
from iaa.errors import IAAError

RECIPES = ("paper", "released")

# Per dataset, what the paper's text sets beyond the schema defaults (SPEC 3, 4). VehicleID's
# lambda is not given ("lambda in [0.5, 0.8]"): we take the SOP/In-Shop value of each backbone,
# the datasets it resembles (thousands of classes of a few images each).
_PAPER_DATASET: dict[str, dict[str, Any]] = {
    "cub200": {"train": {"square_resize": False, "lr_by_loss": {"contrastive": 3e-5}}},
    "cars196": {},
    "sop": {"train": {"batch_size": 180, "samples_per_class": 3, "iaa": {"lam": 0.6}}},
    "inshop": {
        "train": {"batch_size": 180, "samples_per_class": 3, "val_split": "query", "iaa": {"lam": 0.6}}
    },
    "vehicleid": {"train": {"val_split": "test-small", "iaa": {"lam": 0.6}}},
}
# BN-Inception and ResNet-50 (Tables IV, V): batch 256 on every dataset, lambda 0.5 on the
# few-images-per-class datasets (SPEC 3).
_PAPER_LARGE_BACKBONE: dict[str, dict[str, Any]] = {
    "cub200": {"train": {"batch_size": 256}},
    "cars196": {"train": {"batch_size": 256}},
    "sop": {"train": {"batch_size": 256, "iaa": {"lam": 0.5}}},
    "inshop": {"train": {"batch_size": 256, "iaa": {"lam": 0.5}}},
    "vehicleid": {"train": {"batch_size": 256, "iaa": {"lam": 0.5}}},
}

# The released code, whatever the dataset (SPEC 2.5 items 1-12; docs/recipes.md cites each).
_RELEASED_COMMON: dict[str, Any] = {
    "train": {
        "lr": 5e-5,
        "embedding_lr_multiplier": 1.0,
        "weight_decay": 1e-5,
        "lr_milestones": [40, 60, 80],
        "head_init": "kaiming_fan_out",
        "googlenet_transform_input": False,
        "interpolation": "lanczos",
        "sampler": "released",
        "samples_per_class_large": 3,
        "amp": False,
        "selection": "best_test",
        "iaa": {
            "update_every": 2,
            "estimation_transform": "train",
            "apply_correction": False,
            "sqrt_per_copy": True,
            "minmax_sentinel": True,
            "singleton_mean_zero": True,
        },
    }
}
# The README's commands per dataset (GoogLeNet). VehicleID is not in the released code: it
# gets SOP's settings (a large train set of small classes), our choice.
_RELEASED_DATASET: dict[str, dict[str, Any]] = {
    "cub200": {"train": {"square_resize": False, "lr_by_loss": {"contrastive": 3e-5}}},
    "cars196": {},
    "sop": {
        "train": {"lr": 1e-4, "batch_size": 180, "iaa": {"lam": 0.6, "copies_by_loss": {"contrastive": 2}}}
    },
    "inshop": {
        "train": {
            "lr": 1e-4,
            "batch_size": 180,
            "samples_per_class": 3,
            "val_split": "query",
            "iaa": {"lam": 0.6, "copies_by_loss": {"contrastive": 2}},
        }
    },
    "vehicleid": {"train": {"lr": 1e-4, "batch_size": 180, "val_split": "test-small", "iaa": {"lam": 0.6}}},
}
# BN-Inception and ResNet-50: batch 256 and lambda 0.5 on SOP and In-Shop (README commands),
# both pooled by global max + average (model/backbone/bninception.py, resnet.py).
_RELEASED_LARGE_BACKBONE: dict[str, dict[str, Any]] = {
    "cub200": {"train": {"batch_size": 256}},
    "cars196": {"train": {"batch_size": 256}},
    "sop": {"train": {"batch_size": 256, "iaa": {"lam": 0.5}}},
    "inshop": {"train": {"batch_size": 256, "iaa": {"lam": 0.5}}},
    "vehicleid": {"train": {"batch_size": 256, "iaa": {"lam": 0.5}}},
}
_RELEASED_POOLING = {"train": {"pooling": "max_avg"}}


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base``: nested dicts merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def recipe_config(recipe: str, benchmark: str) -> dict[str, Any]:
    """The config fragment recipe ``recipe`` sets for ``benchmark`` (sections train, ...).

    Built-in benchmarks (synth) take only the dataset-independent part; their CPU budget is
    ``config/synth.yaml``. Raises IAAError for an unknown recipe or benchmark.
    """
    if recipe not in RECIPES:
        raise IAAError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    bench = get_benchmark(benchmark)
    large = bench.arch in ("bn_inception", "resnet50")
    if recipe == "paper":
        layers = [_PAPER_DATASET.get(bench.dataset, {})]
        if large:
            layers.append(_PAPER_LARGE_BACKBONE.get(bench.dataset, {}))
    else:
        layers = [_RELEASED_COMMON]
        if large:
            layers.append(_RELEASED_POOLING)
        layers.append(_RELEASED_DATASET.get(bench.dataset, {}))
        if large:
            layers.append(_RELEASED_LARGE_BACKBONE.get(bench.dataset, {}))
    out: dict[str, Any] = {}
    for layer in layers:
        out = deep_merge(out, layer)
    return out


def layered_config(raw: dict[str, Any], benchmark: str, synth_budget: dict[str, Any]) -> dict[str, Any]:
    """One benchmark's config before the schema fills its defaults, lowest layer first:

    1. the recipe's bundle (``raw["recipe"]``, default paper) for this benchmark;
    2. built-in benchmarks only: their CPU budget, ``synth_budget["all"]`` then
       ``synth_budget[benchmark]`` (config/synth.yaml);
    3. the user's config ``raw`` (config.yaml merged with any --configfile / --config);
    4. the user's ``benchmark_overrides[benchmark]``.

    Raises IAAError for an unknown recipe or benchmark.
    """
    layers = [recipe_config(raw.get("recipe", "paper"), benchmark)]
    if get_benchmark(benchmark).builtin:
        layers += [synth_budget.get("all", {}), synth_budget.get(benchmark, {})]
    layers += [raw, raw.get("benchmark_overrides", {}).get(benchmark, {})]
    out: dict[str, Any] = {}
    for layer in layers:
        out = deep_merge(out, layer)
    return out
