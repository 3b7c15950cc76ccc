"""Names of training runs, shared by the workflow, the stages and the report.

A run is ``<loss>-<method>-seed<seed>`` (e.g. ``ms-iaa-seed0``); the pretrained-backbone
features are the run ``pretrained``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOSS_TITLES = {
    "contrastive": "Contrastive",
    "triplet": "Triplet",
    "ms": "MS",
    # Table X's losses (pytorch-metric-learning)
    "distance_weighted": "Triplet (distance-weighted)",
    "margin": "Margin",
    "circle": "Circle",
    "norm_softmax": "Norm-softmax",
    "proxy_nca": "Proxy-NCA",
    "soft_triple": "SoftTriple",
}
PRETRAINED = "pretrained"
_RUN = re.compile(r"^(?P<loss>[a-z_]+)-(?P<method>baseline|iaa)-seed(?P<seed>\d+)$")


@dataclass(frozen=True)
class Run:
    loss: str | None  # None for the pretrained features
    method: str | None
    seed: int | None

    @property
    def name(self) -> str:
        if self.loss is None:
            return PRETRAINED
        return run_name(self.loss, self.method or "baseline", self.seed or 0)

    @property
    def row(self) -> str:
        """The results-table row this run belongs to (seeds are pooled)."""
        if self.loss is None:
            return "Pretrained"
        title = LOSS_TITLES.get(self.loss, self.loss)
        return f"{title}+IAA" if self.method == "iaa" else title


def run_name(loss: str, method: str, seed: int) -> str:
    return f"{loss}-{method}-seed{seed}"


def parse_run(name: str) -> Run:
    if name == PRETRAINED:
        return Run(None, None, None)
    m = _RUN.match(name)
    if m is None:
        raise ValueError(f"not a run name: {name!r} (expected <loss>-<method>-seed<N> or pretrained)")
    return Run(m["loss"], m["method"], int(m["seed"]))


def table_rows(losses: list[str]) -> list[str]:
    """Row order of the paper's Table III: Pretrained, then each loss without and with IAA."""
    rows = ["Pretrained"]
    for loss in losses:
        title = LOSS_TITLES.get(loss, loss)
        rows += [title, f"{title}+IAA"]
    return rows
