"""Stage ``sweep-figure``: the paper's sweep figures (Figs. 6-8, 9b, 10, 11) from the runs' files.

The workflow hands a spec (JSON): the figure's key, title, axis labels and points, each
point a series, an x value (None: a horizontal reference, e.g. the baseline) and the files
of its seeds. Recall figures read the selected model's R@1 (percent) from ``iaa evaluate``
JSONs; Fig. 10 reads the per-epoch mining counts of the training histories (``hard_negatives``,
``hard_positives``, ``synthetic_share``); Fig. 11 the histories' ``seconds_per_iteration``
(mean over epochs) and ``peak_memory_mb`` (max). Every figure comes with the CSV of the
points drawn.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from iaa.ablations.tables import add_spec_argument, parse_spec, read_value
from iaa.atomic import atomic_path
from iaa.errors import IAAError
from iaa.seed_stats import mean_std


def _history(path: str) -> Any:
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise IAAError(f"cannot read history {path}: {err}") from None


def _column(frame: Any, name: str, path: str) -> Any:
    if name not in frame.columns:
        raise IAAError(f"history {path} has no column {name!r}; retrain the run with this version")
    return frame[name].astype(float)


def recall_points(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (series, x, mean, std, seeds) of a recall sweep; x is NaN for a reference line."""
    rows = []
    for p in spec["points"]:
        values = [read_value(path, "metrics", p.get("metric", "recall@1")) for path in p["paths"]]
        mean, std = mean_std(values)
        x = math.nan if p["x"] is None else float(p["x"])
        rows.append({"series": p["series"], "x": x, "mean": mean, "std": std, "seeds": len(values)})
    return rows


def history_points(spec: dict[str, Any], columns: dict[str, str]) -> list[dict[str, Any]]:
    """Per-epoch means over seeds of history columns (``columns``: output name -> history
    column), one row per (series, epoch)."""
    import numpy as np

    rows = []
    for p in spec["points"]:
        frames = [_history(path) for path in p["paths"]]
        for out_name, col in columns.items():
            stacked = np.stack([_column(f, col, path).to_numpy() for f, path in zip(frames, p["paths"])])
            epochs = frames[0]["epoch"].to_numpy()
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(stacked, axis=0) if np.isfinite(stacked).any() else stacked[0]
            for e, v in zip(epochs, mean):
                rows.append({"series": p["series"], "quantity": out_name, "epoch": int(e), "value": float(v)})
    return rows


