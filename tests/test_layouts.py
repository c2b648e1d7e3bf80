"""Every public sparse op against ``tests/naive.py``, over memory layouts and index widths.

The kernels take C-contiguous arrays of one float dtype and int32/int64 graph
indices; the public functions accept any NumPy layout and any integer width
and normalise them first (``docs/ops.md``, "Backend contract").  These
property tests hand every op, forward and backward, its dense inputs as
C-contiguous, Fortran-order, strided (every other row or column of a larger
array whose other entries are junk), negatively strided or read-only arrays,
and its index arrays (CSR, segment pointers, exclusions, targets) as int32,
int64, uint32 or uint64, and compare with the float64 references.  Integer
outputs (``arg``, top-k indices) must be equal; every call must leave its
inputs, and the buffers they are views of, as they were.

Numba compiles one specialisation per argument type, and a read-only array is
a type of its own (``ascontiguousarray`` passes a C-ordered one through as it
is), so read-only input compiles a second set of kernels (once: the on-disk
cache keeps them).  To keep that set small, an example is either read-only
throughout (every input C-ordered and frozen, and no dtype cast that would mix
in a writeable copy) or writeable throughout (the other layouts reach the
kernels as writeable C-ordered arrays, the types the rest of the suite
compiles).
"""
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import stgkern
from naive import (naive_common_neighbor_fusion, naive_common_neighbor_fusion_backward, naive_edge_list,
                   naive_edge_softmax, naive_edge_softmax_backward, naive_graph_conv, naive_graph_conv_backward,
                   naive_message_passing, naive_message_passing_backward, naive_random_csr,
                   naive_score_cross_entropy, naive_sddmm, naive_sddmm_backward, naive_segment_reduce,
                   naive_segment_reduce_backward, naive_spmm, naive_spmm_backward, naive_topk)
from stgkern import Graph

DTYPES = (np.float32, np.float64)
INDEX_DTYPES = (np.int32, np.int64, np.uint32, np.uint64)
LAYOUTS = ("C", "F", "rows2", "cols2", "reversed")
REDUCES = ("sum", "mean", "max", "min")

