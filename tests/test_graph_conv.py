"""graph_conv / graph_conv_backward against dense references and finite differences."""
import numba
import numpy as np
import pytest
from hypothesis import given, strategies as st

from naive import naive_gc_activation, naive_graph_conv, naive_graph_conv_backward
from stgkern import Graph, layer
from stgkern.conv import spmm
from stgkern.layer import graph_conv, graph_conv_backward

REDUCES = ["sum", "mean", "max", "min"]
ACTS = [None, "relu", "sigmoid", "tanh"]
GRAD_NAMES = ["grad_X", "grad_W_self", "grad_W_neigh", "grad_bias", "grad_edge_weight"]


# ------------------------------------------------------------------ helpers
def random_graph(rng, n, max_deg=4, isolated=0.2):
    """Random square CSR graph with duplicate edges allowed and some isolated (no in-edge) rows."""
    deg = rng.integers(0, max_deg + 1, n)
    deg[rng.random(n) < isolated] = 0
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(deg, out=indptr[1:])
    indices = rng.integers(0, max(n, 1), int(indptr[-1]))
    return Graph(indptr, indices, n_src=n)


def make_inputs(rng, g, F_in, F_out, dtype, *, neigh=True, bias=True, weight=True):
    n = g.n_nodes
    X = rng.standard_normal((n, F_in)).astype(dtype)
    Ws = (rng.standard_normal((F_in, F_out)) / np.sqrt(F_in)).astype(dtype)
    Wn = (rng.standard_normal((F_in, F_out)) / np.sqrt(F_in)).astype(dtype) if neigh else None
    b = rng.standard_normal(F_out).astype(dtype) if bias else None
    w = rng.uniform(0.5, 1.5, g.nnz).astype(dtype) if weight else None
    return X, Ws, Wn, b, w


def tol(dtype, ref):
    scale = max(1.0, float(np.abs(ref).max())) if np.size(ref) else 1.0
    return dict(rtol=0, atol=(1e-10 if dtype == np.float64 else 2e-5) * scale)


def assert_close(got, ref, dtype, name=""):
    if ref is None:
        assert got is None, f"{name} should be None"
        return
    assert got is not None, f"{name} is None"
    assert got.dtype == dtype, f"{name} dtype {got.dtype}"
    assert got.shape == ref.shape, f"{name} shape {got.shape} vs {ref.shape}"
    np.testing.assert_allclose(got, ref, err_msg=name, **tol(dtype, ref))


def check_against_naive(g, X, Ws, Wn, b, w, reduce, act, dtype, rng):
    out = graph_conv(g, X, Ws, Wn, b, w, reduce, act)
    ref = naive_graph_conv(g.indptr, g.indices, X, Ws, Wn, b, w, reduce, act)
    assert_close(out, ref, dtype, "out")
    G = rng.standard_normal(out.shape).astype(dtype)
    grads = graph_conv_backward(g, G, X, Ws, Wn, b, w, reduce, act, out=out)
    grads_re = graph_conv_backward(g, G, X, Ws, Wn, b, w, reduce, act)        # out recomputed
    refs = naive_graph_conv_backward(g.indptr, g.indices, G, X, Ws, Wn, b, w, reduce, act)
    for name, got, again, r in zip(GRAD_NAMES, grads, grads_re, refs):
        assert_close(got, r, dtype, name)
        assert_close(again, r, dtype, name + " (out=None)")


# ------------------------------------------------------------ random inputs
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 14), F_in=st.integers(1, 6), F_out=st.integers(1, 6),
       dtype=st.sampled_from([np.float32, np.float64]), reduce=st.sampled_from(REDUCES),
       act=st.sampled_from(ACTS), neigh=st.booleans(), bias=st.booleans(), weight=st.booleans())
