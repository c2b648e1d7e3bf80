"""The main job (stgkern.model): split, baselines, closed form, PyTorch model, no leakage."""
import math

import numpy as np
import pytest

from naive import naive_markov_ranking, naive_popularity_ranking
from stgkern import data as sd
from stgkern import model as sm
from stgkern.readout import topk


def _log(seqs, times=None, behaviors=None, categories=None):
    """EventLog from per-user item lists (user u = seqs[u]); times 0, 10, 20, ... per user."""
    user = np.concatenate([[u] * len(s) for u, s in enumerate(seqs)])
    item = np.concatenate([list(s) for s in seqs])
    t = np.concatenate([np.arange(len(s)) * 10 for s in seqs]) if times is None else np.asarray(times)
    beh = np.zeros(len(item), np.int64) if behaviors is None else np.asarray(behaviors)
    cat = item % 3 if categories is None else np.asarray(categories)
    return sd.EventLog.from_arrays(user, item, t, category=cat, behavior=beh,
                                   behavior_names=("pv", "cart", "fav", "buy"))


@pytest.fixture(scope="module")
def small():
    log = sd.synthetic_log(n_users=80, n_items=60, n_categories=6, events_per_user=20, seed=3, p_follow=0.9,
                           process="markov")
    return sm.prepare(log, k_core_k=2)


# ------------------------------------------------------------------ preparation
def test_prepare_matches_split_leave_one_out(small):
    train, valid, test = sd.split_leave_one_out(small.log)
    assert np.array_equal(small.train.item, train.item) and np.array_equal(small.train.user, train.user)
    assert np.array_equal(small.valid_item, valid.item) and np.array_equal(small.test_item, test.item)
    assert np.array_equal(small.eval_user, test.user)
    assert len(small.history) == len(train) + len(valid)
    # the exclusion rows hold exactly what the user touched before each target
    for r, u in enumerate(small.eval_user[:10]):
        assert set(small.seen_valid[r].indices) == set(train.item[train.user == u])
        assert set(small.seen_test[r].indices) == set(small.history.item[small.history.user == u])


def test_prepare_rejects_bad_min_length_and_empty_result():
    log = _log([[0, 1, 2], [1, 2]])
    with pytest.raises(ValueError, match="min_length must be >= 3"):
        sm.prepare(log, 1, min_length=2)
    with pytest.raises(ValueError, match="no events left"):
        sm.prepare(log, 50)


def test_transitions_and_last_rows():
    log = _log([[5, 6, 7], [8], [9, 5]]).sort()
    src, dst = sm.transitions(log)
    assert src.tolist() == [0, 1, 4] and dst.tolist() == [1, 2, 5]
    assert sm.last_rows(log, np.array([0, 2])).tolist() == [2, 5]


# ------------------------------------------------------------------ ranking helper
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (5, 33, 7), (4, 10, 10)])
def test_rank_dense_matches_topk(m, n, k):
    rng = np.random.default_rng(m * n)
    S = rng.integers(0, 4, (m, n)).astype(np.float64)      # many ties
    ex_rows = [sorted(rng.choice(n, rng.integers(0, n), replace=False).tolist()) for _ in range(m)]
    ptr = np.concatenate([[0], np.cumsum([len(r) for r in ex_rows])]).astype(np.int64)
    ind = np.array(sum(ex_rows, []), np.int64)
    import scipy.sparse as sp
    ex = sp.csr_matrix((np.ones(len(ind)), ind, ptr), shape=(m, n))
    got = sm.rank_dense(S, k, ex)
    want, _ = topk(S, np.eye(n), k, (ptr, ind))
    assert np.array_equal(got, want)


# ------------------------------------------------------------------ baselines
def test_popularity_hand_example():
    # histories (train + validation): [2, 2, 1, 0], [1, 2, 3, 1], [0, 2, 1, 3]; tests 4, 0, 2
    # counts: item 1 x4, item 2 x4, item 0 x2, item 3 x2, item 4 x0 -> order 1, 2, 0, 3, 4
    seqs = [[2, 2, 1, 0, 4], [1, 2, 3, 1, 0], [0, 2, 1, 3, 2]]
    prep = sm.prepare(_log(seqs), 1)
    idx, beh = sm.popularity(prep, k=3)
    # seen items are skipped; fewer than k candidates pad with -1
    assert idx.tolist() == [[3, 4, -1], [0, 4, -1], [4, -1, -1]]
    for r, u in enumerate(prep.eval_user):
        hist = prep.history.item[prep.history.user == u]
        want = naive_popularity_ranking(prep.history.item, prep.n_items, set(hist.tolist()), 3)
        assert idx[r].tolist() == want
    assert beh.tolist() == [0, 0, 0]


