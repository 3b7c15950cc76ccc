"""Class-level figures (Fig. 3/4, 5, 9a) against independent numpy computations."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from iaa.class_figures import (
    alpha_figure,
    global_distance_figure,
    read_class_stats,
    register,
    scatter_figure,
)
from iaa.errors import IAAError
from tests.registered_cli import registered_parser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _vectors(values):
    flat = pa.array(np.asarray(values, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, np.asarray(values).shape[1])


def _write_stats(path, rng, counts=(1, 2, 3, 5, 6, 7, 9, 12, 20, 40, 8, 6), dim=4, drop=None):
    c = len(counts)
    mean = rng.standard_normal((c, dim))
    var = rng.random((c, dim)) * 0.5 + 0.05
    var[np.asarray(counts) == 1] = 0.0  # a single image has no variance
    var_cr = var + rng.random((c, dim)) * 0.1
    columns = {
        "label": pa.array(np.arange(100, 100 + c, dtype=np.int64)),
        "count": pa.array(np.asarray(counts, dtype=np.int64)),
        "mean": _vectors(mean),
        "var": _vectors(var),
        "var_corrected": _vectors(var_cr),
        "alpha": pa.array(rng.random(c)),
    }
    if drop:
        columns.pop(drop)
    pq.write_table(pa.table(columns), path)
    # what the file holds, as float64 (the vectors were stored as float32)
    return {
        "label": np.arange(100, 100 + c),
        "count": np.asarray(counts),
        "mean": mean.astype(np.float32).astype(np.float64),
        "var": var.astype(np.float32).astype(np.float64),
        "var_corrected": var_cr.astype(np.float32).astype(np.float64),
    }


def _is_png(path):
    return path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("p", [1, 2, 3])
def test_scatter_csv_matches_numpy_pairs(tmp_path, rng, p):
    s = _write_stats(tmp_path / "s.parquet", rng)
    png, csv = tmp_path / "fig" / "scatter.png", tmp_path / "fig" / "scatter.csv"
    out = scatter_figure(tmp_path / "s.parquet", png, csv, p=p, min_count=6)
    assert _is_png(png)
    table = pd.read_csv(csv)
    assert list(table.columns) == ["class_i", "class_j", "mean_distance", "covariance_distance"]
    keep = s["count"] >= 6  # classes with more than 5 images
    kept = s["label"][keep]
    want_pairs = {(int(a), int(b)) for k, a in enumerate(kept) for b in kept[k + 1 :]}
    assert set(zip(table["class_i"], table["class_j"])) == want_pairs  # all pairs: fewer than max_pairs
    assert len(table) == len(want_pairs) == out["pairs"]
    index = {int(label): k for k, label in enumerate(s["label"])}
    for _, row in table.iterrows():
        a, b = index[int(row["class_i"])], index[int(row["class_j"])]
        d_m = np.linalg.norm(s["mean"][a] ** 2 - s["mean"][b] ** 2, ord=p)
        d_cv = np.linalg.norm(s["var"][a] - s["var"][b], ord=p)
        assert row["mean_distance"] == pytest.approx(d_m, rel=1e-12)
        assert row["covariance_distance"] == pytest.approx(d_cv, rel=1e-12)
    rho = spearmanr(table["mean_distance"], table["covariance_distance"]).statistic
    assert out["spearman"] == pytest.approx(rho, abs=1e-12)


def test_scatter_subsamples_with_the_seed(tmp_path, rng):
    s = _write_stats(tmp_path / "s.parquet", rng, counts=[10] * 30)
    csvs = []
    for k, seed in enumerate((0, 0, 1)):
        csv = tmp_path / f"{k}.csv"
        scatter_figure(tmp_path / "s.parquet", None, csv, max_pairs=50, seed=seed)
        csvs.append(pd.read_csv(csv))
    assert len(csvs[0]) == 50 and csvs[0].equals(csvs[1]) and not csvs[0].equals(csvs[2])
    pairs = list(zip(csvs[0]["class_i"], csvs[0]["class_j"]))
    assert len(set(pairs)) == 50 and all(a < b for a, b in pairs) and pairs == sorted(pairs)
    a, b = (int(x) - 100 for x in pairs[7])
    d_cv = np.linalg.norm(s["var"][a] - s["var"][b])
    assert csvs[0]["covariance_distance"][7] == pytest.approx(d_cv, rel=1e-12)
    assert not (tmp_path / "0.png").exists()


def test_global_distance_matches_numpy(tmp_path, rng):
    s = _write_stats(tmp_path / "s.parquet", rng)
    png, csv = tmp_path / "g.png", tmp_path / "g.csv"
    global_distance_figure(tmp_path / "s.parquet", png, csv, p=2)
    assert _is_png(png)
    table = pd.read_csv(csv)
    assert list(table.columns) == ["label", "count", "distance", "distance_corrected"]
    use = s["count"] > 1
    g = (s["count"][use, None] * s["var"][use]).sum(0) / s["count"][use].sum()  # Eq. 14
    np.testing.assert_array_equal(table["label"], s["label"])
    np.testing.assert_array_equal(table["count"], s["count"])
    np.testing.assert_allclose(table["distance"], np.linalg.norm(s["var"] - g, axis=1), rtol=1e-12)
    np.testing.assert_allclose(
        table["distance_corrected"], np.linalg.norm(s["var_corrected"] - g, axis=1), rtol=1e-12
    )
    global_distance_figure(tmp_path / "s.parquet", None, csv, p=1)
    np.testing.assert_allclose(pd.read_csv(csv)["distance"], np.abs(s["var"] - g).sum(1), rtol=1e-12)


def test_alpha_matches_eq16(tmp_path):
    png, csv = tmp_path / "a.png", tmp_path / "a.csv"
    alpha_figure(png, csv, betas=(0.1, 0.5), tau=40, n_max=60)
    assert _is_png(png)
    table = pd.read_csv(csv)
    assert list(table.columns) == ["n", "beta", "alpha"] and len(table) == 2 * 60
    for beta in (0.1, 0.5):
        rows = table[table["beta"] == beta].set_index("n")["alpha"]
        assert list(rows.index) == list(range(1, 61))
        for n in (1, 2, 5, 39):
            assert rows[n] == pytest.approx(1 / (1 + math.log(1 + beta * (n - 1))), rel=1e-12)
        assert rows[40] == 0.0 and rows[60] == 0.0  # n >= tau: no correction
    assert rows[1] == 1.0


def test_stats_stage_output_feeds_the_figures(tmp_path, rng):
    from iaa.io import write_embeddings
    from iaa.stats import stats_stage

    labels = np.repeat(np.arange(6), [1, 7, 8, 6, 9, 3])
    emb = rng.standard_normal((len(labels), 5)).astype(np.float32)
    write_embeddings(tmp_path / "e.parquet", emb, labels, ["train"] * len(labels),
                     [f"p{i}" for i in range(len(labels))])  # fmt: skip
    stats_stage(tmp_path / "e.parquet", tmp_path / "s.parquet")
    s = read_class_stats(tmp_path / "s.parquet")
    assert s["mean"].shape == (6, 5) and s["var"].dtype == np.float64
    out = scatter_figure(tmp_path / "s.parquet", tmp_path / "x.png", tmp_path / "x.csv")
    assert out["classes"] == 4 and out["pairs"] == 6
    x = emb[labels == 1].astype(np.float64)
    y = emb[labels == 2].astype(np.float64)
    first = pd.read_csv(tmp_path / "x.csv").iloc[0]
    assert (first["class_i"], first["class_j"]) == (1, 2)
    assert first["covariance_distance"] == pytest.approx(np.linalg.norm(x.var(0) - y.var(0)), rel=1e-5)
    assert first["mean_distance"] == pytest.approx(np.linalg.norm(x.mean(0) ** 2 - y.mean(0) ** 2), rel=1e-5)


def _one_line(err):
    text = str(err.value)
    assert text and "\n" not in text
    return text


def test_errors_are_one_line(tmp_path, rng):
    _write_stats(tmp_path / "bad.parquet", rng, drop="var_corrected")
    with pytest.raises(IAAError) as err:
        global_distance_figure(tmp_path / "bad.parquet", tmp_path / "g.png", tmp_path / "g.csv")
    assert "var_corrected" in _one_line(err)
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "g.csv").exists()
    _write_stats(tmp_path / "few.parquet", rng, counts=(1, 3, 8, 1))
    with pytest.raises(IAAError) as err:
        scatter_figure(tmp_path / "few.parquet", tmp_path / "s.png", tmp_path / "s.csv")  # one class >= 6
    assert "at least 2 classes" in _one_line(err)
    _write_stats(tmp_path / "single.parquet", rng, counts=(1, 1, 2))
    with pytest.raises(IAAError) as err:
        global_distance_figure(tmp_path / "single.parquet", None, tmp_path / "g.csv")
    assert "at least 2 classes" in _one_line(err)
    with pytest.raises(IAAError) as err:
        scatter_figure(tmp_path / "missing.parquet", None, tmp_path / "s.csv")
    assert "not found" in _one_line(err)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(IAAError) as err:
        scatter_figure(tmp_path / "junk.parquet", None, tmp_path / "s.csv")
    _one_line(err)
    with pytest.raises(IAAError) as err:
        alpha_figure(None, tmp_path / "a.csv", betas=())
    _one_line(err)
    assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob("*.png"))


def _parser():
    return registered_parser(register)


def test_cli_draws_only_the_given_figures(tmp_path, rng):
    _write_stats(tmp_path / "s.parquet", rng)
    parser = _parser()
    args = parser.parse_args(["class-figures", "--alpha-csv", str(tmp_path / "a.csv"), "--betas", "0.2,1",
                              "--tau", "10"])  # fmt: skip
    assert args.p == 2 and args.min_count == 6 and args.seed == 0
    args.func(args)
    table = pd.read_csv(tmp_path / "a.csv")
    assert sorted(set(table["beta"])) == [0.2, 1.0] and len(table) == 200
    assert table[(table["beta"] == 1.0) & (table["n"] == 3)]["alpha"].item() == pytest.approx(
        1 / (1 + math.log(3))
    )
    assert table[table["n"] >= 10]["alpha"].eq(0).all()
    assert not (tmp_path / "a.png").exists()
    default = parser.parse_args(["class-figures"])
    assert default.betas == [0.05, 0.1, 0.2, 0.5, 1.0] and default.tau == 40

    argv = ["class-figures", "--stats", str(tmp_path / "s.parquet"), "--p", "1"]
    argv += ["--scatter-png", str(tmp_path / "sc.png"), "--scatter-csv", str(tmp_path / "sc.csv")]
    argv += ["--global-csv", str(tmp_path / "g.csv"), "--betas", "0.1", "0.5"]
    args = parser.parse_args(argv)
    args.func(args)
    assert _is_png(tmp_path / "sc.png") and (tmp_path / "g.csv").is_file()
    assert not (tmp_path / "g.png").exists()
    want = pd.read_csv(tmp_path / "sc.csv")
    scatter_figure(tmp_path / "s.parquet", None, tmp_path / "ref.csv", p=1)
    pd.testing.assert_frame_equal(want, pd.read_csv(tmp_path / "ref.csv"))

    for argv in (["class-figures"], ["class-figures", "--global-png", str(tmp_path / "x.png")]):
        args = parser.parse_args(argv)
        with pytest.raises(IAAError) as err:
            args.func(args)
        _one_line(err)
    helps = [a.help for a in parser._subparsers._group_actions[0].choices["class-figures"]._actions]
    assert all(helps)


def test_module_import_is_light():
    code = (
        "import sys, iaa.class_figures; "
        "heavy = [m for m in ('torch', 'matplotlib', 'sklearn', 'numpy', 'pyarrow') if m in sys.modules]; "
        "print(heavy); sys.exit(bool(heavy))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
