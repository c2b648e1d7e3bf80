import textwrap

import numpy as np
import pytest
from hypothesis import given, strategies as st

from threads import outputs_by_thread_count
from naive import naive_random_csr, naive_sddmm, naive_sddmm_backward
from stgkern import Graph
from stgkern.edge import sddmm, sddmm_backward

OPS = ["dot", "cosine", "add", "sub", "mul"]
DTYPES = [np.float32, np.float64]


def _graph(rng, n_dst, n_src, p=0.3):
    indptr, indices = naive_random_csr(rng, n_dst, n_src, p)
    return Graph(indptr, indices, n_src)


def _check(got, ref, mag, dtype):
    assert got.dtype == dtype
    assert got.shape == ref.shape
    # Error grows with the magnitude of the summed terms (mag, per element).
    rtol, atol = (1e-12, 1e-12) if dtype == np.float64 else (1e-5, 2e-6)
    err = np.abs(got.astype(np.float64) - ref)
    bound = atol * (1 + mag) + rtol * np.abs(ref)
    assert (err <= bound).all(), f"max excess {(err - bound).max()} (max err {err.max()})"


def _grad_out(rng, g, F, op, dtype):
    shape = (g.nnz,) if op in ("dot", "cosine") else (g.nnz, F)
    return rng.standard_normal(shape).astype(dtype)


def _run_both(rng, g, F, op, dtype, X=None, Y=None):
    X = rng.standard_normal((g.n_nodes, F)).astype(dtype) if X is None else X
    Y = rng.standard_normal((g.n_src, F)).astype(dtype) if Y is None else Y
    out = sddmm(g, X, Y, op)
    ref = naive_sddmm(g.indptr, g.indices, X, Y, op)
    mag = np.abs(naive_sddmm(g.indptr, g.indices, np.abs(X), np.abs(Y), "mul" if op != "add" else "add"))
    if op in ("dot", "cosine"):
        mag = mag.sum(axis=1)
        if op == "cosine":
            mag = np.ones_like(mag)
    _check(out, ref, mag, dtype)
    go = _grad_out(rng, g, F, op, dtype)
    gX, gY = sddmm_backward(g, go, X, Y, op)
    rX, rY = naive_sddmm_backward(g.indptr, g.indices, go, X, Y, op)
    scale = 1 + np.abs(go).sum() * (1 + np.abs(X).max(initial=0) + np.abs(Y).max(initial=0))
    if op == "cosine":
        # 1/|x| factors: scale by the inverse of the smallest nonzero norm.
        norms = np.concatenate([np.linalg.norm(X, axis=1), np.linalg.norm(Y, axis=1)])
        norms = norms[norms > 0]
        scale = scale / (norms.min() ** 2 if norms.size else 1)
    tol = 1e-12 if dtype == np.float64 else 3e-6
    np.testing.assert_allclose(gX, rX, rtol=tol * 10, atol=tol * scale)
    np.testing.assert_allclose(gY, rY, rtol=tol * 10, atol=tol * scale)
    assert gX.dtype == dtype and gY.dtype == dtype
    return out


@given(n_dst=st.integers(0, 9), n_src=st.integers(1, 9), F=st.sampled_from([1, 3, 33]),
       op=st.sampled_from(OPS), dtype=st.sampled_from(DTYPES), p=st.sampled_from([0.0, 0.3, 1.0]),
       seed=st.integers(0, 2**31))
