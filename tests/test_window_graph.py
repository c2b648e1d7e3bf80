import contextlib
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from naive import naive_window_graph
from stgkern import config
from stgkern.construct import estimate_window_graph, window_graph
from stgkern.graph import Graph

ROOT = Path(__file__).resolve().parents[1]


def edges_of(g):
    """(dst, src, dt, hop, kind) per edge, CSR order, mapped through nothing (node ids)."""
    dst = g.dst()
    return [(int(dst[k]), int(g.indices[k]), g.edata["dt"][k], int(g.edata["hop"][k]), int(g.edata["kind"][k]))
            for k in range(g.nnz)]


def check_against_naive(user, time, category=None, **kw):
    g = window_graph(user, time, category, **kw)
    perm, ref = naive_window_graph(user, time, category, **kw)
    np.testing.assert_array_equal(g.perm, perm)
    got = edges_of(g)
    assert [e[:2] + e[3:] for e in got] == [e[:2] + e[3:] for e in ref]
    np.testing.assert_array_equal(np.array([e[2] for e in got], dtype=g.edata["dt"].dtype),
                                  np.array([e[2] for e in ref], dtype=g.edata["dt"].dtype))
    assert g.edata["dt"].dtype == np.asarray(time).dtype if np.asarray(time).dtype.kind in "if" else True
    assert g.edata["hop"].dtype == np.int32 and g.edata["kind"].dtype == np.uint8
    assert g.rows_sorted
    g._rows_sorted = None
    assert g.rows_sorted  # recomputed, strictly ascending sources per row
    # segments: each segment's nodes belong to one user, users ascending
    us = np.asarray(user)[g.perm]
    for s in range(g.segment_ptr.shape[0] - 1):
        a, b = g.segment_ptr[s], g.segment_ptr[s + 1]
        assert (us[a:b] == g.segment_user[s]).all()
    assert g.segment_ptr[-1] == len(us)
    return g


@st.composite
def logs(draw):
    n = draw(st.integers(0, 40))
    n_users = draw(st.integers(1, 5))
    user = np.array(draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n)), dtype=np.int64)
    if draw(st.booleans()):
        user = user * (2**40) - 3    # sparse ids: the lexsort path, not the counting sort
    float_time = draw(st.booleans())
    tvals = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))  # small range: many ties
    time = np.array(tvals, dtype=np.float64 if float_time else np.int64)
    if float_time:
        time = time * 0.5
    cat = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int64)
    kw = dict(window=draw(st.one_of(st.none(), st.integers(0, 6))),
              horizon=draw(st.one_of(st.none(), st.integers(0, 8))),
              strict_time=draw(st.booleans()),
              category_window=draw(st.integers(0, 4)),
              self_loops=draw(st.booleans()))
    return user, time, cat, kw


@given(logs())
def test_matches_naive_random(case):
    user, time, cat, kw = case
    check_against_naive(user, time, cat, **kw)


@given(logs())
def test_parallel_chunks_match_serial(case):
    # tiny chunks and the parallel path on tiny inputs: chunk boundaries inside users
    user, time, cat, kw = case
    import stgkern._numba.window_graph as k
    ref = window_graph(user, time, cat, **kw)
    old = k.CHUNK_ROWS
    k.CHUNK_ROWS = 3
    try:
        with config.override(cpu_serial_rows=1):
            g = window_graph(user, time, cat, **kw)
    finally:
        k.CHUNK_ROWS = old
    np.testing.assert_array_equal(g.indptr, ref.indptr)
    np.testing.assert_array_equal(g.indices, ref.indices)
    for name in ("dt", "hop", "kind"):
        np.testing.assert_array_equal(g.edata[name], ref.edata[name])


def test_docstring_example():
    g = window_graph(np.array([0, 0, 0, 1]), np.array([10, 20, 30, 5]), window=1)
    assert g.indptr.tolist() == [0, 0, 1, 2, 2]
    assert g.indices.tolist() == [0, 1]
    assert g.edata["dt"].tolist() == [10, 10]
    assert g.segment_ptr.tolist() == [0, 3, 4]


