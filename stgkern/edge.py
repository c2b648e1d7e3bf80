"""Edge-level ops: SDDMM, edge softmax and common-neighbour edge fusion.

All three produce one value (or one feature row) per edge of a CSR-by-
destination ``Graph``; edge ``k`` of row ``i`` is ``j -> i`` with
``j = g.indices[k]``.  Every function validates here, then dispatches to
``stgkern._numba.<op>`` (NumPy input) or ``stgkern._cuda.<op>`` (CuPy input)
with the same parameters (see ``docs/ops.md``).
"""
from __future__ import annotations

from . import _dispatch, _validate
from .graph import Graph

SDDMM_OPS = ("dot", "cosine", "add", "sub", "mul")
_SCALAR_OPS = ("dot", "cosine")


def _graph(g) -> Graph:
    return _validate.graph(g)


def _src_features(Y, name, g):
    Y = _validate.float_array(Y, name, ndim=2)
    if Y.shape[0] != g.n_src:
        raise ValueError(f"{name} has {Y.shape[0]} rows but the graph has n_src={g.n_src} source nodes; "
                         f"pass one row per source node")
    return Y


def _same_width(X, Y, xname="X", yname="Y"):
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"{xname} has {X.shape[1]} features but {yname} has {Y.shape[1]}; "
                         f"both need the same width F")


def _grad_like(grad_out, shape, dtype, what):
    grad_out = _validate.float_array(grad_out, "grad_out", ndim=(1, 2))
    if tuple(grad_out.shape) != tuple(shape):
        raise ValueError(f"grad_out has shape {tuple(grad_out.shape)} but {what} has shape {tuple(shape)}; "
                         f"pass the gradient of the forward output")
    _validate.same_dtype(grad_out=grad_out, **{what: _Dt(dtype)})
    return grad_out


class _Dt:
    """Stand-in carrying only a dtype, for ``_validate.same_dtype`` messages."""

    def __init__(self, dtype):
        self.dtype = dtype


# ---------------------------------------------------------------------- SDDMM
def _sddmm_inputs(g, X, Y, op):
    g = _graph(g)
    _validate.choice(op, "op", SDDMM_OPS)
    backend = _dispatch.backend_of(**{"g.indptr": g.indptr, "g.indices": g.indices}, X=X, Y=Y)
    X = _validate.features(X, "X", g.n_nodes)
    Y = _src_features(Y, "Y", g)
    _same_width(X, Y)
    _validate.same_dtype(X=X, Y=Y)
    return g, X, Y, backend


def _sddmm_out_shape(g, X, op):
    return (g.nnz,) if op in _SCALAR_OPS else (g.nnz, X.shape[1])


def sddmm(g, X, Y, op="dot"):
    """Sampled dense-dense product: one score (or feature row) per edge.

    For edge ``k`` (``j -> i``)::

        dot     out[k]    = X[i] . Y[j]
        cosine  out[k]    = X[i] . Y[j] / (|X[i]| |Y[j]|)   (0 if a norm is 0)
        add     out[k, :] = X[i] + Y[j]
        sub     out[k, :] = X[i] - Y[j]
        mul     out[k, :] = X[i] * Y[j]

    Parameters
    ----------
    g : Graph
        CSR by destination, shape (n_nodes, n_src).
    X : array, shape (n_nodes, F)
        Destination-side features (float32 or float64).
    Y : array, shape (n_src, F)
        Source-side features, same dtype and width as ``X``.
    op : {"dot", "cosine", "add", "sub", "mul"}

    Returns
    -------
    out : array, shape (nnz,) for dot/cosine, (nnz, F) otherwise

    Examples
    --------
    >>> import numpy as np
    >>> from stgkern import Graph
    >>> g = Graph(np.array([0, 1, 2]), np.array([1, 0]))
    >>> X = np.array([[1., 2.], [3., 4.]], dtype=np.float32)
    >>> sddmm(g, X, X)
    array([11., 11.], dtype=float32)
    """
    g, X, Y, backend = _sddmm_inputs(g, X, Y, op)
    return _dispatch.kernels("sddmm", backend).forward(g, X, Y, op)


