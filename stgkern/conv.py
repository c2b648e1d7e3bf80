"""SpMM (graph aggregation) with backward.

Only ``spmm``/``spmm_backward`` are implemented so far; ``message_passing``
and ``graph_conv`` are not yet written.
"""
import numpy as np

from . import _dispatch, _validate

_REDUCES = ("sum", "mean", "max", "min")


def _check(g, X, edge_weight, reduce, name="X"):
    _validate.choice(reduce, "reduce", _REDUCES)
    X = _validate.features(X, name, g.n_src)
    edge_weight = _validate.edge_values(edge_weight, "edge_weight", g.nnz, X.dtype, ndim=1)
    return X, edge_weight


def spmm(g, X, edge_weight=None, reduce="sum", return_arg=False):
    """Sparse-dense aggregation over the graph's in-edges.

    ``out[i] = ⊕_{k in row i} w[k] · X[indices[k]]`` with ⊕ ∈ sum, mean
    (sum / in-degree), max, min; empty rows give 0.

    Parameters
    ----------
    g : Graph
    X : (n_src, F) float32/float64
    edge_weight : (nnz,) or None; cast to X's dtype.
    reduce : {"sum", "mean", "max", "min"}
    return_arg : bool
        Also return ``arg`` ((n_nodes, F) int64 winning edge id, -1 for
        empty rows) for max/min, else None.

    Returns
    -------
    out : (n_nodes, F), or ``(out, arg)`` when ``return_arg``.

    Examples
    --------
    >>> out = spmm(g, X, reduce="mean")  # doctest: +SKIP
    """
    backend = _dispatch.backend_of(indptr=g.indptr, indices=g.indices, X=X, edge_weight=edge_weight)
    X, edge_weight = _check(g, X, edge_weight, reduce)
    out, arg = _dispatch.kernels("spmm", backend).forward(g, X, edge_weight, reduce)
    return (out, arg) if return_arg else out


def spmm_backward(g, grad_out, X, edge_weight=None, reduce="sum", arg=None):
    """Gradients of :func:`spmm`: returns ``(grad_X, grad_edge_weight)``.

    sum: ``grad_X[j] = Σ_{k: indices[k]=j} w[k] grad_out[dst(k)]``,
    ``grad_w[k] = grad_out[dst(k)] · X[indices[k]]``; mean divides by the
    in-degree of dst(k); max/min route the gradient only to the winning edge
    given by ``arg``.  ``grad_edge_weight`` is None when ``edge_weight`` is None.
    """
    backend = _dispatch.backend_of(indptr=g.indptr, indices=g.indices, grad_out=grad_out, X=X,
                                   edge_weight=edge_weight, arg=arg)
    X, edge_weight = _check(g, X, edge_weight, reduce)
    grad_out = _validate.features(grad_out, "grad_out", g.n_nodes)
    _validate.same_dtype(X=X, grad_out=grad_out)
    if grad_out.shape[1] != X.shape[1]:
        raise ValueError(f"grad_out has shape {tuple(grad_out.shape)} but X has shape {tuple(X.shape)}; "
                         f"grad_out must be (n_nodes, {X.shape[1]})")
    if reduce in ("max", "min"):
        want = (g.n_nodes, X.shape[1])
        if arg is None or tuple(arg.shape) != want:
            raise ValueError(f"reduce={reduce!r} needs arg of shape {want} (from spmm(..., return_arg=True)), "
                             f"got {None if arg is None else tuple(arg.shape)}")
        if arg.dtype != np.int64:
            raise TypeError(f"arg has dtype {arg.dtype}; expected int64 from spmm(..., return_arg=True)")
        arg = _validate._xp(arg).ascontiguousarray(arg)
    return _dispatch.kernels("spmm", backend).backward(g, grad_out, X, edge_weight, reduce, arg)
