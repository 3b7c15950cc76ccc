"""Pair- and triplet-based losses of pytorch-metric-learning (pml 2.x) with IAA (Table X).

``distance_weighted`` (triplet loss on distance-weighted sampling, Wu et al. 2017), ``margin``
(Wu et al. 2017) and ``circle`` (Sun et al. 2020). The library computes the losses; these
wrappers only choose which pairs/triplets it sees, so that the own-copy rule of SPEC 2.4
holds, and count the pairs they kept (``last_mining``).

Shapes and dtypes (as every loss of :mod:`iaa.losses`): ``anchors`` (B, D) float, the L2-
normalised originals; ``anchor_labels`` (B,) int64; ``candidates`` (N, D) float, the originals
followed by the synthetic copies; ``candidate_labels`` (N,) int64; ``candidate_source`` (N,)
int64, the original each candidate derives from. The loss is a float scalar.

How IAA enters: pml's ``ref_emb``/``ref_labels`` are the candidates, the ``embeddings`` are the
anchors, and an explicit ``indices_tuple`` built from :func:`iaa.losses.base.pair_masks` (or,
for the miner's triplets, filtered by it) says which (anchor, candidate) pairs are positives:
never the anchor itself nor its own copies. Without copies (``baseline_call``) the tuples are
exactly those pml builds itself from the labels, so the value equals pml's plain call.

Hyper-parameters are pml's documented defaults (the IAA paper does not give them): they are
the values of the original papers the library follows; each is a setting
(``train.losses.<name>``).
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import Tensor

from iaa.losses.base import PairLoss, check_shapes, count_mined, pair_masks, pairs_mask

_INT32_MAX = 2**31 - 1


def all_triplets(pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every (anchor, positive, negative) of boolean (B, N) masks, in pml's order (anchor-major,
    then positive, then negative: ``get_all_triplets_indices``). Chunked over anchors where the
    (B, N, N) mask would exceed ``torch.nonzero``'s int32 limit."""
    n = pos.shape[1]
    rows = max(1, _INT32_MAX // max(n * n, 1))
    parts = []
    for start in range(0, pos.shape[0], rows):
        a, p, q = torch.where(pos[start : start + rows, :, None] & neg[start : start + rows, None, :])
        parts.append((a + start, p, q))
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(t) for t in zip(*parts))  # type: ignore[return-value]


class DistanceWeightedTripletLoss(PairLoss):
    """pml ``TripletMarginLoss(margin)`` on the triplets of pml ``DistanceWeightedMiner(cutoff,
    nonzero_loss_cutoff)``; both on the L2 distance of normalised embeddings (the miner
    requires it; the loss's default). Defaults: margin 0.05, cutoff 0.5, nonzero_loss_cutoff 1.4
    (pml's). The reducer is pml's default (mean over the triplets with non-zero loss).

    IAA: the miner runs on (anchors, ref = candidates) and samples, for every anchor, positives
    among all same-label candidates and one distance-weighted negative each; the triplets whose
    positive is the anchor itself or one of its own copies are then dropped (SPEC 2.4). The
    sampling draws from torch's global generator (CPU) or the device's (CUDA multinomial).

    Mining count: the distinct (anchor, positive) and (anchor, negative) pairs of the mined
    triplets whose triplet loss is non-zero.
    """

    def __init__(self, margin: float = 0.05, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4) -> None:
        super().__init__()
        self.miner = pml_miners.DistanceWeightedMiner(cutoff=cutoff, nonzero_loss_cutoff=nonzero_loss_cutoff)
        self.loss = pml_losses.TripletMarginLoss(margin=margin)

    def forward(
        self, anchors: Tensor, anchor_labels: Tensor, candidates: Tensor, candidate_labels: Tensor,
        candidate_source: Tensor,
    ) -> Tensor:  # fmt: skip
        check_shapes(anchors, anchor_labels, candidates, candidate_labels, candidate_source)
        a, p, n = self.miner(anchors, anchor_labels, candidates, candidate_labels)
        keep = candidate_source[p] != a
        triplets = (a[keep], p[keep], n[keep])
        value = self.loss(anchors, anchor_labels, triplets, candidates, candidate_labels)
        with torch.no_grad():
            a, p, n = triplets
            d = self.loss.distance(anchors, candidates)
            active = self.loss.distance.margin(d[a, p], d[a, n]) + self.loss.margin > 0
            shape = (anchors.shape[0], candidates.shape[0])
            self.last_mining = count_mined(
                pairs_mask(a[active], p[active], shape), pairs_mask(a[active], n[active], shape)
            )
        return value

    def extra_repr(self) -> str:
        return (
            f"margin={self.loss.margin}, cutoff={self.miner.cutoff}, "
            f"nonzero_loss_cutoff={self.miner.nonzero_loss_cutoff}"
        )


