import textwrap

import numpy as np
import pytest
from hypothesis import given, strategies as st

from threads import outputs_by_thread_count
from naive import naive_edge_softmax, naive_edge_softmax_backward, naive_random_csr
from stgkern import Graph
from stgkern._numba import edge_softmax as _kern
from stgkern.edge import edge_softmax, edge_softmax_backward

DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return (1e-13, 1e-13) if dtype == np.float64 else (2e-6, 2e-6)


def _scores(rng, nnz, H, dtype, scale=3.0):
    shape = (nnz,) if H is None else (nnz, H)
    return (scale * rng.standard_normal(shape)).astype(dtype)


def _run_both(g, S, rng):
    dtype = S.dtype
    rtol, atol = _tol(dtype)
    out = edge_softmax(g, S)
    ref = naive_edge_softmax(g.indptr, S)
    assert out.dtype == dtype and out.shape == S.shape
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)
    go = rng.standard_normal(S.shape).astype(dtype)
    gs = edge_softmax_backward(g, go, out)
    rs = naive_edge_softmax_backward(g.indptr, go, out)
    assert gs.dtype == dtype and gs.shape == S.shape
    np.testing.assert_allclose(gs, rs, rtol=rtol * 10, atol=atol * (1 + np.abs(go).max(initial=0)))
    return out


@given(n=st.integers(0, 12), p=st.sampled_from([0.0, 0.2, 0.6, 1.0]), H=st.sampled_from([None, 1, 4]),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31))
def test_random_against_naive(n, p, H, dtype, seed):
    rng = np.random.default_rng(seed)
    indptr, indices = naive_random_csr(rng, n, max(n, 1), p)
    g = Graph(indptr, indices, max(n, 1))
    out = _run_both(g, _scores(rng, g.nnz, H, dtype), rng)
    # Every non-empty row sums to one per head.
    for i in range(n):
        a, b = indptr[i], indptr[i + 1]
        if b > a:
            np.testing.assert_allclose(out[a:b].sum(axis=0), 1.0, rtol=1e-5)


@pytest.mark.parametrize("H", [None, 1, 4, 33])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_small_chunks_and_hub(H, dtype, rng):
    # A hub row with thousands of edges between short rows and empty rows;
    # tiny chunks force many parallel chunks and a ragged tail.
    deg = np.array([3, 0, 4000, 1, 0, 7, 2] * 5)
    indptr = np.concatenate([[0], np.cumsum(deg)])
    g = Graph(indptr, rng.integers(0, len(deg), indptr[-1]))
    S = _scores(rng, g.nnz, H, dtype)
    old = _kern.CHUNK_ROWS
    try:
        for chunk in (1, 3, 1024):
            _kern.CHUNK_ROWS = chunk
            _run_both(g, S, rng)
    finally:
        _kern.CHUNK_ROWS = old


def test_empty_graph():
    g = Graph(np.zeros(1, np.int64), np.zeros(0, np.int64))
    for shape in ((0,), (0, 4)):
        out = edge_softmax(g, np.zeros(shape, np.float32))
        assert out.shape == shape
        assert edge_softmax_backward(g, out, out).shape == shape


