"""ImageNet weights of the paper's backbones (SPEC 3): find the file, check it, fit it to the trunk.

Lookup order: an explicit path (``weights``: the file, or a folder holding it), else the torch
hub cache ``torch.hub.get_dir()/checkpoints/<file>`` (``$TORCH_HOME/hub/checkpoints``), else a
download into that cache when ``allow_download`` is on. A file under the registered name is
verified: the hex digits in that name are the prefix of its SHA-256 (torchvision's convention).
A file given by path under any other name is the user's own (another ImageNet training, a
conversion): it has no published checksum, so it is loaded unverified, with one warning, and
only its tensor names and shapes are checked. The trunk has no classifier, so the file's
classifier keys are dropped before a strict load.

``WEIGHTS`` is the registry; tests (or users with a different copy) replace an entry.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from iaa.errors import IAAError

log = logging.getLogger(__name__)

_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


@dataclass(frozen=True)
class WeightsFile:
    """A published weights file: its name (``<stem>-<sha256 prefix>.<ext>``), its URL, and the
    key prefixes of the heads the trunk does not have."""

    file: str
    url: str
    drop: tuple[str, ...] = ()

    @property
    def sha256_prefix(self) -> str:
        m = _HASH_IN_NAME.search(self.file)
        if m is None:
            raise ValueError(f"weights file name {self.file!r} carries no hash prefix")
        return m.group(1)


WEIGHTS: dict[str, WeightsFile] = {
    "googlenet": WeightsFile(
        "googlenet-1378be20.pth",
        "https://download.pytorch.org/models/googlenet-1378be20.pth",
        drop=("fc.", "aux1.", "aux2."),
    ),
    "bn_inception": WeightsFile(
        "bn_inception-52deb4733.pth",
        "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth",
        drop=("last_linear.",),
    ),
    "resnet50": WeightsFile(
        "resnet50-0676ba61.pth",
        "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        drop=("fc.",),
    ),
}


def _one_line(err: object) -> str:
    return " ".join(str(err).split())


def _entry(name: str) -> WeightsFile:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise IAAError(f"backbone {name!r} has no ImageNet weights; known: {', '.join(WEIGHTS)}") from None


def cache_dir() -> Path:
    """Where downloaded weights live: ``$TORCH_HOME/hub/checkpoints`` (torch's default otherwise)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def locate_weights(name: str, weights: str | Path | None = None, allow_download: bool = True) -> Path:
    """The weights file of backbone ``name``: at ``weights``, in the hub cache, or downloaded there."""
    entry = _entry(name)
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            path = path / entry.file
        if not path.is_file():
            expected = f"expected {entry.file}, from {entry.url}"
            raise IAAError(f"ImageNet weights for {name} not found: no file {path} ({expected})")
        return path
    path = cache_dir() / entry.file
    if path.is_file():
        return path
    where = f"{entry.file} is not in {path.parent}"
    todo = f"get it from {entry.url} into that folder, or set weights to its path"
    if not allow_download:
        raise IAAError(f"ImageNet weights for {name} not found: {where} and downloads are off; {todo}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(entry.url, str(path), hash_prefix=entry.sha256_prefix, progress=False)
    except (OSError, RuntimeError, ValueError) as err:  # no network, HTTP error, bad hash
        failed = f"the download failed ({_one_line(err)})"
        raise IAAError(f"ImageNet weights for {name} not found: {where} and {failed}; {todo}") from None
    return path


def verify_checksum(path: str | Path, entry: WeightsFile) -> None:
    """The file's SHA-256 must start with the hex digits of the registered file name."""
    expected = entry.sha256_prefix
    actual = sha256_of(path)[: len(expected)]
    if actual != expected:
        raise IAAError(
            f"checksum mismatch for {entry.file} at {path}: SHA-256 starts {actual}, expected {expected}"
            f" (get it again from {entry.url})"
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a checksum-verified file (tensors only)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Legacy pickles (the 2017 Caffe conversion) may use globals outside the weights-only
        # allowlist; the checksum already proved this is the published file.
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise IAAError(f"cannot read weights file {path}: {_one_line(err)}") from None
    except Exception as err:
        raise IAAError(f"cannot read weights file {path}: {_one_line(err)}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise IAAError(f"weights file {path} holds no state dict of tensors")
    return dict(obj)


def fit_state_dict(
    module: nn.Module, state: Mapping[str, torch.Tensor], entry: WeightsFile, source: str
) -> dict[str, torch.Tensor]:
    """``state`` without the dropped heads, checked key by key and shape by shape against ``module``.

    Two conversions the published files need: the Caffe-converted BatchNorm tensors have
    shape (1, C) instead of (C,), and files older than PyTorch 0.4 lack ``num_batches_tracked``.
    """
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(entry.drop)}
    out: dict[str, torch.Tensor] = {}
    missing, misfit = [], []
    for key, target in own.items():
        value = state.get(key)
        if value is None:
            if key.endswith("num_batches_tracked"):
                out[key] = torch.zeros_like(target)
            else:
                missing.append(key)
            continue
        if value.shape != target.shape:
            if value.shape == (1, *target.shape):
                value = value.reshape(target.shape)
            else:
                misfit.append(f"{key} {tuple(value.shape)} vs {tuple(target.shape)}")
                continue
        out[key] = value
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or misfit:
        problems = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", misfit))
        parts = [f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in problems if keys]
        raise IAAError(f"weights file {source} does not fit {type(module).__name__}: {'; '.join(parts)}")
    return out


def load_pretrained(module: nn.Module, name: str, path: str | Path) -> None:
    """Load weights file ``path`` into ``module`` (backbone ``name``'s trunk).

    A file named as the registered one is verified against its checksum; a file of another
    name is the user's own and is loaded with a warning (names and shapes still checked).
    Raises IAAError (one line) on a checksum mismatch, an unreadable file or a misfit.
    """
    entry = _entry(name)
    if Path(path).name == entry.file:
        verify_checksum(path, entry)
    else:
        log.warning(
            "weights file %s is not the published %s: loading it unverified (no checksum; "
            "tensor names and shapes are checked)", path, entry.file,
        )  # fmt: skip
    state = fit_state_dict(module, read_state_dict(path), entry, str(path))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        msg = f"weights file {path} does not fit {type(module).__name__}: {_one_line(err)}"
        raise IAAError(msg) from None