#: Half the profile's example count (tests/conftest.py): 20 per op under "ci", 200 under "thorough".
sweep = settings(max_examples=max(1, settings.default.max_examples // 2), deadline=None)
dtypes = st.sampled_from(DTYPES)
index_dtypes = st.sampled_from(INDEX_DTYPES)
kinds = st.sampled_from(("dyadic", "dyadic", "normal"))   # mostly exact data: ties are frequent
widths = st.integers(1, 5)
seeds = st.integers(0, 2**32 - 1)


# ----------------------------------------------------------------- layouts
def layout(a, kind):
    """A fresh copy of ``a`` (None stays None) with the same values, in memory layout ``kind``.

    ``C`` / ``F``: C or Fortran order; ``rows2`` / ``cols2``: every other entry along the first /
    last axis of an array twice as long there, whose other entries are junk (NaN, or the integer
    type's largest value); ``reversed``: negative strides on every axis; ``readonly``: C order,
    not writeable.
    """
    if a is None:
        return None
    a = np.asarray(a)
    if kind in ("C", "F", "readonly"):
        out = np.array(a, order="F" if kind == "F" else "C")
        out.flags.writeable = kind != "readonly"
        return out
    if kind == "reversed":
        flip = (slice(None, None, -1),) * a.ndim
        return np.array(a[flip])[flip]
    axis = 0 if kind == "rows2" else a.ndim - 1
    shape = list(a.shape)
    shape[axis] *= 2
    big = np.full(shape, np.nan if a.dtype.kind == "f" else np.iinfo(a.dtype).max, dtype=a.dtype)
    every_other = tuple(slice(None, None, 2) if ax == axis else slice(None) for ax in range(a.ndim))
    big[every_other] = a
    return big[every_other]


def layouts(*names):
    """One example's layouts, by input name: all ``readonly`` (a third of the examples), or each
    drawn from :data:`LAYOUTS`."""
    frozen = st.just(dict.fromkeys(names, "readonly"))
    mixed = st.fixed_dictionaries({name: st.sampled_from(LAYOUTS) for name in names})
    return st.sampled_from((False, False, True)).flatmap(lambda ro: frozen if ro else mixed)


def csr_widths(indptr, indices, ptr_dtype, idx_dtype, ptr_layout="C", idx_layout="C"):
    """A CSR's ``(indptr, indices)`` (int64) as ``ptr_dtype`` / ``idx_dtype`` (int32, int64,
    uint32 or uint64), in the given layouts."""
    return layout(indptr.astype(ptr_dtype), ptr_layout), layout(indices.astype(idx_dtype), idx_layout)


@dataclass
class Csr:
    """A drawn graph: the int64 CSR the references read, and the arrays handed to ``Graph``."""
    indptr: np.ndarray
    indices: np.ndarray
    n_src: int
    given: tuple

    @property
    def n_nodes(self):
        return len(self.indptr) - 1

    @property
    def nnz(self):
        return len(self.indices)

    def graph(self):
        return Graph(*self.given, self.n_src)


@st.composite
def csr_cases(draw, square=False, sorted_rows=False):
    """0-12 destinations and sources at densities 0 to 1 (empty graphs, empty rows and edgeless
    graphs included); unless ``sorted_rows``, rows may come shuffled with repeated edges.  Handed
    to ``Graph`` in drawn index widths and layouts."""
    n = draw(st.integers(0, 12))
    n_src = n if square else draw(st.integers(0, 12))
    rng = np.random.default_rng(draw(seeds))
    indptr, indices = naive_random_csr(rng, n, n_src, draw(st.sampled_from((0.0, 0.2, 0.5, 1.0))))
    if not sorted_rows and draw(st.booleans()):
        rows = [indices[indptr[i]:indptr[i + 1]] for i in range(n)]
        rows = [rng.permutation(np.concatenate([r, rng.choice(r, rng.integers(0, len(r) + 1))])) if len(r) else r
                for r in rows]
        indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows], dtype=np.int64)]).astype(np.int64)
        indices = np.concatenate(rows).astype(np.int64) if n else indices
    ptr_dt, idx_dt = draw(index_dtypes), draw(index_dtypes)
    lays = draw(st.tuples(*[st.sampled_from(LAYOUTS + ("readonly",))] * 2))
    return Csr(indptr, indices, n_src, csr_widths(indptr, indices, ptr_dt, idx_dt, *lays))


# ------------------------------------------------------------ data, checks
def values(rng, shape, dtype, kind):
    """``dyadic``: multiples of 1/2 in [-2, 2], whose products and short sums are exact in
    float32 (so ties are frequent, and max/min winners the same as in float64); ``normal``: N(0, 1)."""
    v = rng.integers(-4, 5, shape) / 2 if kind == "dyadic" else rng.standard_normal(shape)
    return v.astype(dtype)


def ab(a):
    return None if a is None else np.abs(a)


def bound(*arrays):
    """1 + the largest magnitude in ``arrays`` (None skipped)."""
    return 1.0 + max((float(np.abs(a).max(initial=0)) for a in arrays if a is not None), default=0.0)


def close(got, ref, dtype, scale=1.0, tol=None):
    """``got`` is ``dtype``, shaped like the float64 ``ref``, and within rtol + atol·scale of it.

    Tolerances are those of ``tol`` (default ``dtype``): rtol 1e-5 / atol 1e-6 for float32,
    1e-12 for float64.  ``scale`` bounds the magnitude of the terms that make up an entry
    (the op on absolute values): rounding grows with them, not with a result that cancels to 0.
    """
    assert got.dtype == dtype and got.shape == ref.shape, (got.dtype, got.shape, ref.shape)
    rtol, atol = (1e-5, 1e-6) if (tol or dtype) == np.float32 else (1e-12, 1e-12)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol * scale)


def close_grads(gX, gw, rX, rw, dtype, scale, weighted):
    """The feature gradient, and the edge-weight gradient when there are weights (else None)."""
    close(gX, rX, dtype, scale)
    if weighted:
        close(gw, rw, dtype, scale)
    else:
        assert gw is None


def same_arg(arg, ref_arg):
    if ref_arg is None:
        assert arg is None
    else:
        assert arg.dtype == np.int64
        np.testing.assert_array_equal(arg, ref_arg)


