import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from stgkern.data import (EventLog, k_core, split_leave_one_out, synthetic_log, load_taobao,
                          load_movielens, filter_time, from_dataframe)
from naive import naive_k_core


def test_roundtrip_ids():
    u = np.array([70, 3, 70, 9]); i = np.array(["a", "b", "a", "c"])
    log = EventLog.from_arrays(u, i, [1, 2, 3, 4])
    assert (log.user_ids[log.user] == u).all() and (log.item_ids[log.item] == i).all()
    assert log.n_users == 3 and len(log) == 4


def test_errors():
    with pytest.raises(ValueError, match="user=3.*item=2"):
        EventLog.from_arrays([1, 2, 3], [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="1 NaN.*position 1"):
        EventLog.from_arrays([1, 2], [1, 2], [1.0, np.nan])
    with pytest.raises(TypeError, match="user"):
        EventLog.from_arrays([1.5, 2.0], [1, 2], [1, 2])
    with pytest.raises(ValueError, match="zap"):
        EventLog.from_arrays([1], [1], [1], behavior=["zap"], behavior_names=("pv", "buy"))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=40), st.integers(1, 3), st.integers(1, 3))
def test_k_core(pairs, uk, ik):
    u = np.array([p[0] for p in pairs], np.int64); i = np.array([p[1] for p in pairs], np.int64)
    log = EventLog.from_arrays(u, i, np.arange(len(u)))
    out, rep = k_core(log, uk, ik)
    exp = naive_k_core(u, i, uk, ik)
    assert len(out) == exp.sum() and rep["events_removed"] == len(u) - exp.sum()
    again, _ = k_core(out, uk, ik)
    assert len(again) == len(out)


def test_loo():
    log = EventLog.from_arrays([1, 1, 1, 2, 2, 1], [1, 2, 3, 4, 5, 6], [1, 2, 3, 1, 2, 4])
    tr, va, te = split_leave_one_out(log)
    assert list(te.item_ids[te.item]) == [6] and list(va.item_ids[va.item]) == [3]
    assert len(tr) == 4


def test_synthetic():
    a = synthetic_log(n_users=200, n_items=500, seed=1, process="markov")
    b = synthetic_log(n_users=200, n_items=500, seed=1, process="markov")
    assert (a.item == b.item).all() and (a.time == b.time).all()
    assert (np.diff(a.time)[np.diff(a.user) == 0] >= 0).all()
    assert (a.behavior == 3).sum() < (a.behavior == 0).sum()
    for k in np.flatnonzero(a.behavior == 3)[:200]:
        prev = (a.user[:k] == a.user[k]) & (a.item[:k] == a.item[k]) & (a.behavior[:k] != 3)
        assert prev.any()
    # learnable transitions: most frequent successor beats chance
    same = a.user[1:] == a.user[:-1]
    x, y = a.item[:-1][same], a.item[1:][same]
    key = x * a.n_items + y
    ks, c = np.unique(key, return_counts=True)
    best = {}
    for kk, cc in zip(ks, c):
        s = kk // a.n_items
        if cc > best.get(s, (0, 0))[0]:
            best[s] = (cc, kk % a.n_items)
    acc = np.mean([best[s][1] == t for s, t in zip(x, y)])
    assert acc > 20 / a.n_items


def test_loader_malformed(tmp_path):
    p = tmp_path / "ub.csv"
    p.write_text("1,2,3,pv,100\n1,2,3,buy,abc\n")
    with pytest.raises(ValueError, match="line 2.*timestamp"):
        load_taobao(p)
    p.write_text("1,2,3,pv,100\n1,4,3,buy,200\n")
    assert load_taobao(p).summary()["n_buy"] == 1


def test_real_taobao(shared_data):
    log = load_taobao(shared_data / "taobao_userbehavior" / "UserBehavior_sample.csv")
    s = log.summary()
    assert (s["events"], s["users"], s["items"], s["categories"]) == (84475, 815, 55368, 2914)
    assert (s["n_pv"], s["n_cart"], s["n_fav"], s["n_buy"]) == (75872, 4497, 2356, 1750)


def test_real_movielens(shared_data):
    log = load_movielens(shared_data / "ml-latest-small" / "ratings.csv")
    assert (len(log), log.n_users, log.n_items) == (100836, 610, 9724)


