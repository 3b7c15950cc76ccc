"""Families and classes: shape, colours, pose and the variation profile of each.

A family draws its shape structure, base shape vector, palette, background and a
variation profile (one amplitude per factor in ``_FACTORS``); a class perturbs its
family's shape, colours and pose and scales the family's profile by a random factor
per variation factor, so classes of one family look alike and vary alike.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from iaa.data.synth.shapes import _KIND_NAMES, KINDS, Struct
from iaa.data.synth.spec import _STREAM_CLASS, _STREAM_FAMILY, SynthSpec, _rng

# Variation factors: (name, family low, family high); a family draws each log-uniformly.
_FACTORS = (
    ("rotation", 4.0, 180.0),  # max |rotation| around the class pose, degrees
    ("scale", 0.04, 0.22),  # std of log scale
    ("aspect", 0.02, 0.2),  # std of log aspect ratio
    ("shear", 0.02, 0.25),  # std of shear
    ("position", 0.03, 0.12),  # std of the offset, fraction of the image side
    ("deform", 0.15, 0.7),  # shape-vector noise, in units of the class spread
    ("stroke", 0.05, 0.35),  # std of log stroke width
    ("brightness", 0.04, 0.25),  # std of log brightness gain
    ("colour", 6.0, 30.0),  # std of the per-channel colour shift (0-255)
    ("background", 10.0, 50.0),  # std of background colour and gradient (0-255)
    ("clutter", 0.3, 6.0),  # mean number of clutter items
    ("blur", 0.2, 1.2),  # max blur radius, output pixels
    ("noise", 1.0, 14.0),  # max std of pixel noise (0-255)
)
_F = {name: i for i, (name, _, _) in enumerate(_FACTORS)}
_CLASS_PROFILE_JITTER = 0.2  # std of the log factor between a class and its family


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return 255.0 * np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


@dataclass(frozen=True)
class _Family:
    index: int
    kind: str
    struct: Struct
    shape: np.ndarray
    shape_scale: np.ndarray
    spread: float
    palette: np.ndarray  # (2, 3) RGB
    background: np.ndarray  # (3,) RGB
    size: float
    stroke: float
    profile: np.ndarray  # (len(_FACTORS),)


@dataclass(frozen=True)
class _Class:
    shape: np.ndarray
    palette: np.ndarray
    background: np.ndarray
    pose: float  # degrees
    size: float
    stroke: float
    profile: np.ndarray


@lru_cache(maxsize=256)
def _family(seed: int, index: int) -> _Family:
    rng = _rng(seed, _STREAM_FAMILY, index)
    kind = _KIND_NAMES[index % len(_KIND_NAMES)]
    struct, shape, shape_scale = KINDS[kind][0](rng)
    hue = rng.uniform()
    palette = np.stack(
        [
            _hsv(hue, rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.0)),
            _hsv(hue + rng.uniform(0.25, 0.75), rng.uniform(0.4, 1.0), rng.uniform(0.5, 1.0)),
        ]
    )
    background = _hsv(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.1, 0.9))
    low = np.log([lo for _, lo, _ in _FACTORS])
    high = np.log([hi for _, _, hi in _FACTORS])
    return _Family(
        index=index,
        kind=kind,
        struct=struct,
        shape=shape,
        shape_scale=shape_scale,
        spread=float(rng.uniform(0.7, 1.3)),
        palette=palette,
        background=background,
        size=float(rng.uniform(0.8, 1.05)),
        stroke=float(np.exp(rng.uniform(np.log(0.035), np.log(0.09)))),
        profile=np.exp(rng.uniform(low, high)),
    )


def _class(seed: int, spec: SynthSpec, fam: _Family, class_id: int) -> _Class:
    rng = _rng(seed, _STREAM_CLASS, class_id)
    delta = rng.normal(size=fam.shape.size)
    profile = fam.profile * np.exp(rng.normal(0.0, _CLASS_PROFILE_JITTER, fam.profile.size))
    profile = profile * spec.variation
    profile[_F["rotation"]] = min(profile[_F["rotation"]], 180.0)
    return _Class(
        shape=fam.shape + spec.class_spread * fam.spread * fam.shape_scale * delta,
        palette=np.clip(fam.palette + rng.normal(0.0, 12.0, fam.palette.shape), 0, 255),
        background=np.clip(fam.background + rng.normal(0.0, 6.0, 3), 0, 255),
        pose=float(rng.normal(0.0, 12.0)),
        size=fam.size * float(np.exp(rng.normal(0.0, 0.06))),
        stroke=fam.stroke * float(np.exp(rng.normal(0.0, 0.15))),
        profile=profile,
    )
