"""The model that is trained: an optional backbone (trunk) followed by the embedding head.

``finetune`` mode trains trunk and head on images (the paper's protocol); ``head`` mode
has no trunk and trains the head on backbone features extracted once (fast on CPU).
The model returns RAW embeddings: IAA's statistics and synthesis work on them, and the
losses and retrieval L2-normalise them.

The trunk takes its own input convention: feed it ``model.input_spec.convert(x)`` for a float
RGB [0, 1] batch ``x``. ``model.head`` is the embedding layer (the 10x learning rate of
SPEC 3). A checkpoint holds the trained weights, so loading one never looks up ImageNet
weights, whatever ``backbone_kwargs`` the model was first built with.

``head_init`` chooses how the head's Linear layer(s) start: ``"default"`` is torch's own
(Kaiming-uniform with a = sqrt(5): weights and bias uniform in +-1/sqrt(fan_in)), as the paper
says nothing more than "randomly initialised"; ``"kaiming_fan_out"`` is the authors' released
code (model/embedding.py, ``weights_init_kaiming``): Kaiming-normal, a = 0, fan-out mode
(std sqrt(2 / out_features)), bias 0 (SPEC 2.5 item 7). It is kept in ``config`` so a
checkpoint rebuilds the same module; checkpoints older than the option load with the default.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from iaa import safe_load
from iaa.atomic import atomic_path
from iaa.errors import IAAError
from iaa.io import require_file
from iaa.models.backbone import architecture_kwargs, build_backbone
from iaa.models.inputs import InputSpec, input_spec

# Embedding-layer initialisations: torch's default, or the released code's (SPEC 2.5 item 7).
HEAD_INITS = ("default", "kaiming_fan_out")


def _check_head_init(kind: str) -> None:
    if kind not in HEAD_INITS:
        raise IAAError(f"unknown head_init {kind!r}; known: {', '.join(HEAD_INITS)}")


def init_head(head: nn.Module, kind: str) -> None:
    """Initialise every Linear layer of ``head`` in place as ``kind`` (one of ``HEAD_INITS``) says.

    ``"default"`` leaves torch's init; ``"kaiming_fan_out"``: weight ~ N(0, 2 / out_features)
    (``kaiming_normal_``, a = 0, mode fan_out), bias 0, as the released code's model/embedding.py
    does to its embedding layer. Unknown ``kind``: IAAError (one line).
    """
    _check_head_init(kind)
    if kind == "default":
        return
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class EmbeddingModel(nn.Module):
    """Optional trunk + embedding head: (N, 3, H, W) trunk input, or (N, in_dim) features
    without a trunk -> (N, embedding_dim) raw float embeddings.

    ``head_hidden`` > 0 puts a hidden Linear + ReLU layer in the head; ``head_init`` is the
    head's initialisation (``HEAD_INITS``, see the module docstring).
    """

    def __init__(
        self,
        embedding_dim: int,
        in_dim: int | None = None,
        backbone: str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        head_hidden: int = 0,
        head_init: str = "default",
    ) -> None:
        super().__init__()
        _check_head_init(head_init)  # before the trunk: a typo fails before any weight lookup
        self.config = {
            "embedding_dim": embedding_dim,
            "in_dim": in_dim,
            "backbone": backbone,
            "backbone_kwargs": dict(backbone_kwargs or {}),
            "head_hidden": head_hidden,
            "head_init": head_init,
        }
        self.trunk: nn.Module | None = None
        if backbone is not None:
            self.trunk = build_backbone(backbone, **(backbone_kwargs or {}))
            in_dim = int(self.trunk.feature_dim)
        if in_dim is None:
            raise ValueError("in_dim is required without a backbone")
        if head_hidden > 0:
            self.head: nn.Module = nn.Sequential(
                nn.Linear(in_dim, head_hidden), nn.ReLU(inplace=True), nn.Linear(head_hidden, embedding_dim)
            )
        else:
            self.head = nn.Linear(in_dim, embedding_dim)
        init_head(self.head, head_init)

    @property
    def input_spec(self) -> InputSpec | None:
        """The trunk's input convention; None without a trunk (the input is features)."""
        return input_spec(self.trunk) if self.trunk is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.trunk is not None:
            x = self.trunk(x)
        return self.head(x)


def save_model(
    path: str | os.PathLike[str], model: EmbeddingModel, extra: dict[str, Any] | None = None
) -> None:
    """Write ``model`` (its ``config`` and state dict) and the ``extra`` keys to ``path``,
    as tensors and plain values only (:func:`iaa.safe_load.plain`): it loads with
    ``torch.load(weights_only=True)``."""
    payload = {"config": model.config, "state_dict": model.state_dict(), **(extra or {})}
    with atomic_path(path) as tmp:
        safe_load.save(payload, tmp)


def read_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict:
    """The top-level dict of a model checkpoint, read as data only (``weights_only=True``);
    an unreadable, unsafe or non-dict file is a one-line IAAError. ``mmap``: tensors stay on
    disk until touched (reading only the small metadata)."""
    try:
        payload = safe_load.load(path, "model checkpoint", map_location=map_location, mmap=mmap)
    except IAAError:
        raise
    except Exception as err:  # corrupt or foreign file: say which
        raise IAAError(f"cannot read model checkpoint {path}: {safe_load.first_line(err)}") from None
    if not isinstance(payload, dict):
        raise IAAError(f"{path} is not an iaa model checkpoint")
    return payload


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> EmbeddingModel:
    """The model saved by ``save_model``, rebuilt from its ``config`` (architecture only, no
    weight lookup) and loaded with its state dict. Keys a checkpoint predates (``head_init``,
    a backbone's ``pooling`` or ``transform_input``) take their defaults, which are what such
    a checkpoint was built with.

    The file is read with ``weights_only=True``: one holding anything but tensors and plain
    values (an older run's, or a foreign pickle) is refused with a one-line IAAError, its
    code never run."""
    p = require_file(path, "model checkpoint")
    payload = read_checkpoint(p, map_location=map_location)
    if "config" not in payload or "state_dict" not in payload:
        raise IAAError(f"{p} is not an iaa model checkpoint (no config/state_dict)")
    config = dict(payload["config"])
    if config.get("backbone") is not None:  # rebuild the architecture only: the weights follow
        config["backbone_kwargs"] = architecture_kwargs(config.get("backbone_kwargs") or {})
    model = EmbeddingModel(**config)
    model.load_state_dict(payload["state_dict"])
    model.config = payload["config"]  # as first built (provenance: which weights it started from)
    return model
