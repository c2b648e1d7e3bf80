import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threads import outputs_by_thread_count
from naive import naive_message_passing, naive_message_passing_backward

from stgkern.conv import message_passing, message_passing_backward
from stgkern.graph import Graph

REDUCES = ["sum", "mean", "max", "min"]
OPS = ["mul", "add"]


def rand_graph(rng, n, n_src, nnz, idx_dtype=np.int32):
    dst = np.sort(rng.integers(0, n, nnz)) if n else np.zeros(0, np.int64)
    src = (rng.integers(0, n_src, nnz) if n_src else np.zeros(0)).astype(idx_dtype)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    return Graph(indptr, src, n_src)


def tol(dt):
    return {"rtol": 1e-12, "atol": 1e-12} if dt == np.float64 else {"rtol": 3e-5, "atol": 3e-5}


def make_E(rng, nnz, F, width, dt):
    shape = {"vec": (nnz,), "col": (nnz, 1), "full": (nnz, F)}[width]
    return rng.standard_normal(shape).astype(dt)


def check(g, X, E, op, reduce, rng):
    dt = X.dtype
    out, arg = message_passing(g, X, E, op, reduce, return_arg=True)
    assert out.dtype == dt and out.shape == (g.n_nodes, X.shape[1])
    ref, ref_arg = naive_message_passing(g.indptr, g.indices, X, E, op, reduce)
    np.testing.assert_allclose(out, ref, **tol(dt))
    if reduce in ("max", "min"):
        assert arg.dtype == np.int64
        # a float32 near-tie may pick a different (equally good) edge: check the value it names
        same = arg == ref_arg
        assert same.all() or (dt == np.float32 and same.mean() > 0.95)
    else:
        assert arg is None
    G = rng.standard_normal(out.shape).astype(dt)
    gX, gE = message_passing_backward(g, G, X, E, op, reduce, arg)
    rX, rE = naive_message_passing_backward(g.indptr, g.indices, G, X, E, op, reduce, arg)
    assert gX.shape == X.shape and gE.shape == np.shape(E) and gX.dtype == dt and gE.dtype == dt
    np.testing.assert_allclose(gX, rX, **tol(dt))
    np.testing.assert_allclose(gE, rE, **tol(dt))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(0, 16), n_src=st.integers(0, 16), nnz=st.integers(0, 60),
       F=st.sampled_from([1, 3, 33]), op=st.sampled_from(OPS), reduce=st.sampled_from(REDUCES),
       width=st.sampled_from(["vec", "col", "full"]), dt=st.sampled_from([np.float32, np.float64]),
       idx=st.sampled_from([np.int32, np.int64]))
def test_vs_naive(seed, n, n_src, nnz, F, op, reduce, width, dt, idx):
    rng = np.random.default_rng(seed)
    if n == 0 or n_src == 0:
        nnz = 0
    g = rand_graph(rng, n, n_src, nnz, idx)
    X = rng.standard_normal((n_src, F)).astype(dt)
    check(g, X, make_E(rng, nnz, F, width, dt), op, reduce, rng)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("width", ["vec", "full"])
def test_edge_cases(op, reduce, width):
    rng = np.random.default_rng(7)
    # isolated nodes (rows 0, 2, 5 empty), ties (integer-valued features), F = 127
    indptr = np.array([0, 0, 3, 3, 6, 9, 9], np.int64)
    g = Graph(indptr, np.array([1, 1, 4, 0, 2, 3, 5, 5, 5], np.int32), 6)
    X = rng.integers(-2, 3, (6, 127)).astype(np.float64)
    E = rng.integers(-1, 2, (9, 127) if width == "full" else (9,)).astype(np.float64)
    check(g, X, E, op, reduce, rng)
    out, arg = message_passing(g, X, E, op, reduce, return_arg=True)
    assert (out[[0, 2, 5]] == 0).all()
    if arg is not None:
        assert (arg[[0, 2, 5]] == -1).all()


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_empty_graph(dt):
    g = Graph(np.zeros(1, np.int64), np.zeros(0, np.int32), 0)
    out = message_passing(g, np.zeros((0, 4), dt), np.zeros(0, dt))
    assert out.shape == (0, 4) and out.dtype == dt
    g = Graph(np.zeros(4, np.int64), np.zeros(0, np.int32), 2)  # nodes but no edges
    out, arg = message_passing(g, np.ones((2, 4), dt), np.zeros((0, 4), dt), reduce="max", return_arg=True)
    assert (out == 0).all() and (arg == -1).all()
    gX, gE = message_passing_backward(g, np.ones((3, 4), dt), np.ones((2, 4), dt), np.zeros((0, 4), dt),
                                      reduce="max", arg=arg)
    assert (gX == 0).all() and gE.shape == (0, 4)


