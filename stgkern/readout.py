"""Readout and scoring: segment reductions and full-catalogue top-k.

``segment_reduce`` turns per-event rows into per-user (or per-session) rows;
``topk`` scores every query against the whole item catalogue in bounded
memory and keeps the k best.
"""
from __future__ import annotations

import numpy as np

from . import _dispatch, _validate, config

_REDUCES = ("sum", "mean", "max", "last")


def _segment_ptr(ptr, n_rows: int, xp):
    if ptr is None:
        raise TypeError("ptr is None: segment offsets are needed (n_seg + 1 values from 0 to the rows of X). "
                        "Graph.segment_ptr is set only for graphs built from an event log (window_graph, "
                        "session_graph); for a graph from from_scipy / from_edge_index pass offsets yourself, "
                        "e.g. numpy.array([0, g.n_nodes]) for one segment")
    if ptr.ndim != 1 or ptr.shape[0] < 1:
        raise ValueError(f"ptr must be a 1-D array of segment offsets with at least one entry "
                         f"(n_seg + 1 values, starting at 0), got shape {tuple(ptr.shape)}")
    if ptr.dtype.kind not in "iu":
        raise TypeError(f"ptr must hold integer offsets, got dtype {ptr.dtype}; "
                        f"cast with ptr.astype(numpy.int64)")
    ptr = xp.ascontiguousarray(ptr, dtype=np.int64)
    first, last = int(ptr[0]), int(ptr[-1])
    if first != 0 or last != n_rows:
        raise ValueError(f"ptr must start at 0 and end at the number of rows of X ({n_rows}); "
                         f"got ptr[0]={first}, ptr[-1]={last}")
    if ptr.shape[0] > 1 and bool((ptr[1:] < ptr[:-1]).any()):
        bad = int(xp.flatnonzero(ptr[1:] < ptr[:-1])[0])
        raise ValueError(f"ptr must be non-decreasing; ptr[{bad + 1}]={int(ptr[bad + 1])} < "
                         f"ptr[{bad}]={int(ptr[bad])}")
    return ptr


def _as_2d(X, name):
    X = _validate.float_array(X, name, ndim=(1, 2))
    return X, X.ndim == 1


def segment_reduce(X, ptr, reduce="sum", return_arg=False):
    r"""Reduce contiguous row ranges of ``X``.

    .. math:: \mathrm{out}[s] = \bigoplus_{r = ptr[s]}^{ptr[s+1]-1} X[r]

    with ⊕ ∈ {sum, mean, max, last}. An empty segment gives 0.

    Parameters
    ----------
    X : ndarray, (n, F) or (n,), float32 or float64
        Rows to reduce, grouped by segment (e.g. events in user order).
    ptr : ndarray, (n_seg + 1,), integer
        Segment offsets: non-decreasing, ``ptr[0] == 0``, ``ptr[-1] == n``
        (e.g. ``Graph.segment_ptr``).
    reduce : {"sum", "mean", "max", "last"}
        ``max`` takes the maximum per feature (ties go to the lowest row);
        ``last`` takes the segment's final row.
    return_arg : bool
        Also return ``arg``: the row each output element came from, shaped
        like ``out`` (int64, -1 for empty segments); ``None`` for sum/mean.

    Returns
    -------
    out : ndarray, (n_seg, F) or (n_seg,), dtype of X
    arg : ndarray or None, only when ``return_arg``

    Examples
    --------
    >>> X = np.array([[1.], [3.], [2.]], dtype=np.float32)
    >>> segment_reduce(X, np.array([0, 2, 2, 3]), "max")
    array([[3.],
           [0.],
           [2.]], dtype=float32)
    """
    backend = _dispatch.backend_of(X=X, ptr=ptr)
    xp = _dispatch.array_module(backend)
    _validate.choice(reduce, "reduce", _REDUCES)
    X, flat = _as_2d(X, "X")
    ptr = _segment_ptr(ptr, X.shape[0], xp)
    X2 = X.reshape(-1, 1) if flat else X
    out, arg = _dispatch.kernels("segment_reduce", backend).forward(X2, ptr, reduce)
    if flat:
        out = out.reshape(-1)
        arg = None if arg is None else arg.reshape(-1)
    return (out, arg) if return_arg else out


