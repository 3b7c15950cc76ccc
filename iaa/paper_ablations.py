"""The IAA paper's published ablation numbers (Tables VII-XII, SPEC section 6), for the comparison.

Each number is keyed by (paper table, benchmark name as in :mod:`iaa.benchmarks`, table row,
table column), the keys the ablation tables of the pipeline use too. Values are as printed
in the paper: percentages for recall, MAP@R and RP, Spearman correlations (e.g. 0.71) for
Table VIII. A '-' in the paper is no entry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AblationNumber:
    table: str  # "VII" ... "XII"
    benchmark: str  # "cub200", "cars196", "sop", "inshop", "vehicleid"
    row: str  # e.g. "IAA", "N=3", "mu2-sigma"
    column: str  # e.g. "R@1", "p=2", "with correction"
    value: float  # percent, or a correlation (Table VIII)


ABLATION_TABLES = ("VII", "VIII", "IX", "X", "XI", "XII")
ABLATION_TITLES = {
    "VII": "Table VII: MAP@R and RP (%), MS+IAA, BN-Inception and ResNet-50, 512-d",
    "VIII": "Table VIII: Spearman correlation of class-mean and class-covariance distances, GoogLeNet",
    "IX": "Table IX: ablation of the covariance estimate, R@1 (%), Triplet, GoogLeNet",
    "X": "Table X: R@1 (%) of other losses without and with IAA, GoogLeNet, 512-d",
    "XI": "Table XI: covariance from N images per class, without and with correction, R@1 (%), Triplet",
    "XII": "Table XII: fixed vs dynamic class mean, R@1 (%), GoogLeNet",
}
# The paper's order of benchmarks, rows and columns per table (the comparison's order too).
ABLATION_BENCHMARKS = {
    "VII": ("cub200", "cars196", "sop"),
    "VIII": ("cub200", "cars196", "sop", "inshop", "vehicleid"),
    "IX": ("cub200", "cars196", "sop", "inshop"),
    "X": ("cub200", "cars196"),
    "XI": ("cub200", "cars196"),
    "XII": ("cub200", "cars196"),
}
ABLATION_ROWS = {
    "VII": ("BN-Inception", "ResNet-50"),
    # ||mu_i^2 - mu_j^2||_p vs ||Sigma_i - Sigma_j||_p, ||mu_i - mu_j||_p vs ||Sigma_i - Sigma_j||_p,
    # ||mu_i^2 - mu_j^2||_p vs ||Sigma_i^2 - Sigma_j^2||_p, ||mu_i - mu_j||_p vs ||Sigma_i^2 - Sigma_j^2||_p
    "VIII": ("mu2-sigma", "mu-sigma", "mu2-sigma2", "mu-sigma2"),
    "IX": (
        "Baseline",
        "identity",
        "global",
        "diagonal",
        "alpha=0",
        "alpha=1",
        "gamma=1",
        "sigma=inf",
        "IAA",
    ),  # fmt: skip
    "X": ("distance_weighted", "margin", "circle", "norm_softmax", "proxy_nca", "soft_triple"),
    "XI": ("Baseline", "N=3", "N=5", "N=7", "all"),
    "XII": ("Baseline", "fixed mean", "dynamic mean"),
}
ABLATION_COLUMNS = {
    "VII": ("MAP@R", "RP"),
    "VIII": ("p=1", "p=2", "p=3"),
    "IX": ("R@1",),
    "X": ("baseline", "IAA"),
    "XI": ("R@1", "without correction", "with correction"),
    "XII": ("Triplet", "Contrastive", "MS"),
}

# Each row: its cells per benchmark (in ABLATION_BENCHMARKS order, separated by '|'), within a
# benchmark one cell per column (the columns given); '-' where the paper has no entry.
_VII = {
    "BN-Inception": "25.5 36.5 | 29.2 39.3 | 54.6 57.6",
    "ResNet-50": "26.1 37.1 | 32.4 42.4 | 57.9 60.7",
}
# Table VIII is printed per p, each p across the five benchmarks: {row: {column: benchmarks}}.
_VIII = {
    "mu2-sigma": {"p=1": "0.71 0.70 0.65 0.71 0.59", "p=2": "0.72 0.72 0.68 0.69 0.55",
                  "p=3": "0.69 0.71 0.56 0.66 0.53"},
    "mu-sigma": {"p=1": "0.66 0.64 0.60 0.64 0.52", "p=2": "0.67 0.62 0.63 0.66 0.54",
                 "p=3": "0.65 0.60 0.61 0.65 0.51"},
    "mu2-sigma2": {"p=1": "0.66 0.59 0.53 0.56 0.50", "p=2": "0.68 0.64 0.55 0.58 0.48",
                   "p=3": "0.67 0.65 0.54 0.59 0.45"},
    "mu-sigma2": {"p=1": "0.64 0.58 0.49 0.51 0.49", "p=2": "0.65 0.57 0.53 0.55 0.51",
                  "p=3": "0.64 0.56 0.50 0.52 0.43"},
}  # fmt: skip
# Table IX: R@1 on CUB, Cars (without correction), SOP, In-Shop (with).
_IX = {
    "Baseline": "54.4 | 69.0 | 73.9 | 86.3",
    "identity": "50.8 | 66.1 | 71.7 | 84.5",
    "global": "54.9 | 69.8 | 73.1 | 85.8",
    "diagonal": "58.7 | 72.3 | - | -",
    "alpha=0": "- | - | 74.2 | 86.9",
    "alpha=1": "- | - | 76.6 | 88.2",
    "gamma=1": "- | - | 76.5 | 88.4",
    "sigma=inf": "- | - | 76.4 | 88.3",
    "IAA": "58.9 | 72.4 | 76.9 | 88.6",
}
# Table X: R@1 without / with IAA on CUB, Cars.
_X = {
    "distance_weighted": "57.7 59.8 | 78.2 80.8",
    "margin": "57.5 59.3 | 75.4 77.6",
    "circle": "60.5 60.9 | 80.8 81.0",
    "norm_softmax": "60.1 61.3 | 80.4 81.8",
    "proxy_nca": "60.5 61.0 | 81.0 82.1",
    "soft_triple": "61.0 61.5 | 82.6 82.8",
}
# Table XI: the baseline's R@1, then R@1 without / with correction, on CUB, Cars.
_XI_BASELINE = "54.4 | 69.0"
_XI = {
    "N=3": "55.5 56.7 | 70.3 71.8",
    "N=5": "55.8 57.2 | 70.6 71.8",
    "N=7": "55.9 57.1 | 70.9 71.9",
    "all": "58.9 58.7 | 72.4 72.2",
}
# Table XII: R@1 of Triplet, Contrastive, MS on CUB, then on Cars.
_XII = {
    "Baseline": "54.4 57.3 56.2 | 69.0 74.1 77.0",
    "fixed mean": "54.7 55.9 57.8 | 70.1 74.8 79.2",
    "dynamic mean": "58.9 61.7 62.1 | 72.4 80.8 84.2",
}


def _row(table: str, row: str, columns: tuple[str, ...], text: str) -> list[AblationNumber]:
    """One row's numbers: ``text`` holds a '|'-separated group per benchmark of the table."""
    groups = text.split("|")
    benches = ABLATION_BENCHMARKS[table]
    if len(groups) != len(benches):
        raise ValueError(f"Table {table} {row}: {text!r} does not match {benches}")
    out = []
    for bench, group in zip(benches, groups):
        cells = group.split()
        if len(cells) != len(columns):
            raise ValueError(f"Table {table} {row} {bench}: {group!r} does not match {columns}")
        out += [AblationNumber(table, bench, row, c, float(v)) for c, v in zip(columns, cells) if v != "-"]
    return out


