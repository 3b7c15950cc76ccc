"""Rendering: one image of a class, drawn from its own random stream, and PNG writing."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from iaa.atomic import usual_mode
from iaa.data.synth.families import _F, _Class, _Family
from iaa.data.synth.shapes import KINDS, _rot


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
        usual_mode(tmp)
        with os.fdopen(fd, "wb") as fh:
            img.save(fh, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