def segment_reduce_backward(grad_out, X, ptr, reduce="sum", arg=None):
    r"""Gradient of :func:`segment_reduce` with respect to ``X``.

    sum: ``grad_X[r] = grad_out[s]`` for every row r of segment s; mean: the
    same divided by the segment length; max/last: ``grad_out[s, f]`` goes to
    row ``arg[s, f]`` only (``arg`` from ``segment_reduce(..., return_arg=True)``;
    for ``last`` it may be omitted).

    Parameters
    ----------
    grad_out : ndarray, (n_seg, F) or (n_seg,), dtype of X
    X : ndarray, (n, F) or (n,)
        The forward input (only its shape and dtype are used).
    ptr, reduce : as in :func:`segment_reduce`
    arg : ndarray of int, shaped like grad_out; required for ``max``

    Returns
    -------
    grad_X : ndarray, shaped like X

    Examples
    --------
    >>> X = np.array([1., 3., 2.])
    >>> ptr = np.array([0, 2, 3])
    >>> out, arg = segment_reduce(X, ptr, "max", return_arg=True)
    >>> segment_reduce_backward(np.ones(2), X, ptr, "max", arg)
    array([0., 1., 1.])
    """
    backend = _dispatch.backend_of(grad_out=grad_out, X=X, ptr=ptr, arg=arg)
    xp = _dispatch.array_module(backend)
    _validate.choice(reduce, "reduce", _REDUCES)
    X, flat = _as_2d(X, "X")
    grad_out = _validate.float_array(grad_out, "grad_out", ndim=X.ndim)
    _validate.same_dtype(grad_out=grad_out, X=X)
    ptr = _segment_ptr(ptr, X.shape[0], xp)
    n_seg = ptr.shape[0] - 1
    expect = (n_seg,) + X.shape[1:]
    if grad_out.shape != expect:
        raise ValueError(f"grad_out has shape {tuple(grad_out.shape)} but segment_reduce gives "
                         f"{expect} for X of shape {tuple(X.shape)} and {n_seg} segments")
    X2 = X.reshape(-1, 1) if flat else X
    g2 = grad_out.reshape(-1, 1) if flat else grad_out
    if reduce in ("max", "last"):
        if arg is None:
            if reduce == "max":
                raise ValueError("reduce='max' needs arg: call segment_reduce(..., return_arg=True) "
                                 "and pass the arg it returns")
            last = xp.where(ptr[1:] > ptr[:-1], ptr[1:] - 1, -1)
            arg = xp.broadcast_to(last[:, None], g2.shape)
        else:
            if arg.dtype.kind not in "iu":
                raise TypeError(f"arg must hold integer row indices, got dtype {arg.dtype}")
            if arg.shape != grad_out.shape:
                raise ValueError(f"arg has shape {tuple(arg.shape)}, expected {tuple(grad_out.shape)} "
                                 f"(the arg returned by segment_reduce)")
            arg = arg.reshape(g2.shape)
            lo, hi = ptr[:-1, None], ptr[1:, None]
            ok = ((arg >= lo) & (arg < hi)) | ((arg == -1) & (hi == lo))
            if not bool(ok.all()):
                s = int(xp.flatnonzero(~ok.all(axis=1))[0])
                raise ValueError(f"arg row {s} holds indices outside segment {s} "
                                 f"(rows {int(ptr[s])}..{int(ptr[s + 1]) - 1}, or -1 if empty); "
                                 f"pass the arg returned by segment_reduce for this ptr")
        arg = xp.ascontiguousarray(arg, dtype=np.int64)
    else:
        arg = None
    grad_X = _dispatch.kernels("segment_reduce", backend).backward(g2, X2, ptr, reduce, arg)
    return grad_X.reshape(X.shape)


