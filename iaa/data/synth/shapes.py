"""Shape kinds: the glyph generators that give each family its look.

A shape kind is a pair (init, build). init(rng) returns the family's integer
structure, base shape vector and per-entry perturbation scale; build(structure,
vector) returns primitives (mode, points in unit coordinates, colour index, width
factor) with mode "fill" (polygon), "line" (open polyline) or "loop" (closed).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

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