def test_matches_naive_random(seed, n, F_in, F_out, dtype, reduce, act, neigh, bias, weight):
    rng = np.random.default_rng(seed)
    g = random_graph(rng, n)
    if not neigh:
        F_out = F_in
    X, Ws, Wn, b, w = make_inputs(rng, g, F_in, F_out, dtype, neigh=neigh, bias=bias, weight=weight)
    check_against_naive(g, X, Ws, Wn, b, w, reduce, act, dtype, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("act", ACTS, ids=str)
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("F_in,F_out", [(33, 5), (5, 33), (1, 1), (127, 127)])
def test_every_reduce_activation(reduce, act, dtype, F_in, F_out):
    rng = np.random.default_rng(7)
    g = random_graph(rng, 23, max_deg=6, isolated=0.3)
    X, Ws, Wn, b, w = make_inputs(rng, g, F_in, F_out, dtype)
    check_against_naive(g, X, Ws, Wn, b, w, reduce, act, dtype, rng)


def test_many_blocks_bias_gradient():
    """More rows than one fused block (512): block partials of the bias gradient add up."""
    rng = np.random.default_rng(3)
    g = random_graph(rng, 1601, max_deg=3)
    X, Ws, Wn, b, w = make_inputs(rng, g, 3, 2, np.float64)
    check_against_naive(g, X, Ws, Wn, b, w, "mean", "tanh", np.float64, rng)


# ------------------------------------------------------------- fusion order
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("F_in,F_out", [(9, 3), (3, 9), (4, 4)])
def test_fusion_orders_agree(monkeypatch, reduce, F_in, F_out):
    rng = np.random.default_rng(11)
    g = random_graph(rng, 40)
    X, Ws, Wn, b, w = make_inputs(rng, g, F_in, F_out, np.float64)
    G = rng.standard_normal((g.n_nodes, F_out))
    results = {}
    for forced in (True, False):
        monkeypatch.setattr(layer, "_transform_first", lambda r, W, forced=forced: forced)
        out = graph_conv(g, X, Ws, Wn, b, w, reduce, "sigmoid")
        results[forced] = (out, *graph_conv_backward(g, G, X, Ws, Wn, b, w, reduce, "sigmoid", out=out),
                           *graph_conv_backward(g, G, X, Ws, Wn, b, w, reduce, "sigmoid"))
    for name, a, c in zip(["out"] + GRAD_NAMES * 2, results[True], results[False]):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12, err_msg=name)


def test_default_order_choice():
    W_narrow = np.zeros((8, 3))
    W_wide = np.zeros((3, 8))
    assert layer._transform_first("sum", W_narrow) and layer._transform_first("mean", W_narrow)
    assert not layer._transform_first("sum", W_wide)
    assert not layer._transform_first("max", W_narrow) and not layer._transform_first("min", W_narrow)
    assert not layer._transform_first("sum", None)


