"""Stage ``report``: the benchmark's results table (Table III layout) and training curves."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from iaa.errors import IAAError  # noqa: E402
from iaa.io import atomic_path, read_json  # noqa: E402
from iaa.runs import LOSS_TITLES, parse_run, table_rows  # noqa: E402

log = logging.getLogger(__name__)


def metric_columns(recall_k: list[int]) -> list[tuple[str, str]]:
    """(JSON key, column title) pairs in table order."""
    return [(f"recall@{k}", f"R@{k}") for k in recall_k] + [("nmi", "NMI"), ("map@r", "MAP@R"), ("rp", "RP")]


def build_table(metrics: dict[str, dict], recall_k: list[int], losses: list[str]) -> pd.DataFrame:
    """Long table: one row per (table row, metric) with mean, std (over seeds, ddof=1) and n."""
    per_row: dict[str, list[dict]] = defaultdict(list)
    for name, values in metrics.items():
        per_row[parse_run(name).row].append(values)
    records = []
    for row in table_rows(losses):
        runs = per_row.get(row, [])
        for key, title in metric_columns(recall_k):
            vals = np.array([100.0 * r[key] for r in runs if key in r], dtype=float)
            records.append(
                {
                    "row": row,
                    "metric": title,
                    "mean": float(vals.mean()) if len(vals) else float("nan"),
                    "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                    "n": int(len(vals)),
                }
            )
    return pd.DataFrame.from_records(records)


def wide_table(table: pd.DataFrame) -> pd.DataFrame:
    """One line per table row: seeds, then '<metric> mean' and '<metric> std' columns."""
    rows = list(dict.fromkeys(table["row"]))
    metrics = list(dict.fromkeys(table["metric"]))
    wide = pd.DataFrame({"method": rows})
    wide["seeds"] = [int(table.loc[table["row"] == r, "n"].max()) for r in rows]
    indexed = table.set_index(["row", "metric"])
    for m in metrics:
        wide[f"{m} mean"] = [indexed.loc[(r, m), "mean"] for r in rows]
        wide[f"{m} std"] = [indexed.loc[(r, m), "std"] for r in rows]
    return wide


def format_markdown(table: pd.DataFrame, benchmark: str, recall_k: list[int]) -> str:
    titles = [t for _, t in metric_columns(recall_k)]
    lines = [
        f"# {benchmark}: Recall@K, NMI, MAP@R, RP (%), mean ± std over seeds",
        "",
        "| method | seeds | " + " | ".join(titles) + " |",
        "|---|---|" + "---|" * len(titles),
    ]
    for row, group in table.groupby("row", sort=False):
        g = group.set_index("metric")
        cells = []
        for t in titles:
            mean, std, n = g.loc[t, "mean"], g.loc[t, "std"], g.loc[t, "n"]
            cells.append("—" if n == 0 else (f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"))
        lines.append(f"| {row} | {int(g['n'].max())} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(histories: dict[str, pd.DataFrame], losses: list[str], out: Path, benchmark: str) -> None:
    """Training loss and validation R@1 per epoch, baseline vs IAA, mean ± std over seeds."""
    fig, axes = plt.subplots(2, len(losses), figsize=(4.2 * len(losses), 6.5), squeeze=False)
    for col, loss in enumerate(losses):
        for method, colour in (("baseline", "tab:blue"), ("iaa", "tab:red")):
            runs = [
                h
                for name, h in histories.items()
                if (r := parse_run(name)).loss == loss and r.method == method
            ]
            if not runs:
                continue
            for row, key in enumerate(("loss", "val_recall@1")):
                # Validation runs every val_every epochs: the other rows are NaN.
                frame = pd.concat([h.set_index("epoch")[key] for h in runs], axis=1).dropna(how="all")
                mean, std = frame.mean(axis=1), frame.std(axis=1).fillna(0.0)
                scale = 100.0 if key != "loss" else 1.0
                ax = axes[row, col]
                label = (
                    f"{LOSS_TITLES.get(loss, loss)}{'+IAA' if method == 'iaa' else ''} ({len(runs)} seeds)"
                )
                ax.plot(
                    mean.index, scale * mean, color=colour, label=label, marker="." if key != "loss" else None
                )
                ax.fill_between(
                    mean.index, scale * (mean - std), scale * (mean + std), color=colour, alpha=0.2
                )
                ax.set_xlabel("epoch")
                ax.set_ylabel("training loss" if key == "loss" else "validation R@1 (%)")
                ax.grid(alpha=0.3)
        axes[0, col].set_title(LOSS_TITLES.get(loss, loss))
        axes[0, col].legend(fontsize=8)
    fig.suptitle(f"{benchmark}: training curves")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def report_stage(
    benchmark: str,
    metrics_files: list[Path],
    history_files: list[Path],
    *,
    recall_k: list[int],
    losses: list[str],
    table_md: Path,
    table_csv: Path,
    curves_png: Path,
    correlations: list[Path] | None = None,
    table1_md: Path | None = None,
) -> pd.DataFrame:
    """Table III layout per evaluated split (``metrics/<split>/<run>.json``; VehicleID has three)."""
    by_split: dict[str, dict[str, dict]] = defaultdict(dict)
    for path in metrics_files:
        path = Path(path)
        try:
            parse_run(path.stem)
        except ValueError as err:
            raise IAAError(f"{path}: {err}") from None
        by_split[path.parent.name][path.stem] = read_json(path)
    long_tables, wide_tables, sections = [], [], []
    for split, metrics in by_split.items():
        table = build_table(metrics, recall_k, losses)
        title = benchmark if len(by_split) == 1 else f"{benchmark} ({split})"
        sections.append(format_markdown(table, title, recall_k))
        long_tables.append(table.assign(split=split))
        wide_tables.append(wide_table(table).assign(split=split))
    wide = pd.concat(wide_tables, ignore_index=True)
    with atomic_path(table_csv) as tmp:
        wide[["split"] + [c for c in wide.columns if c != "split"]].to_csv(
            tmp, index=False, float_format="%.4f"
        )
    markdown = "\n".join(sections)
    with atomic_path(table_md) as tmp:
        tmp.write_text(markdown)
    histories = {p.parent.name: pd.read_csv(p) for p in history_files}
    plot_curves(histories, losses, curves_png, benchmark)
    log.info("\n%s", markdown)
    if table1_md is not None:
        text = format_table1({p.name.split(".")[0]: read_json(p) for p in correlations or []}, benchmark)
        with atomic_path(table1_md) as tmp:
            tmp.write_text(text)
        log.info("\n%s", text)
    return pd.concat(long_tables, ignore_index=True)


def format_table1(correlations: dict[str, dict], benchmark: str) -> str:
    """Table I: Spearman correlation between D_m and D_cv rows, on pretrained features (as in
    the paper) and on the train embeddings after training (mean ± std over seeds per row)."""
    ps = (1, 2, 3, 4)
    lines = [
        f"# {benchmark}: Spearman correlation between mean and covariance distances (Table I)",
        "",
        "| embeddings (train split) | runs | " + " | ".join(f"p={p}" for p in ps) + " |",
        "|---|---|" + "---|" * len(ps),
    ]
    per_row: dict[str, list[dict]] = defaultdict(list)
    for name, values in correlations.items():
        per_row[parse_run(name).row].append(values)
    for row, runs in per_row.items():
        cells = []
        for p in ps:
            vals = np.array([r[f"spearman_p{p}"] for r in runs])
            cells.append(f"{vals.mean():.2f} ± {vals.std(ddof=1):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}")
        lines.append(f"| {row} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
