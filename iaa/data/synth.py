"""The built-in benchmark ``synth``: procedural glyph images with family structure.

Nothing is downloaded: every image is drawn with Pillow from random numbers derived
from the seed, then written as PNG files plus a manifest, exactly like a real dataset,
so the rest of the pipeline runs the same code path.

Design
------
* **Families.** ``spec.families`` families; family ``f`` uses the shape generator
  ``KINDS[f % len(KINDS)]`` (filled polygons, stars, Fourier blobs, stroke glyphs,
  Lissajous curves, constellations of ellipses, spirals, bar groups) with its own
  random structure (vertex count, harmonics, number of strokes, ...), a base shape
  vector, a two-colour palette, a background colour and a *variation profile*.
* **Classes.** A class is its family's base shape vector plus a small class-specific
  perturbation (``class_spread`` scales it), slightly shifted colours, background and
  mean pose, and its own variation profile: the family's profile times a random
  factor ``exp(N(0, 0.2))`` per variation factor. Classes of one family therefore look
  alike and vary alike, which is the correlation between class means and intra-class
  variations that IAA's neighbour correction relies on (SPEC 2.2).
* **Variation factors** (per image, amplitudes from the class profile): rotation,
  scale, aspect ratio, shear, position, shape deformation (noise in the shape vector),
  stroke width, brightness and colour shift, background colour and gradient,
  background clutter (random lines, rings and dots), blur and pixel noise.
* **Splits.** ``pretrain`` (stands in for ImageNet), ``train`` and ``test`` have
  disjoint classes. ``train`` and ``test`` draw their classes from the same families,
  so what is learnt on one transfers to the other. With ``pretrain_families`` > 0 (the
  named variants use half the families) pretrain classes come from other families:
  like ImageNet features on birds, the pretrained backbone is generic, and metric
  learning on ``train`` has something to add (pretrained R@1 on synth drops from
  52% with shared families to 30%). Labels are global class ids:
  pretrain classes first, then train, then test.
* **Determinism.** Every random number comes from ``numpy.random.SeedSequence(seed,
  spawn_key=(stream, ...))`` keyed by family id, class id or (class id, image index),
  so the output does not depend on the number of worker processes.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("pretrain", "train", "test")
VARIANTS = ("synth", "synth-fewshot")

# Independent random streams, the first element of every spawn key.
_STREAM_FAMILY, _STREAM_CLASS, _STREAM_COUNT, _STREAM_IMAGE = 0, 1, 2, 3


# --------------------------------------------------------------------------- the spec


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
        """The spec of a named variant, with fields replaced by ``overrides``."""
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
            raise ValueError(f"unknown synthetic variant {name!r}; valid: {', '.join(VARIANTS)}")
        fields = {f.name for f in dataclasses.fields(cls)} - {"variant"}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown SynthSpec fields {unknown}; valid: {sorted(fields)}")
        return dataclasses.replace(base, **overrides)

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


def class_name(family: int, class_id: int) -> str:
    return f"f{family:02d}_c{class_id:04d}"


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


# --------------------------------------------------------------------------- shapes
#
# A shape kind is a pair (init, build). init(rng) returns the family's integer
# structure, base shape vector and per-entry perturbation scale; build(structure,
# vector) returns primitives (mode, points in unit coordinates, colour index, width
# factor) with mode "fill" (polygon), "line" (open polyline) or "loop" (closed).

Prim = tuple[str, np.ndarray, int, float]
Struct = tuple[int, ...]
Init = Callable[[np.random.Generator], tuple[Struct, np.ndarray, np.ndarray]]
Build = Callable[[Struct, np.ndarray], list[Prim]]


def _rot(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _polar(r: np.ndarray, angle: np.ndarray) -> np.ndarray:
    return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)


def _polygon_init(rng: np.random.Generator) -> tuple[Struct, np.ndarray, np.ndarray]:
    n = int(rng.integers(3, 8))
    z = np.concatenate(
        [
            rng.uniform(0.55, 1.0, n),  # vertex radii
            rng.normal(0.0, 0.15, n),  # vertex angle offsets
            [rng.uniform(0.25, 0.55), rng.uniform(-0.6, 0.6)],  # inner scale, rotation
            rng.normal(0.0, 0.12, 2),  # inner shift
        ]
    )
    s = np.concatenate([np.full(n, 0.12), np.full(n, 0.12), [0.08, 0.3, 0.08, 0.08]])
    return (n,), z, s


def _polygon_build(struct: Struct, z: np.ndarray) -> list[Prim]:
    (n,) = struct
    outer = _polar(np.clip(z[:n], 0.2, 1.2), 2 * np.pi * np.arange(n) / n + z[n : 2 * n])
    scale, rot, dx, dy = z[2 * n : 2 * n + 4]
    inner = float(np.clip(scale, 0.1, 0.8)) * outer @ _rot(rot).T + [dx, dy]
    return [("fill", outer, 0, 1.0), ("fill", inner, 1, 1.0)]


def _star_init(rng: np.random.Generator) -> tuple[Struct, np.ndarray, np.ndarray]:
    n = int(rng.integers(4, 9))
    z = np.concatenate(
        [
            rng.uniform(0.75, 1.0, n),  # tip radii
            rng.uniform(0.25, 0.55, n),  # valley radii
            [rng.normal(0.0, 0.15), rng.uniform(0.0, 0.3)],  # twist, centre dot radius
        ]
    )
    s = np.concatenate([np.full(n, 0.1), np.full(n, 0.08), [0.15, 0.06]])
    return (n,), z, s


def _star_build(struct: Struct, z: np.ndarray) -> list[Prim]:
    (n,) = struct
    base = 2 * np.pi * np.arange(n) / n
    tips = _polar(np.clip(z[:n], 0.3, 1.2), base)
    valleys = _polar(np.clip(z[n : 2 * n], 0.1, 0.8), base + np.pi / n + z[2 * n])
    prims: list[Prim] = [("fill", np.stack([tips, valleys], axis=1).reshape(-1, 2), 0, 1.0)]
    dot = float(z[2 * n + 1])
    if dot > 0.06:
        prims.append(("fill", _ellipse(0.0, 0.0, dot, dot), 1, 1.0))
    return prims


def _fourier_init(rng: np.random.Generator) -> tuple[Struct, np.ndarray, np.ndarray]:
    harmonics = tuple(int(k) for k in np.sort(rng.choice(np.arange(2, 7), 3, replace=False)))
    z = np.concatenate([rng.uniform(0.05, 0.2, 3), rng.uniform(0.0, 2 * np.pi, 3)])
    s = np.array([0.05, 0.05, 0.05, 0.5, 0.5, 0.5])
    return harmonics, z, s


def _fourier_build(struct: Struct, z: np.ndarray) -> list[Prim]:
    t = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)
    r = 0.62 + sum(z[i] * np.cos(k * t + z[3 + i]) for i, k in enumerate(struct))
    pts = _polar(np.clip(r, 0.15, 1.3), t)
    return [("fill", pts, 0, 1.0), ("loop", pts, 1, 0.8)]


def _glyph_init(rng: np.random.Generator) -> tuple[Struct, np.ndarray, np.ndarray]:
    counts = tuple(int(c) for c in rng.integers(2, 4, size=int(rng.integers(2, 5))))
    z = rng.uniform(-0.85, 0.85, 2 * sum(counts))
    return counts, z, np.full(z.size, 0.14)


def _glyph_build(struct: Struct, z: np.ndarray) -> list[Prim]:
    pts = z.reshape(-1, 2)
    prims: list[Prim] = []
    start = 0
    for count in struct:
        ctrl = pts[start : start + count]
        start += count
        if count == 3:  # quadratic Bezier through the middle control point's pull
            t = np.linspace(0.0, 1.0, 12)[:, None]
            ctrl = (1 - t) ** 2 * ctrl[0] + 2 * t * (1 - t) * ctrl[1] + t**2 * ctrl[2]
        prims.append(("line", ctrl, 0, 1.0))
    return prims


_LISSAJOUS = ((1, 2), (2, 3), (3, 4), (1, 3), (3, 5), (2, 5))


def _lissajous_init(rng: np.random.Generator) -> tuple[Struct, np.ndarray, np.ndarray]:
    ab = _LISSAJOUS[int(rng.integers(len(_LISSAJOUS)))]
    # phase, x amplitude, y amplitude, extent (fraction of the full period)
    z = np.array([rng.uniform(0, np.pi), *rng.uniform(0.7, 1.0, 2), rng.uniform(0.55, 1.0)])
    return ab, z, np.array([0.25, 0.1, 0.1, 0.08])


def _lissajous_build(struct: Struct, z: np.ndarray) -> list[Prim]:
    a, b = struct
    t = np.linspace(0.0, 2 * np.pi * float(np.clip(z[3], 0.2, 1.0)), 90)
    pts = np.stack([z[1] * np.sin(a * t + z[0]), z[2] * np.sin(b * t)], axis=1)
    return [("line", pts, 0, 0.8)]


def _constellation_init(rng: np.random.Generator) -> tuple[Struct, np.ndarray, np.ndarray]:
    m = int(rng.integers(3, 6))
    z = np.stack(
        [
            rng.uniform(-0.6, 0.6, m),  # centre x
            rng.uniform(-0.6, 0.6, m),  # centre y
            rng.uniform(0.2, 0.4, m),  # radius
            rng.normal(0.0, 0.3, m),  # log aspect
        ],
        axis=1,
    ).reshape(-1)
    return (m,), z, np.tile([0.12, 0.12, 0.05, 0.15], m)


def _constellation_build(struct: Struct, z: np.ndarray) -> list[Prim]:
    prims: list[Prim] = []
    for i, (x, y, r, asp) in enumerate(z.reshape(-1, 4)):
        r = max(float(r), 0.05)
        e = math.exp(float(asp) / 2)
        prims.append(("fill", _ellipse(x, y, r * e, r / e), i % 2, 1.0))
    return prims


def _spiral_init(rng: np.random.Generator) -> tuple[Struct, np.ndarray, np.ndarray]:
    arms = int(rng.integers(1, 4))
    z = np.array(
        [rng.uniform(0.7, 1.8), rng.uniform(0.0, 0.25), rng.uniform(0.75, 1.0), rng.normal(0, 0.3)]
    )  # turns, start radius, end radius, log growth exponent
    return (arms,), z, np.array([0.18, 0.06, 0.08, 0.15])


def _spiral_build(struct: Struct, z: np.ndarray) -> list[Prim]:
    (arms,) = struct
    t = np.linspace(0.0, 1.0, 60)
    r = z[1] + (z[2] - z[1]) * t ** math.exp(float(z[3]))
    return [("line", _polar(r, 2 * np.pi * (z[0] * t + k / arms)), k % 2, 1.0) for k in range(arms)]


def _bars_init(rng: np.random.Generator) -> tuple[Struct, np.ndarray, np.ndarray]:
    m = int(rng.integers(2, 6))
    z = np.stack(
        [
            np.sort(rng.uniform(-0.7, 0.7, m)),  # centre x
            rng.uniform(0.1, 0.28, m),  # width
            rng.uniform(0.5, 1.6, m),  # height
            rng.normal(0.0, 0.25, m),  # centre y
            rng.normal(0.0, 0.15, m),  # tilt
        ],
        axis=1,
    ).reshape(-1)
    return (m,), z, np.tile([0.1, 0.04, 0.15, 0.1, 0.1], m)


def _bars_build(struct: Struct, z: np.ndarray) -> list[Prim]:
    prims: list[Prim] = []
    for i, (x, w, h, y, tilt) in enumerate(z.reshape(-1, 5)):
        w, h = max(float(w), 0.04) / 2, max(float(h), 0.1) / 2
        corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) @ _rot(tilt).T + [x, y]
        prims.append(("fill", corners, i % 2, 1.0))
    return prims


KINDS: dict[str, tuple[Init, Build]] = {
    "polygon": (_polygon_init, _polygon_build),
    "star": (_star_init, _star_build),
    "fourier": (_fourier_init, _fourier_build),
    "glyph": (_glyph_init, _glyph_build),
    "lissajous": (_lissajous_init, _lissajous_build),
    "constellation": (_constellation_init, _constellation_build),
    "spiral": (_spiral_init, _spiral_build),
    "bars": (_bars_init, _bars_build),
}
_KIND_NAMES = tuple(KINDS)

# --------------------------------------------------------------------------- families/classes

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


# --------------------------------------------------------------------------- rendering


def _colour(rgb: np.ndarray) -> tuple[int, int, int]:
    r, g, b = np.clip(np.rint(rgb), 0, 255).astype(int)
    return int(r), int(g), int(b)


def _render(fam: _Family, cls: _Class, rng: np.random.Generator, size: int, ss: int) -> Image.Image:
    """One image of class ``cls``; every random draw comes from ``rng`` in a fixed order."""
    p = cls.profile
    side = size * ss

    # Background: class colour plus a per-image shift and a linear gradient.
    bg = cls.background + rng.normal(0.0, p[_F["background"]], 3)
    theta = rng.uniform(0.0, 2 * np.pi)
    slope = rng.normal(0.0, p[_F["background"]], 3)
    axis = (np.arange(side) + 0.5) / side - 0.5
    proj = math.cos(theta) * axis[None, :] + math.sin(theta) * axis[:, None]
    canvas = bg + 2.0 * proj[:, :, None] * slope
    img = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)

    # Clutter: lines, rings and dots in colours part-way between random and background.
    for _ in range(int(rng.poisson(p[_F["clutter"]]))):
        kind = int(rng.integers(3))
        col = _colour(bg + rng.uniform(0.3, 0.9) * (rng.uniform(0, 255, 3) - bg))
        a, b = rng.uniform(-0.1, 1.1, (2, 2)) * side
        width = max(1, round(rng.uniform(0.01, 0.04) * side))
        if kind == 0:
            draw.line([tuple(a), tuple(b)], fill=col, width=width)
        else:
            r = rng.uniform(0.03, 0.1 if kind == 2 else 0.3) * side
            box = [a[0] - r, a[1] - r, a[0] + r, a[1] + r]
            if kind == 1:
                draw.ellipse(box, outline=col, width=width)
            else:
                draw.ellipse(box, fill=col)

    # The glyph: deformed class shape under a random affine map.
    z = cls.shape + p[_F["deform"]] * fam.spread * fam.shape_scale * rng.normal(size=cls.shape.size)
    prims = KINDS[fam.kind][1](fam.struct, z)
    angle = math.radians(cls.pose + rng.uniform(-1.0, 1.0) * p[_F["rotation"]])
    scale = 0.38 * side * cls.size * math.exp(rng.normal(0.0, p[_F["scale"]]))
    aspect = math.exp(rng.normal(0.0, p[_F["aspect"]]))
    shear = rng.normal(0.0, p[_F["shear"]])
    stretch = math.sqrt(aspect)
    affine = scale * _rot(angle) @ np.array([[stretch, shear], [0.0, 1 / stretch]])
    shift = side / 2 + rng.normal(0.0, p[_F["position"]], 2) * side
    gain = math.exp(rng.normal(0.0, p[_F["brightness"]]))
    palette = cls.palette * gain + rng.normal(0.0, p[_F["colour"]], 3)
    width = cls.stroke * side * math.exp(rng.normal(0.0, p[_F["stroke"]]))
    for mode, pts, ci, wf in prims:
        xy = [tuple(q) for q in (pts @ affine.T + shift).tolist()]
        col = _colour(palette[ci])
        if mode == "fill":
            draw.polygon(xy, fill=col)
        else:
            if mode == "loop":
                xy.append(xy[0])
            draw.line(xy, fill=col, width=max(1, round(width * wf)), joint="curve")

    # Downsample with antialiasing, then blur and pixel noise at the output size.
    if ss > 1:
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    radius = rng.uniform(0.0, p[_F["blur"]])
    if radius > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    noise = rng.normal(0.0, rng.uniform(0.0, p[_F["noise"]]), (size, size, 3))
    out = np.asarray(img, dtype=np.float64) + noise
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def _save_png(img: Image.Image, path: Path) -> None:
    """Write atomically: a temporary file in the same directory renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            img.save(fh, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class _Task:
    out_dir: Path
    spec: SynthSpec
    seed: int
    split: str
    class_id: int
    family: int
    n_images: int


def _n_images(low: int, high: int, tail: float, rng: np.random.Generator) -> int:
    if tail <= 0:
        return int(rng.integers(low, high + 1))
    weights = np.arange(1, high - low + 2, dtype=np.float64) ** -tail
    return low + int(rng.choice(weights.size, p=weights / weights.sum()))


def _plan(out_dir: Path, spec: SynthSpec, seed: int) -> list[_Task]:
    tasks = []
    offset = 0
    for split in SPLITS:
        low, high = spec.images_range(split)
        for j in range(spec.classes(split)):
            cid = offset + j
            n = _n_images(low, high, spec.tail(split), _rng(seed, _STREAM_COUNT, cid))
            tasks.append(_Task(out_dir, spec, seed, split, cid, spec.family_of(split, j), n))
        offset += spec.classes(split)
    return tasks


def _relpath(task: _Task, index: int) -> str:
    return f"images/{task.split}/{class_name(task.family, task.class_id)}/{index:03d}.png"


def _run_task(task: _Task) -> int:
    fam = _family(task.seed, task.family)
    cls = _class(task.seed, task.spec, fam, task.class_id)
    folder = task.out_dir / Path(_relpath(task, 0)).parent
    folder.mkdir(parents=True, exist_ok=True)
    size, ss = task.spec.image_size, task.spec.supersample
    for i in range(task.n_images):
        img = _render(fam, cls, _rng(task.seed, _STREAM_IMAGE, task.class_id, i), size, ss)
        _save_png(img, task.out_dir / _relpath(task, i))
    return task.n_images


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork where the platform has it: workers need no re-import of the caller's main
    # module (Snakemake scripts and notebooks have no ``if __name__ == "__main__"``).
    # The pool starts before any tqdm thread exists.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def generate_synth(
    out_dir: Path, spec: SynthSpec, seed: int, workers: int = 1, progress: bool = False
) -> pd.DataFrame:
    """Render every image of ``spec`` under ``out_dir/images/<split>/<class>/<i>.png``.

    Returns the manifest: ``path`` (relative to ``out_dir``), ``label`` (global class
    id), ``split``, ``class_name`` (``f<family>_c<class id>``) and ``family``. The
    output depends only on ``spec`` and ``seed``, not on ``workers``.
    """
    import pandas as pd

    out_dir = Path(out_dir)
    tasks = _plan(out_dir, spec, seed)
    total = sum(t.n_images for t in tasks)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc=f"{spec.variant} seed {seed}")

    def consume(counts: Iterable[int]) -> None:
        for n in counts:
            if bar is not None:
                bar.update(n)

    try:
        if workers <= 1:
            consume(map(_run_task, tasks))
        else:
            chunk = max(1, min(32, len(tasks) // (workers * 8)))
            with _pool_context().Pool(workers) as pool:
                consume(pool.imap(_run_task, tasks, chunksize=chunk))
    finally:
        if bar is not None:
            bar.close()

    rows = [
        (_relpath(t, i), t.class_id, t.split, class_name(t.family, t.class_id), t.family)
        for t in tasks
        for i in range(t.n_images)
    ]
    frame = pd.DataFrame(rows, columns=["path", "label", "split", "class_name", "family"])
    return frame.astype({"label": np.int64, "family": np.int64})


def write_synth(
    out_dir: Path,
    manifest_path: Path,
    spec: SynthSpec,
    seed: int,
    workers: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Generate the benchmark and write its manifest Parquet (paths relative to ``out_dir``)."""
    from iaa.io import write_manifest

    manifest = generate_synth(out_dir, spec, seed, workers=workers, progress=progress)
    write_manifest(manifest_path, manifest, root=Path(out_dir))
    return manifest