def test_matches_composition_with_spmm():
    """The public layer equals its definition written with the public spmm."""
    rng = np.random.default_rng(5)
    g = random_graph(rng, 50)
    X, Ws, Wn, b, w = make_inputs(rng, g, 8, 3, np.float64)
    ref = np.tanh(X @ Ws + spmm(g, X, w, "mean") @ Wn + b)
    np.testing.assert_allclose(graph_conv(g, X, Ws, Wn, b, w, "mean", "tanh"), ref, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------ finite differences
def _fd_grads(g, X, Ws, Wn, b, w, reduce, act, R, eps=1e-6):
    params = {"X": X, "W_self": Ws, "W_neigh": Wn, "bias": b, "edge_weight": w}

    def loss():
        return float((graph_conv(g, params["X"], params["W_self"], params["W_neigh"], params["bias"],
                                 params["edge_weight"], reduce, act) * R).sum())
    grads = []
    for name in ["X", "W_self", "W_neigh", "bias", "edge_weight"]:
        p = params[name]
        gr = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            up = loss()
            p[idx] = old - eps
            down = loss()
            p[idx] = old
            gr[idx] = (up - down) / (2 * eps)
        grads.append(gr)
    return grads


@pytest.mark.parametrize("act", ACTS, ids=str)
@pytest.mark.parametrize("reduce", REDUCES)
def test_finite_differences(reduce, act):
    rng = np.random.default_rng(21)
    g = random_graph(rng, 7, max_deg=3, isolated=0.15)
    X, Ws, Wn, b, w = make_inputs(rng, g, 3, 2, np.float64)
    R = rng.standard_normal((g.n_nodes, 2))
    got = graph_conv_backward(g, R, X, Ws, Wn, b, w, reduce, act)
    for name, a, fd in zip(GRAD_NAMES, got, _fd_grads(g, X, Ws, Wn, b, w, reduce, act, R)):
        np.testing.assert_allclose(a, fd, rtol=1e-6, atol=1e-7, err_msg=name)


# --------------------------------------------------------------- edge cases
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_empty_graph(dtype):
    g = Graph(np.zeros(1, np.int64), np.zeros(0, np.int32))
    X = np.zeros((0, 4), dtype)
    Ws, Wn, b = np.ones((4, 3), dtype), np.ones((4, 3), dtype), np.ones(3, dtype)
    w = np.zeros(0, dtype)
    out = graph_conv(g, X, Ws, Wn, b, w, activation="relu")
    assert out.shape == (0, 3) and out.dtype == dtype
    gX, gWs, gWn, gb, gw = graph_conv_backward(g, np.zeros((0, 3), dtype), X, Ws, Wn, b, w, activation="relu")
    assert gX.shape == (0, 4) and gw.shape == (0,)
    for a, shape in ((gWs, (4, 3)), (gWn, (4, 3)), (gb, (3,))):
        assert a.shape == shape and a.dtype == dtype and not a.any()


@pytest.mark.parametrize("reduce", REDUCES)
def test_no_edges_and_one_node(reduce):
    rng = np.random.default_rng(2)
    for n in (1, 5):
        g = Graph(np.zeros(n + 1, np.int64), np.zeros(0, np.int32))
        X, Ws, Wn, b, _ = make_inputs(rng, g, 3, 3, np.float64)
        # isolated nodes aggregate to 0: only the self term and bias remain
        np.testing.assert_allclose(graph_conv(g, X, Ws, Wn, b, reduce=reduce), X @ Ws + b, rtol=1e-13)
        check_against_naive(g, X, Ws, Wn, b, None, reduce, "tanh", np.float64, rng)
    g = Graph(np.array([0, 1]), np.array([0]))               # one node with a self loop
    X, Ws, Wn, b, w = make_inputs(rng, g, 2, 4, np.float32)
    check_against_naive(g, X, Ws, Wn, b, w, reduce, "relu", np.float32, rng)


def test_ties_in_max():
    """Duplicate edges tie exactly; the gradient goes to the lowest edge id (as in spmm)."""
    g = Graph(np.array([0, 0, 3]), np.array([0, 0, 0]))
    X = np.array([[1.0, -2.0], [0.5, 0.5]])
    Ws = np.eye(2)
    rng = np.random.default_rng(0)
    check_against_naive(g, X, Ws, None, None, np.ones(3), "max", None, np.float64, rng)
    gw = graph_conv_backward(g, np.ones((2, 2)), X, Ws, None, None, np.ones(3), "max")[4]
    np.testing.assert_array_equal(gw, [X[0].sum(), 0.0, 0.0])        # both features pick edge 0


def test_non_contiguous_inputs():
    rng = np.random.default_rng(9)
    g = random_graph(rng, 30)
    Xbig = rng.standard_normal((30, 10))
    X = Xbig[:, ::2]                                          # strided view
    Ws = np.asfortranarray(rng.standard_normal((5, 4)))
    Wn = rng.standard_normal((4, 5)).T                        # transposed view
    b = rng.standard_normal(8)[::2]
    w = rng.uniform(0.5, 1, 2 * g.nnz)[::2]
    assert not X.flags.c_contiguous and not Ws.flags.c_contiguous and not Wn.flags.c_contiguous
    check_against_naive(g, X, Ws, Wn, b, w, "sum", "relu", np.float64, rng)
    out_c = graph_conv(g, np.ascontiguousarray(X), np.ascontiguousarray(Ws), np.ascontiguousarray(Wn),
                       np.ascontiguousarray(b), np.ascontiguousarray(w), "sum", "relu")
    np.testing.assert_array_equal(graph_conv(g, X, Ws, Wn, b, w, "sum", "relu"), out_c)


def test_edge_weight_cast_to_features_dtype():
    rng = np.random.default_rng(4)
    g = random_graph(rng, 12)
    X, Ws, Wn, b, w = make_inputs(rng, g, 3, 3, np.float32)
    out = graph_conv(g, X, Ws, Wn, b, w.astype(np.float64))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, graph_conv(g, X, Ws, Wn, b, w))
    assert graph_conv_backward(g, out, X, Ws, Wn, b, w.astype(np.float64))[4].dtype == np.float32


