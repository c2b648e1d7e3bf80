"""Graph aggregation: ``spmm`` and fused ``message_passing``, each with backward.

Both pull over the graph's CSR-by-destination rows: one output row per
destination, summed in CSR edge order, so results are deterministic and
bit-identical for any thread count.  ``graph_conv`` lives in ``layer.py``.
"""
import numpy as np

from . import _dispatch, _validate

_REDUCES = ("sum", "mean", "max", "min")
_OPS = ("mul", "add")


def _check(g, X, edge_weight, reduce, name="X"):
    _validate.choice(reduce, "reduce", _REDUCES)
    X = _validate.features(X, name, g.n_src)
    edge_weight = _validate.edge_values(edge_weight, "edge_weight", g.nnz, X.dtype, ndim=1)
    return X, edge_weight


def _graph_backend(g, **arrays):
    """The backend of ``g`` (checked to be a Graph) and ``arrays``."""
    _validate.graph(g)
    return _dispatch.backend_of(indptr=g.indptr, indices=g.indices, **arrays)


def _check_out(out, rows, like, backend, g, **reads):
    """``out=``: a C-contiguous (rows, F) array of ``like``'s width, dtype and backend,
    overlapping none of ``reads`` nor ``g``'s structure (what the kernel reads while it writes out)."""
    reads.update({"g.indices": g.indices, "g.indptr": g.indptr})
    want = (rows, like.shape[1])
    _dispatch.backend_of(X=like, out=out)
    if tuple(out.shape) != want or out.dtype != like.dtype:
        raise ValueError(f"out has shape {tuple(out.shape)} and dtype {out.dtype}; expected {want} {like.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous (the kernel writes whole rows)")
    if backend == _dispatch.CPU and not out.flags.writeable:
        raise ValueError("out is read-only; pass a writeable array (or leave out=None for a new one)")
    xp = _dispatch.array_module(backend)
    for name, a in reads.items():
        if a is None:
            continue
        if xp.shares_memory(out, a) if backend == _dispatch.CPU else _overlap(out, a):
            raise ValueError(f"out overlaps {name}; the kernel reads {name} while it writes out: "
                             f"pass a separate array")
    return out


def _address(a) -> int:
    """Device pointer of a CuPy array (host pointer of anything with the array interface)."""
    ptr = getattr(getattr(a, "data", None), "ptr", None)
    return int(ptr) if ptr is not None else int(a.__array_interface__["data"][0])


def _overlap(a, b) -> bool:
    lo_a, lo_b = _address(a), _address(b)
    return lo_a < lo_b + b.nbytes and lo_b < lo_a + a.nbytes