def snapshot(*arrays):
    """Copies of ``arrays`` (None skipped), of the buffers they view, and their writeable flags."""
    saved = []
    for a in arrays:
        if a is not None:
            for b in (a,) if a.base is None else (a, a.base):
                saved.append((b, b.copy(), b.flags.writeable))
    return saved


def assert_unchanged(saved):
    for a, before, writeable in saved:
        np.testing.assert_array_equal(a, before)      # NaN junk equals NaN
        assert a.flags.writeable == writeable


def test_layout_helpers():
    """The variants are what their names say (so the sweep below does exercise them)."""
    a = np.arange(12.0).reshape(3, 4)
    flags = {kind: layout(a, kind).flags for kind in LAYOUTS + ("readonly",)}
    for kind, v in ((k, layout(a, k)) for k in flags):
        np.testing.assert_array_equal(v, a)
        assert not np.shares_memory(v, a), kind
    assert flags["C"].c_contiguous and flags["C"].writeable
    assert flags["F"].f_contiguous and not flags["F"].c_contiguous
    for kind in ("rows2", "cols2", "reversed"):
        assert not (flags[kind].c_contiguous or flags[kind].f_contiguous), kind
    assert flags["readonly"].c_contiguous and not flags["readonly"].writeable
    assert all(s < 0 for s in layout(a, "reversed").strides)
    assert np.isnan(layout(a, "cols2").base[:, 1::2]).all()
    ip, ix = csr_widths(np.array([0, 2, 3]), np.array([1, 0, 1]), np.uint32, np.uint64, "rows2", "reversed")
    assert ip.dtype == np.uint32 and ix.dtype == np.uint64 and ip.tolist() == [0, 2, 3] and ix.tolist() == [1, 0, 1]


# ------------------------------------------------------------------- conv
@sweep
@given(case=csr_cases(), F=widths, dtype=dtypes, wdtype=dtypes, kind=kinds, reduce=st.sampled_from(REDUCES),
       weighted=st.booleans(), lay=layouts("X", "w", "G", "arg"), seed=seeds)
def test_spmm(case, F, dtype, wdtype, kind, reduce, weighted, lay, seed):
    rng = np.random.default_rng(seed)
    ip, ix = case.indptr, case.indices
    wdtype = dtype if lay["w"] == "readonly" else wdtype    # no cast copy: all kernel arguments read-only
    X0 = values(rng, (case.n_src, F), dtype, kind)
    w0 = values(rng, (case.nnz,), wdtype, kind) if weighted else None
    wx = None if w0 is None else w0.astype(dtype)          # the weights the kernel sees
    G0 = values(rng, (case.n_nodes, F), dtype, kind)
    X, w, G = layout(X0, lay["X"]), layout(w0, lay["w"]), layout(G0, lay["G"])
    inputs = snapshot(*case.given, X, w, G)
    g = case.graph()

    out, arg = stgkern.spmm(g, X, w, reduce, return_arg=True)
    close(out, naive_spmm(ip, ix, X0, wx, reduce), dtype, bound(naive_spmm(ip, ix, ab(X0), ab(wx), "sum")))
    ones = np.ones(case.nnz)
    ref_arg = naive_message_passing(ip, ix, X0, ones if wx is None else wx, "mul", reduce)[1]
    same_arg(arg, ref_arg)

    A = layout(arg, lay["arg"])
    inputs += snapshot(A)
    gX, gw = stgkern.spmm_backward(g, G, X, w, reduce, A)
    rX, rw = naive_spmm_backward(ip, ix, G0, X0, wx, reduce, ref_arg)
    scale = bound(*naive_spmm_backward(ip, ix, ab(G0), ab(X0), ab(wx), "sum", None))
    close_grads(gX, gw, rX, rw, dtype, scale, weighted)
    assert_unchanged(inputs)


@sweep
@given(case=csr_cases(), F=widths, dtype=dtypes, edtype=dtypes, kind=kinds, op=st.sampled_from(("mul", "add")),
       reduce=st.sampled_from(REDUCES), e_width=st.sampled_from(("vec", "col", "full")),
       lay=layouts("X", "E", "G", "arg"), seed=seeds)
