"""BN-Inception (Inception-v2 with BatchNorm, Ioffe & Szegedy 2015), as used in metric learning.

Layer and parameter names follow the Caffe model converted to PyTorch in Cadene's
pretrained-models (``bn_inception-52deb4733.pth``): ``conv1_7x7_s2``, ``conv1_7x7_s2_bn``,
``inception_3a_1x1``, ``inception_3a_1x1_bn``, ..., ``last_linear``; every convolution has a
bias and is followed by an affine BatchNorm (eps 1e-5) and a ReLU. Inputs follow the Caffe
convention (BGR, 0-255, mean [104, 117, 128]). At 224 px the last block is 7x7x1024 and the
global pool gives the 1024-d feature: average pooling (the paper), or with ``pooling="max_avg"``
max + average pooling summed, as the authors' released code does (model/backbone/bninception.py,
SPEC 2.5 item 8; pooling.py). The pool has no parameters, so the converted file loads either way.

The network is built from ``BLOCKS``, one row per Inception block; modules are registered
flat on the top-level module under their Caffe names so the converted file loads as is.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from iaa.models.inputs import CAFFE_BGR
from iaa.models.pooling import global_pool


class Block(NamedTuple):
    """One Inception block: output widths of its branches (0: branch absent).

    Branches, concatenated in this order: 1x1; 3x3 (1x1 reduce, 3x3); double 3x3 (1x1 reduce,
    3x3, 3x3); pool (``avg`` or ``max``, then a 1x1 projection unless ``proj`` is 0). A block
    with ``stride`` 2 downsamples in the last 3x3 of both 3x3 branches and in its pool.
    """

    name: str
    c1x1: int
    c3x3_reduce: int
    c3x3: int
    double_reduce: int
    double: int
    pool: str
    proj: int
    stride: int = 1


BLOCKS = (
    Block("3a", 64, 64, 64, 64, 96, "avg", 32),
    Block("3b", 64, 64, 96, 64, 96, "avg", 64),
    Block("3c", 0, 128, 160, 64, 96, "max", 0, stride=2),
    Block("4a", 224, 64, 96, 96, 128, "avg", 128),
    Block("4b", 192, 96, 128, 96, 128, "avg", 128),
    Block("4c", 160, 128, 160, 128, 160, "avg", 128),
    Block("4d", 96, 128, 192, 160, 192, "avg", 128),
    Block("4e", 0, 128, 192, 192, 256, "max", 0, stride=2),
    Block("5a", 352, 192, 320, 160, 224, "avg", 128),
    Block("5b", 352, 192, 320, 192, 224, "max", 128),
)

# The stem: (conv name, out channels, kernel, stride, name of the 3x3/2 max pool after it or "").
STEM = (
    ("conv1_7x7_s2", 64, 7, 2, "pool1_3x3_s2"),
    ("conv2_3x3_reduce", 64, 1, 1, ""),
    ("conv2_3x3", 192, 3, 1, "pool2_3x3_s2"),
)


def _pool(kind: str, stride: int) -> nn.Module:
    if stride == 2:  # Caffe's downsampling pools round up
        return nn.MaxPool2d(3, stride=2, ceil_mode=True)
    if kind == "avg":
        return nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
    return nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)


class BNInception(nn.Module):
    """BN-Inception trunk: (N, 3, H, W) Caffe-convention input -> (N, 1024) pooled features.

    ``num_classes`` adds the ImageNet classifier ``last_linear`` (the converted file's full
    key set; forward then returns logits); the backbone used for embeddings has none.
    ``pooling``: the global pool over the last 1024-channel map, ``"avg"`` or ``"max_avg"``
    (see pooling.py); an unknown name is an IAAError.
    """

    feature_dim = 1024
    input_spec = CAFFE_BGR

    def __init__(self, num_classes: int | None = None, pooling: str = "avg") -> None:
        super().__init__()
        final_pool = global_pool(pooling)  # first: a bad name fails before the network is built
        self._stem: list[tuple[str, str | None]] = []
        cin = 3
        for name, cout, k, stride, pool in STEM:
            self._unit(name, cin, cout, k, stride)
            if pool:
                self.add_module(pool, nn.MaxPool2d(3, stride=2, ceil_mode=True))
            self._stem.append((name, pool or None))
            cin = cout
        # Per block: its branches, each (pool module name or None, conv unit names in order).
        self._blocks: list[list[tuple[str | None, list[str]]]] = []
        for b in BLOCKS:
            p = f"inception_{b.name}_"
            branches: list[tuple[str | None, list[str]]] = []
            if b.c1x1:
                branches.append((None, [self._unit(p + "1x1", cin, b.c1x1, 1)]))
            reduce3 = self._unit(p + "3x3_reduce", cin, b.c3x3_reduce, 1)
            branches.append((None, [reduce3, self._unit(p + "3x3", b.c3x3_reduce, b.c3x3, 3, b.stride)]))
            double = [
                self._unit(p + "double_3x3_reduce", cin, b.double_reduce, 1),
                self._unit(p + "double_3x3_1", b.double_reduce, b.double, 3),
                self._unit(p + "double_3x3_2", b.double, b.double, 3, b.stride),
            ]
            branches.append((None, double))
            self.add_module(p + "pool", _pool(b.pool, b.stride))
            branches.append((p + "pool", [self._unit(p + "pool_proj", cin, b.proj, 1)] if b.proj else []))
            self._blocks.append(branches)
            cin = b.c1x1 + b.c3x3 + b.double + (b.proj or cin)
        assert cin == self.feature_dim
        self.global_pool = final_pool
        self.last_linear = nn.Linear(cin, num_classes) if num_classes else None

    def _unit(self, name: str, cin: int, cout: int, kernel: int, stride: int = 1) -> str:
        """Register conv ``name`` (with bias) and its BatchNorm ``name_bn``; returns ``name``."""
        self.add_module(name, nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2))
        self.add_module(name + "_bn", nn.BatchNorm2d(cout, eps=1e-5, affine=True))
        return name

    def _run(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self._modules[name + "_bn"](self._modules[name](x)), inplace=True)  # type: ignore[misc]

    def _branch(self, x: torch.Tensor, pool: str | None, units: list[str]) -> torch.Tensor:
        if pool is not None:
            x = self._modules[pool](x)  # type: ignore[misc]
        for name in units:
            x = self._run(name, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, pool in self._stem:
            x = self._run(name, x)
            if pool is not None:
                x = self._modules[pool](x)  # type: ignore[misc]
        for branches in self._blocks:
            x = torch.cat([self._branch(x, pool, units) for pool, units in branches], 1)
        x = torch.flatten(self.global_pool(x), 1)
        return self.last_linear(x) if self.last_linear is not None else x
