"""GPU window_graph builder (csrc/cuda/window_graph.cu + stgkern/_cuda/window_graph.py).

Host emulation on sorted event logs compares ``build`` with
``naive_window_graph`` (tests/naive.py): same edges, same order in every
row (ascending source), same dt/hop/kind.  (The Numba builder's internal
signature is being reworked, so the comparison goes through the reference.)
"""
import shutil

import numpy as np
import pytest

from stgkern import config
from naive import naive_window_graph


def sorted_log(rng, n, n_users=5, n_cats=3, float_time=False):
    user = np.sort(rng.integers(0, n_users, n)).astype(np.int64)
    time = rng.integers(0, 12, n).astype(np.int64)  # equal times on purpose
    if float_time:
        time = time * 0.5
    order = np.lexsort((time, user))
    user, time = user[order], time[order]
    cat = rng.integers(0, n_cats, n).astype(np.int64)
    bounds = np.flatnonzero(np.diff(user)) + 1
    seg_ptr = np.concatenate([[0], bounds, [n]]).astype(np.int64) if n else np.zeros(1, np.int64)
    return user, time, cat, seg_ptr


def naive_csr(user, time, cat, **kw):
    perm, edges = naive_window_graph(user, time, cat, **kw)
    assert (perm == np.arange(len(user))).all()  # input already sorted
    n = len(user)
    dst = np.array([e[0] for e in edges], np.int64)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    cols = [np.array([e[k] for e in edges]) for k in range(1, 5)]
    return indptr, cols[0], cols[1], cols[2], cols[3]


CASES = [dict(window=3), dict(window=None, horizon=4), dict(window=2, horizon=3, strict_time=True),
         dict(window=2, category_window=2), dict(window=1, horizon=5, category_window=3, strict_time=True,
                                                  self_loops=True),
         dict(window=0, category_window=1, self_loops=True), dict(window=None, horizon=0, strict_time=True)]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("float_time", [False, True], ids=["int-time", "float-time"])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64], ids=["i32", "i64"])
def test_emulated_window_graph_matches_naive(emu, rng, case, float_time, index_dtype):
    user, time, cat, seg_ptr = sorted_log(rng, 41, float_time=float_time)
    kw = dict(dict(horizon=None, strict_time=False, category_window=0, self_loops=False), **case)
    with config.override(cuda_threads_per_block=32):
        indptr, indices, dt, hop, kind = emu["window_graph"].build(
            seg_ptr, time, cat, kw["window"], kw["horizon"], kw["strict_time"], kw["category_window"],
            kw["self_loops"], index_dtype)
    r_ptr, r_idx, r_dt, r_hop, r_kind = naive_csr(user, time, cat, **kw)
    np.testing.assert_array_equal(indptr, r_ptr)
    assert indices.dtype == index_dtype and dt.dtype == time.dtype and hop.dtype == np.int32
    assert kind.dtype == np.uint8
    np.testing.assert_array_equal(indices, r_idx)
    np.testing.assert_array_equal(dt, r_dt)
    np.testing.assert_array_equal(hop, r_hop)
    np.testing.assert_array_equal(kind, r_kind)


@pytest.mark.slow
def test_emulated_window_graph_edge_cases(emu, rng):
    b = emu["window_graph"].build
    # no events
    out = b(np.zeros(1, np.int64), np.zeros(0, np.int64), None, 8, None, False, 0, False, np.int32)
    assert out[0].tolist() == [0] and all(a.shape == (0,) for a in out[1:])
    # one event, self loop only
    out = b(np.array([0, 1]), np.array([5]), np.array([2]), 8, None, False, 2, True, np.int64)
    assert out[0].tolist() == [0, 1] and out[1].tolist() == [0] and out[4].tolist() == [4]
    # empty segments between users; category None with category_window > 0 gives no category edges
    seg = np.array([0, 0, 3, 3, 5], np.int64)
    t = np.array([1, 2, 3, 1, 1], np.int64)
    indptr, idx, dt, hop, kind = b(seg, t, None, 8, None, False, 3, False, np.int32)
    assert indptr.tolist() == [0, 0, 1, 3, 3, 4] and idx.tolist() == [0, 0, 1, 3]
    assert dt.tolist() == [1, 2, 1, 0] and (kind == 1).all()
    # a long category history: the walk stops after category_window matches, none dropped below it
    n = 300
    t = np.arange(n, dtype=np.int64)
    c = np.zeros(n, np.int64)
    indptr, idx, dt, hop, kind = b(np.array([0, n]), t, c, 1, None, False, 50, False, np.int32)
    row = idx[indptr[n - 1]:indptr[n]]
    assert row.tolist() == list(range(n - 51, n - 1))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("c++filt") is None, reason="nvcc/c++filt missing")
def test_aot_emits_window_graph_instantiations():
    import cuda_build
    from stgkern._cuda import _loader
    names = cuda_build.kernel_names(cuda_build.CSRC / "cuda" / "window_graph.cu")
    want = {_loader.name_expression(k, t, i) for k in _loader.KERNELS["window_graph"]
            for t in (np.int64, np.float64) for i in (np.int32, np.int64)}
    assert want <= set(names), sorted(want - set(names))


@pytest.mark.parametrize("case", [dict(window=3), dict(window=2, horizon=3, category_window=2),
                                  dict(window=None, horizon=4, strict_time=True, self_loops=True)],
                         ids=["w3", "w2-h3-c2", "unbounded-strict-self"])
@pytest.mark.parametrize("sparse_ids", [False, True], ids=["dense-ids", "sparse-ids"])
def test_emulated_public_window_graph_matches_cpu(emu, rng, monkeypatch, case, sparse_ids):
    """The public front door's GPU path (ordering, segments, build) on unsorted input gives
    the CPU graph: same perm, segments, edges and edge data."""
    import stgkern
    from stgkern import construct

    n = 57
    user = rng.integers(0, 6, n).astype(np.int64) * (10 ** 15 if sparse_ids else 1)
    time = rng.integers(0, 10, n).astype(np.int64)
    cat = rng.integers(0, 3, n).astype(np.int64)
    ref = stgkern.window_graph(user, time, cat, **case)
    monkeypatch.setattr(construct._dispatch, "backend_of", lambda **arrays: "gpu")
    with config.override(cuda_threads_per_block=32):
        got = construct.window_graph(user, time, cat, **case)
    for name in ("indptr", "indices", "perm", "segment_ptr"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    np.testing.assert_array_equal(got.segment_user, ref.segment_user)
    for key in ("dt", "hop", "kind"):
        np.testing.assert_array_equal(got.edata[key], ref.edata[key], err_msg=key)
    with pytest.raises(ValueError, match="assume_sorted"):
        construct.window_graph(user, time, cat, assume_sorted=True, **case)
