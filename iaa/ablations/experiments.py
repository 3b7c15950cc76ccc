"""The paper's ablations (Tables VII-XII, Figs. 6-11) as lists of points to train and read.

Each table or sweep figure is a function of the benchmark and its ``ablations`` config
section that returns :class:`Point` s: a cell (row, column) or a curve point (series, x),
the run it reads (loss, method, variant axes, optionally another experiment such as
``cub200-resnet50``) and what it reads from that run (a metric of the evaluated selected
model, a Table VIII correlation, or the training history). The workflow turns points into
file paths (one train job per point and seed, main-table runs shared) and the
``ablation-table`` / ``sweep-figure`` subcommands turn the files into tables and plots.

Sources: SPEC section 6 (tables), section 7 (figures). Rows and columns carry the keys of
:mod:`iaa.paper_ablations` so the published numbers land next to ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iaa.benchmarks import get_benchmark
from iaa.runs import LOSS_TITLES

ARCH_TITLES = {"bn_inception": "BN-Inception", "resnet50": "ResNet-50", "googlenet": "GoogLeNet"}
CORRELATION_PAIRS = ("mu2-sigma", "mu-sigma", "mu2-sigma2", "mu-sigma2")


@dataclass(frozen=True)
class Point:
    """One value of a table or a figure, and the run it comes from."""

    row: str  # table row, or the figure's series
    column: str  # table column, or the figure's x value as text
    loss: str
    method: str  # baseline | iaa
    items: tuple[tuple[str, Any], ...] = ()  # variant axes (iaa.ablations.variants.AXES)
    benchmark: str | None = None  # another experiment's runs (Table VII); None: this benchmark
    source: str = "metrics"  # metrics | correlation | history
    metric: str = "recall@1"  # metrics: key of the selected model; correlation: "<pair>/<p>"
    x: float | None = None  # figures: the x coordinate (None: a reference line)


@dataclass(frozen=True)
class Experiment:
    """A table (``kind == "table"``) or a sweep figure, and how to draw it."""

    key: str  # config key: table7 ... table12, fig6a ... fig11
    kind: str  # table | figure
    title: str
    points: Callable[[str, dict[str, Any]], list[Point]]
    file: str = ""  # figures: the file stem, fig<N><letter>_<what>
    xlabel: str = ""
    ylabel: str = "R@1 (%)"


def _items(**axes: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(axes.items()))


def _title(loss: str) -> str:
    return LOSS_TITLES.get(loss, loss)


# --------------------------------------------------------------------------- tables


def _table7(bench: str, cfg: dict[str, Any]) -> list[Point]:
    """MAP@R / RP of MS+IAA per backbone: the ``<bench>-<arch>`` experiments (sota.yaml);
    a built-in benchmark has one backbone, its own."""
    b = get_benchmark(bench)
    archs = [(None, "synth CNN")] if b.builtin else [(f"{bench}-{a}", ARCH_TITLES[a]) for a in cfg["archs"]]
    return [
        Point(title, col, "ms", "iaa", benchmark=other, metric=metric)
        for other, title in archs
        for col, metric in (("MAP@R", "map@r"), ("RP", "rp"))
    ]


def _table8(bench: str, cfg: dict[str, Any]) -> list[Point]:
    """Spearman correlations of the four distance pairs on the trained baseline's embeddings."""
    return [
        Point(pair, f"p={p}", cfg["loss"], "baseline", source="correlation", metric=f"{pair}/{p}")
        for pair in CORRELATION_PAIRS
        for p in (1, 2, 3)
    ]


# Table IX: (row, method, axes). "diagonal" and "alpha=0" are the same setting (Σ kept as
# estimated, α = 0), labelled per dataset in the paper; both rows read the same run.
TABLE9_ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("Baseline", "baseline", {}),
    ("identity", "iaa", {"cov": "identity", "corr": "on"}),
    ("global", "iaa", {"cov": "global", "corr": "on"}),
    ("diagonal", "iaa", {"cov": "diagonal", "corr": "on"}),
    ("alpha=0", "iaa", {"cov": "diagonal", "corr": "on"}),
    ("alpha=1", "iaa", {"cov": "alpha_one", "corr": "on"}),
    ("gamma=1", "iaa", {"cov": "gamma_one", "corr": "on"}),
    ("sigma=inf", "iaa", {"sigma": float("inf"), "corr": "on"}),
    ("lambda=0", "iaa", {"lam": 0.0}),
    ("IAA", "iaa", {}),
)


def _table9(bench: str, cfg: dict[str, Any]) -> list[Point]:
    return [Point(row, "R@1", cfg["loss"], method, _items(**axes)) for row, method, axes in TABLE9_ROWS]


def _table10(bench: str, cfg: dict[str, Any]) -> list[Point]:
    return [
        Point(loss, column, loss, method)
        for loss in cfg["losses"]
        for column, method in (("baseline", "baseline"), ("IAA", "iaa"))
    ]