def test_message_passing(case, F, dtype, edtype, kind, op, reduce, e_width, lay, seed):
    rng = np.random.default_rng(seed)
    ip, ix = case.indptr, case.indices
    edtype = dtype if lay["E"] == "readonly" else edtype    # no cast copy: all kernel arguments read-only
    X0 = values(rng, (case.n_src, F), dtype, kind)
    E0 = values(rng, {"vec": (case.nnz,), "col": (case.nnz, 1), "full": (case.nnz, F)}[e_width], edtype, kind)
    Ex = E0.astype(dtype)                                   # E is cast to X's dtype first
    G0 = values(rng, (case.n_nodes, F), dtype, kind)
    X, E, G = layout(X0, lay["X"]), layout(E0, lay["E"]), layout(G0, lay["G"])
    inputs = snapshot(*case.given, X, E, G)
    g = case.graph()

    out, arg = stgkern.message_passing(g, X, E, op, reduce, return_arg=True)
    ref, ref_arg = naive_message_passing(ip, ix, X0, Ex, op, reduce)
    close(out, ref, dtype, bound(naive_message_passing(ip, ix, ab(X0), ab(Ex), op, "sum")[0]))
    same_arg(arg, ref_arg)

    A = layout(arg, lay["arg"])
    inputs += snapshot(A)
    gX, gE = stgkern.message_passing_backward(g, G, X, E, op, reduce, A)
    rX, rE = naive_message_passing_backward(ip, ix, G0, X0, Ex, op, reduce, ref_arg)
    scale = bound(*naive_message_passing_backward(ip, ix, ab(G0), ab(X0), ab(Ex), op, "sum", None))
    close(gX, rX, dtype, scale)
    close(gE, rE, dtype, scale)
    assert_unchanged(inputs)


@sweep
@given(case=csr_cases(square=True), F_in=st.integers(1, 4), F_out=st.integers(1, 4), neigh=st.booleans(),
       has_bias=st.booleans(), weighted=st.booleans(), reduce=st.sampled_from(REDUCES),
       activation=st.sampled_from((None, "relu", "sigmoid", "tanh")), give_out=st.booleans(), dtype=dtypes,
       kind=kinds, lay=layouts("X", "W_self", "W_neigh", "bias", "w", "G", "out"), seed=seeds)
def test_graph_conv(case, F_in, F_out, neigh, has_bias, weighted, reduce, activation, give_out, dtype, kind, lay,
                    seed):
    rng = np.random.default_rng(seed)
    ip, ix = case.indptr, case.indices
    F_out = F_out if neigh else F_in                        # W_neigh=None is the identity
    X0 = values(rng, (case.n_nodes, F_in), dtype, kind)
    Ws0 = values(rng, (F_in, F_out), dtype, kind)
    Wn0 = values(rng, (F_in, F_out), dtype, kind) if neigh else None
    b0 = values(rng, (F_out,), dtype, kind) if has_bias else None
    w0 = values(rng, (case.nnz,), dtype, kind) if weighted else None
    G0 = values(rng, (case.n_nodes, F_out), dtype, kind)
    ref, pre = naive_graph_conv(ip, ix, X0, Ws0, Wn0, b0, w0, reduce, activation, return_pre=True)
    # relu's kink: a pre-activation at (or rounding across) 0 may take either side's gradient,
    # unless the arithmetic is exact (dyadic data, no division by the degree)
    assume(activation != "relu" or (kind == "dyadic" and reduce != "mean") or np.abs(pre).min(initial=1) > 1e-4)
    inputs = [layout(a, lay[name]) for a, name in
              ((X0, "X"), (Ws0, "W_self"), (Wn0, "W_neigh"), (b0, "bias"), (w0, "w"), (G0, "G"))]
    X, Ws, Wn, b, w, G = inputs
    saved = snapshot(*case.given, *inputs)
    g = case.graph()

    out = stgkern.graph_conv(g, X, Ws, Wn, b, w, reduce, activation)
    fwd = bound(naive_graph_conv(ip, ix, ab(X0), ab(Ws0), ab(Wn0), ab(b0), ab(w0), "sum"))
    close(out, ref, dtype, fwd)

    O = layout(out, lay["out"]) if give_out else None
    saved += snapshot(O)
    grads = stgkern.graph_conv_backward(g, G, X, Ws, Wn, b, w, reduce, activation, out=O)
    refs = naive_graph_conv_backward(ip, ix, G0, X0, Ws0, Wn0, b0, w0, reduce, activation)
    scale = bound(*naive_graph_conv_backward(ip, ix, ab(G0), ab(X0), ab(Ws0), ab(Wn0), ab(b0), ab(w0), "sum"))
    if activation in ("sigmoid", "tanh"):
        scale *= fwd                                        # σ' is taken at a pre-activation that carries rounding
    for name, got, want in zip(("X", "W_self", "W_neigh", "bias", "w"), grads, refs):
        if want is None:
            assert got is None, name
        else:
            close(got, want, dtype, scale)
    assert_unchanged(saved)


