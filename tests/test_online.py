"""stgkern.online: incremental states equal a rebuild of the whole log, after every batch."""
import copy
import dataclasses
import os

import numpy as np
import pytest

import stgkern
from stgkern import model as sm
from stgkern.online import OnlineRecommender

from naive import naive_online_retained


@pytest.fixture(scope="module")
def fitted():
    log = stgkern.synthetic_log(n_users=90, n_items=160, n_categories=12, events_per_user=40, seed=3)
    prep = sm.prepare(log, k_core_k=2)
    *_, model = sm.fit_closed_form(prep, return_model=True, dim=12)
    return prep.log, model


def _variant(model, **graph_args):
    m = copy.copy(model)
    m.graph_args = dict(model.graph_args, **graph_args)
    return m


def _rebuilt(model, log):
    """What a rebuild gives: (user ids, X/H1/H2/H of each user's last event, lists, scores)."""
    lg = model.to_model_ids(log).sort()
    g = stgkern.window_graph(lg, **model.graph_args)
    X = sm._node_inputs(lg, g, model.E_item, model.E_cat, model.n_behaviors)
    P = sm._propagate(g, X, model.tau)
    H, _ = model.states(lg)
    users = np.unique(lg.user)
    rows = sm.last_rows(lg, users)
    d = X.shape[1]
    states = {"X": P[rows, :d], "H1": P[rows, d:2 * d], "H2": P[rows, 2 * d:], "H": H[rows]}
    ids, items, scores = model.recommend(log, k=10)
    assert np.array_equal(ids, lg.user_ids[users])
    return ids, states, items, scores


