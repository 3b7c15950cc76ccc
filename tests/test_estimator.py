"""ClassStatistics: the SPEC 2.1 merge rule against per-class loops in float64."""

from __future__ import annotations

import pytest
import torch

from iaa.method import ClassStatistics

C, D = 7, 5


def _data(n: int, seed: int, num_classes: int = C) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64) * 2 + 3
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x, y


def _loop_update(mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor, x, y, momentum: float) -> None:
    """Direct per-class transcription of SPEC 2.1 (in place)."""
    for k in range(mean.shape[0]):
        xs = x[y == k].double()
        n = xs.shape[0]
        if n == 0:
            continue
        m = xs.mean(0)
        v = ((xs - m) ** 2).mean(0)
        w = max(n / (n + count[k].item()), 1 - momentum)
        if n > 1:
            var[k] = (1 - w) * var[k] + w * v + w * (1 - w) * (mean[k] - m) ** 2
        mean[k] = (1 - w) * mean[k] + w * m
        count[k] += n


@pytest.mark.parametrize("momentum", [0.2, 0.5, 1.0])
def test_update_matches_loop(momentum: float) -> None:
    stats = ClassStatistics(C, D, momentum=momentum)
    mean, var, count = torch.zeros(C, D, dtype=torch.float64), torch.zeros(C, D), torch.zeros(C)
    var, count = var.double(), count.double()
    for seed, n in [(0, 40), (1, 9), (2, 3), (3, 60)]:
        x, y = _data(n, seed)
        returned = stats.update(x.float(), y)  # any float dtype is accepted
        _loop_update(mean, var, count, x.float(), y, momentum)
        assert torch.equal(returned, torch.bincount(y, minlength=C).double())
        torch.testing.assert_close(stats.mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stats.var, var, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(stats.count, count)
    assert stats.mean.dtype == stats.var.dtype == stats.count.dtype == torch.float64


def test_chunked_merge_equals_closed_form_without_floor() -> None:
    # momentum=1 removes the floor (w = n/(n+a)): merging chunks = statistics of all data.
    # Every class appears 0 or >= 2 times per chunk (a single point keeps the old variance).
    g = torch.Generator().manual_seed(5)
    xs, ys = [], []
    stats = ClassStatistics(C, D, momentum=1.0)
    for _ in range(5):
        counts = torch.randint(2, 12, (C,), generator=g) * (torch.rand(C, generator=g) < 0.7)
        y = torch.repeat_interleave(torch.arange(C), counts)
        y = y[torch.randperm(y.numel(), generator=g)]
        x = torch.randn(y.numel(), D, generator=g, dtype=torch.float64) * 3 + 1
        stats.update(x, y)
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    for k in range(C):
        xk = x[y == k]
        torch.testing.assert_close(stats.mean[k], xk.mean(0), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stats.var[k], xk.var(0, unbiased=False), rtol=1e-10, atol=1e-12)
        assert stats.count[k] == xk.shape[0]


def test_momentum_floor_by_hand() -> None:
    stats = ClassStatistics(2, 1, momentum=0.2)
    # class 0: 8 points, mean 1, var 1 (values 0/2); class 1 untouched
    stats.update(torch.tensor([[0.0], [2.0]] * 4), torch.zeros(8, dtype=torch.long))
    assert stats.mean[0, 0] == 1.0 and stats.var[0, 0] == 1.0 and stats.count[0] == 8
    # new set: 2 points, mean 5, var 4 (values 3/7); n/(n+a) = 0.2 < 0.8 -> w = 0.8
    stats.update(torch.tensor([[3.0], [7.0]]), torch.zeros(2, dtype=torch.long))
    w = 0.8
    assert stats.mean[0, 0].item() == pytest.approx((1 - w) * 1 + w * 5)
    assert stats.var[0, 0].item() == pytest.approx((1 - w) * 1 + w * 4 + w * (1 - w) * 16)
    assert stats.count[0] == 10
    assert stats.count[1] == 0 and stats.mean[1, 0] == 0 and stats.var[1, 0] == 0


def test_single_sample_keeps_variance_and_absent_untouched() -> None:
    stats = ClassStatistics(3, 2, momentum=0.2)
    x0 = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 2.0]])
    stats.update(x0, torch.tensor([0, 0, 1]))
    before = {name: buf.clone() for name, buf in stats.named_buffers()}
    assert torch.equal(stats.var[1], torch.zeros(2))  # brand-new single sample: no variance
    assert torch.equal(stats.mean[1], torch.tensor([4.0, 2.0], dtype=torch.float64))
    stats.update(torch.tensor([[10.0, -10.0]]), torch.tensor([0]))
    assert torch.equal(stats.var[0], before["var"][0])  # one point: variance unchanged
    w = max(1 / 3, 0.8)
    expected = (1 - w) * before["mean"][0] + w * torch.tensor([10.0, -10.0], dtype=torch.float64)
    torch.testing.assert_close(stats.mean[0], expected)
    assert stats.count[0] == 3
    for name in ("mean", "var", "count"):  # classes 1 and 2 absent from the set
        assert torch.equal(getattr(stats, name)[1:], before[name][1:])
    assert torch.equal(stats.initialized, torch.tensor([True, True, False]))


def test_new_class_takes_set_statistics() -> None:
    stats = ClassStatistics(2, D, momentum=0.2)
    x, _ = _data(6, 9)
    stats.update(x, torch.ones(6, dtype=torch.long))
    torch.testing.assert_close(stats.mean[1], x.mean(0))
    torch.testing.assert_close(stats.var[1], x.var(0, unbiased=False))
    torch.testing.assert_close(stats.std[1], x.std(0, unbiased=False))


def test_state_dict_round_trip_and_reset() -> None:
    stats = ClassStatistics(C, D)
    stats.update(*_data(50, 3))
    state = stats.state_dict()
    assert set(state) == {"mean", "var", "count"}
    restored = ClassStatistics(C, D)
    restored.load_state_dict(state)
    for name in ("mean", "var", "count"):
        assert torch.equal(getattr(restored, name), getattr(stats, name))
    stats.reset()
    assert not stats.initialized.any() and stats.var.abs().sum() == 0


def test_rejects_bad_input() -> None:
    stats = ClassStatistics(C, D)
    with pytest.raises(ValueError):
        stats.update(torch.zeros(3, D + 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        stats.update(torch.zeros(3, D), torch.tensor([0, 1, C]))
    with pytest.raises(ValueError):
        ClassStatistics(C, D, momentum=1.5)
