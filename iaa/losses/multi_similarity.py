"""Multi-Similarity loss with its hard-pair mining (Wang et al. 2019, SPEC 2.4)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from iaa.losses.base import PairLoss, Pairs, count_mined


def _log1p_sum_exp(x: Tensor, mask: Tensor) -> Tensor:
    """Row-wise ``log(1 + sum_{mask} exp(x))``, stable: logsumexp with a zero term appended."""
    masked = x.masked_fill(~mask, -math.inf)
    return torch.logsumexp(torch.cat([torch.zeros_like(x[:, :1]), masked], dim=1), dim=1)


class MultiSimilarityLoss(PairLoss):
    """MS loss: per anchor ``(1/alpha) log(1 + sum_P exp(-alpha (s - base)))
    + (1/beta) log(1 + sum_N exp(beta (s - base)))`` over mined pairs, summed and divided by B.

    Mining, per anchor (as in the original MS code and the IAA reference): positives with
    ``s > 1 - 1e-5`` are dropped first; negatives are kept when ``s + epsilon > min s_pos``
    and positives when ``s - epsilon < max s_neg`` (min/max over all remaining positives /
    all negatives). An anchor left with no positive or no negative after mining contributes 0
    (it is skipped, as in the original code), but the division stays by B.

    Mining count (``last_mining``): the kept pairs are the mined positives and negatives of
    the anchors that contribute (those with both after mining).
    """

    def __init__(
        self, alpha: float = 2.0, beta: float = 40.0, base: float = 0.5, epsilon: float = 0.1
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.base = base
        self.epsilon = epsilon

    def compute(self, pairs: Pairs) -> Tensor:
        s = pairs.sim
        pos = pairs.pos & (s < 1.0 - 1e-5)
        neg = pairs.neg
        with torch.no_grad():  # mining thresholds select pairs; they carry no gradient
            min_pos = s.masked_fill(~pos, math.inf).amin(dim=1, keepdim=True)
            max_neg = s.masked_fill(~neg, -math.inf).amax(dim=1, keepdim=True)
            hard_neg = neg & (s + self.epsilon > min_pos)
            hard_pos = pos & (s - self.epsilon < max_neg)
            used = hard_pos.any(dim=1) & hard_neg.any(dim=1)
            self.last_mining = count_mined(hard_pos & used[:, None], hard_neg & used[:, None])
        pos_term = _log1p_sum_exp(-self.alpha * (s - self.base), hard_pos) / self.alpha
        neg_term = _log1p_sum_exp(self.beta * (s - self.base), hard_neg) / self.beta
        per_anchor = torch.where(used, pos_term + neg_term, 0.0)
        return per_anchor.sum() / s.shape[0]

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, base={self.base}, epsilon={self.epsilon}"
