"""Stage ``report``: the benchmark's results table (Table III layout) and training curves.

Every trained run has two models, the final epoch's and the one its selection rule picked
(SPEC 2.5 item 12; :mod:`iaa.provenance`); the table says which recipe and rule produced
its numbers, and shows both models side by side when the rule is not ``last``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from iaa.atomic import atomic_path
from iaa.errors import IAAError  # noqa: E402
from iaa.io import read_json  # noqa: E402
from iaa.provenance import EPOCH_KINDS, SELECTION_RULES, MetricsRecord, describe, read_metrics  # noqa: E402
from iaa.runs import LOSS_TITLES, parse_run, table_rows  # noqa: E402
from iaa.seed_stats import mean_std  # noqa: E402

log = logging.getLogger(__name__)


def metric_columns(recall_k: list[int]) -> list[tuple[str, str]]:
    """(JSON key, column title) pairs in table order."""
    return [(f"recall@{k}", f"R@{k}") for k in recall_k] + [("nmi", "NMI"), ("map@r", "MAP@R"), ("rp", "RP")]


def build_table(records: dict[str, MetricsRecord], recall_k: list[int], losses: list[str]) -> pd.DataFrame:
    """Long table: one row per (table row, model, metric) with mean, std (over seeds, ddof=1), n.

    ``models`` is ``final`` or ``selected`` (the run's two models, :mod:`iaa.provenance`);
    ``recipe`` and ``selection`` name where a table row's runs came from (several joined by
    "+"; recipe empty when unrecorded, as for the pretrained features). Metrics in percent;
    the extra metric ``epoch`` is each model's epoch (runs that record one).
    """
    per_row: dict[str, list[MetricsRecord]] = defaultdict(list)
    for name, record in records.items():
        per_row[parse_run(name).row].append(record)
    keys = metric_columns(recall_k) + [("epoch", "epoch")]
    out = []
    for row in table_rows(losses):
        runs = per_row.get(row, [])
        recipe = "+".join(sorted({r.recipe for r in runs if r.recipe is not None}))
        selection = "+".join(s for s in SELECTION_RULES if s in {r.selection for r in runs}) or "last"
        for kind in EPOCH_KINDS:
            for key, title in keys:
                scale = 1.0 if key == "epoch" else 100.0
                found = [r.models(kind).get(key) for r in runs]
                vals = np.array([scale * v for v in found if v is not None], dtype=float)
                mean, std = mean_std(vals)
                out.append(
                    {
                        "row": row,
                        "models": kind,
                        "recipe": recipe,
                        "selection": selection,
                        "metric": title,
                        "mean": mean,
                        "std": std,
                        "n": int(len(vals)),
                    }
                )
    return pd.DataFrame.from_records(out)


def side_by_side(records: dict[str, MetricsRecord]) -> bool:
    """Whether a table shows final and selected models side by side: some rule is not ``last``."""
    return any(r.selection != "last" for r in records.values())


def wide_table(table: pd.DataFrame, selected: bool) -> pd.DataFrame:
    """One line per table row and model (``final``; also ``selected`` when ``selected``):
    models, recipe, selection, seeds, then '<metric> mean' and '<metric> std' columns
    (epoch last)."""
    kinds = list(EPOCH_KINDS) if selected else ["final"]
    rows = list(dict.fromkeys(table["row"]))
    metrics = list(dict.fromkeys(table["metric"]))
    indexed = table.set_index(["row", "models", "metric"]).sort_index()
    lines = []
    for r in rows:
        for kind in kinds:
            first = indexed.loc[(r, kind)]
            line = {
                "method": r,
                "models": kind,
                "recipe": first["recipe"].iloc[0],
                "selection": first["selection"].iloc[0],
                "seeds": int(first.loc[first.index != "epoch", "n"].max()),
            }
            for m in metrics:
                line[f"{m} mean"] = first.loc[m, "mean"]
                line[f"{m} std"] = first.loc[m, "std"]
            lines.append(line)
    return pd.DataFrame.from_records(lines)


def _cell(mean: float, std: float, n: int, digits: int = 1) -> str:
    if n == 0:
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def format_markdown(
    table: pd.DataFrame, benchmark: str, recall_k: list[int], *, header: str, selected: bool = False
) -> str:
    """The Markdown table; ``header`` names recipe(s) and rule(s) (:func:`iaa.provenance.describe`).

    With ``selected`` each cell reads ``final / selected`` and a column gives the selected
    model's epoch (mean ± std over seeds); otherwise the final models alone, as in Table III.
    """
    titles = [t for _, t in metric_columns(recall_k)]
    lines = [f"# {benchmark}: Recall@K, NMI, MAP@R, RP (%), mean ± std over seeds", "", header]
    if selected:
        lines += [
            "",
            "Each cell: final-epoch model / selected model; selected epoch: mean ± std over seeds "
            "(Pretrained: the backbone's features, one value).",
            "",
            "| method | seeds | selected epoch | " + " | ".join(titles) + " |",
            "|---|---|---|" + "---|" * len(titles),
        ]
    else:
        lines += ["", "| method | seeds | " + " | ".join(titles) + " |", "|---|---|" + "---|" * len(titles)]
    indexed = table.set_index(["row", "models", "metric"]).sort_index()
    for row in dict.fromkeys(table["row"]):
        g = {kind: indexed.loc[(row, kind)] for kind in EPOCH_KINDS}
        seeds = int(g["final"].loc[titles, "n"].max())
        # a row without epochs (the pretrained features) has nothing selected: one value
        trained = selected and int(g["selected"].loc["epoch", "n"]) > 0
        cells = []
        for t in titles:
            final = _cell(*g["final"].loc[t, ["mean", "std", "n"]])
            cells.append(
                f"{final} / {_cell(*g['selected'].loc[t, ['mean', 'std', 'n']])}" if trained else final
            )
        if selected:
            epoch = g["selected"].loc["epoch"]
            cells.insert(
                0, _cell(epoch["mean"], epoch["std"], int(epoch["n"]), digits=1 if epoch["n"] > 1 else 0)
            )
        lines.append(f"| {row} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# history.csv columns drawn in the lower row: solid the monitored validation R@1, dashed the
# R@1 the selection rule picks on (best_test: test; best_val: held-out train classes).
_R1_CURVES = (("val_recall@1", "-", "validation R@1"), ("selection_recall@1", "--", "selection R@1"))


def _same_curve(history: pd.DataFrame, key: str, other: str) -> bool:
    """Whether column ``key`` repeats ``other`` (NaN where it is NaN, equal elsewhere)."""
    if other not in history.columns:
        return False
    a, b = history[key], history[other]
    return bool(((a == b) | (a.isna() & b.isna())).all())


def plot_curves(
    histories: dict[str, pd.DataFrame], losses: list[str], out: Path, benchmark: str, subtitle: str = ""
) -> None:
    """Training loss (top) and R@1 per epoch (bottom: validation solid, the selection rule's
    R@1 dashed where recorded and different: under best_test it is the validation R@1),
    baseline vs IAA, mean ± std over seeds. ``subtitle``: the recipe and selection line."""
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
            name = f"{LOSS_TITLES.get(loss, loss)}{'+IAA' if method == 'iaa' else ''}"
            curves = [("loss", "-", f"{name} ({len(runs)} seeds)", 0)]
            curves += [(key, style, f"{name} {what}", 1) for key, style, what in _R1_CURVES]
            for key, style, label, row in curves:
                with_key = [h for h in runs if key in h.columns]
                if key == "selection_recall@1":  # drawn only where it is not the validation R@1
                    with_key = [h for h in with_key if not _same_curve(h, key, "val_recall@1")]
                if not with_key:
                    continue
                # Validation runs every val_every epochs: the other rows are NaN.
                frame = pd.concat([h.set_index("epoch")[key] for h in with_key], axis=1).dropna(how="all")
                if frame.empty:
                    continue
                mean, std = frame.mean(axis=1), frame.std(axis=1).fillna(0.0)
                scale = 100.0 if key != "loss" else 1.0
                ax = axes[row, col]
                ax.plot(
                    mean.index, scale * mean, color=colour, linestyle=style, label=label,
                    marker="." if key != "loss" else None,
                )  # fmt: skip
                ax.fill_between(
                    mean.index,
                    scale * (mean - std),
                    scale * (mean + std),
                    color=colour,
                    alpha=0.2 if style == "-" else 0.1,
                )
                ax.set_xlabel("epoch")
                ax.set_ylabel("training loss" if key == "loss" else "R@1 (%)")
                ax.grid(alpha=0.3)
        axes[0, col].set_title(LOSS_TITLES.get(loss, loss))
        axes[0, col].legend(fontsize=8)
        if axes[1, col].get_legend_handles_labels()[0]:
            axes[1, col].legend(fontsize=7)
    fig.suptitle(f"{benchmark}: training curves" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
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
    """Table III layout per evaluated split (``metrics/<split>/<run>.json``; VehicleID has three).

    Each split's section opens with the recipe(s) and selection rule(s) behind its numbers;
    when some run selects a model other than the last epoch's, final and selected models
    are shown side by side. The CSV has one line per split, method and model (``models``:
    final, plus selected when shown), with recipe, selection, seeds, and mean and std of every
    metric and of the epoch. Returns the long table (:func:`build_table`, with ``split``).
    """
    by_split: dict[str, dict[str, MetricsRecord]] = defaultdict(dict)
    for path in metrics_files:
        path = Path(path)
        try:
            parse_run(path.stem)
        except ValueError as err:
            raise IAAError(f"{path}: {err}") from None
        by_split[path.parent.name][path.stem] = read_metrics(path)
    long_tables, wide_tables, sections = [], [], []
    for split, records in by_split.items():
        table = build_table(records, recall_k, losses)
        title = benchmark if len(by_split) == 1 else f"{benchmark} ({split})"
        trained = [r for name, r in records.items() if parse_run(name).loss is not None]
        header = describe([r.recipe for r in trained], [r.selection for r in trained])
        both = side_by_side(records)
        sections.append(format_markdown(table, title, recall_k, header=header, selected=both))
        long_tables.append(table.assign(split=split))
        wide_tables.append(wide_table(table, both).assign(split=split))
    wide = pd.concat(wide_tables, ignore_index=True)
    with atomic_path(table_csv) as tmp:
        wide[["split"] + [c for c in wide.columns if c != "split"]].to_csv(
            tmp, index=False, float_format="%.4f"
        )
    markdown = "\n".join(sections)
    with atomic_path(table_md) as tmp:
        tmp.write_text(markdown)
    histories = {p.parent.name: pd.read_csv(p) for p in history_files}
    plot_curves(histories, losses, curves_png, benchmark, subtitle=header)
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
