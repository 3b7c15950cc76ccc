"""Triplet loss with hardest-negative mining on cosine distance (paper Eq. 19, SPEC 2.4)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from iaa.losses.base import PairLoss, Pairs, count_mined


class TripletLoss(PairLoss):
    """Per anchor: ``sum_{all positives j} relu(d_ij - min_{negatives k} d_ik + margin)``.

    ``d = 1 - s`` is the cosine distance; synthetic candidates count both as positives and as
    candidates for the hardest negative. The sum over anchors is divided by B; an anchor
    without positives or without negatives contributes 0.

    Mining count (``last_mining``): the kept positives are the pairs with a non-zero hinge; the
    kept negatives are the hardest negative of each anchor with at least one such positive
    (one per anchor).
    """

    def __init__(self, margin: float = 0.1) -> None:
        super().__init__()
        self.margin = margin

    def compute(self, pairs: Pairs) -> Tensor:
        d = 1.0 - pairs.sim
        has_neg = pairs.neg.any(dim=1, keepdim=True)
        hardest = d.masked_fill(~pairs.neg, math.inf).amin(dim=1, keepdim=True)
        hardest = torch.where(has_neg, hardest, 0.0)  # keeps inf out of the graph
        hinge = torch.relu(d - hardest + self.margin)
        per_pair = torch.where(pairs.pos & has_neg, hinge, 0.0)
        with torch.no_grad():
            hard_pos = per_pair > 0
            hardest_idx = d.masked_fill(~pairs.neg, math.inf).argmin(dim=1, keepdim=True)
            hard_neg = torch.zeros_like(hard_pos).scatter_(1, hardest_idx, hard_pos.any(dim=1, keepdim=True))
            self.last_mining = count_mined(hard_pos, hard_neg)
        return per_pair.sum() / d.shape[0]

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