def test_empty_and_one_event():
    e = np.zeros(0, dtype=np.int64)
    g = window_graph(e, e)
    assert g.n_nodes == 0 and g.nnz == 0 and g.indptr.tolist() == [0]
    assert g.segment_ptr.tolist() == [0]
    g = window_graph(np.array([3]), np.array([1.5]), self_loops=True)
    assert g.nnz == 1 and g.edata["kind"].tolist() == [4] and g.edata["dt"].tolist() == [0.0]
    assert g.segment_ptr.tolist() == [0, 0, 0, 0, 1]   # dense ids: segment s = user s


def test_all_equal_timestamps_and_long_user():
    n = 50
    user = np.zeros(n, dtype=np.int64)
    time = np.full(n, 7, dtype=np.int64)
    g = check_against_naive(user, time, window=8)
    assert g.nnz == sum(min(i, 8) for i in range(n))
    g = window_graph(user, time, window=8, strict_time=True)
    assert g.nnz == 0
    check_against_naive(user, time, np.arange(n) % 3, window=2, category_window=5)
    check_against_naive(user, time, np.arange(n) % 3, window=None, horizon=0)


def test_window_zero_and_unlimited():
    rng = np.random.default_rng(0)
    user = rng.integers(0, 3, 30)
    time = rng.integers(0, 100, 30)
    g = check_against_naive(user, time, window=0)
    assert g.nnz == 0
    check_against_naive(user, time, window=None)
    check_against_naive(user, time, rng.integers(0, 2, 30), window=0, category_window=2)


def test_unsorted_input_and_assume_sorted():
    user = np.array([1, 0, 1, 0])
    time = np.array([5, 3, 2, 9])
    g = check_against_naive(user, time, window=3)
    assert g.perm.tolist() == [1, 3, 2, 0]
    with pytest.raises(ValueError, match="position 1"):
        window_graph(user, time, assume_sorted=True)
    with pytest.raises(ValueError, match=r"position 2 \(user 0, time 1"):
        window_graph(np.array([0, 0, 0]), np.array([1, 3, 1]), assume_sorted=True)
    s = window_graph(np.array([0, 0, 1]), np.array([1, 1, 0]), assume_sorted=True)
    assert s.perm.tolist() == [0, 1, 2]


def test_huge_ids_are_not_offsets():
    big = np.int64(2**62)
    user = np.array([big + 5, -big, big + 5, 7, -big], dtype=np.int64)
    time = np.array([1, 2, 3, 4, 5])
    g = check_against_naive(user, time, np.array([big, big, big, 1, 1]), window=2, category_window=1)
    assert g.segment_ptr.tolist() == [0, 2, 3, 5]
    assert g.segment_user.tolist() == [-big, 7, big + 5]


def test_time_ordered_log_fast_path_matches_lexsort():
    rng = np.random.default_rng(1)
    time = np.sort(rng.integers(0, 50, 200))
    user = rng.integers(0, 7, 200)
    check_against_naive(user, time, window=4, horizon=10)


def test_scan_detects_time_order():
    from stgkern.construct import _scan_columns
    time = np.array([1, 1, 2, 5, 5, 9])
    assert _scan_columns(np.array([3, 1, 3, 0, 1, 3]), time, True)[2:] == (1, True)
    assert _scan_columns(np.array([0, 0, 1, 1, 1, 2]), time, True)[2:] == (-1, True)
    assert _scan_columns(np.array([0, 0, 1]), np.array([1, 2, 0]), True)[2:] == (-1, False)
    assert _scan_columns(np.array([1, 0, 1]), np.array([1.0, 2.0, np.inf]), False)[3] is False


def test_count_refuses_rows_it_cannot_pack(monkeypatch):
    # the count pass packs each row's first source and count into one int64; the front
    # door's hop (int32) check keeps them in range, the backend says so if called directly
    import stgkern._numba.window_graph as k
    monkeypatch.setattr(k, "ROW_MASK", 7)
    run_ptr = np.array([0, 10], dtype=np.int64)
    t = np.arange(10, dtype=np.int64)
    with pytest.raises(ValueError, match="a user has 10 events"):
        k.count(run_ptr, t, None, None, None, False, 0, False)
    assert k.count(run_ptr, t, None, 3, None, False, 0, False)[1].sum() == 1 + 2 + 3 * 7
    assert k.count(run_ptr, t, None, None, None, False, 0, False, keep_rows=False)[1].sum() == 45


