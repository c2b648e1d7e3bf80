import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, strategies as st

from naive import naive_classification, naive_rank_against_negatives, naive_ranking_metrics
from stgkern import metrics as M

LISTS = np.array([[3, 1, 4], [0, 2, 5], [7, 8, 9], [6, -1, -1]])
TARGET = np.array([1, 0, 5, 6])


def test_single_target_hand_computed():
    # ranks: 1, 0, not found, 0
    assert M.hit_rate(LISTS, TARGET) == 0.75
    assert M.hit_rate(LISTS, TARGET, 1) == 0.5
    assert M.recall(LISTS, TARGET, 2) == 0.75
    assert M.precision(LISTS, TARGET, 2) == pytest.approx(0.75 / 2)
    assert M.ndcg(LISTS, TARGET) == pytest.approx((1 / math.log2(3) + 1 + 0 + 1) / 4)
    assert M.mrr(LISTS, TARGET) == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert M.mrr(LISTS, TARGET, 1) == pytest.approx(0.5)


def test_multi_target_hand_computed():
    rel = sp.csr_matrix((np.ones(5), ([0, 0, 1, 2, 2], [1, 9, 5, 2, 3])), shape=(4, 10))
    # row 0: hit at pos 1 of 2 relevant; row 1: hit at pos 2 of 1; row 2: none; row 3: no relevant
    assert M.hit_rate(LISTS, rel) == pytest.approx(2 / 3)
    assert M.recall(LISTS, rel) == pytest.approx((0.5 + 1 + 0) / 3)
    assert M.precision(LISTS, rel) == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    d = 1 / np.log2(np.arange(3) + 2)
    assert M.ndcg(LISTS, rel) == pytest.approx((d[1] / (d[0] + d[1]) + d[2] / d[0] + 0) / 3)
    assert M.mrr(LISTS, rel) == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    tup = (rel.indptr, rel.indices)
    assert M.ndcg(LISTS, tup) == M.ndcg(LISTS, rel)


@given(st.integers(0, 8), st.integers(1, 6), st.integers(1, 12), st.integers(0, 2**31 - 1), st.data())
def test_against_loops(m, K, n_items, seed, data):
    rng = np.random.default_rng(seed)
    K = min(K, n_items)
    k = data.draw(st.integers(1, K))
    lists = np.array([rng.permutation(n_items)[:K] for _ in range(m)], dtype=np.int64).reshape(m, K)
    rel_mask = rng.random((m, n_items)) < 0.3
    rel = sp.csr_matrix(rel_mask)
    sets = [set(np.flatnonzero(rel_mask[r])) for r in range(m)]
    ref = naive_ranking_metrics(lists, sets, k)
    got = {"hit": M.hit_rate(lists, rel, k), "recall": M.recall(lists, rel, k),
           "precision": M.precision(lists, rel, k), "ndcg": M.ndcg(lists, rel, k), "mrr": M.mrr(lists, rel, k)}
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-12, err_msg=key)
    target = rng.integers(0, n_items, m)
    ref1 = naive_ranking_metrics(lists, [{t} for t in target], k)
    rep = M.ranking_report(lists, target, ks=(k,))
    for key in ref1:
        np.testing.assert_allclose(rep[f"{key}@{k}"], ref1[key], rtol=1e-12, err_msg=key)