def _table11(bench: str, cfg: dict[str, Any]) -> list[Point]:
    loss = cfg["loss"]
    points = [Point("Baseline", "R@1", loss, "baseline")]
    for n in [*cfg["images"], 0]:
        row = f"N={n}" if n else "all"
        for column, corr in (("without correction", "off"), ("with correction", "on")):
            axes = {"corr": corr, **({"nper": n} if n else {})}
            points.append(Point(row, column, loss, "iaa", _items(**axes)))
    return points


def _table12(bench: str, cfg: dict[str, Any]) -> list[Point]:
    rows = (
        ("Baseline", "baseline", {}),
        ("fixed mean", "iaa", {"mean": "fixed"}),
        ("dynamic mean", "iaa", {}),
    )
    return [
        Point(row, _title(loss), loss, method, _items(**axes))
        for row, method, axes in rows
        for loss in cfg["losses"]
    ]


# --------------------------------------------------------------------------- figures


def _sweep(axis: str, extra: dict[str, Any] | None = None, methods: tuple[str, ...] = ("iaa",)):
    """R@1 against one axis; the baseline as a reference line unless it is swept too."""

    def points(bench: str, cfg: dict[str, Any]) -> list[Point]:
        loss = cfg["loss"]
        out = []
        if "baseline" not in methods:
            out.append(Point("baseline", "", loss, "baseline"))
        for method in methods:
            series = "IAA" if method == "iaa" else "baseline"
            for v in cfg["values"]:
                v = int(v) if axis in ("k", "copies", "interval", "dim") else float(v)
                axes = {axis: v, **(extra or {})}
                out.append(Point(series, str(v), loss, method, _items(**axes), x=float(v)))
        return out

    return points


def _mining(bench: str, cfg: dict[str, Any]) -> list[Point]:
    loss = cfg["loss"]
    return [Point(s, "", loss, m, source="history") for s, m in (("baseline", "baseline"), ("IAA", "iaa"))]


def _cost(bench: str, cfg: dict[str, Any]) -> list[Point]:
    """Time per iteration and peak memory against M (M = 0: the baseline)."""
    loss = cfg["loss"]
    out = [Point("cost", "0", loss, "baseline", source="history", x=0.0)]
    out += [
        Point("cost", str(m), loss, "iaa", _items(copies=m), source="history", x=float(m))
        for m in cfg["values"]
        if m > 0
    ]
    return out


EXPERIMENTS: dict[str, Experiment] = {
    e.key: e
    for e in (
        Experiment("table7", "table", "Table VII: MAP@R and RP (%) of MS+IAA, other backbones", _table7),
        Experiment(
            "table8", "table",
            "Table VIII: Spearman correlation of mean and covariance distances, trained baseline", _table8,
        ),
        Experiment("table9", "table", "Table IX: covariance forms and correction parts, R@1 (%)", _table9),
        Experiment("table10", "table", "Table X: more losses without / with IAA, R@1 (%)", _table10),
        Experiment("table11", "table", "Table XI: statistics from N images per class, R@1 (%)", _table11),
        Experiment("table12", "table", "Table XII: fixed vs dynamic mean, R@1 (%)", _table12),
        Experiment("fig6a", "figure", "Fig. 6a: R@1 against λ", _sweep("lam"), "fig6a_recall_vs_lambda", "λ"),
        Experiment(
            "fig6b", "figure", "Fig. 6b: R@1 against K (correction on)", _sweep("k", {"corr": "on"}),
            "fig6b_recall_vs_k", "K (neighbour classes)",
        ),
        Experiment(
            "fig7a", "figure", "Fig. 7a: R@1 against M", _sweep("copies"), "fig7a_recall_vs_copies",
            "M (synthetic copies per sample)",
        ),
        Experiment(
            "fig7b", "figure", "Fig. 7b: R@1 against the estimation interval", _sweep("interval"),
            "fig7b_recall_vs_interval", "epochs between global estimations",
        ),
        Experiment(
            "fig8", "figure", "Fig. 8: R@1 against the embedding size",
            _sweep("dim", methods=("baseline", "iaa")),
            "fig8_recall_vs_embedding_size", "embedding size (dimensions)",
        ),
        Experiment(
            "fig9b", "figure", "Fig. 9b: R@1 against β (correction on)", _sweep("beta", {"corr": "on"}),
            "fig9b_recall_vs_beta", "β",
        ),
        Experiment(
            "fig10", "figure", "Fig. 10: mining statistics during training", _mining, "fig10", "epoch",
            "per batch",
        ),
        Experiment(
            "fig11", "figure", "Fig. 11: time per iteration and peak memory against M", _cost,
            "fig11_cost_vs_copies", "M (synthetic copies per sample)", "seconds per iteration",
        ),
    )
}  # fmt: skip

