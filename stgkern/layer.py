"""Graph convolution layer: ``graph_conv`` and its backward.

``graph_conv`` is a composition, not a kernel of its own: the sparse step
goes through :func:`stgkern.conv.spmm` / :func:`stgkern.conv.spmm_backward`;
the dense products with the small (F_in, F_out) weights and the elementwise
tail (add, bias, activation; activation derivative and bias gradient) go
through the backend's ``graph_conv`` module: ``stgkern._numba.graph_conv``
on the CPU (row-parallel products and one fused elementwise pass, all in
Numba's thread pool), ``stgkern._cuda.graph_conv`` on the GPU (cuBLAS
products and one fused CUDA pass each way).

Why not BLAS on the CPU: mixing OpenBLAS's thread pool with Numba's made the
layer 4-6x slower on the shared 2-core machine (spinning idle workers of one
pool steal the cores from the other), while the products here are small
enough (K = F_in, F = F_out) that Numba's vectorised loops are competitive.

Fusion order (sum/mean): the sparse step runs on whichever side of
``W_neigh`` is narrower, i.e. ``agg(X·W_neigh)`` when ``F_out < F_in`` and
``agg(X)·W_neigh`` otherwise; both are equal because sum/mean aggregation is
linear.  max/min always aggregate first (they do not commute with a matmul).
"""
from __future__ import annotations

from . import _dispatch, _validate, conv

_REDUCES = ("sum", "mean", "max", "min")
_ACTIVATIONS = (None, "relu", "sigmoid", "tanh")


# ----------------------------------------------------------------- validation
def _check(g, X, W_self, W_neigh, bias, edge_weight, reduce, activation):
    _validate.choice(reduce, "reduce", _REDUCES)
    _validate.choice(activation, "activation", _ACTIVATIONS)
    if g.n_src != g.n_nodes:
        raise ValueError(f"graph_conv needs a square graph (n_src == n_nodes), got n_nodes={g.n_nodes}, "
                         f"n_src={g.n_src}; the self term X·W_self pairs node i with row i")
    X = _validate.features(X, "X", g.n_nodes)
    F_in = X.shape[1]
    W_self = _validate.float_array(W_self, "W_self", ndim=2)
    if W_self.shape[0] != F_in:
        raise ValueError(f"W_self is {tuple(W_self.shape)} but X has {F_in} columns; "
                         f"W_self must be (F_in={F_in}, F_out)")
    F_out = W_self.shape[1]
    if W_neigh is None:
        if F_out != F_in:
            raise ValueError(f"W_neigh=None means the identity on the aggregated features, so F_out must equal "
                             f"F_in={F_in}, but W_self is {tuple(W_self.shape)}; pass W_neigh of shape "
                             f"({F_in}, {F_out}) or a square W_self")
    else:
        W_neigh = _validate.float_array(W_neigh, "W_neigh", ndim=2)
        if W_neigh.shape != (F_in, F_out):
            raise ValueError(f"W_neigh is {tuple(W_neigh.shape)} but X has {F_in} columns and W_self is "
                             f"{tuple(W_self.shape)}; W_neigh must be ({F_in}, {F_out})")
    if bias is not None:
        bias = _validate.float_array(bias, "bias", ndim=1)
        if bias.shape[0] != F_out:
            raise ValueError(f"bias has length {bias.shape[0]} but W_self is {tuple(W_self.shape)}; "
                             f"bias must have F_out={F_out} entries")
    _validate.same_dtype(X=X, W_self=W_self, W_neigh=W_neigh, bias=bias)
    edge_weight = _validate.edge_values(edge_weight, "edge_weight", g.nnz, X.dtype, ndim=1)
    return X, W_self, W_neigh, bias, edge_weight


def _transform_first(reduce, W_neigh):
    """Aggregate X·W_neigh (width F_out) instead of X (width F_in)?"""
    return W_neigh is not None and reduce in ("sum", "mean") and W_neigh.shape[1] < W_neigh.shape[0]


# ------------------------------------------------------- elementwise backends
def _elementwise(backend):
    """``matmul``, ``matmul_tn``, ``linear2``, ``fused_forward``, ``fused_backward``, ``epilogue``,
    ``activation_backward`` of the backend."""
    return _dispatch.kernels("graph_conv", backend)