def _exclude_csr(exclude, m: int, n_items: int, xp):
    """Return ``(indptr, indices)`` int64 with each row sorted, or None."""
    if exclude is None:
        return None
    if isinstance(exclude, tuple):
        if len(exclude) != 2:
            raise ValueError(f"exclude as a tuple must be (indptr, indices), got {len(exclude)} items")
        indptr, indices = exclude
        shape = None
    elif hasattr(exclude, "indptr") and hasattr(exclude, "indices") and hasattr(exclude, "shape"):
        fmt = getattr(exclude, "format", "csr")
        if fmt != "csr":
            raise TypeError(f"exclude must be a CSR matrix, got format {fmt!r}; convert with exclude.tocsr()")
        indptr, indices, shape = exclude.indptr, exclude.indices, tuple(exclude.shape)
    else:
        raise TypeError(f"exclude must be a scipy.sparse CSR matrix, an (indptr, indices) tuple or None, "
                        f"got {type(exclude).__name__}")
    if shape is not None and shape != (m, n_items):
        raise ValueError(f"exclude has shape {shape}, expected (n_queries, n_items) = ({m}, {n_items})")
    indptr = xp.asarray(indptr)
    indices = xp.asarray(indices)
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        raise TypeError(f"exclude indptr/indices must be integer arrays, got {indptr.dtype}/{indices.dtype}")
    if indptr.shape != (m + 1,):
        raise ValueError(f"exclude indptr has shape {tuple(indptr.shape)}, expected ({m + 1},): "
                         f"one row per query row of Q")
    indptr = xp.ascontiguousarray(indptr, dtype=np.int64)
    indices = xp.ascontiguousarray(indices.reshape(-1), dtype=np.int64)
    if int(indptr[0]) != 0 or int(indptr[-1]) != indices.shape[0] or bool((indptr[1:] < indptr[:-1]).any()):
        raise ValueError(f"exclude indptr must start at 0, be non-decreasing and end at "
                         f"len(indices)={indices.shape[0]}")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n_items):
        raise ValueError(f"exclude holds item ids outside [0, {n_items}) "
                         f"(min {int(indices.min())}, max {int(indices.max())})")
    rows = _dispatch.expand_ptr(indptr)
    key = rows * n_items + indices
    if indices.size > 1 and bool((key[1:] < key[:-1]).any()):
        indices = xp.sort(key) - rows * n_items  # rows stay in place; items sort within a row
    return indptr, xp.ascontiguousarray(indices)


def _finite_blocked(a, name, xp):
    """NaN/inf check in row blocks, so validation stays within topk's
    bounded temporary memory (a whole-array isfinite would not)."""
    step = max(1, int(config.topk_block_items))
    for r0 in range(0, a.shape[0], step):
        blk = a[r0:r0 + step]
        if not bool(xp.isfinite(blk).all()):
            bad = int(xp.flatnonzero(~xp.isfinite(blk).all(axis=1))[0]) + r0
            raise ValueError(f"{name} has NaN or infinite values (first in row {bad}); "
                             f"scores would be undefined, fill or drop those rows")


def _queries_and_items(Q, items):
    """Q (m, d) and items (n, d): float, one dtype, one width; returned C-contiguous."""
    Q = _validate.float_array(Q, "Q", ndim=2)
    items = _validate.float_array(items, "items", ndim=2)
    _validate.same_dtype(Q=Q, items=items)
    if Q.shape[1] != items.shape[1]:
        raise ValueError(f"Q has width {Q.shape[1]} but items has width {items.shape[1]}; "
                         f"queries and items must live in the same embedding space")
    return Q, items


