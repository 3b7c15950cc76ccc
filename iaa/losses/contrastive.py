"""Contrastive loss in similarity form (paper Eq. 2 / 18, SPEC 2.4)."""

from __future__ import annotations

import torch
from torch import Tensor

from iaa.losses.base import PairLoss, Pairs, count_mined


class ContrastiveLoss(PairLoss):
    """``sum_pos relu(pos_margin - s) + sum_neg relu(s - neg_margin)``, divided by B.

    Mining count (``last_mining``): the kept pairs are those with a non-zero term, positives
    with ``s < pos_margin`` and negatives with ``s > neg_margin``.
    """

    def __init__(self, pos_margin: float = 0.8, neg_margin: float = 0.5) -> None:
        super().__init__()
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin

    def compute(self, pairs: Pairs) -> Tensor:
        s = pairs.sim
        with torch.no_grad():
            self.last_mining = count_mined(
                pairs.pos & (s < self.pos_margin), pairs.neg & (s > self.neg_margin)
            )
        pos = torch.where(pairs.pos, torch.relu(self.pos_margin - s), 0.0)
        neg = torch.where(pairs.neg, torch.relu(s - self.neg_margin), 0.0)
        return (pos.sum() + neg.sum()) / s.shape[0]

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}"
