"""ClosedFormModel.recommend's threshold top-k (stgkern._numba.closed_form.rerank) against an
obvious dense reference, on small random models built without a fit."""
import numpy as np
import pytest

from stgkern import data as sd
from stgkern import model as sm


# ------------------------------------------------------------------ reference
def naive_recommend(model, log, k, exclude_seen):
    """Every score of every item, the formula written out (the window summed over the bag's
    entries in SciPy's stored order, as the dense path's ``bag @ T1``), then a sort."""
    lg = model.to_model_ids(log).sort()
    H, g = model.states(lg)
    users = np.unique(lg.user)
    rows = sm.last_rows(lg, users)
    n, t, mix = model.n_items, model.tables, model.mix
    T1, T2 = t["T1"].toarray(), t["T2"].toarray()
    bag, prev, has_prev = sm._bag(lg, g, model.tau, rows, T1.shape[0])
    L = model.ridge.scores(H[rows], model.lam)
    items = np.full((len(rows), k), -1, np.int64)
    scores = np.full((len(rows), k), -np.inf)
    for u, r in enumerate(rows):
        win = np.zeros(T1.shape[1])
        for j in range(bag.indptr[u], bag.indptr[u + 1]):
            win += bag.data[j] * T1[bag.indices[j]]
        skip = T2[lg.item[prev[u]]] if has_prev[u] else np.zeros(T1.shape[1])
        cat = t["TC"][lg.category[r]][t["item_category"]] * t["share"]
        s = L[u] + ((((mix["last"] * T1[lg.item[r]]) + mix["window"] * win) + mix["skip"] * skip)
                    + mix["category"] * cat)[:n]
        seen = set(lg.item[lg.user == users[u]].tolist()) if exclude_seen else set()
        top = sorted((i for i in range(n) if i not in seen), key=lambda i: (-s[i], i))[:k]
        items[u, :len(top)] = model.item_ids[top]
        scores[u, :len(top)] = s[top]
    return log.user_ids[users], items, scores


# ------------------------------------------------------------------ random models
MIXES = {
    "all_on": {"last": 1.0, "window": 0.3, "skip": 0.1, "category": 3.0},
    "transitions_only": {"last": 0.3, "window": 1.0, "skip": 3.0, "category": 0.0},
    "category_heavy": {"last": 0.0, "window": 0.1, "skip": 0.0, "category": 30.0},
    "low_rank_only": {"last": 0.0, "window": 0.0, "skip": 0.0, "category": 0.0},
}


ALL_SEEN = 20                                               # this user has seen every item
NO_TRANSITIONS = 22                                         # this one has one event, of an uncounted item


