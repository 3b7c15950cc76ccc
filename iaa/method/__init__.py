"""The IAA method: class statistics, neighbour correction and synthesis (SPEC 2.1-2.3)."""

from iaa.method.correction import (
    MODES,
    CorrectionResult,
    correction_alpha,
    global_variance,
    neighbor_correction,
)
from iaa.method.estimator import ClassStatistics
from iaa.method.synthesis import Synthetic, lambda_schedule, synthesize

__all__ = [
    "MODES",
    "ClassStatistics",
    "CorrectionResult",
    "Synthetic",
    "correction_alpha",
    "global_variance",
    "lambda_schedule",
    "neighbor_correction",
    "synthesize",
]
