"""Typed settings for the stages that take hyper-parameters.

The pipeline config (``config/config.yaml``) is validated, and its defaults filled in, by
``workflow/schemas/config.schema.yaml``; each rule hands its stage the matching section
as JSON (``--settings``). The dataclass defaults below are what a bare command-line call
gets; ``tests/test_config.py`` checks that they agree with the schema's defaults.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from iaa.errors import IAAError

T = TypeVar("T")


@dataclass(frozen=True)
class PretrainSettings:
    """Softmax pretraining of the synth backbone on the ``pretrain`` classes (stands in for ImageNet)."""

    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    image_size: int = 32
    width: int = 32  # channels of the first stage of the synth backbone


@dataclass(frozen=True)
class LossSettings:
    contrastive: dict[str, float] = field(default_factory=lambda: {"pos_margin": 0.8, "neg_margin": 0.5})
    triplet: dict[str, float] = field(default_factory=lambda: {"margin": 0.1})
    ms: dict[str, float] = field(
        default_factory=lambda: {"alpha": 2.0, "beta": 40.0, "base": 0.5, "epsilon": 0.1}
    )
    # Table X: pytorch-metric-learning's losses with its documented defaults (iaa/losses/pml_*.py)
    distance_weighted: dict[str, float] = field(
        default_factory=lambda: {"margin": 0.05, "cutoff": 0.5, "nonzero_loss_cutoff": 1.4}
    )
    margin: dict[str, float] = field(
        default_factory=lambda: {"margin": 0.2, "beta": 1.2, "nu": 0.0, "learn_beta": False}
    )
    circle: dict[str, float] = field(default_factory=lambda: {"m": 0.4, "gamma": 80.0})
    norm_softmax: dict[str, float] = field(default_factory=lambda: {"temperature": 0.05})
    proxy_nca: dict[str, float] = field(default_factory=lambda: {"softmax_scale": 1.0})
    soft_triple: dict[str, float] = field(
        default_factory=lambda: {"centers_per_class": 10, "la": 20.0, "gamma": 0.1, "margin": 0.01}
    )


@dataclass(frozen=True)
class IAASettings:
    """SPEC section 2; defaults are the paper's."""

    copies: int = 3  # M synthetic samples per original
    lam: float = 0.8  # λ, scaled over training by the schedule of SPEC 2.3
    momentum: float = 0.2
    start_epoch: int = 30  # first global estimation at start_epoch + 1
    update_every: int = 4  # then every update_every epochs (paper text; reference code: 2)
    correction: str = "auto"  # auto: on when the train set has > correction_min_classes
    correction_min_classes: int = 1000
    correction_mode: str = "neighbor"  # Table IX ablations
    k: int = 25
    beta: float = 0.1
    gamma: float = 0.1
    tau: float = 40.0
    sigma_m: float = 1.0
    sigma_cv: float = 1.0
    mean: str = "dynamic"  # dynamic: around z_i (paper); fixed: around μ_y (Table XII)
    copies_by_loss: dict[str, int] = field(default_factory=dict)  # released: contrastive M=2 on SOP/In-Shop
    estimation_transform: str = "eval"  # images of the global estimation pass; released: "train"
    estimation_images: int = 0  # Table XI: estimate from a fixed subset of N images per class (0: all)
    # The released code's departures from the paper's method (SPEC 2.5 items 1, 2, 4, 5):
    apply_correction: bool = True  # item 1: False = corrected σ computed but not used
    sqrt_per_copy: bool = False  # item 2: copy m uses σ^(1/2^m)
    minmax_sentinel: bool = False  # item 4: 1e12 sentinel inside the D_m min-max normalisation
    singleton_mean_zero: bool = False  # item 5: single-image classes keep mean 0


