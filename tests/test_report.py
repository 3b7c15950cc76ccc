"""The report stage: Table III from hand-made metrics JSONs (final and selected models)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.axes
import numpy as np
import pandas as pd
import pytest

from iaa.errors import IAAError
from iaa.report import report_stage


def _metrics(r1: float) -> dict:
    return {"recall@1": r1, "recall@2": r1 + 0.1, "nmi": 0.5, "map@r": 0.2, "rp": 0.3}


def _record(final: dict, selected: dict, selection: str, recipe: str | None, epochs=(None, None)) -> dict:
    """A metrics JSON as `iaa evaluate` writes it."""
    return {
        "final": {**final, "epoch": epochs[0]},
        "selected": {**selected, "epoch": epochs[1]},
        "selection": selection,
        "recipe": recipe,
    }


def _write_runs(root: Path, records: dict[str, dict]) -> tuple[list[Path], list[Path]]:
    """metrics/<split>/<run>.json and runs/<run>/history.csv files for ``records``."""
    metrics, histories = [], []
    for run, record in records.items():
        path = root / "metrics" / "test" / f"{run}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        metrics.append(path)
        if run != "pretrained":
            hist = root / "runs" / run / "history.csv"
            hist.parent.mkdir(parents=True)
            r1 = record["final"]["recall@1"]
            pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "val_recall@1": [0.2, r1]}).to_csv(
                hist, index=False
            )
            histories.append(hist)
    return metrics, histories


def _report(root: Path, metrics: list[Path], histories: list[Path]) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    out = root / "tables"
    long = report_stage(
        "toy", metrics, histories, recall_k=[1, 2], losses=["ms"],
        table_md=out / "t.md", table_csv=out / "t.csv", curves_png=out / "c.png",
    )  # fmt: skip
    assert (out / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return (out / "t.md").read_text(), pd.read_csv(out / "t.csv"), long


def test_rule_last_keeps_the_table3_layout_with_a_provenance_line(tmp_path):
    values = {"pretrained": 0.30, "ms-baseline-seed0": 0.40, "ms-baseline-seed1": 0.44, "ms-iaa-seed0": 0.50}
    records = {
        run: _record(_metrics(r1), _metrics(r1), "last", None if run == "pretrained" else "paper", (12, 12))
        for run, r1 in values.items()
    }
    md, csv, _ = _report(tmp_path, *_write_runs(tmp_path, records))
    csv = csv.set_index("method")
    assert list(csv.index) == ["Pretrained", "MS", "MS+IAA"]
    assert set(csv["models"]) == {"final"}  # no selection: no second line per method
    assert csv.loc["MS", "seeds"] == 2
    assert (csv.loc["MS", "recipe"], csv.loc["MS", "selection"]) == ("paper", "last")
    assert np.isclose(csv.loc["MS", "R@1 mean"], 42.0)
    assert np.isclose(csv.loc["MS", "R@1 std"], np.std([40.0, 44.0], ddof=1))
    assert np.isclose(csv.loc["MS+IAA", "R@2 mean"], 60.0)
    lines = md.splitlines()
    assert lines[2] == "recipe: paper; model = last epoch (no selection; the paper's protocol)"
    assert "| method | seeds | R@1 | R@2 | NMI | MAP@R | RP |" in lines
    assert "| MS | 2 | 42.0 ± 2.8 | 52.0 ± 2.8 | 50.0 ± 0.0 | 20.0 ± 0.0 | 30.0 ± 0.0 |" in lines
    assert "| Pretrained | 1 | 30.0 | 40.0 | 50.0 | 20.0 | 30.0 |" in lines
    assert " / " not in md


def test_selection_shows_final_and_selected_side_by_side(tmp_path):
    # (final R@1, selected R@1, selected epoch) per run; the final epoch is 20
    runs = {
        "ms-baseline-seed0": (0.40, 0.46, 11),
        "ms-baseline-seed1": (0.44, 0.47, 14),
        "ms-baseline-seed2": (0.42, 0.42, 20),
        "ms-iaa-seed0": (0.50, 0.55, 9),
    }
    records = {"pretrained": _record(_metrics(0.3), _metrics(0.3), "last", None)}
    for run, (final, chosen, epoch) in runs.items():
        records[run] = _record(_metrics(final), _metrics(chosen), "best_test", "released", (20, epoch))
    md, csv, long = _report(tmp_path, *_write_runs(tmp_path, records))

    def cell(values: list[float]) -> str:
        v = 100 * np.array(values)
        return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"

    base = [runs[f"ms-baseline-seed{s}"] for s in range(3)]
    final_r1, sel_r1 = cell([f for f, _, _ in base]), cell([c for _, c, _ in base])
    final_r2, sel_r2 = cell([f + 0.1 for f, _, _ in base]), cell([c + 0.1 for _, c, _ in base])
    epochs = np.array([e for _, _, e in base], dtype=float)
    epoch_cell = f"{epochs.mean():.1f} ± {epochs.std(ddof=1):.1f}"
    lines = md.splitlines()
    assert lines[2] == (
        "recipe: released; selected = best test R@1 epoch (the released code's protocol; optimistic, "
        "Musgrave et al. 2020)"
    )
    assert "| method | seeds | selected epoch | R@1 | R@2 | NMI | MAP@R | RP |" in lines
    assert f"| MS | 3 | {epoch_cell} | {final_r1} / {sel_r1} | {final_r2} / {sel_r2} |" in md
    assert "| MS+IAA | 1 | 9 | 50.0 / 55.0 | 60.0 / 65.0 |" in md
    assert "| Pretrained | 1 | — | 30.0 | " in md  # untrained: no selected model, one value

    wide = csv.set_index(["method", "models"])
    assert list(wide.index) == [
        (m, k) for m in ("Pretrained", "MS", "MS+IAA") for k in ("final", "selected")
    ]  # fmt: skip
    assert (wide.loc[("MS", "selected"), "recipe"], wide.loc[("MS", "selected"), "selection"]) == (
        "released",
        "best_test",
    )
    assert pd.isna(wide.loc[("Pretrained", "final"), "recipe"])  # the pretrained features have none
    assert wide.loc[("Pretrained", "final"), "selection"] == "last"
    sel = 100 * np.array([c for _, c, _ in base])
    assert wide.loc[("MS", "selected"), "R@1 mean"] == pytest.approx(sel.mean(), abs=1e-4)
    assert wide.loc[("MS", "selected"), "R@1 std"] == pytest.approx(sel.std(ddof=1), abs=1e-4)
    assert wide.loc[("MS", "final"), "R@1 mean"] == pytest.approx(42.0, abs=1e-4)
    assert wide.loc[("MS", "selected"), "epoch mean"] == pytest.approx(epochs.mean(), abs=1e-4)
    assert wide.loc[("MS", "final"), "epoch mean"] == pytest.approx(20.0)
    assert wide.loc[("MS", "selected"), "seeds"] == 3
    assert set(long["models"]) == {"final", "selected"}


def test_curves_draw_the_selection_recall_dashed(tmp_path, monkeypatch):
    drawn: list[tuple[str, str]] = []
    real = matplotlib.axes.Axes.plot

    def recording(self, *args, **kwargs):
        drawn.append((kwargs.get("label", ""), kwargs.get("linestyle", "-")))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording)
    records = {"ms-iaa-seed0": _record(_metrics(0.5), _metrics(0.6), "best_val", "paper", (3, 2))}
    metrics, histories = _write_runs(tmp_path, records)
    pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [1.0, 0.6, 0.5],
            "val_recall@1": [0.2, 0.4, 0.5],
            "selection_recall@1": [0.3, float("nan"), 0.35],
        }
    ).to_csv(histories[0], index=False)
    _report(tmp_path, metrics, histories)
    assert ("MS+IAA selection R@1", "--") in drawn
    assert ("MS+IAA validation R@1", "-") in drawn


def test_old_flat_metrics_json_is_a_one_line_error(tmp_path):
    path = tmp_path / "metrics" / "test" / "ms-iaa-seed0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_metrics(0.5)))
    with pytest.raises(IAAError, match=r"ms-iaa-seed0.json: no 'final' key") as err:
        report_stage(
            "toy", [path], [], recall_k=[1], losses=["ms"],
            table_md=tmp_path / "t.md", table_csv=tmp_path / "t.csv", curves_png=tmp_path / "c.png",
        )  # fmt: skip
    assert "\n" not in str(err.value)
    bad = _record(_metrics(0.5), _metrics(0.5), "best", "paper")
    path.write_text(json.dumps(bad))
    with pytest.raises(IAAError, match="selection is 'best'"):
        report_stage(
            "toy", [path], [], recall_k=[1], losses=["ms"],
            table_md=tmp_path / "t.md", table_csv=tmp_path / "t.csv", curves_png=tmp_path / "c.png",
        )  # fmt: skip
