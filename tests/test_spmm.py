import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threads import outputs_by_thread_count
from naive import naive_spmm, naive_spmm_backward

from stgkern.conv import spmm, spmm_backward
from stgkern.graph import Graph

REDUCES = ["sum", "mean", "max", "min"]


def rand_graph(rng, n, n_src, nnz):
    dst = np.sort(rng.integers(0, n, nnz)) if n else np.zeros(0, np.int64)
    src = rng.integers(0, n_src, nnz).astype(np.int32) if n_src else np.zeros(0, np.int32)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    return Graph(indptr, src, n_src)


def tol(dt):
    return {"rtol": 1e-12, "atol": 1e-12} if dt == np.float64 else {"rtol": 2e-5, "atol": 2e-5}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(0, 20), nnz=st.integers(0, 80),
       F=st.sampled_from([1, 3, 33]), reduce=st.sampled_from(REDUCES),
       dt=st.sampled_from([np.float32, np.float64]), weighted=st.booleans())
def test_spmm_vs_naive(seed, n, nnz, F, reduce, dt, weighted):
    rng = np.random.default_rng(seed)
    if n == 0:
        nnz = 0
    g = rand_graph(rng, n, n, nnz)
    X = rng.standard_normal((n, F)).astype(dt)
    w = rng.standard_normal(nnz).astype(dt) if weighted else None
    out, arg = spmm(g, X, w, reduce, return_arg=True)
    assert out.dtype == dt and out.shape == (n, F)
    np.testing.assert_allclose(out, naive_spmm(g.indptr, g.indices, X, w, reduce), **tol(dt))
    G = rng.standard_normal((n, F)).astype(dt)
    gX, gw = spmm_backward(g, G, X, w, reduce, arg)
    rX, rw = naive_spmm_backward(g.indptr, g.indices, G, X, w, reduce, arg)
    np.testing.assert_allclose(gX, rX, **tol(dt))
    if weighted:
        np.testing.assert_allclose(gw, rw, **tol(dt))
    else:
        assert gw is None


