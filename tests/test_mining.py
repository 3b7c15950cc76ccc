"""Mining counts (Fig. 10): ``loss.last_mining`` against numbers worked out by hand.

The batch lies on the unit circle (2-d), angles in degrees; candidate index >= 4 is synthetic:

    candidate  o0   o1   o2   o3   c0   c1   c2   c3
    angle       0   60   90  180   20   45  135  150
    label       0    0    1    1    0    0    1    1
    source      0    1    2    3    0    1    2    3

Cosine similarities of the anchors o0..o3 with the candidates (own copy and self excluded from
the positives: o0's positives are o1 and c1, o1's o0 and c0, o2's o3 and c3, o3's o2 and c2):

    o0:  1     .5    0    -1    .940  .707 -.707 -.866
    o1:  .5    1    .866  -.5   .766  .966  .259  0
    o2:  0    .866   1     0    .342  .707  .707  .5
    o3: -1    -.5    0     1   -.940 -.707  .707  .866
"""

from __future__ import annotations

import math

import pytest
import torch

from iaa.losses import MiningCount, MiningTally, build_loss

ANGLES = [0, 60, 90, 180, 20, 45, 135, 150]
LABELS = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
SOURCE = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])


def _batch():
    rad = torch.tensor(ANGLES, dtype=torch.float64) * math.pi / 180
    cand = torch.stack([rad.cos(), rad.sin()], dim=1)
    return cand[:4], LABELS[:4], cand, LABELS, SOURCE


# fmt: off
EXPECTED = {
    # contrastive: positives with s < 0.8: o0: o1, c1*; o1: o0, c0*; o2: o3, c3*; o3: o2, c2* -> 8, 4 synth.
    #              negatives with s > 0.5: o1: o2; o2: o1, c1*                               -> 3, 1 synthetic
    "contrastive": ({}, MiningCount(8, 3, 4, 1)),
    # triplet (d = 1 - s, margin 0.1): o0: hardest negative o2 (d 1), no positive violates;
    # o1: hardest o2 (d .134): o0 (.5) and c0* (.234) violate; o2: hardest o1 (d .134): o3 (1)
    # and c3* (.5) violate; o3: hardest o1 (d 1.5), none        -> positives 4 (2 synthetic),
    # negatives: the hardest of o1 and o2, both originals          -> 2 (0 synthetic)
    "triplet": ({}, MiningCount(4, 2, 2, 0)),
    # ms (epsilon 0.1): o0: no negative above min pos .5 - .1; o1: negatives s > .4: o2; positives
    # s < .966: o0, c0*; o2: negatives s > -.1: o0, o1, c0*, c1*; positives s < .966: o3, c3*;
    # o3: no negative above -.1                                      -> (4, 5, 2, 2)
    "ms": ({}, MiningCount(4, 5, 2, 2)),
    # circle (m 0.4): every positive of an anchor with positives and negatives (8, 4 synthetic);
    # negatives with s > -0.4: o0: o2; o1: o2, c2*, c3*; o2: o0, o1, c0*, c1*  -> 8, 4 synthetic
    "circle": ({}, MiningCount(8, 8, 4, 4)),
    # margin (L2 distance d = sqrt(2 - 2s), beta 1.1, margin 0.2): positives with d > 0.9
    # (s < .595): o0: o1; o1: o0; o2: o3, c3*; o3: o2 -> 5, 1 synthetic; negatives with d < 1.3
    # (s > .155): o1: o2, c2*; o2: o1, c0*, c1*  -> 5, 3 synthetic
    "margin": ({"beta": 1.1}, MiningCount(5, 5, 1, 3)),
}
# fmt: on


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_mining_counts_by_hand(name: str) -> None:
    kwargs, want = EXPECTED[name]
    loss = build_loss(name, **kwargs)
    loss(*_batch())
    assert loss.last_mining == want


@pytest.mark.parametrize("name", ["norm_softmax", "proxy_nca", "soft_triple"])
def test_proxy_losses_mine_nothing(name: str) -> None:
    loss = build_loss(name, num_classes=2, embedding_dim=2)
    loss(*_batch())
    assert loss.last_mining == MiningCount(0, 0, 0, 0)


def test_distance_weighted_counts_its_active_triplets() -> None:
    torch.manual_seed(0)
    loss = build_loss("distance_weighted", margin=10.0)  # every mined triplet violates the margin
    captured = {}
    real = loss.loss.forward

    def spy(emb, labels, indices, ref_emb, ref_labels):
        captured["t"] = indices
        return real(emb, labels, indices, ref_emb, ref_labels)

    loss.loss.forward = spy
    loss(*_batch())
    a, p, n = captured["t"]
    pos, neg = {(int(i), int(j)) for i, j in zip(a, p)}, {(int(i), int(j)) for i, j in zip(a, n)}
    want = MiningCount(len(pos), len(neg), sum(j >= 4 for _, j in pos), sum(j >= 4 for _, j in neg))
    assert loss.last_mining == want and want.hard_positives > 0


def test_baseline_batches_have_no_synthetic_pairs() -> None:
    anchors, labels, *_ = _batch()
    for name in EXPECTED:
        loss = build_loss(name)
        loss(anchors, labels, anchors, labels, torch.arange(4))
        assert loss.last_mining.synthetic_positives == loss.last_mining.synthetic_negatives == 0


def test_tally_averages_per_batch_and_share_of_all_kept_pairs() -> None:
    tally = MiningTally()
    tally.add(MiningCount(7, 3, 3, 1))
    tally.add(MiningCount(1, 1, 0, 0))
    assert tally.columns() == {"hard_positives": 4.0, "hard_negatives": 2.0, "synthetic_share": 4 / 12}
    empty = MiningTally()
    empty.add(MiningCount())
    assert math.isnan(empty.columns()["synthetic_share"]) and empty.columns()["hard_negatives"] == 0