def _build() -> tuple[AblationNumber, ...]:
    out: list[AblationNumber] = []
    for row, text in _VII.items():
        out += _row("VII", row, ABLATION_COLUMNS["VII"], text)
    for row, per_p in _VIII.items():
        for col, text in per_p.items():  # five benchmarks of one column: one cell per group
            out += _row("VIII", row, (col,), " | ".join(text.split()))
    for row, text in _IX.items():
        out += _row("IX", row, ("R@1",), text)
    for row, text in _X.items():
        out += _row("X", row, ABLATION_COLUMNS["X"], text)
    out += _row("XI", "Baseline", ("R@1",), _XI_BASELINE)
    for row, text in _XI.items():
        out += _row("XI", row, ("without correction", "with correction"), text)
    for row, text in _XII.items():
        out += _row("XII", row, ABLATION_COLUMNS["XII"], text)
    # keep every table's numbers in the paper's order: benchmark, row, column
    order = {t: i for i, t in enumerate(ABLATION_TABLES)}

    def key(n: AblationNumber) -> tuple[int, int, int, int]:
        return (
            order[n.table],
            ABLATION_BENCHMARKS[n.table].index(n.benchmark),
            ABLATION_ROWS[n.table].index(n.row),
            ABLATION_COLUMNS[n.table].index(n.column),
        )

    return tuple(sorted(out, key=key))


ABLATION_NUMBERS: tuple[AblationNumber, ...] = _build()


def ablation_numbers(table: str | None = None, benchmark: str | None = None) -> list[AblationNumber]:
    """The published ablation numbers, all or those of one table and/or benchmark, in the paper's order."""
    return [
        n
        for n in ABLATION_NUMBERS
        if (table is None or n.table == table) and (benchmark is None or n.benchmark == benchmark)
    ]