def test_markov_hand_example():
    # histories [0, 1, 5], [0, 1, 6], [0, 2, 7], [3, 4, 0]: after item 0 come 1 (twice) and 2 (once)
    seqs = [[0, 1, 5, 9], [0, 1, 6, 9], [0, 2, 7, 9], [3, 4, 0, 9]]
    prep = sm.prepare(_log(seqs), 1)
    idx, _ = sm.markov(prep, k=4)
    # user 3 ends on 0 and has seen 3, 4, 0: successors 1, 2, then popularity (ties to lower id) 5, 6
    assert idx[3].tolist() == [1, 2, 5, 6]
    # user 0 ends on 5, which has no successor: pure popularity (0 x4, 1 x2 seen) -> 2, 3, 4, 6
    assert idx[0].tolist() == [2, 3, 4, 6]
    hist = {u: prep.history.item[prep.history.user == u].tolist() for u in prep.eval_user}
    for r, u in enumerate(prep.eval_user):
        want = naive_markov_ranking(list(hist.values()), hist[u][-1], prep.n_items, set(hist[u]), 4)
        assert idx[r].tolist() == want


def test_markov_behaviour_follows_last_behaviour():
    seqs = [[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]]
    beh = [1, 0, 1, 0, 0, 1, 0, 1, 0, 0]     # histories: cart, pv, cart, pv
    prep = sm.prepare(_log(seqs, behaviors=beh), 1)
    _, b = sm.markov(prep)
    # both end on pv, which is always followed by cart (the majority class would say pv); validation is
    # already perfect without offsets, so calibration leaves the table's answer alone
    assert b.tolist() == [1, 1]
    assert np.array_equal(b, sm.behavior_markov(prep)[0])
    assert sm.popularity(prep)[1].tolist() == [0, 0]


def test_gap_bucket_edges():
    log = _log([[0, 1, 2, 3, 4]], times=[0, 59, 60 + 59, 60 + 59 + 3600, 60 + 59 + 3600 + 86400]).sort()
    # first event, < 1 min, = 1 min (not below it), = 1 h, = 1 day
    assert sm.gap_bucket(log, np.arange(5)).tolist() == [0, 1, 2, 3, 4]


def test_calibrate_offsets_raises_validation_macro_f1():
    # class 1 is rare and never the argmax, but its score is higher where it is the truth
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.1).astype(np.int64)
    S = np.log(np.column_stack([np.full(400, 0.8), np.where(y == 1, 0.4, 0.1)]))
    S += rng.normal(0, 0.05, S.shape)
    f1 = lambda o: sm.M.precision_recall_f1(y, (S + o).argmax(1), n_classes=2)[2]
    prior = np.array([0.9, 0.1])
    off = sm.calibrate_offsets(S, y, prior)
    assert f1(off) > f1(np.zeros(2)) + 0.3
    assert np.array_equal(off, sm.calibrate_offsets(S, y, prior))          # deterministic
    assert sm.calibrate_offsets(S[:, :1], y * 0, [1.0]).tolist() == [0.0]  # one class: nothing to move
    # balanced classes: the prior moves nothing
    assert np.allclose(sm.calibrate_offsets(S, y, [0.5, 0.5]), 0.0)


def test_ndcg20_from_ranks_matches_rank_dense():
    rng = np.random.default_rng(1)
    S = rng.integers(0, 5, (30, 40)).astype(np.float64)               # many ties
    ex = sp_random_exclusion(rng, 30, 40)
    target = rng.integers(0, 40, 30)
    want = sm.M.ndcg(sm.rank_dense(S, 20, ex), target, 20)
    assert sm._ndcg20(S, ex, target) == pytest.approx(want, abs=1e-12)


def sp_random_exclusion(rng, m, n):
    import scipy.sparse as sp
    return sp.csr_matrix((rng.random((m, n)) < 0.2).astype(np.float64))


