"""The global estimation pass of IAA (SPEC 2.1, 2.2): when it runs, and what it computes.

Each estimation embeds the whole train set with the current model (no gradient, BatchNorm
frozen), merges the embeddings into the class statistics (Eq. 7-8) and, on datasets with few
images per class, applies the neighbor correction (Eq. 9-16). The result is the per-class σ
that synthesis (Eq. 17) draws with until the next estimation.
"""

from __future__ import annotations

import logging

import torch

from iaa.config import TrainSettings
from iaa.data.sources import FeatureSource, ImageSource, embed_all, model_forward
from iaa.method import ClassStatistics, neighbor_correction

log = logging.getLogger(__name__)


def is_estimation_epoch(epoch: int, start_epoch: int, update_every: int) -> bool:
    """Global estimation runs at start_epoch + 1, then every ``update_every`` epochs (SPEC 2.1)."""
    return epoch > start_epoch and (epoch - start_epoch - 1) % update_every == 0


def estimation_rows(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Boolean mask (N,) of the rows the statistics are estimated from: all of them when
    ``per_class`` is 0, else a fixed random subset of at most ``per_class`` rows of each
    class (Table XI: statistics from only N = 3, 5, 7 images per class). The subset depends
    only on the labels and ``seed``, so every estimation, run and seed uses the same images.
    ``labels`` (N,) int64, any device. Raises ValueError for a negative ``per_class``."""
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    if per_class == 0:
        return torch.ones(labels.shape, dtype=torch.bool, device=labels.device)
    g = torch.Generator().manual_seed(seed)
    key = torch.rand(labels.shape[0], generator=g).to(labels.device)
    order = torch.argsort(key)  # random order, then grouped by class (stable keeps it random)
    order = order[torch.argsort(labels[order], stable=True)]
    grouped = labels[order]
    first = torch.searchsorted(grouped, grouped, right=False)  # first position of each class
    rank = torch.arange(len(order), device=labels.device) - first
    mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    mask[order[rank < per_class]] = True
    return mask


def use_correction(settings: TrainSettings, num_classes: int) -> bool:
    mode = settings.iaa.correction
    if mode == "auto":
        return num_classes > settings.iaa.correction_min_classes
    return mode == "on"


@torch.no_grad()
def embed_train_transform(
    model: torch.nn.Module, source: FeatureSource | ImageSource, device, channels_last
) -> torch.Tensor:
    """Raw outputs for every row in order, through the TRAINING transforms (random crop and
    flip), BatchNorm frozen: the released code's global estimation pass (run.py feeds it
    ``loader_train_eval`` over ``dataset_train``, whose transform is the training one)."""
    was_training = model.training
    model.eval()  # our trunks have no dropout: eval mode is train mode with BatchNorm frozen
    order = [torch.arange(s, min(s + 512, len(source))) for s in range(0, len(source), 512)]
    chunks = [
        model_forward(model, x, device, channels_last=channels_last).cpu()
        for x, _ in source.train_batches(order)
    ]
    model.train(was_training)
    return torch.cat(chunks)


def global_estimation(
    model: torch.nn.Module,
    train_src: FeatureSource | ImageSource,
    labels: torch.Tensor,
    stats: ClassStatistics,
    settings: TrainSettings,
    correction: bool,
    device: torch.device,
    channels_last: bool = False,
) -> torch.Tensor:
    """Embed the whole train set, merge it into the statistics, return the σ used for synthesis."""
    ia = settings.iaa
    if ia.estimation_transform == "train":
        raw = embed_train_transform(model, train_src, device, channels_last).to(device)
    else:
        raw = embed_all(model, train_src, 512, device, channels_last).to(device)
    labels = labels.to(device)
    if ia.estimation_images:  # Table XI: a fixed subset of N images per class
        keep = estimation_rows(labels, ia.estimation_images)
        raw, labels = raw[keep], labels[keep]
    # n_k of SPEC 2.2 is the class's image count in this pass (the whole train set, or the
    # Table XI subset), not the running count, which grows with every estimation.
    counts = stats.update(raw, labels)
    var = stats.var
    if correction:
        mean = stats.mean
        if ia.singleton_mean_zero:  # SPEC 2.5 item 5: single-image classes keep mean 0
            mean = torch.where((counts <= 1)[:, None], torch.zeros_like(mean), mean)
        result = neighbor_correction(
            mean, var, counts, k=ia.k, beta=ia.beta, gamma=ia.gamma, tau=ia.tau,
            sigma_m=ia.sigma_m, sigma_cv=ia.sigma_cv, mode=ia.correction_mode,
            reference_code=ia.minmax_sentinel,  # SPEC 2.5 item 4
        )  # fmt: skip
        # SPEC 2.5 item 1: the released code computes the correction but samples with raw σ.
        if ia.apply_correction:
            var = result.var_corrected
    std = var.clamp_min(0).sqrt().float()
    log.info("global estimation: %d classes, mean σ %.4f", int((stats.count > 0).sum()), float(std.mean()))
    return std