def test_single_edge_is_one():
    g = Graph(np.array([0, 0, 1]), np.array([0]))
    np.testing.assert_array_equal(edge_softmax(g, np.array([123.0], np.float32)), [1.0])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_extreme_scores_are_stable(dtype):
    g = Graph(np.array([0, 3, 5, 8]), np.array([0, 1, 2, 0, 1, 0, 1, 2]))
    S = np.array([1e30, -1e30, 1e30, -1e30, -1e30, 7.0, 7.0, 7.0], dtype=dtype)
    out = edge_softmax(g, S)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [0.5, 0, 0.5, 0.5, 0.5, 1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(out, naive_edge_softmax(g.indptr, S), rtol=1e-6)
    gs = edge_softmax_backward(g, np.ones_like(S), out)
    np.testing.assert_allclose(gs, 0.0, atol=1e-6)  # softmax is shift invariant


def test_non_contiguous_scores(rng):
    indptr, indices = naive_random_csr(rng, 9, 9, 0.5)
    g = Graph(indptr, indices)
    S = rng.standard_normal((g.nnz, 8))[:, ::2]
    assert not S.flags.c_contiguous
    _run_both(g, S, rng)
    _run_both(g, np.asfortranarray(rng.standard_normal((g.nnz, 3))), rng)


@pytest.mark.parametrize("H", [None, 4])
def test_backward_matches_finite_differences(H, rng):
    indptr, indices = naive_random_csr(rng, 5, 5, 0.6)
    g = Graph(indptr, indices)
    S = _scores(rng, g.nnz, H, np.float64, scale=1.0)
    go = rng.standard_normal(S.shape)
    gs = edge_softmax_backward(g, go, edge_softmax(g, S))
    h = 1e-6
    num = np.zeros_like(S)
    for idx in np.ndindex(S.shape):
        Sp, Sm = S.copy(), S.copy()
        Sp[idx] += h
        Sm[idx] -= h
        num[idx] = ((edge_softmax(g, Sp) - edge_softmax(g, Sm)) * go).sum() / (2 * h)
    np.testing.assert_allclose(gs, num, rtol=1e-6, atol=1e-8)


def test_errors(rng):
    indptr, indices = naive_random_csr(rng, 4, 4, 0.7)
    g = Graph(indptr, indices)
    S = rng.standard_normal(g.nnz)
    with pytest.raises(ValueError, match=r"scores has length .* but the graph has .* edges"):
        edge_softmax(g, np.ones(g.nnz + 1))
    with pytest.raises(TypeError, match=r"scores has dtype int64; supported: float32, float64"):
        edge_softmax(g, np.ones(g.nnz, dtype=np.int64))
    with pytest.raises(ValueError, match=r"scores must have 1 or 2 dimension"):
        edge_softmax(g, np.ones((g.nnz, 1, 1)))
    with pytest.raises(TypeError, match=r"g must be a stgkern.Graph"):
        edge_softmax(None, S)
    out = edge_softmax(g, S)
    with pytest.raises(ValueError, match=r"grad_out has shape .* but out has shape"):
        edge_softmax_backward(g, np.ones((g.nnz, 2)), out)
    with pytest.raises(TypeError, match=r"dtypes must match"):
        edge_softmax_backward(g, np.ones(g.nnz, np.float32), out)
    with pytest.raises(ValueError, match=r"out has length"):
        edge_softmax_backward(g, out[:-1], out[:-1])


_THREAD_SCRIPT = textwrap.dedent("""
    import hashlib, numpy as np
    from stgkern import Graph
    from stgkern.edge import edge_softmax, edge_softmax_backward
    rng = np.random.default_rng(5)
    n = 20000
    deg = rng.integers(0, 12, n)
    indptr = np.concatenate([[0], np.cumsum(deg)])
    g = Graph(indptr, rng.integers(0, n, indptr[-1]))
    h = hashlib.sha256()
    for H in (None, 4):
        S = rng.standard_normal((g.nnz,) if H is None else (g.nnz, H)).astype(np.float32)
        out = edge_softmax(g, S)
        h.update(out.tobytes())
        h.update(edge_softmax_backward(g, S, out).tobytes())
    print(h.hexdigest())
""")


def test_bit_identical_across_thread_counts():
    digests = outputs_by_thread_count(_THREAD_SCRIPT)
    assert digests[0] == digests[1]


@pytest.mark.parametrize("H", [None, 2])
def test_nan_stays_in_its_row(H):
    g = Graph(np.array([0, 2, 4]), np.array([0, 1, 0, 1]))
    S = np.zeros((4,) if H is None else (4, H))
    S[3] = np.nan
    out = edge_softmax(g, S)
    np.testing.assert_array_equal(out[:2], 0.5)
    assert np.isnan(out[2:]).all()