def test_log_object_and_noncontiguous():
    rng = np.random.default_rng(2)
    user = rng.integers(0, 4, 60)[::2]
    time = rng.random(60)[::2]
    cat = rng.integers(0, 3, 60)[::2]
    log = types.SimpleNamespace(user=user, time=time, category=cat, behavior=None)
    a = window_graph(log, window=3, category_window=2)
    b = check_against_naive(user, time, cat, window=3, category_window=2)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.edata["kind"], b.edata["kind"])
    with pytest.raises(TypeError, match="not both"):
        window_graph(log, time)


def test_round_trips():
    rng = np.random.default_rng(3)
    user = rng.integers(0, 5, 100)
    time = rng.integers(0, 1000, 100)
    g = window_graph(user, time, rng.integers(0, 4, 100), window=3, category_window=2, self_loops=True)
    A = g.to_scipy(weight="hop", dtype=np.int64)
    h = Graph.from_scipy(A)
    np.testing.assert_array_equal(h.indptr, g.indptr)
    np.testing.assert_array_equal(h.indices, g.indices)
    np.testing.assert_array_equal(h.edata["weight"], g.edata["hop"])
    ei = g.to_edge_index()
    assert (ei[0] <= ei[1]).all()          # sources never later than destinations
    h = Graph.from_edge_index(ei, g.n_nodes, edata={"kind": g.edata["kind"]})
    np.testing.assert_array_equal(h.indices, g.indices)
    np.testing.assert_array_equal(h.edata["kind"], g.edata["kind"])
    t = g.transpose()
    np.testing.assert_array_equal(g.dst()[t.edata["eid"]], t.indices)


def test_estimate():
    rng = np.random.default_rng(4)
    user = rng.integers(0, 6, 300)
    time = rng.integers(0, 10_000, 300)
    cat = rng.integers(0, 5, 300)
    kw = dict(window=5, horizon=500, category_window=3, self_loops=True, strict_time=True)
    g = window_graph(user, time, cat, **kw)
    ex = estimate_window_graph(user, time, cat, exact=True, **kw)
    ub = estimate_window_graph(user, time, cat, **kw)
    assert ex["nnz"] == g.nnz and ex["exact"]
    assert ub["nnz"] >= g.nnz and not ub["exact"]
    # the bound is tight without horizon/strict and with full windows
    g2 = window_graph(user, time, window=5)
    assert estimate_window_graph(user, time, window=5)["nnz"] == g2.nnz
    arrays = g.indptr.nbytes + g.indices.nbytes + sum(v.nbytes for v in g.edata.values()) \
        + g.perm.nbytes + g.segment_ptr.nbytes
    assert ex["bytes"] == arrays


def test_refuses_graph_that_cannot_fit():
    user = np.zeros(2000, dtype=np.int64)
    time = np.arange(2000)
    with config.override(max_memory_fraction=1e-9):
        with pytest.raises(MemoryError, match="window_graph"):
            window_graph(user, time, window=None)


@pytest.mark.parametrize("bad, exc, msg", [
    (dict(user=np.array([0.0, 1.0])), TypeError, "user must hold integer ids"),
    (dict(time=np.array([1, 2, 3])), ValueError, "time has 3 events but user has 2"),
    (dict(time=np.array([1.0, np.nan])), ValueError, "time has 1 NaN"),
    (dict(time=np.array([1.0, np.inf])), ValueError, "NaN or infinite"),
    (dict(time=np.array([True, False])), TypeError, "time has dtype bool"),
    (dict(user=np.zeros((2, 1), dtype=np.int64)), ValueError, "user must be 1-D"),
    (dict(category=np.array([0.5, 1.0])), TypeError, "category must hold integer ids"),
    (dict(category=np.array([1])), ValueError, "category has 1 events"),
    (dict(window=-1), ValueError, "window must be >= 0"),
    (dict(window=2.5), TypeError, "window must be an integer"),
    (dict(horizon=-3), ValueError, "horizon must be >= 0"),
    (dict(horizon=float("nan")), ValueError, "horizon must be finite"),
    (dict(horizon="1d"), TypeError, "horizon must be a number"),
    (dict(category_window=-2), ValueError, "category_window must be >= 0"),
    (dict(user=[0, 1]), TypeError, "user must be a NumPy or CuPy array"),
    (dict(time=np.array([-2**62, 2**62 + 5])), ValueError, "time spans"),
    (dict(time=np.array([0, 2**63 + 1], dtype=np.uint64)), ValueError, "exceed int64"),
])
def test_bad_input(bad, exc, msg):
    args = dict(user=np.array([0, 1]), time=np.array([1, 2]), category=None)
    args.update(bad)
    user, time, category = args.pop("user"), args.pop("time"), args.pop("category")
    with pytest.raises(exc, match=msg):
        window_graph(user, time, category, **args)


