"""Proxy-based losses of pytorch-metric-learning (pml 2.x) with IAA (Table X).

``norm_softmax`` (NormalizedSoftmaxLoss, Zhai & Wu 2019), ``proxy_nca`` (ProxyNCALoss,
Movshovitz-Attias et al. 2017) and ``soft_triple`` (SoftTripleLoss, Qian et al. 2019). The
library computes the losses and holds the learnable proxies (``num_classes`` x
``embedding_dim``); train.py gives these parameters an optimiser group of their own
(``train.loss_lr``) and saves them in the checkpoint.

Shapes and dtypes (as every loss of :mod:`iaa.losses`): ``anchors`` (B, D) float, the L2-
normalised originals; ``anchor_labels`` (B,) int64 in ``0..num_classes-1``; ``candidates``
(N, D), the originals followed by the synthetic copies; ``candidate_labels`` (N,) int64;
``candidate_source`` (N,) int64 (unused: a proxy loss has no sample-to-sample pairs, so
the own-copy rule has nothing to exclude). The loss is a float scalar.

How IAA enters: the synthetic samples are extra labelled samples of the batch: pml's loss is
called on ``candidates`` with ``candidate_labels`` (originals + synthetics; the first B rows
are the anchors), and averages over all of them. Without copies it is pml's plain call on the
batch.

Mining count: these losses mine no pairs; ``last_mining`` is all zeros.

Hyper-parameters are pml's documented defaults (the IAA paper gives none): temperature 0.05
(norm_softmax), softmax_scale 1 (proxy_nca), centers_per_class 10, la 20, gamma 0.1, margin
0.01 (soft_triple, the SoftTriple paper's). Every one works on normalised embeddings: pml's
distances normalise embeddings and proxies (Lp for proxy_nca, dot product of normalised
vectors for norm_softmax, cosine for soft_triple).
"""

from __future__ import annotations

from typing import Any

from pytorch_metric_learning import losses as pml_losses
from torch import Tensor

from iaa.losses.base import MiningCount, PairLoss, check_shapes


class _ProxyLoss(PairLoss):
    needs_classes = True
    pml_class: Any = None

    def __init__(self, num_classes: int, embedding_dim: int, **kwargs: Any) -> None:
        super().__init__()
        self.loss = self.pml_class(num_classes=num_classes, embedding_size=embedding_dim, **kwargs)

    def forward(
        self, anchors: Tensor, anchor_labels: Tensor, candidates: Tensor, candidate_labels: Tensor,
        candidate_source: Tensor,
    ) -> Tensor:  # fmt: skip
        check_shapes(anchors, anchor_labels, candidates, candidate_labels, candidate_source)
        self.last_mining = MiningCount()
        return self.loss(candidates, candidate_labels)


class NormSoftmaxLoss(_ProxyLoss):
    """pml ``NormalizedSoftmaxLoss(num_classes, embedding_dim, temperature=0.05)``; the
    class weights ``loss.W`` (D, C) are the proxies."""

    pml_class = pml_losses.NormalizedSoftmaxLoss

    def __init__(self, num_classes: int, embedding_dim: int, temperature: float = 0.05) -> None:
        super().__init__(num_classes, embedding_dim, temperature=temperature)


class ProxyNCALoss(_ProxyLoss):
    """pml ``ProxyNCALoss(num_classes, embedding_dim, softmax_scale=1)``; proxies
    ``loss.proxies`` (C, D), squared L2 distance of normalised vectors."""

    pml_class = pml_losses.ProxyNCALoss

    def __init__(self, num_classes: int, embedding_dim: int, softmax_scale: float = 1.0) -> None:
        super().__init__(num_classes, embedding_dim, softmax_scale=softmax_scale)


class SoftTripleLoss(_ProxyLoss):
    """pml ``SoftTripleLoss(num_classes, embedding_dim, centers_per_class=10, la=20, gamma=0.1,
    margin=0.01)``; centres ``loss.fc`` (D, C x centers_per_class), cosine similarity."""

    pml_class = pml_losses.SoftTripleLoss

    def __init__(
        self, num_classes: int, embedding_dim: int, centers_per_class: int = 10, la: float = 20.0,
        gamma: float = 0.1, margin: float = 0.01,
    ) -> None:  # fmt: skip
        super().__init__(
            num_classes,
            embedding_dim,
            centers_per_class=int(centers_per_class),
            la=la,
            gamma=gamma,
            margin=margin,
        )
