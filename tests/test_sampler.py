import time
from collections import Counter

import numpy as np
import pytest

from iaa.data.sampler import BalancedBatchSampler, ReleasedBatchSampler, build_sampler

KINDS = ("balanced", "released")


def _runs(classes: list[int]) -> list[tuple[int, int]]:
    """(class, length) of each maximal run of equal consecutive labels."""
    runs: list[tuple[int, int]] = []
    for c in classes:
        if runs and runs[-1][0] == c:
            runs[-1] = (c, runs[-1][1] + 1)
        else:
            runs.append((c, 1))
    return runs


def _mixed_labels(rng: np.random.Generator) -> np.ndarray:
    """40 single-image classes, 40 of 2 images, 150 of 3-9 images, shuffled rows."""
    sizes = [1] * 40 + [2] * 40 + list(rng.integers(3, 10, size=150))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return labels[rng.permutation(len(labels))]


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


def test_balanced_batch_256_with_m3_truncates_the_last_class(rng):
    labels = _mixed_labels(rng)
    size = Counter(labels.tolist())
    sampler = BalancedBatchSampler(labels, batch_size=256, samples_per_class=3, iterations=40, seed=3)
    for batch in sampler:
        idx = batch.tolist()
        assert len(idx) == 256
        runs = _runs([int(labels[i]) for i in idx])
        # 86 distinct classes, in consecutive groups: 85 of 3 images, then one of 256 mod 3 = 1
        assert len(runs) == 86 and len({c for c, _ in runs}) == 86
        assert [n for _, n in runs] == [3] * 85 + [1]
        assert all(size[c] >= 2 for c, _ in runs)  # 190 classes have >= 2 images: singletons out
        for c, _ in runs:  # without replacement where the class has >= 3 images
            members = [i for i in idx if labels[i] == c]
            if size[c] >= 3:
                assert len(set(members)) == len(members)


def test_small_classes_are_drawn_with_replacement_and_singletons_left_out():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2, 2, 3])  # class 3 is a single image
    sampler = BalancedBatchSampler(labels, batch_size=9, samples_per_class=3, iterations=50, seed=0)
    seen = np.concatenate([b.numpy() for b in sampler])
    assert 9 not in seen
    for batch in sampler:
        counts = np.bincount(labels[batch.numpy()], minlength=4)
        assert sorted(counts[:3]) == [3, 3, 3]


def test_released_batch_256_with_m3_follows_the_released_rule(rng):
    labels = _mixed_labels(rng)
    size = Counter(labels.tolist())
    sampler = ReleasedBatchSampler(labels, batch_size=256, samples_per_class=3, iterations=200, seed=3)
    singles_seen = set()
    for batch in sampler:
        idx = batch.tolist()
        assert len(idx) == 256
        runs = _runs([int(labels[i]) for i in idx])
        assert len({c for c, _ in runs}) == len(runs)  # each class once, its images consecutive
        for c, n in runs[:-1]:
            assert n == min(3, size[c])
        last, n_last = runs[-1]
        assert 1 <= n_last <= min(3, size[last])
        for c, _ in runs:
            members = [i for i in idx if labels[i] == c]
            assert len(set(members)) == len(members)  # within a class no image repeats
        singles_seen |= {c for c, _ in runs if size[c] == 1}
    assert len(singles_seen) >= 30  # single-image classes take part (40 exist)


def test_released_class_order_is_uniformly_random():
    sizes = [1, 2, 3, 4, 5, 6, 8, 10, 1, 2, 3, 4, 5, 6, 8, 10, 3, 3, 2, 1]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    batches = 4000
    sampler = ReleasedBatchSampler(labels, batch_size=7, samples_per_class=3, iterations=batches, seed=5)
    first = Counter()
    appeared = set()
    for batch in sampler:
        classes = labels[batch.numpy()]
        first[int(classes[0])] += 1
        appeared |= set(classes.tolist())
    assert appeared == set(range(len(sizes)))
    expected = batches / len(sizes)
    chi2 = sum((first[c] - expected) ** 2 / expected for c in range(len(sizes)))
    assert chi2 < 60  # 19 degrees of freedom: p ~ 1e-5; a fixed or size-weighted order fails


@pytest.mark.parametrize("kind", KINDS)
def test_images_within_a_class_are_uniform_including_the_truncated_class(kind):
    # 20 classes of 5 images, m = 3, batch 7: groups of 3, 3 and a truncated 1
    labels = np.repeat(np.arange(20), 5)
    sampler = build_sampler(kind, labels, batch_size=7, samples_per_class=3, iterations=6000, seed=2)
    full, truncated = Counter(), Counter()
    for batch in sampler:
        idx = batch.tolist()
        for i in idx[:6]:
            full[i % 5] += 1
        truncated[idx[6] % 5] += 1
    for hist in (full, truncated):
        total = sum(hist.values())
        assert all(abs(hist[k] / total - 0.2) < 0.02 for k in range(5)), hist


@pytest.mark.parametrize("kind", KINDS)
def test_settings_without_a_pair_are_refused(kind):
    labels = np.repeat(np.arange(10), 4)
    with pytest.raises(ValueError, match="samples_per_class must be >= 2"):
        build_sampler(kind, labels, batch_size=8, samples_per_class=1, iterations=1)
    with pytest.raises(ValueError, match="batch_size must be >= samples_per_class"):
        build_sampler(kind, labels, batch_size=3, samples_per_class=3, iterations=1)
    build_sampler(kind, labels, batch_size=4, samples_per_class=3, iterations=1)  # m + 1 is enough
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_sampler(kind, np.zeros(50, dtype=int), batch_size=8, samples_per_class=4, iterations=1)


def test_released_refuses_labels_without_positives_or_too_small():
    with pytest.raises(ValueError, match="single image"):
        ReleasedBatchSampler(np.arange(30), batch_size=8, samples_per_class=2, iterations=1)
    with pytest.raises(ValueError, match="batch_size 12 exceeds the 10 images"):
        ReleasedBatchSampler(np.repeat(np.arange(5), 4), batch_size=12, samples_per_class=2, iterations=1)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="balanced, released"):
        build_sampler("random", np.repeat(np.arange(10), 4), 8, 4, 1)


def test_too_few_classes_is_an_error():
    with pytest.raises(ValueError, match="only 2 exist"):
        BalancedBatchSampler(np.array([0, 0, 1, 1]), batch_size=12, samples_per_class=4, iterations=1)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_batches_and_state_restores(rng, kind):
    labels = rng.integers(0, 20, size=300)
    a = build_sampler(kind, labels, 30, 4, 5, seed=7)
    b = build_sampler(kind, labels, 30, 4, 5, seed=7)
    c = build_sampler(kind, labels, 30, 4, 5, seed=8)
    first_a = [x.clone() for x in a]
    assert all((x == y).all() for x, y in zip(first_a, b))
    assert any((x != y).any() for x, y in zip(first_a, c))
    state = a.generator.get_state()
    second = [x.clone() for x in a]
    a.generator.set_state(state)
    assert all((x == y).all() for x, y in zip(second, a))


@pytest.mark.parametrize("kind", KINDS)
def test_sample_is_fast_at_sop_scale(kind):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(11318), rng.integers(2, 9, size=11318))  # ~5 images per class
    sampler = build_sampler(kind, labels, batch_size=180, samples_per_class=3, iterations=1, seed=0)
    sampler.sample()
    t0 = time.perf_counter()
    for _ in range(50):
        assert len(sampler.sample()) == 180
    assert (time.perf_counter() - t0) / 50 < 0.01