def spmm(g, X, edge_weight=None, reduce="sum", return_arg=False, out=None):
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
    out : (n_nodes, F) array, optional
        Write the result here (C-contiguous, X's dtype, not overlapping X)
        instead of a new array: training loops that reuse the buffer skip the
        first-touch cost of fresh memory, often a third of the op's time.

    Returns
    -------
    out : (n_nodes, F), or ``(out, arg)`` when ``return_arg``.

    Examples
    --------
    >>> out = spmm(g, X, reduce="mean")  # doctest: +SKIP
    """
    backend = _graph_backend(g, X=X, edge_weight=edge_weight)
    X, edge_weight = _check(g, X, edge_weight, reduce)
    if out is not None:
        out = _check_out(out, g.n_nodes, X, backend, g, X=X, edge_weight=edge_weight)
    out, arg = _dispatch.kernels("spmm", backend).forward(g, X, edge_weight, reduce, out=out)
    return (out, arg) if return_arg else out


def spmm_backward(g, grad_out, X, edge_weight=None, reduce="sum", arg=None, out=None, accumulate=False):
    """Gradients of :func:`spmm`: returns ``(grad_X, grad_edge_weight)``.

    sum: ``grad_X[j] = Σ_{k: indices[k]=j} w[k] grad_out[dst(k)]``,
    ``grad_w[k] = grad_out[dst(k)] · X[indices[k]]``; mean divides by the
    in-degree of dst(k); max/min route the gradient only to the winning edge
    given by ``arg``.  ``grad_edge_weight`` is None when ``edge_weight`` is None.

    ``out`` ((n_src, F), C-contiguous, X's dtype, overlapping neither X nor
    grad_out) receives ``grad_X`` instead of a new array; with
    ``accumulate=True`` ``grad_X`` is added to what ``out`` holds (a layer's
    ``grad_X = self term + spmm_backward(...)`` without a second array).
    """
    backend = _graph_backend(g, grad_out=grad_out, X=X,
                                   edge_weight=edge_weight, arg=arg)
    X, edge_weight = _check(g, X, edge_weight, reduce)
    grad_out = _validate.features(grad_out, "grad_out", g.n_nodes)
    _validate.same_dtype(X=X, grad_out=grad_out)
    if grad_out.shape[1] != X.shape[1]:
        raise ValueError(f"grad_out has shape {tuple(grad_out.shape)} but X has shape {tuple(X.shape)}; "
                         f"grad_out must be (n_nodes, {X.shape[1]})")
    arg = _check_arg(arg, reduce, (g.n_nodes, X.shape[1]), "spmm", g.indptr)
    if accumulate and out is None:
        raise ValueError("accumulate=True adds grad_X to out; pass out=")
    if out is not None:
        out = _check_out(out, g.n_src, X, backend, g, X=X, grad_out=grad_out, edge_weight=edge_weight, arg=arg)
    return _dispatch.kernels("spmm", backend).backward(g, grad_out, X, edge_weight, reduce, arg, out=out,
                                                       accumulate=bool(accumulate))


def _check_mp(g, X, E, op, reduce, name="X"):
    _validate.choice(op, "op", _OPS)
    _validate.choice(reduce, "reduce", _REDUCES)
    X = _validate.features(X, name, g.n_src)
    if E is None:
        raise TypeError("E is None; message_passing needs per-edge values of shape (nnz,), (nnz, 1) or "
                        "(nnz, F) (use spmm for plain or scalar-weighted aggregation)")
    E = _validate.edge_values(E, "E", g.nnz, X.dtype)
    F = X.shape[1]
    if E.ndim == 2 and E.shape[1] not in (1, F):
        raise ValueError(f"E has shape {tuple(E.shape)} but X has {F} feature(s); E must be (nnz,), (nnz, 1) "
                         f"or (nnz, {F}) (one value per edge, or one per edge and feature)")
    return X, E


def _check_arg(arg, reduce, want, producer, indptr):
    """The winners of a max/min forward: int64 of shape ``want``, each an edge id of its own
    row (``-1`` for an empty row), as ``producer(..., return_arg=True)`` returns them."""
    if reduce not in ("max", "min"):
        return None
    if arg is None or tuple(arg.shape) != want:
        raise ValueError(f"reduce={reduce!r} needs arg of shape {want} (from {producer}(..., return_arg=True)), "
                         f"got {None if arg is None else tuple(arg.shape)}")
    if arg.dtype != np.int64:
        raise TypeError(f"arg has dtype {arg.dtype}; expected int64 from {producer}(..., return_arg=True)")
    xp = _validate._xp(arg)
    arg = xp.ascontiguousarray(arg)
    if not arg.size:
        return arg
    if xp is np:
        from ._numba.checks import first_bad_arg_row
        i = int(first_bad_arg_row(arg, np.ascontiguousarray(indptr, np.int64)))
    else:
        lo, hi = indptr[:-1, None], indptr[1:, None]
        ok = ((arg >= lo) & (arg < hi)) | ((arg == -1) & (hi == lo))
        i = -1 if bool(ok.all()) else int(xp.flatnonzero(~ok.all(axis=1))[0])
    if i >= 0:
        raise ValueError(f"arg row {i} holds edge ids outside row {i}'s edges "
                         f"({int(indptr[i])}..{int(indptr[i + 1]) - 1}, or -1 if it has none); "
                         f"pass the arg {producer}(..., return_arg=True) returned for this graph")
    return arg


def message_passing(g, X, E, op="mul", reduce="sum", return_arg=False, out=None):
    """Fused gather-combine-reduce over the graph's in-edges.

    ``out[i, f] = ⊕_{k in row i} X[indices[k], f] ∘ E[k, f]`` with ∘ ∈ mul, add
    and ⊕ ∈ sum, mean (sum / in-degree), max, min; empty rows give 0.  The
    nnz × F messages are never materialised (memory O(n·F + nnz·width(E))).

    Parameters
    ----------
    g : Graph
        CSR by destination; row i lists the in-edges of node i.
    X : (n_src, F) float32/float64
        Source-node features.
    E : (nnz,), (nnz, 1) or (nnz, F)
        Per-edge values in CSR edge order; width 1 broadcasts over features.
        Cast to X's dtype (like ``spmm``'s edge weights), so float64 E with
        float32 X is rounded to float32 first.
    op : {"mul", "add"}
    reduce : {"sum", "mean", "max", "min"}
    return_arg : bool
        Also return ``arg`` ((n_nodes, F) int64 winning CSR edge id, lowest
        on ties, -1 for empty rows) for max/min, else None.
    out : (n_nodes, F) array, optional
        Write the result here (C-contiguous, X's dtype, not overlapping X)
        instead of a new array, as :func:`spmm`'s ``out``.

    Returns
    -------
    out : (n_nodes, F) in X's dtype, or ``(out, arg)`` when ``return_arg``.

    Examples
    --------
    >>> out = message_passing(g, X, E, op="mul", reduce="sum")  # doctest: +SKIP
    >>> out, arg = message_passing(g, X, E, reduce="max", return_arg=True)  # doctest: +SKIP
    """
    backend = _graph_backend(g, X=X, E=E)
    X, E = _check_mp(g, X, E, op, reduce)
    if out is not None:
        out = _check_out(out, g.n_nodes, X, backend, g, X=X, E=E)
    out, arg = _dispatch.kernels("message_passing", backend).forward(g, X, E, op, reduce, out=out)
    return (out, arg) if return_arg else out


def message_passing_backward(g, grad_out, X, E, op="mul", reduce="sum", arg=None):
    """Gradients of :func:`message_passing`: returns ``(grad_X, grad_E)``.

    With ``c[i, f] = grad_out[i, f]`` (``/ deg(i)`` for mean; 0 unless
    ``arg[i, f] == k`` for max/min), for each edge k = (j -> i):
    ``grad_X[j, f] += c[i, f] · (E[k, f] if op == "mul" else 1)`` and
    ``grad_E[k, f] = c[i, f] · (X[j, f] if op == "mul" else 1)``; a width-1
    ``E`` gets ``grad_E[k] = Σ_f grad_E[k, f]``.  ``grad_E`` has E's shape and
    X's dtype.

    Parameters
    ----------
    g, X, E, op, reduce
        As passed to :func:`message_passing`.
    grad_out : (n_nodes, F), X's dtype
        Gradient of the loss with respect to the forward output.
    arg : (n_nodes, F) int64 or None
        From ``message_passing(..., return_arg=True)``; required for max/min.

    Returns
    -------
    grad_X : (n_src, F)
    grad_E : E's shape, X's dtype

    Examples
    --------
    >>> out, arg = message_passing(g, X, E, reduce="max", return_arg=True)  # doctest: +SKIP
    >>> gX, gE = message_passing_backward(g, G, X, E, reduce="max", arg=arg)  # doctest: +SKIP
    """
    backend = _graph_backend(g, grad_out=grad_out, X=X, E=E, arg=arg)
    X, E = _check_mp(g, X, E, op, reduce)
    grad_out = _validate.features(grad_out, "grad_out", g.n_nodes)
    _validate.same_dtype(X=X, grad_out=grad_out)
    if grad_out.shape[1] != X.shape[1]:
        raise ValueError(f"grad_out has shape {tuple(grad_out.shape)} but X has shape {tuple(X.shape)}; "
                         f"grad_out must be (n_nodes, {X.shape[1]})")
    arg = _check_arg(arg, reduce, (g.n_nodes, X.shape[1]), "message_passing", g.indptr)
    return _dispatch.kernels("message_passing", backend).backward(g, grad_out, X, E, op, reduce, arg)
