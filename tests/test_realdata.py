"""Checks on the real logs in ../shared/data (skipped when the data is absent).

Counts here are derived independently of the kernels: closed forms per user
length, or one vectorised NumPy pass per hop.
"""
import numpy as np
import pytest

import stgkern

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def taobao(shared_data):
    return stgkern.load_taobao(shared_data / "taobao_userbehavior" / "UserBehavior_sample.csv")


def test_taobao_window_graph_edges_per_user(taobao):
    w = 8
    g = stgkern.window_graph(taobao, window=w)
    lengths = np.bincount(taobao.user, minlength=taobao.n_users)
    # a user with L events has sum_{p<L} min(p, w) temporal edges
    expect = np.array([np.minimum(np.arange(L), w).sum() for L in lengths])
    seg = g.segment_ptr
    got = np.array([g.indptr[seg[s + 1]] - g.indptr[seg[s]] for s in range(seg.shape[0] - 1)])
    assert got.sum() == g.nnz == expect.sum()
    assert (np.sort(got) == np.sort(expect[lengths > 0])).all()


def test_taobao_window_graph_horizon_matches_per_hop_count(taobao):
    w, horizon = 8, 3600
    g = stgkern.window_graph(taobao, window=w, horizon=horizon)
    order = np.lexsort((np.arange(len(taobao)), taobao.time, taobao.user))
    u, t = taobao.user[order], taobao.time[order]
    expect = 0
    for h in range(1, w + 1):
        expect += int(((u[h:] == u[:-h]) & (t[h:] - t[:-h] <= horizon)).sum())
    assert g.nnz == expect
    assert (g.edata["dt"] <= horizon).all() and (g.edata["dt"] >= 0).all()
    assert (g.edata["hop"] >= 1).all() and (g.edata["hop"] <= w).all()


def test_taobao_item_graph_and_time_intervals(taobao):
    ptr, items, times = stgkern.sequences(taobao)
    ig = stgkern.item_graph(ptr, items, n_items=taobao.n_items, epsilon=2, top=12)
    assert ig.n_nodes == taobao.n_items and np.diff(ig.indptr).max() <= 12
    # an item's total neighbour count before the top cut is the number of (pos, k) pairs it is
    # part of; the kept counts can only be a subset of that
    seen = np.zeros(taobao.n_items, np.int64)
    for s in range(ptr.shape[0] - 1):
        seq = items[ptr[s]:ptr[s + 1]]
        for k in (1, 2):
            if seq.shape[0] > k:
                np.add.at(seen, seq[:-k], 1)
                np.add.at(seen, seq[k:], 1)
    kept = np.add.reduceat(np.append(ig.edata["count"], 0), ig.indptr[:-1])
    kept[np.diff(ig.indptr) == 0] = 0
    assert (ig.edata["count"] > 0).all() and (kept <= seen).all()
    assert (kept[seen == 0] == 0).all() and (kept[seen > 0] > 0).all()
    M, seq = stgkern.time_intervals(ptr, times, maxlen=50, span=256)
    assert M.shape == (ptr.shape[0] - 1, 50, 50)
    assert M.min() >= 0 and M.max() <= 256
    assert (np.diagonal(M, axis1=1, axis2=2) == 0).all()
    # the last position of each user is its last event, rescaled: 1 + the largest offset
    n_ev = np.diff(ptr)
    assert ((seq[:, -1] >= 1) == (n_ev > 0)).all()
    assert (seq[n_ev == 1, -1] == 1).all()


def test_movielens_window_graph(shared_data):
    log = stgkern.load_movielens(shared_data / "ml-latest-small" / "ratings.csv")
    g = stgkern.window_graph(log, window=4)
    lengths = np.bincount(log.user)
    assert g.nnz == sum(int(np.minimum(np.arange(L), 4).sum()) for L in lengths)