def test_horizon_float_with_int_time():
    user = np.zeros(4, dtype=np.int64)
    time = np.array([0, 1, 2, 4])
    check_against_naive(user, time, window=None, horizon=1.5)


_DET = """
import sys, numpy as np
sys.path.insert(0, {root!r})
import stgkern._numba.window_graph as k
from stgkern import config
from stgkern.construct import window_graph
k.CHUNK_ROWS = 97
rng = np.random.default_rng(7)
n = 20000
user = (rng.pareto(1.2, n) * 5).astype(np.int64) % 300
time = rng.integers(0, 10**6, n)
cat = rng.integers(0, 20, n)
with config.override(cpu_serial_rows=1):
    g = window_graph(user, time, cat, window=8, horizon=50000, category_window=3, self_loops=True)
    arrival = window_graph(user, np.sort(time), window=5, horizon=50000, strict_time=True)
for g in (g, arrival):
    sys.stdout.buffer.write(b"".join(a.tobytes() for a in (g.indptr, g.indices, g.perm, g.edata['dt'],
                                                            g.edata['hop'], g.edata['kind'])))
"""


@pytest.mark.slow
def test_deterministic_across_thread_counts():
    outs = []
    for threads in ("1", "2"):
        env = dict(__import__("os").environ, NUMBA_NUM_THREADS=threads)
        r = subprocess.run([sys.executable, "-c", _DET.format(root=str(ROOT))], env=env,
                           capture_output=True, check=True)
        outs.append(r.stdout)
    assert len(outs[0]) > 100_000 and outs[0] == outs[1]


# ------------------------------------------------------------ ordering paths
@contextlib.contextmanager
def tiny_chunks():
    """Tiny chunks, the parallel code paths and the two-level sort on tiny inputs
    (a context manager, for hypothesis tests, which cannot take function fixtures)."""
    import stgkern._numba.window_graph as k
    old = k.CHUNK_ROWS, k.RADIX_MIN_IDS, k.BUCKET_BITS, k.INSERTION_SORT_MAX
    k.CHUNK_ROWS, k.RADIX_MIN_IDS, k.BUCKET_BITS, k.INSERTION_SORT_MAX = 3, 1, 1, 2
    try:
        with config.override(cpu_serial_rows=1):
            yield k
    finally:
        k.CHUNK_ROWS, k.RADIX_MIN_IDS, k.BUCKET_BITS, k.INSERTION_SORT_MAX = old


@pytest.fixture
def small_chunks():
    with tiny_chunks() as k:
        yield k