class MarginLoss(PairLoss):
    """pml ``MarginLoss(margin, nu, beta, learn_beta, triplets_per_anchor="all")`` on the L2
    distance of normalised embeddings (pml's default). Defaults: margin 0.2, beta 1.2, nu 0,
    beta not learned (pml's; Wu et al.'s values). With ``learn_beta`` beta is a parameter and
    joins the optimiser with the loss parameters' learning rate (``train.loss_lr``).

    IAA: every triplet (anchor, positive, negative) of the own-copy masks, candidates as
    ``ref_emb`` (pml's "all" triplets, less the own copies as positives).

    Mining count: the distinct positive pairs with ``d - beta + margin > 0`` and negative
    pairs with ``beta - d + margin > 0`` of anchors with at least one triplet (pml's non-zero
    ``pos_loss`` / ``neg_loss``).
    """

    def __init__(
        self, margin: float = 0.2, beta: float = 1.2, nu: float = 0.0, learn_beta: bool = False
    ) -> None:
        super().__init__()
        self.loss = pml_losses.MarginLoss(margin=margin, nu=nu, beta=beta, learn_beta=learn_beta)

    def forward(
        self, anchors: Tensor, anchor_labels: Tensor, candidates: Tensor, candidate_labels: Tensor,
        candidate_source: Tensor,
    ) -> Tensor:  # fmt: skip
        check_shapes(anchors, anchor_labels, candidates, candidate_labels, candidate_source)
        pos, neg = pair_masks(anchor_labels, candidate_labels, candidate_source)
        value = self.loss(anchors, anchor_labels, all_triplets(pos, neg), candidates, candidate_labels)
        with torch.no_grad():
            d = self.loss.distance(anchors, candidates)
            beta = self.loss.beta.to(d)
            valid = (pos.any(dim=1) & neg.any(dim=1))[:, None]
            margin, dist = self.loss.margin, self.loss.distance
            self.last_mining = count_mined(
                pos & valid & (dist.margin(d, beta) + margin > 0),
                neg & valid & (dist.margin(beta, d) + margin > 0),
            )
        return value

    def extra_repr(self) -> str:
        return f"margin={self.loss.margin}, beta={self.loss.beta.tolist()}, learn_beta={self.loss.learn_beta}"


class CircleLoss(PairLoss):
    """pml ``CircleLoss(m, gamma)`` on cosine similarity (the library requires it). Defaults:
    m 0.4, gamma 80 (pml's, Sun et al.'s values for fine-grained image retrieval). pml's
    reducer averages over the anchors with a non-zero loss.

    IAA: the positive pairs and negative pairs of the own-copy masks as pml's
    ``(a1, p, a2, n)`` tuple, candidates as ``ref_emb``.

    Mining count: Circle loss has no mining; every pair of an anchor with a positive and a
    negative is weighted. Kept are the pairs with a non-zero self-paced weight: every
    positive (``1 + m - s > 0`` always) and the negatives with ``s > -m``.
    """

    def __init__(self, m: float = 0.4, gamma: float = 80.0) -> None:
        super().__init__()
        self.loss = pml_losses.CircleLoss(m=m, gamma=gamma)

    def forward(
        self, anchors: Tensor, anchor_labels: Tensor, candidates: Tensor, candidate_labels: Tensor,
        candidate_source: Tensor,
    ) -> Tensor:  # fmt: skip
        check_shapes(anchors, anchor_labels, candidates, candidate_labels, candidate_source)
        pos, neg = pair_masks(anchor_labels, candidate_labels, candidate_source)
        a1, p = torch.where(pos)
        a2, n = torch.where(neg)
        value = self.loss(anchors, anchor_labels, (a1, p, a2, n), candidates, candidate_labels)
        with torch.no_grad():
            s = self.loss.distance(anchors, candidates)
            valid = (pos.any(dim=1) & neg.any(dim=1))[:, None]
            self.last_mining = count_mined(pos & valid & (s < self.loss.op), neg & valid & (s > self.loss.on))
        return value

    def extra_repr(self) -> str:
        return f"m={self.loss.m}, gamma={self.loss.gamma}"
