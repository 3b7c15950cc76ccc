"""Synthesis (Eq. 17) and the lambda schedule (SPEC 2.3)."""

from __future__ import annotations

import pytest
import torch

from iaa.method import lambda_schedule, synthesize


def _batch(b: int = 6, d: int = 4, c: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, d, generator=g, requires_grad=True)
    y = torch.randint(0, c, (b,), generator=g)
    std = torch.rand(c, d, generator=g, dtype=torch.float64) + 0.5
    return z, y, std


def test_shapes_order_and_source() -> None:
    z, y, std = _batch()
    g = torch.Generator().manual_seed(1)
    out = synthesize(z, y, std, lam=0.5, copies=3, generator=g)
    assert out.embeddings.shape == (18, 4) and out.embeddings.dtype == z.dtype
    assert torch.equal(out.labels, y.repeat(3))
    assert torch.equal(out.source, torch.arange(6).repeat(3))
    assert out.source.dtype == torch.int64
    # copy-major, and each row is z + sqrt(lam) std[y] eps with eps from the generator
    eps = torch.randn((3, 6, 4), generator=torch.Generator().manual_seed(1))
    want = z.detach() + 0.5**0.5 * std[y].float() * eps
    torch.testing.assert_close(out.embeddings.detach().view(3, 6, 4), want)


def test_noise_statistics() -> None:
    z, y, std = _batch(b=5, d=3)
    lam, copies = 0.7, 20000
    out = synthesize(z, y, std, lam=lam, copies=copies, generator=torch.Generator().manual_seed(2))
    u = (out.embeddings.detach() - z.detach()[out.source]) / std[out.labels].float()
    assert abs(u.mean().item()) < 0.01
    assert u.var().item() == pytest.approx(lam, rel=0.02)
    # per original and dimension as well (each with 20000 draws)
    per = u.view(copies, 5, 3).var(0)
    torch.testing.assert_close(per, torch.full_like(per, lam), rtol=0.05, atol=0)


def test_gradient_reaches_originals() -> None:
    z, y, std = _batch()
    out = synthesize(z, y, std, lam=0.5, copies=2, generator=torch.Generator().manual_seed(3))
    weights = torch.randn(out.embeddings.shape, generator=torch.Generator().manual_seed(4))
    (out.embeddings * weights).sum().backward()
    # d(z + noise)/dz = I: each original collects its copies' upstream gradients
    torch.testing.assert_close(z.grad, weights.view(2, 6, 4).sum(0))


def test_zero_copies() -> None:
    z, y, std = _batch()
    out = synthesize(z, y, std, lam=0.5, copies=0)
    assert out.embeddings.shape == (0, 4) and out.labels.shape == (0,) and out.source.shape == (0,)
    assert out.embeddings.dtype == z.dtype and out.source.dtype == torch.int64


def test_fixed_mean_variant() -> None:
    z, y, std = _batch()
    class_mean = torch.randn(3, 4, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    out = synthesize(z, y, std, lam=0.3, copies=2, generator=g, class_mean=class_mean)
    eps = torch.randn((2, 6, 4), generator=torch.Generator().manual_seed(5))
    want = class_mean[y].float() + 0.3**0.5 * std[y].float() * eps
    torch.testing.assert_close(out.embeddings.view(2, 6, 4), want)
    assert not out.embeddings.requires_grad  # no gradient path to z


def test_sqrt_per_copy_variant() -> None:
    # SPEC 2.5 item 2: copy m (from 0) uses std ** (1 / 2**m)
    z, y, std = _batch()
    g = torch.Generator().manual_seed(6)
    out = synthesize(z, y, std, lam=0.5, copies=3, generator=g, sqrt_per_copy=True)
    eps = torch.randn((3, 6, 4), generator=torch.Generator().manual_seed(6))
    for m in range(3):
        want = z.detach() + 0.5**0.5 * std[y].float() ** (1 / 2**m) * eps[m]
        torch.testing.assert_close(out.embeddings.detach()[m * 6 : (m + 1) * 6], want)


def test_generator_on_device_and_dtype() -> None:
    z, y, std = _batch()
    out = synthesize(z.double(), y, std, lam=1.0, copies=1, generator=torch.Generator())
    assert out.embeddings.dtype == torch.float64
    with pytest.raises(ValueError):
        synthesize(z, y, std, lam=1.0, copies=-1)


@pytest.mark.parametrize(
    ("epoch", "factor"),
    [(0, 1.0), (40, 1.0), (41, 0.9), (60, 0.9), (61, 0.75), (80, 0.75), (81, 0.6), (100, 0.6)],
)
def test_lambda_schedule(epoch: int, factor: float) -> None:
    assert lambda_schedule(0.8, epoch, 100) == pytest.approx(0.8 * factor)


def test_lambda_schedule_rejects_bad_epochs() -> None:
    with pytest.raises(ValueError):
        lambda_schedule(0.5, 1, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_with_cpu_generator() -> None:
    z, y, std = _batch()
    zc = z.detach().cuda().requires_grad_(True)
    g = torch.Generator().manual_seed(7)  # a CPU generator: draw there, then move
    out = synthesize(zc, y.cuda(), std.cuda(), lam=0.5, copies=2, generator=g)
    eps = torch.randn((2, 6, 4), generator=torch.Generator().manual_seed(7))
    want = z.detach() + 0.5**0.5 * std[y].float() * eps
    torch.testing.assert_close(out.embeddings.detach().cpu().view(2, 6, 4), want)
    out.embeddings.sum().backward()
    assert zc.grad is not None and out.source.device.type == "cuda"
