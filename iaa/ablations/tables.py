"""Stage ``ablation-table``: one of Tables VII-XII from the runs' files, the paper's numbers beside.

The workflow hands a spec (JSON): the table's key, the benchmark and its cells, each cell
the files of its seeds and what to read from them. Values are percent for retrieval
metrics (the selected model's, as in Table III) and raw for Table VIII's correlations.
Writes a long CSV (table, benchmark, row, column, mean, std, seeds, paper, diff; the
format ``iaa compare --ablation-tables`` reads) and a Markdown table in the paper's layout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from iaa.atomic import atomic_path
from iaa.errors import IAAError
from iaa.seed_stats import mean_std

CSV_COLUMNS = ("table", "benchmark", "row", "column", "mean", "std", "seeds", "paper", "diff")


def read_value(path: str | os.PathLike[str], source: str, metric: str) -> float:
    """One seed's value of a cell. ``metrics``: 100 x the selected model's ``metric`` in an
    ``iaa evaluate`` JSON; ``correlation``: ``pairs[<pair>][<p>]`` of an ``iaa stats``
    correlation JSON. Raises IAAError (one line) for a missing file or key."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise IAAError(f"cannot read {path}: {err}") from None
    try:
        if source == "metrics":
            return 100.0 * float(payload["selected"][metric])
        if source == "correlation":
            pair, p = metric.split("/")
            return float(payload["pairs"][pair][p])
    except (KeyError, TypeError, ValueError):
        raise IAAError(f"{path} has no {source} value {metric!r}; rerun the stage that wrote it") from None
    raise IAAError(f"unknown cell source {source!r}")


def _paper_values(numeral: str, benchmark: str) -> dict[tuple[str, str], float]:
    from iaa.paper import ablation_numbers

    return {(n.row, n.column): n.value for n in ablation_numbers(numeral, benchmark)}


def table_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The long-format rows of one table: mean and std (ddof 1) over the seeds of each cell."""
    numeral, bench = spec["numeral"], spec["benchmark"]
    paper = _paper_values(numeral, spec.get("paper_benchmark", bench))
    rows = []
    for cell in spec["cells"]:
        if not cell["paths"]:
            raise IAAError(f"table {numeral}, {cell['row']} / {cell['column']}: no runs to read")
        values = [read_value(p, cell["source"], cell["metric"]) for p in cell["paths"]]
        mean, std = mean_std(values)
        published = paper.get((cell["row"], cell["column"]), math.nan)
        rows.append({
            "table": numeral, "benchmark": bench, "row": cell["row"], "column": cell["column"],
            "mean": mean, "std": std, "seeds": len(values), "paper": published, "diff": mean - published,
        })  # fmt: skip
    return rows


def _fmt(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def format_table(spec: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Markdown: rows and columns in the paper's order, each cell ``ours ± std (paper)``."""
    digits = 3 if spec["numeral"] == "VIII" else 1
    row_names = list(dict.fromkeys(r["row"] for r in rows))
    col_names = list(dict.fromkeys(r["column"] for r in rows))
    cells = {(r["row"], r["column"]): r for r in rows}
    seeds = sorted({r["seeds"] for r in rows})
    lines = [
        f"# {spec['title']}: {spec['benchmark']}",
        "",
        f"Ours: mean ± std over {', '.join(map(str, seeds))} seed(s) (selected models); in brackets "
        "the paper's number, '-' where it has none.",
        "",
        "| | " + " | ".join(col_names) + " |",
        "|---|" + "---|" * len(col_names),
    ]
    for name in row_names:
        out = []
        for col in col_names:
            r = cells.get((name, col))
            if r is None:
                out.append("")
                continue
            ours = _fmt(r["mean"], digits)  # one seed has no sample std
            ours += f" ± {_fmt(r['std'], digits)}" if r["seeds"] > 1 else ""
            out.append(f"{ours} ({_fmt(r['paper'], digits)})")
        lines.append(f"| {name} | " + " | ".join(out) + " |")
    if spec.get("note"):
        lines += ["", spec["note"]]
    return "\n".join(lines) + "\n"


def ablation_table_stage(spec: dict[str, Any], out_md: Path, out_csv: Path) -> list[dict[str, Any]]:
    """Read every cell's files, write the CSV and the Markdown atomically."""
    import pandas as pd

    rows = table_rows(spec)
    with atomic_path(out_csv) as tmp:
        pd.DataFrame(rows, columns=list(CSV_COLUMNS)).to_csv(tmp, index=False)
    with atomic_path(out_md) as tmp:
        tmp.write_text(format_table(spec, rows))
    return rows


def parse_spec(text: str) -> dict[str, Any]:
    """The ``--spec`` JSON of ``ablation-table`` and ``sweep-figure``; one-line IAAError if bad."""
    try:
        spec = json.loads(text)
    except ValueError as err:
        raise IAAError(f"--spec is not JSON: {err}") from None
    if not isinstance(spec, dict):
        raise IAAError("--spec must be a JSON object")
    return spec


def add_spec_argument(sp: argparse.ArgumentParser, fields: str) -> None:
    sp.add_argument("--spec", required=True, help=f"JSON: {fields} (the workflow writes it)")


def _cmd(a: argparse.Namespace) -> None:
    ablation_table_stage(parse_spec(a.spec), a.out_md, a.out_csv)


def register(stage) -> None:
    """Add the ``ablation-table`` subcommand (``stage(name, fn, help)`` returns its parser)."""
    sp = stage("ablation-table", _cmd, "one of the paper's Tables VII-XII from the runs' metrics")
    add_spec_argument(
        sp, "numeral, title, benchmark and cells [{row, column, source (metrics|correlation), metric, paths}]"
    )
    sp.add_argument("--out-md", type=Path, required=True, help="the table (Markdown)")
    sp.add_argument("--out-csv", type=Path, required=True, help="the table, long format (CSV)")
