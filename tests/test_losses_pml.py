"""The pytorch-metric-learning losses of Table X against the library called directly.

Baseline: our wrapper's value equals pml's plain call on the same tensors (proxy losses: the
same proxies). IAA: it equals pml called with the ``ref_emb`` and pairs/triplets (pair losses)
or the concatenated batch (proxy losses) that SPEC 2.4's own-copy rule prescribes, built here
by hand with Python loops.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml
from pytorch_metric_learning import miners

from iaa.losses import baseline_call, build_loss, iaa_call
from iaa.method import synthesize

PAIR = ["circle", "distance_weighted", "margin"]
PROXY = {
    "norm_softmax": pml.NormalizedSoftmaxLoss,
    "proxy_nca": pml.ProxyNCALoss,
    "soft_triple": pml.SoftTripleLoss,
}
CLASSES, DIM = 4, 8


def _batch(seed: int, b: int = 12):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLASSES, DIM, generator=g, dtype=torch.float64)
    y = torch.arange(b) % CLASSES
    z = centres[y] + 0.7 * torch.randn(b, DIM, generator=g, dtype=torch.float64)
    return z, y


def _synthetic(z, y, copies: int, seed: int):
    std = torch.full((CLASSES, DIM), 0.4, dtype=torch.float64)
    syn = synthesize(z, y, std, lam=0.8, copies=copies, generator=torch.Generator().manual_seed(seed))
    return F.normalize(syn.embeddings, dim=1), syn.labels, syn.source


def _candidates(z, y, copies: int, seed: int):
    syn, syn_y, syn_src = _synthetic(z, y, copies, seed)
    a = F.normalize(z, dim=1)
    return a, y, torch.cat([a, syn]), torch.cat([y, syn_y]), torch.cat([torch.arange(len(y)), syn_src])


def _hand_pairs(y, cl, cs):
    """(a1, p, a2, n) under the own-copy rule, by loops."""
    a1, p, a2, n = [], [], [], []
    for i in range(len(y)):
        for j in range(len(cl)):
            if cl[j] == y[i] and cs[j] != i:
                a1.append(i), p.append(j)
            elif cl[j] != y[i]:
                a2.append(i), n.append(j)
    return tuple(torch.tensor(x, dtype=torch.long) for x in (a1, p, a2, n))


def _hand_triplets(y, cl, cs):
    a, p, n = [], [], []
    for i in range(len(y)):
        for j in range(len(cl)):
            if cl[j] != y[i] or cs[j] == i:
                continue
            for k in range(len(cl)):
                if cl[k] != y[i]:
                    a.append(i), p.append(j), n.append(k)
    return tuple(torch.tensor(x, dtype=torch.long) for x in (a, p, n))


def _pml_direct(name: str, a, y, cand, cl, cs, seed: int):
    """pml on the pairs/triplets the own-copy rule prescribes (the candidates as ref_emb)."""
    if name == "circle":
        return pml.CircleLoss()(a, y, _hand_pairs(y, cl, cs), cand, cl)
    if name == "margin":
        return pml.MarginLoss()(a, y, _hand_triplets(y, cl, cs), cand, cl)
    torch.manual_seed(seed)
    ta, tp, tn = miners.DistanceWeightedMiner()(a, y, cand, cl)
    keep = torch.tensor([int(cs[p]) != int(i) for i, p in zip(ta, tp)], dtype=torch.bool)
    assert not keep.all()  # the rule dropped some of the miner's triplets
    return pml.TripletMarginLoss()(a, y, (ta[keep], tp[keep], tn[keep]), cand, cl)


def _ours(name: str, seed: int, *args):
    loss = build_loss(name)
    torch.manual_seed(seed)  # distance_weighted samples from the global generator
    return loss(*args)


@pytest.mark.parametrize("name", PAIR)
@pytest.mark.parametrize("seed", [0, 1])
def test_pair_loss_baseline_equals_pml(name: str, seed: int) -> None:
    z, y = _batch(seed)
    a = F.normalize(z, dim=1)
    loss = build_loss(name)
    torch.manual_seed(seed)
    ours = baseline_call(loss, a, y)
    torch.manual_seed(seed)
    if name == "distance_weighted":
        want = pml.TripletMarginLoss()(a, y, miners.DistanceWeightedMiner()(a, y))
    else:
        want = {"circle": pml.CircleLoss, "margin": pml.MarginLoss}[name]()(a, y)
    assert ours.item() == pytest.approx(want.item(), rel=1e-12) and want.item() > 0


@pytest.mark.parametrize("name", PAIR)
@pytest.mark.parametrize("copies", [1, 3])
def test_pair_loss_with_iaa_equals_pml_on_the_own_copy_pairs(name: str, copies: int) -> None:
    z, y = _batch(copies)
    a, y, cand, cl, cs = _candidates(z, y, copies, seed=copies)
    ours = _ours(name, 7, a, y, cand, cl, cs)
    want = _pml_direct(name, a, y, cand, cl, cs, seed=7)
    assert ours.item() == pytest.approx(want.item(), rel=1e-12) and want.item() > 0
    # the IAA call of train.py builds the same candidates
    syn, syn_y, syn_src = _synthetic(z, y, copies, copies)
    torch.manual_seed(7)
    assert iaa_call(build_loss(name), a, y, syn, syn_y, syn_src).item() == pytest.approx(
        ours.item(), rel=1e-12
    )


def _tiny():
    """2 classes x 2 originals, one copy each: candidates o0 o1 o2 o3 c0 c1 c2 c3."""
    g = torch.Generator().manual_seed(11)
    z = torch.randn(8, DIM, generator=g, dtype=torch.float64)
    cand = F.normalize(z, dim=1)
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    source = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    return cand[:4], labels[:4], cand, labels, source


@pytest.mark.parametrize("name", PAIR)
def test_an_anchors_own_copy_is_never_its_positive(name: str) -> None:
    loss = build_loss(name)
    seen = []
    real = loss.loss.forward

    def spy(emb, labels, indices, ref_emb, ref_labels):
        seen.append(indices)
        return real(emb, labels, indices, ref_emb, ref_labels)

    loss.loss.forward = spy
    a, y, cand, cl, cs = _tiny()
    for seed in range(5):  # distance_weighted: several draws of the miner
        torch.manual_seed(seed)
        loss(a, y, cand, cl, cs)
    anchors_positives = set()
    for indices in seen:
        for i, j in zip(indices[0].tolist(), indices[1].tolist()):
            assert int(cs[j]) != i, f"anchor {i} has its own copy or itself ({j}) as a positive"
            anchors_positives.add((i, j))
    # the other original of the class and its copy are positives: o0 -> o1, c1 (index 5)
    assert {(0, 1), (0, 5)} <= anchors_positives
    if name != "distance_weighted":  # deterministic: exactly the rule's pairs
        assert anchors_positives == {(0, 1), (0, 5), (1, 0), (1, 4), (2, 3), (2, 7), (3, 2), (3, 6)}


@pytest.mark.parametrize("name", ["circle", "margin"])
def test_counting_the_own_copy_as_positive_would_change_the_loss(name: str) -> None:
    a, y, cand, cl, cs = _tiny()
    right = build_loss(name)(a, y, cand, cl, cs)
    wrong = cs.clone()
    wrong[4:] = torch.tensor([1, 0, 3, 2])  # each copy attributed to the other original
    assert right.item() != pytest.approx(build_loss(name)(a, y, cand, cl, wrong).item(), rel=1e-6)


def _proxy_pair(name: str):
    ours = build_loss(name, num_classes=CLASSES, embedding_dim=DIM).double()
    direct = PROXY[name](num_classes=CLASSES, embedding_size=DIM).double()
    direct.load_state_dict(ours.loss.state_dict())
    return ours, direct


@pytest.mark.parametrize("name", sorted(PROXY))
def test_proxy_loss_baseline_equals_pml_with_the_same_proxies(name: str) -> None:
    torch.manual_seed(0)
    ours, direct = _proxy_pair(name)
    z, y = _batch(2)
    a = F.normalize(z, dim=1)
    assert baseline_call(ours, a, y).item() == pytest.approx(direct(a, y).item(), rel=1e-12)


@pytest.mark.parametrize("name", sorted(PROXY))
def test_proxy_loss_with_iaa_is_pml_on_originals_and_synthetics(name: str) -> None:
    torch.manual_seed(1)
    ours, direct = _proxy_pair(name)
    z, y = _batch(3)
    a = F.normalize(z, dim=1)
    syn, syn_y, syn_src = _synthetic(z, y, 3, seed=3)
    got = iaa_call(ours, a, y, syn, syn_y, syn_src)
    want = direct(torch.cat([a, syn]), torch.cat([y, syn_y]))
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    assert got.item() != pytest.approx(baseline_call(ours, a, y).item(), rel=1e-6)  # the copies count


@pytest.mark.parametrize("name", sorted(PROXY))
def test_proxies_are_parameters_that_get_gradients(name: str) -> None:
    torch.manual_seed(2)
    loss = build_loss(name, num_classes=CLASSES, embedding_dim=DIM)
    params = list(loss.parameters())
    assert len(params) == 1 and params[0].requires_grad
    z, y = _batch(4)
    baseline_call(loss, F.normalize(z.float(), dim=1), y).backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0
    assert list(loss.state_dict()) == [next(iter(dict(loss.named_parameters())))]


@pytest.mark.parametrize("name", PAIR + sorted(PROXY))
def test_gradient_reaches_originals_through_copies(name: str) -> None:
    torch.manual_seed(3)
    loss = build_loss(name, num_classes=CLASSES, embedding_dim=DIM).double()
    z, y = _batch(5)
    z = z.clone().requires_grad_(True)
    std = torch.full((CLASSES, DIM), 0.4, dtype=torch.float64)
    syn = synthesize(z, y, std, lam=0.8, copies=3, generator=torch.Generator().manual_seed(5))
    a = F.normalize(z.detach(), dim=1)  # anchors detached: any gradient on z comes through the copies
    out = iaa_call(loss, a, y, F.normalize(syn.embeddings, dim=1), syn.labels, syn.source)
    out.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["circle", "margin"] + sorted(PROXY))
def test_cuda_matches_cpu(name: str) -> None:
    torch.manual_seed(4)
    loss = build_loss(name, num_classes=CLASSES, embedding_dim=DIM).double()
    z, y = _batch(6)
    a, y, cand, cl, cs = _candidates(z, y, 3, seed=6)
    cpu = loss(a, y, cand, cl, cs)
    gpu = loss.cuda()(*(t.cuda() for t in (a, y, cand, cl, cs)))
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-9)
