"""Index batches for metric learning: several images of each of several classes (SPEC 3, 2.5 item 10).

Two samplers, one interface (``len``, iteration, ``sample()``, ``generator``):

- :class:`BalancedBatchSampler`: the paper's P x m sampler (SPEC 3): ``ceil(batch_size / m)``
  distinct random classes of ``m`` images each, truncated to ``batch_size``.
- :class:`ReleasedBatchSampler`: the authors' released ``MImagesPerClassSampler``
  (metric/batchsampler.py, used by run.py with m = 3 on In-Shop and on train sets over 10,000
  images; SPEC 2.5 item 10): walk every class in a fresh random order, take up to ``m`` images of
  each, stop once the batch is full, truncate.

Both yield ``torch.int64`` tensors of row indices into ``labels``, grouped by class (the images of
one class are consecutive), and draw all their randomness from one CPU ``torch.Generator`` stored
as ``self.generator``: the trainer checkpoints ``generator.get_state()`` and restores it to resume
the exact stream of batches. Per-batch work is one ``randperm`` over the classes, a few tensor
ops over at most ``batch_size`` entries, and ``O(classes in the batch x m^2)`` for the image draws;
there is no Python loop over classes, so a batch costs well under a millisecond at SOP's 11,318
classes.

Settings that make every pair-based loss identically zero by construction are refused with a
``ValueError`` naming the setting: ``samples_per_class < 2`` (no positive pair),
``batch_size < samples_per_class + 1`` (a batch needs a second class for negatives and one class
with two images for a positive pair) and labels with fewer than 2 classes (no negatives).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

SAMPLERS = ("balanced", "released")


def _draw_subsets(counts: torch.Tensor, take: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Uniform random ``take[c]``-subsets of ``range(counts[c])`` for every row ``c`` at once.

    Robert Floyd's algorithm (Bentley & Floyd, CACM 1987), vectorised over rows: for step
    ``s = 0 .. take - 1`` with ``j = counts - take + s``, draw ``t`` uniform in ``[0, j]`` and keep
    ``t`` unless already chosen, else keep ``j``. Each ``take``-subset is equally likely (without
    replacement); cost ``O(rows x max(take)^2)``, independent of the class sizes.

    Args:
        counts: ``int64 [rows]``, images per class; ``counts >= take`` on the rows that matter.
        take: ``int64 [rows]``, images to draw per class, ``0 <= take <= u.shape[1]``.
        u: ``float64 [rows, width]`` uniforms in ``[0, 1)``, one per step.

    Returns:
        ``int64 [rows, width]`` positions within each class; only ``[:, :take[c]]`` is meaningful
        (entries past ``take[c]`` are filler, to be masked out by the caller).
    """
    rows, width = u.shape
    chosen = torch.empty(rows, width, dtype=torch.long)
    for s in range(width):  # width = m (a few steps), not a loop over classes
        j = counts - take + s
        t = torch.minimum((u[:, s] * (j + 1)).long(), j)  # guard float rounding up to j + 1
        seen = (chosen[:, :s] == t[:, None]).any(dim=1)
        chosen[:, s] = torch.where(seen, j, t)
    return chosen


