"""Training checkpoints: what a run saves each epoch, and when a saved one may be resumed.

A checkpoint may be resumed only by the run that wrote it: same settings, loss, method and
seed, AND the same inputs. The fingerprint therefore covers the identity of every input file
(size and content hash of the features, manifest and backbone checkpoint; the ImageNet
architecture and weights location): after ``extract.resize`` changes, for example, Snakemake
reruns ``train`` because its features changed, and the finished run's checkpoints must not
be taken for this one's (they would write the old weights again, and nothing would say so).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from iaa import preemption, safe_load
from iaa.atomic import atomic_path
from iaa.config import TrainSettings, to_dict
from iaa.errors import IAAError

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
BEST = "best.pt"  # the selected epoch's weights (model selection), beside the epoch checkpoints
# Execution settings: they change how a run is computed, not what (the method, the data, the
# schedule). Resuming across a change of them is safe. They do change the random streams
# (which worker draws which crop; crops on the device or in workers), so a run is reproducible
# bit for bit only with the same values: the differences are within seed noise.
EXECUTION_KEYS = ("workers", "loader", "compile")


def file_identity(path: str | Path) -> str:
    """``<size>:<blake2b-128 of the content>`` of a file (the content, not the modification
    time, so a results folder copied to another node still resumes)."""
    p = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    with p.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return f"{p.stat().st_size}:{digest.hexdigest()}"


def sizes_identity(paths: list[Path]) -> str:
    """``<count>:<blake2b-128 of the paths' byte sizes>``: a cheap identity of many files (a
    stat each; SOP's 120k images in about a second) that survives copying them elsewhere.
    A missing file counts as size -1 (training then names it)."""
    digest = hashlib.blake2b(digest_size=16)
    for p in paths:
        try:
            size = p.stat().st_size
        except OSError:
            size = -1
        digest.update(f"{size};".encode())
    return f"{len(paths)}:{digest.hexdigest()}"


def run_fingerprint(
    settings: TrainSettings, loss_name: str, method: str, seed: int, inputs: Mapping[str, Any] | None = None
) -> str:
    """What a checkpoint must have been trained with to be resumed: the settings (all but the
    execution-only keys), loss, method, seed and ``inputs`` (name -> identity string)."""
    config = {k: v for k, v in to_dict(settings).items() if k not in EXECUTION_KEYS}
    payload = {
        "settings": config,
        "loss": loss_name,
        "method": method,
        "seed": seed,
        "inputs": dict(inputs or {}),
    }
    return json.dumps(payload, sort_keys=True)


def checkpoint_path(ckpt_dir: Path, epoch: int) -> Path:
    return ckpt_dir / f"epoch_{epoch:03d}.pt"


def save_checkpoint(ckpt_dir: Path, payload: dict[str, Any], epoch: int) -> None:
    """Write ``epoch_<N>.pt`` atomically and keep only the newest KEEP_CHECKPOINTS."""
    with atomic_path(checkpoint_path(ckpt_dir, epoch)) as tmp:
        safe_load.save(payload, tmp)  # tensors and plain values: loads with weights_only=True
    for old in preemption.list_checkpoints(ckpt_dir)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)


def clear(ckpt_dir: Path) -> None:
    """Delete every checkpoint of the folder, the best-epoch one included."""
    for old in preemption.list_checkpoints(ckpt_dir):
        old.unlink(missing_ok=True)
    (ckpt_dir / BEST).unlink(missing_ok=True)


def load_latest(ckpt_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The newest readable checkpoint written with ``fingerprint``, or None.

    A corrupt newest one falls back to the one before. Checkpoints written with another
    fingerprint (other settings or inputs: Snakemake reran the job) are deleted with a warning,
    the best-epoch one with them, and None is returned: the run starts from scratch. One that
    holds more than tensors and plain values (``weights_only=True`` refuses it) raises IAAError.
    """
    for path in reversed(preemption.list_checkpoints(ckpt_dir)):
        try:
            payload = safe_load.load(path, "training checkpoint")
        except IAAError as err:  # pickled classes (an older iaa's): never loaded
            raise IAAError(f"{err}; or delete {ckpt_dir} to train this run from scratch") from None
        except Exception as err:  # a checkpoint cut short by a crash outside atomic_path
            log.warning("skipping unreadable checkpoint %s: %s", path, err)
            continue
        if payload.get("fingerprint") != fingerprint:
            log.warning("%s was trained with other settings or inputs: starting this run from scratch", path)
            clear(ckpt_dir)
            return None
        log.info("resumed from %s (epoch %d)", path, payload["epoch"])
        return payload
    (ckpt_dir / BEST).unlink(missing_ok=True)  # a best epoch without its run is stale
    return None


def restore_generator(generator: torch.Generator, state: torch.Tensor, name: str, reseed: int) -> bool:
    """Restore ``generator`` from a saved state; True on success.

    A state saved on another device type (a run checkpointed on a GPU and requeued on a
    CPU-only node: a CUDA generator's state is 16 bytes, a CPU one's 5,056) cannot be loaded:
    the generator is then re-seeded with ``reseed`` and a warning says the run is no longer
    bit-identical to an uninterrupted one. Returns False in that case.
    """
    try:
        generator.set_state(state)
        return True
    except (RuntimeError, ValueError) as err:
        generator.manual_seed(reseed)
        log.warning(
            "the %s generator's saved state does not fit this %s generator (saved on another "
            "device type?): re-seeded with %d; the run goes on but is not bit-identical to an "
            "uninterrupted one (%s)",
            name, generator.device.type, reseed, str(err).splitlines()[0],
        )  # fmt: skip
        return False
