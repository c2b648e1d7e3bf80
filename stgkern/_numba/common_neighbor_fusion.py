"""Common-neighbour edge fusion on the CPU.

Backend contract (same for ``stgkern._cuda.common_neighbor_fusion``)::

    forward(g, X, edge_weight)             -> out (nnz, F)
    backward(g, grad_out, X, edge_weight)  -> (grad_X (n_nodes, F),
                                               grad_edge_weight (nnz,) or None)

``g`` is square with strictly ascending rows; ``X`` (n_nodes, F),
``grad_out`` (nnz, F) and ``edge_weight`` (nnz,) or None are C-contiguous and
share one float dtype.  For edge k (j -> i)::

    out[k] = sum_{m in N(i) & N(j)} A[i, m] * A[j, m] * X[m]

with N the in-neighbours (the row) and A the edge weight (1 when None).

Forward: per destination row i (``prange``), each edge's two rows are
intersected by a sorted merge.  Backward, pull style, every output element
written once in a fixed order:

* ``grad_X[m] = sum_{i in out(m)} sum_{k = (j -> i), j in out(m)}
  A[i, m] A[j, m] grad_out[k]`` -- one ``prange`` iteration per m, merging
  row i with the transpose row of m (both sorted by node id).
* ``grad_edge_weight`` of edge (m -> a): the edge appears as A[i, m] with
  i = a (edges of row a) and as A[j, m] with j = a (edges j -> i whose
  source is a, found through the transpose row of a).  Both sums are taken
  in the iteration of row a.
"""
import numba as nb
import numpy as np


@nb.njit(parallel=True, cache=True)
def _fwd(indptr, indices, w, X, out):
    n = indptr.shape[0] - 1
    F = X.shape[1]
    for i in nb.prange(n):
        a0, a1 = indptr[i], indptr[i + 1]
        for k in range(a0, a1):
            for f in range(F):
                out[k, f] = 0
            j = indices[k]
            p, q, b1 = a0, indptr[j], indptr[j + 1]
            while p < a1 and q < b1:
                u, v = indices[p], indices[q]
                if u < v:
                    p += 1
                elif u > v:
                    q += 1
                else:
                    c = w[p] * w[q]
                    for f in range(F):
                        out[k, f] += c * X[u, f]
                    p += 1
                    q += 1


@nb.njit(parallel=True, cache=True)
def _grad_x(indptr, indices, t_indptr, t_indices, t_eid, w, G, out):
    n = indptr.shape[0] - 1
    F = G.shape[1]
    for m in nb.prange(n):
        for f in range(F):
            out[m, f] = 0
        t0, t1 = t_indptr[m], t_indptr[m + 1]
        for t in range(t0, t1):
            i = t_indices[t]
            wi = w[t_eid[t]]                     # A[i, m]
            k, q, a1 = indptr[i], t0, indptr[i + 1]
            while k < a1 and q < t1:
                j, d = indices[k], t_indices[q]
                if j < d:
                    k += 1
                elif j > d:
                    q += 1
                else:
                    c = wi * w[t_eid[q]]         # A[i, m] * A[j, m]
                    for f in range(F):
                        out[m, f] += c * G[k, f]
                    k += 1
                    q += 1


@nb.njit(parallel=True, cache=True)
def _grad_w(indptr, indices, t_indptr, t_indices, t_eid, w, G, X, out):
    n = indptr.shape[0] - 1
    F = X.shape[1]
    for a in nb.prange(n):
        a0, a1 = indptr[a], indptr[a + 1]
        for p in range(a0, a1):
            out[p] = 0
        # Role A[i, m] with i = a: edges k = (j -> a).
        for k in range(a0, a1):
            j = indices[k]
            p, q, b1 = a0, indptr[j], indptr[j + 1]
            while p < a1 and q < b1:
                u, v = indices[p], indices[q]
                if u < v:
                    p += 1
                elif u > v:
                    q += 1
                else:
                    s = X.dtype.type(0)
                    for f in range(F):
                        s += G[k, f] * X[u, f]
                    out[p] += w[q] * s
                    p += 1
                    q += 1
        # Role A[j, m] with j = a: edges k = (a -> i).
        for t in range(t_indptr[a], t_indptr[a + 1]):
            i = t_indices[t]
            k = t_eid[t]
            p, p1, q = indptr[i], indptr[i + 1], a0
            while p < p1 and q < a1:
                u, v = indices[p], indices[q]
                if u < v:
                    p += 1
                elif u > v:
                    q += 1
                else:
                    s = X.dtype.type(0)
                    for f in range(F):
                        s += G[k, f] * X[u, f]
                    out[q] += w[p] * s
                    p += 1
                    q += 1


def _weights(g, X, edge_weight):
    return np.ones(g.nnz, dtype=X.dtype) if edge_weight is None else edge_weight


def forward(g, X, edge_weight):
    out = np.empty((g.nnz, X.shape[1]), dtype=X.dtype)
    _fwd(g.indptr, g.indices, _weights(g, X, edge_weight), X, out)
    return out


def backward(g, grad_out, X, edge_weight):
    t = g.transpose()
    w = _weights(g, X, edge_weight)
    gX = np.empty_like(X)
    _grad_x(g.indptr, g.indices, t.indptr, t.indices, t.edata["eid"], w, grad_out, gX)
    if edge_weight is None:
        return gX, None
    gw = np.empty(g.nnz, dtype=X.dtype)
    _grad_w(g.indptr, g.indices, t.indptr, t.indices, t.edata["eid"], w, grad_out, X, gw)
    return gX, gw
