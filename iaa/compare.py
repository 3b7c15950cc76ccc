"""Stage ``compare``: our numbers next to the paper's (Tables III-XII), with the difference.

Input: the metrics JSONs the pipeline wrote, ``<results>/<benchmark>/metrics/<split>/<run>.json``.
Every published number (:mod:`iaa.paper`) whose experiment is among them gets a line:
our mean and sample standard deviation over seeds, the paper's value, and ours minus the
paper's, in percentage points. Ours are each run's SELECTED model (its ``"selected"``
metrics; :mod:`iaa.provenance`), and every line names the recipe and selection rule behind
it. A second part, "IAA gain", sets our gain (+IAA minus the baseline, paired by seed) next
to the paper's. Published numbers of experiments that were not run are left out, so a
config with one dataset compares just that dataset.

The ablations (Tables VII-XII) come from the ablation tables the pipeline wrote (long-format
CSVs, :mod:`iaa.compare_ablations`): a section per table, ours next to the paper's number.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from iaa.atomic import atomic_path
from iaa.compare_ablations import ABLATION_KIND, ablation_lines, format_ablations, read_ablation_tables
from iaa.errors import IAAError
from iaa.paper import TABLE_TITLES, paper_numbers
from iaa.provenance import SELECTION_LABELS, SELECTION_RULES, MetricsRecord, read_metrics
from iaa.runs import parse_run
from iaa.seed_stats import mean_std

log = logging.getLogger(__name__)

_METRIC_TITLES = {"map@r": "MAP@R", "rp": "RP"}
IAA_SUFFIX = "+IAA"


def _metric_title(key: str) -> str:
    return _METRIC_TITLES.get(key, key.replace("recall@", "R@"))


Grouped = dict[tuple[str, str, str], dict[int | None, MetricsRecord]]


def collect(metrics_files: list[Path]) -> Grouped:
    """Metrics grouped by (benchmark, split, table row), then by seed (None: pretrained)."""
    grouped: Grouped = defaultdict(dict)
    for path in metrics_files:
        path = Path(path)
        if path.parent.parent.name != "metrics":
            raise IAAError(f"{path}: expected <results>/<benchmark>/metrics/<split>/<run>.json")
        try:
            run = parse_run(path.stem)
        except ValueError as err:
            raise IAAError(f"{path}: {err}") from None
        bench, split = path.parent.parent.parent.name, path.parent.name
        grouped[(bench, split, run.row)][run.seed] = read_metrics(path)
    return grouped


def _selected(record: MetricsRecord, metric: str, where: str) -> float:
    """The selected model's ``metric`` in percent; one-line IAAError when the JSON lacks it."""
    if metric not in record.selected:
        raise IAAError(f"{where}: the metrics JSONs have no {metric!r}")
    return 100.0 * float(record.selected[metric])


def _provenance_columns(runs: list[MetricsRecord]) -> dict[str, str]:
    return {
        "recipe": "+".join(sorted({r.recipe for r in runs if r.recipe is not None})),
        "selection": "+".join(s for s in SELECTION_RULES if s in {r.selection for r in runs}),
    }


COLUMNS = [
    "kind", "table", "benchmark", "split", "row", "baseline", "metric", "recipe", "selection",
    "ours_mean", "ours_std", "seeds", "paper", "difference",
]  # fmt: skip


def comparison_table(grouped: Grouped, ablations: pd.DataFrame | None = None) -> pd.DataFrame:
    """One line per published number whose experiment was run (``kind`` value), then per ablation
    cell (``kind`` ablation; ``ablations`` as :func:`iaa.compare_ablations.read_ablation_tables`
    returns, lines as :func:`iaa.compare_ablations.ablation_lines` builds), then per IAA gain.

    value: our selected models' mean and std (ddof=1) over seeds, the paper's number, ours
    minus the paper's. gain (``row`` X+IAA, ``baseline`` X, where the paper publishes both):
    per seed, X+IAA minus X of the runs of that seed (seeds run for both rows); mean and std
    over those seeds; ``paper`` the paper's X+IAA minus its X; ``difference`` ours minus that.
    All in percentage points.
    """
    published = {(p.table, p.benchmark, p.split, p.row, p.metric): p.value for p in paper_numbers()}
    values, gains = [], []
    for p in paper_numbers():
        runs = grouped.get((p.benchmark, p.split, p.row))
        if not runs:
            continue
        where = f"{p.benchmark}/{p.split}/{p.row}"
        vals = np.array([_selected(r, p.metric, where) for r in runs.values()], dtype=float)
        mean, std = mean_std(vals)
        values.append(
            {
                "kind": "value", "table": p.table, "benchmark": p.benchmark, "split": p.split,
                "row": p.row, "baseline": "", "metric": p.metric,
                **_provenance_columns(list(runs.values())),
                "ours_mean": mean, "ours_std": std, "seeds": len(vals), "paper": p.value,
                "difference": mean - p.value,
            }
        )  # fmt: skip
        if not p.row.endswith(IAA_SUFFIX):
            continue
        base_row = p.row[: -len(IAA_SUFFIX)]
        base_value = published.get((p.table, p.benchmark, p.split, base_row, p.metric))
        base_runs = grouped.get((p.benchmark, p.split, base_row))
        if base_value is None or not base_runs:
            continue
        seeds = sorted(set(runs) & set(base_runs), key=lambda s: -1 if s is None else s)
        if not seeds:
            log.warning("%s: no seed run both with and without IAA; no gain", where)
            continue
        diffs = np.array(
            [_selected(runs[s], p.metric, where) - _selected(base_runs[s], p.metric, where) for s in seeds],
            dtype=float,
        )
        mean, std = mean_std(diffs)
        paper_gain = p.value - base_value
        gains.append(
            {
                "kind": "gain", "table": p.table, "benchmark": p.benchmark, "split": p.split,
                "row": p.row, "baseline": base_row, "metric": p.metric,
                **_provenance_columns([runs[s] for s in seeds] + [base_runs[s] for s in seeds]),
                "ours_mean": mean, "ours_std": std, "seeds": len(diffs), "paper": paper_gain,
                "difference": mean - paper_gain,
            }
        )  # fmt: skip
    ablation = ablation_lines(ablations) if ablations is not None else []
    return pd.DataFrame.from_records(values + ablation + gains, columns=COLUMNS)