# Said under a table, where our layout needs a word beyond the paper's.
TABLE_NOTES = {
    "table9": "'diagonal' (CUB, Cars) and 'alpha=0' (SOP, In-Shop) are the same setting, Σ as "
    "estimated with α = 0, and read the same run. 'lambda=0' is not in the paper: M exact copies of "
    "every candidate and no noise, which separates the effect of the noise from that of the larger "
    "candidate set. The covariance rows switch the correction on (it is what they replace).",
    "table7": "Rows are the <benchmark>-<backbone> experiments' MS+IAA runs (config/sota.yaml).",
    "table8": "Spearman correlation of each class's row of mean distances with its row of covariance "
    "distances (Σ the diagonal covariance), averaged over classes, on the trained baseline's train "
    "embeddings.",
}
TABLE_NUMERALS = {
    "table7": "VII",
    "table8": "VIII",
    "table9": "IX",
    "table10": "X",
    "table11": "XI",
    "table12": "XII",
}


def experiment_points(key: str, bench: str, cfg: dict[str, Any]) -> list[Point]:
    """The points of experiment ``key`` on ``bench`` with its config section ``cfg``."""
    return EXPERIMENTS[key].points(bench, cfg)


def primary_split(bench: str) -> str:
    """The split a table cell reads: Table III's column (VehicleID: the medium test set)."""
    splits = get_benchmark(bench).eval_splits
    return "test-medium" if "test-medium" in splits else splits[0]


# Each experiment's settings when the config leaves them out: the paper's values where it
# gives them (losses, N), the figures' axes otherwise (SPEC 7; config/ablations.yaml lists
# them all). ``benchmarks`` defaults to ablations.benchmarks.
DEFAULTS: dict[str, dict[str, Any]] = {
    "table7": {"archs": ["bn_inception", "resnet50"]},
    "table8": {"loss": "ms"},
    "table9": {"loss": "triplet"},
    "table10": {
        "losses": ["distance_weighted", "margin", "circle", "norm_softmax", "proxy_nca", "soft_triple"]
    },
    "table11": {"loss": "triplet", "images": [3, 5, 7]},
    "table12": {"losses": ["triplet", "contrastive", "ms"]},
    "fig3": {},
    "fig5": {},
    "fig6a": {"loss": "ms", "values": [0, 0.2, 0.4, 0.6, 0.8, 1.0]},
    "fig6b": {"loss": "ms", "values": [5, 10, 25, 50, 100]},
    "fig7a": {"loss": "ms", "values": [1, 2, 3, 4, 5]},
    "fig7b": {"loss": "ms", "values": [1, 2, 4, 8]},
    "fig8": {"loss": "ms", "values": [64, 128, 256, 512]},
    "fig9a": {"values": [0.05, 0.1, 0.2, 0.5, 1.0]},
    "fig9b": {"loss": "ms", "values": [0.05, 0.1, 0.2, 0.5, 1.0]},
    "fig10": {"loss": "ms"},  # MS mines explicitly; triplet keeps one hardest negative per anchor
    "fig11": {"loss": "ms", "values": [1, 2, 3, 4, 5]},
    "fig12": {"loss": "ms"},
    "fig13": {"loss": "ms"},
    "fig14": {"loss": "ms"},
}
# The keys each experiment reads; any other key in its config section is refused.
USED_KEYS: dict[str, frozenset[str]] = {
    key: frozenset(value) | {"benchmarks"} for key, value in DEFAULTS.items()
}


def experiment_config(key: str, *sections: dict[str, Any] | None) -> dict[str, Any]:
    """The experiment's settings: DEFAULTS[key] under each of ``sections`` in turn (e.g. the
    built-in benchmarks' scaled sweep, then the user's ``ablations[key]``). Raises IAAError
    naming a key the experiment does not use."""
    from iaa.errors import IAAError

    out = dict(DEFAULTS[key])
    for section in sections:
        section = section or {}
        unused = set(section) - USED_KEYS[key]
        if unused:
            raise IAAError(
                f"ablations.{key}: {', '.join(sorted(unused))} not used by this experiment; "
                f"it takes {', '.join(sorted(USED_KEYS[key]))}"
            )
        out.update(section)
    for name in ("values", "images"):
        for v in out.get(name, ()):
            where = f"ablations.{key}.{name}"
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise IAAError(f"{where}: {v!r} is not a number")
            if key in INTEGER_SWEEPS and not float(v).is_integer():
                raise IAAError(f"{where}: {v!r} must be a whole number (it sets {INTEGER_SWEEPS[key]})")
    return out


# Sweeps whose values set an integer key: a fractional value is refused before any job runs.
INTEGER_SWEEPS = {
    "fig6b": "K", "fig7a": "M", "fig7b": "the estimation interval", "fig8": "the embedding size",
    "fig11": "M",
}  # fmt: skip