def test_inputs_not_modified():
    rng = np.random.default_rng(6)
    g = random_graph(rng, 20)
    args = make_inputs(rng, g, 4, 4, np.float32)
    copies = [a.copy() for a in args]
    out = graph_conv(g, *args, reduce="mean", activation="relu")
    G = np.ones_like(out)
    out_copy = out.copy()
    graph_conv_backward(g, G, *args, reduce="mean", activation="relu", out=out)
    graph_conv_backward(g, G, *args[:2], None, None, None, reduce="sum")    # identity G path
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(out, out_copy)
    assert (G == 1).all()


# ---------------------------------------------------------------- determinism
def test_deterministic_across_runs_and_threads():
    rng = np.random.default_rng(10)
    g = random_graph(rng, 3000, max_deg=8)
    X, Ws, Wn, b, w = make_inputs(rng, g, 16, 8, np.float32)
    G = rng.standard_normal((g.n_nodes, 8)).astype(np.float32)

    def run(reduce):
        out = graph_conv(g, X, Ws, Wn, b, w, reduce, "tanh")
        return (out, *graph_conv_backward(g, G, X, Ws, Wn, b, w, reduce, "tanh", out=out))

    for reduce in ("sum", "max"):
        first = run(reduce)
        old = numba.get_num_threads()
        try:
            numba.set_num_threads(1)
            single = run(reduce)
        finally:
            numba.set_num_threads(old)
        for a, c, d in zip(first, run(reduce), single):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(a, d)


# ---------------------------------------------------------------- bad input
@pytest.fixture
def small():
    g = Graph(np.array([0, 1, 2, 4]), np.array([1, 0, 0, 1]))
    X = np.ones((3, 4), np.float32)
    return g, X


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(X=np.ones((2, 4), np.float32)), ValueError, r"X has 2 rows but the graph has 3 nodes"),
    (dict(W_self=np.ones((5, 4), np.float32)), ValueError, r"W_self is \(5, 4\) but X has 4 columns"),
    (dict(W_self=np.ones(4, np.float32)), ValueError, r"W_self must have 2"),
    (dict(W_neigh=np.ones((4, 3), np.float32)), ValueError, r"W_neigh is \(4, 3\) but X has 4 columns and W_self is \(4, 4\)"),
    (dict(W_neigh=None, W_self=np.ones((4, 2), np.float32)), ValueError, r"W_neigh=None means the identity.*F_in=4"),
    (dict(bias=np.ones(5, np.float32)), ValueError, r"bias has length 5 .* F_out=4"),
    (dict(X=np.ones((3, 4), np.float64)), TypeError, r"dtypes must match.*X: float64.*W_self: float32"),
    (dict(bias=np.ones(4, np.float64)), TypeError, r"dtypes must match"),
    (dict(X=np.ones((3, 4), np.int64)), TypeError, r"X has dtype int64"),
    (dict(X=np.ones((3, 4), np.float16), W_self=np.ones((4, 4), np.float16)), TypeError, r"X has dtype float16"),
    (dict(edge_weight=np.ones(3, np.float32)), ValueError, r"edge_weight has length 3 but the graph has 4 edges"),
    (dict(reduce="prod"), ValueError, r"reduce='prod' is not supported"),
    (dict(activation="gelu"), ValueError, r"activation='gelu' is not supported"),
    (dict(W_self=[[1.0]]), TypeError, r"W_self must be a NumPy or CuPy array"),
])
def test_bad_input_raises(small, kwargs, exc, match):
    g, X = small
    args = dict(X=X, W_self=np.ones((4, 4), np.float32), W_neigh=np.ones((4, 4), np.float32),
                bias=np.ones(4, np.float32), edge_weight=None, reduce="sum", activation=None)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        graph_conv(g, **args)
    with pytest.raises(exc, match=match):
        graph_conv_backward(g, np.ones((3, args["W_self"].shape[-1] if hasattr(args["W_self"], "shape") else 1),
                                       np.float32), **args)