def same_graph(a, b):
    for name in ("indptr", "indices", "perm", "segment_ptr", "segment_user"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("dt", "hop", "kind"):
        assert a.edata[name].dtype == b.edata[name].dtype
        np.testing.assert_array_equal(a.edata[name], b.edata[name], err_msg=name)


@given(logs())
def test_presorted_input_takes_fast_path_and_matches(case):
    # the same events given in (user, time) order: perm is the identity and the
    # graph equals the one built from the shuffled log, relabelled
    user, time, cat, kw = case
    g = window_graph(user, time, cat, **kw)
    p = g.perm
    s = check_against_naive(user[p], time[p], cat[p], **kw)
    np.testing.assert_array_equal(s.perm, np.arange(len(user)))
    np.testing.assert_array_equal(s.indptr, g.indptr)
    np.testing.assert_array_equal(s.indices, g.indices)
    for name in ("dt", "hop", "kind"):
        np.testing.assert_array_equal(s.edata[name], g.edata[name])
    same_graph(window_graph(user[p], time[p], cat[p], assume_sorted=True, **kw), s)


@given(logs())
def test_small_chunks_and_two_level_sort_match_naive(case):
    # chunk starts inside users (binary-searched horizon and tie pointers), the
    # bucketed sort by user, insertion and merge sorts of unsorted user runs
    user, time, cat, kw = case
    with tiny_chunks():
        check_against_naive(user, time, cat, **kw)
        est = estimate_window_graph(user, time, cat, exact=True, **kw)
    assert est["nnz"] == window_graph(user, time, cat, **kw).nnz


@pytest.mark.parametrize("two_level", [False, True], ids=["one-level", "two-level"])
@pytest.mark.parametrize("n_users", [1, 7, 300])
@pytest.mark.parametrize("float_time", [False, True], ids=["int64", "float64"])
def test_orderings_agree_on_larger_logs(small_chunks, n_users, float_time, two_level):
    if not two_level:
        small_chunks.RADIX_MIN_IDS = 1 << 40   # restored by the fixture
    rng = np.random.default_rng(n_users)
    n = 600
    user = rng.integers(0, n_users, n)
    time = rng.integers(0, 50, n)           # many ties, unsorted within users
    time = time * 0.25 if float_time else time
    cat = rng.integers(0, 4, n)
    kw = dict(window=5, horizon=6, category_window=2, self_loops=True)
    ref = window_graph(user, time, cat, **kw)
    perm, edges = naive_window_graph(user, time, cat, **kw)
    np.testing.assert_array_equal(ref.perm, perm)
    assert ref.nnz == len(edges)
    np.testing.assert_array_equal(ref.indices, [e[1] for e in edges])
    np.testing.assert_array_equal(ref.edata["kind"], [e[4] for e in edges])
    # sparse ids (lexsort path) and the pre-sorted fast path give the same graph
    sparse = window_graph(user * 2**40 + 3, time, cat, **kw)
    for name in ("indptr", "indices", "perm"):
        np.testing.assert_array_equal(getattr(sparse, name), getattr(ref, name))
    p = ref.perm
    fast = window_graph(user[p], time[p], cat[p], assume_sorted=True, **kw)
    np.testing.assert_array_equal(fast.indices, ref.indices)
    np.testing.assert_array_equal(fast.edata["dt"], ref.edata["dt"])
    np.testing.assert_array_equal(fast.segment_ptr, ref.segment_ptr)


@st.composite
def arrival_logs(draw):
    """Logs in arrival order: time never decreases, users interleave, many ties
    (within a user and across users), dense or sparse ids."""
    user, time, cat, kw = draw(logs())
    return user, np.sort(time), cat, kw


@given(arrival_logs())
def test_arrival_order_log_matches_naive(case):
    # time alone sorted: the stable sort by user is the whole ordering (no per-user time sort)
    user, time, cat, kw = case
    check_against_naive(user, time, cat, **kw)


@given(arrival_logs())
def test_arrival_order_log_small_chunks_and_two_level_sort(case):
    user, time, cat, kw = case
    with tiny_chunks():
        check_against_naive(user, time, cat, **kw)


@pytest.mark.parametrize("two_level", [False, True], ids=["one-level", "two-level"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense-ids", "sparse-ids"])
def test_arrival_order_equals_shuffled_log(small_chunks, two_level, sparse):
    # the same events in arrival order and shuffled (which takes the per-user time sorts)
    # give the same graph up to the input rows that perm names
    if not two_level:
        small_chunks.RADIX_MIN_IDS = 1 << 40   # restored by the fixture
    rng = np.random.default_rng(21)
    n = 700
    time = np.sort(rng.integers(0, 60, n))      # ties within and across users
    user = rng.integers(0, 40, n) * (2**40 if sparse else 1)
    kw = dict(window=4, horizon=5, strict_time=True, self_loops=True)
    a = window_graph(user, time, **kw)
    shuffle = rng.permutation(n)
    b = window_graph(user[shuffle], time[shuffle], **kw)
    # ties keep input order, so the shuffled log's node order can differ only among
    # tied events of a user; compare what does not depend on it
    np.testing.assert_array_equal(user[a.perm], user[shuffle][b.perm])
    np.testing.assert_array_equal(time[a.perm], time[shuffle][b.perm])
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    for name in ("dt", "hop", "kind"):
        np.testing.assert_array_equal(a.edata[name], b.edata[name])
    np.testing.assert_array_equal(a.perm, np.lexsort((time, user)))   # stable: ties in input order


def test_assume_sorted_names_first_offender_across_chunks(small_chunks):
    user = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2])
    time = np.array([1, 2, 2, 5, 0, 3, 3, 2, 9, 0])
    with pytest.raises(ValueError, match=r"position 7 \(user 1, time 2\) comes after \(user 1, time 3\)"):
        window_graph(user, time, assume_sorted=True)
    with pytest.raises(ValueError, match="position 9"):
        window_graph(np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 0]), np.arange(10), assume_sorted=True)
    g = check_against_naive(user, time, window=2)          # and without assume_sorted it sorts
    assert g.perm.tolist() == [0, 1, 2, 3, 4, 7, 5, 6, 8, 9]


