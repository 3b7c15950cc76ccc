"""FAISS indexes and their search (iaa.index, iaa.search): the index and search stages."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import pytest

from iaa.errors import IAAError
from iaa.index import (
    build_index,
    ids_path,
    index_kind,
    index_stage,
    l2_normalize,
    read_index,
    read_index_ids,
    write_index,
)
from iaa.io import write_embeddings
from iaa.search import search, search_stage


def brute_top_k(q, g, k, exclude_self=False):
    scores = l2_normalize(q).astype(np.float64) @ l2_normalize(g).astype(np.float64).T
    out_s, out_i = [], []
    for i, row in enumerate(scores):
        order = np.lexsort((np.arange(len(g)), -row))
        if exclude_self:
            order = order[order != i]
        out_i.append(order[:k])
        out_s.append(row[order[:k]])
    return np.array(out_s), np.array(out_i)


def quantised(rng, n, d=6):
    x = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        x[i, rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def test_l2_normalize(rng):
    x = rng.standard_normal((20, 7)).astype(np.float64) * 5
    x[3] = 0
    x[5] = x[4]
    out = l2_normalize(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    norms = np.linalg.norm(out, axis=1)
    np.testing.assert_allclose(np.delete(norms, 3), 1.0, atol=1e-6)
    assert norms[3] == 0
    assert np.array_equal(out[4], out[5])
    assert not np.shares_memory(out, x)
    with pytest.raises(ValueError):
        l2_normalize(np.ones(3))


def test_flat_search_is_exact_with_ties_at_the_kth_place(rng):
    g = quantised(rng, 300)  # scores are multiples of 1/4: huge ties
    q = quantised(rng, 40)
    index = build_index(g, "flat")
    assert index_kind(index) == "flat" and index.ntotal == 300
    for k in (1, 5, 50):
        scores, ids = search(index, q, k)
        ref_s, ref_i = brute_top_k(q, g, k)
        assert np.array_equal(ids, ref_i)
        np.testing.assert_allclose(scores, ref_s, atol=1e-6)


def test_search_excludes_self_and_pads_short_results(rng):
    g = quantised(rng, 30)
    index = build_index(g)
    scores, ids = search(index, g, 4, exclude_ids=np.arange(30))
    _, ref_i = brute_top_k(g, g, 4, exclude_self=True)
    assert np.array_equal(ids, ref_i)
    assert not (ids == np.arange(30)[:, None]).any()
    scores, ids = search(index, g[:2], 35)
    assert (ids[:, 30:] == -1).all() and np.isneginf(scores[:, 30:]).all()
    assert sorted(ids[0, :30]) == list(range(30))


def test_approximate_kinds(rng):
    g = rng.standard_normal((500, 16)).astype(np.float32)
    ivf = build_index(g, "ivf", nlist=8, nprobe=8, seed=0)
    assert index_kind(ivf) == "ivf" and faiss.extract_index_ivf(ivf).nprobe == 8
    _, ids = search(ivf, g[:50], 5)
    _, ref = brute_top_k(g[:50], g, 5)
    assert np.array_equal(ids, ref)  # all lists probed: exact
    hnsw = build_index(g, "hnsw", m=16)
    assert index_kind(hnsw) == "hnsw"
    _, ids = search(hnsw, g[:50], 5, ef_search=64)
    overlap = np.mean([np.intersect1d(a, b).size / 5 for a, b in zip(ids, ref)])
    assert overlap > 0.9
    with pytest.raises(ValueError, match="unknown index kind"):
        build_index(g, "pq")


def test_write_read_round_trip(tmp_path, rng):
    g = rng.standard_normal((50, 8)).astype(np.float32)
    for kind in ("flat", "ivf", "hnsw"):
        index = build_index(g, kind, nlist=4)
        path = tmp_path / "sub" / f"{kind}.faiss"
        write_index(index, path)
        assert [p.name for p in path.parent.iterdir()] == [path.name]
        back = read_index(path)
        assert back.ntotal == 50 and index_kind(back) == kind
        assert np.array_equal(search(back, g[:5], 3)[1], search(index, g[:5], 3)[1])
        path.unlink()


def test_read_index_errors_are_one_line(tmp_path):
    with pytest.raises(IAAError, match="FAISS index not found") as err:
        read_index(tmp_path / "missing.faiss")
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.faiss"
    bad.write_bytes(b"not an index")
    with pytest.raises(IAAError, match="cannot read FAISS index") as err:
        read_index(bad)
    assert "\n" not in str(err.value)


def _write_inshop(path, rng):
    g = rng.standard_normal((40, 8)).astype(np.float32)
    gl = np.arange(40) % 10
    q = g[:12] + 0.01 * rng.standard_normal((12, 8)).astype(np.float32)
    ql = gl[:12]
    t = rng.standard_normal((5, 8)).astype(np.float32)
    emb = np.concatenate([t, g, q])
    labels = np.concatenate([np.arange(5) + 100, gl, ql])
    splits = ["train"] * 5 + ["gallery"] * 40 + ["query"] * 12
    paths = [f"img/{s}/{i}.jpg" for i, s in enumerate(splits)]
    write_embeddings(path, emb, labels, splits, paths)
    return q, ql, g, gl, paths


def test_index_and_search_stages_query_gallery(tmp_path, rng):
    emb_path = tmp_path / "emb.parquet"
    q, ql, g, gl, paths = _write_inshop(emb_path, rng)
    index_path = tmp_path / "index" / "run" / "gallery.faiss"
    assert index_stage(emb_path, index_path, split="gallery") == index_path
    ids = read_index_ids(index_path)
    assert ids_path(index_path).name == "gallery.faiss.ids.parquet"
    assert list(ids.columns) == ["path", "label", "split"]
    assert ids["path"].tolist() == paths[5:45] and ids["label"].tolist() == gl.tolist()
    out = tmp_path / "neighbours.parquet"
    frame = search_stage(index_path, emb_path, 3, out)  # split inferred: query
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, frame)
    assert list(back.columns) == [
        "query_path",
        "query_label",
        "rank",
        "neighbour_id",
        "score",
        "neighbour_path",
        "neighbour_label",
    ]
    assert len(back) == 12 * 3
    ref_s, ref_i = brute_top_k(q, g, 3)
    assert np.array_equal(back["neighbour_id"].to_numpy().reshape(12, 3), ref_i)
    np.testing.assert_allclose(back["score"].to_numpy().reshape(12, 3), ref_s, atol=1e-5)
    assert back["rank"].tolist() == [1, 2, 3] * 12
    assert back["query_path"].tolist() == np.repeat(paths[45:], 3).tolist()
    assert (back["neighbour_label"].to_numpy() == gl[back["neighbour_id"]]).all()
    # Each query is a noisy copy of gallery item i: its nearest neighbour.
    assert (back.groupby("query_path", sort=False)["neighbour_id"].first().to_numpy() == np.arange(12)).all()


def test_search_stage_all_vs_all_excludes_self(tmp_path, rng):
    x = quantised(rng, 25)
    labels = np.arange(25) % 5
    emb_path = tmp_path / "emb.parquet"
    write_embeddings(emb_path, x, labels, ["test"] * 25, [f"{i}.jpg" for i in range(25)])
    index_path = tmp_path / "test.faiss"
    index_stage(emb_path, index_path, split="test", kind="flat")
    frame = search_stage(index_path, emb_path, 4, tmp_path / "nn.parquet")
    _, ref_i = brute_top_k(x, x, 4, exclude_self=True)
    assert np.array_equal(frame["neighbour_id"].to_numpy().reshape(25, 4), ref_i)
    kept = search_stage(index_path, emb_path, 1, tmp_path / "nn1.parquet", exclude_self=False)
    assert kept["score"].to_numpy() == pytest.approx(1.0)


def test_stage_errors(tmp_path, rng):
    emb_path = tmp_path / "emb.parquet"
    _write_inshop(emb_path, rng)
    with pytest.raises(IAAError, match=r"no split 'test' \(splits present: gallery, query, train\)"):
        index_stage(emb_path, tmp_path / "x.faiss", split="test")
    with pytest.raises(IAAError, match="embeddings file not found"):
        index_stage(tmp_path / "none.parquet", tmp_path / "x.faiss", split="test")
    with pytest.raises(IAAError, match="unknown index kind"):
        index_stage(emb_path, tmp_path / "x.faiss", split="gallery", kind="lsh")
    index_stage(emb_path, tmp_path / "g.faiss", split="gallery")
    with pytest.raises(IAAError, match="no split 'val'"):
        search_stage(tmp_path / "g.faiss", emb_path, 2, tmp_path / "n.parquet", split="val")
    assert not (tmp_path / "x.faiss").exists()