def test_bad_backward_input(small):
    g, X = small
    W = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"grad_out has shape \(3, 2\) but the layer outputs \(3, 4\)"):
        graph_conv_backward(g, np.ones((3, 2), np.float32), X, W)
    with pytest.raises(ValueError, match=r"grad_out has 2 rows"):
        graph_conv_backward(g, np.ones((2, 4), np.float32), X, W)
    with pytest.raises(TypeError, match=r"dtypes must match.*grad_out: float64"):
        graph_conv_backward(g, np.ones((3, 4)), X, W)
    with pytest.raises(ValueError, match=r"out has shape \(3, 3\) but grad_out has shape \(3, 4\)"):
        graph_conv_backward(g, np.ones((3, 4), np.float32), X, W, out=np.ones((3, 3), np.float32))
    with pytest.raises(TypeError, match=r"dtypes must match.*out: float64"):
        graph_conv_backward(g, np.ones((3, 4), np.float32), X, W, out=np.ones((3, 4)))


def test_rectangular_graph_rejected():
    g = Graph(np.array([0, 1, 2]), np.array([0, 2]), n_src=3)
    with pytest.raises(ValueError, match=r"square graph.*n_nodes=2, n_src=3"):
        graph_conv(g, np.ones((2, 2)), np.eye(2))


# ---------------------------------------------------------------- devices
def test_matches_naive_on_backend(xp):
    """Same body on NumPy and (when a GPU is present) CuPy."""
    rng = np.random.default_rng(13)
    g = random_graph(rng, 60)
    args = make_inputs(rng, g, 6, 4, np.float32)
    G = rng.standard_normal((g.n_nodes, 4)).astype(np.float32)
    if xp is not np:
        g = g.to("gpu")
    to = (lambda a: a) if xp is np else (lambda a: None if a is None else xp.asarray(a))
    back = (lambda a: a) if xp is np else (lambda a: None if a is None else xp.asnumpy(a))
    out = graph_conv(g, *map(to, args), reduce="mean", activation="relu")
    ref = naive_graph_conv(np.asarray(back(g.indptr)), np.asarray(back(g.indices)), *args, "mean", "relu")
    assert_close(back(out), ref, np.float32, "out")
    grads = graph_conv_backward(g, to(G), *map(to, args), reduce="mean", activation="relu", out=out)
    refs = naive_graph_conv_backward(back(g.indptr), back(g.indices), G, *args, "mean", "relu")
    for name, a, r in zip(GRAD_NAMES, grads, refs):
        assert_close(back(a), r, np.float32, name)


# ------------------------------------------------------ dense products (CPU)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mnk", [1, 300, 262144, 786432])  # 1 row per BLAS call .. 64 rows .. the default
@pytest.mark.parametrize("n,K,F", [(0, 3, 4), (1, 1, 1), (7, 5, 3), (1000, 64, 64), (513, 33, 17), (9, 0, 4),
                                   (9, 4, 0)])
def test_blocked_blas_products_match_numpy(dtype, mnk, n, K, F):
    from stgkern import config
    from stgkern._numba import graph_conv as ew
    rng = np.random.default_rng(n + K + F)
    A = rng.standard_normal((n, K)).astype(dtype)
    B = rng.standard_normal((n, F)).astype(dtype)
    W = rng.standard_normal((F, K)).astype(dtype).T            # F-ordered view, as the backward passes W.T
    ref = A.astype(np.float64) @ W.astype(np.float64)
    ref_tn = A.T.astype(np.float64) @ B.astype(np.float64)
    atol = (1e-10 if dtype == np.float64 else 1e-4) * max(K, 1)
    with config.override(cpu_gemm_call_mnk=mnk):
        got = ew.matmul(A, W)
        assert got.shape == (n, F) and got.dtype == dtype
        np.testing.assert_allclose(got, ref, rtol=0, atol=atol)
        buf = np.full((n, F), np.nan, dtype)
        assert ew.matmul(A, W, out=buf) is buf
        np.testing.assert_array_equal(buf, got)                 # stale contents overwritten, same bits
        tn, none = ew.matmul_tn(A, B)
        assert none is None
        assert tn.shape == (K, F) and tn.dtype == dtype
        np.testing.assert_allclose(tn, ref_tn, rtol=0, atol=atol * max(n, 1) ** 0.5)
        tn2, cs = ew.matmul_tn(A, B, colsum=True)
        np.testing.assert_array_equal(tn2, tn)
        assert cs.shape == (F,) and cs.dtype == dtype
        np.testing.assert_allclose(cs, B.astype(np.float64).sum(axis=0), rtol=0, atol=1e-4 * max(n, 1) ** 0.5)


