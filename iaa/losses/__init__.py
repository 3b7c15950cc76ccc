"""Pair-based metric learning losses that accept IAA's synthetic candidates (SPEC 2.4)."""

from __future__ import annotations

from typing import Any

from iaa.losses.base import PairLoss, Pairs, baseline_call, iaa_call, make_pairs
from iaa.losses.contrastive import ContrastiveLoss
from iaa.losses.multi_similarity import MultiSimilarityLoss
from iaa.losses.triplet import TripletLoss

LOSSES: dict[str, type[PairLoss]] = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
    "ms": MultiSimilarityLoss,
}


def build_loss(name: str, **kwargs: Any) -> PairLoss:
    """Instantiate a registered loss by name (``contrastive``, ``triplet``, ``ms``)."""
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None
    return cls(**kwargs)


__all__ = [
    "LOSSES",
    "ContrastiveLoss",
    "MultiSimilarityLoss",
    "PairLoss",
    "Pairs",
    "TripletLoss",
    "baseline_call",
    "build_loss",
    "iaa_call",
    "make_pairs",
]
