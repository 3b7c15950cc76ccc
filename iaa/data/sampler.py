"""Balanced batches: P classes x m images each (SPEC 3), drawn with tensor ops."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class BalancedBatchSampler:
    """Yields ``iterations`` batches of ``batch_size // m`` distinct classes with ``m`` images each.

    Images of a class are drawn without replacement when it has at least ``m`` of them,
    else with replacement. Classes with a single image are left out when at least
    ``batch_size // m`` classes have two or more, since they offer no positive pair.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        samples_per_class: int,
        iterations: int,
        seed: int = 0,
    ) -> None:
        if batch_size % samples_per_class:
            raise ValueError("batch_size must be a multiple of samples_per_class")
        labels = np.asarray(labels)
        order = np.argsort(labels, kind="stable")
        classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        self.classes_per_batch = batch_size // samples_per_class
        usable = counts >= 2
        if usable.sum() >= self.classes_per_batch:
            starts, counts = starts[usable], counts[usable]
        if len(counts) < self.classes_per_batch:
            raise ValueError(
                f"batch of {self.classes_per_batch} classes requested but only {len(counts)} exist"
            )
        self.order = torch.from_numpy(order)
        self.starts = torch.from_numpy(starts)
        self.counts = torch.from_numpy(counts)
        self.m = samples_per_class
        self.iterations = iterations
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.iterations

    def __iter__(self) -> Iterator[torch.Tensor]:
        for _ in range(self.iterations):
            yield self.sample()

    def sample(self) -> torch.Tensor:
        g = self.generator
        chosen = torch.randperm(len(self.counts), generator=g)[: self.classes_per_batch]
        counts = self.counts[chosen]
        # Without replacement: rank random keys, invalid positions (>= count) pushed last.
        max_count = int(counts.max())
        keys = torch.rand(len(chosen), max_count, generator=g)
        keys[torch.arange(max_count)[None, :] >= counts[:, None]] = 2.0
        without = keys.argsort(dim=1)[:, : self.m]
        if without.shape[1] < self.m:  # every chosen class is smaller than m
            without = torch.zeros(len(chosen), self.m, dtype=torch.long)
        with_repl = (torch.rand(len(chosen), self.m, generator=g) * counts[:, None]).long()
        pos = torch.where((counts >= self.m)[:, None], without, with_repl)
        return self.order[(self.starts[chosen][:, None] + pos).reshape(-1)]