# -------------------------------------------------------------------- forward
def _forward(g, X, W_self, W_neigh, bias, w, reduce, activation, backend):
    """Validated forward; also returns what backward can reuse."""
    saved = {}
    ew = _elementwise(backend)
    if _transform_first(reduce, W_neigh):
        H = ew.matmul(X, W_neigh)
        Z = conv.spmm(g, H, w, reduce)
        saved["H"] = H
    else:
        if W_neigh is not None and reduce in ("sum", "mean"):
            # σ(X·W_self + agg(X)·W_neigh + b) in one pass over row blocks: agg(X) is never stored
            return ew.fused_forward(g, X, W_self, W_neigh, bias, w, reduce == "mean", activation), saved
        agg, arg = conv.spmm(g, X, w, reduce, return_arg=True)
        saved["agg"], saved["arg"] = agg, arg
        if W_neigh is not None:
            # σ(X·W_self + agg·W_neigh + b) in one pass: neither product stored on its own
            return ew.linear2(X, W_self, agg, W_neigh, bias, activation), saved
        Z = agg
    S = ew.matmul(X, W_self)
    out = ew.epilogue(S, Z, bias, activation)
    return out, saved


def graph_conv(g, X, W_self, W_neigh=None, bias=None, edge_weight=None, reduce="sum", activation=None):
    """Graph convolution layer (self term plus aggregated neighbours).

    ``out = σ(X·W_self + agg(X)·W_neigh + b)`` with
    ``agg(X)[i] = ⊕_{k in row i} w[k]·X[indices[k]]`` (:func:`stgkern.spmm`,
    ⊕ ∈ sum, mean, max, min; rows without in-edges aggregate to 0).

    Parameters
    ----------
    g : Graph
        Square (``n_src == n_nodes``), CSR by destination.
    X : (n_nodes, F_in) float32/float64
    W_self : (F_in, F_out), same dtype as X
    W_neigh : (F_in, F_out) or None
        None means the identity (then ``F_out`` must equal ``F_in``).
    bias : (F_out,) or None
    edge_weight : (nnz,) or None
        Per-edge weight in CSR edge order; cast to X's dtype.
    reduce : {"sum", "mean", "max", "min"}
    activation : {None, "relu", "sigmoid", "tanh"}

    Returns
    -------
    out : (n_nodes, F_out), X's dtype, on X's device.

    Notes
    -----
    For sum/mean the sparse step runs at width ``min(F_in, F_out)``
    (``agg(X·W_neigh)`` when ``F_out < F_in``); max/min aggregate X first.

    Examples
    --------
    >>> import numpy as np, stgkern
    >>> from stgkern.layer import graph_conv
    >>> g = stgkern.Graph(np.array([0, 0, 1, 3]), np.array([0, 0, 1]))
    >>> X = np.eye(3, dtype=np.float32)
    >>> graph_conv(g, X, np.eye(3, dtype=np.float32), reduce="sum")
    array([[1., 0., 0.],
           [1., 1., 0.],
           [1., 1., 1.]], dtype=float32)
    """
    backend = conv._graph_backend(g, X=X, W_self=W_self, W_neigh=W_neigh, bias=bias, edge_weight=edge_weight)
    X, W_self, W_neigh, bias, w = _check(g, X, W_self, W_neigh, bias, edge_weight, reduce, activation)
    return _forward(g, X, W_self, W_neigh, bias, w, reduce, activation, backend)[0]