def test_recbole_yoochoose_load(tmp_path):
    from stgkern.data import load_recbole, load_yoochoose, load
    p = tmp_path / "x.inter"
    p.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\ti1\t4\t10\nu2\ti2\t3\t11\n")
    q = tmp_path / "x.item"
    q.write_text("item_id:token\tgenre:token_seq\ni1\tA B\ni2\tC\n")
    log = load_recbole(p, q)
    assert len(log) == 2 and list(log.category_ids) == ["A", "C"] and list(log.value) == [4.0, 3.0]
    y = tmp_path / "y.txt"
    y.write_text("SessionId\tItemId\tTime\n1\t5\t1.5\n1\t6\t2.5\n")
    assert load(y, "yoochoose").n_users == 1
    d = tmp_path / "c.dat"
    d.write_text("1,2014-04-07T10:51:09.277Z,214536502,0\n1,bad,214536500,0\n")
    with pytest.raises(ValueError, match="line 2.*timestamp"):
        load_yoochoose(d)
    with pytest.raises(ValueError, match="taobao"):
        load(y, "nope")


def test_filters_report_and_period_split():
    from stgkern.data import filter_min_length, split_last_period
    log = EventLog.from_arrays([1, 1, 2, 3, 3, 3], [1, 2, 1, 3, 4, 1], [1, 5, 2, 3, 9, 10])
    out, rep = filter_min_length(log, 2)
    assert len(out) == 5 and rep == {"events_removed": 1, "users_removed": 1, "items_removed": 0}
    out, rep = filter_time(log, start=2, end=10)
    assert sorted(out.time) == [2, 3, 5, 9] and rep["events_removed"] == 2
    tr, te = split_last_period(log, 5)
    assert (tr.time < 5).all() and (te.time >= 5).all() and len(tr) + len(te) == 6
    assert (log.sort().time == [1, 5, 2, 3, 9, 10]).all()
    assert len(log.take(log.user == 0).compact().user_ids) == 1
    assert list(log.to_dataframe().columns[:2]) == ["user_id", "item_id"]


def test_taobao_line_and_column_errors(tmp_path):
    p = tmp_path / "ub.csv"
    p.write_text("1,2,3,pv,100\n1,2,3,pv\n")
    with pytest.raises(ValueError, match=r"line 2, column 'timestamp': missing value"):
        load_taobao(p)
    p.write_text("1,2,3,pv,100\n1,2,3,pv,100,7\n")
    with pytest.raises(ValueError, match="malformed"):
        load_taobao(p)
    p.write_text("1,2,3,pv,100\n1,2,3,buy,101\n4,5,6,click,102\n")
    with pytest.raises(ValueError, match=r"line 3, column 'behavior_type'.*'click'"):
        load_taobao(p)
    p.write_text("1,x,3,pv,100\n")
    with pytest.raises(ValueError, match=r"line 1, column 'item_id': not a number"):
        load_taobao(p)


def test_movielens_missing_column(tmp_path):
    p = tmp_path / "ratings.csv"
    p.write_text("userId,movieId,timestamp\n1,2,3\n")
    with pytest.raises(ValueError, match="rating"):
        load_movielens(p)


def test_empty_and_single_event_logs():
    empty = EventLog.from_arrays(np.array([], np.int64), np.array([], np.int64), np.array([], np.int64))
    assert len(empty) == 0 and empty.n_users == 0
    out, rep = k_core(empty, 1, 1)
    assert len(out) == 0 and rep["events_removed"] == 0
    one = EventLog.from_arrays([5], [9], [1.5])
    tr, va, te = split_leave_one_out(one)
    assert (len(tr), len(va), len(te)) == (1, 0, 0)