def test_hub_noncontiguous():
    rng = np.random.default_rng(2)
    n = 3000
    indptr = np.array([0, n - 1] + [n - 1] * (n - 1), np.int64)  # node 0 has n-1 in-neighbours
    g = Graph(indptr, np.arange(1, n, dtype=np.int64), n)
    X = rng.standard_normal((n, 66))[:, ::2]  # non-contiguous, F = 33
    E = rng.standard_normal((n - 1, 66))[:, ::2]
    for reduce in REDUCES:
        out, arg = message_passing(g, X, E, "mul", reduce, return_arg=True)
        ref, ref_arg = naive_message_passing(g.indptr, g.indices, X, E, "mul", reduce)
        np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
        if arg is not None:
            assert (arg == ref_arg).all()


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("width", ["vec", "col", "full"])
def test_finite_differences(op, reduce, width):
    rng = np.random.default_rng(11)
    g = rand_graph(rng, 5, 6, 14)
    F = 3
    X = rng.standard_normal((6, F))
    E = make_E(rng, 14, F, width, np.float64)
    G = rng.standard_normal((5, F))
    _, arg = message_passing(g, X, E, op, reduce, return_arg=True)
    gX, gE = message_passing_backward(g, G, X, E, op, reduce, arg)
    h = 1e-6

    def loss(X_, E_):
        return (message_passing(g, X_, E_, op, reduce) * G).sum()

    for A, grad in ((X, gX), (E, gE)):
        for idx in np.ndindex(A.shape):
            Ap, Am = A.copy(), A.copy()
            Ap[idx] += h
            Am[idx] -= h
            fd = (loss(Ap, E) - loss(Am, E)) if A is X else (loss(X, Ap) - loss(X, Am))
            assert abs(fd / (2 * h) - grad[idx]) < 1e-6, (idx, fd / (2 * h), grad[idx])


def test_dtype_cast_of_E():
    rng = np.random.default_rng(4)
    g = rand_graph(rng, 8, 8, 20)
    X = rng.standard_normal((8, 5)).astype(np.float32)
    E64 = rng.standard_normal((20, 5))
    out = message_passing(g, X, E64)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, message_passing(g, X, E64.astype(np.float32)))
    _, gE = message_passing_backward(g, np.ones((8, 5), np.float32), X, E64)
    assert gE.dtype == np.float32 and gE.shape == (20, 5)


