"""Shared pieces of the pair-based losses: similarities, positive/negative masks, call helpers.

Every loss takes the same five tensors (all embeddings L2-normalised):
``anchors`` (B, D) are the original batch samples; ``candidates`` (N, D) are the originals
followed by any synthetic copies, with ``candidate_labels`` (N,) and ``candidate_source`` (N,)
int64, the index of the anchor/original a candidate derives from (its own index for an
original). Pair ``(i, j)`` is positive when the labels match and ``candidate_source[j] != i``,
so neither the anchor itself nor its own synthetic copies are its positives (SPEC 2.4);
it is negative when the labels differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Pairs:
    """Similarity matrix ``sim`` (B, N) = anchors @ candidates.T and boolean masks (B, N)."""

    sim: Tensor
    pos: Tensor
    neg: Tensor


def make_pairs(
    anchors: Tensor,
    anchor_labels: Tensor,
    candidates: Tensor,
    candidate_labels: Tensor,
    candidate_source: Tensor,
) -> Pairs:
    """Cosine similarities and positive/negative masks between anchors and candidates."""
    if anchors.ndim != 2 or candidates.ndim != 2 or anchors.shape[1] != candidates.shape[1]:
        raise ValueError("anchors (B, D) and candidates (N, D) must share D")
    if anchor_labels.shape != anchors.shape[:1]:
        raise ValueError("anchor_labels must be (B,)")
    n_cand = candidates.shape[:1]
    if candidate_labels.shape != n_cand or candidate_source.shape != n_cand:
        raise ValueError("candidate_labels and candidate_source must be (N,)")
    sim = anchors @ candidates.T
    same = anchor_labels.unsqueeze(1) == candidate_labels.unsqueeze(0)
    anchor_idx = torch.arange(anchors.shape[0], device=anchors.device).unsqueeze(1)
    own = candidate_source.unsqueeze(0) == anchor_idx
    return Pairs(sim=sim, pos=same & ~own, neg=~same)


class PairLoss(torch.nn.Module):
    """Base class: ``forward`` builds the pairs, subclasses implement :meth:`compute`."""

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
        """The scalar loss from similarities and masks; averaged over the B anchors."""
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