def test_fast_path_does_not_copy_or_alter_input():
    user = np.repeat(np.arange(4), 5)
    time = np.tile(np.arange(5), 4).astype(np.float64)
    u0, t0 = user.copy(), time.copy()
    g = window_graph(user, time, window=2, horizon=1.0)
    np.testing.assert_array_equal(user, u0)
    np.testing.assert_array_equal(time, t0)
    np.testing.assert_array_equal(g.perm, np.arange(20))
    assert g.nnz == 4 * 4 and (g.edata["dt"] == 1.0).all()
    # non-contiguous, already sorted, int32 ids: still the fast path's result
    h = check_against_naive(np.repeat(np.arange(4), 10)[::2].astype(np.int32),
                            np.tile(np.arange(10), 4)[::2], window=3)
    np.testing.assert_array_equal(h.perm, np.arange(20))


def test_int_and_float_times_give_same_structure():
    rng = np.random.default_rng(11)
    user = rng.integers(0, 9, 500)
    t = rng.integers(0, 100, 500)
    kw = dict(window=4, horizon=10, strict_time=True, category_window=3, self_loops=True)
    cat = rng.integers(0, 3, 500)
    a = check_against_naive(user, t, cat, **kw)
    b = check_against_naive(user, t.astype(np.float64), cat, **kw)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.edata["kind"], b.edata["kind"])
    np.testing.assert_array_equal(a.edata["dt"], b.edata["dt"].astype(np.int64))
    assert a.edata["dt"].dtype == np.int64 and b.edata["dt"].dtype == np.float64


def test_window_and_horizon_none_with_categories_and_self_loops():
    rng = np.random.default_rng(12)
    user = rng.integers(0, 3, 120)
    time = np.sort(rng.integers(0, 40, 120))
    cat = rng.integers(0, 4, 120)
    for kw in (dict(window=None, horizon=None), dict(window=None, horizon=5), dict(window=3, horizon=None)):
        g = check_against_naive(user, time, cat, category_window=2, self_loops=True, **kw)
        assert (g.edata["kind"][g.edata["hop"] == 0] == 4).all()
        assert ((g.edata["kind"] & 2) != 0).any()


def test_check_false_matches_checked():
    rng = np.random.default_rng(13)
    user = rng.integers(0, 20, 400).astype(np.int32)
    time = rng.integers(0, 1000, 400).astype(np.int32)
    kw = dict(window=6, horizon=100, category_window=1)
    cat = rng.integers(0, 5, 400)
    same_graph(window_graph(user, time, cat, check=False, **kw), window_graph(user, time, cat, **kw))


def test_backend_window_graph_matches_front_door():
    # the backend entry point (sorted input, category in node order) the CUDA twin mirrors
    import stgkern._numba.window_graph as k
    rng = np.random.default_rng(14)
    user = np.sort(rng.integers(0, 5, 200))
    time = rng.integers(0, 30, 200)
    cat = rng.integers(0, 3, 200)
    g = window_graph(user, time, cat, window=3, horizon=10, strict_time=True, category_window=2, self_loops=True)
    out = k.window_graph(g.segment_ptr, time[g.perm], cat[g.perm], 3, 10, True, 2, True, np.int32)
    for got, want in zip(out, (g.indptr, g.indices, g.edata["dt"], g.edata["hop"], g.edata["kind"])):
        np.testing.assert_array_equal(got, want)
