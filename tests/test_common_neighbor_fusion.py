import textwrap

import numpy as np
import pytest
from hypothesis import given, strategies as st

from threads import outputs_by_thread_count
from naive import (naive_common_neighbor_fusion, naive_common_neighbor_fusion_backward,
                        naive_random_csr)
from stgkern import Graph
from stgkern.edge import common_neighbor_fusion, common_neighbor_fusion_backward

DTYPES = [np.float32, np.float64]


def _close(got, ref, dtype, scale):
    assert got.dtype == dtype and got.shape == ref.shape
    rtol, atol = (1e-12, 1e-12) if dtype == np.float64 else (1e-5, 3e-6)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol * scale)


def _run_both(g, X, w, rng):
    dtype = X.dtype
    out = common_neighbor_fusion(g, X, w)
    ref = naive_common_neighbor_fusion(g.indptr, g.indices, X, w)
    wmax = 1.0 if w is None or not w.size else max(1.0, np.abs(w).max())
    deg = int(np.diff(g.indptr).max(initial=0))
    _close(out, ref, dtype, (1 + deg) * wmax**2 * (1 + np.abs(X).max(initial=0)))
    go = rng.standard_normal(out.shape).astype(dtype)
    gX, gw = common_neighbor_fusion_backward(g, go, X, w)
    rX, rw = naive_common_neighbor_fusion_backward(g.indptr, g.indices, go, X, w)
    big = (1 + g.nnz) * wmax**2 * (1 + np.abs(go).max(initial=0)) * (1 + np.abs(X).max(initial=0)) * X.shape[1]
    _close(gX, rX, dtype, big)
    if w is None:
        assert gw is None
    else:
        _close(gw, rw, dtype, big)
    return out


@given(n=st.integers(0, 10), p=st.sampled_from([0.0, 0.3, 0.7, 1.0]), F=st.sampled_from([1, 2, 33]),
       weighted=st.booleans(), loops=st.booleans(), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**31))
def test_random_against_naive(n, p, F, weighted, loops, dtype, seed):
    rng = np.random.default_rng(seed)
    indptr, indices = naive_random_csr(rng, n, n, p, loops=loops)
    g = Graph(indptr, indices, n)
    X = rng.standard_normal((n, F)).astype(dtype)
    w = rng.uniform(-2, 2, g.nnz).astype(dtype) if weighted else None
    _run_both(g, X, w, rng)


@pytest.mark.parametrize("F", [1, 33, 127])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_odd_widths(F, dtype, rng):
    indptr, indices = naive_random_csr(rng, 12, 12, 0.5)
    g = Graph(indptr, indices)
    X = rng.standard_normal((12, F)).astype(dtype)
    _run_both(g, X, rng.uniform(0, 1, g.nnz).astype(dtype), rng)
    _run_both(g, X, None, rng)