class _ClassBatchSampler:
    """Shared part: class index (labels grouped by class), validation, iteration, the generator.

    Attributes:
        order: ``int64 [N]``, row indices of ``labels`` sorted by label (stable).
        starts: ``int64 [C]``, first position in ``order`` of each class.
        counts: ``int64 [C]``, images per class.
        m, batch_size, iterations: the settings.
        generator: CPU ``torch.Generator`` seeded with ``seed``; the only source of randomness.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        samples_per_class: int,
        iterations: int,
        seed: int = 0,
    ) -> None:
        if samples_per_class < 2:
            raise ValueError(
                f"samples_per_class must be >= 2 (got {samples_per_class}): "
                "with one image per class a batch holds no positive pair"
            )
        if batch_size < samples_per_class + 1:
            raise ValueError(
                f"batch_size must be >= samples_per_class + 1 = {samples_per_class + 1} "
                f"(got {batch_size}): a batch needs at least two classes (negatives) "
                "and one class with two images (a positive pair)"
            )
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0 (got {iterations})")
        labels = np.asarray(labels).reshape(-1)
        order = np.argsort(labels, kind="stable")
        _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        if len(counts) < 2:
            raise ValueError(
                f"labels hold {len(counts)} class(es): a batch needs at least 2 classes for negatives"
            )
        self.order = torch.from_numpy(order).long()
        self.starts = torch.from_numpy(starts).long()
        self.counts = torch.from_numpy(counts).long()
        self.m = samples_per_class
        self.batch_size = batch_size
        self.iterations = iterations
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.iterations

    def __iter__(self) -> Iterator[torch.Tensor]:
        for _ in range(self.iterations):
            yield self.sample()

    def sample(self) -> torch.Tensor:
        """One batch: ``int64 [batch_size]`` row indices into ``labels``, grouped by class."""
        raise NotImplementedError

    def _gather(self, classes: torch.Tensor, pos: torch.Tensor, take: torch.Tensor) -> torch.Tensor:
        """Row indices of ``pos[c, :take[c]]`` within class ``classes[c]``, class-major order.

        Args:
            classes: ``int64 [k]`` positions into ``starts`` / ``counts``.
            pos: ``int64 [k, w]`` positions within each class.
            take: ``int64 [k]`` how many leading entries of each row to keep.
        """
        keep = torch.arange(pos.shape[1])[None, :] < take[:, None]
        return self.order[(self.starts[classes][:, None] + pos)[keep]]


class BalancedBatchSampler(_ClassBatchSampler):
    """The paper's P x m sampler (SPEC 3), any batch size.

    Rule: each batch holds ``P = ceil(batch_size / m)`` distinct classes drawn uniformly without
    replacement, ``m`` images each, truncated to ``batch_size``: the last class contributes
    ``batch_size mod m`` images when that is non-zero (a uniform random subset, same rule as the
    others), so batch 256 with m = 3 gives 85 classes of 3 images and one of 1. Images of a class
    are drawn without replacement when it has at least ``m`` of them, else with replacement.
    Classes with a single image are left out when at least ``P`` classes have two or more, since
    they offer no positive pair.

    Raises ``ValueError`` for ``m < 2``, ``batch_size < m + 1``, fewer than 2 classes, or fewer
    than ``P`` classes to draw from.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        samples_per_class: int,
        iterations: int,
        seed: int = 0,
    ) -> None:
        super().__init__(labels, batch_size, samples_per_class, iterations, seed)
        self.classes_per_batch = -(-batch_size // samples_per_class)
        usable = self.counts >= 2
        if int(usable.sum()) >= self.classes_per_batch:
            self.starts, self.counts = self.starts[usable], self.counts[usable]
        if len(self.counts) < self.classes_per_batch:
            raise ValueError(
                f"batch_size {batch_size} with samples_per_class {samples_per_class} needs "
                f"{self.classes_per_batch} classes per batch but only {len(self.counts)} exist"
            )
        # images per chosen class, in batch order: m, ..., m, then the remainder (or m)
        self.take = torch.full((self.classes_per_batch,), samples_per_class, dtype=torch.long)
        self.take[-1] = batch_size - (self.classes_per_batch - 1) * samples_per_class

    def sample(self) -> torch.Tensor:
        """One batch: ``int64 [batch_size]`` row indices, ``m`` consecutive per class, last truncated."""
        g = self.generator
        chosen = torch.randperm(len(self.counts), generator=g)[: self.classes_per_batch]
        counts = self.counts[chosen]
        u = torch.rand(len(chosen), self.m, generator=g, dtype=torch.float64)
        big = counts >= self.m
        # rows with >= m images: without replacement; smaller ones: with replacement (same u,
        # disjoint rows, so the draws stay independent)
        without = _draw_subsets(torch.where(big, counts, self.m), self.take, u)
        with_repl = torch.minimum((u * counts[:, None]).long(), counts[:, None] - 1)
        pos = torch.where(big[:, None], without, with_repl)
        return self._gather(chosen, pos, self.take)


class ReleasedBatchSampler(_ClassBatchSampler):
    """The released code's sampler (metric/batchsampler.py ``MImagesPerClassSampler``; SPEC 2.5 item 10).

    Rule: for each batch, put ALL classes (single-image ones included) in a fresh uniformly random
    order; walking that order, take ``min(m, class size)`` images of each class without
    replacement, stop at the first class that fills the batch, and truncate to ``batch_size`` (the
    last class keeps a uniform random subset of the images it would have given). Vectorised: a
    ``randperm`` of the classes, a ``cumsum`` of the take counts over its first ``batch_size``
    entries (enough, as each class gives at least one image) to find how many classes are needed,
    then subsets drawn for only those classes.

    Same validation as :class:`BalancedBatchSampler` (``m >= 2``, ``batch_size >= m + 1``, at
    least 2 classes), plus: at least one class must have 2 images (else no positive pair can
    exist), and one pass over all classes must fill a batch (``sum(min(m, size)) >= batch_size``;
    the released code would yield short batches there).
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        samples_per_class: int,
        iterations: int,
        seed: int = 0,
    ) -> None:
        super().__init__(labels, batch_size, samples_per_class, iterations, seed)
        if int(self.counts.max()) < 2:
            raise ValueError("labels: every class has a single image, so no positive pair can exist")
        self.class_take = self.counts.clamp(max=samples_per_class)
        available = int(self.class_take.sum())
        if available < batch_size:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {available} images that one pass over all "
                f"classes gives with samples_per_class {samples_per_class}"
            )

    def sample(self) -> torch.Tensor:
        """One batch: ``int64 [batch_size]`` row indices, classes in drawn order, last truncated."""
        g = self.generator
        # every class gives >= 1 image, so the first batch_size classes of the order always fill
        # the batch: only that prefix is looked at, keeping the cost O(batch_size) after randperm
        perm = torch.randperm(len(self.counts), generator=g)[: self.batch_size]
        filled = self.class_take[perm].cumsum(0)
        n = int(torch.searchsorted(filled, self.batch_size)) + 1  # first class reaching the size
        chosen = perm[:n]
        take = self.class_take[chosen].clone()
        take[-1] -= int(filled[n - 1]) - self.batch_size
        u = torch.rand(n, self.m, generator=g, dtype=torch.float64)
        pos = _draw_subsets(self.counts[chosen], take, u)
        return self._gather(chosen, pos, take)


def build_sampler(
    kind: str,
    labels: np.ndarray,
    batch_size: int,
    samples_per_class: int,
    iterations: int,
    seed: int = 0,
) -> BalancedBatchSampler | ReleasedBatchSampler:
    """The sampler named by ``kind`` (the ``sampler`` setting): "balanced" (paper, SPEC 3) or
    "released" (released code, SPEC 2.5 item 10). Unknown kinds raise ``ValueError``."""
    if kind == "balanced":
        return BalancedBatchSampler(labels, batch_size, samples_per_class, iterations, seed)
    if kind == "released":
        return ReleasedBatchSampler(labels, batch_size, samples_per_class, iterations, seed)
    raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)} (got {kind!r})")