def test_errors():
    rng = np.random.default_rng(3)
    g = rand_graph(rng, 5, 5, 10)
    X = np.ones((5, 4))
    with pytest.raises(ValueError, match="E has length 3"):
        message_passing(g, X, np.ones(3))
    with pytest.raises(ValueError, match=r"E has shape \(10, 2\).*\(nnz, 4\)"):
        message_passing(g, X, np.ones((10, 2)))
    with pytest.raises(ValueError, match="E must have"):
        message_passing(g, X, np.ones((10, 4, 1)))
    with pytest.raises(TypeError, match="E is None"):
        message_passing(g, X, None)
    with pytest.raises(TypeError, match="numeric"):
        message_passing(g, X, np.ones(10, bool))
    with pytest.raises(TypeError, match="X has dtype int64"):
        message_passing(g, np.ones((5, 4), np.int64), np.ones(10))
    with pytest.raises(ValueError, match="X has 4 rows"):
        message_passing(g, np.ones((4, 4)), np.ones(10))
    with pytest.raises(ValueError, match="op='sub'"):
        message_passing(g, X, np.ones(10), op="sub")
    with pytest.raises(ValueError, match="reduce='prod'"):
        message_passing(g, X, np.ones(10), reduce="prod")
    with pytest.raises(ValueError, match="needs arg"):
        message_passing_backward(g, X, X, np.ones(10), reduce="max")
    with pytest.raises(ValueError, match="needs arg"):
        message_passing_backward(g, X, X, np.ones(10), reduce="min", arg=np.zeros((5, 3), np.int64))
    with pytest.raises(TypeError, match="arg has dtype int32"):
        message_passing_backward(g, X, X, np.ones(10), reduce="max", arg=np.zeros((5, 4), np.int32))
    with pytest.raises(TypeError, match="dtypes must match"):
        message_passing_backward(g, X.astype(np.float32), X, np.ones(10))
    with pytest.raises(ValueError, match="grad_out has shape"):
        message_passing_backward(g, np.ones((5, 3)), X, np.ones(10))
    with pytest.raises(ValueError, match="grad_out has 4 rows"):
        message_passing_backward(g, np.ones((4, 4)), X, np.ones(10))


SCRIPT = """
import numpy as np, sys, hashlib
sys.path.insert(0, {tests!r})
from test_message_passing import rand_graph
from stgkern.conv import message_passing, message_passing_backward
rng = np.random.default_rng(5)
g = rand_graph(rng, 3000, 3000, 40000)
X = rng.standard_normal((3000, 33)).astype(np.float32)
h = hashlib.sha256()
for width in ((40000,), (40000, 33)):
    E = rng.standard_normal(width).astype(np.float32)
    for op, red in (("mul", "mean"), ("add", "max")):
        o, a = message_passing(g, X, E, op, red, return_arg=True)
        gx, ge = message_passing_backward(g, o, X, E, op, red, a)
        for arr in (o, gx, ge):
            h.update(arr.tobytes())
sys.stdout.write(h.hexdigest())
"""


def test_deterministic_across_threads():
    res = outputs_by_thread_count(SCRIPT.format(tests=os.path.dirname(__file__)), ("1", "2", "2"))
    assert len(res[0]) == 64 and res[0] == res[1] == res[2]


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("width", ["F", 1])
def test_out_buffer_is_filled_and_checked(reduce, width):
    rng = np.random.default_rng(21)
    n, F, nnz = 40, 7, 150
    dst = np.sort(rng.integers(0, n - 5, nnz))          # the last rows have no in-edges
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    g = Graph(indptr, rng.integers(0, n, nnz).astype(np.int32), n)
    X = rng.standard_normal((n, F)).astype(np.float32)
    E = rng.standard_normal((nnz, F) if width == "F" else nnz).astype(np.float32)
    ref, ref_arg = message_passing(g, X, E, "mul", reduce, return_arg=True)
    buf = np.full((n, F), np.nan, np.float32)           # stale contents must be overwritten, empty rows too
    got, arg = message_passing(g, X, E, "mul", reduce, return_arg=True, out=buf)
    assert got is buf
    np.testing.assert_array_equal(buf, ref)
    if ref_arg is not None:
        np.testing.assert_array_equal(arg, ref_arg)
    with pytest.raises(ValueError, match="shape"):
        message_passing(g, X, E, "mul", reduce, out=np.empty((n, F + 1), np.float32))
    with pytest.raises(ValueError, match="overlaps X"):
        message_passing(g, X, E, "mul", reduce, out=X)
    if width == "F":
        big = np.zeros((nnz, F), np.float32)
        with pytest.raises(ValueError, match="overlaps E"):
            message_passing(g, X, big, "mul", reduce, out=big[:n])
