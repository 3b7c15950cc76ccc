"""Running per-class mean and diagonal covariance of raw embeddings (paper Eq. 7-8, SPEC 2.1).

The statistics live in float64 buffers of a :class:`torch.nn.Module`, so they travel with the
model's device and are saved/restored by ``state_dict()`` with a training checkpoint.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Rows of embeddings converted to float64 at a time in ClassStatistics.update.
_CHUNK = 16384


class ClassStatistics(torch.nn.Module):
    """Per-class mean, diagonal variance and sample count, merged set by set.

    Merge rule for a set holding ``n_k`` embeddings of class ``k`` with set mean ``m_k`` and
    biased set variance ``v_k`` (SPEC 2.1)::

        w = n_k / (n_k + a_k);  w = max(w, 1 - momentum)        (n_k > 0)
        var_k  <- (1-w) var_k + w v_k + w (1-w) (mean_k - m_k)^2
        mean_k <- (1-w) mean_k + w m_k
        a_k    <- a_k + n_k

    ``momentum`` is the largest weight the old statistics may keep: the default 0.2 gives new
    data a weight of at least 0.8 so stale statistics decay, and ``momentum=1`` removes the
    floor, which makes successive merges equal the mean/biased variance of all data seen.
    A class with exactly one embedding in the set updates mean and count but keeps its
    variance (one point carries no spread); classes absent from the set are untouched.

    Buffers: ``mean`` (C, D), ``var`` (C, D) and ``count`` (C,), all float64.
    """

    mean: Tensor
    var: Tensor
    count: Tensor

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.2) -> None:
        super().__init__()
        if num_classes <= 0 or dim <= 0:
            raise ValueError(f"num_classes and dim must be positive, got {num_classes}, {dim}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self.num_classes = num_classes
        self.dim = dim
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(num_classes, dim, dtype=torch.float64))
        self.register_buffer("var", torch.zeros(num_classes, dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.float64))

    def reset(self) -> None:
        """Forget everything: zero mean, variance and counts."""
        self.mean.zero_()
        self.var.zero_()
        self.count.zero_()

    @property
    def std(self) -> Tensor:
        """Per-class standard deviation (C, D), the square root of the diagonal variance."""
        return self.var.clamp_min(0.0).sqrt()

    @property
    def initialized(self) -> Tensor:
        """Boolean mask (C,) of classes that have received at least one embedding."""
        return self.count > 0

    @torch.no_grad()
    def update(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Merge a set of raw embeddings (N, D) with labels (N,) in ``[0, C)``.

        All classes are merged in one vectorised pass. Returns the per-class counts ``n_k`` of
        this set (C,) float64, which is what the neighbour correction expects as ``count``
        (the accumulated ``self.count`` grows with every refresh of the same data).
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings must be (N, {self.dim}), got {tuple(embeddings.shape)}")
        if labels.shape != embeddings.shape[:1]:
            raise ValueError("labels must be (N,) matching embeddings")
        device = self.mean.device
        y = labels.to(device=device, dtype=torch.long)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        # Sums and sums of squares in float64, shifted by the set's mean so that the one-pass
        # variance loses only ~eps * (spread around the shift) / variance; converted chunk by
        # chunk so the float64 copy never exceeds _CHUNK rows.
        x = embeddings.detach().to(device=device)
        # any rough centre will do, so it is taken in the input's (fast) dtype
        shift = x.mean(0).to(torch.float64) if x.shape[0] else torch.zeros_like(self.mean[0])
        sums, sq_sums = torch.zeros_like(self.mean), torch.zeros_like(self.var)
        for part, part_y in zip(x.split(_CHUNK), y.split(_CHUNK), strict=True):
            centred = torch.sub(part, shift)  # promotes to float64
            sums.index_add_(0, part_y, centred)
            sq_sums.index_add_(0, part_y, centred.square_())
        n = torch.bincount(y, minlength=self.num_classes).to(torch.float64)
        inv_n = n.clamp_min(1.0).reciprocal().unsqueeze(1)
        centred_mean = sums.mul_(inv_n)
        set_var = sq_sums.mul_(inv_n).sub_(centred_mean.square()).clamp_min_(0.0)
        set_mean = centred_mean.add_(shift)

        present = n > 0
        w = n / (n + self.count).clamp_min(1.0)
        w = torch.where(present, w.clamp_min(1.0 - self.momentum), torch.zeros_like(w))
        w = w.unsqueeze(1)

        # var <- (1-w) var + w [v + (1-w) (mean - m)^2]; mean <- (1-w) mean + w m
        target = (self.mean - set_mean).square_().mul_(1.0 - w).add_(set_var)
        self.var.copy_(torch.where((n > 1).unsqueeze(1), self.var.lerp(target, w), self.var))
        self.mean.copy_(torch.where(present.unsqueeze(1), self.mean.lerp(set_mean, w), self.mean))
        self.count += n
        return n

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, momentum={self.momentum}"
