"""Our ablation tables (VII-XII) next to the paper's numbers, for the ``compare`` stage.

Input: long-format CSVs, one line per cell, columns :data:`ABLATION_CSV_COLUMNS`: ``table``
("VII" ... "XII"), ``benchmark`` (the experiment's benchmark name, e.g. "cub200" or "synth"),
``row`` and ``column`` (the keys of :mod:`iaa.paper_ablations`), ``mean`` and ``std`` over
``seeds`` seeds (percent; raw correlations for Table VIII), and optionally ``paper`` and
``diff``. The paper's number is looked up in :mod:`iaa.paper_ablations`, never taken from the
CSV's ``paper`` column: that column is only checked, with a warning where it disagrees.

For every (table, benchmark) in the CSVs, every cell that we or the paper have gets a line,
in the paper's order of benchmarks, rows and columns, then ours the paper lacks (e.g. an
extra "lambda=0" row of Table IX) in the order of the CSVs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from iaa.errors import IAAError
from iaa.paper_ablations import (
    ABLATION_BENCHMARKS,
    ABLATION_COLUMNS,
    ABLATION_ROWS,
    ABLATION_TABLES,
    ABLATION_TITLES,
    ablation_numbers,
)

log = logging.getLogger(__name__)

ABLATION_CSV_COLUMNS = ("table", "benchmark", "row", "column", "mean", "std", "seeds", "paper", "diff")
_REQUIRED = ABLATION_CSV_COLUMNS[:7]
_KEYS = ["table", "benchmark", "row", "column"]
ABLATION_KIND = "ablation"  # the comparison table's ``kind`` of these lines
_DECIMALS = {"VIII": 2}  # correlations; the others are percent with one decimal, as printed
_NAN = float("nan")


def _number(text: str, where: str) -> float:
    text = text.strip()
    if text == "" or text.lower() in {"nan", "na", "none", "-"}:
        return _NAN
    try:
        return float(text)
    except ValueError:
        raise IAAError(f"{where}: {text!r} is not a number") from None


def read_ablation_tables(paths: Sequence[Path]) -> pd.DataFrame:
    """The cells of the ablation CSVs: columns table, benchmark, row, column, mean, std, seeds, paper.

    Keys are read as text (stripped; a ``table`` of "Table IX" reads "IX"); empty or NaN numbers
    are NaN (seeds 0). A cell given twice, in one file or across files, is an error.
    """
    records: list[dict] = []
    seen: dict[tuple[str, ...], Path] = {}
    for path in map(Path, paths):
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise IAAError(f"{path}: cannot read the ablation table: {err}") from None
        missing = [c for c in _REQUIRED if c not in frame.columns]
        if missing:
            raise IAAError(f"{path}: ablation table lacks columns {missing} (needs {list(_REQUIRED)})")
        for i, line in enumerate(frame.to_dict("records"), start=2):
            where = f"{path}:{i}"
            keys = {k: str(line[k]).strip() for k in _KEYS}
            keys["table"] = keys["table"].removeprefix("Table ").strip()
            key = tuple(keys[k] for k in _KEYS)
            if key in seen:
                raise IAAError(f"{where}: cell {key} given twice (also in {seen[key]})")
            seen[key] = path
            seeds = _number(line["seeds"], where)
            records.append(
                {
                    **keys,
                    "mean": _number(line["mean"], where),
                    "std": _number(line["std"], where),
                    "seeds": 0 if math.isnan(seeds) else int(seeds),
                    "paper": _number(line.get("paper", ""), where),
                }
            )
    return pd.DataFrame.from_records(records, columns=list(_REQUIRED) + ["paper"])


def _ordered(paper_order: Sequence[str], present: Sequence[str]) -> list[str]:
    """The paper's order of what is present, then the rest in the order first seen."""
    present = list(dict.fromkeys(present))
    return [x for x in paper_order if x in present] + [x for x in present if x not in paper_order]


def _check_csv_paper(where: str, mine: float | None, theirs: float) -> None:
    if math.isnan(theirs):
        return
    if mine is None:
        log.warning("%s: the CSV gives a paper value %g where the paper has none; ignored", where, theirs)
    elif abs(mine - theirs) > 1e-6:
        log.warning(
            "%s: the CSV's paper value %g differs from the paper's %g; using %g", where, theirs, mine, mine
        )