def test_sampled_negatives_pessimistic_ties():
    t = np.array([1.0, 1.0, 3.0])
    neg = np.array([[1.0, 1.0, 0.0], [2.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    ranks = M.rank_against_negatives(t, neg)
    np.testing.assert_array_equal(ranks, [2, 1, 0])
    np.testing.assert_array_equal(ranks, naive_rank_against_negatives(t, neg))
    assert M.hit_rate_from_ranks(ranks, 1) == pytest.approx(1 / 3)
    assert M.ndcg_from_ranks(ranks, 2) == pytest.approx((0 + 1 / math.log2(3) + 1) / 3)
    assert M.mrr_from_ranks(ranks) == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)
    # a constant scorer ranks last, not first
    assert M.rank_against_negatives(np.zeros(2), np.zeros((2, 99))).tolist() == [99, 99]


@given(st.integers(0, 30), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_classification_against_loops(n, n_classes, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    p = rng.integers(0, n_classes, n)
    rp, rr, rf = naive_classification(y, p, n_classes)
    gp, gr, gf = M.precision_recall_f1(y, p, n_classes, average=None)
    np.testing.assert_allclose(gp, rp)
    np.testing.assert_allclose(gr, rr)
    np.testing.assert_allclose(gf, rf)
    present = np.isin(np.arange(n_classes), np.concatenate([y, p]))
    mp, mr, mf = M.precision_recall_f1(y, p, n_classes)
    if present.any():
        assert mp == pytest.approx(rp[present].mean()) and mf == pytest.approx(rf[present].mean())
    acc = M.accuracy(y, p)
    assert all(v == acc or (math.isnan(v) and math.isnan(acc))
               for v in M.precision_recall_f1(y, p, n_classes, average="micro"))


def test_classification_hand_computed():
    y = np.array([0, 0, 1, 2])
    p = np.array([0, 1, 1, 1])   # class 2 never predicted: precision 0
    prec, rec, f1 = M.precision_recall_f1(y, p, average=None)
    np.testing.assert_allclose(prec, [1.0, 1 / 3, 0.0])
    np.testing.assert_allclose(rec, [0.5, 1.0, 0.0])
    np.testing.assert_allclose(f1, [2 / 3, 0.5, 0.0])
    assert M.accuracy(y, p) == 0.5


def test_empty_gives_nan():
    assert math.isnan(M.hit_rate(np.zeros((0, 3), np.int64), np.zeros(0, np.int64)))
    assert math.isnan(M.accuracy(np.zeros(0, np.int64), np.zeros(0, np.int64)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="k=4 exceeds the length"):
        M.hit_rate(LISTS, TARGET, 4)
    with pytest.raises(ValueError, match="negative item ids"):
        M.hit_rate(LISTS, -TARGET)
    with pytest.raises(ValueError, match="target has shape"):
        M.ndcg(LISTS, TARGET[:2])
    with pytest.raises(TypeError, match="topk_idx must hold integer"):
        M.mrr(LISTS.astype(float), TARGET)
    with pytest.raises(ValueError, match="labels go up to 3 but n_classes=3"):
        M.precision_recall_f1(np.array([0, 3]), np.array([0, 1]), n_classes=3)
    with pytest.raises(TypeError, match="y_pred must hold integer"):
        M.accuracy(np.array([0, 1]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="y_true has 2 labels but y_pred has 3"):
        M.accuracy(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="average='weighted'"):
        M.precision_recall_f1(np.array([0]), np.array([0]), average="weighted")
    with pytest.raises(ValueError, match="negative_scores must be 2-D"):
        M.rank_against_negatives(np.zeros(3), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="contains NaN"):
        M.rank_against_negatives(np.array([np.nan]), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="target indptr has shape"):
        M.recall(LISTS, (np.array([0, 1]), np.array([2])))


def test_cupy_inputs_give_the_numpy_results(xp, rng):
    """CuPy lists, targets, ranks and labels give the NumPy figures; ranking against negatives stays on the device."""
    lists = rng.permutation(50)[:40].reshape(8, 5)
    target = rng.integers(0, 50, 8)
    rel = sp.csr_matrix((np.ones(12), (rng.integers(0, 8, 12), rng.integers(0, 50, 12))), shape=(8, 50))
    L, T = xp.asarray(lists), xp.asarray(target)
    for fn in (M.hit_rate, M.recall, M.precision, M.ndcg, M.mrr):
        assert fn(L, T, 3) == fn(lists, target, 3)
        assert fn(L, (xp.asarray(rel.indptr), xp.asarray(rel.indices))) == fn(lists, rel)
    ts, neg = rng.standard_normal(8), rng.standard_normal((8, 30))
    ranks = M.rank_against_negatives(xp.asarray(ts), xp.asarray(neg))
    assert type(ranks) is type(xp.asarray(ts))
    want = M.rank_against_negatives(ts, neg)
    got = ranks.get() if xp is not np else ranks
    np.testing.assert_array_equal(got, want)
    assert M.ndcg_from_ranks(ranks, 10) == M.ndcg_from_ranks(want, 10)
    y, p = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
    assert M.accuracy(xp.asarray(y), xp.asarray(p)) == M.accuracy(y, p)
    if xp is not np:
        with pytest.raises(TypeError, match="mixed NumPy and CuPy"):
            M.rank_against_negatives(xp.asarray(ts), neg)
