"""Stage ``train``: one metric-learning run (loss x method x seed), resumable.

The loop reads top to bottom like the paper's Algorithm 1:

    for each epoch:
        if IAA and a global estimation is due: embed the whole train set, merge the class
            statistics (SPEC 2.1), apply the neighbor correction (SPEC 2.2)
        for each balanced batch:
            z = model(x)                                  raw embeddings
            if IAA is active: ẑ = z + sqrt(λ) σ_y ⊙ ε     M copies each (SPEC 2.3)
            loss(anchors = originals, candidates = originals + copies)   (SPEC 2.4)
        checkpoint (model, optimiser, scheduler, statistics, every RNG state)

A run killed at any point restarts from its last checkpoint and, because every random
number generator is restored with it, reaches the same result as an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from iaa import preemption
from iaa.config import TrainSettings, to_dict
from iaa.data.images import contiguous_labels
from iaa.data.sampler import BalancedBatchSampler
from iaa.data.sources import FeatureSource, ImageOptions, ImageSource, embed_all, model_forward, place_model
from iaa.errors import IAAError, TrainingDivergedError
from iaa.io import atomic_path, read_embeddings, read_manifest
from iaa.losses import baseline_call, build_loss, iaa_call
from iaa.method import ClassStatistics, lambda_schedule, neighbor_correction, synthesize
from iaa.metrics import recall_at_k
from iaa.models.backbone import freeze_batchnorm, load_backbone
from iaa.models.embedder import EmbeddingModel, save_model
from iaa.seeding import seed_everything

log = logging.getLogger(__name__)

METHODS = ("baseline", "iaa")
HISTORY_FIELDS = (
    "epoch",
    "loss",
    "lr",
    "lambda",
    "iaa_active",
    "estimated",
    "mean_std",
    "val_recall@1",
    "seconds",
)
KEEP_CHECKPOINTS = 2


@dataclass
class TrainInputs:
    """Where a run's data come from: features (head mode), or in finetune mode a manifest and
    either a backbone checkpoint (synth's pretrain stage) or an ImageNet architecture
    (``arch``, with its weights file looked up by ``iaa.models.weights``)."""

    features: Path | None = None
    manifest: Path | None = None
    backbone: Path | None = None
    arch: str | None = None
    weights: Path | None = None  # the weights file or its folder; default: the torch hub cache
    allow_download: bool = True


@dataclass
class RunState:
    """Everything a checkpoint restores besides model/optimiser/scheduler."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    std: torch.Tensor | None = None  # per-class σ used for synthesis, once estimated


def is_estimation_epoch(epoch: int, start_epoch: int, update_every: int) -> bool:
    """Global estimation runs at start_epoch + 1, then every ``update_every`` epochs (SPEC 2.1)."""
    return epoch > start_epoch and (epoch - start_epoch - 1) % update_every == 0


def use_correction(settings: TrainSettings, num_classes: int) -> bool:
    mode = settings.iaa.correction
    if mode == "auto":
        return num_classes > settings.iaa.correction_min_classes
    return mode == "on"


# --------------------------------------------------------------------------- setup


def _sources(
    inputs: TrainInputs, settings: TrainSettings
) -> tuple[FeatureSource | ImageSource, FeatureSource | ImageSource | None, EmbeddingModel]:
    val_split = settings.val_split
    if settings.mode == "head":
        if inputs.features is None:
            raise IAAError("train in head mode needs --features")
        table = read_embeddings(inputs.features)
        train = FeatureSource(table.split("train"))
        if len(train) == 0:
            raise IAAError(f"{inputs.features} has no train rows")
        val = FeatureSource(table.split(val_split)) if val_split else None
        model = EmbeddingModel(
            settings.embedding_dim, in_dim=train.input_dim, head_hidden=settings.head_hidden
        )
        return train, val, model
    if settings.mode != "finetune":
        raise IAAError(f"unknown train mode {settings.mode!r} (head or finetune)")
    if inputs.manifest is None or (inputs.backbone is None and inputs.arch is None):
        raise IAAError("train in finetune mode needs --manifest and --backbone or --arch")
    if inputs.backbone is not None:
        backbone, name, kwargs = load_backbone(str(inputs.backbone))
        model = EmbeddingModel(
            settings.embedding_dim, backbone=name, backbone_kwargs=kwargs, head_hidden=settings.head_hidden
        )
        assert model.trunk is not None
        model.trunk.load_state_dict(backbone.state_dict())
    else:  # ImageNet weights, looked up (and checksummed) before any image is read
        weights = {"pretrained": True, "weights": inputs.weights, "allow_download": inputs.allow_download}
        model = EmbeddingModel(
            settings.embedding_dim,
            backbone=inputs.arch,
            backbone_kwargs=weights,
            head_hidden=settings.head_hidden,
        )
    manifest = read_manifest(inputs.manifest)
    opts = ImageOptions(
        settings.image_size,
        settings.resize,
        crop_scale_min=settings.crop_scale_min,
        workers=settings.workers,
        square_resize=settings.resize if settings.square_resize else None,
    )
    train_src = ImageSource(manifest, ("train",), opts)
    val_src = ImageSource(manifest, (val_split,), opts) if val_split else None
    return train_src, val_src, model


def _optimizer(model: EmbeddingModel, settings: TrainSettings, lr: float) -> torch.optim.Optimizer:
    """Adam; the embedding layer (the head) learns ``embedding_lr_multiplier`` times faster."""
    groups = [{"params": model.head.parameters(), "lr": lr * settings.embedding_lr_multiplier}]
    if model.trunk is not None:
        groups.append({"params": model.trunk.parameters(), "lr": lr})
    return torch.optim.Adam(groups, lr=lr, weight_decay=settings.weight_decay)


def _precision(settings: TrainSettings, device: torch.device) -> tuple[bool, torch.dtype]:
    """Mixed precision on CUDA when ``amp``: bfloat16 where the GPU has it (no loss scaling
    needed), else float16 with a GradScaler. Off on CPU, where it would only slow things."""
    if not settings.amp or device.type != "cuda":
        return False, torch.float32
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _val_recall_at_1(
    model: EmbeddingModel, val: FeatureSource | ImageSource | None, device: torch.device, channels_last: bool
) -> float:
    if val is None or len(val) < 2:
        return float("nan")
    emb = F.normalize(embed_all(model, val, 512, device, channels_last), dim=1).numpy()
    return recall_at_k(emb, val.labels, emb, val.labels, [1], exclude_self=True).recall[1]


# --------------------------------------------------------------------------- checkpoints


def _checkpoint_path(ckpt_dir: Path, epoch: int) -> Path:
    return ckpt_dir / f"epoch_{epoch:03d}.pt"


def run_fingerprint(settings: TrainSettings, loss_name: str, method: str, seed: int) -> str:
    """What a checkpoint must have been trained with to be resumed (all but the worker count)."""
    config = {k: v for k, v in to_dict(settings).items() if k != "workers"}
    return json.dumps({"settings": config, "loss": loss_name, "method": method, "seed": seed}, sort_keys=True)


def _save_checkpoint(
    ckpt_dir: Path, model, optimizer, scheduler, scaler, stats, state: RunState, rngs: dict, fingerprint: str
) -> None:
    payload = {
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "stats": stats.state_dict(),
        "std": state.std,
        "history": state.history,
        "rng": {name: g.get_state() for name, g in rngs.items()},
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(_checkpoint_path(ckpt_dir, state.epoch)) as tmp:
        torch.save(payload, tmp)
    for old in preemption.list_checkpoints(ckpt_dir)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)


def _resume(
    ckpt_dir: Path, model, optimizer, scheduler, scaler, stats, rngs: dict, fingerprint: str
) -> RunState:
    """Load the newest readable checkpoint of this run; a corrupt newest one falls back to the
    one before. Checkpoints of other settings (the config changed, so Snakemake reran the job)
    are deleted: resuming from them would silently mix two configurations."""
    for path in reversed(preemption.list_checkpoints(ckpt_dir)):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # a checkpoint cut short by a crash outside atomic_path
            log.warning("skipping unreadable checkpoint %s: %s", path, err)
            continue
        if payload.get("fingerprint") != fingerprint:
            log.warning("%s was trained with other settings: starting this run from scratch", path)
            for old in preemption.list_checkpoints(ckpt_dir):
                old.unlink(missing_ok=True)
            return RunState()
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        stats.load_state_dict(payload["stats"])
        for name, g in rngs.items():
            g.set_state(payload["rng"][name])
        torch.set_rng_state(payload["torch_rng"])
        log.info("resumed from %s (epoch %d)", path, payload["epoch"])
        return RunState(epoch=payload["epoch"], history=payload["history"], std=payload["std"])
    return RunState()


# --------------------------------------------------------------------------- the run


@preemption.exit_cleanly_on_sigterm
def train_stage(
    inputs: TrainInputs,
    *,
    loss_name: str,
    method: str,
    seed: int,
    settings: TrainSettings,
    model_out: Path,
    history_out: Path,
    checkpoint_dir: Path,
) -> list[dict[str, Any]]:
    """Train one run; write the final model and the per-epoch history CSV."""
    if method not in METHODS:
        raise IAAError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    try:  # before any data is read: a typo fails at once
        loss_fn = build_loss(loss_name, **getattr(settings.losses, loss_name, {}))
    except ValueError as err:
        raise IAAError(str(err)) from None
    seed_everything(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_src, val_src, model = _sources(inputs, settings)
    labels_np, class_ids = contiguous_labels(train_src.labels)
    labels = torch.from_numpy(labels_np)
    num_classes = len(class_ids)
    lr = settings.lr_by_loss.get(loss_name, settings.lr)  # e.g. contrastive on CUB: 3e-5 (SPEC 3)
    amp, amp_dtype = _precision(settings, device)
    channels_last = settings.channels_last and device.type == "cuda" and model.trunk is not None
    place_model(model, device, channels_last)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    optimizer = _optimizer(model, settings, lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, settings.lr_milestones, settings.lr_gamma)
    stats = ClassStatistics(num_classes, settings.embedding_dim, momentum=settings.iaa.momentum).to(device)
    iterations = max(1, min(len(train_src) // settings.batch_size, settings.max_iterations_per_epoch))
    try:
        sampler = BalancedBatchSampler(
            labels_np, settings.batch_size, settings.samples_per_class, iterations, seed
        )
    except ValueError as err:
        raise IAAError(f"train split: {err}") from None
    noise = torch.Generator(device=device).manual_seed(seed + 1)
    rngs = {"sampler": sampler.generator, "noise": noise}
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    preemption.remove_stale_temporaries(checkpoint_dir, model_out, history_out)
    fingerprint = run_fingerprint(settings, loss_name, method, seed)
    state = _resume(checkpoint_dir, model, optimizer, scheduler, scaler, stats, rngs, fingerprint)
    correction = use_correction(settings, num_classes)
    ia = settings.iaa
    log.info(
        "run %s/%s seed %d: %d train images, %d classes, %d iterations/epoch, lr %g, correction %s, "
        "device %s%s%s, from epoch %d",
        loss_name, method, seed, len(train_src), num_classes, iterations, lr, correction, device,
        f", {amp_dtype} autocast" if amp else "", ", channels-last" if channels_last else "", state.epoch + 1,
    )  # fmt: skip

    for epoch in range(state.epoch + 1, settings.epochs + 1):
        t0 = time.perf_counter()
        estimated = method == "iaa" and is_estimation_epoch(epoch, ia.start_epoch, ia.update_every)
        if estimated:
            state.std = _global_estimation(
                model, train_src, labels, stats, settings, correction, device, channels_last
            )
        iaa_active = method == "iaa" and state.std is not None and ia.copies > 0
        lam = lambda_schedule(ia.lam, epoch, settings.epochs)
        model.train()
        if model.trunk is not None:
            freeze_batchnorm(model.trunk)
        total, count = 0.0, 0
        batches = train_src.train_batches(sampler)
        for it, (x, idx) in enumerate(
            tqdm(batches, total=iterations, desc=f"epoch {epoch}", leave=False, mininterval=5)
        ):
            y = labels[idx].to(device)
            # statistics, synthesis and the loss stay in float32 (model_forward's output)
            z = model_forward(
                model, x, device, channels_last=channels_last, autocast_dtype=amp_dtype if amp else None
            )
            anchors = F.normalize(z, dim=1)
            if iaa_active:
                assert state.std is not None
                synth = synthesize(
                    z, y, state.std, lam=lam, copies=ia.copies, generator=noise,
                    class_mean=stats.mean if ia.mean == "fixed" else None,
                    reference_code=ia.reference_code,
                )  # fmt: skip
                loss = iaa_call(
                    loss_fn, anchors, y, F.normalize(synth.embeddings, dim=1), synth.labels, synth.source
                )
            else:
                loss = baseline_call(loss_fn, anchors, y)
            if not torch.isfinite(loss):
                last = state.epoch
                raise TrainingDivergedError(
                    f"loss is {float(loss.detach())} at epoch {epoch}, iteration {it + 1}; "
                    f"the last good checkpoint (epoch {last}) is kept in {checkpoint_dir}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach())
            count += 1
        scheduler.step()
        val_r1 = (
            _val_recall_at_1(model, val_src, device, channels_last)
            if epoch % settings.val_every == 0
            else float("nan")
        )
        row = {
            "epoch": epoch,
            "loss": total / max(count, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "lambda": lam if iaa_active else 0.0,
            "iaa_active": int(iaa_active),
            "estimated": int(estimated),
            "mean_std": float(state.std.mean()) if state.std is not None else float("nan"),
            "val_recall@1": val_r1,
            "seconds": time.perf_counter() - t0,
        }
        state.history.append(row)
        state.epoch = epoch
        log.info(
            "epoch %d/%d loss %.4f val R@1 %.4f%s (%.1fs)",
            epoch, settings.epochs, row["loss"], val_r1, " [IAA]" if iaa_active else "", row["seconds"],
        )  # fmt: skip
        _save_checkpoint(checkpoint_dir, model, optimizer, scheduler, scaler, stats, state, rngs, fingerprint)

    model.cpu()
    save_model(
        model_out,
        model,
        extra={
            "class_ids": class_ids,
            "loss": loss_name,
            "method": method,
            "seed": seed,
            "settings": to_dict(settings),
            "stats": {k: v.cpu() for k, v in stats.state_dict().items()},
        },
    )
    write_history(history_out, state.history)
    return state.history


def _global_estimation(
    model: EmbeddingModel,
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
    raw = embed_all(model, train_src, 512, device, channels_last).to(device)
    # n_k of SPEC 2.2 is the class's image count in this pass (the whole train set), not the
    # running count, which grows with every estimation.
    counts = stats.update(raw, labels.to(device))
    var = stats.var
    if correction:
        mean = stats.mean
        if ia.reference_code:  # SPEC 2.5 item 5: single-image classes keep mean 0
            mean = torch.where((counts <= 1)[:, None], torch.zeros_like(mean), mean)
        result = neighbor_correction(
            mean, var, counts, k=ia.k, beta=ia.beta, gamma=ia.gamma, tau=ia.tau,
            sigma_m=ia.sigma_m, sigma_cv=ia.sigma_cv, mode=ia.correction_mode,
            reference_code=ia.reference_code,
        )  # fmt: skip
        # SPEC 2.5 item 1: the released code computes the correction but samples with raw σ.
        if not ia.reference_code:
            var = result.var_corrected
    std = var.clamp_min(0).sqrt().float()
    log.info("global estimation: %d classes, mean σ %.4f", int((stats.count > 0).sum()), float(std.mean()))
    return std


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}
            )
