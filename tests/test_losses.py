"""Our own pair losses (SPEC 2.4) against per-anchor loops, with and without synthetic candidates.

The pytorch-metric-learning losses (Table X) are checked in tests/test_losses_pml.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from iaa.losses import (
    LOSSES,
    ContrastiveLoss,
    MultiSimilarityLoss,
    TripletLoss,
    baseline_call,
    build_loss,
    iaa_call,
    make_pairs,
)
from iaa.method import synthesize


def _loop_pairs(a, al, c, cl, cs):
    """Per anchor: lists of positive and negative similarities (plain Python floats)."""
    out = []
    for i in range(a.shape[0]):
        pos, neg = [], []
        for j in range(c.shape[0]):
            s = float(a[i] @ c[j])
            if cl[j] == al[i] and cs[j] != i:
                pos.append(s)
            elif cl[j] != al[i]:
                neg.append(s)
        out.append((pos, neg))
    return out


def loop_contrastive(a, al, c, cl, cs, pos_margin=0.8, neg_margin=0.5):
    total = 0.0
    for pos, neg in _loop_pairs(a, al, c, cl, cs):
        total += sum(max(0.0, pos_margin - s) for s in pos)
        total += sum(max(0.0, s - neg_margin) for s in neg)
    return total / a.shape[0]


def loop_triplet(a, al, c, cl, cs, margin=0.1):
    total = 0.0
    for pos, neg in _loop_pairs(a, al, c, cl, cs):
        if not pos or not neg:
            continue
        hardest = min(1.0 - s for s in neg)
        total += sum(max(0.0, (1.0 - s) - hardest + margin) for s in pos)
    return total / a.shape[0]


def loop_ms(a, al, c, cl, cs, alpha=2.0, beta=40.0, base=0.5, eps=0.1):
    total = 0.0
    for pos, neg in _loop_pairs(a, al, c, cl, cs):
        pos = [s for s in pos if s < 1 - 1e-5]
        if not pos or not neg:
            continue
        hard_neg = [s for s in neg if s + eps > min(pos)]
        hard_pos = [s for s in pos if s - eps < max(neg)]
        if not hard_neg or not hard_pos:
            continue
        total += math.log(1 + sum(math.exp(-alpha * (s - base)) for s in hard_pos)) / alpha
        total += math.log(1 + sum(math.exp(beta * (s - base)) for s in hard_neg)) / beta
    return total / a.shape[0]


LOOPS = {"contrastive": loop_contrastive, "triplet": loop_triplet, "ms": loop_ms}
OWN = sorted(LOOPS)  # the losses implemented here (the others are pml's)


def _batch(seed: int, b: int = 12, classes: int = 4, d: int = 8, spread: float = 0.6):
    """Raw embeddings with class structure so that every loss has active pairs."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g, dtype=torch.float64)
    y = torch.arange(b) % classes
    z = centres[y] + spread * torch.randn(b, d, generator=g, dtype=torch.float64)
    z[1] = z[5]  # a duplicate positive pair (s = 1): MS must drop it
    return z, y


def _candidates(z, y, copies: int, seed: int, far_class: int | None = None):
    """Originals + synthetic copies, normalised; ``far_class`` gets copies far from their source."""
    std = torch.full((4, z.shape[1]), 0.4, dtype=torch.float64)
    if far_class is not None:
        std[far_class] = 3.0
    g = torch.Generator().manual_seed(seed)
    syn = synthesize(z, y, std, lam=0.8, copies=copies, generator=g)
    src = torch.arange(z.shape[0])
    cand = F.normalize(torch.cat([z, syn.embeddings]), dim=1)
    return cand, torch.cat([y, syn.labels]), torch.cat([src, syn.source])