def topk(Q, items, k, exclude=None):
    r"""Full-catalogue top-k by dot product, in bounded memory.

    For every query row r the k items c with the largest scores
    ``Q[r] · items[c]``, sorted by score descending and, on equal scores, by
    item index ascending (the order of a stable sort of ``-scores``).

    Items are scored in blocks of ``config.topk_block_items`` by a BLAS
    matmul and merged into a running per-row top-k, so the temporary memory
    is O(m·k + block), never the full (m, n_items) score matrix.

    Parameters
    ----------
    Q : ndarray, (m, d), float32 or float64
        Query vectors (e.g. user representations).
    items : ndarray, (n_items, d), same dtype as Q
        Item embeddings.
    k : int, 1 <= k <= n_items
    exclude : scipy.sparse CSR matrix (m, n_items), ``(indptr, indices)`` or None
        Items barred per query row (e.g. items already seen). Rows with fewer
        than k candidates are padded with index -1 and score -inf.

    Returns
    -------
    indices : ndarray, (m, k), int64
    scores : ndarray, (m, k), dtype of Q

    Notes
    -----
    Q and items must be finite. Dot products that overflow to NaN have no
    defined rank.

    Examples
    --------
    >>> Q = np.array([[1., 0.], [0., 1.]])
    >>> items = np.array([[1., 2.], [3., 0.], [0., 2.]])
    >>> idx, s = topk(Q, items, 2)
    >>> idx
    array([[1, 0],
           [0, 2]])
    >>> s
    array([[3., 1.],
           [2., 2.]])
    """
    backend = _dispatch.backend_of(Q=Q, items=items)
    xp = _dispatch.array_module(backend)
    Q, items = _queries_and_items(Q, items)
    n_items = items.shape[0]
    k = _validate.nonneg_int(k, "k", minimum=1)
    if k > n_items:
        raise ValueError(f"k={k} is larger than the number of items ({n_items}); pass k <= {n_items}")
    _finite_blocked(Q, "Q", xp)
    _finite_blocked(items, "items", xp)
    ex = _exclude_csr(exclude, Q.shape[0], n_items, xp)
    return _dispatch.kernels("topk", backend).topk(Q, items, k, ex)


def _score_ce_inputs(Q, items, target, bias):
    backend = _dispatch.backend_of(Q=Q, items=items, target=target, **({} if bias is None else {"bias": bias}))
    xp = _dispatch.array_module(backend)
    Q, items = _queries_and_items(Q, items)
    n_items = items.shape[0]
    if n_items < 1:
        raise ValueError("items is empty; the softmax needs at least one item")
    if target.ndim != 1 or target.shape[0] != Q.shape[0]:
        raise ValueError(f"target must be 1-D with one item id per row of Q ({Q.shape[0]}), "
                         f"got shape {tuple(target.shape)}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer item ids, got dtype {target.dtype}")
    if target.shape[0]:
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= n_items:
            bad = lo if lo < 0 else hi
            raise ValueError(f"target holds item id {bad} outside [0, {n_items}) "
                             f"(first at row {int(xp.flatnonzero(target == bad)[0])})")
    target = xp.ascontiguousarray(target, dtype=np.int64)
    if bias is not None:
        bias = _validate.float_array(bias, "bias", ndim=1)
        _validate.same_dtype(Q=Q, bias=bias)
        if bias.shape[0] != n_items:
            raise ValueError(f"bias has {bias.shape[0]} entries but items has {n_items} rows; one per item")
        bias = xp.ascontiguousarray(bias)
        _finite_blocked(bias[:, None], "bias", xp)
    _finite_blocked(Q, "Q", xp)
    _finite_blocked(items, "items", xp)
    return backend, Q, items, target, bias


