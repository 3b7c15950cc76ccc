"""The spec of a synthetic benchmark, its split and variant names, and seeded streams.

Every random number of the benchmark comes from :func:`_rng`: a generator on
``numpy.random.SeedSequence(seed, spawn_key=(stream, ...))`` where ``stream`` is one of
the ``_STREAM_*`` constants below, so the output does not depend on the number of
worker processes.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass

import numpy as np

from iaa.errors import IAAError

SPLITS = ("pretrain", "train", "test")
VARIANTS = ("synth", "synth-fewshot")

# Independent random streams, the first element of every spawn key.
_STREAM_FAMILY, _STREAM_CLASS, _STREAM_COUNT, _STREAM_IMAGE = 0, 1, 2, 3


@dataclass(frozen=True)
class SynthSpec:
    """Size and difficulty of a synthetic benchmark.

    ``*_images`` are inclusive (min, max) ranges of images per class. Counts are
    uniform in the range, except for ``train`` and ``test`` when ``tail_exponent`` > 0:
    then P(n) is proportional to ``(n - min + 1) ** -tail_exponent`` (long tail, most
    classes near the minimum). ``class_spread`` scales how far the classes of a family
    lie apart, ``variation`` scales every intra-class variation amplitude.
    """

    variant: str = "synth"
    pretrain_classes: int = 200
    train_classes: int = 100
    test_classes: int = 100
    pretrain_images: tuple[int, int] = (30, 40)
    train_images: tuple[int, int] = (40, 60)
    test_images: tuple[int, int] = (40, 60)
    tail_exponent: float = 0.0
    families: int = 16
    # > 0: pretrain classes come from the first ``pretrain_families`` families only and
    # train/test classes from the others, a domain gap like ImageNet -> birds; 0: shared.
    pretrain_families: int = 0
    image_size: int = 32
    supersample: int = 3
    class_spread: float = 1.0
    variation: float = 1.0

    def __post_init__(self) -> None:
        for split in SPLITS:
            rng = tuple(int(v) for v in getattr(self, f"{split}_images"))
            object.__setattr__(self, f"{split}_images", rng)
            low = 1 if split == "pretrain" else 2
            if len(rng) != 2 or not low <= rng[0] <= rng[1]:
                msg = f"{split}_images must be (min, max) with {low} <= min <= max, got {rng}"
                raise ValueError(msg)
            if self.classes(split) < 1:
                raise ValueError(f"{split}_classes must be >= 1, got {self.classes(split)}")
        if self.families < 1:
            raise ValueError(f"families must be >= 1, got {self.families}")
        if not 0 <= self.pretrain_families < self.families:
            raise ValueError(f"pretrain_families must be in [0, families), got {self.pretrain_families}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if not 1 <= self.supersample <= 8:
            raise ValueError(f"supersample must be in 1..8, got {self.supersample}")
        for name in ("tail_exponent", "class_spread", "variation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def for_variant(cls, name: str, **overrides: object) -> SynthSpec:
        """The spec of a named variant, with fields replaced by ``overrides``. Raises IAAError
        naming the field for an unknown field, a value of the wrong type or out of range."""
        if name == "synth":
            base = cls(pretrain_families=8)
        elif name == "synth-fewshot":
            base = cls(
                variant="synth-fewshot",
                pretrain_classes=300,
                train_classes=2500,
                test_classes=2500,
                pretrain_images=(30, 40),
                train_images=(2, 12),
                test_images=(2, 12),
                tail_exponent=1.5,
                families=48,
                pretrain_families=24,
            )
        else:
            raise IAAError(f"unknown synthetic variant {name!r}; valid: {', '.join(VARIANTS)}")
        fields = {f.name for f in dataclasses.fields(cls)} - {"variant"}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            near = difflib.get_close_matches(str(unknown[0]), sorted(fields), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise IAAError(f"{unknown[0]}: unknown SynthSpec field{hint}; valid: {', '.join(sorted(fields))}")
        for key, value in overrides.items():
            _check_override(key, getattr(base, key), value)
        try:
            return dataclasses.replace(base, **overrides)
        except (TypeError, ValueError) as err:  # __post_init__'s range checks name the field
            raise IAAError(str(err)) from None

    def family_of(self, split: str, j: int) -> int:
        """Family of the ``j``-th class of ``split``."""
        p = self.pretrain_families
        if p == 0:
            return j % self.families
        return j % p if split == "pretrain" else p + j % (self.families - p)

    def classes(self, split: str) -> int:
        return int(getattr(self, f"{split}_classes"))

    def images_range(self, split: str) -> tuple[int, int]:
        return getattr(self, f"{split}_images")

    def tail(self, split: str) -> float:
        return 0.0 if split == "pretrain" else float(self.tail_exponent)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_override(key: str, default: object, value: object) -> None:
    """Refuse an override whose type does not fit its field (that of the default), naming it."""
    if isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_int, value))
        what = "a [min, max] pair of whole numbers"
    elif isinstance(default, int):
        ok, what = _is_int(value), "a whole number"
    elif isinstance(default, float):
        ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]
        what = "a finite number"
    else:
        ok, what = True, ""
    if not ok:
        raise IAAError(f"{key} must be {what}, not {value!r}")


def class_name(family: int, class_id: int) -> str:
    return f"f{family:02d}_c{class_id:04d}"


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
