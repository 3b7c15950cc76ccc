"""Metric learning losses that accept IAA's synthetic candidates (SPEC 2.4, Table X)."""

from __future__ import annotations

from typing import Any

from iaa.losses.base import (
    MiningCount,
    MiningTally,
    PairLoss,
    Pairs,
    baseline_call,
    count_mined,
    iaa_call,
    make_pairs,
    pair_masks,
)
from iaa.losses.contrastive import ContrastiveLoss
from iaa.losses.multi_similarity import MultiSimilarityLoss
from iaa.losses.pml_pair import CircleLoss, DistanceWeightedTripletLoss, MarginLoss
from iaa.losses.pml_proxy import NormSoftmaxLoss, ProxyNCALoss, SoftTripleLoss
from iaa.losses.triplet import TripletLoss

LOSSES: dict[str, type[PairLoss]] = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
    "ms": MultiSimilarityLoss,
    "distance_weighted": DistanceWeightedTripletLoss,
    "margin": MarginLoss,
    "circle": CircleLoss,
    "norm_softmax": NormSoftmaxLoss,
    "proxy_nca": ProxyNCALoss,
    "soft_triple": SoftTripleLoss,
}


def build_loss(
    name: str, *, num_classes: int | None = None, embedding_dim: int | None = None, **kwargs: Any
) -> PairLoss:
    """Instantiate a registered loss by name with its hyper-parameters ``kwargs``.

    ``num_classes`` and ``embedding_dim`` size the proxies of the proxy losses (``norm_softmax``,
    ``proxy_nca``, ``soft_triple``), which require them; the other losses ignore them.
    ValueError for an unknown name or missing sizes.
    """
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None
    if not cls.needs_classes:
        return cls(**kwargs)
    if num_classes is None or embedding_dim is None:
        raise ValueError(f"loss {name!r} learns class proxies: it needs num_classes and embedding_dim")
    return cls(num_classes=num_classes, embedding_dim=embedding_dim, **kwargs)  # type: ignore[call-arg]


__all__ = [
    "LOSSES",
    "CircleLoss",
    "ContrastiveLoss",
    "DistanceWeightedTripletLoss",
    "MarginLoss",
    "MiningCount",
    "MiningTally",
    "MultiSimilarityLoss",
    "NormSoftmaxLoss",
    "PairLoss",
    "Pairs",
    "ProxyNCALoss",
    "SoftTripleLoss",
    "TripletLoss",
    "baseline_call",
    "build_loss",
    "count_mined",
    "iaa_call",
    "make_pairs",
    "pair_masks",
]
