"""The IAA paper's published numbers (Tables III-VI, SPEC section 6), for the comparison report.

The ablation numbers (Tables VII-XII) live in :mod:`iaa.paper_ablations`, re-exported here.

Each number is keyed by the experiment that rebuilds it: (paper table, benchmark name as
in :mod:`iaa.benchmarks`, evaluated split, results-table row, metric key of the metrics JSON).
Values are percentages, as printed in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

from iaa.paper_ablations import (
    ABLATION_BENCHMARKS,
    ABLATION_COLUMNS,
    ABLATION_NUMBERS,
    ABLATION_ROWS,
    ABLATION_TABLES,
    ABLATION_TITLES,
    AblationNumber,
    ablation_numbers,
)

__all__ = [
    "ABLATION_BENCHMARKS", "ABLATION_COLUMNS", "ABLATION_NUMBERS", "ABLATION_ROWS", "ABLATION_TABLES",
    "ABLATION_TITLES", "PAPER_NUMBERS", "TABLE_TITLES", "AblationNumber", "PaperNumber",
    "ablation_numbers", "paper_numbers",
]  # fmt: skip


@dataclass(frozen=True)
class PaperNumber:
    table: str  # "III", "IV", "V" or "VI"
    benchmark: str  # e.g. "cub200" (GoogLeNet) or "cub200-resnet50"
    split: str  # the evaluated split: "test", "query", "test-medium", ...
    row: str  # results-table row: "Triplet", "MS+IAA", ...
    metric: str  # key in the metrics JSON: "recall@1", "map@r", "rp"
    value: float  # percent


def _recalls(ks: tuple[int, ...], values: str) -> list[tuple[str, float]]:
    nums = [float(v) for v in values.split()]
    if len(nums) != len(ks):
        raise ValueError(f"{values!r} does not match K = {ks}")
    return [(f"recall@{k}", v) for k, v in zip(ks, nums)]


# Table III: GoogLeNet, 512-d. Columns: CUB R@1/2/4, Cars R@1/2/4, SOP R@1/10/100,
# In-Shop R@1/10/20, VehicleID (medium) R@1/5.
_TABLE_III = {
    "Triplet": "54.4 65.8 76.0 | 69.0 78.1 85.4 | 73.5 87.8 94.9 | 86.1 95.7 97.0 | 83.5 93.3",
    "Triplet+IAA": "58.9 70.6 80.5 | 72.4 81.5 88.2 | 76.9 89.9 96.0 | 88.6 97.4 98.3 | 87.7 94.7",
    "Contrastive": "57.3 68.6 79.5 | 74.1 82.8 89.0 | 75.0 88.3 95.2 | 86.5 96.0 97.3 | 87.9 94.9",
    "Contrastive+IAA": "61.7 73.3 82.2 | 80.8 87.9 92.8 | 77.8 90.2 96.1 | 88.8 97.3 98.2 | 91.6 95.9",
    "MS": "56.2 68.3 79.1 | 77.0 84.3 89.9 | 75.9 89.3 95.6 | 87.0 97.0 98.1 | 89.5 94.9",
    "MS+IAA": "62.1 73.8 82.7 | 84.2 90.4 94.3 | 78.6 91.0 96.5 | 89.3 97.8 98.6 | 92.2 96.2",
}
_TABLE_III_COLUMNS = (
    ("cub200", "test", (1, 2, 4)),
    ("cars196", "test", (1, 2, 4)),
    ("sop", "test", (1, 10, 100)),
    ("inshop", "query", (1, 10, 20)),
    ("vehicleid", "test-medium", (1, 5)),
)
# Table IV: MS+IAA, 512-d, CUB / Cars R@1/2/4, SOP R@1/10/100, In-Shop R@1/10/20.
_TABLE_IV = {
    "bn_inception": "66.5 76.8 84.4 | 85.3 91.3 94.8 | 80.5 92.0 96.8 | 92.0 98.5 99.1",
    "resnet50": "68.5 78.4 86.4 | 88.6 93.1 95.8 | 82.8 93.2 97.1 | 93.3 98.6 99.2",
}
# Table V: VehicleID, MS+IAA, R@1/R@5 on the small, medium and large test sets.
_TABLE_V = {
    "bn_inception": "95.4 97.8 | 93.8 96.7 | 92.7 96.6",
    "resnet50": "95.7 97.9 | 94.3 97.0 | 93.6 96.9",
}
# Table VI: MAP@R / RP, GoogLeNet, on CUB, Cars, SOP, In-Shop.
_TABLE_VI = {
    "Triplet": "20.6 31.4 | 19.4 30.2 | 45.8 49.0 | 60.2 63.2",
    "Triplet+IAA": "21.5 32.5 | 22.6 33.4 | 48.8 52.0 | 63.1 66.0",
    "Contrastive": "20.8 31.9 | 20.3 30.5 | 47.7 50.8 | 59.9 62.8",
    "Contrastive+IAA": "22.8 33.7 | 24.6 34.9 | 49.7 52.8 | 61.9 64.7",
    "MS": "20.5 31.6 | 22.0 32.7 | 48.0 51.2 | 60.8 63.8",
    "MS+IAA": "22.6 33.7 | 27.6 37.7 | 50.5 53.7 | 63.3 66.3",
}


def _build() -> tuple[PaperNumber, ...]:
    out: list[PaperNumber] = []
    for row, text in _TABLE_III.items():
        for (bench, split, ks), cell in zip(_TABLE_III_COLUMNS, text.split("|"), strict=True):
            out += [PaperNumber("III", bench, split, row, m, v) for m, v in _recalls(ks, cell)]
    for arch, text in _TABLE_IV.items():
        for (bench, split, ks), cell in zip(_TABLE_III_COLUMNS[:4], text.split("|"), strict=True):
            out += [
                PaperNumber("IV", f"{bench}-{arch}", split, "MS+IAA", m, v) for m, v in _recalls(ks, cell)
            ]
    for arch, text in _TABLE_V.items():
        for size, cell in zip(("small", "medium", "large"), text.split("|"), strict=True):
            out += [
                PaperNumber("V", f"vehicleid-{arch}", f"test-{size}", "MS+IAA", m, v)
                for m, v in _recalls((1, 5), cell)
            ]
    for row, text in _TABLE_VI.items():
        for (bench, split, _), cell in zip(_TABLE_III_COLUMNS[:4], text.split("|"), strict=True):
            map_r, rp = (float(v) for v in cell.split())
            out += [
                PaperNumber("VI", bench, split, row, "map@r", map_r),
                PaperNumber("VI", bench, split, row, "rp", rp),
            ]
    return tuple(out)


PAPER_NUMBERS: tuple[PaperNumber, ...] = _build()
TABLE_TITLES = {
    "III": "Table III: Recall@K (%), GoogLeNet, 512-d",
    "IV": "Table IV: MS+IAA, BN-Inception and ResNet-50, 512-d",
    "V": "Table V: VehicleID, MS+IAA, BN-Inception and ResNet-50",
    "VI": "Table VI: MAP@R and RP (%), GoogLeNet, 512-d",
    **ABLATION_TITLES,
}


def paper_numbers(benchmark: str | None = None) -> list[PaperNumber]:
    """The published numbers, all or those one benchmark (experiment) rebuilds."""
    return [p for p in PAPER_NUMBERS if benchmark is None or p.benchmark == benchmark]