def cost_points(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Fig. 11: per M, seconds per iteration (mean over epochs and seeds) and peak memory (max)."""
    rows = []
    for p in spec["points"]:
        frames = [_history(path) for path in p["paths"]]
        secs = [
            float(_column(f, "seconds_per_iteration", path).mean()) for f, path in zip(frames, p["paths"])
        ]
        mem = [float(_column(f, "peak_memory_mb", path).max()) for f, path in zip(frames, p["paths"])]
        mean_s, std_s = mean_std(secs)
        rows.append({"x": float(p["x"]), "seconds_per_iteration": mean_s, "seconds_std": std_s,
                     "peak_memory_mb": max(mem), "seeds": len(frames)})  # fmt: skip
    return sorted(rows, key=lambda r: r["x"])


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _plot_recall(spec: dict[str, Any], rows: list[dict[str, Any]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for series in dict.fromkeys(r["series"] for r in rows):
        pts = sorted((r for r in rows if r["series"] == series), key=lambda r: r["x"])
        if all(math.isnan(r["x"]) for r in pts):
            ax.axhline(pts[0]["mean"], ls="--", color="grey", label=f"{series} ({pts[0]['mean']:.1f})")
            continue
        xs = [r["x"] for r in pts]
        ax.errorbar(xs, [r["mean"] for r in pts], yerr=[r["std"] for r in pts], marker="o", capsize=3,
                    label=series)  # fmt: skip
    ax.set_xlabel(spec["xlabel"])
    ax.set_ylabel(spec["ylabel"])
    ax.set_title(f"{spec['title']}\n{spec['benchmark']}, {spec['loss']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out_png)


def _plot_history(spec: dict[str, Any], rows: list[dict[str, Any]], quantity: str, ylabel: str, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for series in dict.fromkeys(r["series"] for r in rows):
        pts = [r for r in rows if r["series"] == series and r["quantity"] == quantity]
        ax.plot([r["epoch"] for r in pts], [r["value"] for r in pts], marker=".", label=series)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{spec['title']}\n{spec['benchmark']}, {spec['loss']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out)


def _plot_cost(spec: dict[str, Any], rows: list[dict[str, Any]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    xs = [r["x"] for r in rows]
    a.errorbar(xs, [r["seconds_per_iteration"] for r in rows], yerr=[r["seconds_std"] for r in rows],
               marker="o", capsize=3)  # fmt: skip
    a.set_ylabel("seconds per iteration")
    b.plot(xs, [r["peak_memory_mb"] for r in rows], marker="o")
    b.set_ylabel("peak memory (MB; GPU allocated on CUDA, process RSS on CPU)")
    for ax in (a, b):
        ax.set_xlabel(spec["xlabel"])
        ax.grid(alpha=0.3)
    fig.suptitle(f"{spec['title']} ({spec['benchmark']}, {spec['loss']}; M = 0 is the baseline)", fontsize=9)
    fig.tight_layout()
    _save(fig, out_png)


def sweep_figure_stage(spec: dict[str, Any], out_png: list[Path], out_csv: list[Path]) -> None:
    """Draw figure ``spec["key"]``: one PNG + CSV, or two for Fig. 10 (a: hard negatives, b:
    synthetic share of the mined pairs)."""
    key = spec["key"]
    if key == "fig10":
        if len(out_png) != 2 or len(out_csv) != 2:
            raise IAAError("fig10 draws two panels: give two --out-png and two --out-csv paths")
        rows = history_points(
            spec, {"hard_negatives": "hard_negatives", "hard_positives": "hard_positives",
                   "synthetic_share": "synthetic_share"},
        )  # fmt: skip
        _plot_history(spec, rows, "hard_negatives", "hard negative pairs kept per batch", out_png[0])
        _write_csv([r for r in rows if r["quantity"] != "synthetic_share"], out_csv[0])
        iaa_rows = [r for r in rows if r["quantity"] == "synthetic_share" and r["series"] == "IAA"]
        _plot_history(
            spec, iaa_rows, "synthetic_share", "share of mined pairs that are synthetic", out_png[1]
        )
        _write_csv(iaa_rows, out_csv[1])
        return
    if len(out_png) != 1 or len(out_csv) != 1:
        raise IAAError(f"{key} draws one figure: give one --out-png and one --out-csv path")
    if key == "fig11":
        rows = cost_points(spec)
        _plot_cost(spec, rows, out_png[0])
    else:
        rows = recall_points(spec)
        _plot_recall(spec, rows, out_png[0])
    _write_csv(rows, out_csv[0])


def _cmd(a: argparse.Namespace) -> None:
    sweep_figure_stage(parse_spec(a.spec), a.out_png, a.out_csv)


def register(stage) -> None:
    """Add the ``sweep-figure`` subcommand (``stage(name, fn, help)`` returns its parser)."""
    sp = stage("sweep-figure", _cmd, "one of the paper's sweep figures (Figs. 6-8, 9b, 10, 11)")
    add_spec_argument(sp, "key, title, xlabel, ylabel, benchmark, loss and points [{series, x, paths}]")
    sp.add_argument("--out-png", type=Path, nargs="+", required=True, help="the figure(s) (PNG)")
    sp.add_argument("--out-csv", type=Path, nargs="+", required=True, help="the points drawn (CSV)")
