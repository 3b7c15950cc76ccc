"""Table XI: class statistics from a fixed random subset of N images per class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iaa.estimation import estimation_rows


def test_subset_keeps_min_n_count_rows_per_class_and_is_fixed():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 9, size=200))
    labels[labels == 8] = 7  # a class absent, one with double weight
    labels[:2] = 8  # a class with fewer images than N
    for n in (1, 3, 5, 7):
        mask = estimation_rows(labels, n)
        for c in range(9):
            rows = int((labels == c).sum())
            assert int(mask[labels == c].sum()) == min(n, rows)
        assert torch.equal(mask, estimation_rows(labels, n))  # the same subset every estimation
    assert bool(estimation_rows(labels, 0).all())
    # another seed draws another subset
    assert not torch.equal(estimation_rows(labels, 3, seed=0), estimation_rows(labels, 3, seed=1))
    with pytest.raises(ValueError):
        estimation_rows(labels, -1)


def test_subset_is_uniform_within_a_class():
    """Over many seeds each of a class's 10 images is picked about N/10 of the time."""
    labels = torch.tensor([0] * 10 + [1] * 4)
    picks = torch.stack([estimation_rows(labels, 3, seed=s) for s in range(2000)]).double().mean(0)
    assert torch.allclose(picks[:10], torch.full((10,), 0.3, dtype=torch.float64), atol=0.04)
    assert torch.allclose(picks[10:], torch.full((4,), 0.75, dtype=torch.float64), atol=0.04)
