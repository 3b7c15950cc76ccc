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

Modules
-------
* :mod:`~iaa.data.synth.spec`: :class:`SynthSpec`, the split and variant names and the
  seeded random streams.
* :mod:`~iaa.data.synth.shapes`: the shape kinds (``KINDS``) and their geometry.
* :mod:`~iaa.data.synth.families`: families, classes and their variation profiles.
* :mod:`~iaa.data.synth.render`: drawing one image and writing it as PNG.
* :mod:`~iaa.data.synth.generate`: the task plan, the worker pool,
  :func:`generate_synth` and :func:`write_synth`.
"""

from iaa.data.synth.generate import generate_synth, write_synth
from iaa.data.synth.shapes import KINDS
from iaa.data.synth.spec import SPLITS, VARIANTS, SynthSpec, class_name

__all__ = [
    "KINDS",
    "SPLITS",
    "VARIANTS",
    "SynthSpec",
    "class_name",
    "generate_synth",
    "write_synth",
]
