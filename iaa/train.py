"""Stage ``train``: one metric-learning run (loss x method x seed), resumable.

The loop reads top to bottom like the paper's Algorithm 1:

    for each epoch:
        if IAA and a global estimation is due: embed the whole train set, merge the class
            statistics (SPEC 2.1), apply the neighbor correction (SPEC 2.2)
        for each balanced batch:
            z = model(x)                                  raw embeddings
            if IAA is active: ẑ = z + sqrt(λ) σ_y ⊙ ε     M copies each (SPEC 2.3)
            loss(anchors = originals, candidates = originals + copies)   (SPEC 2.4)
        checkpoint (model, optimiser, scheduler, statistics, loss proxies, every RNG state)

        evaluate R@1 for the curves and the model-selection rule (iaa.selection)

A run killed at any point restarts from its last checkpoint and, because every random
number generator is restored with it, reaches the same result as an uninterrupted run.
Its data and model come from :mod:`iaa.run_inputs`, the estimation pass from
:mod:`iaa.estimation`, checkpoint resumption from :mod:`iaa.checkpoints`.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from iaa import checkpoints, preemption
from iaa.atomic import atomic_path
from iaa.config import TrainSettings, check_train_settings, to_dict
from iaa.data.images import contiguous_labels
from iaa.data.sampler import build_sampler
from iaa.data.sources import model_forward, place_model
from iaa.errors import IAAError, TrainingDivergedError
from iaa.estimation import global_estimation, is_estimation_epoch, use_correction
from iaa.losses import LOSSES, MiningTally, baseline_call, build_loss, iaa_call
from iaa.method import ClassStatistics, lambda_schedule, synthesize
from iaa.models.backbone import freeze_batchnorm
from iaa.models.embedder import save_model
from iaa.run_inputs import TrainInputs, build_sources, samples_per_class
from iaa.seeding import seed_everything
from iaa.selection import BestEpoch, recall_at_1
from iaa.train_setup import build_optimizer, compiled, precision

__all__ = ["TrainInputs", "is_estimation_epoch", "train_stage", "write_history"]

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
    "selection_recall@1",
    "seconds",
    "hard_positives",  # pairs the loss's mining kept per batch (Fig. 10; iaa.losses.base)
    "hard_negatives",
    "synthetic_share",  # share of those pairs whose candidate is synthetic
    "seconds_per_iteration",  # the batch loop only: no estimation pass, no evaluation (Fig. 11)
    "peak_memory_mb",  # CUDA: this epoch's peak allocated memory; CPU: the process's peak RSS
)


@dataclass
class RunState:
    """Everything a checkpoint restores besides model/optimiser/scheduler."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    std: torch.Tensor | None = None  # per-class σ used for synthesis, once estimated


def _loss_state(loss_fn: Any) -> dict[str, torch.Tensor]:
    """The loss's learnable state (proxies; empty for the pair losses)."""
    return loss_fn.state_dict() if isinstance(loss_fn, torch.nn.Module) else {}


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _loop_cost(device: torch.device, started: float) -> tuple[float, float]:
    """Seconds since ``started`` (the device's queued work included) and :func:`_peak_memory_mb`."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, _peak_memory_mb(device)


def _peak_memory_mb(device: torch.device) -> float:
    """CUDA: the peak memory allocated since :func:`_reset_peak_memory`, in MiB. CPU: the
    process's peak resident set size (``getrusage``; since the process started, it cannot be
    reset), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


# --------------------------------------------------------------------------- checkpoints


def _save_checkpoint(
    ckpt_dir: Path,
    model,
    optimizer,
    scheduler,
    scaler,
    stats,
    state: RunState,
    rngs,
    fingerprint,
    loss_fn=None,
) -> None:
    """Write this epoch's checkpoint: tensors and plain values only (``checkpoints.save_checkpoint``
    converts NumPy values), so it loads with ``torch.load(weights_only=True)``."""
    payload = {
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "stats": stats.state_dict(),
        "loss": _loss_state(loss_fn),
        "std": state.std,
        "history": state.history,
        "rng": {name: g.get_state() for name, g in rngs.items()},
        "torch_rng": torch.get_rng_state(),
    }
    checkpoints.save_checkpoint(ckpt_dir, payload, state.epoch)


