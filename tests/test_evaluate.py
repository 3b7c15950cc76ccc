"""The evaluation stage: protocol choice from the splits, metrics JSON (final and selected
models), one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from iaa.errors import IAAError
from iaa.evaluate import Protocol, evaluate_stage, resolve_protocol
from iaa.io import write_embeddings
from iaa.metrics import retrieval_metrics

KEYS = {
    "recall@1",
    "recall@2",
    "recall@4",
    "map@r",
    "rp",
    "nmi",
    "num_queries",
    "num_gallery",
    "num_classes",
    "num_queries_without_match",
}


def _data(rng, n, classes, d=8):
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, d))
    x = (centres[labels] + 0.8 * rng.standard_normal((n, d))).astype(np.float32)
    return x, labels


def _write(path, parts, metadata=None):
    emb = np.concatenate([x for _, x, _ in parts])
    labels = np.concatenate([y for _, _, y in parts])
    splits = [name for name, x, _ in parts for _ in range(len(x))]
    paths = [f"{s}/{i}.jpg" for i, s in enumerate(splits)]
    write_embeddings(path, emb, labels, splits, paths, metadata=metadata)


def _final(result):
    """The final model's metrics of an evaluate_stage result, without its epoch."""
    return {k: v for k, v in result["final"].items() if k != "epoch"}


def test_resolve_protocol():
    src = "embeddings file e.parquet"
    assert resolve_protocol(["train", "test"], None, source=src) == Protocol("all-vs-all", "test", "test")
    assert resolve_protocol(["query", "gallery", "train"], None, source=src) == Protocol(
        "query-gallery", "query", "gallery"
    )
    assert resolve_protocol(["query", "gallery"], "gallery", source=src).kind == "query-gallery"
    assert resolve_protocol(["test-800", "test-1600"], "test-1600", source=src) == Protocol(
        "all-vs-all", "test-1600", "test-1600"
    )
    with pytest.raises(IAAError, match=r"several protocols \(test-1600, test-800\)"):
        resolve_protocol(["test-800", "test-1600"], None, source=src)
    with pytest.raises(IAAError, match="no test split to evaluate; splits present: train"):
        resolve_protocol(["train"], None, source=src)
    with pytest.raises(IAAError, match="no split 'test-2400'; splits present: test-800"):
        resolve_protocol(["test-800"], "test-2400", source=src)
    with pytest.raises(IAAError, match="'train' is not a test split"):
        resolve_protocol(["train", "test"], "train", source=src)
    with pytest.raises(IAAError, match="needs both query and gallery"):
        resolve_protocol(["query", "test"], "query", source=src)


def test_all_vs_all_stage_writes_metrics(tmp_path, rng):
    train, train_y = _data(rng, 30, 5)
    test, test_y = _data(rng, 120, 25)
    emb = tmp_path / "emb.parquet"
    _write(emb, [("train", train, train_y + 100), ("test", test, test_y)])
    out = tmp_path / "metrics" / "test.json"
    result = evaluate_stage(emb, out, recall_k=[1, 2, 4], seed=3)
    assert json.loads(out.read_text()) == result
    got = _final(result)
    assert set(got) == KEYS
    ref = retrieval_metrics(test, test_y, test, test_y, ks=[1, 2, 4], exclude_self=True, seed=3)
    assert got == pytest.approx(ref)
    assert got["num_queries"] == got["num_gallery"] == 120
    # a features file without provenance metadata: the pretrained row
    assert result["final"]["epoch"] is None and result["selected"] == result["final"]
    assert (result["selection"], result["recipe"]) == ("last", None)


def test_vehicle_id_style_splits_are_evaluated_separately(tmp_path, rng):
    small, small_y = _data(rng, 60, 20)
    large, large_y = _data(rng, 90, 30)
    emb = tmp_path / "emb.parquet"
    _write(emb, [("test-800", small, small_y), ("test-1600", large, large_y)])
    with pytest.raises(IAAError) as err:
        evaluate_stage(emb, tmp_path / "m.json", recall_k=[1, 5])
    message = str(err.value)
    assert "\n" not in message and str(emb) in message and "test-1600, test-800" in message
    got = _final(evaluate_stage(emb, tmp_path / "m.json", recall_k=[1, 5], split="test-800", nmi=False))
    assert got["num_queries"] == 60
    ref = retrieval_metrics(small, small_y, small, small_y, ks=[1, 5], exclude_self=True, nmi=False)
    assert got == pytest.approx(ref)


