"""Mean and sample standard deviation over seeds: how every table of the pipeline reports a cell."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def mean_std(values: Sequence[float] | Any) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of ``values`` (a sequence or a NumPy
    array): 0 for a single value (one seed has no spread to estimate), NaN for none."""
    import numpy as np  # here, not at import: the `iaa` command's light stages import this module

    vals = np.asarray(values, dtype=float)
    if vals.size == 0:
        return float("nan"), float("nan")
    return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0