def _stream(log, rng, n_batches, coarsen=None, foreign=0):
    """The log in arrival order (by time, ties at random), cut into ``n_batches`` random batches,
    each shuffled; ``coarsen`` rounds times down (many ties); ``foreign`` events get item and
    category ids the model never saw."""
    if coarsen:
        log = dataclasses.replace(log, time=log.time // coarsen * coarsen)
    if foreign:
        pick = rng.choice(len(log), foreign, replace=False)
        item_ids = np.append(log.item_ids, [10 ** 9, 10 ** 9 + 1])
        cat_ids = np.append(log.category_ids, [10 ** 9])
        item, cat = log.item.copy(), log.category.copy()
        item[pick] = len(log.item_ids) + rng.integers(0, 2, foreign)
        cat[pick[::2]] = len(log.category_ids)
        log = dataclasses.replace(log, item=item, category=cat, item_ids=item_ids, category_ids=cat_ids)
    arrival = np.lexsort((rng.random(len(log)), log.time))
    cuts = np.sort(rng.choice(np.arange(1, len(log)), n_batches - 1, replace=False))
    return log, [b[rng.permutation(len(b))] for b in np.split(arrival, cuts)]


def _cols(log, rows):
    """Rows of ``log`` as a mapping in the caller's ids (what a stream hands over)."""
    return {"user": log.user_ids[log.user[rows]], "item": log.item_ids[log.item[rows]],
            "category": log.category_ids[log.category[rows]], "behavior": log.behavior[rows],
            "time": log.time[rows].copy(), "value": None if log.value is None else log.value[rows]}


@pytest.mark.parametrize("graph_args, time_kind, coarsen, threads", [
    ({}, "int", None, "parallel"),                                        # the fitted settings (8, 1 day, 2)
    ({"window": 2, "horizon": None, "category_window": 3}, "int", 600, "serial"),   # no horizon, many ties
    ({"window": 0, "horizon": 7200.0, "category_window": 1}, "float", None, "serial"),
    ({"window": 3, "horizon": 0, "category_window": 0}, "int", 300, "parallel"),    # only same-second edges
])
def test_incremental_equals_rebuild_after_every_batch(fitted, graph_args, time_kind, coarsen, threads, monkeypatch):
    log, model = fitted
    # batches of this size take the parallel layer-1 path at 1 row and above, the serial one below 10**9
    monkeypatch.setattr(stgkern.config, "cpu_serial_rows", 1 if threads == "parallel" else 10 ** 9)
    model = _variant(model, **graph_args)
    rng = np.random.default_rng(len(str(graph_args)))
    log, batches = _stream(log, rng, 7, coarsen, foreign=25)
    if time_kind == "float":
        log = dataclasses.replace(log, time=log.time.astype(np.float64) + 0.25)
    rec = OnlineRecommender(model, capacity=16)           # small: every array grows on the way
    sent = np.zeros(0, np.int64)
    for b in batches:
        rec.update(log.take(b))
        sent = np.concatenate([sent, b])
        ids, want, items, scores = _rebuilt(model, log.take(sent))
        got = rec.states(ids)
        for key in ("X", "H1", "H2", "H"):
            assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key
        it, sc = rec.recommend(ids, k=10)
        assert np.array_equal(it, items) and np.array_equal(sc, scores)
        _check_retained(rec, model, log.take(sent))
    # the dense path, seen items kept, and a subset of users in another order (scores to rounding)
    _, items_d, scores_d = model.recommend(log.take(sent), k=10, method="dense", exclude_seen=False)
    it, sc = rec.recommend(ids, k=10, method="dense", exclude_seen=False)
    assert np.array_equal(it, items_d) and np.array_equal(sc, scores_d)
    sub = ids[::-3]
    it, sc = rec.recommend(sub, k=10)
    np.testing.assert_allclose(sc, scores[::-3], rtol=1e-9, atol=1e-12)
    assert rec.nbytes()["retained_events"] < len(sent)
    for u in ids[:6]:                     # after slots were freed and reused: still exact
        e = rec.explain(u, it[0, 0] if it[0, 0] >= 0 else model.item_ids[0])
        assert e.total() == pytest.approx(e.score, rel=1e-6, abs=1e-9)


def _check_retained(rec, model, log):
    """The state holds exactly the events tests/naive.py says it must (as a multiset per user)."""
    lg = model.to_model_ids(log).sort()
    ga = model.graph_args
    rows = naive_online_retained(lg.user, lg.time, lg.category, ga["window"], ga["horizon"],
                                 ga["category_window"])
    want = sorted(zip(lg.user_ids[lg.user[rows]].tolist(), lg.time[rows].tolist(), lg.item[rows].tolist(),
                      lg.behavior[rows].tolist()))
    r = rec.retained()
    got = sorted(zip(r["user"].tolist(), r["time"].tolist(), r["item"].tolist(), r["behavior"].tolist()))
    assert got == want


def test_a_batch_in_arrival_order_equals_one_at_a_time(fitted):
    log, model = fitted
    log = log.take(np.arange(0, len(log), 3))
    a, b = OnlineRecommender(model), OnlineRecommender(model)
    order = np.lexsort((log.user, log.time))
    a.update(log.take(order))
    for i in order[:400]:
        b.update(log.take(np.array([i])))
    b.update(log.take(order[400:]))
    users = np.unique(log.user_ids[log.user])
    for key in ("H1", "H"):
        assert np.array_equal(a.states(users)[key], b.states(users)[key])


def test_an_older_event_refuses_the_whole_batch(fitted):
    log, model = fitted
    rec = OnlineRecommender(model)
    rec.update(log.take(np.arange(200)))
    before = {k: v.copy() for k, v in vars(rec).items() if isinstance(v, np.ndarray)}
    counts = (rec.n_users, rec.n_seen, rec.n_pool, rec.n_free)
    u = log.user[150]
    last = np.flatnonzero(log.user[:200] == u)[-1]
    late_batch = _cols(log, np.r_[200:260, last])
    late_batch["time"][-1] -= 1
    with pytest.raises(ValueError, match="older than that user's latest event"):
        rec.update(late_batch)
    assert (rec.n_users, rec.n_seen, rec.n_pool, rec.n_free) == counts
    for k, v in before.items():
        assert np.array_equal(getattr(rec, k), v), k
    # the same time as the latest is a tie, accepted and placed after it
    rec.update(_cols(log, np.array([last])))


def test_bad_input_is_refused_before_anything_changes(fitted):
    log, model = fitted
    rec = OnlineRecommender(model)
    cols = {"user": np.array([1, 2]), "item": log.item_ids[:2], "category": log.category_ids[:2],
            "behavior": np.array([0, 1]), "time": np.array([5, 6])}
    with pytest.raises(TypeError, match="mapping with 'user'"):
        rec.update({"user": cols["user"]})
    with pytest.raises(ValueError, match="behavior\\[1\\] = 9"):
        rec.update(dict(cols, behavior=np.array([0, 9])))
    with pytest.raises(ValueError, match="NaN or inf"):
        rec.update(dict(cols, time=np.array([5.0, np.nan])))
    with pytest.raises(ValueError, match="item has 1 events"):
        rec.update(dict(cols, item=cols["item"][:1]))
    with pytest.raises(ValueError, match="value must be finite and > -1"):
        rec.update(dict(cols, value=np.array([0.0, -1.0])))
    with pytest.raises(ValueError, match="reserved"):
        rec.update(dict(cols, user=np.array([1, np.iinfo(np.int64).min])))
    assert rec.n_users == 0 and rec.n_pool == 0
    rec.update(cols)
    with pytest.raises(TypeError, match="float64 in this batch but int64"):
        rec.update(dict(cols, time=np.array([7.0, 8.0])))
    with pytest.raises(KeyError, match="no events received for user"):
        rec.recommend([1, 3])
    with pytest.raises(ValueError, match="k must be at least 1"):
        rec.recommend([1], k=0)
    with pytest.raises(KeyError, match="not in the model's catalogue"):
        rec.explain(1, -12345)
    with pytest.raises(ValueError, match="integer window"):
        OnlineRecommender(_variant(model, window=None))
    bare = copy.copy(model)
    bare.tables = None
    with pytest.raises(ValueError, match="no component tables"):
        OnlineRecommender(bare)
    # a mapping in the caller's ids serves like an EventLog
    items, _ = rec.recommend([2], k=5)
    assert items.shape == (1, 5)


def test_save_load_continues_exactly_and_a_failed_save_keeps_the_old_file(fitted, tmp_path, monkeypatch):
    log, model = fitted
    rng = np.random.default_rng(0)
    log, batches = _stream(log, rng, 4)
    a = OnlineRecommender(model)
    a.update(log.take(batches[0])).update(log.take(batches[1]))
    path = tmp_path / "state.npz"
    a.save(path)
    b = OnlineRecommender.load(path, model)
    for batch in batches[2:]:
        a.update(log.take(batch))
        b.update(log.take(batch))
    users = np.unique(log.user_ids[log.user])
    assert np.array_equal(a.states(users)["H"], b.states(users)["H"])
    assert np.array_equal(a.recommend(users)[0], b.recommend(users)[0])

    saved = path.read_bytes()

    def broken(f, **arrays):                      # dies half-way through writing
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        b.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == saved and os.listdir(tmp_path) == ["state.npz"]

    other = copy.copy(model)
    other.E_item = model.E_item + 1
    with pytest.raises(ValueError, match="another model's embeddings"):
        OnlineRecommender.load(path, other)
    np.savez(tmp_path / "x.npz", a=np.zeros(1))
    with pytest.raises(ValueError, match="not an stgkern online state"):
        OnlineRecommender.load(tmp_path / "x.npz", model)


def test_explanations_sum_to_the_score(fitted):
    log, model = fitted
    rec = OnlineRecommender(model).update(log)
    users = np.unique(log.user_ids[log.user])[:12]
    items, scores = rec.recommend(users, k=3)
    n_checked = 0
    for u, row, srow in zip(users, items, scores):
        for it, s in zip(row, srow):
            e = rec.explain(u, it)
            assert e.score == pytest.approx(s, rel=1e-9, abs=1e-12)          # the ranked score itself
            assert e.total() == pytest.approx(e.score, rel=1e-6, abs=1e-9)
            ev = e.events()
            assert sum(x["contribution"] for x in ev) == pytest.approx(e.total() - e.bias, rel=1e-12, abs=1e-15)
            uidx = rec._known([u])[0]
            assert ev[0]["time"] <= rec.latest[uidx]
            routes = {r for x in ev for r in x["routes"]}
            assert "self" in routes
            n_checked += 1
    assert n_checked == 36


def test_refresh_swaps_tables_and_refuses_other_embeddings(fitted):
    log, model = fitted
    model = copy.copy(model)
    rec = OnlineRecommender(model).update(log)
    half = log.take(np.arange(len(log) // 2))
    rec.refresh(counts=model.counts(half))
    users, items, _ = model.recommend(log, k=10)          # the model now holds half's tables
    assert np.array_equal(rec.recommend(users, k=10)[0], items)
    other = copy.copy(model)
    other.E_cat = model.E_cat * 2
    with pytest.raises(ValueError, match="embeddings or graph settings differ"):
        rec.refresh(model=other)
    assert rec.model is model


def _offline_hits(model, log, rows, k):
    """Hits of the lists a rebuild makes from each scored event's user's earlier events."""
    hits = 0
    for r in rows:
        before = np.flatnonzero((log.user == log.user[r]) & (np.arange(len(log)) < r))
        if len(before):
            _, items, _ = model.recommend(log.take(before), k=k)
            hits += int(log.item_ids[log.item[r]] in set(items[0].tolist()))
    return hits


def test_replay_scores_each_event_with_the_list_made_just_before_it(fitted):
    from stgkern.online import replay
    log, model = fitted
    log = log.take(np.flatnonzero(log.user < 30))
    users = np.unique(log.user)
    last = sm.last_rows(log, users)
    r = replay(model, log, last, k=10)
    want = _offline_hits(model, log, last, 10)
    assert r["scored"] == len(users)
    assert r["hits"] == want and want > 0
    # one scored event per user: one batch before the lists, one after
    assert r["batches"] == 2 and r["events"] == len(log)
    # two scored events per user: a held user's second one cuts the stream
    long = np.bincount(log.user)[users] >= 8
    both = np.concatenate([last, last[long] - 5])
    r2 = replay(model, log, both, k=10)
    assert r2["scored"] == len(both) > len(users)
    assert r2["hits"] == _offline_hits(model, log, both, 10)
    assert 2 < r2["batches"] <= len(users) + 2