def test_synthetic_structure():
    log = synthetic_log(n_users=2000, n_items=3000, n_categories=30, events_per_user=30, seed=3, process="markov")
    # power-law activity: the busiest 10% of users hold far more than 10% of events
    per_user = np.sort(np.bincount(log.user, minlength=log.n_users))[::-1]
    assert per_user[: log.n_users // 10].sum() > 0.35 * len(log)
    # power-law popularity: the top 1% of items hold a large share of views
    per_item = np.sort(np.bincount(log.item, minlength=log.n_items))[::-1]
    assert per_item[: log.n_items // 100].sum() > 0.15 * len(log)
    # category transitions: predicting the next category from the previous one by the most
    # frequent successor beats predicting the globally most frequent category by a wide margin
    same = log.user[1:] == log.user[:-1]
    a, b = log.category[:-1][same], log.category[1:][same]
    counts = np.zeros((log.n_categories, log.n_categories), np.int64)
    np.add.at(counts, (a, b), 1)
    acc_markov = counts.max(axis=1).sum() / same.sum()
    acc_global = np.bincount(b).max() / same.sum()
    assert acc_markov > 3 * acc_global
    # behaviour funnel
    share = np.bincount(log.behavior, minlength=4) / len(log)
    assert share[0] > 0.8 and 0 < share[3] < share[1]
    with pytest.raises(ValueError, match="p_follow"):
        synthetic_log(n_users=5, p_follow=1.5, process="markov")


@pytest.mark.parametrize("unit", ["D", "h", "m", "s", "ms", "us", "ns"])
def test_event_times_from_datetime64_any_unit(unit):
    base = np.datetime64("2017-11-25T09:30:00", "s")
    t = (base + np.array([0, 3600, 86400]).astype("timedelta64[s]")).astype(f"datetime64[{unit}]")
    log = EventLog.from_arrays([1, 1, 2], [5, 6, 5], t)
    want = t.astype("datetime64[s]").astype(np.int64)            # seconds since the epoch
    assert log.time.dtype == np.int64
    np.testing.assert_array_equal(log.time, want)


def test_event_times_with_fractions_strings_and_time_zones():
    pd = pytest.importorskip("pandas")
    t = np.array(["2024-01-01T00:00:00.250", "2024-01-01T00:00:01"], "datetime64[ms]")
    log = EventLog.from_arrays([1, 1], [5, 6], t)
    assert log.time.dtype == np.float64
    np.testing.assert_array_equal(log.time, [1704067200.25, 1704067201.0])
    # ISO strings (with and without an offset: naive ones are UTC) and tz-aware pandas times
    iso = np.array(["2024-01-01T08:00:00+08:00", "2024-01-01T00:00:01"])
    np.testing.assert_array_equal(EventLog.from_arrays([1, 1], [5, 6], iso).time, [1704067200, 1704067201])
    aware = pd.to_datetime(["2024-01-01 01:00", "2024-01-01 02:00"]).tz_localize("Europe/Berlin")
    np.testing.assert_array_equal(EventLog.from_arrays([1, 1], [5, 6], aware).time, [1704067200, 1704070800])
    df = pd.DataFrame({"u": [1, 1], "i": ["a", "b"], "t": aware})
    np.testing.assert_array_equal(from_dataframe(df, "u", "i", "t").time, [1704067200, 1704070800])
    with pytest.raises(ValueError, match="NaT"):
        EventLog.from_arrays([1, 1], [5, 6], np.array(["2024-01-01", "NaT"], "datetime64[s]"))
    with pytest.raises(TypeError, match="not dates or times in ISO 8601"):
        EventLog.from_arrays([1, 1], [5, 6], np.array(["2024-01-01", "yesterday"]))


def test_event_log_prints_a_summary():
    log = synthetic_log(n_users=20, seed=0)
    r = repr(log)
    assert r.startswith(f"EventLog({len(log):,} events: 20 users") and "array(" not in r
    for name, k in zip(log.behavior_names, np.bincount(log.behavior, minlength=log.n_behaviors)):
        assert f"{name} {k:,}" in r
    assert str(np.datetime64(int(log.time.min()), "s")).replace("T", " ") in r
    e = np.array([], np.int64)
    assert repr(EventLog.from_arrays(e, e, e)) == "EventLog(0 events: 0 users, 0 items, 0 categories)"


def test_taobao_labels_keep_one_coding_everywhere(tmp_path):
    pytest.importorskip("pandas")
    b = np.array(["buy", "pv", "fav", "pv"])
    log = EventLog.from_arrays([1, 1, 2, 2], [1, 2, 3, 4], [1, 2, 3, 4], behavior=b)
    assert log.behavior_names == ("pv", "cart", "fav", "buy")
    np.testing.assert_array_equal(log.behavior, [3, 0, 2, 0])
    p = tmp_path / "t.csv"
    p.write_text("".join(f"{u},{i},1,{x},{t}\n" for u, i, x, t in zip([1, 1, 2, 2], [1, 2, 3, 4], b, [1, 2, 3, 4])))
    t = load_taobao(str(p))
    assert t.behavior_names == log.behavior_names
    np.testing.assert_array_equal(t.behavior, log.behavior)
    other = EventLog.from_arrays([1, 1], [1, 2], [1, 2], behavior=np.array(["view", "buy"]))
    assert other.behavior_names == ("buy", "view")                  # not Taobao's: sorted labels
