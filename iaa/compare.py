"""Stage ``compare``: our numbers next to the paper's (Tables III-VI), with the difference.

Input: the metrics JSONs the pipeline wrote, ``<results>/<benchmark>/metrics/<split>/<run>.json``.
Every published number (:mod:`iaa.paper`) whose experiment is among them gets a line:
our mean and sample standard deviation over seeds, the paper's value, and ours minus the
paper's, in percentage points. Published numbers of experiments that were not run are left
out, so a config with one dataset compares just that dataset.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from iaa.errors import IAAError
from iaa.io import atomic_path, read_json
from iaa.paper import TABLE_TITLES, paper_numbers
from iaa.runs import parse_run

log = logging.getLogger(__name__)

_METRIC_TITLES = {"map@r": "MAP@R", "rp": "RP"}


def _metric_title(key: str) -> str:
    return _METRIC_TITLES.get(key, key.replace("recall@", "R@"))


def collect(metrics_files: list[Path]) -> dict[tuple[str, str, str], list[dict]]:
    """Metrics grouped by (benchmark, split, table row); one dict per seed."""
    grouped: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for path in metrics_files:
        path = Path(path)
        if path.parent.parent.name != "metrics":
            raise IAAError(f"{path}: expected <results>/<benchmark>/metrics/<split>/<run>.json")
        try:
            row = parse_run(path.stem).row
        except ValueError as err:
            raise IAAError(f"{path}: {err}") from None
        bench, split = path.parent.parent.parent.name, path.parent.name
        grouped[(bench, split, row)].append(read_json(path))
    return grouped


def comparison_table(grouped: dict[tuple[str, str, str], list[dict]]) -> pd.DataFrame:
    """One line per published number whose experiment was run."""
    records = []
    for p in paper_numbers():
        runs = grouped.get((p.benchmark, p.split, p.row))
        if not runs:
            continue
        vals = np.array([100.0 * r[p.metric] for r in runs if p.metric in r], dtype=float)
        if len(vals) == 0:
            raise IAAError(f"{p.benchmark}/{p.split}/{p.row}: the metrics JSONs have no {p.metric!r}")
        mean = float(vals.mean())
        records.append(
            {
                "table": p.table,
                "benchmark": p.benchmark,
                "split": p.split,
                "row": p.row,
                "metric": p.metric,
                "ours_mean": mean,
                "ours_std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                "seeds": len(vals),
                "paper": p.value,
                "difference": mean - p.value,
            }
        )
    columns = ["table", "benchmark", "split", "row", "metric", "ours_mean", "ours_std", "seeds", "paper"]
    return pd.DataFrame.from_records(records, columns=columns + ["difference"])


def format_comparison(table: pd.DataFrame) -> str:
    """Markdown: a section per paper table; cells read ``ours ± std (paper, difference)``."""
    lines = [
        "# Our numbers next to the paper's (%)",
        "",
        "Each cell: our mean ± std over seeds (the paper's number, ours minus the paper's).",
    ]
    if table.empty:
        return "\n".join(lines + ["", "No configured experiment has published numbers."]) + "\n"
    for tab, group in table.groupby("table", sort=False):
        lines += ["", f"## {TABLE_TITLES.get(str(tab), tab)}", ""]
        metrics = list(dict.fromkeys(group["metric"]))
        lines.append(
            "| benchmark | split | method | seeds | " + " | ".join(map(_metric_title, metrics)) + " |"
        )
        lines.append("|---|---|---|---|" + "---|" * len(metrics))
        for (bench, split, row), g in group.groupby(["benchmark", "split", "row"], sort=False):
            g = g.set_index("metric")
            cells = []
            for m in metrics:
                if m not in g.index:
                    cells.append("—")
                    continue
                r = g.loc[m]
                ours = f"{r.ours_mean:.1f} ± {r.ours_std:.1f}" if r.seeds > 1 else f"{r.ours_mean:.1f}"
                cells.append(f"{ours} ({r.paper:.1f}, {r.difference:+.1f})")
            lines.append(
                f"| {bench} | {split} | {row} | {int(g['seeds'].max())} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def compare_stage(metrics_files: list[Path], out_md: Path, out_csv: Path) -> pd.DataFrame:
    table = comparison_table(collect(metrics_files))
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    text = format_comparison(table)
    with atomic_path(out_md) as tmp:
        tmp.write_text(text)
    log.info("\n%s", text)
    return table