# ------------------------------------------------------------------- edge
def cosine_bound(indptr, indices, G, X, Y):
    """Bounds a cosine gradient's terms: |g_k|·2/|x| per edge, summed per row of X and of Y."""
    nx = np.linalg.norm(X.astype(np.float64), axis=1)
    ny = np.linalg.norm(Y.astype(np.float64), axis=1)
    bx, by = np.zeros(len(X)), np.zeros(len(Y))
    for k, (i, j) in enumerate(naive_edge_list(indptr, indices)):
        if nx[i] and ny[j]:
            bx[i] += 2 * abs(float(G[k])) / nx[i]
            by[j] += 2 * abs(float(G[k])) / ny[j]
    return bound(bx, by)


@sweep
@given(case=csr_cases(), F=widths, dtype=dtypes, kind=kinds,
       op=st.sampled_from(("dot", "cosine", "add", "sub", "mul")), lay=layouts("X", "Y", "G"), seed=seeds)
def test_sddmm(case, F, dtype, kind, op, lay, seed):
    rng = np.random.default_rng(seed)
    ip, ix = case.indptr, case.indices
    X0 = values(rng, (case.n_nodes, F), dtype, kind)
    Y0 = values(rng, (case.n_src, F), dtype, kind)
    G0 = values(rng, (case.nnz,) if op in ("dot", "cosine") else (case.nnz, F), dtype, kind)
    X, Y, G = layout(X0, lay["X"]), layout(Y0, lay["Y"]), layout(G0, lay["G"])
    inputs = snapshot(*case.given, X, Y, G)
    g = case.graph()

    if op == "cosine":
        fwd, bwd = 1.0, cosine_bound(ip, ix, G0, X0, Y0)
    else:
        aop = "add" if op == "sub" else op                  # the op on |X|, |Y| bounds every term
        fwd = bound(naive_sddmm(ip, ix, ab(X0), ab(Y0), aop))
        bwd = bound(*naive_sddmm_backward(ip, ix, ab(G0), ab(X0), ab(Y0), aop))
    close(stgkern.sddmm(g, X, Y, op), naive_sddmm(ip, ix, X0, Y0, op), dtype, fwd)
    gX, gY = stgkern.sddmm_backward(g, G, X, Y, op)
    rX, rY = naive_sddmm_backward(ip, ix, G0, X0, Y0, op)
    close(gX, rX, dtype, bwd)
    close(gY, rY, dtype, bwd)
    assert_unchanged(inputs)


@sweep
@given(case=csr_cases(), heads=st.sampled_from((None, 1, 2, 3)), dtype=dtypes, kind=kinds,
       lay=layouts("scores", "G", "out"), seed=seeds)
def test_edge_softmax(case, heads, dtype, kind, lay, seed):
    rng = np.random.default_rng(seed)
    shape = (case.nnz,) if heads is None else (case.nnz, heads)
    S0 = values(rng, shape, dtype, kind)
    G0 = values(rng, shape, dtype, kind)
    S, G = layout(S0, lay["scores"]), layout(G0, lay["G"])
    inputs = snapshot(*case.given, S, G)
    g = case.graph()

    out = stgkern.edge_softmax(g, S)
    close(out, naive_edge_softmax(case.indptr, S0), dtype)
    O = layout(out, lay["out"])
    inputs += snapshot(O)
    grad = stgkern.edge_softmax_backward(g, G, O)
    close(grad, naive_edge_softmax_backward(case.indptr, G0, out), dtype, 2 * bound(G0))
    assert_unchanged(inputs)