@dataclass(frozen=True)
class TrainSettings:
    """The training protocol (SPEC 3), scaled for the benchmark by the config."""

    mode: str = "finetune"  # finetune: backbone + embedding on images; head: embedding on features
    epochs: int = 100
    batch_size: int = 128
    samples_per_class: int = 4
    max_iterations_per_epoch: int = 300
    lr: float = 1e-4
    embedding_lr_multiplier: float = 10.0
    weight_decay: float = 4e-4
    lr_milestones: list[int] = field(default_factory=lambda: [40, 60])
    lr_gamma: float = 0.2
    embedding_dim: int = 512
    head_hidden: int = 0  # head mode: width of a hidden layer before the embedding (0: linear)
    image_size: int = 224
    resize: int = 256
    crop_scale_min: float = 0.16
    val_split: str | None = "test"  # monitored for the curves (and selected on, with best_test)
    val_every: int = 1
    # Execution settings (iaa.checkpoints.EXECUTION_KEYS): how fast, never what is computed.
    # They stay out of the checkpoint fingerprint and out of what Snakemake compares for reruns.
    workers: int = 0  # DataLoader worker processes of the JPEG path
    loader: str = "auto"  # auto | workers | cache (decoded store + device augmentation)
    compile: bool = False  # torch.compile the model (CUDA)
    square_resize: bool = True  # every pass squashes to resize x resize first (not on CUB: SPEC 3)
    interpolation: str = "bilinear"  # resizing filter; released: lanczos
    head_init: str = "default"  # embedding layer init; released: kaiming_fan_out
    pooling: str = "avg"  # BN-Inception / ResNet-50 global pooling; released: max_avg
    googlenet_transform_input: bool = True  # released: False (SPEC 2.5 item 8)
    sampler: str = "balanced"  # balanced (P classes x m) or released (SPEC 2.5 item 10)
    samples_per_class_large: int | None = None  # m when the train set has > 10,000 images (released: 3)
    selection: str = "last"  # last, best_test (released), best_val (held-out train classes)
    val_class_fraction: float = 0.2  # best_val: share of train classes held out to select on
    recipe: str = "paper"  # provenance label: the recipe whose bundle these settings came from
    lr_by_loss: dict[str, float] = field(default_factory=dict)  # e.g. {"contrastive": 3e-5} on CUB
    amp: bool = True  # CUDA only: bfloat16 (or float16 + loss scaling) autocast of the model
    channels_last: bool = True  # CUDA only: channels-last memory format for the backbone
    iaa: IAASettings = field(default_factory=IAASettings)
    losses: LossSettings = field(default_factory=LossSettings)
    loss_lr: float = 0.01  # Adam rate of the loss's own parameters (proxies), a group of their own


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build a settings dataclass from a (possibly partial) dict; unknown keys are an error."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise IAAError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        ftype = fields[name].type
        nested = {"IAASettings": IAASettings, "LossSettings": LossSettings}.get(str(ftype))
        kwargs[name] = from_dict(nested, value) if nested is not None else value
    return cls(**kwargs)


def parse_settings(cls: type[T], text: str | None) -> T:
    """Parse the ``--settings`` JSON of a command-line call."""
    if not text:
        return cls()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise IAAError(f"--settings is not valid JSON: {err}") from None
    return from_dict(cls, data)


def to_dict(settings: Any) -> dict[str, Any]:
    return dataclasses.asdict(settings)


# Keys with a fixed set of values (the schema's enums), checked again for by-hand --settings.
_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": ("finetune", "head"),
    "loader": ("auto", "workers", "cache"),
    "selection": ("last", "best_test", "best_val"),
    "sampler": ("balanced", "released"),
    "interpolation": ("bilinear", "lanczos"),
    "head_init": ("default", "kaiming_fan_out"),
    "pooling": ("avg", "max_avg"),
    "recipe": ("paper", "released"),
    "iaa.estimation_transform": ("eval", "train"),
    "iaa.correction": ("auto", "on", "off"),
    "iaa.mean": ("dynamic", "fixed"),
}


