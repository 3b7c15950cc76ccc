"""Backbones: ``build_backbone`` is the one entry point; each module returns pooled features
(``feature_dim`` wide) and declares its input convention (``input_spec``, see inputs.py).

- ``googlenet`` (1024-d), ``bn_inception`` (1024-d), ``resnet50`` (2048-d): the paper's
  backbones, ImageNet classifier removed; ``pretrained`` loads the SPEC 3 ImageNet weights
  (weights.py), ``pretrained=False`` gives random init (tests, CPU smoke runs).
- ``synth``: a small CNN that trains in seconds on two CPU cores; its weights come from
  the ``pretrain`` stage, not ImageNet.

Released-code options (SPEC 2.5 item 8), each an architecture keyword of its own:
``pooling`` ("avg" or "max_avg") for bn_inception and resnet50, ``transform_input`` for
googlenet; ``backbone_options`` picks the ones that apply to an architecture.

The synth backbone is four conv-BN-ReLU stages (width, 2w, 4w, 8w channels) with max
pooling between them and global average pooling at the end: at 32 px it is ~4 M
multiply-adds per image for width 16, so a CPU core pushes thousands of images a second,
yet BatchNorm is there to be frozen exactly as the paper's protocol freezes it.

The ImageNet architectures are imported on first use (:func:`_lazy`): googlenet and resnet50
subclass torchvision's models, and importing torchvision costs ~1.5 s in every ``iaa``
process, which synth's stages (the majority of the built-in DAG's jobs) never need.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iaa.errors import IAAError
from iaa.models.inputs import IMAGENET_RGB
from iaa.models.pooling import POOLINGS
from iaa.models.weights import WEIGHTS, load_pretrained, locate_weights


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SynthConvNet(nn.Module):
    """Backbone for the built-in benchmark; ``feature_dim`` = 8 * width. ImageNet-standardised
    RGB input, as the data pipeline has always fed it."""

    input_spec = IMAGENET_RGB

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _stage(3, w),
            nn.MaxPool2d(2),
            _stage(w, 2 * w),
            nn.MaxPool2d(2),
            _stage(2 * w, 4 * w),
            nn.MaxPool2d(2),
            _stage(4 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = 8 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _lazy(module: str, cls: str) -> Callable[..., nn.Module]:
    """A constructor of ``module.cls`` that imports ``module`` when first called (then
    Python's module cache makes it free), so the registry itself imports nothing heavy."""

    def build(**kwargs: Any) -> nn.Module:
        return getattr(importlib.import_module(module), cls)(**kwargs)

    build.__name__ = build.__qualname__ = cls
    build.__doc__ = f"Build :class:`{module}.{cls}` (imported on first use)."
    return build


# Name -> constructor (keyword arguments only). The ImageNet trunks are lazy (module docstring).
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "synth": SynthConvNet,
    "googlenet": _lazy("iaa.models.googlenet", "GoogLeNetTrunk"),
    "bn_inception": _lazy("iaa.models.bn_inception", "BNInception"),
    "resnet50": _lazy("iaa.models.resnet", "ResNet50Trunk"),
}

# Keyword arguments of build_backbone that choose the initial weights, not the architecture.
WEIGHT_ARGS = ("pretrained", "weights", "allow_download")


def build_backbone(
    name: str,
    *,
    pretrained: bool | None = None,
    weights: str | Path | None = None,
    allow_download: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a backbone by name; it exposes ``feature_dim`` and ``input_spec``.

    ``pretrained``: load the ImageNet weights (default: yes for the backbones that have
    them, i.e. all but synth). ``weights``: the weights file, or a folder holding it (default:
    the torch hub cache); ``allow_download``: fetch a missing file into the hub cache.
    The file is looked up before the network is built, so a missing one fails fast.
    Other keyword arguments go to the backbone's constructor.
    """
    if name not in BACKBONES:
        raise IAAError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    if pretrained is None:
        pretrained = name in WEIGHTS
    if pretrained and name not in WEIGHTS:
        raise IAAError(f"backbone {name!r} has no ImageNet weights: set pretrained to false")
    path = locate_weights(name, weights, allow_download) if pretrained else None
    try:
        module = BACKBONES[name](**kwargs)
    except TypeError as err:
        raise IAAError(f"backbone {name!r}: {err}") from None
    if path is not None:
        load_pretrained(module, name, path)
    return module


def backbone_options(arch: str, *, pooling: str, googlenet_transform_input: bool) -> dict[str, Any]:
    """The constructor keywords among the released-code options that apply to ``arch``, for
    the trainer to merge into its backbone kwargs without knowing each architecture.

    - ``pooling`` ("avg" or "max_avg", see pooling.py) -> ``{"pooling": ...}`` for
      bn_inception and resnet50, whose released versions end in max + average pooling;
    - ``googlenet_transform_input`` -> ``{"transform_input": ...}`` for googlenet;
    - synth: ``{}``.
    An option that does not apply is ignored, so one recipe (e.g. the released code's) serves
    every architecture: the released GoogLeNet keeps average pooling (model/backbone/googlenet.py)
    and the others have no input rescaling to switch. ``pooling`` is still checked for every
    arch, so a misspelt value fails whatever the arch. Source: SPEC 2.5 item 8; the released
    code's model/backbone/{bninception,resnet,googlenet}.py. Unknown ``arch`` or ``pooling``,
    or a non-bool ``googlenet_transform_input``: IAAError (one line).
    """
    if arch not in BACKBONES:
        raise IAAError(f"unknown backbone {arch!r}; known: {', '.join(BACKBONES)}")
    if pooling not in POOLINGS:
        raise IAAError(f"unknown pooling {pooling!r}; known: {', '.join(POOLINGS)}")
    if not isinstance(googlenet_transform_input, bool):  # bool("false") would be True
        raise IAAError(f"googlenet_transform_input must be true or false, got {googlenet_transform_input!r}")
    if arch in ("bn_inception", "resnet50"):
        return {"pooling": pooling}
    if arch == "googlenet":
        return {"transform_input": googlenet_transform_input}
    return {}


def architecture_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of build_backbone that rebuild the same architecture WITHOUT looking up any
    weights: for loading a checkpoint, whose state dict already holds the trained weights."""
    out = {k: v for k, v in kwargs.items() if k not in WEIGHT_ARGS}
    out["pretrained"] = False
    return out


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics frozen), per SPEC 3."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def save_backbone(path: str, backbone: nn.Module, name: str, kwargs: dict[str, Any], **extra: Any) -> None:
    from iaa import safe_load
    from iaa.atomic import atomic_path

    payload = {"backbone": name, "backbone_kwargs": kwargs, "state_dict": backbone.state_dict(), **extra}
    with atomic_path(path) as tmp:
        safe_load.save(payload, tmp)  # tensors and plain values: loads with weights_only=True


def load_backbone(path: str) -> tuple[nn.Module, str, dict[str, Any]]:
    """Load a backbone written by ``pretrain``: returns (module, name, kwargs that rebuild it
    without weight lookup, see ``architecture_kwargs``)."""
    from iaa import safe_load
    from iaa.io import require_file

    p = require_file(path, "backbone checkpoint")
    try:
        payload = safe_load.load(p, "backbone checkpoint")
        kwargs = architecture_kwargs(payload["backbone_kwargs"])
        backbone = build_backbone(payload["backbone"], **kwargs)
        backbone.load_state_dict(payload["state_dict"])
    except IAAError:
        raise
    except Exception as err:  # truncated file, foreign checkpoint, mismatched shapes
        raise IAAError(f"cannot load backbone checkpoint {p}: {err}") from None
    return backbone, payload["backbone"], kwargs