def _resume(
    ckpt_dir: Path,
    model,
    optimizer,
    scheduler,
    scaler,
    stats,
    rngs: dict,
    fingerprint: str,
    seed: int,
    loss_fn=None,
) -> RunState:
    """Restore the newest checkpoint of this run (same settings and inputs), else start afresh."""
    payload = checkpoints.load_latest(ckpt_dir, fingerprint)
    if payload is None:
        return RunState()
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    stats.load_state_dict(payload["stats"])
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn.load_state_dict(payload.get("loss", {}))
    for i, (name, g) in enumerate(rngs.items()):
        checkpoints.restore_generator(
            g, payload["rng"][name], name, reseed=seed + 7919 * (payload["epoch"] + 1) + i
        )
    torch.set_rng_state(payload["torch_rng"])
    return RunState(epoch=payload["epoch"], history=payload["history"], std=payload["std"])


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
    selected_out: Path | None = None,
) -> list[dict[str, Any]]:
    """Train one run; write the final model, the selected epoch's model (``selected_out``,
    default ``selected.pt`` beside ``model_out``; see :mod:`iaa.selection`) and the history CSV."""
    if method not in METHODS:
        raise IAAError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    check_train_settings(settings, (method,))
    if loss_name not in LOSSES:  # before any data is read: a typo fails at once
        raise IAAError(f"unknown loss {loss_name!r}; expected one of {sorted(LOSSES)}")
    seed_everything(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    src, model = build_sources(inputs, settings)
    labels_np, class_ids = contiguous_labels(src.train.labels)
    labels = torch.from_numpy(labels_np)
    num_classes = len(class_ids)
    try:  # after the model: proxies drawn from the global generator change no other number
        loss_fn = build_loss(
            loss_name, num_classes=num_classes, embedding_dim=settings.embedding_dim,
            **getattr(settings.losses, loss_name, {}),
        )  # fmt: skip
    except (TypeError, ValueError) as err:
        raise IAAError(f"loss {loss_name}: {err}") from None
    lr = settings.lr_by_loss.get(loss_name, settings.lr)  # e.g. contrastive on CUB: 3e-5 (SPEC 3)
    amp, amp_dtype = precision(settings, device)
    channels_last = settings.channels_last and device.type == "cuda" and model.trunk is not None
    place_model(model, device, channels_last)
    forward = compiled(model, settings, device)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn.to(device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    optimizer = build_optimizer(model, settings, lr, loss_fn)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, settings.lr_milestones, settings.lr_gamma)
    stats = ClassStatistics(num_classes, settings.embedding_dim, momentum=settings.iaa.momentum).to(device)
    iterations = max(1, min(len(src.train) // settings.batch_size, settings.max_iterations_per_epoch))
    m = samples_per_class(settings, len(src.train))
    try:
        sampler = build_sampler(settings.sampler, labels_np, settings.batch_size, m, iterations, seed)
    except ValueError as err:
        raise IAAError(f"train split: {err}") from None
    noise = torch.Generator(device=device).manual_seed(seed + 1)
    rngs = {"sampler": sampler.generator, "noise": noise}
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    selected_out = selected_out or model_out.with_name("selected.pt")
    preemption.remove_stale_temporaries(checkpoint_dir, model_out, history_out, selected_out)
    fingerprint = checkpoints.run_fingerprint(settings, loss_name, method, seed, inputs.identity())
    state = _resume(
        checkpoint_dir, model, optimizer, scheduler, scaler, stats, rngs, fingerprint, seed, loss_fn
    )
    best = BestEpoch(checkpoint_dir / checkpoints.BEST, fingerprint) if settings.selection != "last" else None
    correction = use_correction(settings, num_classes)
    ia = settings.iaa
    copies = ia.copies_by_loss.get(loss_name, ia.copies)  # released: contrastive M=2 on SOP/In-Shop
    log.info(
        "run %s/%s seed %d (recipe %s): %d train images, %d classes, batch %d of %d per class (%s sampler), "
        "%d iterations/epoch, lr %g (embedding layer %g), M %d, correction %s, selection %s, "
        "device %s%s%s, from epoch %d",
        loss_name, method, seed, settings.recipe, len(src.train), num_classes, settings.batch_size, m,
        settings.sampler, iterations, lr, lr * settings.embedding_lr_multiplier, copies, correction,
        settings.selection, device,
        f", {amp_dtype} autocast" if amp else "", ", channels-last" if channels_last else "", state.epoch + 1,
    )  # fmt: skip

    for epoch in range(state.epoch + 1, settings.epochs + 1):
        t0 = time.perf_counter()
        _reset_peak_memory(device)
        estimated = method == "iaa" and is_estimation_epoch(epoch, ia.start_epoch, ia.update_every)
        if estimated:
            state.std = global_estimation(
                model, src.train, labels, stats, settings, correction, device, channels_last
            )
        iaa_active = method == "iaa" and state.std is not None and copies > 0
        lam = lambda_schedule(ia.lam, epoch, settings.epochs)
        model.train()
        if model.trunk is not None:
            freeze_batchnorm(model.trunk)
        total, count, mining, t_loop = 0.0, 0, MiningTally(), time.perf_counter()
        batches = src.train.train_batches(sampler)
        for it, (x, idx) in enumerate(
            tqdm(batches, total=iterations, desc=f"epoch {epoch}", leave=False, mininterval=5)
        ):
            y = labels[idx].to(device)
            # statistics, synthesis and the loss stay in float32 (model_forward's output)
            z = model_forward(
                forward, x, device, channels_last=channels_last, autocast_dtype=amp_dtype if amp else None
            )
            anchors = F.normalize(z, dim=1)
            if iaa_active:
                assert state.std is not None
                synth = synthesize(
                    z, y, state.std, lam=lam, copies=copies, generator=noise,
                    class_mean=stats.mean if ia.mean == "fixed" else None, sqrt_per_copy=ia.sqrt_per_copy,
                )  # fmt: skip
                loss = iaa_call(
                    loss_fn, anchors, y, F.normalize(synth.embeddings, dim=1), synth.labels, synth.source
                )
            else:
                loss = baseline_call(loss_fn, anchors, y)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"loss is {float(loss.detach())} at epoch {epoch}, iteration {it + 1}; "
                    f"the last good checkpoint (epoch {state.epoch}) is kept in {checkpoint_dir}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach())
            count += 1
            mining.add(getattr(loss_fn, "last_mining", None))
        loop_seconds, peak_mb = _loop_cost(device, t_loop)
        lr_used = optimizer.param_groups[0]["lr"]  # this epoch's rate, before the scheduler steps
        scheduler.step()
        train_seconds = time.perf_counter() - t0
        monitored = epoch % settings.val_every == 0 or settings.selection == "best_test"
        val_r1 = (
            recall_at_1(model, src.monitor, device, channels_last) if monitored and src.monitor else math.nan
        )
        sel_r1 = val_r1 if settings.selection == "best_test" else math.nan
        if settings.selection == "best_val" and src.select is not None:
            sel_r1 = recall_at_1(model, src.select, device, channels_last)
        if best is not None:
            best.update(epoch, sel_r1, model)
        row = {
            "epoch": epoch, "loss": total / max(count, 1), "lr": lr_used,
            "lambda": lam if iaa_active else 0.0, "iaa_active": int(iaa_active), "estimated": int(estimated),
            "mean_std": float(state.std.mean()) if state.std is not None else math.nan,
            "val_recall@1": val_r1, "selection_recall@1": sel_r1, "seconds": time.perf_counter() - t0,
            **mining.columns(), "seconds_per_iteration": loop_seconds / max(count, 1),
            "peak_memory_mb": peak_mb,
        }  # fmt: skip
        state.history.append(row)
        state.epoch = epoch
        log.info(
            "epoch %d/%d loss %.4f val R@1 %.4f selection R@1 %.4f%s (%.1fs, of which evaluation %.1fs)",
            epoch, settings.epochs, row["loss"], val_r1, sel_r1, " [IAA]" if iaa_active else "",
            row["seconds"], row["seconds"] - train_seconds,
        )  # fmt: skip
        _save_checkpoint(
            checkpoint_dir, model, optimizer, scheduler, scaler, stats, state, rngs, fingerprint, loss_fn
        )

    _write_models(
        model, best, state, settings, model_out, selected_out, class_ids, loss_name, method, seed, stats
    )
    write_history(history_out, state.history)
    return state.history


def _write_models(
    model, best, state, settings, model_out, selected_out, class_ids, loss_name, method, seed, stats
) -> None:
    """model.pt (the final epoch) and selected.pt (the epoch the selection rule picked; the
    final one under ``last`` or when no epoch could be evaluated), each saying which it is.
    Extras are plain values (``class_ids`` a list): the files load with ``weights_only=True``."""
    model.cpu()
    extra = {
        "class_ids": class_ids.tolist(), "loss": loss_name, "method": method, "seed": seed,
        "settings": to_dict(settings), "stats": {k: v.cpu() for k, v in stats.state_dict().items()},
        "recipe": settings.recipe, "selection": settings.selection,
    }  # fmt: skip
    final_r1 = state.history[-1]["selection_recall@1"] if state.history else math.nan
    save_model(model_out, model, extra={**extra, "epoch": state.epoch, "selection_recall@1": final_r1})
    best_state = best.state_dict() if best is not None else None
    if best is None or best_state is None:
        if best is not None:
            log.warning("no epoch had a finite selection R@1: selected.pt is the final model")
        save_model(selected_out, model, extra={**extra, "epoch": state.epoch, "selection_recall@1": final_r1})
        return
    selected = copy.deepcopy(model)
    selected.load_state_dict(best_state)
    save_model(selected_out, selected, extra={**extra, "epoch": best.epoch, "selection_recall@1": best.value})
    log.info(
        "selected epoch %d (%s, R@1 %.4f); final epoch %d",
        best.epoch,
        settings.selection,
        best.value,
        state.epoch,
    )


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS, restval="")
        writer.writeheader()
        for row in history:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}
            )
