"""Metrics against a brute-force reference: full score matrix, stable sort by (-score, index)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from iaa import metrics as M
from iaa.index import l2_normalize
from iaa.metrics import problem as P
from iaa.metrics import ranks as R
from iaa.metrics import scan as S


@pytest.fixture(autouse=True, params=["dense", "blocked", "blocked-bf16"])
def ranking_path(request, monkeypatch):
    """Every test runs on every exact path: full score rows, and the blocked counting pass with
    float32 products or with bfloat16 screening and float32 re-scoring."""
    monkeypatch.setattr(S, "SCREEN", "bfloat16" if request.param == "blocked-bf16" else "float32")
    monkeypatch.setattr(S, "_BF16_FALLBACK_SHARE", 1)  # small blocks: never fall back to float32
    if request.param.startswith("blocked"):
        monkeypatch.setattr(R, "DENSE_GALLERY_MAX", 0)
    return request.param


KS = [1, 2, 4, 8, 16]


def brute_force(q, ql, g, gl, *, exclude_self):
    """Per-query first-positive rank (-1: none), AP@R and RP (NaN: none), from full sorts."""
    qn = l2_normalize(q).astype(np.float64)
    gn = l2_normalize(g).astype(np.float64)
    scores = qn @ gn.T
    first, ap, rp = [], [], []
    for i in range(len(qn)):
        order = np.lexsort((np.arange(len(gn)), -scores[i]))
        if exclude_self:
            order = order[order != i]
        rel = gl[order] == ql[i]
        r = int(rel.sum())
        if r == 0:
            first.append(-1)
            ap.append(np.nan)
            rp.append(np.nan)
            continue
        first.append(int(np.argmax(rel)))
        top = rel[:r]
        precision = np.cumsum(top) / np.arange(1, r + 1)
        ap.append(float((precision * top).sum() / r))
        rp.append(float(top.sum() / r))
    return np.array(first), np.array(ap), np.array(rp)


def clustered(rng, n, d, num_classes, noise, *, duplicates=0.1):
    """Gaussian class centres plus noise; some rows copied exactly onto others (any class)."""
    labels = rng.integers(0, num_classes, n)
    centres = rng.standard_normal((num_classes, d))
    x = (centres[labels] + noise * rng.standard_normal((n, d))).astype(np.float32)
    k = int(duplicates * n)
    x[rng.integers(0, n, k)] = x[rng.integers(0, n, k)]
    return x, labels


def quantised(rng, n, d=6, nonzeros=4):
    """Exactly unit vectors with entries in {0, +-0.5}: scores are exact multiples of 1/4."""
    x = np.zeros((n, d), dtype=np.float32)
    for i in range(n):
        cols = rng.choice(d, nonzeros, replace=False)
        x[i, cols] = rng.choice([-0.5, 0.5], nonzeros)
    return x


def assert_matches(ranks, reference):
    first, ap, rp = reference
    assert np.array_equal(ranks.first, first)
    valid = first >= 0
    np.testing.assert_allclose(ranks.average_precision[valid], ap[valid], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ranks.r_precision[valid], rp[valid], rtol=0, atol=1e-12)


@pytest.mark.parametrize("block", [5, 37, 4096])
@pytest.mark.parametrize("symmetric", [True, False])
def test_all_vs_all_matches_brute_force_with_duplicates_and_singletons(rng, block, symmetric):
    x, labels = clustered(rng, 300, 12, 70, noise=1.5)
    labels[:5] = 1000 + np.arange(5)  # singleton classes: no positive
    p = P._prepare(x, labels, x, labels, exclude_self=True)
    ranks = R._exact_ranks(p, recall_cap=None, need_map=True, block_size=block, symmetric=symmetric)
    assert_matches(ranks, brute_force(x, labels, x, labels, exclude_self=True))
    assert not ranks.valid[:5].any()


@pytest.mark.parametrize("block", [4, 16, 4096])
def test_ties_follow_gallery_order(rng, block):
    x = quantised(rng, 240)
    labels = rng.integers(0, 40, 240)
    for symmetric in (True, False):
        p = P._prepare(x, labels, x, labels, exclude_self=True)
        ranks = R._exact_ranks(p, recall_cap=None, need_map=True, block_size=block, symmetric=symmetric)
        assert_matches(ranks, brute_force(x, labels, x, labels, exclude_self=True))
    q = quantised(rng, 90)
    ql = rng.integers(0, 45, 90)  # classes 40..44 are not in the gallery
    p = P._prepare(q, ql, x, labels, exclude_self=False)
    ranks = R._exact_ranks(p, recall_cap=None, need_map=True, block_size=block)
    assert_matches(ranks, brute_force(q, ql, x, labels, exclude_self=False))


def test_query_gallery_matches_brute_force(rng):
    g, gl = clustered(rng, 260, 16, 50, noise=2.0)
    q, ql = clustered(rng, 150, 16, 55, noise=2.0)
    q[:10] = g[:10]  # exact duplicates of gallery items
    p = P._prepare(q, ql, g, gl, exclude_self=False)
    ranks = R._exact_ranks(p, recall_cap=None, need_map=True, block_size=64)
    assert_matches(ranks, brute_force(q, ql, g, gl, exclude_self=False))


def test_untrained_embeddings_and_large_classes(rng):
    # Random embeddings: positives far down the list, so queries stop being counted early;
    # a few large classes make R large.
    x = rng.standard_normal((400, 8)).astype(np.float32)
    labels = np.concatenate([np.zeros(120), np.ones(80), rng.integers(2, 60, 200)]).astype(np.int64)
    ref = brute_force(x, labels, x, labels, exclude_self=True)
    for symmetric in (True, False):
        p = P._prepare(x, labels, x, labels, exclude_self=True)
        ranks = R._exact_ranks(p, recall_cap=None, need_map=True, block_size=32, symmetric=symmetric)
        assert_matches(ranks, ref)
    capped = M.first_positive_ranks(x, labels, x, labels, exclude_self=True, cap=10, block_size=32)
    first = ref[0]
    assert np.array_equal(capped, np.where(first >= 0, np.minimum(first, 10), -1))


def test_public_functions_agree_with_brute_force(rng):
    x, labels = clustered(rng, 200, 10, 60, noise=1.2)
    first, ap, rp = brute_force(x, labels, x, labels, exclude_self=True)
    valid = first >= 0
    rec = M.recall_at_k(x, labels, x, labels, KS, exclude_self=True, block_size=64)
    assert rec.recall == {k: float(np.mean(first[valid] < k)) for k in KS}
    assert rec.num_queries == 200
    assert rec.num_queries_without_match == int((~valid).sum())
    mr = M.map_at_r_and_rp(x, labels, x, labels, exclude_self=True, block_size=64)
    assert mr.map_at_r == pytest.approx(ap[valid].mean(), abs=1e-12)
    assert mr.r_precision == pytest.approx(rp[valid].mean(), abs=1e-12)
    ranks = M.first_positive_ranks(x, labels, x, labels, exclude_self=True)
    assert np.array_equal(ranks, first)


def test_self_is_excluded_by_index_and_duplicates_count():
    a = np.array([1.0, 0.0], dtype=np.float32)
    b = np.array([0.0, 1.0], dtype=np.float32)
    # Items 0 and 1 are the same vector and class: each is the other's nearest neighbour.
    x = np.stack([a, a, b, b])
    labels = np.array([0, 0, 1, 2])
    rec = M.recall_at_k(x, labels, x, labels, [1], exclude_self=True)
    assert rec.recall == {1: 1.0}
    assert rec.num_queries_without_match == 2  # classes 1 and 2 are singletons


def test_equal_scores_rank_by_gallery_index():
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    same = np.array([1.0, 0.0], dtype=np.float32)
    gallery = np.stack([same, same])
    # Negative at index 0 ties with the positive at index 1: the negative ranks first.
    ranks = M.first_positive_ranks(q, [7], gallery, [3, 7], exclude_self=False)
    assert ranks.tolist() == [1]
    ranks = M.first_positive_ranks(q, [7], gallery, [7, 3], exclude_self=False)
    assert ranks.tolist() == [0]
    mr = M.map_at_r_and_rp(q, [7], gallery, [3, 7], exclude_self=False)
    assert (mr.map_at_r, mr.r_precision) == (0.0, 0.0)


def test_near_equal_scores_use_the_float64_order():
    # Scores that differ by less than float32 rounding are ordered exactly.
    rng = np.random.default_rng(3)
    base = rng.standard_normal(64).astype(np.float32)
    nudge = base.copy()
    nudge[0] = np.nextafter(nudge[0], np.float32(np.inf))
    gallery = np.stack([base, nudge, -base])
    q = base[None, :]
    ref = brute_force(q, np.array([1]), gallery, np.array([0, 1, 1]), exclude_self=False)
    got = M.first_positive_ranks(q, [1], gallery, [0, 1, 1], exclude_self=False)
    assert got.tolist() == ref[0].tolist()


def test_retrieval_metrics_keys_and_counts(rng):
    x, labels = clustered(rng, 120, 8, 30, noise=1.0)
    labels[0] = 999
    out = M.retrieval_metrics(x, labels, x, labels, ks=[1, 2, 4], exclude_self=True, seed=0)
    assert set(out) == {
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
    assert out["num_queries"] == out["num_gallery"] == 120
    assert out["num_classes"] == np.unique(labels).size
    assert out["num_queries_without_match"] >= 1
    for key in ("recall@1", "recall@2", "recall@4", "map@r", "rp", "nmi"):
        assert 0.0 <= out[key] <= 1.0
    assert out["recall@1"] <= out["recall@2"] <= out["recall@4"]
    first, ap, _ = brute_force(x, labels, x, labels, exclude_self=True)
    assert out["recall@1"] == pytest.approx(np.mean(first[first >= 0] < 1))
    assert out["map@r"] == pytest.approx(np.nanmean(ap))
    no_nmi = M.retrieval_metrics(x, labels, x, labels, ks=[1], exclude_self=True, nmi=False)
    assert "nmi" not in no_nmi


def test_approximate_index_with_full_probing_is_exact(rng):
    g, gl = clustered(rng, 400, 16, 40, noise=1.5, duplicates=0)
    q, ql = clustered(rng, 100, 16, 40, noise=1.5, duplicates=0)
    exact = M.retrieval_metrics(q, ql, g, gl, ks=[1, 5], exclude_self=False, nmi=False)
    ivf = M.retrieval_metrics(
        q, ql, g, gl, ks=[1, 5], exclude_self=False, nmi=False, index="ivf", nlist=4, nprobe=4
    )
    assert ivf["approx_recall_vs_exact"] == 1.0
    for key in ("recall@1", "recall@5", "map@r", "rp"):
        assert ivf[key] == pytest.approx(exact[key], abs=1e-12)
    hnsw = M.retrieval_metrics(g, gl, g, gl, ks=[1, 5], exclude_self=True, nmi=False, index="hnsw")
    assert 0.9 <= hnsw["approx_recall_vs_exact"] <= 1.0
    ref = M.retrieval_metrics(g, gl, g, gl, ks=[1, 5], exclude_self=True, nmi=False)
    assert abs(hnsw["recall@1"] - ref["recall@1"]) <= 0.05


def test_invalid_inputs():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="gallery must be the query set"):
        M.recall_at_k(x, [0, 0, 1], x[:2], [0, 0], [1], exclude_self=True)
    with pytest.raises(ValueError, match="NaN"):
        M.recall_at_k(np.full((2, 2), np.nan, np.float32), [0, 0], x, [0, 1, 2], [1], exclude_self=False)
    with pytest.raises(ValueError, match="positive"):
        M.recall_at_k(x, [0, 0, 1], x, [0, 0, 1], [0], exclude_self=True)
    with pytest.raises(ValueError, match="unknown index"):
        M.retrieval_metrics(x, [0, 0, 1], x, [0, 0, 1], ks=[1], exclude_self=True, index="lsh")


def test_no_query_has_a_match_gives_nan():
    x = np.eye(3, dtype=np.float32)
    rec = M.recall_at_k(x, [0, 1, 2], x, [0, 1, 2], [1], exclude_self=True)
    assert np.isnan(rec.recall[1])
    assert rec.num_queries_without_match == 3


def test_nmi_matches_scikit_learn(rng):
    for n, ka, kb in [(50, 3, 4), (500, 20, 25), (1000, 200, 150), (30, 30, 2)]:
        a = rng.integers(0, ka, n)
        b = rng.integers(0, kb, n) * 7 - 3  # arbitrary cluster ids
        assert M.nmi_from_clusters(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)
    a = rng.integers(0, 5, 100)
    assert M.nmi_from_clusters(a, a + 10) == pytest.approx(1.0)
    assert M.nmi_from_clusters(np.zeros(10), np.zeros(10)) == 1.0
    assert M.nmi_from_clusters(np.zeros(10), np.arange(10)) == normalized_mutual_info_score(
        np.zeros(10), np.arange(10)
    )
    assert M.nmi_from_clusters([], []) == 1.0


def test_kmeans_nmi_recovers_separated_classes_deterministically(rng):
    centres = np.eye(8, dtype=np.float32) * 10
    labels = np.repeat(np.arange(8), 25)
    x = centres[labels] + 0.1 * rng.standard_normal((200, 8)).astype(np.float32)
    assert M.kmeans_nmi(x, labels, seed=0, nredo=3) == pytest.approx(1.0)
    y = rng.standard_normal((200, 8)).astype(np.float32)
    first = M.kmeans_nmi(y, labels, seed=1)
    assert first == M.kmeans_nmi(y, labels, seed=1)
    assert 0.0 <= first < 0.5


def test_collapsed_embeddings_rank_by_gallery_index(rng):
    """A collapsed model (every embedding the same up to float32 noise) is scored exactly."""
    base = rng.standard_normal(32).astype(np.float32)
    x = (base + 1e-7 * rng.standard_normal((400, 32))).astype(np.float32)
    x[::3] = base  # a third are exact duplicates
    labels = rng.integers(0, 20, 400)
    got = M.map_at_r_and_rp(x, labels, x, labels, exclude_self=True)
    ranks = M.first_positive_ranks(x, labels, x, labels, exclude_self=True)
    first, ap, rp = brute_force(x, labels, x, labels, exclude_self=True)
    np.testing.assert_array_equal(ranks, first)
    assert got.map_at_r == pytest.approx(np.nanmean(ap), abs=1e-12)
    assert got.r_precision == pytest.approx(np.nanmean(rp), abs=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
def test_scores_closer_than_bfloat16_resolution_are_ranked_exactly(symmetric):
    # Every gallery item sits at a score near 0.6 from its query, spaced 2e-4 apart: far finer
    # than bfloat16 resolves there (2**-8 = 0.0039), coarser than float32 rounding. Screening
    # in bfloat16 must hand each of them to the float32 re-scoring, never rank by bf16 values.
    rng = np.random.default_rng(7)
    d, per_query, nq = 64, 60, 8
    rows, labels = [], []
    for i in range(nq):
        base = rng.standard_normal(d)
        base /= np.linalg.norm(base)
        ortho = rng.standard_normal((per_query, d))
        ortho -= (ortho @ base)[:, None] * base
        ortho /= np.linalg.norm(ortho, axis=1, keepdims=True)
        target = 0.6 + 2e-4 * rng.permutation(per_query)  # cosine to the query
        items = target[:, None] * base + np.sqrt(1 - target[:, None] ** 2) * ortho
        rows += [base[None, :], items]
        labels += [i] + list(np.where(rng.random(per_query) < 0.2, i, nq + rng.integers(0, 50, per_query)))
    x = np.concatenate(rows).astype(np.float32)
    y = np.array(labels)
    if symmetric:
        p = P._prepare(x, y, x, y, exclude_self=True)
        ref = brute_force(x, y, x, y, exclude_self=True)
    else:
        p = P._prepare(x[:: per_query + 1], y[:: per_query + 1], x, y, exclude_self=False)
        ref = brute_force(x[:: per_query + 1], y[:: per_query + 1], x, y, exclude_self=False)
    ranks = R._exact_ranks(p, recall_cap=None, need_map=True, block_size=128)
    assert_matches(ranks, ref)


def test_crowded_blocks_fall_back_to_float32(monkeypatch):
    # A block with too many pairs to re-score one by one (collapsed embeddings) is multiplied
    # again in float32; the result must not depend on which blocks did.
    rng = np.random.default_rng(11)
    x, labels = clustered(rng, 300, 8, 20, 0.3)
    monkeypatch.setattr(S, "SCREEN", "bfloat16")
    monkeypatch.setattr(S, "_BF16_FALLBACK_SHARE", 10**9)  # every block falls back
    calls = {"n": 0}
    real = S._float32_scores

    def spy(*args):
        calls["n"] += 1
        return real(*args)

    monkeypatch.setattr(S, "_float32_scores", spy)
    p = P._prepare(x, labels, x, labels, exclude_self=True)
    ranks = R._exact_ranks(p, recall_cap=None, need_map=True, block_size=64)
    assert calls["n"] == 0
    assert_matches(ranks, brute_force(x, labels, x, labels, exclude_self=True))
