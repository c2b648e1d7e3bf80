"""GPU topk (csrc/cuda/topk.cu + stgkern/_cuda/topk.py).

Host emulation (g++, no GPU): the selection kernel runs through the real
wrapper with NumPy standing in for CuPy (see tests/test_cuda.py), compared
with ``naive_topk`` and the Numba backend.  The device test (marker
``cuda``) compares with the CPU through the public ``stgkern.topk``.
"""
import numpy as np
import pytest

import stgkern
from stgkern import config
from naive import naive_topk

# the device test comes first: the emu fixture below swaps CuPy for NumPy for the rest of the module
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("k", [1, 10, 100, 1024, 1030])
def test_topk_matches_cpu(cp, rng, dtype, k):  # noqa: F811
    Q, items = _int_case(rng, 70, 3000, 8, dtype)
    (ptr, idx_ex), _ = _exclude(rng, 70, 3000, p=0.05)
    import scipy.sparse as sp
    ex = sp.csr_matrix((np.ones(idx_ex.shape[0]), idx_ex, ptr), shape=(70, 3000))
    with config.override(topk_block_items=1000, topk_block_rows=32):
        ci, cs = stgkern.topk(Q, items, k, exclude=ex)
        gi, gs = stgkern.topk(cp.asarray(Q), cp.asarray(items), k, exclude=(cp.asarray(ptr), cp.asarray(idx_ex)))
    np.testing.assert_array_equal(cp.asnumpy(gi), ci)
    np.testing.assert_array_equal(cp.asnumpy(gs), cs)


EMU_GEOM = [dict(cuda_threads_per_block=32, topk_block_items=7, topk_block_rows=3),
            dict(cuda_threads_per_block=64, topk_block_items=1000, topk_block_rows=256)]


def _int_case(rng, m, n_items, d, dtype, hi=3):
    # small integer entries: exact scores and plenty of ties
    Q = rng.integers(-hi, hi + 1, (m, d)).astype(dtype)
    items = rng.integers(-hi, hi + 1, (n_items, d)).astype(dtype)
    return Q, items