def score_cross_entropy(Q, items, target, bias=None, return_lse=False, return_logits=False):
    r"""Softmax cross-entropy of dot-product scores over the whole catalogue.

    .. math:: \ell_r = \log \sum_c e^{z_{rc}} - z_{r, t_r}, \qquad
              z_{rc} = Q_r \cdot \mathrm{items}_c + \mathrm{bias}_c

    the loss of a full-softmax next-item model (SR-GNN, GCE-GNN, SASRec).
    The (m, n_items) score matrix is never stored: the CPU forms it in item
    blocks of ``config.score_block_items`` that stay in cache; the GPU
    forms it with cuBLAS and reduces it with one warp per row.

    Parameters
    ----------
    Q : ndarray (m, d), float32 or float64
    items : ndarray (n_items, d), same dtype
    target : int ndarray (m,), ids in ``[0, n_items)``
    bias : ndarray (n_items,), optional
    return_lse : bool
        Also return the per-row log-sum-exp (float64), which
        :func:`score_cross_entropy_backward` takes.
    return_logits : bool
        Also return the (m, n_items) product ``Q @ items.T`` (bias not
        added), formed whole instead of block by block.  Handing it to
        :func:`score_cross_entropy_backward` spares that pass one of its
        three products; it costs an (m, n_items) array.

    Returns
    -------
    loss : ndarray (m,), dtype of Q
    lse : ndarray (m,), float64 (with ``return_lse``)
    logits : ndarray (m, n_items), dtype of Q (with ``return_logits``)

    Examples
    --------
    >>> Q = np.array([[0., 0.], [1., 0.]])
    >>> items = np.array([[1., 0.], [0., 1.]])
    >>> loss = score_cross_entropy(Q, items, np.array([0, 0]))
    >>> np.round(loss, 4)          # log 2, then log(1 + e^-1)
    array([0.6931, 0.3133])
    """
    backend, Q, items, target, bias = _score_ce_inputs(Q, items, target, bias)
    loss, lse, logits = _dispatch.kernels("score_cross_entropy", backend).forward(
        Q, items, target, bias, max(1, int(config.score_block_items)), bool(return_logits))
    out = (loss,) + ((lse,) if return_lse else ()) + ((logits,) if return_logits else ())
    return out if len(out) > 1 else loss


def score_cross_entropy_backward(grad_loss, Q, items, target, lse, bias=None, logits=None):
    r"""Gradients of ``Σ_r grad_loss[r] · loss[r]`` of :func:`score_cross_entropy`.

    With :math:`p_{rc}` the softmax of row r:
    ``grad_Q[r] = g_r Σ_c (p_rc - [c = t_r]) items[c]``,
    ``grad_items[c] = Σ_r g_r (p_rc - [c = t_r]) Q[r]`` and
    ``grad_bias[c] = Σ_r g_r (p_rc - [c = t_r])``.  The scores are formed
    again block by block (one more product instead of an (m, n_items) store)
    unless ``logits``, the forward's ``return_logits`` array, is given: it
    is then **overwritten** with the gradient of the scores and the
    products are not formed again.

    Returns
    -------
    grad_Q : (m, d), grad_items : (n_items, d), grad_bias : (n_items,) or None
    """
    backend, Q, items, target, bias = _score_ce_inputs(Q, items, target, bias)
    xp = _dispatch.array_module(backend)
    _dispatch.backend_of(Q=Q, grad_loss=grad_loss, lse=lse)
    m = Q.shape[0]
    for name, a in (("grad_loss", grad_loss), ("lse", lse)):
        if a.ndim != 1 or a.shape[0] != m:
            raise ValueError(f"{name} must be 1-D with one value per row of Q ({m}), got shape {tuple(a.shape)}")
    grad_loss = xp.ascontiguousarray(grad_loss, dtype=Q.dtype)
    lse = xp.ascontiguousarray(lse, dtype=np.float64)
    if logits is not None:
        _dispatch.backend_of(Q=Q, logits=logits)
        want = (m, items.shape[0])
        if tuple(logits.shape) != want or logits.dtype != Q.dtype:
            raise ValueError(f"logits must be the forward's (m, n_items) = {want} array of {Q.dtype}, "
                             f"got shape {tuple(logits.shape)} of {logits.dtype}")
        if not logits.flags.c_contiguous or (backend == "cpu" and not logits.flags.writeable):
            raise ValueError("logits must be C-contiguous and writeable (the backward overwrites it)")
    return _dispatch.kernels("score_cross_entropy", backend).backward(
        grad_loss, Q, items, target, lse, bias, max(1, int(config.score_block_items)), logits)