@pytest.mark.parametrize("reduce", REDUCES)
def test_finite_differences(reduce):
    rng = np.random.default_rng(1)
    g = rand_graph(rng, 6, 6, 15)
    X = rng.standard_normal((6, 4))
    w = rng.standard_normal(15)
    G = rng.standard_normal((6, 4))
    _out, arg = spmm(g, X, w, reduce, return_arg=True)
    gX, gw = spmm_backward(g, G, X, w, reduce, arg)
    h = 1e-6
    for idx in np.ndindex(X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += h
        Xm[idx] -= h
        fd = ((spmm(g, Xp, w, reduce) - spmm(g, Xm, w, reduce)) * G).sum() / (2 * h)
        assert abs(fd - gX[idx]) < 1e-6
    for k in range(15):
        wp, wm = w.copy(), w.copy()
        wp[k] += h
        wm[k] -= h
        fd = ((spmm(g, X, wp, reduce) - spmm(g, X, wm, reduce)) * G).sum() / (2 * h)
        assert abs(fd - gw[k]) < 1e-6


def test_hub_and_noncontiguous_and_F127():
    rng = np.random.default_rng(2)
    n = 3000
    indptr = np.array([0, n - 1] + [n - 1] * (n - 1), np.int64)
    g = Graph(indptr, np.arange(1, n, dtype=np.int64), n)
    X = rng.standard_normal((n, 254))[:, ::2]
    w = rng.standard_normal(n - 1)
    np.testing.assert_allclose(spmm(g, X, w), naive_spmm(g.indptr, g.indices, X, w, "sum"), rtol=1e-10, atol=1e-10)


def test_errors():
    rng = np.random.default_rng(3)
    g = rand_graph(rng, 5, 5, 10)
    with pytest.raises(ValueError, match="X has 4 rows"):
        spmm(g, np.ones((4, 2)))
    with pytest.raises(ValueError, match="edge_weight has length 3"):
        spmm(g, np.ones((5, 2)), np.ones(3))
    with pytest.raises(TypeError, match="supported"):
        spmm(g, np.ones((5, 2), np.int32))
    with pytest.raises(ValueError, match="reduce"):
        spmm(g, np.ones((5, 2)), reduce="prod")
    with pytest.raises(ValueError, match="needs arg"):
        spmm_backward(g, np.ones((5, 2)), np.ones((5, 2)), reduce="max")


SCRIPT = """
import numpy as np, sys
sys.path.insert(0, {tests!r})
from test_spmm import rand_graph
from stgkern.conv import spmm, spmm_backward
rng = np.random.default_rng(5)
g = rand_graph(rng, 3000, 3000, 30000)
X = rng.standard_normal((3000, 33)).astype(np.float32)
w = rng.standard_normal(30000).astype(np.float32)
o = spmm(g, X, w, 'mean'); gx, gw = spmm_backward(g, o, X, w, 'mean')
sys.stdout.write(o.tobytes().hex()[:0] + str(hash(o.tobytes() + gx.tobytes() + gw.tobytes())))
"""


def test_deterministic_across_threads():
    # 3,000 rows (over config.cpu_serial_rows): the two-thread runs take the forward's parallel
    # twin, the one-thread run its serial one, so the digests compare the two bit for bit
    res = outputs_by_thread_count(SCRIPT.format(tests=os.path.dirname(__file__)), ("1", "2", "2"),
                                  PYTHONHASHSEED="0")
    assert res[0] == res[1] == res[2]


@pytest.mark.parametrize("F", [1, 33, 127])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_pairwise_sum_all_degrees(F, dt, reduce):
    """Rows of degree 0..9 exercise the paired loop, its odd tail and the <2-edge start."""
    rng = np.random.default_rng(F)
    deg = np.arange(10)
    indptr = np.zeros(11, np.int64)
    np.cumsum(deg, out=indptr[1:])
    g = Graph(indptr, rng.integers(0, 10, indptr[-1]).astype(np.int32), 10)
    X = rng.standard_normal((10, F)).astype(dt)
    w = rng.standard_normal(indptr[-1]).astype(dt)
    for weights in (w, None):
        np.testing.assert_allclose(spmm(g, X, weights, reduce), naive_spmm(g.indptr, g.indices, X, weights, reduce),
                                   **tol(dt))
    # unit weights are exact, so the weighted and unweighted paths must agree bit for bit
    np.testing.assert_array_equal(spmm(g, X, np.ones_like(w), reduce), spmm(g, X, None, reduce))
    assert (spmm(g, X, w, reduce)[0] == 0).all()


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_out_buffer_is_filled_and_checked(reduce):
    from stgkern import Graph
    from stgkern.conv import spmm
    rng = np.random.default_rng(5)
    n, F = 40, 7
    src = rng.integers(0, n, 150)
    dst = np.sort(rng.integers(0, n, 150))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    g = Graph(indptr, src.astype(np.int32), n)
    X = rng.standard_normal((n, F)).astype(np.float32)
    w = rng.random(150).astype(np.float32)
    ref = spmm(g, X, w, reduce=reduce)
    buf = np.full((n, F), np.nan, np.float32)      # stale contents must be overwritten, empty rows too
    got = spmm(g, X, w, reduce=reduce, out=buf)
    assert got is buf
    np.testing.assert_array_equal(buf, ref)
    with pytest.raises(ValueError, match="shape"):
        spmm(g, X, w, reduce=reduce, out=np.empty((n, F + 1), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        spmm(g, X, w, reduce=reduce, out=np.empty((n, F), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        spmm(g, X, w, reduce=reduce, out=np.empty((F, n), np.float32).T)
    with pytest.raises(ValueError, match="overlaps X"):
        spmm(g, X, w, reduce=reduce, out=X)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_backward_into_out_and_accumulate(reduce, dt):
    rng = np.random.default_rng(11)
    g = rand_graph(rng, 50, 30, 400)          # rectangular: grad_X has n_src rows
    F = 9
    X = rng.standard_normal((30, F)).astype(dt)
    w = rng.standard_normal(400).astype(dt)
    _, arg = spmm(g, X, w, reduce, return_arg=True)
    G = rng.standard_normal((50, F)).astype(dt)
    ref_x, ref_w = spmm_backward(g, G, X, w, reduce, arg)
    buf = np.full((30, F), np.nan, dt)
    got_x, got_w = spmm_backward(g, G, X, w, reduce, arg, out=buf)
    assert got_x is buf
    np.testing.assert_array_equal(buf, ref_x)
    np.testing.assert_array_equal(got_w, ref_w)
    start = rng.standard_normal((30, F)).astype(dt)
    acc = start.copy()
    got_x, _ = spmm_backward(g, G, X, w, reduce, arg, out=acc, accumulate=True)
    assert got_x is acc
    np.testing.assert_allclose(acc, start + ref_x, **tol(dt))
    with pytest.raises(ValueError, match="accumulate=True adds grad_X to out; pass out="):
        spmm_backward(g, G, X, w, reduce, arg, accumulate=True)
    with pytest.raises(ValueError, match=r"expected \(30, 9\)"):
        spmm_backward(g, G, X, w, reduce, arg, out=np.empty((50, F), dt))
    with pytest.raises(ValueError, match="C-contiguous"):
        spmm_backward(g, G, X, w, reduce, arg, out=np.empty((F, 30), dt).T)
    with pytest.raises(ValueError, match="overlaps X"):
        spmm_backward(g, G, X, w, reduce, arg, out=X)
    G2 = np.zeros((60, F), dt)
    with pytest.raises(ValueError, match="overlaps grad_out"):
        spmm_backward(g, G2[:50], X, w, reduce, arg, out=G2[30:60])