def sddmm_backward(g, grad_out, X, Y, op="dot"):
    """Gradients of :func:`sddmm` with respect to ``X`` and ``Y``.

    ``grad_X[i] = sum_{k in row i} d out[k] / d X[i] * grad_out[k]`` and
    likewise for ``Y`` over the edges leaving each source (pulled over the
    cached transpose).  For cosine, rows with a zero norm get zero gradient
    from the edges they touch.

    Parameters
    ----------
    g : Graph
    grad_out : array, shape (nnz,) for dot/cosine, (nnz, F) otherwise
    X : array, shape (n_nodes, F)
    Y : array, shape (n_src, F)
    op : {"dot", "cosine", "add", "sub", "mul"}

    Returns
    -------
    grad_X : array, shape (n_nodes, F)
    grad_Y : array, shape (n_src, F)

    Examples
    --------
    >>> import numpy as np
    >>> from stgkern import Graph
    >>> g = Graph(np.array([0, 1, 2]), np.array([1, 0]))
    >>> X = np.array([[1., 2.], [3., 4.]])
    >>> gX, gY = sddmm_backward(g, np.ones(2), X, X)
    >>> gX
    array([[3., 4.],
           [1., 2.]])
    """
    g, X, Y, backend = _sddmm_inputs(g, X, Y, op)
    _dispatch.backend_of(X=X, grad_out=grad_out)
    grad_out = _grad_like(grad_out, _sddmm_out_shape(g, X, op), X.dtype, "sddmm output")
    return _dispatch.kernels("sddmm", backend).backward(g, grad_out, X, Y, op)


# --------------------------------------------------------------- edge softmax
def _edge_scores(g, a, name):
    a = _validate.float_array(a, name, ndim=(1, 2))
    if a.shape[0] != g.nnz:
        raise ValueError(f"{name} has length {a.shape[0]} but the graph has {g.nnz} edges; "
                         f"pass one value (or one row of H heads) per edge in CSR edge order")
    return a


def edge_softmax(g, scores):
    """Softmax of edge scores over each destination row.

    ``out[k] = exp(s[k] - max_row) / sum_{k' in row} exp(s[k'] - max_row)``,
    per head when ``scores`` has H columns.  Subtracting the row maximum
    keeps it finite for any finite scores.  Rows without edges produce
    nothing.

    Parameters
    ----------
    g : Graph
    scores : array, shape (nnz,) or (nnz, H), float32 or float64

    Returns
    -------
    out : array, same shape and dtype as ``scores``

    Examples
    --------
    >>> import numpy as np
    >>> from stgkern import Graph
    >>> g = Graph(np.array([0, 2]), np.array([0, 1]), 2)
    >>> edge_softmax(g, np.log(np.array([1., 3.])))
    array([0.25, 0.75])
    """
    g = _graph(g)
    backend = _dispatch.backend_of(**{"g.indptr": g.indptr}, scores=scores)
    scores = _edge_scores(g, scores, "scores")
    return _dispatch.kernels("edge_softmax", backend).forward(g, scores)


def edge_softmax_backward(g, grad_out, out):
    """Gradient of :func:`edge_softmax` with respect to the scores.

    ``grad_s[k] = out[k] * (grad_out[k] - sum_{k' in row} grad_out[k'] * out[k'])``.

    Parameters
    ----------
    g : Graph
    grad_out : array, shape of ``out``
    out : array, shape (nnz,) or (nnz, H): the forward result

    Returns
    -------
    grad_scores : array, shape of ``out``

    Examples
    --------
    >>> import numpy as np
    >>> from stgkern import Graph
    >>> g = Graph(np.array([0, 2]), np.array([0, 1]), 2)
    >>> edge_softmax_backward(g, np.array([1., 0.]), np.array([0.25, 0.75]))
    array([ 0.1875, -0.1875])
    """
    g = _graph(g)
    backend = _dispatch.backend_of(**{"g.indptr": g.indptr}, grad_out=grad_out, out=out)
    out = _edge_scores(g, out, "out")
    grad_out = _grad_like(grad_out, out.shape, out.dtype, "out")
    return _dispatch.kernels("edge_softmax", backend).backward(g, grad_out, out)