def _exclude(rng, m, n_items, p=0.3):
    rows = [np.flatnonzero(rng.random(n_items) < p) for _ in range(m)]
    ptr = np.zeros(m + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=ptr[1:])
    idx = np.concatenate(rows).astype(np.int64) if m else np.empty(0, np.int64)
    return (ptr, idx), [set(r.tolist()) for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("geom", EMU_GEOM, ids=["tpb32-tiny-tiles", "tpb64-one-tile"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("k", [1, 5, 40])
@pytest.mark.parametrize("excluded", [False, True], ids=["all", "exclude"])
def test_emulated_topk_ties_and_exclusion(emu, rng, geom, dtype, k, excluded):
    m, n_items = 7, 45
    Q, items = _int_case(rng, m, n_items, 3, dtype)
    Q[2] = 0  # every score ties: the k lowest indices win
    ex, ex_sets = _exclude(rng, m, n_items) if excluded else (None, None)
    with config.override(**geom):
        idx, sc = emu["topk"].topk(Q, items, k, ex)
    want_i, want_s = naive_topk(Q, items, k, ex_sets)
    assert idx.dtype == np.int64 and idx.shape == (m, k) and sc.dtype == dtype and sc.shape == (m, k)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(sc, want_s.astype(dtype))
    from stgkern._numba import topk as cpu
    ci, cs = cpu.topk(Q, items, k, ex)
    np.testing.assert_array_equal(idx, ci)
    np.testing.assert_array_equal(sc, cs)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_emulated_topk_random_floats_and_odd_width(emu, rng, dtype):
    m, n_items, k = 5, 130, 33
    Q = rng.standard_normal((m, 33)).astype(dtype)
    items = rng.standard_normal((n_items, 33)).astype(dtype)
    with config.override(cuda_threads_per_block=32, topk_block_items=50, topk_block_rows=2):
        idx, sc = emu["topk"].topk(Q, items, k, None)
    want_i, want_s = naive_topk(Q, items, k)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sc, want_s, **tol)
    # the chosen items really have those scores, in non-increasing order
    np.testing.assert_allclose(np.take_along_axis(Q.astype(np.float64) @ items.T.astype(np.float64), idx, 1),
                               sc, **tol)
    assert (np.diff(sc, axis=1) <= 0).all()
    if dtype == np.float64:
        np.testing.assert_array_equal(idx, want_i)


@pytest.mark.slow
def test_emulated_topk_padding_and_all_excluded(emu, rng):
    m, n_items, k = 4, 9, 9
    Q, items = _int_case(rng, m, n_items, 2, np.float64)
    ptr = np.array([0, 9, 9, 12, 12], np.int64)  # row 0 bars everything, row 2 bars three
    idx_ex = np.concatenate([np.arange(9), [0, 4, 8]]).astype(np.int64)
    sets = [set(range(9)), set(), {0, 4, 8}, set()]
    with config.override(cuda_threads_per_block=32, topk_block_items=4, topk_block_rows=3):
        idx, sc = emu["topk"].topk(Q, items, k, (ptr, idx_ex))
    want_i, want_s = naive_topk(Q, items, k, sets)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(sc, want_s)
    assert (idx[0] == -1).all() and np.isneginf(sc[0]).all()
    assert (idx[2, 6:] == -1).all()


@pytest.mark.slow
def test_emulated_topk_empty_queries_and_one_item(emu, rng):
    Q = np.empty((0, 3))
    idx, sc = emu["topk"].topk(Q, np.ones((4, 3)), 2, None)
    assert idx.shape == (0, 2) and sc.shape == (0, 2)
    idx, sc = emu["topk"].topk(np.ones((2, 3)), np.full((1, 3), 2.0), 1, None)
    np.testing.assert_array_equal(idx, [[0], [0]])
    np.testing.assert_array_equal(sc, [[6.0], [6.0]])


@pytest.mark.slow
def test_emulated_topk_large_k_falls_back_to_cpu(emu, rng, monkeypatch):
    from stgkern._cuda import topk as gpu
    monkeypatch.setattr(np, "asnumpy", np.asarray, raising=False)  # NumPy plays CuPy here
    Q, items = _int_case(rng, 2, gpu.MAX_K + 10, 2, np.float64)
    idx, sc = emu["topk"].topk(Q, items, gpu.MAX_K + 5, None)
    want_i, want_s = naive_topk(Q, items, gpu.MAX_K + 5)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(sc, want_s)


def test_block_threads_keep_the_buffer_bound():
    from stgkern._cuda import topk as gpu
    for tpb in (32, 256, 1024):
        with config.override(cuda_threads_per_block=tpb):
            for k in (1, 100, 1000, gpu.MAX_K):
                t = gpu._block_threads(k)
                assert t % 32 == 0 and 32 <= t <= tpb and k + t <= gpu._CAP


@pytest.mark.slow
@pytest.mark.parametrize("k", [3, 40])
def test_emulated_topk_worst_case_orders(emu, k):
    """Ascending scores: every item beats the k-th, so the candidate buffer fills and is
    sorted again and again inside one tile; descending and constant scores too."""
    n_items = 300
    Q = np.ones((3, 1))
    items = np.concatenate([np.arange(n_items), -np.arange(n_items), np.zeros(n_items)]).reshape(3, -1)
    for row in items:
        with config.override(cuda_threads_per_block=32, topk_block_items=1000, topk_block_rows=4):
            idx, sc = emu["topk"].topk(Q, row.reshape(-1, 1).astype(np.float64), k, None)
        want_i, want_s = naive_topk(Q, row.reshape(-1, 1), k)
        np.testing.assert_array_equal(idx, want_i)
        np.testing.assert_array_equal(sc, want_s)