def _model_label(g: pd.DataFrame) -> str:
    """``recipe, rule`` of a table line (the first metric's; a line's metrics share their runs)."""
    recipe, selection = str(g["recipe"].iloc[0] or ""), str(g["selection"].iloc[0] or "")
    rules = " + ".join(SELECTION_LABELS.get(s, s) for s in selection.split("+") if s)
    return f"{recipe or '—'}, {rules or '—'}"


def _lines(group: pd.DataFrame, keys: list[str], first: str, signed: bool) -> list[str]:
    metrics = list(dict.fromkeys(group["metric"]))
    lines = [
        f"| benchmark | split | {first} | model | seeds | " + " | ".join(map(_metric_title, metrics)) + " |",
        "|---|---|---|---|---|" + "---|" * len(metrics),
    ]
    sign = "+" if signed else ""
    for (bench, split, row), g in group.groupby(keys, sort=False):
        g = g.set_index("metric")
        cells = []
        for m in metrics:
            if m not in g.index:
                cells.append("—")
                continue
            r = g.loc[m]
            ours = (
                f"{r.ours_mean:{sign}.1f} ± {r.ours_std:.1f}" if r.seeds > 1 else f"{r.ours_mean:{sign}.1f}"
            )
            cells.append(f"{ours} ({r.paper:{sign}.1f}, {r.difference:+.1f})")
        lines.append(
            f"| {bench} | {split} | {row} | {_model_label(g)} | {int(g['seeds'].max())} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def format_comparison(table: pd.DataFrame) -> str:
    """Markdown: a section per paper table; cells read ``ours ± std (paper, difference)``; then
    a section per ablation table (VII-XII), the same cells, '-' for what is missing; then the
    IAA gains, cells ``our gain ± std over seeds (the paper's gain, difference)``."""
    lines = [
        "# Our numbers next to the paper's (%)",
        "",
        "Each cell: our mean ± std over seeds (the paper's number, ours minus the paper's). Ours are "
        "each run's selected model; the `model` column names the recipe and the selection rule "
        "(last epoch: no selection, the paper's protocol; best test R@1 epoch: the released code's, "
        "optimistic, Musgrave et al. 2020; best held-out-train R@1 epoch: honest selection).",
    ]
    if table.empty:
        return "\n".join(lines + ["", "No configured experiment has published numbers."]) + "\n"
    values, gains = table[table["kind"] == "value"], table[table["kind"] == "gain"]
    for tab, group in values.groupby("table", sort=False):
        lines += ["", f"## {TABLE_TITLES.get(str(tab), tab)}", ""]
        lines += _lines(group, ["benchmark", "split", "row"], "method", signed=False)
    lines += format_ablations(table[table["kind"] == ABLATION_KIND])
    if not gains.empty:
        lines += [
            "",
            "## IAA gain",
            "",
            "Each cell: our gain, +IAA minus the baseline of the same seed, mean ± std over the seeds "
            "run both ways (the paper's +IAA minus its baseline, ours minus the paper's), in "
            "percentage points.",
        ]
        for tab, group in gains.groupby("table", sort=False):
            lines += ["", f"### {TABLE_TITLES.get(str(tab), tab)}", ""]
            group = group.assign(loss=group["baseline"])
            lines += _lines(group, ["benchmark", "split", "loss"], "loss", signed=True)
    return "\n".join(lines) + "\n"


def compare_stage(
    metrics_files: list[Path], out_md: Path, out_csv: Path, ablation_tables: Sequence[Path] = ()
) -> pd.DataFrame:
    """Write the comparison CSV (columns :data:`COLUMNS`) and Markdown; return the table.

    ``ablation_tables``: long-format ablation CSVs (:data:`iaa.compare_ablations.ABLATION_CSV_COLUMNS`).
    """
    ablations = read_ablation_tables(ablation_tables) if ablation_tables else None
    table = comparison_table(collect(metrics_files), ablations)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    text = format_comparison(table)
    with atomic_path(out_md) as tmp:
        tmp.write_text(text)
    log.info("\n%s", text)
    return table
