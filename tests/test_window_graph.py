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