def _random_model(seed, mix, n_items=40, n_categories=5, n_users=24):
    """A model over a random log: ridge targets on a third of the items only (the rest tie at
    L = 0), tables counted on the first half of the users (items only the second half has get
    share 0 and no transitions), a user who has seen every item, one-event users."""
    rng = np.random.default_rng(seed)
    item_cat = rng.integers(0, n_categories, n_items)
    seqs = [rng.choice(n_items - 3, int(rng.integers(1, 12)), p=rng.dirichlet(np.full(n_items - 3, 0.3)))
            for _ in range(n_users)]
    seqs[3] = [7]                                           # one event: no window, no previous item
    # the second half's: every item in the log, last the items only it has (no transitions, share 0)
    seqs[ALL_SEEN] = list(rng.permutation(n_items)) + [n_items - 1, n_items - 2]
    seqs[NO_TRANSITIONS] = [n_items - 1]                    # one such event: no transitions at all
    user = np.concatenate([[u] * len(s) for u, s in enumerate(seqs)])
    item = np.concatenate(seqs).astype(np.int64)
    time = np.concatenate([np.cumsum(rng.integers(1, 60, len(s))) for s in seqs])
    log = sd.EventLog.from_arrays(user, item, time, category=item_cat[item], behavior=rng.integers(0, 2, len(item)))
    ic = np.zeros(log.n_items, np.int64)
    ic[log.item] = log.category
    model = sm.ClosedFormModel(
        item_ids=log.item_ids, category_ids=log.category_ids, item_category=ic, n_behaviors=log.n_behaviors,
        E_item=rng.normal(size=(log.n_items, 4)).astype(np.float32),
        E_cat=rng.normal(size=(log.n_categories, 2)).astype(np.float32),
        graph_args=dict(window=4, horizon=1e9, category_window=1), tau=30.0, ridge=None, lam=0.1, mix=mix,
        bridge=None, blam=None, offsets=np.zeros(log.n_behaviors))
    lg = log.sort()
    H, _ = model.states(lg)
    train = np.flatnonzero(lg.item < n_items // 3)
    model.ridge = sm.Ridge(H[train], lg.item[train], log.n_items)
    model.with_counts(model.counts(log.take(log.user < n_users // 2)))
    return model, log


def _last_rows_inputs(model, log):
    """The sorted log in model ids, its states and graph, each user's last row and seen items."""
    lg = model.to_model_ids(log).sort()
    H, g = model.states(lg)
    users = np.unique(lg.user)
    return lg, H, g, sm.last_rows(lg, users), sm._seen(lg, users, model.n_items + 1)[:, :model.n_items]


@pytest.mark.parametrize("mix", list(MIXES))
@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_top_k_equals_the_naive_ranking(seed, mix):
    model, log = _random_model(seed, MIXES[mix])
    assert (model.tables["share"][:model.n_items] == 0).any()           # zero-share items are there
    assert model.tables["T1"][model.n_items - 1].nnz == 0                # NO_TRANSITIONS' item
    for k, exclude in ((5, True), (5, False), (model.n_items + 3, True), (model.n_items, False)):
        u1, i1, s1 = naive_recommend(model, log, k, exclude)
        for method in ("threshold", "dense"):
            u2, i2, s2 = model.recommend(log, k, exclude_seen=exclude, block=7, method=method)
            np.testing.assert_array_equal(u2, u1)
            np.testing.assert_array_equal(i2, i1, err_msg=f"{method} k={k} exclude={exclude}")
            np.testing.assert_allclose(s2, s1, rtol=1e-10, atol=1e-12)
        if exclude:
            assert (i1[ALL_SEEN] == -1).all()                                  # the user who saw everything


def test_ties_go_to_the_lower_item_index():
    """Items of equal score (a copied embedding column, no transitions, same category and share)
    are listed by index, as topk and the dense path list them."""
    model, log = _random_model(2, MIXES["all_on"])
    r = model.ridge
    r.VtB[:, 30:] = r.VtB[:, [29]]                   # items 29.. score alike on L ...
    r.prior[30:] = r.prior[29]
    _, i1, s1 = naive_recommend(model, log, model.n_items, True)
    _, i2, s2 = model.recommend(log, model.n_items)
    np.testing.assert_array_equal(i2, i1)
    np.testing.assert_allclose(s2, s1, rtol=1e-10, atol=1e-12)
    assert any(len(np.unique(row[np.isfinite(row)])) < np.isfinite(row).sum() for row in s1)  # ties bite


def test_rerank_splits_rows_into_chunks_alike(monkeypatch):
    """The kernel's parallel chunks (each with its own accumulators) give the one-chunk lists."""
    from stgkern._numba import closed_form as cf
    model, log = _random_model(3, MIXES["all_on"])
    lg, H, g, rows, seen = _last_rows_inputs(model, log)
    low = model._lowrank_topk(H[rows], 6, seen)
    trans = sm._transition_inputs(lg, g, model.tau, rows, model.tables["T1"].shape[0])
    want = model._rerank(low, trans, lg.category[rows], seen)
    import numba
    seen_chunks = []
    real = cf.rerank
    monkeypatch.setattr(cf, "rerank", lambda *a: (seen_chunks.append(a[-6]), real(*a))[1])
    from stgkern import config
    for chunks in (1, 5, len(rows)):
        monkeypatch.setattr(numba, "get_num_threads", lambda c=chunks: c)    # _rerank's chunk count
        for min_rows in (0, 1 << 30):                                        # the parallel and serial kernels
            with config.override(rerank_parallel_min_rows=min_rows):
                got = model._rerank(low, trans, lg.category[rows], seen)
            assert seen_chunks[-1] == chunks
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


def test_rerank_scratch_is_reused_and_left_out_of_pickles():
    """The kernel's accumulators live on the model across calls (stamped, never cleared): calls on
    other rows in between, an interrupted call, and a pickled copy all give the first lists."""
    import pickle
    model, log = _random_model(5, MIXES["all_on"])
    users, first, _ = model.recommend(log, k=6)
    model.recommend(log.take(np.arange(len(log) // 2)), k=6)          # other rows, the same scratch
    base = model._rr[2]
    with pytest.raises(RuntimeError):
        with model._rerank_scratch(1, model._rr[0].shape[1], 3):
            raise RuntimeError("interrupted")
    assert model._rr[2] == base + 3                                      # the stamps it may have written stay old
    again = model.recommend(log, k=6)[1]
    copy = pickle.loads(pickle.dumps(model))
    assert not {"_rr", "_rr_lock", "_tt", "_tt_for"} & set(copy.__dict__)
    assert np.array_equal(again, first) and np.array_equal(copy.recommend(log, k=6)[1], first)


@pytest.mark.parametrize("extra", [0, 20])
@pytest.mark.parametrize("seed", [0, 1])
def test_float32_scan_with_float64_rescoring_gives_the_float64_lists(seed, extra):
    """Above ``config.lowrank_f32_min_items`` the low-rank pass scans in float32 and rescores the
    candidates its rounding bound keeps: the lists are the float64 scan's (and the naive ones);
    with near-ties wider than the kept band (``extra`` 0) rows fall back to a float64 scan."""
    from stgkern import config
    model, log = _random_model(seed, MIXES["all_on"])
    r = model.ridge
    r.VtB[:, 25:28] = r.VtB[:, [24]] * (1 + 1e-9)          # near-ties below float32's resolution
    r.prior[25:28] = r.prior[24]
    _, H, _, rows, seen = _last_rows_inputs(model, log)
    want = model._lowrank_topk(H[rows], 6, seen)
    calls = []
    real = sm.topk_f32_certified
    with config.override(lowrank_f32_min_items=0, lowrank_f32_extra=extra), pytest.MonkeyPatch.context() as mp:
        mp.setattr(sm, "topk_f32_certified", lambda *a: (calls.append(1), real(*a))[1])
        got = model._lowrank_topk(H[rows], 6, seen)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[2], want[2], rtol=1e-12)
        for k, exclude in ((5, True), (model.n_items + 3, True), (model.n_items, False)):
            u1, i1, s1 = naive_recommend(model, log, k, exclude)
            u2, i2, s2 = model.recommend(log, k, exclude_seen=exclude, block=7)
            np.testing.assert_array_equal(i2, i1, err_msg=f"k={k} exclude={exclude}")
            np.testing.assert_allclose(s2, s1, rtol=1e-10, atol=1e-12)
    assert calls


def test_float32_scan_bound_holds_on_wide_score_ranges():
    """Direct check of the certified scan against the float64 kernel: rows of very different
    norms, items of very different norms, exclusions, k past the available items."""
    from stgkern import _dispatch, config
    from stgkern.readout import _exclude_csr
    import scipy.sparse as sps
    model, _ = _random_model(4, MIXES["all_on"])
    tt = model._threshold_tables()
    rng = np.random.default_rng(0)
    n, d = tt["items"].shape
    Q = rng.normal(size=(50, d)) * np.logspace(-3, 3, 50)[:, None]
    ex = sps.random(50, n, density=0.3, random_state=1, format="csr")
    ex.data[:] = 1
    kernel = _dispatch.kernels("topk", _dispatch.CPU).topk
    for k in (1, 7, n):
        wi, ws = kernel(Q, tt["items"], k, _exclude_csr(ex, 50, n, np))
        with config.override(lowrank_f32_extra=3):
            gi, gs = sm.topk_f32_certified(Q, tt["items"], tt["items32"], tt["vmax"], k, ex)
        np.testing.assert_array_equal(gi, wi)
        np.testing.assert_allclose(gs, ws, rtol=1e-12)


def test_float32_scan_keeps_the_items_its_rounding_inverts():
    """float32 rounding can put an item below another that beats it in float64 (A below B here:
    A's first coordinate rounds down, B's sum rounds up): the bound must keep A a candidate, and
    a band of such near-ties wider than the kept items must send the row to the float64 scan."""
    from stgkern import _dispatch, config
    e = 2.0 ** -23
    A = [1 + 0.49 * e, 0.1 * e]                        # float64 1 + 0.59e, float32 1
    B = [1.0, 0.55 * e]                                # float64 1 + 0.55e, float32 1 + e
    Q = np.array([[1.0, 1.0]])
    kernel = _dispatch.kernels("topk", _dispatch.CPU).topk
    for items, extra in ((np.array([B, A]), 20), (np.array([B] * 9 + [A]), 0)):
        items32 = items.astype(np.float32)
        assert (items32 @ Q[0].astype(np.float32))[-1] < (items32 @ Q[0].astype(np.float32))[0]   # inverted
        want = kernel(Q, items, 1, None)
        assert want[0][0, 0] == len(items) - 1                                              # A, in float64
        with config.override(lowrank_f32_extra=extra):
            got = sm.topk_f32_certified(Q, items, items32, float(np.linalg.norm(items, axis=1).max()), 1, None)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-15)


@pytest.mark.parametrize("extra", [0, 20])
def test_float32_scan_rows_are_the_same_bits_alone_and_in_any_batch(extra):
    """Every row's scores come from one fixed-shape rescoring of its candidates, whether the float32
    bound certified them or the row fell back to the float64 scan, and neither scan is padded: a
    row ranked alone (one served user, BLAS's GEMV path) gets the bits it gets in any batch."""
    import scipy.sparse as sp
    from stgkern import config
    from stgkern._numba import topk as topk_kernels
    rng = np.random.default_rng(11)
    n, d = 3000, 33
    items = rng.normal(size=(n, d))
    items[100:140] = items[99] * (1 + rng.uniform(-1e-9, 1e-9, (40, 1)))     # a band of near-ties
    Q = rng.normal(size=(70, d))
    Q[::7] = items[99] * 3.0                                   # these rows have the band at the top
    ex = sp.random(70, n, density=0.2, random_state=2, format="csr")
    ex.data[:] = 1
    items32 = items.astype(np.float32)
    vmax = float(np.linalg.norm(items, axis=1).max())
    scans = []
    real = topk_kernels.topk
    with config.override(lowrank_f32_extra=extra), pytest.MonkeyPatch.context() as mp:
        mp.setattr(topk_kernels, "topk", lambda Qs, *a, **kw: (scans.append(Qs.dtype), real(Qs, *a, **kw))[1])
        idx, sc = sm.topk_f32_certified(Q, items, items32, vmax, 10, ex)
        assert scans == [np.float32, np.float64]                # the band's rows fell back to float64
        for rows in ([5], [0], [14], list(range(3, 40)), list(range(69, -1, -3))):
            i, s = sm.topk_f32_certified(Q[rows], items, items32, vmax, 10, ex[rows])
            assert np.array_equal(i, idx[rows]) and np.array_equal(s, sc[rows]), rows
    want = np.argsort(-np.where(ex.toarray() > 0, -np.inf, Q @ items.T), axis=1, kind="stable")[:, :10]
    exact = np.take_along_axis(Q @ items.T, want, 1)
    np.testing.assert_allclose(sc, exact, rtol=1e-12)
    band = idx[::7]                                             # near-ties: the float64 order, lower ids first
    assert np.all(np.isin(band, np.arange(99, 140)))
