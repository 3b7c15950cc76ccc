import json

import numpy as np
import pandas as pd

from iaa.report import report_stage


def _metrics(r1: float) -> dict:
    return {"recall@1": r1, "recall@2": r1 + 0.1, "nmi": 0.5, "map@r": 0.2, "rp": 0.3}


def test_report_writes_mean_and_sample_std_over_seeds(tmp_path):
    values = {"pretrained": 0.30, "ms-baseline-seed0": 0.40, "ms-baseline-seed1": 0.44, "ms-iaa-seed0": 0.50}
    metrics, histories = [], []
    for run, r1 in values.items():
        path = tmp_path / "metrics" / f"{run}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(_metrics(r1)))
        metrics.append(path)
        if run != "pretrained":
            hist = tmp_path / "runs" / run / "history.csv"
            hist.parent.mkdir(parents=True)
            pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "val_recall@1": [0.2, r1]}).to_csv(
                hist, index=False
            )
            histories.append(hist)
    out = tmp_path / "tables"
    report_stage(
        "toy", metrics, histories, recall_k=[1, 2], losses=["ms"],
        table_md=out / "t.md", table_csv=out / "t.csv", curves_png=out / "c.png",
    )  # fmt: skip
    csv = pd.read_csv(out / "t.csv").set_index("method")
    assert list(csv.index) == ["Pretrained", "MS", "MS+IAA"]
    assert csv.loc["MS", "seeds"] == 2
    assert np.isclose(csv.loc["MS", "R@1 mean"], 42.0)
    assert np.isclose(csv.loc["MS", "R@1 std"], np.std([40.0, 44.0], ddof=1))
    assert np.isclose(csv.loc["MS+IAA", "R@2 mean"], 60.0)
    md = (out / "t.md").read_text()
    assert "| MS | 2 | 42.0 ± 2.8 | 52.0 ± 2.8 | 50.0 ± 0.0 | 20.0 ± 0.0 | 30.0 ± 0.0 |" in md
    assert "| Pretrained | 1 | 30.0 |" in md
    assert (out / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
