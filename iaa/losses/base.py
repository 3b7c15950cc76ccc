"""Shared pieces of the losses: similarities, positive/negative masks, mining counts, call helpers.

Every loss takes the same five tensors (all embeddings L2-normalised):
``anchors`` (B, D) are the original batch samples; ``candidates`` (N, D) are the originals
followed by any synthetic copies, with ``candidate_labels`` (N,) and ``candidate_source`` (N,)
int64, the index of the anchor/original a candidate derives from (its own index for an
original). Pair ``(i, j)`` is positive when the labels match and ``candidate_source[j] != i``,
so neither the anchor itself nor its own synthetic copies are its positives (SPEC 2.4);
it is negative when the labels differ. Candidates ``j >= B`` are synthetic.

After each forward a loss leaves :class:`MiningCount` in ``loss.last_mining``: how many hard
positive and hard negative pairs (anchor, candidate) its mining kept in that batch, and how
many of those have a synthetic candidate (Fig. 10). What "kept" means is in each loss's
docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor


@dataclass(frozen=True)
class Pairs:
    """Similarity matrix ``sim`` (B, N) = anchors @ candidates.T and boolean masks (B, N)."""

    sim: Tensor
    pos: Tensor
    neg: Tensor


@dataclass(frozen=True)
class MiningCount:
    """Pairs (anchor, candidate) a loss's mining kept in one batch; ``synthetic_*`` are those
    whose candidate is a synthetic sample (candidate index >= B)."""

    hard_positives: int = 0
    hard_negatives: int = 0
    synthetic_positives: int = 0
    synthetic_negatives: int = 0


def count_mined(hard_pos: Tensor, hard_neg: Tensor) -> MiningCount:
    """:class:`MiningCount` of boolean (B, N) masks of the kept positive / negative pairs.
    Four tensor sums and one device-to-host copy; no per-sample Python."""
    b = hard_pos.shape[0]
    counts = torch.stack([hard_pos.sum(), hard_neg.sum(), hard_pos[:, b:].sum(), hard_neg[:, b:].sum()])
    return MiningCount(*(int(c) for c in counts.tolist()))


def pairs_mask(anchor_idx: Tensor, candidate_idx: Tensor, shape: tuple[int, int]) -> Tensor:
    """Boolean (B, N) mask with True at every ``(anchor_idx[k], candidate_idx[k])`` (distinct pairs)."""
    mask = torch.zeros(shape, dtype=torch.bool, device=anchor_idx.device)
    mask[anchor_idx, candidate_idx] = True
    return mask


class MiningTally:
    """Sums :class:`MiningCount` over an epoch's batches; :meth:`columns` gives the history
    columns ``hard_positives`` and ``hard_negatives`` (per-batch averages) and
    ``synthetic_share`` (synthetic share of all kept pairs, positives and negatives
    together; NaN when nothing was kept)."""

    def __init__(self) -> None:
        self.batches = 0
        self.pos = self.neg = self.synthetic = 0

    def add(self, count: MiningCount | None) -> None:
        self.batches += 1
        if count is not None:
            self.pos += count.hard_positives
            self.neg += count.hard_negatives
            self.synthetic += count.synthetic_positives + count.synthetic_negatives

    def columns(self) -> dict[str, float]:
        n = max(self.batches, 1)
        kept = self.pos + self.neg
        return {
            "hard_positives": self.pos / n,
            "hard_negatives": self.neg / n,
            "synthetic_share": self.synthetic / kept if kept else float("nan"),
        }


def check_shapes(
    anchors: Tensor, anchor_labels: Tensor, candidates: Tensor, candidate_labels: Tensor, source: Tensor
) -> None:
    if anchors.ndim != 2 or candidates.ndim != 2 or anchors.shape[1] != candidates.shape[1]:
        raise ValueError("anchors (B, D) and candidates (N, D) must share D")
    if anchor_labels.shape != anchors.shape[:1]:
        raise ValueError("anchor_labels must be (B,)")
    n_cand = candidates.shape[:1]
    if candidate_labels.shape != n_cand or source.shape != n_cand:
        raise ValueError("candidate_labels and candidate_source must be (N,)")


def pair_masks(
    anchor_labels: Tensor, candidate_labels: Tensor, candidate_source: Tensor
) -> tuple[Tensor, Tensor]:
    """Boolean (B, N) positive and negative masks under the own-copy rule (module docstring)."""
    same = anchor_labels.unsqueeze(1) == candidate_labels.unsqueeze(0)
    anchor_idx = torch.arange(anchor_labels.shape[0], device=anchor_labels.device).unsqueeze(1)
    own = candidate_source.unsqueeze(0) == anchor_idx
    return same & ~own, ~same


def make_pairs(
    anchors: Tensor,
    anchor_labels: Tensor,
    candidates: Tensor,
    candidate_labels: Tensor,
    candidate_source: Tensor,
) -> Pairs:
    """Cosine similarities and positive/negative masks between anchors and candidates."""
    check_shapes(anchors, anchor_labels, candidates, candidate_labels, candidate_source)
    pos, neg = pair_masks(anchor_labels, candidate_labels, candidate_source)
    return Pairs(sim=anchors @ candidates.T, pos=pos, neg=neg)


class PairLoss(torch.nn.Module):
    """Base class of every loss: ``forward`` takes the five tensors of the module docstring.

    The own losses build the pairs and implement :meth:`compute`; the pytorch-metric-learning
    wrappers override ``forward``. ``needs_classes``: the constructor takes ``num_classes``
    and ``embedding_dim`` (the proxy losses). ``last_mining``: the latest batch's counts.
    """

    needs_classes: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.last_mining = MiningCount()

    def forward(
        self,
        anchors: Tensor,
        anchor_labels: Tensor,
        candidates: Tensor,
        candidate_labels: Tensor,
        candidate_source: Tensor,
    ) -> Tensor:
        pairs = make_pairs(anchors, anchor_labels, candidates, candidate_labels, candidate_source)
        return self.compute(pairs)

    def compute(self, pairs: Pairs) -> Tensor:
        """The scalar loss from similarities and masks; averaged over the B anchors. Sets
        ``last_mining``."""
        raise NotImplementedError


def baseline_call(loss: PairLoss, embeddings: Tensor, labels: Tensor) -> Tensor:
    """The plain loss of a batch: candidates are the anchors themselves."""
    source = torch.arange(embeddings.shape[0], device=embeddings.device)
    return loss(embeddings, labels, embeddings, labels, source)


def iaa_call(
    loss: PairLoss,
    embeddings: Tensor,
    labels: Tensor,
    synthetic: Tensor,
    synthetic_labels: Tensor,
    synthetic_source: Tensor,
) -> Tensor:
    """The IAA loss (Eq. 18-20): originals as anchors, originals + synthetics as candidates.

    All embeddings must already be L2-normalised; ``synthetic_source`` indexes ``embeddings``.
    """
    source = torch.arange(embeddings.shape[0], device=embeddings.device)
    return loss(
        embeddings,
        labels,
        torch.cat([embeddings, synthetic]),
        torch.cat([labels, synthetic_labels]),
        torch.cat([source, synthetic_source]),
    )