def test_random_against_naive(n_dst, n_src, F, op, dtype, p, seed):
    rng = np.random.default_rng(seed)
    _run_both(rng, _graph(rng, n_dst, n_src, p), F, op, dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("F", [1, 33, 127])
def test_odd_widths(op, dtype, F, rng):
    _run_both(rng, _graph(rng, 11, 7), F, op, dtype)


@pytest.mark.parametrize("op", OPS)
def test_empty_graph(op):
    g = Graph(np.zeros(1, np.int64), np.zeros(0, np.int64))
    X = np.zeros((0, 4), np.float32)
    out = sddmm(g, X, X, op)
    assert out.shape == ((0,) if op in ("dot", "cosine") else (0, 4))
    gX, gY = sddmm_backward(g, out, X, X, op)
    assert gX.shape == (0, 4) and gY.shape == (0, 4)


@pytest.mark.parametrize("op", OPS)
def test_isolated_nodes_and_no_edges(op, rng):
    # Nodes 0, 2, 4 have no in-edges; node 3 is never a source.
    indptr = np.array([0, 0, 2, 2, 3, 3])
    indices = np.array([0, 1, 4])
    out = _run_both(rng, Graph(indptr, indices), 5, op, np.float64)
    assert out.shape[0] == 3
    X = np.ones((5, 2))
    gX, gY = sddmm_backward(Graph(indptr, indices), np.ones_like(sddmm(Graph(indptr, indices), X, X, op)), X, X, op)
    if op != "cosine":
        assert not gY[3].any() and not gX[0].any()


@pytest.mark.parametrize("op", OPS)
def test_hub_with_thousands_of_neighbours(op, rng):
    n = 3000
    indptr = np.array([0, n] + [n] * (n - 1))  # node 0 receives from everybody
    g = Graph(indptr, np.arange(n))
    _run_both(rng, g, 3, op, np.float64)
    _run_both(rng, g, 3, op, np.float32)


def test_cosine_zero_norm_rows_give_zero():
    g = Graph(np.array([0, 2, 3]), np.array([0, 1, 0]))
    X = np.array([[0.0, 0.0], [1.0, 2.0]])
    Y = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = sddmm(g, X, Y, "cosine")
    np.testing.assert_array_equal(out[:2], 0.0)
    np.testing.assert_allclose(out[2], 11 / (5 * np.sqrt(5)))
    gX, gY = sddmm_backward(g, np.ones(3), X, Y, "cosine")
    assert np.isfinite(gX).all() and np.isfinite(gY).all()
    np.testing.assert_array_equal(gX[0], 0.0)
    np.testing.assert_array_equal(gY[1], 0.0)
    rX, rY = naive_sddmm_backward(g.indptr, g.indices, np.ones(3), X, Y, "cosine")
    np.testing.assert_allclose(gX, rX, atol=1e-14)
    np.testing.assert_allclose(gY, rY, atol=1e-14)


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_inputs(op, rng):
    g = _graph(rng, 8, 6)
    Xb = rng.standard_normal((8, 10))
    Yb = np.asfortranarray(rng.standard_normal((6, 5)))
    X, Y = Xb[:, ::2], Yb
    assert not X.flags.c_contiguous and not Y.flags.c_contiguous
    _run_both(rng, g, 5, op, np.float64, X=X, Y=Y)


@pytest.mark.parametrize("op", OPS)
def test_int32_and_int64_indices_agree(op, rng):
    g = _graph(rng, 10, 10)
    assert g.indices.dtype == np.int32
    g64 = Graph(g.indptr, g.indices, check=False)
    g64.indices = g.indices.astype(np.int64)
    X = rng.standard_normal((10, 4))
    np.testing.assert_array_equal(sddmm(g, X, X, op), sddmm(g64, X, X, op))


@pytest.mark.parametrize("op", OPS)
def test_backward_matches_finite_differences(op, rng):
    g = _graph(rng, 5, 4, p=0.6)
    F = 3
    X = rng.standard_normal((5, F))
    Y = rng.standard_normal((4, F))
    go = _grad_out(rng, g, F, op, np.float64)
    gX, gY = sddmm_backward(g, go, X, Y, op)

    def loss(X_, Y_):
        return float((sddmm(g, X_, Y_, op) * go).sum())

    h = 1e-6
    for A, grad, is_x in ((X, gX, True), (Y, gY, False)):
        num = np.zeros_like(A)
        for idx in np.ndindex(A.shape):
            Ap, Am = A.copy(), A.copy()
            Ap[idx] += h
            Am[idx] -= h
            lp = loss(Ap, Y) if is_x else loss(X, Ap)
            lm = loss(Am, Y) if is_x else loss(X, Am)
            num[idx] = (lp - lm) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


def test_errors(rng):
    g = _graph(rng, 4, 3)
    X = rng.standard_normal((4, 2))
    Y = rng.standard_normal((3, 2))
    with pytest.raises(ValueError, match=r"X has 3 rows but the graph has 4 nodes"):
        sddmm(g, Y, Y)
    with pytest.raises(ValueError, match=r"Y has 4 rows but the graph has n_src=3"):
        sddmm(g, X, X)
    with pytest.raises(ValueError, match=r"X has 2 features but Y has 3"):
        sddmm(g, X, rng.standard_normal((3, 3)))
    with pytest.raises(TypeError, match=r"X has dtype int64; supported: float32, float64"):
        sddmm(g, X.astype(np.int64), Y)
    with pytest.raises(TypeError, match=r"dtypes must match"):
        sddmm(g, X.astype(np.float32), Y)
    with pytest.raises(ValueError, match=r"op='max' is not supported; choose one of"):
        sddmm(g, X, Y, "max")
    with pytest.raises(ValueError, match=r"X must have 2 dimension"):
        sddmm(g, X[:, 0], Y)
    with pytest.raises(TypeError, match=r"g must be a stgkern.Graph"):
        sddmm((g.indptr, g.indices), X, Y)
    with pytest.raises(TypeError, match=r"NumPy or CuPy array"):
        sddmm(g, X.tolist(), Y)
    with pytest.raises(ValueError, match=r"grad_out has shape"):
        sddmm_backward(g, np.ones(g.nnz + 1), X, Y)
    with pytest.raises(ValueError, match=r"grad_out has shape"):
        sddmm_backward(g, np.ones(g.nnz), X, Y, "mul")
    with pytest.raises(TypeError, match=r"dtypes must match"):
        sddmm_backward(g, np.ones(g.nnz, np.float32), X, Y)


_THREAD_SCRIPT = textwrap.dedent("""
    import hashlib, numpy as np
    from stgkern import Graph
    from stgkern.edge import sddmm, sddmm_backward
    rng = np.random.default_rng(3)
    n = 5000
    deg = rng.integers(0, 20, n)
    indptr = np.concatenate([[0], np.cumsum(deg)])
    indices = rng.integers(0, n, indptr[-1])
    g = Graph(indptr, indices)
    X = rng.standard_normal((n, 17)).astype(np.float32)
    Y = rng.standard_normal((n, 17)).astype(np.float32)
    h = hashlib.sha256()
    for op in ("dot", "cosine", "add", "sub", "mul"):
        out = sddmm(g, X, Y, op)
        go = rng.standard_normal(out.shape).astype(np.float32)
        for a in (out, *sddmm_backward(g, go, X, Y, op)):
            h.update(a.tobytes())
    print(h.hexdigest())
""")


def test_bit_identical_across_thread_counts():
    digests = outputs_by_thread_count(_THREAD_SCRIPT)
    assert digests[0] == digests[1]
