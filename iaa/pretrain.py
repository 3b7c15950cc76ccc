"""Stage ``pretrain``: the synth backbone trained by softmax classification on ``pretrain`` classes.

This stands in for ImageNet pretraining: the metric-learning stages then start from a
backbone that has learnt generic shape features on classes disjoint from train and test.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from iaa.config import PretrainSettings
from iaa.data.decoded_cache import default_cache_dir
from iaa.data.images import contiguous_labels
from iaa.data.sources import ImageOptions, ImageSource, model_input
from iaa.io import read_manifest
from iaa.models.backbone import SynthConvNet, save_backbone
from iaa.seeding import seed_everything

log = logging.getLogger(__name__)


def pretrain_stage(
    manifest_path: Path, out: Path, settings: PretrainSettings, seed: int = 0
) -> dict[str, float]:
    seed_everything(seed)
    manifest = read_manifest(manifest_path)
    cache = default_cache_dir(manifest_path)
    opts = ImageOptions(settings.image_size, settings.image_size, crop_scale_min=0.5, cache_dir=cache)
    source = ImageSource(manifest, ("pretrain",), opts)
    labels, classes = contiguous_labels(source.labels)
    targets = torch.from_numpy(labels)
    backbone = SynthConvNet(width=settings.width)
    model = nn.Sequential(backbone, nn.Linear(backbone.feature_dim, len(classes)))
    opt = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay, nesterov=True
    )
    steps_per_epoch = max(1, len(source) // settings.batch_size)
    total = settings.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    generator = torch.Generator().manual_seed(seed)
    log.info("pretraining on %d images of %d classes, %d epochs", len(source), len(classes), settings.epochs)
    acc = 0.0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        perm = torch.randperm(len(source), generator=generator)[: steps_per_epoch * settings.batch_size]
        batches = perm.view(steps_per_epoch, settings.batch_size)
        correct, seen, loss_sum = 0, 0, 0.0
        for x, idx in tqdm(
            source.train_batches(batches), total=steps_per_epoch, desc=f"pretrain {epoch}", leave=False
        ):
            logits = model(model_input(x, backbone.input_spec, torch.device("cpu")))
            y = targets[idx]
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        acc = correct / seen
        log.info("epoch %d: loss %.4f, train accuracy %.3f", epoch, loss_sum / seen, acc)
    save_backbone(
        out,
        backbone,
        "synth",
        {"width": settings.width},
        pretrain_classes=len(classes),
        final_train_accuracy=acc,
    )
    return {"train_accuracy": acc}