def test_ridge_matches_normal_equations():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(50, 4)), rng.integers(0, 3, 50)
    r = sm.Ridge(X, y, 3)
    Xc, Y = X - X.mean(0), np.eye(3)[y]
    lam = 0.3 * r.scale
    W = np.linalg.solve(Xc.T @ Xc + lam * np.eye(4), Xc.T @ Y)
    np.testing.assert_allclose(r.scores(X, 0.3), Y.mean(0) + Xc @ W, rtol=1e-9, atol=1e-9)


def test_ridge_in_row_chunks_matches_one_pass(monkeypatch):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(301, 5)).astype(np.float32), rng.integers(0, 7, 301)
    whole = sm.Ridge(X, y, 7)
    monkeypatch.setattr(sm.Ridge, "CHUNK", 64)                  # 5 chunks, the last one short
    chunked = sm.Ridge(X, y, 7)
    for lam in (1e-3, 1.0):
        np.testing.assert_allclose(chunked.scores(X, lam), whole.scores(X, lam), rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------ methods end to end
def _check_predictions(prep, idx, beh=None):
    assert idx.shape == (len(prep.eval_user), 20) and idx.dtype == np.int64
    for r in range(len(idx)):
        row = idx[r][idx[r] >= 0]
        assert len(set(row.tolist())) == len(row)
        assert not set(row.tolist()) & set(prep.seen_test[r].indices.tolist())
    res = sm.evaluate(prep, idx, beh)
    assert all(0.0 <= v <= 1.0 for v in res.values())
    return res


def test_closed_form_end_to_end(small):
    idx, beh, info = sm.fit_closed_form(small)
    res = _check_predictions(small, idx, beh)
    assert set(res) == {"HR@10", "HR@20", "NDCG@10", "NDCG@20", "MRR@20", "accuracy", "precision", "recall", "F1"}
    pop, _ = sm.popularity(small)
    # the log follows item transitions 90% of the time: the method must learn some of them
    assert res["HR@20"] > sm.evaluate(small, pop)["HR@20"]
    sr, _ = sm.srgnn_closed_form(small)
    _check_predictions(small, sr)


def test_closed_form_bounded_fit_chooses_as_the_dense_one(small):
    """Past dense_limit the weights are chosen and the test users ranked from top-20 lists:
    the same ridge strength, weights, validation NDCG and lists as the dense matrices give."""
    a = sm.fit_closed_form(small, seed=1, return_model=True)
    b = sm.fit_closed_form(small, seed=1, return_model=True, dense_limit=0)
    assert a[2]["ridge_lambda"] == b[2]["ridge_lambda"] and a[2]["mix"] == b[2]["mix"]
    assert a[2]["valid_NDCG@20"] == pytest.approx(b[2]["valid_NDCG@20"], abs=1e-12)
    assert any(v > 0 for v in a[2]["mix"].values())            # the ascent moved: the comparison bites
    np.testing.assert_array_equal(b[0], a[0])
    np.testing.assert_array_equal(b[1], a[1])


def test_mix_ndcg20_is_the_numpy_figure_bit_for_bit():
    """_choose_mix scores each trial without forming base + Σ w·comp: the same figure, bit for bit, as
    _ndcg20 of the formed matrix (ties, excluded items and excluded targets included)."""
    import scipy.sparse as sp
    from stgkern._numba.closed_form import mix_ndcg20
    rng = np.random.default_rng(0)
    for trial in range(60):
        m, n = int(rng.integers(1, 30)), int(rng.integers(2, 50))
        base = np.round(rng.standard_normal((m, n)), 1)           # rounded: many ties
        comps = [np.round(rng.random((m, n)), 1) for _ in range(int(rng.integers(1, 4)))]
        ex = sp.random(m, n, density=0.25, random_state=trial, format="csr")
        tgt = rng.integers(0, n, m)
        w = rng.choice([0.0, 0.1, 0.3, 1.0, 3.0], len(comps))
        want = sm._ndcg20(base + sum(w[j] * comps[j] for j in range(len(comps))), ex, tgt)
        gain = np.empty(m)
        mix_ndcg20(base, tuple(comps), w, ex.indptr.astype(np.int64), ex.indices.astype(np.int64), tgt, 20, gain)
        assert gain.mean() == want


def test_choose_mix_takes_the_same_weights_on_both_paths(monkeypatch):
    """Above MIX_KERNEL_MIN scores the ascent runs on the Numba pass, below on the NumPy expression:
    the same weights and the same best figure."""
    import scipy.sparse as sp
    rng = np.random.default_rng(1)
    m, n = 40, 70
    base = rng.standard_normal((m, n))
    comps = {k: rng.random((m, n)) * 2 for k in ("last", "window", "skip")}
    ex = sp.random(m, n, density=0.1, random_state=2, format="csr")
    tgt = rng.integers(0, n, m)
    runs = []
    for limit in (0, 1 << 40):
        monkeypatch.setattr(sm, "MIX_KERNEL_MIN", limit)
        runs.append(sm._choose_mix(base, comps, ex, tgt))
    assert runs[0] == runs[1] and any(v > 0 for v in runs[0][0].values())


def test_closed_form_deterministic(small):
    a = sm.fit_closed_form(small, seed=1)
    b = sm.fit_closed_form(small, seed=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def _standin_factory():
    torch = pytest.importorskip("torch")

    class StandIn(torch.nn.Module):
        """Plain-torch layer with STGConv's call signature: decayed mean of neighbours + self."""

        def __init__(self, dim, tau):
            super().__init__()
            self.lin_self, self.lin_nb = torch.nn.Linear(dim, dim), torch.nn.Linear(dim, dim, bias=False)
            self.log_tau = torch.nn.Parameter(torch.tensor(math.log(tau)))

        def forward(self, x, graph, dt=None, kind=None):
            assert kind is not None and int(kind.min()) >= 1       # the raw window-graph bitmask
            rows = torch.from_numpy(np.repeat(np.arange(graph.n_nodes), np.diff(graph.indptr)))
            cols = torch.from_numpy(graph.indices.astype(np.int64))
            w = torch.exp(-dt / torch.exp(self.log_tau))
            agg = torch.zeros_like(x).index_add_(0, rows, w[:, None] * x[cols])
            z = torch.zeros(x.shape[0]).index_add_(0, rows, w)
            return self.lin_self(x) + self.lin_nb(agg / (z[:, None] + 1e-6))

    return lambda kind, dim, tau: StandIn(dim, tau)


def test_torch_path_tiny_standin(small):
    idx, beh, info = sm.fit_torch(small, epochs=4, dim=16, conv_factory=_standin_factory())
    _check_predictions(small, idx, beh)
    assert 1 <= info["best_epoch"] <= info["epochs_run"] <= 4


@pytest.mark.parametrize("conv", ["stgconv", "attention"])
def test_torch_path_tiny_real_layers(small, conv):
    pytest.importorskip("torch")
    try:
        import stgkern.torch  # noqa: F401
    except ImportError:
        pytest.skip("stgkern.torch is not available")
    idx, beh, info = sm.fit_torch(small, conv=conv, epochs=3, dim=16, seed=0)
    _check_predictions(small, idx, beh)
    idx2, beh2, _ = sm.fit_torch(small, conv=conv, epochs=3, dim=16, seed=0)
    assert np.array_equal(idx, idx2) and np.array_equal(beh, beh2)     # fixed seed: same result


@pytest.mark.parametrize("blocks,heads", [(1, 1), (2, 2)])
def test_last_slot_forward_equals_the_full_forward(small, blocks, heads):
    """Predictions read the last slot only: model(b, last=True) attends from that slot alone in the
    last block and equals the full forward's last slot (eval mode; SASRec and the STG-GNN)."""
    torch = pytest.importorskip("torch")
    tr, B = small.train, small.n_behaviors
    torch.manual_seed(0)
    models = [sm.build_sasrec(small, dim=8, seq_len=10, n_blocks=blocks, heads=heads),
              sm.build_stg_model(small, dim=8, seq_len=10, n_blocks=blocks, heads=heads,
                                 conv_factory=_standin_factory())]
    data = sm._SegmentData(tr, B, 10, window=4, horizon=86400.0, category_window=2)
    s, e = sm._segments(tr, 10, np.arange(tr.n_users))
    assert (e - s < 10).any() and (e - s == 10).any()          # padded and full segments
    b = data.batch(s, e)
    with torch.no_grad():
        for model in models:
            model.eval()
            last, full = model(b, last=True), model(b)
            assert last.shape == (len(s), 1, 8)
            np.testing.assert_allclose(last[:, 0].numpy(), full[:, -1].numpy(), rtol=1e-5, atol=1e-6)


def test_sequence_loss_takes_the_target_rows_by_index(small):
    """_SequenceTrainer.loss gathers the rows with a next item (and those with a next behaviour) by
    their (B * L) slots: loss and gradients equal the boolean-mask form, bit for bit."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tr, B = small.train, small.n_behaviors
    torch.manual_seed(0)
    model = sm.build_stg_model(small, dim=8, seq_len=10, conv_factory=_standin_factory()).eval()
    trainer = sm._SequenceTrainer(model, n_items=small.n_items, n_behaviors=B,
                                  behavior_counts=np.bincount(tr.behavior, minlength=B), behavior_weight=0.5,
                                  new_items_only=True, n_negatives=8, max_events_per_user=None, seed=0)
    cnt = np.bincount(tr.item, minlength=small.n_items) + 1.0
    model.sample_q = torch.tensor(cnt / cnt.sum(), dtype=torch.float32)
    data = sm._SegmentData(tr, B, 10, window=4, horizon=86400.0, category_window=2)
    y_item, y_beh = trainer.targets(tr)
    s, e = trainer.segments(tr, 10)
    assert trainer.train_behavior and 2 * 8 < small.n_items           # both terms, sampled softmax
    trainer.gen.manual_seed(1)
    got = trainer.loss((data, y_item, y_beh, s[:9], e[:9]))
    g_got = torch.autograd.grad(got, list(model.parameters()), allow_unused=True)
    trainer.gen.manual_seed(1)
    b = data.batch(s[:9], e[:9])
    out = model(b)[b["valid"]]
    rows = torch.from_numpy(b["rows"])
    yi, yb = y_item[rows], y_beh[rows]
    m, mb = yi >= 0, yb >= 0
    assert 0 < int(m.sum()) < len(yi) and int(mb.sum()) > int(m.sum())   # the two selections differ
    want = sm._item_loss(model, out[m], yi[m], 8, trainer.gen) + 0.5 * F.cross_entropy(
        model.behavior_logits(out[mb], data.cross[rows[mb]]), yb[mb], weight=trainer.cw)
    g_want = torch.autograd.grad(want, list(model.parameters()), allow_unused=True)
    assert torch.equal(got, want)
    for a, w in zip(g_got, g_want):
        assert (a is None) == (w is None) and (a is None or torch.equal(a, w))


def test_group_data_equals_the_whole_logs(small):
    """A group of whole users cut from a log gives its segments the same inputs, bit for bit,
    as the whole log's data (what training over groups of users relies on)."""
    torch = pytest.importorskip("torch")
    tr, B = small.train, small.n_behaviors
    kw = dict(window=4, horizon=3600.0, category_window=2)
    whole = sm._SegmentData(tr, B, 7, **kw)
    users = np.array([3, 17, 18, 40])
    sub = sm.sub_log(tr, users)
    part = sm._SegmentData(sub, B, 7, prior=sm.behavior_shares(tr, B), **kw)
    s, e = sm._segments(tr, 7)
    keep = np.isin(tr.user[s], users)
    s2, e2 = sm._segments(sub, 7)
    assert len(s2) == keep.sum() > len(users)                       # several segments a user
    a = whole.batch(s[keep], e[keep])
    order = np.argsort(sub.user[s2], kind="stable")           # the same segments in the same (user) order
    b = part.batch(s2[order], e2[order])
    assert np.array_equal(tr.user[a["rows"]], sub.user[b["rows"]])
    for key in ("pad", "valid", "item", "category", "behavior", "dt", "kind", "features"):
        assert torch.equal(a[key], b[key]), key
    assert np.array_equal(a["graph"].indptr, b["graph"].indptr)
    assert np.array_equal(a["graph"].indices, b["graph"].indices)
    assert torch.equal(whole.cross[torch.from_numpy(a["rows"])], part.cross[torch.from_numpy(b["rows"])])
    # without the whole log's prior the behaviour context would differ: the prior is what keeps it
    alone = sm._SegmentData(sub, B, 7, **kw)
    assert not torch.equal(whole.cross[torch.from_numpy(a["rows"])], alone.cross[torch.from_numpy(b["rows"])])


def test_user_groups_cover_every_user_once(small):
    tr = small.train
    groups = list(sm.user_groups(tr, np.random.default_rng(0), 7))
    users = np.concatenate([u for u, _ in groups])
    assert sorted(users.tolist()) == sorted(np.unique(tr.user).tolist())
    assert all(len(u) <= 7 for u, _ in groups) and sum(len(g) for _, g in groups) == len(tr)
    for u, g in groups:
        assert set(np.unique(g.user).tolist()) == set(u.tolist())
        assert np.all(np.diff(g.user) >= 0)                                 # still sorted by user


def test_torch_path_over_user_groups(small):
    """fit_torch with graph_users builds each group's graph when its turn comes: it trains,
    predicts from per-group states equal to the whole log's, and is reproducible."""
    torch = pytest.importorskip("torch")
    idx, beh, info = sm.fit_torch(small, epochs=3, dim=16, graph_users=9, conv_factory=_standin_factory(), seed=2)
    _check_predictions(small, idx, beh)
    assert info["graph_users"] == 9 and info["steps"] > 3 * (small.train.n_users // 9)
    idx2, beh2, _ = sm.fit_torch(small, epochs=3, dim=16, graph_users=9, conv_factory=_standin_factory(), seed=2)
    assert np.array_equal(idx, idx2) and np.array_equal(beh, beh2)
    # the states a user gets from its group equal those from the whole log's data
    torch.manual_seed(0)
    model = sm.build_stg_model(small, dim=8, seq_len=12, dropout=0.0, conv_factory=_standin_factory()).eval()
    make = lambda log, prior: sm._SegmentData(log, small.n_behaviors, 12, prior=prior, window=4, horizon=None,
                                             category_window=1)
    tr, users = small.train, small.eval_user
    with torch.no_grad():
        H, C = sm.user_states(model, make, tr, users, data=make(tr, None))
        Hg, Cg = sm.user_states(model, make, tr, users, prior=sm.behavior_shares(tr, small.n_behaviors),
                                graph_users=5)
    assert torch.equal(C, Cg) and torch.allclose(H, Hg, atol=1e-5)
    with pytest.raises(ValueError, match="graph_users must be at least 1"):
        sm.fit_torch(small, epochs=1, graph_users=0, conv_factory=_standin_factory())


def test_srgnn_torch_tiny(small):
    pytest.importorskip("torch")
    idx, info = sm.fit_srgnn(small, epochs=3, dim=16, batch_size=256)
    _check_predictions(small, idx)
    assert info["steps"] >= 2 * info["epochs_run"]           # mini-batches: several steps per epoch


def test_minibatch_training_is_deterministic_with_several_steps(small):
    pytest.importorskip("torch")
    a_idx, a = sm.fit_sasrec(small, epochs=2, dim=16, seq_len=10, batch_size=16, seed=4)
    b_idx, b = sm.fit_sasrec(small, epochs=2, dim=16, seq_len=10, batch_size=16, seed=4)
    _check_predictions(small, a_idx)
    n_segments = len(sm._segments(small.train, 10)[0])
    assert a["steps"] == a["epochs_run"] * -(-n_segments // 16) and a["steps"] > 2 * a["epochs_run"]
    assert np.array_equal(a_idx, b_idx) and a["train_curve"] == b["train_curve"]
    c_idx, c = sm.fit_sasrec(small, epochs=2, dim=16, seq_len=10, batch_size=16, seed=5)
    assert c["train_curve"] != a["train_curve"]                 # the seed drives init and batch order


@pytest.mark.parametrize("heads", [1, 2])
def test_causal_blocks_attention_is_multihead_attentions(heads):
    """The blocks call their nn.MultiheadAttention's weights directly (no transposes, the fused
    dropout): the same values and gradients as its own forward, the mask as documented."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(heads)
    blocks = sm._blocks_class()(16, 7, 2, heads, 0.2).eval()
    x = torch.randn(5, 7, 16, requires_grad=True)
    valid = torch.rand(5, 7) > 0.3
    valid[:, -1] = True
    q = torch.arange(7)
    allowed = (q[None, :, None] >= q[None, None, :]) & (valid[:, None, :] | (q[:, None] == q[None, :]))
    for attn in blocks.attn:
        h = torch.randn(5, 7, 16, requires_grad=True)
        ours = blocks.attention(attn, h, ~allowed)
        ref = attn(h, h, h, attn_mask=(~allowed).repeat_interleave(heads, 0), need_weights=False)[0]
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
        g = torch.randn_like(ours)
        torch.testing.assert_close(torch.autograd.grad(ours, [h, attn.in_proj_weight], g),
                                   torch.autograd.grad(ref, [h, attn.in_proj_weight], g), rtol=1e-4, atol=1e-5)
    out = blocks(x, valid)
    assert out.shape == (5, 7, 16) and torch.isfinite(out).all()
    blocks.train()                                   # attention dropout on: another, finite output
    assert torch.isfinite(blocks(x, valid)).all() and not torch.allclose(blocks(x, valid), out)


def test_one_behaviour_skips_a_term_that_is_exactly_zero(monkeypatch):
    """With one behaviour (MovieLens' ratings) the behaviour cross-entropy is 0 with a zero gradient;
    skipping it trains the same weights, bit for bit, as computing it."""
    torch = pytest.importorskip("torch")
    seqs = [list(np.random.default_rng(u).integers(0, 25, 12)) for u in range(30)]
    log = _log(seqs)
    log = sd.EventLog.from_arrays(log.user, log.item, log.time, category=log.category, behavior=log.behavior,
                                  behavior_names=("rate",))
    prep = sm.prepare(log, k_core_k=2)
    assert prep.n_behaviors == 1
    kw = dict(epochs=2, dim=8, seq_len=6, batch_size=8, seed=1, conv_factory=_standin_factory())
    idx, beh, info = sm.fit_torch(prep, **kw)
    init = sm._SequenceTrainer.__init__

    def computed(self, *a, **k):
        init(self, *a, **k)
        self.train_behavior = self.with_behavior
    monkeypatch.setattr(sm._SequenceTrainer, "__init__", computed)
    idx2, beh2, info2 = sm.fit_torch(prep, **kw)
    assert np.array_equal(idx, idx2) and np.array_equal(beh, beh2)
    assert info["train_curve"] == info2["train_curve"]


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_adam_is_torch_adam_bit_for_bit(weight_decay):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    a = torch.nn.ModuleDict({"emb": torch.nn.Embedding(50, 8), "lin": torch.nn.Linear(8, 3),
                             "head": torch.nn.Linear(8, 2)})
    b = torch.nn.ModuleDict({k: type(m)(*((50, 8) if k == "emb" else (8, m.out_features))) for k, m in a.items()})
    b.load_state_dict(a.state_dict())
    ref = torch.optim.Adam(a.parameters(), lr=0.01, weight_decay=weight_decay)
    ours = sm._Adam(b.parameters(), lr=0.01, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(1)
    for step in range(12):
        idx = torch.randint(0, 50, (20,), generator=gen)
        for model, opt in ((a, ref), (b, ours)):
            opt.zero_grad()
            h = model["emb"](idx)
            loss = model["lin"](h).square().mean()
            if step % 3 == 0:                 # some steps leave a parameter without a gradient: it is skipped
                loss = loss + model["head"](h).sum()
            loss.backward()
            opt.step()
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(p, q), (step, name)


def test_segments_cover_each_user_from_the_end():
    log = _log([[0, 1, 2, 3, 4, 5, 6], [7, 8]]).sort()
    s, e = sm._segments(log, 3)
    assert sorted(zip(s.tolist(), e.tolist())) == [(0, 1), (1, 4), (4, 7), (7, 9)]
    s, e = sm._segments(log, 3, users=np.array([1, 0]))
    assert s.tolist() == [7, 4] and e.tolist() == [9, 7]


def _outputs_for_two_logs(model_builder, prep_a, prep_b, **data_kw):
    """Model outputs on the first user's whole (single) segment for two logs differing in later events."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = model_builder(prep_a).eval()
    outs = []
    for p in (prep_a, prep_b):
        data = sm._SegmentData(p.log, p.n_behaviors, 12, **data_kw)
        s, e = sm._segments(p.log, 12, users=np.array([0]))
        with torch.no_grad():
            outs.append(model(data.batch(s, e))[0])
    return outs


@pytest.mark.parametrize("which", ["sasrec", "stg"])
def test_sequence_models_are_causal(which):
    # user 0's events 0..9; the second log changes the items (and category, behaviour) of events 7..9
    base = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    alt = [base[0][:7] + [11, 3, 2], base[1]]          # same item set: same compact ids
    beh_a = np.zeros(20, np.int64)
    beh_b = beh_a.copy()
    beh_b[7:10] = [1, 2, 3]
    pa, pb = sm.prepare(_log(base, behaviors=beh_a), 1), sm.prepare(_log(alt, behaviors=beh_b), 1)
    if which == "sasrec":
        build, kw = (lambda p: sm.build_sasrec(p, dim=8, seq_len=12, dropout=0.0)), {}
    else:
        factory = _standin_factory()
        build = lambda p: sm.build_stg_model(p, dim=8, seq_len=12, dropout=0.0, conv_factory=factory)
        kw = dict(window=3, horizon=None, category_window=1)
    a, b = _outputs_for_two_logs(build, pa, pb, **kw)
    # right-aligned: the 10 events sit in slots 2..11; events 0..6 (slots 2..8) must not move
    assert torch_allclose(a[2:9], b[2:9])
    assert not torch_allclose(a[9:], b[9:])


def torch_allclose(x, y):
    return bool((x - y).abs().max() <= 1e-6)


def test_torch_unknown_layer_is_refused(small):
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="model='gcn' is not known"):
        sm.fit_torch(small, conv="gcn", epochs=1)


# ------------------------------------------------------------------ leakage
def _rotate_test_targets(log):
    """The same log with every user's last event given the next user's last item (and behaviour)."""
    log = log.sort()
    last = sm.last_rows(log, np.unique(log.user))
    item, beh, cat = log.item.copy(), log.behavior.copy(), log.category.copy()
    item[last] = np.roll(item[last], 1)
    beh[last] = np.roll(beh[last], 1)
    cat[last] = np.roll(cat[last], 1)
    return sd.EventLog(log.user, item, cat, beh, log.time, log.value, log.user_ids, log.item_ids,
                       log.category_ids, log.behavior_names)


@pytest.fixture(scope="module")
def copy_log():
    """Each user's test item repeats nowhere in their history, but would be trivially predictable
    from the test event itself: a leaking model would score HR@1 = 1."""
    rng = np.random.default_rng(0)
    seqs = [list(rng.choice(30, 6, replace=False)) for _ in range(40)]
    log = _log(seqs, categories=np.concatenate(seqs) % 5)
    return log


@pytest.mark.parametrize("method", ["closed_form", "torch", "sasrec", "srgnn"])
def test_no_leakage_predictions_ignore_the_test_event(copy_log, method):
    if method != "closed_form":
        pytest.importorskip("torch")
    fit = {"torch": lambda p: sm.fit_torch(p, epochs=3, dim=16, seq_len=8, conv_factory=_standin_factory()),
           "sasrec": lambda p: sm.fit_sasrec(p, epochs=3, dim=16, seq_len=8),
           "srgnn": lambda p: sm.fit_srgnn(p, epochs=3, dim=16),
           "closed_form": sm.fit_closed_form}[method]
    p1 = sm.prepare(copy_log, 1)
    p2 = sm.prepare(_rotate_test_targets(copy_log), 1)
    assert not np.array_equal(p1.test_item, p2.test_item)
    a, b = fit(p1), fit(p2)
    # predictions do not move when the test targets change: the test event is never an input
    assert np.array_equal(a[0], b[0])
    if len(a) == 3:
        assert np.array_equal(a[1], b[1])
    # nor does training: the same losses and validation scores epoch by epoch
    if "train_curve" in a[-1]:
        assert a[-1]["train_curve"] == b[-1]["train_curve"]
    assert a[-1] == b[-1]
    assert sm.evaluate(p1, a[0])["HR@20"] < 1.0


def test_no_leakage_baselines(copy_log):
    p1 = sm.prepare(copy_log, 1)
    p2 = sm.prepare(_rotate_test_targets(copy_log), 1)
    for f in (sm.popularity, sm.markov):
        a, b = f(p1), f(p2)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# ------------------------------------------------------------------ real data
@pytest.mark.slow
def test_taobao_model_beats_popularity_and_markov(shared_data):
    pytest.importorskip("torch")
    log = sd.load(shared_data / "taobao_userbehavior" / "UserBehavior_sample.csv", "taobao")
    prep = sm.prepare(log)
    idx, beh, _ = sm.fit_torch(prep)
    model = sm.evaluate(prep, idx, beh)
    for name, f in (("popularity", sm.popularity), ("Markov", sm.markov)):
        base = sm.evaluate(prep, *f(prep))
        for k in ("HR@20", "NDCG@20"):
            assert model[k] > base[k], (name, k, model[k], base[k])