def test_blocked_products_independent_of_threads():
    from stgkern._numba import graph_conv as ew
    rng = np.random.default_rng(3)
    A = rng.standard_normal((5000, 64)).astype(np.float32)
    B = rng.standard_normal((5000, 64)).astype(np.float32)
    W = rng.standard_normal((64, 64)).astype(np.float32)
    first = ew.matmul(A, W), *ew.matmul_tn(A, B, colsum=True)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = ew.matmul(A, W), *ew.matmul_tn(A, B, colsum=True)
    finally:
        numba.set_num_threads(old)
    for a, b in zip(first, single):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,K1,K2,F", [(0, 3, 3, 4), (1, 2, 5, 3), (700, 64, 64, 64), (513, 17, 40, 9),
                                       (9, 0, 4, 5), (9, 4, 0, 5), (9, 4, 4, 0)])
def test_linear2_matches_composition(act, dtype, n, K1, K2, F):
    from stgkern import config
    from stgkern._numba import graph_conv as ew
    rng = np.random.default_rng(n * 7 + K1 + 3 * K2)
    A1 = rng.standard_normal((n, K1)).astype(dtype)
    A2 = rng.standard_normal((n, K2)).astype(dtype)
    W1 = rng.standard_normal((F, K1)).astype(dtype).T      # F-ordered, as the backward passes W.T
    W2 = rng.standard_normal((K2, F)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    for bias in (b, None):
        pre = A1.astype(np.float64) @ W1.astype(np.float64) + A2.astype(np.float64) @ W2.astype(np.float64)
        if bias is not None:
            pre = pre + bias
        ref = naive_gc_activation(pre, act)
        for mnk in (5, 786432):                              # 1 row per gemm call .. the default
            with config.override(cpu_gemm_call_mnk=mnk):
                got = ew.linear2(A1, W1, A2, W2, bias, act)
            assert got.shape == (n, F) and got.dtype == dtype
            np.testing.assert_allclose(got, ref, rtol=0,
                                       atol=(1e-10 if dtype == np.float64 else 1e-4) * max(K1 + K2, 1))


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("act", [None, "relu"])
@pytest.mark.parametrize("mnk", [7, 786432])          # 1 row per block .. the default block
@pytest.mark.parametrize("weight", [False, True])
def test_fused_layer_many_blocks(reduce, act, mnk, weight):
    """The one-pass forward/backward (sum/mean with W_neigh) over many row blocks and tasks, F_in != F_out."""
    from stgkern import config
    rng = np.random.default_rng(12)
    g = random_graph(rng, 2500, max_deg=9)
    X, Ws, Wn, b, w = make_inputs(rng, g, 12, 7, np.float64, weight=weight)
    G = rng.standard_normal((g.n_nodes, 7))
    with config.override(cpu_gemm_call_mnk=mnk):
        out = graph_conv(g, X, Ws, Wn, b, w, reduce, act)
        grads = graph_conv_backward(g, G, X, Ws, Wn, b, w, reduce, act, out=out)
        again = graph_conv_backward(g, G, X, Ws, Wn, b, w, reduce, act)      # out recomputed (or not needed)
    assert_close(out, naive_graph_conv(g.indptr, g.indices, X, Ws, Wn, b, w, reduce, act), np.float64, "out")
    refs = naive_graph_conv_backward(g.indptr, g.indices, G, X, Ws, Wn, b, w, reduce, act)
    for name, got, got2, r in zip(GRAD_NAMES, grads, again, refs):
        assert_close(got, r, np.float64, name)
        assert_close(got2, r, np.float64, name + " (out=None)")


def test_fused_backward_independent_of_threads():
    rng = np.random.default_rng(13)
    g = random_graph(rng, 5000, max_deg=8)
    X, Ws, Wn, b, _ = make_inputs(rng, g, 16, 16, np.float32, weight=False)
    G = rng.standard_normal((g.n_nodes, 16)).astype(np.float32)

    def run():
        out = graph_conv(g, X, Ws, Wn, b, None, "mean", None)
        return (out, *graph_conv_backward(g, G, X, Ws, Wn, b, None, "mean", None, out=out)[:4])

    first = run()
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = run()
    finally:
        numba.set_num_threads(old)
    for a, c in zip(first, single):
        np.testing.assert_array_equal(a, c)