def test_query_gallery_stage(tmp_path, rng):
    gallery, gallery_y = _data(rng, 100, 20)
    query, query_y = _data(rng, 50, 22)  # classes 20, 21: no match in the gallery
    emb = tmp_path / "emb.parquet"
    _write(emb, [("query", query, query_y), ("gallery", gallery, gallery_y)])
    got = _final(evaluate_stage(emb, tmp_path / "m.json", recall_k=[1, 2, 4]))
    ref = retrieval_metrics(query, query_y, gallery, gallery_y, ks=[1, 2, 4], exclude_self=False)
    assert got == pytest.approx(ref)
    assert got["num_queries"] == 50 and got["num_gallery"] == 100
    assert got["num_queries_without_match"] == int(np.isin(query_y, [20, 21]).sum())


def test_approximate_stage_reports_its_recall(tmp_path, rng):
    test, test_y = _data(rng, 200, 20)
    emb = tmp_path / "emb.parquet"
    _write(emb, [("test", test, test_y)])
    got = _final(
        evaluate_stage(emb, tmp_path / "m.json", recall_k=[1, 2], index="ivf", nlist=4, nprobe=4, nmi=False)
    )
    assert got["approx_recall_vs_exact"] == 1.0
    exact = _final(evaluate_stage(emb, tmp_path / "e.json", recall_k=[1, 2], nmi=False))
    assert got["recall@1"] == pytest.approx(exact["recall@1"])


def test_stage_errors_are_one_line(tmp_path, rng):
    x, y = _data(rng, 20, 5)
    emb = tmp_path / "emb.parquet"
    _write(emb, [("train", x, y)])
    out = tmp_path / "m.json"
    with pytest.raises(IAAError, match=r"emb.parquet: no test split to evaluate; splits present: train"):
        evaluate_stage(emb, out, recall_k=[1])
    with pytest.raises(IAAError, match="not a test split"):
        evaluate_stage(emb, out, recall_k=[1], split="train")
    with pytest.raises(IAAError, match="embeddings file not found"):
        evaluate_stage(tmp_path / "missing.parquet", out, recall_k=[1])
    with pytest.raises(IAAError, match="unknown index kind"):
        evaluate_stage(emb, out, recall_k=[1], index="lsh")
    with pytest.raises(IAAError, match="recall_k"):
        evaluate_stage(emb, out, recall_k=[0])
    singles = tmp_path / "singles.parquet"
    _write(singles, [("test", x[:5], np.arange(5))])
    with pytest.raises(IAAError, match="no query of split 'test' has a same-class item"):
        evaluate_stage(singles, out, recall_k=[1])
    bad = x.copy()
    bad[0, 0] = np.nan
    nan_path = tmp_path / "nan.parquet"
    _write(nan_path, [("test", bad, y)])
    with pytest.raises(IAAError, match="NaN"):
        evaluate_stage(nan_path, out, recall_k=[1])
    assert not out.exists()


# --------------------------------------------------------------------------- final and selected


def _recall_at(x, y, k):
    """Recall@k, all-vs-all, self excluded, by cosine similarity: an independent numpy version."""
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    top = np.argsort(-sim, axis=1)[:, :k]
    return float(np.mean((y[top] == y[:, None]).any(axis=1)))


def _meta(epoch, kind, selection="best_test", recipe="released"):
    return {
        "iaa.model": f"runs/r/{kind}.pt",
        "iaa.epoch": str(epoch),
        "iaa.selection": selection,
        "iaa.recipe": recipe,
        "iaa.epoch_kind": kind,
    }