@sweep
@given(case=csr_cases(square=True, sorted_rows=True), F=widths, dtype=dtypes, kind=kinds, weighted=st.booleans(),
       lay=layouts("X", "w", "G"), seed=seeds)
def test_common_neighbor_fusion(case, F, dtype, kind, weighted, lay, seed):
    rng = np.random.default_rng(seed)
    ip, ix = case.indptr, case.indices
    X0 = values(rng, (case.n_nodes, F), dtype, kind)
    w0 = values(rng, (case.nnz,), dtype, kind) if weighted else None
    G0 = values(rng, (case.nnz, F), dtype, kind)
    X, w, G = layout(X0, lay["X"]), layout(w0, lay["w"]), layout(G0, lay["G"])
    inputs = snapshot(*case.given, X, w, G)
    g = case.graph()

    out = stgkern.common_neighbor_fusion(g, X, w)
    close(out, naive_common_neighbor_fusion(ip, ix, X0, w0), dtype,
          bound(naive_common_neighbor_fusion(ip, ix, ab(X0), ab(w0))))
    gX, gw = stgkern.common_neighbor_fusion_backward(g, G, X, w)
    rX, rw = naive_common_neighbor_fusion_backward(ip, ix, G0, X0, w0)
    scale = bound(*naive_common_neighbor_fusion_backward(ip, ix, ab(G0), ab(X0), ab(w0)))
    close_grads(gX, gw, rX, rw, dtype, scale, weighted)
    assert_unchanged(inputs)


# ---------------------------------------------------------------- readout
@sweep
@given(n_seg=st.integers(0, 6), F=st.sampled_from((None, 1, 2, 3, 5)), dtype=dtypes,
       kind=kinds, reduce=st.sampled_from(("sum", "mean", "max", "last")), ptr_dtype=index_dtypes,
       pass_arg=st.booleans(), lay=layouts("X", "ptr", "G", "arg"), seed=seeds)
def test_segment_reduce(n_seg, F, dtype, kind, reduce, ptr_dtype, pass_arg, lay, seed):
    rng = np.random.default_rng(seed)
    ptr = np.concatenate([[0], np.cumsum(rng.integers(0, 5, n_seg))]).astype(np.int64)   # empty segments too
    n = int(ptr[-1])
    X0 = values(rng, (n,) if F is None else (n, F), dtype, kind)    # F None: a 1-D X
    G0 = values(rng, (n_seg,) + X0.shape[1:], dtype, kind)
    X, P, G = layout(X0, lay["X"]), layout(ptr.astype(ptr_dtype), lay["ptr"]), layout(G0, lay["G"])
    inputs = snapshot(X, P, G)

    out, arg = stgkern.segment_reduce(X, P, reduce, return_arg=True)
    ref, ref_arg = naive_segment_reduce(X0, ptr, reduce)
    close(out, ref, dtype, bound(naive_segment_reduce(ab(X0), ptr, "sum")[0]))
    same_arg(arg, ref_arg)
    A = layout(arg, lay["arg"]) if reduce == "max" or (reduce == "last" and pass_arg) else None
    inputs += snapshot(A)
    grad = stgkern.segment_reduce_backward(G, X, P, reduce, A)
    close(grad, naive_segment_reduce_backward(G0, X0.shape, ptr, reduce, ref_arg), dtype, bound(G0))
    assert_unchanged(inputs)


@sweep
@given(m=st.integers(0, 6), n_items=st.integers(1, 12), d=widths, k=st.integers(1, 12), dtype=dtypes,
       exclude=st.sampled_from((None, "tuple", "scipy")), density=st.sampled_from((0.0, 0.3, 1.0)),
       ex_dtypes=st.tuples(index_dtypes, index_dtypes), lay=layouts("Q", "items", "ex_ptr", "ex_idx"), seed=seeds)