# ------------------------------------------------------------------- backward
def graph_conv_backward(g, grad_out, X, W_self, W_neigh=None, bias=None, edge_weight=None, reduce="sum",
                        activation=None, out=None):
    """Gradients of :func:`graph_conv`.

    With ``G = grad_out ∘ σ'(pre)`` and ``A`` the (weighted, for mean
    degree-normalised) aggregation matrix:

    * ``grad_bias = Σ_i G[i]``
    * ``grad_W_self = Xᵀ·G``
    * ``grad_W_neigh = agg(X)ᵀ·G``  (= ``Xᵀ·(AᵀG)`` for sum/mean)
    * ``grad_X = G·W_selfᵀ + spmm_backward(G·W_neighᵀ)``
    * ``grad_edge_weight[k] = (G·W_neighᵀ)[i]·X[j]`` for edge k (j → i),
      divided by the in-degree of i for mean, restricted to the winning
      features for max/min.

    Parameters
    ----------
    g, X, W_self, W_neigh, bias, edge_weight, reduce, activation
        As given to :func:`graph_conv`.
    grad_out : (n_nodes, F_out), X's dtype
    out : (n_nodes, F_out) or None
        The forward result.  Given, σ' is taken from it and no forward
        recomputation is needed for it (max/min still recompute
        ``agg(X)``; sum/mean with ``W_neigh`` need no ``agg(X)``: they go
        through ``AᵀG``); None, the forward is recomputed when an
        activation needs it.

    Returns
    -------
    (grad_X, grad_W_self, grad_W_neigh, grad_bias, grad_edge_weight)
        Shaped like the inputs, in X's dtype; None for inputs that were None.

    Examples
    --------
    >>> out = graph_conv(g, X, Ws, Wn, b, activation="relu")            # doctest: +SKIP
    >>> gX, gWs, gWn, gb, gw = graph_conv_backward(g, np.ones_like(out), X, Ws, Wn, b,
    ...                                            activation="relu", out=out)  # doctest: +SKIP
    """
    backend = conv._graph_backend(g, grad_out=grad_out, X=X, W_self=W_self, W_neigh=W_neigh, bias=bias,
                       edge_weight=edge_weight, out=out)
    X, W_self, W_neigh, bias, w = _check(g, X, W_self, W_neigh, bias, edge_weight, reduce, activation)
    F_out = W_self.shape[1]
    grad_out = _validate.features(grad_out, "grad_out", g.n_nodes)
    if grad_out.shape[1] != F_out:
        raise ValueError(f"grad_out has shape {tuple(grad_out.shape)} but the layer outputs "
                         f"({g.n_nodes}, {F_out}); pass the gradient of graph_conv's output")
    _validate.same_dtype(X=X, grad_out=grad_out)
    if out is not None:
        out = _validate.features(out, "out", g.n_nodes)
        if out.shape != grad_out.shape:
            raise ValueError(f"out has shape {tuple(out.shape)} but grad_out has shape {tuple(grad_out.shape)}; "
                             f"pass graph_conv's forward result (or out=None to recompute it)")
        _validate.same_dtype(X=X, out=out)

    saved = {}
    if out is None and activation is not None:     # without an activation the output is not needed
        out, saved = _forward(g, X, W_self, W_neigh, bias, w, reduce, activation, backend)
    ew = _elementwise(backend)
    linear = W_neigh is not None and reduce in ("sum", "mean")
    if linear and w is None:
        # the whole backward in one pass over row blocks of the transpose; AᵀG is never stored
        G, grad_bias = (grad_out, None) if activation is None else \
            ew.activation_backward(grad_out, out, activation, bias is not None)
        grad_X, grad_W_self, grad_W_neigh, gb = ew.fused_backward(
            g, G, X, W_self, W_neigh, activation is None and bias is not None, reduce == "mean")
        return grad_X, grad_W_self, grad_W_neigh, (gb if activation is None else grad_bias), None
    if activation is None:
        # G is grad_out itself; the bias gradient is summed inside Xᵀ·G's pass over G
        G = grad_out
        grad_W_self, grad_bias = ew.matmul_tn(X, G, colsum=bias is not None)
    else:
        G, grad_bias = ew.activation_backward(grad_out, out, activation, bias is not None)
        grad_W_self, _ = ew.matmul_tn(X, G)
    grad_W_neigh = None
    if linear:
        # with edge weights: AᵀG once, at width F_out: grad_W_neigh = Xᵀ(AᵀG), grad_X = G·W_selfᵀ +
        # (AᵀG)·W_neighᵀ, grad_edge_weight[k] = G[i]·(X·W_neigh)[j] (spmm_backward with X·W_neigh).
        H = saved["H"] if "H" in saved else ew.matmul(X, W_neigh)
        AtG, grad_w = conv.spmm_backward(g, G, H, w, reduce)
        grad_W_neigh, _ = ew.matmul_tn(X, AtG)
        grad_X = ew.linear2(G, W_self.T, AtG, W_neigh.T)
    else:
        grad_X = ew.matmul(G, W_self.T)
        agg = arg = None
        if W_neigh is not None or reduce in ("max", "min"):
            if "agg" in saved:
                agg, arg = saved["agg"], saved["arg"]
            else:
                agg, arg = conv.spmm(g, X, w, reduce, return_arg=True)
        if W_neigh is None:
            G_agg = G
        else:
            grad_W_neigh, _ = ew.matmul_tn(agg, G)
            # agg (n, F_in) is dead now and G·W_neighᵀ has its shape: reuse the memory
            G_agg = ew.matmul(G, W_neigh.T, out=agg)
        _, grad_w = conv.spmm_backward(g, G_agg, X, w, reduce, arg, out=grad_X, accumulate=True)
    return grad_X, grad_W_self, grad_W_neigh, grad_bias, grad_w