def test_final_and_selected_models_are_evaluated_side_by_side(tmp_path, rng):
    train, train_y = _data(rng, 20, 4)
    test, test_y = _data(rng, 90, 15)
    other = test + 1.5 * rng.standard_normal(test.shape).astype(np.float32)  # another epoch's model
    final, selected = tmp_path / "r.parquet", tmp_path / "r.selected.parquet"
    _write(final, [("train", train, train_y + 50), ("test", test, test_y)], _meta(12, "final"))
    _write(selected, [("train", train, train_y + 50), ("test", other, test_y)], _meta(7, "selected"))
    out = tmp_path / "m.json"
    result = evaluate_stage(final, out, selected=selected, recall_k=[1, 2], nmi=False)
    assert json.loads(out.read_text()) == result
    assert set(result) == {"final", "selected", "selection", "recipe"}
    assert (result["selection"], result["recipe"]) == ("best_test", "released")
    assert (result["final"]["epoch"], result["selected"]["epoch"]) == (12, 7)
    for k in (1, 2):
        assert result["final"][f"recall@{k}"] == pytest.approx(_recall_at(test, test_y, k))
        assert result["selected"][f"recall@{k}"] == pytest.approx(_recall_at(other, test_y, k))
    assert result["selected"]["recall@1"] != pytest.approx(result["final"]["recall@1"])
    assert result["selected"]["num_queries"] == 90


def test_selected_at_the_final_epoch_is_a_copy_not_a_second_evaluation(tmp_path, rng, monkeypatch):
    import iaa.evaluate

    test, test_y = _data(rng, 60, 12)
    final, selected = tmp_path / "r.parquet", tmp_path / "r.selected.parquet"
    _write(final, [("test", test, test_y)], _meta(9, "final", "best_val", "paper"))
    _write(selected, [("test", test, test_y)], _meta(9, "selected", "best_val", "paper"))
    calls = []
    real = iaa.evaluate.evaluate_file
    monkeypatch.setattr(
        iaa.evaluate, "evaluate_file", lambda path, *a, **kw: calls.append(path) or real(path, *a, **kw)
    )
    result = evaluate_stage(final, tmp_path / "m.json", selected=selected, recall_k=[1], nmi=False)
    assert calls == [final]
    assert result["selected"] == result["final"] and result["final"]["epoch"] == 9
    assert result["selected"]["recall@1"] == pytest.approx(_recall_at(test, test_y, 1))
    assert (result["selection"], result["recipe"]) == ("best_val", "paper")


def test_without_selected_the_final_model_is_reported_under_rule_last(tmp_path, rng):
    test, test_y = _data(rng, 40, 8)
    final = tmp_path / "r.parquet"
    _write(final, [("test", test, test_y)], _meta(5, "final"))
    result = evaluate_stage(final, tmp_path / "m.json", recall_k=[1], nmi=False)
    assert result["selected"] == result["final"] and result["final"]["epoch"] == 5
    assert (result["selection"], result["recipe"]) == ("last", "released")


def test_final_and_selected_mix_ups_are_one_line_errors(tmp_path, rng):
    test, test_y = _data(rng, 40, 8)
    paths = {}
    for name, meta in {
        "final": _meta(5, "final"),
        "selected": _meta(3, "selected"),
        "other_rule": _meta(3, "selected", selection="best_val"),
        "bad_epoch": {**_meta(3, "selected"), "iaa.epoch": "three"},
        "other_run": {**_meta(3, "selected"), "iaa.model": "runs/another-run/selected.pt"},
    }.items():
        paths[name] = tmp_path / f"{name}.parquet"
        _write(paths[name], [("test", test, test_y)], meta)
    out = tmp_path / "m.json"
    with pytest.raises(IAAError, match="selected model's embeddings"):
        evaluate_stage(paths["selected"], out, recall_k=[1])
    with pytest.raises(IAAError, match="final model's embeddings"):
        evaluate_stage(paths["final"], out, selected=paths["final"], recall_k=[1])
    with pytest.raises(IAAError, match="not the same run's"):
        evaluate_stage(paths["final"], out, selected=paths["other_rule"], recall_k=[1])
    with pytest.raises(IAAError, match="not the same run's .*another-run"):
        evaluate_stage(paths["final"], out, selected=paths["other_run"], recall_k=[1])
    with pytest.raises(IAAError, match=r"bad_epoch.parquet: metadata iaa.epoch is 'three'"):
        evaluate_stage(paths["final"], out, selected=paths["bad_epoch"], recall_k=[1])
    assert not out.exists()
