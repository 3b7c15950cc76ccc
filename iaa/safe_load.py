"""Checkpoints as data, never code: what the pipeline writes with ``torch.save`` and reads back.

Every checkpoint iaa writes (models, training checkpoints, the best-epoch weights, the synth
backbone) holds tensors and plain values only (dict, list, tuple, str, int, float, bool, None),
so that ``torch.load(path, weights_only=True)`` reads it: opening a ``model.pt`` someone shared
cannot run code. :func:`plain` turns what a payload may pick up on the way (NumPy arrays and
scalars, ``Path`` objects, dataclasses) into such values before saving; :func:`load` is the one
reader, and refuses a file that needs the unsafe path (an older run's, or a foreign one) with a
one-line IAAError that says how to re-export it.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from collections import Counter, OrderedDict
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np
import torch

from iaa.errors import IAAError

REEXPORT = (
    "retrain it, or, only if you trust the file, load it yourself with "
    "torch.load(path, weights_only=False) and torch.save a plain copy "
    "(tensors, dicts, lists, str, int, float, bool, None)"
)

_PRIMITIVES = (str, int, float, bool, bytes, type(None), torch.Tensor, torch.Size, torch.dtype, torch.device)


def plain(value: Any) -> Any:
    """``value`` with every non-plain leaf converted for ``weights_only=True`` loading: NumPy
    arrays -> lists, NumPy scalars -> Python numbers, paths -> str, dataclasses -> dicts.
    Mappings keep their type (OrderedDict, Counter of a scheduler); anything else that
    ``torch.load(weights_only=True)`` would refuse raises TypeError (a bug: fix the writer)."""
    if isinstance(value, np.generic):  # before the primitives: np.float64 is a float subclass
        return value.item()
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        items = {plain(k): plain(v) for k, v in value.items()}
        return type(value)(items) if type(value) in (OrderedDict, Counter) else items
    if type(value) in (list, tuple, set):
        return type(value)(plain(v) for v in value)
    raise TypeError(f"cannot save a {type(value).__qualname__} in a checkpoint: not a tensor or plain value")


def save(payload: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """``torch.save`` of ``plain(payload)`` (write it under :func:`iaa.atomic.atomic_path`)."""
    torch.save(plain(payload), path)


def _refused(err: BaseException) -> str | None:
    """The class or function the weights-only unpickler refused (``pathlib.PosixPath``), or
    None when ``err`` is another failure (a truncated or corrupt file)."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    return found.group(1) if found else None


def _reason(err: BaseException) -> str:
    """The one line of torch's weights-only message that says what failed."""
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", str(err))
    return found.group(1).strip() if found else first_line(err)


def first_line(err: BaseException) -> str:
    """``err`` as one line (its type when it has no message)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def load(
    path: str | os.PathLike[str],
    what: str,
    *,
    map_location: str | torch.device = "cpu",
    mmap: bool = False,
) -> Any:
    """``torch.load(path, weights_only=True)``. A file that needs more (pickled classes: an
    older iaa checkpoint, or not iaa's) raises a one-line IAAError naming ``what`` and how to
    re-export it; no code in it ever runs. Other failures (a truncated file) propagate, an
    unpickling one as a one-line ``pickle.UnpicklingError``."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        refused = _refused(err)
        if refused is None:  # not a pickled class: a corrupt file; the caller names it
            raise pickle.UnpicklingError(_reason(err)) from None
        raise IAAError(
            f"{what} {path} holds {refused}, not only tensors and plain values (an older iaa "
            f"checkpoint, or not iaa's); it is not loaded, as that could run code: {REEXPORT}"
        ) from None
