import numpy as np
import pytest

from iaa.data.sampler import BalancedBatchSampler


def test_batches_have_p_classes_of_m_distinct_images(rng):
    labels = rng.integers(0, 30, size=600)
    sampler = BalancedBatchSampler(labels, batch_size=40, samples_per_class=4, iterations=25, seed=1)
    batches = list(sampler)
    assert len(batches) == 25
    for batch in batches:
        idx = batch.numpy()
        assert len(idx) == 40
        classes, counts = np.unique(labels[idx], return_counts=True)
        assert len(classes) == 10 and (counts == 4).all()
        assert len(np.unique(idx)) == 40  # every class has >= 4 images: no repeats


def test_small_classes_are_drawn_with_replacement_and_singletons_left_out():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2, 2, 3])  # class 3 is a single image
    sampler = BalancedBatchSampler(labels, batch_size=9, samples_per_class=3, iterations=50, seed=0)
    seen = np.concatenate([b.numpy() for b in sampler])
    assert 9 not in seen
    for batch in sampler:
        counts = np.bincount(labels[batch.numpy()], minlength=4)
        assert sorted(counts[:3]) == [3, 3, 3]


def test_same_seed_same_batches_and_state_restores(rng):
    labels = rng.integers(0, 20, size=300)
    a = BalancedBatchSampler(labels, 32, 4, 5, seed=7)
    b = BalancedBatchSampler(labels, 32, 4, 5, seed=7)
    assert all((x == y).all() for x, y in zip(a, b))
    state = a.generator.get_state()
    first = [x.clone() for x in a]
    a.generator.set_state(state)
    assert all((x == y).all() for x, y in zip(first, a))


def test_too_few_classes_is_an_error():
    with pytest.raises(ValueError, match="only 2 exist"):
        BalancedBatchSampler(np.array([0, 0, 1, 1]), batch_size=12, samples_per_class=4, iterations=1)
