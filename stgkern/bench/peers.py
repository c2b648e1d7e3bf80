"""Peer formulations, each written once, for ``stgkern bench`` and ``benchmarks/``.

Every peer takes the same inputs as the stgkern op it stands beside and is
built in two steps: a ``make_*`` function does the untimed preparation
(format conversion, index casts) and returns a zero-argument callable that
is the timed part.  A peer whose library is missing raises
:class:`PeerUnavailable`; the runner reports it as skipped, with the reason.

Libraries are imported inside the functions: importing this module needs
only NumPy.
"""
from __future__ import annotations

import importlib

import numpy as np

#: Edges per chunk for the gather formulations (bounds their temporaries).
CHUNK_EDGES = 1 << 20


class PeerUnavailable(RuntimeError):
    """The peer's library (or device) is not available; the message says which."""


def require(module: str, extra: str = ""):
    """Import ``module`` or raise :class:`PeerUnavailable` naming it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PeerUnavailable(f"{module} not installed{extra} ({exc.__class__.__name__})") from None


def _torch():
    torch = require("torch")
    import numba
    torch.set_num_threads(numba.get_num_threads())   # same thread count as the Numba kernels
    return torch


def _edges(g, torch):
    return (torch.from_numpy(np.ascontiguousarray(g.indices, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(g.dst(), dtype=np.int64)))


def _row_chunks(indptr, size=None):
    """Edge ranges ``(a, b)`` of about ``size`` (default ``CHUNK_EDGES``) edges that start and
    end at row boundaries (a longer row is a chunk of its own)."""
    size = size or CHUNK_EDGES
    nnz = int(indptr[-1])
    starts = np.unique(indptr[np.searchsorted(indptr, np.arange(0, nnz, size), side="right") - 1])
    ends = np.append(starts[1:], nnz)
    return [(int(a), int(b)) for a, b in zip(starts, ends) if b > a]


def _mean_scale(g, w):
    deg = np.diff(g.indptr)
    scale = (1.0 / np.maximum(deg, 1))[g.dst()]
    return (scale if w is None else w * scale).astype(np.float32 if w is None else w.dtype)


# -------------------------------------------------------------------- spmm
def make_scipy_spmm(g, X, w=None, reduce="sum"):
    """``A @ X`` with SciPy CSR; mean uses the row-normalised matrix (built untimed)."""
    if reduce not in ("sum", "mean"):
        raise PeerUnavailable(f"scipy.sparse has no {reduce}-reduce product")
    vals = _mean_scale(g, w) if reduce == "mean" else w
    A = g.to_scipy(weight=vals, dtype=X.dtype)
    return lambda: A @ X


def make_torch_sparse_spmm(g, X, w=None, reduce="sum"):
    """``torch.sparse.mm`` on a CSR tensor (sum; mean through normalised values)."""
    if reduce not in ("sum", "mean"):
        raise PeerUnavailable(f"torch.sparse.mm has no {reduce} reduce")
    torch = _torch()
    vals = _mean_scale(g, w) if reduce == "mean" else (np.ones(g.nnz, X.dtype) if w is None else w)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "sparse CSR support is in beta"
        T = torch.sparse_csr_tensor(torch.from_numpy(g.indptr), torch.from_numpy(g.indices.astype(np.int64)),
                                    torch.from_numpy(np.ascontiguousarray(vals, dtype=X.dtype)),
                                    size=(g.n_nodes, g.n_src))
    Xt = torch.from_numpy(X)
    return lambda: torch.sparse.mm(T, Xt)


def make_torch_gather_spmm(g, X, w=None, reduce="sum"):
    """The PyTorch gather-scatter formulation: ``X[src] * w`` then ``index_add_`` / ``scatter_reduce``."""
    torch = _torch()
    src, dst = _edges(g, torch)
    Xt = torch.from_numpy(X)
    wt = None if w is None else torch.from_numpy(w).unsqueeze(1)
    n, F = g.n_nodes, X.shape[1]
    deg = torch.from_numpy(np.maximum(np.diff(g.indptr), 1)).to(Xt.dtype).unsqueeze(1)

    chunks = _row_chunks(g.indptr)

    def run():
        out = torch.zeros((n, F), dtype=Xt.dtype)
        for a, b in chunks:                                    # whole rows per chunk: bounded temporaries
            msg = Xt[src[a:b]] if wt is None else Xt[src[a:b]] * wt[a:b]
            if reduce == "max":
                out.index_reduce_(0, dst[a:b], msg, "amax", include_self=False)
            else:
                out.index_add_(0, dst[a:b], msg)
        return out / deg if reduce == "mean" else out
    return run


def make_cupy_spmm(g, X, w=None, reduce="sum"):
    """cuSPARSE through ``cupyx.scipy.sparse.csr_matrix @ X`` (GPU)."""
    if reduce not in ("sum", "mean"):
        raise PeerUnavailable(f"cuSPARSE SpMM has no {reduce} reduce")
    cp = require("cupy", " (GPU peer)")
    sp = require("cupyx.scipy.sparse")
    if w is None:
        w = cp.ones(g.nnz, dtype=X.dtype)
    if reduce == "mean":
        deg = cp.maximum(cp.diff(g.indptr), 1)
        w = w / deg[g.dst()].astype(X.dtype)
    if g.nnz >= 2**31:
        raise PeerUnavailable("cuSPARSE through cupyx takes int32 indices only; this graph has >= 2^31 edges")
    A = sp.csr_matrix((w.astype(X.dtype), g.indices.astype(cp.int32), g.indptr.astype(cp.int32)),
                      shape=(g.n_nodes, g.n_src))
    return lambda: A @ X


# --------------------------------------------------------- message passing
def make_torch_gather_message_passing(g, X, E, op="mul", reduce="sum"):
    """``X[src] ∘ E`` then ``index_add_`` (sum)."""
    if reduce != "sum":
        raise PeerUnavailable(f"peer formulated for sum only, not {reduce}")
    torch = _torch()
    src, dst = _edges(g, torch)
    Xt, Et = torch.from_numpy(X), torch.from_numpy(E)
    if Et.ndim == 1:
        Et = Et.unsqueeze(1)
    chunks = _row_chunks(g.indptr)

    def run():
        out = torch.zeros((g.n_nodes, X.shape[1]), dtype=Xt.dtype)
        for a, b in chunks:
            msg = Xt[src[a:b]] * Et[a:b] if op == "mul" else Xt[src[a:b]] + Et[a:b]
            out.index_add_(0, dst[a:b], msg)
        return out
    return run


# ------------------------------------------------------------------ sddmm
def make_numpy_sddmm(g, X, Y):
    """Dot per edge with ``einsum`` over gathered rows, in chunks of edges."""
    dst, src = g.dst(), g.indices

    def run():
        out = np.empty(dst.size, dtype=X.dtype)
        for a in range(0, dst.size, CHUNK_EDGES):
            b = a + CHUNK_EDGES
            out[a:b] = np.einsum("ij,ij->i", X[dst[a:b]], Y[src[a:b]])
        return out
    return run


def make_torch_gather_sddmm(g, X, Y):
    """Dot per edge as ``(X[dst] * Y[src]).sum(1)``, in chunks of edges."""
    torch = _torch()
    src, dst = _edges(g, torch)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)

    def run():
        out = torch.empty(g.nnz, dtype=Xt.dtype)
        for a in range(0, g.nnz, CHUNK_EDGES):
            b = a + CHUNK_EDGES
            out[a:b] = (Xt[dst[a:b]] * Yt[src[a:b]]).sum(1)
        return out
    return run


def make_cupy_sddmm(g, X, Y):
    """Dot per edge with CuPy gathers (GPU)."""
    cp = require("cupy", " (GPU peer)")
    dst, src = g.dst(), g.indices
    return lambda: cp.einsum("ij,ij->i", X[dst], Y[src])


# ----------------------------------------------------------- edge softmax
def make_torch_gather_edge_softmax(g, s):
    """Scatter softmax: ``scatter_reduce`` amax per row, exp, ``index_add_`` sum, divide."""
    torch = _torch()
    _, dst = _edges(g, torch)
    st = torch.from_numpy(s)
    n = g.n_nodes

    def run():
        mx = torch.full((n,), -torch.inf, dtype=st.dtype).scatter_reduce_(0, dst, st, "amax", include_self=True)
        e = (st - mx[dst]).exp_()
        sm = torch.zeros(n, dtype=st.dtype).index_add_(0, dst, e)
        return e.div_(sm[dst])
    return run


def make_pyg_edge_softmax(g, s):
    """``torch_geometric.utils.softmax`` grouped by destination."""
    torch = _torch()
    utils = require("torch_geometric.utils")
    _, dst = _edges(g, torch)
    st = torch.from_numpy(s)
    return lambda: utils.softmax(st, dst, num_nodes=g.n_nodes)


# ------------------------------------------------- common-neighbour fusion
class ScipyCNF:
    """``out[:, f] = (A diag(x_f) A^T)[i, j]`` read at every edge ``j -> i`` (SciPy).

    The lookup from A's pattern into the product's entries is built once,
    untimed; SciPy drops exact zeros (which reorders the product), so the
    lookup is redone (timed) when a product's pattern differs.
    """

    def __init__(self, g, X, w=None):
        import scipy.sparse as sp
        self.sp, self.X = sp, X
        w = np.ones(g.nnz, X.dtype) if w is None else w
        self.A = g.to_scipy(weight=w, dtype=X.dtype)
        self.AT = self.A.T.tocsr()
        self.want = g.dst().astype(np.int64) * g.n_nodes + g.indices
        M = self.A @ sp.diags(np.ones(g.n_nodes, dtype=X.dtype)) @ self.AT
        self.pos, self.M_indices, self.relookups = self._lookup(M), M.indices, 0

    def _lookup(self, M):
        keys = np.repeat(np.arange(M.shape[0], dtype=np.int64), np.diff(M.indptr)) * M.shape[1] + M.indices
        if keys.size == 0:
            return np.full(self.want.size, -1, np.int64)
        order = np.argsort(keys, kind="stable")
        at = np.minimum(np.searchsorted(keys[order], self.want), keys.size - 1)
        return np.where(keys[order][at] == self.want, order[at], -1)

    def __call__(self):
        X = self.X
        out = np.empty((self.want.size, X.shape[1]), dtype=X.dtype)
        for f in range(X.shape[1]):
            M = self.A @ self.sp.diags(X[:, f]) @ self.AT
            pos = self.pos
            if M.indices.shape != self.M_indices.shape or not np.array_equal(M.indices, self.M_indices):
                pos = self._lookup(M)
                self.relookups += 1
            out[:, f] = np.where(pos >= 0, M.data[pos], 0)
        return out


def make_scipy_cnf(g, X, w=None):
    return ScipyCNF(g, X, w)


def make_graphblas_cnf(g, X, w=None):
    """The masked product ``C<A> = A diag(x_f) A^T`` in python-graphblas (one per feature)."""
    gb = require("graphblas")
    n = g.n_nodes
    w = np.ones(g.nnz, X.dtype) if w is None else w
    A = gb.Matrix.from_coo(g.dst(), g.indices, w, nrows=n, ncols=n)
    AT = A.T.new()
    rows, cols = g.dst(), g.indices

    def run():
        out = np.zeros((g.nnz, X.shape[1]), dtype=X.dtype)
        for f in range(X.shape[1]):
            D = gb.Vector.from_coo(np.arange(n), X[:, f], size=n).diag()
            C = gb.semiring.plus_times(A @ D).new()
            C = gb.semiring.plus_times(C @ AT).new(mask=A.S)
            r, c, v = C.to_coo()
            # CSR order of C matches A's (both sorted by row, then column)
            key_c = r.astype(np.int64) * n + c
            key_a = rows.astype(np.int64) * n + cols
            out[np.searchsorted(key_a, key_c), f] = v
        return out
    return run


# --------------------------------------------------------- segment reduce
def make_numpy_segment_reduce(X, ptr, reduce="sum"):
    """``np.add.reduceat`` / ``np.maximum.reduceat`` (empty segments set to 0)."""
    if reduce not in ("sum", "mean", "max"):
        raise PeerUnavailable(f"no NumPy formulation for {reduce}")
    lens = np.diff(ptr)
    nonempty = lens > 0
    starts = ptr[:-1][nonempty]
    ufunc = np.maximum if reduce == "max" else np.add

    def run():
        out = np.zeros((lens.size, X.shape[1]), dtype=X.dtype)
        if starts.size:
            out[nonempty] = ufunc.reduceat(X, starts, axis=0)
        if reduce == "mean":
            out /= np.maximum(lens, 1)[:, None].astype(X.dtype)
        return out
    return run


def make_torch_segment_reduce(X, ptr, reduce="sum"):
    """``torch.segment_reduce`` with segment lengths."""
    if reduce not in ("sum", "mean", "max"):
        raise PeerUnavailable(f"torch.segment_reduce has no {reduce}")
    torch = _torch()
    Xt = torch.from_numpy(X)
    lens = torch.from_numpy(np.diff(ptr))
    empty = (lens == 0).unsqueeze(1)
    if reduce != "max":
        return lambda: torch.segment_reduce(Xt, reduce, lengths=lens, axis=0, unsafe=True, initial=0)
    # no initial for max (it would take part in every segment); empty segments are set to 0 after
    return lambda: torch.segment_reduce(Xt, "max", lengths=lens, axis=0, unsafe=True).masked_fill_(empty, 0)


# ------------------------------------------------------------------- topk
def numpy_topk(Q, items, k):
    """Full score matrix, ``argpartition`` per row, the k sorted by score desc then index asc."""
    S = Q @ items.T
    part = np.argpartition(S, -k, axis=1)[:, -k:]
    ps = np.take_along_axis(S, part, axis=1)
    order = np.lexsort((part, -ps), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(ps, order, axis=1)


def make_numpy_topk(Q, items, k):
    return lambda: numpy_topk(Q, items, k)


def make_torch_topk(Q, items, k):
    """``torch.topk`` of the full score matrix."""
    torch = _torch()
    Qt, It = torch.from_numpy(Q), torch.from_numpy(items)

    def run():
        s, i = torch.topk(Qt @ It.T, k, dim=1)
        return i, s
    return run


# --------------------------------------------------------------- graph conv
def make_pyg_graph_conv(g, X, W_self, W_neigh, bias):
    """``torch_geometric.nn.GraphConv`` (sum aggregation) with the same weights."""
    torch = _torch()
    nn = require("torch_geometric.nn")
    F_in, F_out = W_self.shape
    layer = nn.GraphConv(F_in, F_out, aggr="add")
    with torch.no_grad():
        layer.lin_root.weight.copy_(torch.from_numpy(np.ascontiguousarray(W_self.T)))
        layer.lin_rel.weight.copy_(torch.from_numpy(np.ascontiguousarray(W_neigh.T)))
        layer.lin_rel.bias.copy_(torch.from_numpy(bias))
    edge_index = torch.from_numpy(g.to_edge_index())
    Xt = torch.from_numpy(X)

    def run():
        with torch.no_grad():
            return layer(Xt, edge_index)
    return run


# ------------------------------------------------------ graph construction
def numpy_window_graph(user, time, window=8):
    """Vectorised build: stable (user, time) sort, one masked pass per hop, edges sorted into CSR.

    Returns ``(indptr, indices, perm)``.
    """
    perm = np.lexsort((time, user))
    u = user[perm]
    n = u.shape[0]
    dst, src = [], []
    for h in range(1, window + 1):
        i = np.flatnonzero(u[h:] == u[:-h]) + h
        dst.append(i)
        src.append(i - h)
    dst, src = np.concatenate(dst), np.concatenate(src)
    order = np.lexsort((src, dst))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    return indptr, src[order], perm


def numpy_session_graph(ptr, items, dtype=np.float32):
    """SR-GNN session graphs of a batch with ``np.unique``: nodes are (session, item) pairs.

    Returns ``(indptr, indices, w_in, w_out, node_ptr, node_item, alias)``.
    """
    n_seq = ptr.size - 1
    seq = np.repeat(np.arange(n_seq), np.diff(ptr))
    M = int(items.max()) + 1 if items.size else 1
    uniq, alias = np.unique(seq * M + items, return_inverse=True)
    n = uniq.size
    node_ptr = np.zeros(n_seq + 1, np.int64)
    np.cumsum(np.bincount(uniq // M, minlength=n_seq), out=node_ptr[1:])
    p = np.flatnonzero(seq[:-1] == seq[1:])
    ekey = np.unique(alias[p + 1] * n + alias[p])            # sorted by (destination, source)
    dst, src = ekey // n, ekey % n
    indeg, outdeg = np.bincount(dst, minlength=n), np.bincount(src, minlength=n)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(indeg, out=indptr[1:])
    return (indptr, src, (1.0 / indeg[dst]).astype(dtype), (1.0 / outdeg[src]).astype(dtype),
            node_ptr, uniq % M, alias)


def numpy_item_graph(ptr, items, n_items, epsilon=3, top=12):
    """GCE-GNN's global graph with ``np.unique`` over all pairs in visiting order.

    Returns ``(indptr, indices, counts, n_neighbors)``.
    """
    lens = np.diff(ptr)
    seq = np.repeat(np.arange(lens.size), lens)
    j = np.arange(items.size) - ptr[:-1][seq]
    keys, ords = [], []
    for k in range(1, epsilon + 1):
        p = np.flatnonzero(j + k < lens[seq])
        a, b = items[p], items[p + k]
        for d, (row, nb) in enumerate(((a, b), (b, a))):
            keys.append(row * n_items + nb)
            ords.append((seq[p], np.full(p.size, k), j[p], np.full(p.size, d)))
    if not keys:
        return np.zeros(n_items + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), \
            np.zeros(n_items, np.int64)
    key = np.concatenate(keys)
    s, kk, jj, dd = (np.concatenate(c) for c in zip(*ords))
    key = key[np.lexsort((dd, jj, kk, s))]                    # the script's visiting order
    uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
    row, nb = uniq // n_items, uniq % n_items
    order = np.lexsort((first, -counts, row))
    row, nb, counts = row[order], nb[order], counts[order]
    n_neighbors = np.bincount(row, minlength=n_items)
    start = np.repeat(np.cumsum(n_neighbors) - n_neighbors, n_neighbors)
    keep = np.arange(row.size) - start < top
    indptr = np.zeros(n_items + 1, np.int64)
    np.cumsum(np.minimum(n_neighbors, top), out=indptr[1:])
    return indptr, nb[keep], counts[keep], n_neighbors


def numpy_time_intervals(ptr, times, maxlen=50, span=256):
    """TiSASRec's rescaled times and interval matrices, broadcast over a padded (users, maxlen) array.

    Returns ``(mats, seq)``.
    """
    lens = np.diff(ptr)
    n = lens.size
    seq_of = np.repeat(np.arange(n), lens)
    if times.size == 0:
        return np.zeros((n, maxlen, maxlen), np.int32), np.zeros((n, maxlen), np.int32)
    gap = np.diff(times)
    inside = np.flatnonzero((seq_of[:-1] == seq_of[1:]) & (gap != 0))
    scale = np.full(n, np.inf)
    np.minimum.at(scale, seq_of[inside], gap[inside])
    scale[np.isinf(scale)] = 1
    tmin = times[ptr[:-1][seq_of]]
    r = np.round((times - tmin) / scale[seq_of]).astype(np.int64) + 1
    back = ptr[1:][seq_of] - 1 - np.arange(times.size)           # 0 = a user's last event
    keep = back < maxlen
    seq = np.zeros((n, maxlen), np.int32)
    seq[seq_of[keep], maxlen - 1 - back[keep]] = r[keep]
    mats = np.minimum(np.abs(seq[:, :, None] - seq[:, None, :]), span).astype(np.int32)
    return mats, seq