# ---------------------------------------------------- common-neighbour fusion
def _cnf_inputs(g, X, edge_weight):
    g = _graph(g)
    backend = _dispatch.backend_of(**{"g.indptr": g.indptr, "g.indices": g.indices},
                                   X=X, edge_weight=edge_weight)
    if g.n_nodes != g.n_src:
        raise ValueError(f"common_neighbor_fusion needs a square graph (sources and destinations are the "
                         f"same nodes), got shape {g.shape}")
    if not g.rows_sorted:
        raise ValueError("common_neighbor_fusion needs sorted rows: each row's source indices must be "
                         "strictly ascending (the rows are intersected by a sorted merge); call "
                         "g = g.sorted() first (attach per-edge arrays such as edge_weight as g.edata "
                         "beforehand so they are permuted along), and merge duplicate edges, e.g. with "
                         "scipy's sum_duplicates()")
    X = _validate.features(X, "X", g.n_nodes)
    edge_weight = _validate.edge_values(edge_weight, "edge_weight", g.nnz, X.dtype, ndim=1)
    return g, X, edge_weight, backend


def common_neighbor_fusion(g, X, edge_weight=None):
    """Per-edge sum of the features of the two end nodes' common in-neighbours.

    For edge ``k`` (``j -> i``)::

        out[k] = sum_{m in N(i) & N(j)} A[i, m] * A[j, m] * X[m]

    where ``N(v)`` is row ``v`` (the in-neighbours of ``v``) and ``A`` the
    edge weight (1 when ``edge_weight`` is None).  The two rows are
    intersected by a sorted merge, so rows must be sorted.

    Parameters
    ----------
    g : Graph
        Square, rows strictly ascending (``g.sorted()``).
    X : array, shape (n_nodes, F), float32 or float64
    edge_weight : array, shape (nnz,), optional
        Cast to ``X``'s dtype.

    Returns
    -------
    out : array, shape (nnz, F)

    Examples
    --------
    >>> import numpy as np
    >>> from stgkern import Graph
    >>> # 0 -> 1, 0 -> 2, 1 -> 2: edge 1 -> 2 has common in-neighbour 0
    >>> g = Graph(np.array([0, 0, 1, 3]), np.array([0, 0, 1]))
    >>> common_neighbor_fusion(g, np.array([[5.], [7.], [9.]]))[:, 0]
    array([0., 0., 5.])
    """
    g, X, edge_weight, backend = _cnf_inputs(g, X, edge_weight)
    return _dispatch.kernels("common_neighbor_fusion", backend).forward(g, X, edge_weight)


def common_neighbor_fusion_backward(g, grad_out, X, edge_weight=None):
    """Gradients of :func:`common_neighbor_fusion`.

    ``grad_X[m] = sum over edges k = (j -> i) with m in N(i) & N(j) of
    A[i, m] A[j, m] grad_out[k]``; ``grad_edge_weight`` of edge (m -> a)
    sums ``A[other, m] (grad_out[k] . X[m])`` over every edge k whose
    fusion uses it, in either role.

    Parameters
    ----------
    g : Graph
    grad_out : array, shape (nnz, F)
    X : array, shape (n_nodes, F)
    edge_weight : array, shape (nnz,), optional

    Returns
    -------
    grad_X : array, shape (n_nodes, F)
    grad_edge_weight : array, shape (nnz,), or None when ``edge_weight`` is None

    Examples
    --------
    >>> import numpy as np
    >>> from stgkern import Graph
    >>> g = Graph(np.array([0, 0, 1, 3]), np.array([0, 0, 1]))
    >>> gX, gw = common_neighbor_fusion_backward(g, np.ones((3, 1)), np.ones((3, 1)))
    >>> gX[:, 0], gw
    (array([1., 0., 0.]), None)
    """
    g, X, edge_weight, backend = _cnf_inputs(g, X, edge_weight)
    _dispatch.backend_of(X=X, grad_out=grad_out)
    grad_out = _grad_like(grad_out, (g.nnz, X.shape[1]), X.dtype, "common_neighbor_fusion output")
    return _dispatch.kernels("common_neighbor_fusion", backend).backward(g, grad_out, X, edge_weight)