def check_train_settings(settings: TrainSettings, methods: list[str] | tuple[str, ...] = ("iaa",)) -> None:
    """Refuse settings under which training cannot work by construction, with one line naming
    the key (IAAError). Checked by the workflow before any job runs and by ``iaa train``.

    - ``samples_per_class`` (and ``samples_per_class_large``) below 2: no anchor has a
      positive, so every loss is identically zero;
    - a batch without room for two classes (``batch_size <= samples_per_class``): no negatives;
    - IAA runs whose first global estimation (epoch ``iaa.start_epoch + 1``) comes after the
      last epoch: they would silently be baseline runs;
    - ``selection: best_test`` without a ``val_split`` to select on;
    - a value outside a key's choices (the schema checks them in the workflow; this catches a
      by-hand ``--settings`` such as ``"selection": "best_vall"``).
    """
    for key, allowed in _CHOICES.items():
        section, _, name = key.rpartition(".")
        value = getattr(settings.iaa if section == "iaa" else settings, name)
        if value not in allowed:
            raise IAAError(f"train.{key} is {value!r}; expected one of {', '.join(allowed)}")
    for key in ("samples_per_class", "samples_per_class_large"):
        m = getattr(settings, key)
        if m is not None and m < 2:
            raise IAAError(f"train.{key} is {m}: at least 2 images per class are needed for a positive pair")
        if m is not None and settings.batch_size <= m:
            raise IAAError(
                f"train.batch_size ({settings.batch_size}) must exceed train.{key} ({m}): "
                "a batch of a single class has no negatives"
            )
    if "iaa" in methods and settings.iaa.start_epoch >= settings.epochs:
        raise IAAError(
            f"train.iaa.start_epoch ({settings.iaa.start_epoch}) >= train.epochs ({settings.epochs}): "
            "IAA starts at epoch start_epoch + 1, so every IAA run would be a baseline run"
        )
    if settings.selection == "best_test" and not settings.val_split:
        raise IAAError(
            "train.selection is best_test but train.val_split is null: name the split to select on"
        )


def coerce_config(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """``value`` with strings turned into the numbers or booleans the schema asks for.

    Snakemake hands values given with ``--config`` inside a list or mapping over as strings
    (``--config seeds=[0,1]`` arrives as ``['0', '1']``, and ``'train={lr: 3e-4}'`` as
    ``{'lr': '3e-4'}``); where the JSON schema types a value ``integer``, ``number`` or
    ``boolean``, such a string is converted. Anything that does not parse is left as it is, for
    the schema's validation to name. Follows ``$ref`` (local ``#/definitions/...``),
    ``properties``, ``additionalProperties`` and ``items``; returns a new object.
    """
    root = root if root is not None else schema
    while "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            k: coerce_config(v, props[k] if k in props else extra if isinstance(extra, dict) else {}, root)
            for k, v in value.items()
        }
    if isinstance(value, list):
        items = schema.get("items", {})
        return [coerce_config(v, items if isinstance(items, dict) else {}, root) for v in value]
    if isinstance(value, str):
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else list(types)
        return _parse_scalar(value, types)
    return value


def _parse_scalar(text: str, types: list[str]) -> Any:
    if "string" in types:
        return text
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "null" in types and text.lower() in ("null", "none", "~"):
        return None
    for kind, parse in (("integer", int), ("number", float)):
        if kind in types:
            try:
                return parse(text)
            except ValueError:
                pass
    return text


def coerce_pipeline_config(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """:func:`coerce_config` for the whole pipeline config, ``benchmark_overrides`` included
    (each benchmark's sections are typed like the top-level ones)."""
    out = coerce_config(config, schema)
    overrides = out.get("benchmark_overrides")
    if isinstance(overrides, dict):
        out["benchmark_overrides"] = {
            bench: coerce_config(sections, schema) if isinstance(sections, dict) else sections
            for bench, sections in overrides.items()
        }
    return out
