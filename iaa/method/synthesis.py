"""Synthetic embeddings around each original (paper Eq. 17, SPEC 2.3) and the lambda schedule."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Synthetic:
    """Synthetic samples, copy-major: rows ``m*B .. (m+1)*B - 1`` are copy ``m``.

    ``embeddings`` (B*M, D) in the originals' dtype, ``labels`` (B*M,), and ``source``
    (B*M,) int64: the index in ``0..B-1`` of the original each row derives from.
    """

    embeddings: Tensor
    labels: Tensor
    source: Tensor


def lambda_schedule(base_lambda: float, epoch: int, epochs: int) -> float:
    """Decayed lambda (SPEC 2.3): progress = epoch/epochs; <=0.4: 1.0, <=0.6: 0.9, <=0.8: 0.75,
    else 0.6, times ``base_lambda``."""
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    progress = epoch / epochs
    if progress <= 0.4:
        factor = 1.0
    elif progress <= 0.6:
        factor = 0.9
    elif progress <= 0.8:
        factor = 0.75
    else:
        factor = 0.6
    return factor * base_lambda


def synthesize(
    embeddings: Tensor,
    labels: Tensor,
    std: Tensor,
    *,
    lam: float,
    copies: int,
    generator: torch.Generator | None = None,
    class_mean: Tensor | None = None,
    sqrt_per_copy: bool = False,
) -> Synthetic:
    """Draw ``copies`` synthetic samples per original: ``z + sqrt(lam) * std[y] * eps``.

    ``embeddings`` (B, D) are the RAW embeddings (before L2 normalisation); gradients flow
    from the synthetic samples back to them. ``std`` (C, D) is the per-class standard deviation
    (the square root of the, possibly corrected, diagonal variance). ``eps ~ N(0, I)`` is drawn
    with ``generator`` on its own device (then moved), or on the embeddings' device.

    ``class_mean`` (C, D) selects the "fixed" variant of Table XII: samples are drawn around
    ``class_mean[y]`` instead of ``z``, so they carry no gradient to the embeddings.

    ``sqrt_per_copy=True`` reproduces SPEC 2.5 item 2: the released code takes a square root
    inside its loop over copies, starting from the variance, so copy ``m`` (counted from 0)
    uses ``std ** (1 / 2**m)``: copy 0 the true std, copy 1 its square root, and so on.
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError("embeddings must be (B, D) and labels (B,)")
    if copies < 0 or lam < 0:
        raise ValueError(f"copies and lam must be non-negative, got {copies}, {lam}")
    batch, dim = embeddings.shape
    device, dtype = embeddings.device, embeddings.dtype
    source = torch.arange(batch, device=device).repeat(copies)
    if copies == 0:
        empty = embeddings.new_empty((0, dim))
        return Synthetic(empty, labels[:0], source)

    # index first, then move: only (B, D) rows cross devices, never the whole (C, D) table
    scale = std[labels.to(std.device)].to(device=device, dtype=dtype)  # (B, D)
    if sqrt_per_copy:
        powers = 0.5 ** torch.arange(copies, device=device, dtype=dtype)
        scale = scale.clamp_min(0).unsqueeze(0) ** powers.view(-1, 1, 1)  # (M, B, D)
    noise_device = generator.device if generator is not None else device
    eps = torch.randn((copies, batch, dim), generator=generator, device=noise_device, dtype=dtype).to(device)
    if class_mean is None:
        centre = embeddings
    else:
        centre = class_mean[labels.to(class_mean.device)].to(device=device, dtype=dtype)
    synthetic = centre.unsqueeze(0) + (lam**0.5) * scale * eps
    return Synthetic(synthetic.reshape(copies * batch, dim), labels.repeat(copies), source)