@pytest.mark.parametrize("name", OWN)
@pytest.mark.parametrize("copies", [0, 1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_loop(name: str, copies: int, seed: int) -> None:
    z, y = _batch(seed)
    cand, cl, cs = _candidates(z, y, copies, seed)
    a = F.normalize(z, dim=1)
    got = build_loss(name)(a, y, cand, cl, cs)
    want = LOOPS[name](a, y, cand, cl, cs)
    assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)
    assert want > 0  # the case exercises the loss


@pytest.mark.parametrize("name", OWN)
def test_baseline_call_matches_loop_and_zero_copies(name: str) -> None:
    z, y = _batch(3)
    a = F.normalize(z, dim=1)
    loss = build_loss(name)
    base = baseline_call(loss, a, y)
    assert base.item() == pytest.approx(LOOPS[name](a, y, a, y, torch.arange(12)), rel=1e-10)
    empty = a[:0]
    assert torch.equal(iaa_call(loss, a, y, empty, y[:0], y[:0]), base)  # M = 0: the baseline


def test_own_copies_are_never_positives() -> None:
    # anchor 0 is the only original of class 3: only its own copies share its label
    z, y = _batch(4, b=6, classes=3)
    y = torch.tensor([3, 0, 0, 1, 1, 2])
    cand, cl, cs = _candidates(z, y, 2, seed=4, far_class=3)
    a = F.normalize(z, dim=1)
    pairs = make_pairs(a, y, cand, cl, cs)
    assert not pairs.pos[0].any()  # own copies (source 0) excluded
    assert not pairs.pos[torch.arange(6), torch.arange(6)].any()  # and the anchor itself
    assert pairs.pos[1, 2] and pairs.pos[1, 6 + 2]  # other originals' copies are positives
    wrong_source = cs.clone()
    wrong_source[6:][cs[6:] == 0] = 5  # pretend anchor 0's copies came from elsewhere
    for name in OWN:
        loss = build_loss(name)
        right = loss(a, y, cand, cl, cs)
        assert right.item() == pytest.approx(LOOPS[name](a, y, cand, cl, cs), rel=1e-10)
        # counting the copies as positives would change every loss here
        assert right.item() != pytest.approx(loss(a, y, cand, cl, wrong_source).item(), rel=1e-6)


@pytest.mark.parametrize("name", OWN)
def test_gradient_reaches_originals_through_copies(name: str) -> None:
    z, y = _batch(5)
    z = z.clone().requires_grad_(True)
    syn = synthesize(
        z,
        y,
        torch.full((4, 8), 0.4, dtype=torch.float64),
        lam=0.8,
        copies=3,
        generator=torch.Generator().manual_seed(5),
    )
    # anchors and originals detached: any gradient on z arrives through the copies
    a = F.normalize(z.detach(), dim=1)
    kwargs = {"pos_margin": 1.0, "neg_margin": -1.0} if name == "contrastive" else {}
    loss = build_loss(name, **kwargs)
    out = iaa_call(loss, a, y, F.normalize(syn.embeddings, dim=1), syn.labels, syn.source)
    out.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0
    if name == "contrastive":  # every pair is active: every original gets a gradient
        assert (z.grad.abs().sum(1) > 0).all()


def test_degenerate_batches_are_finite() -> None:
    a = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1).requires_grad_(True)
    same = torch.zeros(5, dtype=torch.long)  # no negatives
    alone = torch.arange(5)  # no positives
    for name in OWN:
        for y in (same, alone):
            out = baseline_call(build_loss(name), a, y)
            out.backward()
            assert torch.isfinite(out) and torch.isfinite(a.grad).all()
            a.grad = None
    assert baseline_call(TripletLoss(), a, same).item() == 0.0
    assert baseline_call(MultiSimilarityLoss(), a, alone).item() == 0.0


def test_ms_is_stable_for_large_scales() -> None:
    a = F.normalize(torch.randn(8, 4), dim=1)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    out = baseline_call(MultiSimilarityLoss(beta=400.0), a, y)
    assert torch.isfinite(out)


def test_registry() -> None:
    assert isinstance(build_loss("contrastive", pos_margin=0.7), ContrastiveLoss)
    assert build_loss("triplet", margin=0.2).margin == 0.2
    with pytest.raises(ValueError, match="npair"):
        build_loss("npair")
    assert set(LOSSES) == {
        "contrastive", "triplet", "ms", "distance_weighted", "margin", "circle", "norm_softmax", "proxy_nca",
        "soft_triple",
    }  # fmt: skip
    assert build_loss("ms", num_classes=5, embedding_dim=3).alpha == 2.0  # sizes ignored by pair losses
    with pytest.raises(ValueError, match="num_classes"):
        build_loss("proxy_nca")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", OWN)
def test_cuda_matches_cpu(name: str) -> None:
    z, y = _batch(6)
    cand, cl, cs = _candidates(z, y, 3, seed=6)
    a = F.normalize(z, dim=1)
    loss = build_loss(name)
    cpu = loss(a, y, cand, cl, cs)
    gpu = loss(a.cuda(), y.cuda(), cand.cuda(), cl.cuda(), cs.cuda())
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-9)