def test_topk(m, n_items, d, k, dtype, exclude, density, ex_dtypes, lay, seed):
    # dyadic data only: scores are exact in float32, so the indices (ties to the lower item) must be equal
    rng = np.random.default_rng(seed)
    k = min(k, n_items)
    Q0 = values(rng, (m, d), dtype, "dyadic")
    I0 = values(rng, (n_items, d), dtype, "dyadic")
    rows = [rng.permutation(np.flatnonzero(rng.random(n_items) < density)) for _ in range(m)]  # unsorted rows
    ex_ptr = np.concatenate([[0], np.cumsum([len(r) for r in rows], dtype=np.int64)]).astype(np.int64)
    ex_idx = np.concatenate(rows).astype(np.int64) if m else np.zeros(0, np.int64)
    Q, items = layout(Q0, lay["Q"]), layout(I0, lay["items"])
    ex = None
    if exclude == "tuple":
        ex = csr_widths(ex_ptr, ex_idx, *ex_dtypes, lay["ex_ptr"], lay["ex_idx"])
    elif exclude == "scipy":
        ex = sp.csr_matrix((np.ones(len(ex_idx)), ex_idx, ex_ptr), shape=(m, n_items))
    inputs = snapshot(Q, items, *(ex if exclude == "tuple" else ()),
                      *((ex.indptr, ex.indices, ex.data) if exclude == "scipy" else ()))

    idx, scores = stgkern.topk(Q, items, k, ex)
    ref_idx, ref_scores = naive_topk(Q0, I0, k, None if ex is None else [set(r.tolist()) for r in rows])
    assert idx.dtype == np.int64 and scores.dtype == dtype
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(scores, ref_scores.astype(dtype))
    assert_unchanged(inputs)


@sweep
@given(m=st.integers(0, 6), n_items=st.integers(1, 12), d=widths, dtype=dtypes, gdtype=dtypes, kind=kinds,
       has_bias=st.booleans(), keep_logits=st.booleans(), target_dtype=index_dtypes,
       lay=layouts("Q", "items", "target", "bias", "grad", "lse"), seed=seeds)
def test_score_cross_entropy(m, n_items, d, dtype, gdtype, kind, has_bias, keep_logits, target_dtype, lay, seed):
    rng = np.random.default_rng(seed)
    Q0 = values(rng, (m, d), dtype, kind)
    I0 = values(rng, (n_items, d), dtype, kind)
    t0 = rng.integers(0, n_items, m)
    b0 = values(rng, (n_items,), dtype, kind) if has_bias else None
    g0 = values(rng, (m,), gdtype, kind)
    Q, items, b = layout(Q0, lay["Q"]), layout(I0, lay["items"]), layout(b0, lay["bias"])
    t, gl = layout(t0.astype(target_dtype), lay["target"]), layout(g0, lay["grad"])
    inputs = snapshot(Q, items, t, b, gl)

    loss, lse, *logits = stgkern.score_cross_entropy(Q, items, t, b, return_lse=True, return_logits=keep_logits)
    ref, rQ, rI, rb = naive_score_cross_entropy(Q0, I0, t0, b0, g0.astype(dtype))
    Z = Q0.astype(np.float64) @ I0.T.astype(np.float64) + (0 if b0 is None else b0)
    absZ = np.abs(Q0.astype(np.float64)) @ np.abs(I0.T.astype(np.float64)) + (0 if b0 is None else np.abs(b0))
    fwd = bound(absZ)
    close(loss, ref, dtype, fwd)
    close(lse, ref + Z[np.arange(m), t0], np.float64, fwd, tol=dtype)
    if keep_logits:
        close(logits[0], Q0.astype(np.float64) @ I0.T.astype(np.float64), dtype, fwd)

    L = layout(lse, lay["lse"])
    inputs += snapshot(L)
    gQ, gI, gb = stgkern.score_cross_entropy_backward(gl, Q, items, t, L, b, logits=logits[0] if logits else None)
    # Σ_c |P_rc| <= 2|g_r|, and P carries the logits' rounding
    scale = fwd * (1 + 2 * max(1, m) * float(np.abs(g0).max(initial=0)) * bound(Q0, I0))
    close(gQ, rQ, dtype, scale)
    close(gI, rI, dtype, scale)
    if has_bias:
        close(gb, rb, dtype, scale)
    else:
        assert gb is None
    assert_unchanged(inputs)                                # the kept logits are the backward's to overwrite
