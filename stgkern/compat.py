"""Builders that reproduce published preprocessing bit for bit.

* :func:`session_graph`, :func:`srgnn_layout`, :func:`srgnn_prefixes` --
  SR-GNN (Wu et al., AAAI 2019) session graphs, its padded per-batch layout
  and its prefix augmentation.
* :func:`item_graph` -- GCE-GNN's global item graph (Wang et al., SIGIR 2020).
* :func:`time_intervals` -- TiSASRec's per-user rescaled time interval
  matrices (Li et al., WSDM 2020).
* :func:`sequences` -- an event log to the CSR sequences all of them take.

Sequences are CSR: ``ptr`` (int64, ``n_seq + 1``, from 0 to ``len(items)``)
and ``items`` (integer ids, the sequences concatenated), optionally ``times``
aligned with ``items``.  Every function checks its input here, before any
kernel runs, and dispatches on the array type: NumPy to the Numba kernels,
CuPy to the CUDA kernels (``stgkern._cuda.<op>``), with equal results.
:func:`sequences` reads an :class:`~stgkern.data.EventLog` and runs on the CPU.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _dispatch, _validate
from .graph import Graph

__all__ = ["sequences", "session_graph", "SessionGraph", "srgnn_layout", "srgnn_prefixes",
           "item_graph", "time_intervals"]


# ------------------------------------------------------------------ checks
def _check_ptr(ptr, n_values, *, name="ptr", values="items"):
    xp = _dispatch.array_module(_dispatch.backend_of(**{name: ptr}))
    if ptr.ndim != 1 or ptr.shape[0] < 1:
        raise ValueError(f"{name} must be 1-D with n_seq + 1 >= 1 entries, got shape {tuple(ptr.shape)}; "
                         f"use numpy.array([0]) for no sequences")
    if ptr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array (int64 offsets), got dtype {ptr.dtype}")
    first, last = int(ptr[0]), int(ptr[-1])
    if first != 0 or last != n_values:
        raise ValueError(f"{name} must start at 0 and end at len({values})={n_values}, got {first} ... {last}; "
                         f"ptr[s]:ptr[s+1] is sequence s's slice of {values}")
    if ptr.shape[0] > 1:
        d = xp.diff(ptr.astype(np.int64))
        if bool((d < 0).any()):
            s = int(xp.flatnonzero(d < 0)[0])
            raise ValueError(f"{name} must be non-decreasing, but {name}[{s + 1}]={int(ptr[s + 1])} < "
                             f"{name}[{s}]={int(ptr[s])}; sequence s spans {name}[s]:{name}[s+1]")
    return xp.ascontiguousarray(ptr, dtype=np.int64)


def _check_items(items, *, minimum=0, why=""):
    xp = _dispatch.array_module(_dispatch.backend_of(items=items))
    if items.ndim != 1:
        raise ValueError(f"items must be 1-D (the sequences concatenated), got shape {tuple(items.shape)}")
    if items.dtype.kind not in "iu":
        raise TypeError(f"items must hold integer ids, got dtype {items.dtype}; "
                        f"map item labels to integers first (e.g. pandas.factorize)")
    if items.shape[0]:
        lo = int(items.min())
        if lo < minimum:
            pos = int(xp.flatnonzero(items < minimum)[0])
            raise ValueError(f"items must be >= {minimum}{why}, found {lo} (first at position {pos}); "
                             + ("shift ids by one (items + 1)" if minimum == 1 else "remap the ids"))
    return xp.ascontiguousarray(items, dtype=np.int64)


def _seqs(ptr, items, *, minimum=0, why=""):
    backend = _dispatch.backend_of(ptr=ptr, items=items)
    items = _check_items(items, minimum=minimum, why=why)
    ptr = _check_ptr(ptr, int(items.shape[0]))
    return backend, ptr, items


def _positive(value, name):
    return _validate.nonneg_int(value, name, minimum=1)


# --------------------------------------------------------------- event log
def sequences(log):
    """Group an event log into per-user sequences sorted by time.

    Parameters
    ----------
    log : object with ``user``, ``item``, ``time`` arrays
        Dense integer user ids ``0..n_users-1`` (any order), integer item
        ids, and numeric times (no NaN).

    Returns
    -------
    ptr : int64 array, shape (n_users + 1,)
        User ``u``'s events are ``ptr[u]:ptr[u+1]`` (users without events
        give empty sequences).
    items : int64 array, shape (n_events,)
    times : array, shape (n_events,)
        Sorted by (user, time); equal times keep their input order (stable).

    Examples
    --------
    >>> import numpy as np, types
    >>> log = types.SimpleNamespace(user=np.array([1, 0, 1]), item=np.array([5, 6, 7]),
    ...                             time=np.array([9, 3, 2]))
    >>> ptr, items, times = sequences(log)
    >>> ptr.tolist(), items.tolist(), times.tolist()
    ([0, 1, 3], [6, 7, 5], [3, 2, 9])
    """
    user = _validate.integer_ids(np.asarray(log.user), "log.user")
    item = _validate.integer_ids(np.asarray(log.item), "log.item")
    time = np.asarray(log.time)
    if not (user.ndim == item.ndim == time.ndim == 1) or not (user.shape == item.shape == time.shape):
        raise ValueError(f"log.user, log.item and log.time must be 1-D of one length, got shapes "
                         f"{user.shape}, {item.shape}, {time.shape}")
    if time.dtype.kind not in "iuf":
        raise TypeError(f"log.time must be numeric, got dtype {time.dtype}; convert datetimes with "
                        f".astype('datetime64[s]').astype('int64')")
    _validate.finite(time, "log.time")
    if user.size and int(user.min()) < 0:
        raise ValueError(f"log.user must be dense ids >= 0, found {int(user.min())}; factorize the users first")
    n_users = int(user.max()) + 1 if user.size else 0
    # ptr has one entry per user id up to the largest: refuse a sparse id space before allocating
    _validate.fits(8 * (n_users + 1), f"sequences' ptr for user ids up to {n_users - 1} "
                   f"(renumber users densely, e.g. np.unique(log.user, return_inverse=True)[1])")
    order = np.lexsort((time, user))  # stable: ties keep input order
    ptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(user, minlength=n_users), out=ptr[1:])
    return ptr, item[order].astype(np.int64, copy=False), time[order]


# ------------------------------------------------------------------ SR-GNN
class SessionGraph(NamedTuple):
    """Result of :func:`session_graph` (unpacks as ``g, node_item, alias``)."""
    graph: Graph
    node_item: np.ndarray
    alias: np.ndarray


def session_graph(ptr, items, *, dtype=np.float32):
    r"""SR-GNN session graphs of a batch, as one block-diagonal ``Graph``.

    Per session, the nodes are its distinct items in ascending item order;
    every consecutive pair ``s[p] -> s[p+1]`` gives one binary edge (repeats
    collapse, ``a, a`` gives a self-loop).  With ``indeg``/``outdeg`` counted
    over distinct edges, SR-GNN's normalised matrices are

    .. math:: A_\mathrm{in}[v, u] = 1/\mathrm{indeg}(v), \qquad
              A_\mathrm{out}[u, v] = 1/\mathrm{outdeg}(u)

    for every edge ``u -> v``.

    Parameters
    ----------
    ptr : int array, shape (n_seq + 1,)
    items : int array, shape (n_pos,)
        Item ids >= 0 (any ids; SR-GNN's 0-padding does not arise here).
    dtype : float32 or float64
        Dtype of the edge weights (computed in float64, rounded once).

    Returns
    -------
    graph : Graph
        CSR by destination over ``n_nodes = sum of distinct items per
        session``; session ``s`` owns nodes
        ``graph.segment_ptr[s]:graph.segment_ptr[s+1]``.  Row ``v`` lists the
        sources ``u`` (ascending) of edges ``u -> v``.  ``edata['w_in'][k]``
        is ``1/indeg(v)`` for edge ``k = u -> v``, so
        ``spmm(graph, H, edata['w_in'])`` is ``A_in @ H``.
        ``edata['w_out'][k]`` is ``1/outdeg(u)``; pulled over the transpose,
        ``t = graph.transpose(); spmm(t, H, graph.edata['w_out'][t.edata['eid']])``
        is ``A_out @ H``.
    node_item : int64 array, shape (n_nodes,)
        Item id of every node.
    alias : int64 array, shape (n_pos,)
        Global node of every position (``H[alias]`` gives per-position
        states); SR-GNN's session-local alias is
        ``alias - graph.segment_ptr[session of position]``.

    Examples
    --------
    >>> import numpy as np
    >>> g, node_item, alias = session_graph(np.array([0, 4]), np.array([5, 3, 5, 4]))
    >>> node_item.tolist(), alias.tolist()
    ([3, 4, 5], [2, 0, 2, 1])
    >>> g.indptr.tolist(), g.indices.tolist(), g.edata['w_in'].tolist()
    ([0, 1, 2, 3], [2, 2, 0], [1.0, 1.0, 1.0])
    >>> g.edata['w_out'].tolist()
    [0.5, 0.5, 1.0]
    """
    backend, ptr, items = _seqs(ptr, items)
    dtype = np.dtype(dtype)
    if dtype not in _validate.FLOAT_DTYPES:
        raise TypeError(f"dtype={dtype} is not supported; choose numpy.float32 or numpy.float64")
    k = _dispatch.kernels("session_graph", backend)
    indptr, indices, w_in, w_out, node_ptr, node_item, alias = k.session_graph(ptr, items, dtype)
    g = Graph(indptr, indices, check=False, rows_sorted=True, segment_ptr=node_ptr,
              edata={"w_in": w_in, "w_out": w_out})
    return SessionGraph(g, node_item, alias)


def srgnn_layout(ptr, items, max_len=None):
    """SR-GNN's padded per-batch arrays, exactly as its ``Data.get_slice``.

    Each session is right-padded with 0 to ``max_len`` positions (item ids
    must be >= 1: SR-GNN reserves 0 for padding).  As in the published code,
    the nodes of a session are ``np.unique`` of the *padded* row, so 0 is a
    node (sorting first) whenever the session is shorter than ``max_len``;
    ``M`` is the largest node count in the batch.

    Parameters
    ----------
    ptr : int array, shape (n_seq + 1,)
    items : int array, shape (n_pos,), ids >= 1
    max_len : int, optional
        Padded length; default the batch's longest session.  The published
        ``data_masks`` pads to the longest session of the whole data set:
        pass that length to reproduce it exactly.

    Returns
    -------
    alias_inputs : int64 array, shape (n_seq, max_len)
        Node index (within the session) of every padded position.
    A : float64 array, shape (n_seq, M, 2 M)
        ``[A_in | A_out]`` with ``A_in[v, u] = 1/indeg(v)`` and
        ``A_out[u, v] = 1/outdeg(u)`` for every distinct edge ``u -> v``
        (SR-GNN's ``concatenate([u_A_in, u_A_out]).T``).
    items : int64 array, shape (n_seq, M)
        Node item ids, padded with 0.
    mask : int64 array, shape (n_seq, max_len)
        1 on real positions, 0 on padding.

    Examples
    --------
    >>> import numpy as np
    >>> alias, A, node, mask = srgnn_layout(np.array([0, 3, 4]), np.array([7, 2, 7, 9]))
    >>> alias.tolist(), node.tolist(), mask.tolist()
    ([[1, 0, 1], [1, 0, 0]], [[2, 7], [0, 9]], [[1, 1, 1], [1, 0, 0]])
    >>> A[0].tolist()
    [[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]]
    """
    backend, ptr, items = _seqs(ptr, items, minimum=1, why=" (SR-GNN reserves item 0 for padding)")
    longest = int((ptr[1:] - ptr[:-1]).max()) if ptr.shape[0] > 1 else 0
    if max_len is None:
        max_len = longest
    max_len = _validate.nonneg_int(max_len, "max_len")
    if max_len < longest:
        raise ValueError(f"max_len={max_len} is shorter than the longest session ({longest} items); "
                         f"SR-GNN never truncates: pass max_len >= {longest} or None")
    k = _dispatch.kernels("session_graph", backend)
    n_seq = int(ptr.shape[0]) - 1
    M = k.srgnn_layout_size(ptr, items, max_len)
    _validate.fits(n_seq * (2 * M * M * 8 + M * 8 + max_len * 16), "srgnn_layout")
    return k.srgnn_layout(ptr, items, max_len, M)


def srgnn_prefixes(ptr, items):
    """SR-GNN's data augmentation: every proper prefix with its next item.

    For each sequence ``s`` of length ``L``, in sequence order, the examples
    are ``s[:-i]`` with target ``s[-i]`` for ``i = 1 .. L-1``: longest prefix
    first, targets ``s[-1], s[-2], ...`` -- the order of the published
    ``preprocess.py`` (``process_seqs``).  Sequences shorter than 2 give no
    example.

    Returns
    -------
    out_ptr : int64 array, shape (n_ex + 1,)
    out_items : int64 array
        The prefixes, CSR like the input.
    targets : int64 array, shape (n_ex,)
    seq_id : int64 array, shape (n_ex,)
        Input sequence of every example.

    Examples
    --------
    >>> import numpy as np
    >>> p, it, tg, sid = srgnn_prefixes(np.array([0, 3]), np.array([4, 5, 6]))
    >>> p.tolist(), it.tolist(), tg.tolist(), sid.tolist()
    ([0, 2, 3], [4, 5, 4], [6, 5], [0, 0])
    """
    backend, ptr, items = _seqs(ptr, items)
    lens = ptr[1:] - ptr[:-1]
    n_items = int((lens * (lens - 1) // 2).sum()) if lens.shape[0] else 0
    _validate.fits(n_items * 8 + int(lens.sum()) * 24, "srgnn_prefixes")
    return _dispatch.kernels("session_graph", backend).srgnn_prefixes(ptr, items)


# ----------------------------------------------------------------- GCE-GNN
def item_graph(ptr, items, n_items=None, epsilon=3, top=12):
    """GCE-GNN's global item graph, exactly as its ``build_graph.py``.

    For every sequence, every ``k = 1..epsilon`` and every position ``j``
    with ``j + k < L``, the pairs ``(s[j], s[j+k])`` and ``(s[j+k], s[j])``
    are counted.  Each item keeps its ``top`` neighbours by count; ties go
    to the neighbour whose pair appeared first in that visiting order
    (sequence, then k, then j, forward pair before backward pair) -- what
    the script's stable sort of an insertion-ordered dict gives.

    Parameters
    ----------
    ptr : int array, shape (n_seq + 1,)
    items : int array, shape (n_pos,), ids in ``[0, n_items)``
    n_items : int, optional
        Number of rows (the script's ``num``); default ``max(items) + 1``.
    epsilon : int >= 1
        Window (the script hard-codes 3).
    top : int >= 1
        Neighbours kept per item (the script's ``sample_num``, 12).

    Returns
    -------
    Graph
        ``n_items`` rows.  Row ``a`` lists ``a``'s kept neighbours **in rank
        order** (count descending, then first appearance), not by index:
        ``indices[indptr[a]:indptr[a+1]]`` is the script's ``adj[a]`` and
        ``edata['count']`` (int64) its ``weight[a]``.  As a by-destination
        graph, row ``a`` pulls from its neighbours, as GCE-GNN's global
        aggregation does.  ``g.sorted()`` gives index-ordered rows (counts
        permuted along).  The effect of the ``top`` cap is counted in
        ``g.n_neighbors`` (int64, per item: distinct neighbours before the
        cap).

    Examples
    --------
    >>> import numpy as np
    >>> g = item_graph(np.array([0, 3]), np.array([1, 2, 1]), epsilon=2, top=1)
    >>> g.indptr.tolist(), g.indices.tolist(), g.edata['count'].tolist()
    ([0, 0, 1, 2], [2, 1], [2, 2])
    >>> g.n_neighbors.tolist()    # item 1 also had itself (count 2, later)
    [0, 2, 1]
    """
    backend, ptr, items = _seqs(ptr, items)
    epsilon = _positive(epsilon, "epsilon")
    top = _positive(top, "top")
    hi = int(items.max()) + 1 if items.shape[0] else 0
    if n_items is None:
        n_items = hi
    n_items = _validate.nonneg_int(n_items, "n_items")
    if hi > n_items:
        raise ValueError(f"items holds id {hi - 1} but n_items={n_items}; pass n_items >= {hi} (or None)")
    k = _dispatch.kernels("item_graph", backend)
    _validate.fits(k.workspace_bytes(ptr, n_items, epsilon), "item_graph")
    indptr, indices, counts, n_distinct = k.item_graph(ptr, items, n_items, epsilon, top)
    g = Graph(indptr, indices, n_items, check=False, edata={"count": counts})
    g.n_neighbors = n_distinct
    return g


# ---------------------------------------------------------------- TiSASRec
def time_intervals(ptr, times, maxlen=50, span=256, *, drop_last=0):
    """TiSASRec's per-user time interval matrices, exactly as its ``util.py``.

    Per sequence (user), times are rescaled as in ``cleanAndsort``:
    ``r = round((t - t_min) / s) + 1`` with ``s`` the smallest non-zero gap
    between consecutive events (1 if none) and ``round`` half-to-even.
    Then, as in ``Relation``, the last ``maxlen`` rescaled times are
    left-padded with 0 into ``seq`` and

    .. math:: M[i, j] = \\min(|seq_i - seq_j|, \\mathrm{span})

    over the padded row (padding included, as published).

    Parameters
    ----------
    ptr : int array, shape (n_seq + 1,)
    times : int or float array, shape (n_pos,)
        Time-sorted within each sequence (see :func:`sequences`), no NaN.
        The published pipeline first maps timestamps to
        ``int(round(t - global_min))``; for integer timestamps that offset
        cancels, so raw integer timestamps give the same result.
    maxlen, span : int >= 1
    drop_last : int or int array of shape (n_seq,), keyword-only
        Events removed from the end of each sequence *after* rescaling (the
        published code rescales the full history but builds matrices from
        ``user_train[u][:-1]``; with its leave-two-out split that is
        ``drop_last = np.where(lens >= 3, 3, 1)``).

    Returns
    -------
    mats : int32 array, shape (n_seq, maxlen, maxlen)
    seq : int32 array, shape (n_seq, maxlen)
        The padded rescaled times.

    Examples
    --------
    >>> import numpy as np
    >>> m, seq = time_intervals(np.array([0, 3]), np.array([10, 14, 20]), maxlen=4, span=2)
    >>> seq.tolist()    # gaps 4, 6: scale 4; 10/4 = 2.5 rounds to 2 (half to even)
    [[0, 1, 2, 3]]
    >>> m[0].tolist()
    [[0, 1, 2, 2], [1, 0, 1, 2], [2, 1, 0, 1], [2, 2, 1, 0]]
    """
    arrays = {"ptr": ptr, "times": times}
    if isinstance(drop_last, np.ndarray) or _dispatch._is_cupy(drop_last):
        arrays["drop_last"] = drop_last  # a NumPy drop_last with CuPy times is mixed input
    backend = _dispatch.backend_of(**arrays)
    xp = _dispatch.array_module(backend)
    if times.ndim != 1:
        raise ValueError(f"times must be 1-D (aligned with items), got shape {tuple(times.shape)}")
    if times.dtype.kind not in "iuf":
        raise TypeError(f"times must be numeric, got dtype {times.dtype}; convert datetimes with "
                        f".astype('datetime64[s]').astype('int64')")
    ptr = _check_ptr(ptr, int(times.shape[0]), values="times")
    _validate.finite(times, "times")
    maxlen = _positive(maxlen, "maxlen")
    span = _positive(span, "span")
    times = xp.ascontiguousarray(times, dtype=np.float64 if times.dtype.kind == "f" else np.int64)
    n_seq = int(ptr.shape[0]) - 1
    if times.shape[0] > 1:
        dec = times[1:] < times[:-1]
        # a decrease across a sequence boundary is fine
        starts = ptr[1:-1]
        starts = starts[(starts > 0) & (starts < times.shape[0])]
        dec[starts - 1] = False
        if bool(dec.any()):
            p = int(xp.flatnonzero(dec)[0])
            raise ValueError(f"times must be sorted within each sequence; times[{p + 1}]={times[p + 1]} < "
                             f"times[{p}]={times[p]}; build the sequences with stgkern.compat.sequences")
    lens = ptr[1:] - ptr[:-1]
    if np.ndim(drop_last) == 0:
        drop_last = _validate.nonneg_int(drop_last, "drop_last")
        drop = xp.full(n_seq, drop_last, dtype=np.int64)
    else:
        drop = xp.asarray(drop_last)
        if drop.shape != (n_seq,) or drop.dtype.kind not in "iu":
            raise ValueError(f"drop_last must be an int or an integer array of shape ({n_seq},), "
                             f"got {drop.dtype} of shape {tuple(drop.shape)}")
        if n_seq and int(drop.min()) < 0:
            raise ValueError(f"drop_last must be >= 0, found {int(drop.min())}")
        drop = xp.ascontiguousarray(drop, dtype=np.int64)
    drop = xp.minimum(drop, lens)
    _validate.fits(n_seq * maxlen * (maxlen + 1) * 4 + int(times.shape[0]) * 8, "time_intervals")
    k = _dispatch.kernels("time_intervals", backend)
    resc = k.rescale(ptr, times)
    if resc.shape[0] and float(resc.max()) > np.iinfo(np.int32).max:
        p = int(xp.argmax(resc))
        raise ValueError(f"rescaled time {float(resc[p]):.0f} at position {p} does not fit TiSASRec's int32 "
                         f"time sequence; the user's span is too long for its smallest gap (coarsen the times)")
    return k.time_intervals(ptr, resc, drop, maxlen, span)