def ablation_lines(cells: pd.DataFrame) -> list[dict]:
    """Comparison lines (the keys of :data:`iaa.compare.COLUMNS`, ``kind`` "ablation") for the cells.

    ``metric`` holds the table's column; ``ours_mean``/``ours_std`` our mean and std (NaN where we
    lack the cell, seeds 0), ``paper`` the paper's number (NaN where it has none), ``difference``
    ours minus the paper's (NaN unless both exist). Tables other than VII-XII are skipped.
    """
    lines: list[dict] = []
    if cells.empty:
        return lines
    for table in sorted(set(cells["table"]) - set(ABLATION_TABLES)):
        log.warning("ablation tables: table %r is not one of %s; skipped", table, ", ".join(ABLATION_TABLES))
    for table in ABLATION_TABLES:
        ours_t = cells[cells["table"] == table]
        if ours_t.empty:
            continue
        for bench in _ordered(ABLATION_BENCHMARKS[table], list(ours_t["benchmark"])):
            ours = {
                (r["row"], r["column"]): r for r in ours_t[ours_t["benchmark"] == bench].to_dict("records")
            }
            paper = {(n.row, n.column): n.value for n in ablation_numbers(table, bench)}
            keys = list(paper) + list(ours)
            rows = _ordered(ABLATION_ROWS[table], [r for r, _ in keys])
            columns = _ordered(ABLATION_COLUMNS[table], [c for _, c in keys])
            for row in rows:
                for col in columns:
                    mine, rec = paper.get((row, col)), ours.get((row, col))
                    if mine is None and rec is None:
                        continue
                    if rec is not None:
                        _check_csv_paper(f"Table {table} {bench} {row} {col}", mine, rec["paper"])
                    mean = _NAN if rec is None else rec["mean"]
                    published = _NAN if mine is None else mine
                    lines.append(
                        {
                            "kind": ABLATION_KIND, "table": table, "benchmark": bench, "split": "",
                            "row": row, "baseline": "", "metric": col, "recipe": "", "selection": "",
                            "ours_mean": mean, "ours_std": _NAN if rec is None else rec["std"],
                            "seeds": 0 if rec is None else rec["seeds"], "paper": published,
                            "difference": mean - published,
                        }
                    )  # fmt: skip
    return lines


def _cell(r: pd.Series, decimals: int) -> str:
    """``ours ± std (paper, ours - paper)``; '-' for what is missing."""
    if math.isnan(r.ours_mean):
        ours = "-"
    elif r.seeds > 1 and not math.isnan(r.ours_std):
        ours = f"{r.ours_mean:.{decimals}f} ± {r.ours_std:.{decimals}f}"
    else:
        ours = f"{r.ours_mean:.{decimals}f}"
    paper = "-" if math.isnan(r.paper) else f"{r.paper:.{decimals}f}"
    diff = "-" if math.isnan(r.difference) else f"{r.difference:+.{decimals}f}"
    return f"{ours} ({paper}, {diff})"


def format_ablations(lines: pd.DataFrame) -> list[str]:
    """Markdown lines: a section per table VII-XII, a line per (benchmark, row), a cell per column."""
    out: list[str] = []
    for table, group in lines.groupby("table", sort=False):
        table = str(table)
        decimals = _DECIMALS.get(table, 1)
        columns = _ordered(ABLATION_COLUMNS.get(table, ()), list(group["metric"]))
        unit = "Spearman correlations" if table == "VIII" else "percent"
        out += [
            "",
            f"## {ABLATION_TITLES.get(table, table)}",
            "",
            f"Each cell: our mean ± std over seeds (the paper's number, ours minus the paper's), {unit}; "
            "'-': none.",
            "",
            "| benchmark | row | seeds | " + " | ".join(columns) + " |",
            "|---|---|---|" + "---|" * len(columns),
        ]
        for (bench, row), g in group.groupby(["benchmark", "row"], sort=False):
            g = g.set_index("metric")
            cells = [_cell(g.loc[c], decimals) if c in g.index else "" for c in columns]
            seeds = int(g["seeds"].max())
            out.append(f"| {bench} | {row} | {seeds if seeds else '-'} | " + " | ".join(cells) + " |")
    return out