def test_window_graph_like(rng):
    # Each event receives edges from its <= 3 previous events of the same user.
    lengths = [1, 5, 2, 9, 4]
    src, dst, base = [], [], 0
    for L in lengths:
        for t in range(L):
            for d in range(1, 4):
                if t - d >= 0:
                    src.append(base + t - d)
                    dst.append(base + t)
        base += L
    g = Graph.from_edge_index(np.array([src, dst]), base)
    X = rng.standard_normal((base, 4))
    out = _run_both(g, X, rng.uniform(0.5, 1.5, g.nnz), rng)
    assert np.abs(out).sum() > 0  # windows of 3 share neighbours


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_hub_with_thousands_of_neighbours(dtype, rng):
    # Node n-1 receives from every other node; node n-2 from all but the last.
    n = 2500
    rows = [np.arange(0)] * (n - 2) + [np.arange(n - 2), np.arange(n - 1)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    g = Graph(indptr, np.concatenate(rows))
    X = rng.standard_normal((n, 3)).astype(dtype)
    out = common_neighbor_fusion(g, X)
    k = g.indptr[n - 1] + n - 2  # edge (n-2) -> (n-1)
    np.testing.assert_allclose(out[k], X[: n - 2].astype(np.float64).sum(0), rtol=1e-4 if dtype == np.float32 else 1e-12)
    assert np.count_nonzero(out.any(axis=1)) == 1
    go = rng.standard_normal(out.shape).astype(dtype)
    gX, _ = common_neighbor_fusion_backward(g, go, X)
    expect = np.zeros((n, 3))
    expect[: n - 2] = go[k]
    np.testing.assert_allclose(gX, expect, rtol=1e-6, atol=1e-6)


def test_empty_graph_and_isolated_nodes(rng):
    g = Graph(np.zeros(1, np.int64), np.zeros(0, np.int64))
    out = common_neighbor_fusion(g, np.zeros((0, 3)))
    assert out.shape == (0, 3)
    gX, gw = common_neighbor_fusion_backward(g, out, np.zeros((0, 3)), np.zeros(0))
    assert gX.shape == (0, 3) and gw.shape == (0,)
    g = Graph(np.zeros(6, np.int64), np.zeros(0, np.int64))  # 5 nodes, no edges
    assert common_neighbor_fusion(g, np.ones((5, 2))).shape == (0, 2)
    gX, _ = common_neighbor_fusion_backward(g, np.zeros((0, 2)), np.ones((5, 2)))
    np.testing.assert_array_equal(gX, 0.0)


def test_non_contiguous_inputs(rng):
    indptr, indices = naive_random_csr(rng, 9, 9, 0.5)
    g = Graph(indptr, indices)
    X = rng.standard_normal((9, 10))[:, ::3]
    w = rng.standard_normal(2 * g.nnz)[::2]
    assert not X.flags.c_contiguous and not w.flags.c_contiguous
    _run_both(g, X, w, rng)


def test_edge_weight_is_cast_to_feature_dtype(rng):
    indptr, indices = naive_random_csr(rng, 6, 6, 0.6)
    g = Graph(indptr, indices)
    X = rng.standard_normal((6, 2)).astype(np.float32)
    out = common_neighbor_fusion(g, X, rng.uniform(0, 1, g.nnz))  # float64 weights
    assert out.dtype == np.float32


@pytest.mark.parametrize("weighted", [False, True])
def test_backward_matches_finite_differences(weighted, rng):
    indptr, indices = naive_random_csr(rng, 6, 6, 0.6)
    g = Graph(indptr, indices)
    X = rng.standard_normal((6, 2))
    w = rng.uniform(0.5, 1.5, g.nnz) if weighted else None
    go = rng.standard_normal((g.nnz, 2))
    gX, gw = common_neighbor_fusion_backward(g, go, X, w)

    def loss(X_, w_):
        return float((common_neighbor_fusion(g, X_, w_) * go).sum())

    h = 1e-6
    num = np.zeros_like(X)
    for idx in np.ndindex(X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += h
        Xm[idx] -= h
        num[idx] = (loss(Xp, w) - loss(Xm, w)) / (2 * h)
    np.testing.assert_allclose(gX, num, rtol=1e-6, atol=1e-8)
    if weighted:
        numw = np.zeros_like(w)
        for k in range(w.size):
            wp, wm = w.copy(), w.copy()
            wp[k] += h
            wm[k] -= h
            numw[k] = (loss(X, wp) - loss(X, wm)) / (2 * h)
        np.testing.assert_allclose(gw, numw, rtol=1e-6, atol=1e-8)


def test_errors(rng):
    indptr, indices = naive_random_csr(rng, 5, 5, 0.6)
    g = Graph(indptr, indices)
    X = rng.standard_normal((5, 3))
    with pytest.raises(ValueError, match=r"needs a square graph.*got shape \(5, 6\)"):
        common_neighbor_fusion(Graph(indptr, indices, 6), X)
    unsorted = Graph(np.array([0, 2, 2]), np.array([1, 0]))
    with pytest.raises(ValueError, match=r"rows? .*sorted.*g\.sorted\(\)"):
        common_neighbor_fusion(unsorted, np.ones((2, 1)))
    dup = Graph(np.array([0, 2, 2]), np.array([1, 1]))
    with pytest.raises(ValueError, match=r"strictly ascending"):
        common_neighbor_fusion(dup, np.ones((2, 1)))
    # The suggested fix works.
    out = common_neighbor_fusion(unsorted.sorted(), np.ones((2, 1)))
    assert out.shape == (2, 1)
    with pytest.raises(ValueError, match=r"X has 4 rows but the graph has 5 nodes"):
        common_neighbor_fusion(g, X[:4])
    with pytest.raises(TypeError, match=r"X has dtype int32; supported: float32, float64"):
        common_neighbor_fusion(g, X.astype(np.int32))
    with pytest.raises(ValueError, match=r"edge_weight has length .* but the graph has .* edges"):
        common_neighbor_fusion(g, X, np.ones(g.nnz + 2))
    with pytest.raises(ValueError, match=r"edge_weight must have 1 dimension"):
        common_neighbor_fusion(g, X, np.ones((g.nnz, 1)))
    with pytest.raises(ValueError, match=r"grad_out has shape"):
        common_neighbor_fusion_backward(g, np.ones((g.nnz, 2)), X)
    with pytest.raises(TypeError, match=r"dtypes must match"):
        common_neighbor_fusion_backward(g, np.ones((g.nnz, 3), np.float32), X)


_THREAD_SCRIPT = textwrap.dedent("""
    import hashlib, numpy as np
    from stgkern import Graph
    rng = np.random.default_rng(7)
    from stgkern.edge import common_neighbor_fusion as f, common_neighbor_fusion_backward as fb
    n, W = 20000, 6
    src = np.concatenate([np.arange(n - d) for d in range(1, W + 1)])
    dst = np.concatenate([np.arange(d, n) for d in range(1, W + 1)])
    keep = rng.random(src.size) < 0.8
    g = Graph.from_edge_index(np.stack([src[keep], dst[keep]]), n)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    w = rng.uniform(0, 1, g.nnz).astype(np.float32)
    out = f(g, X, w)
    h = hashlib.sha256(out.tobytes())
    for a in fb(g, rng.standard_normal(out.shape).astype(np.float32), X, w):
        h.update(a.tobytes())
    print(h.hexdigest())
""")


def test_bit_identical_across_thread_counts():
    digests = outputs_by_thread_count(_THREAD_SCRIPT)
    assert digests[0] == digests[1]
