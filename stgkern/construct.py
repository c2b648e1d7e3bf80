"""Window graphs over user-behaviour event logs.

Nodes are events in (user, time) order, stable for ties.  Event ``i``
receives edges from earlier events of the same user (temporal window, an
optional time horizon) and, optionally, from that user's most recent earlier
events of the same category (category window).  The graph is CSR by
destination; ``edata`` holds per-edge ``dt``, ``hop`` and ``kind``.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _dispatch, _validate
from .graph import Graph, index_dtype_for

#: Segments follow user ids (segment s = user s) while the largest id is below
#: ``DENSE_USER_FACTOR * n_events + DENSE_USER_SLACK``; sparser ids (e.g. hashes
#: near 2**62) get one segment per distinct user present instead.
DENSE_USER_FACTOR = 2
DENSE_USER_SLACK = 1024

KIND_TEMPORAL = 1
KIND_CATEGORY = 2
KIND_SELF = 4


# ----------------------------------------------------------------- inputs
def _columns(log_or_user, time, category):
    """(user, time, category) from a log-like object or plain arrays."""
    if hasattr(log_or_user, "user") and hasattr(log_or_user, "time"):
        if time is not None:
            raise TypeError("pass either an event log or arrays (user, time, category), not both: "
                            "time= was given together with a log object")
        log = log_or_user
        if category is None:
            category = getattr(log, "category", None)
        return log.user, log.time, category
    if time is None:
        raise TypeError("time is required when the first argument is a user array "
                        "(or pass an event log with .user and .time)")
    return log_or_user, time, category


def _check_columns(user, time, category):
    """Metadata checks (dtype, shape, lengths); the data itself is checked by :func:`_scan_columns`."""
    backend = _dispatch.backend_of(user=user, time=time, category=category)
    if backend != _dispatch.CPU:
        raise TypeError("estimate_window_graph runs on the CPU; pass NumPy arrays (cupy.asnumpy(...)); "
                        "window_graph itself accepts CuPy columns")
    for name, a in (("user", user), ("time", time), ("category", category)):
        if a is not None and a.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one value per event), got shape {tuple(a.shape)}")
    user = _validate.integer_ids(user, "user")
    if category is not None:
        category = _validate.integer_ids(category, "category")
    if time.dtype.kind not in "iuf" or time.dtype == np.float16:
        raise TypeError(f"time has dtype {time.dtype}; expected int64 (e.g. seconds) or float64 "
                        f"(cast with time.astype(numpy.int64))")
    n = user.shape[0]
    for name, a in (("time", time), ("category", category)):
        if a is not None and a.shape[0] != n:
            raise ValueError(f"{name} has {a.shape[0]} events but user has {n}; pass one value per event")
    if time.dtype == np.uint64 and n and int(time.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"time values exceed int64 (max {int(time.max())}); shift them to a nearer epoch")
    return _contiguous(user, time, category)


def _contiguous(user, time, category):
    """The columns as C-contiguous int64 / (int64 or float64) / int64; copies only when needed."""
    return (np.ascontiguousarray(user, dtype=np.int64),
            np.ascontiguousarray(time, dtype=np.float64 if time.dtype.kind == "f" else np.int64),
            None if category is None else np.ascontiguousarray(category, dtype=np.int64))


def _scan_columns(user, time, check):
    """One fused pass over user and time (see ``_numba.window_graph.scan``): NaN/inf
    and dt-range checks when ``check``, and the facts the ordering needs.

    Returns ``(umin, umax, first_unsorted, time_sorted)``; ``first_unsorted`` is -1
    when the events are already in (user, time) order, ``time_sorted`` is True when
    time alone never decreases (a log in arrival order)."""
    if user.shape[0] == 0:
        return 0, -1, -1, True
    from ._numba.window_graph import scan
    umin, umax, tmin, tmax, first_unsorted, n_nonfinite, time_sorted = scan(user, time)
    if check:
        if n_nonfinite:
            _validate.finite(time, "time")   # raises with the count and first position
        if time.dtype.kind == "i" and int(tmax) - int(tmin) > np.iinfo(np.int64).max:
            raise ValueError(f"time spans {int(tmax) - int(tmin)} units, more than int64 can hold as "
                             f"a difference (dt); shift the times to a nearer epoch")
    return umin, umax, first_unsorted, time_sorted


def _check_params(time, window, horizon, category_window):
    window = _validate.nonneg_int(window, "window", allow_none=True)
    category_window = _validate.nonneg_int(category_window, "category_window")
    if horizon is not None:
        if isinstance(horizon, (bool, np.bool_)) or not isinstance(horizon, numbers.Real):
            raise TypeError(f"horizon must be a number (in the units of time) or None, got {horizon!r}")
        if not np.isfinite(horizon):
            raise ValueError(f"horizon must be finite (use None for no limit), got {horizon}")
        if horizon < 0:
            raise ValueError(f"horizon must be >= 0, got {horizon}")
        if time.dtype.kind == "i":
            # integer dt <= h  <=>  dt <= floor(h); keep it inside int64
            horizon = int(min(np.floor(horizon), np.iinfo(np.int64).max))
        else:
            horizon = float(horizon)
    return window, horizon, category_window


def _order(user, time, assume_sorted, scanned=None):
    """(perm, seg, seg_user, ts): perm (node -> input row) in (user, time) order, stable
    for ties; ``seg`` the segment pointer (see window_graph), each segment's user id, and
    ``ts = time[perm]`` (``time`` itself, not a copy, when the input is already sorted).

    ``scanned`` is :func:`_scan_columns`'s result when the caller already has it."""
    if user.dtype != np.int64 or time.dtype not in (np.int64, np.float64) or not (
            user.flags.c_contiguous and time.flags.c_contiguous):
        user, time, _ = _contiguous(user, time, None)
    n = user.shape[0]
    umin, umax, p, time_sorted = _scan_columns(user, time, False) if scanned is None else scanned
    if p >= 0 and assume_sorted:
        raise ValueError(f"assume_sorted=True but events are not in (user, time) order: position {p} "
                         f"(user {int(user[p])}, time {time[p]}) comes after (user {int(user[p - 1])}, "
                         f"time {time[p - 1]}); pass assume_sorted=False to sort them")
    from ._numba.window_graph import identity_perm, order_events
    if n and umin >= 0 and umax < DENSE_USER_FACTOR * n + DENSE_USER_SLACK:
        n_ids = umax + 1
        perm, seg, ts = order_events(user, time, 0, n_ids, is_sorted=p < 0, time_sorted=time_sorted)
        return perm, seg, np.arange(n_ids, dtype=np.int64), ts
    if n == 0:
        return (np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64),
                time[:0].copy())
    if p < 0:
        perm, ts = identity_perm(n), time
        us = user
    else:   # a log in arrival order needs only the stable sort by user
        perm = (np.argsort(user, kind="stable") if time_sorted else
                np.lexsort((time, user))).astype(np.int64, copy=False)
        us, ts = user[perm], time[perm]
    starts = np.flatnonzero(us[1:] != us[:-1]) + 1
    seg = np.concatenate(([0], starts, [n])).astype(np.int64)
    return perm, seg, us[seg[:-1]].copy(), ts


def _prepare(log_or_user, time, category, window, horizon, category_window, assume_sorted, check):
    user, time, category = _columns(log_or_user, time, category)
    if check:
        user, time, category = _check_columns(user, time, category)
    else:
        user, time, category = _contiguous(user, np.asarray(time), category)
    scanned = _scan_columns(user, time, check)
    window, horizon, category_window = _check_params(time, window, horizon, category_window)
    if category is None:
        category_window = 0
    perm, seg, seg_user, ts = _order(user, time, assume_sorted, scanned)
    return ts, (category if category_window else None), perm, seg, seg_user, window, horizon, category_window


def _upper_bound(run_ptr, window, category_window, self_loops):
    """Edges if every time gap were inside the horizon: per user of length L,
    sum_q min(q, window) + min(q, category_window) + self, q = 0..L-1."""
    L = np.diff(run_ptr)

    def capped(c):  # sum_{q<L} min(q, c)
        if c is None:
            return L * (L - 1) // 2
        full = np.minimum(L, c + 1)
        return full * (full - 1) // 2 + np.maximum(L - c - 1, 0) * c

    nnz = capped(window).sum()
    if category_window:
        nnz = nnz + capped(category_window).sum()
    if self_loops:
        nnz = nnz + L.sum()
    return int(nnz)


def _nbytes(n, n_seg, nnz, time_itemsize):
    per_edge = index_dtype_for(n).itemsize + time_itemsize + 4 + 1   # indices, dt, hop, kind
    return int(nnz * per_edge + 8 * (n + 1) + 8 * n + 8 * (n_seg + 1))


# ----------------------------------------------------------------- public
def estimate_window_graph(log_or_user, time=None, category=None, *, window=8, horizon=None,
                          strict_time=False, category_window=0, self_loops=False, exact=False,
                          assume_sorted=False, check=True):
    """Size of the graph :func:`window_graph` would build, before building it.

    Parameters
    ----------
    log_or_user, time, category, window, horizon, strict_time, category_window, self_loops,
    assume_sorted, check
        As for :func:`window_graph`.
    exact : bool
        False (default): an upper bound from the user lengths alone (every gap
        inside the horizon, every category window full), O(n_users).
        True: run the counting pass (O(nnz) time, no edge memory).

    Returns
    -------
    dict
        ``nnz`` (edges), ``bytes`` (the graph's arrays: indptr, indices, dt,
        hop, kind, perm, segment_ptr) and ``exact`` (bool).

    Examples
    --------
    >>> import numpy as np
    >>> est = estimate_window_graph(np.array([0, 0, 0]), np.array([1, 2, 3]), window=1, exact=True)
    >>> est["nnz"]
    2
    """
    ts, cs, perm, run_ptr, _, window, horizon, category_window = _prepare(
        log_or_user, time, category, window, horizon, category_window, assume_sorted, check)
    n = ts.shape[0]
    if exact:
        k = _dispatch.kernels("window_graph", _dispatch.CPU)
        prev = None if cs is None else k.category_workspace(run_ptr, cs, perm)
        nnz = int(k.count(run_ptr, ts, prev, window, horizon, strict_time, category_window,
                          self_loops, keep_rows=False)[1].sum())
    else:
        nnz = _upper_bound(run_ptr, window, category_window, self_loops)
    n_seg = run_ptr.shape[0] - 1
    return {"nnz": nnz, "bytes": _nbytes(n, n_seg, nnz, ts.dtype.itemsize), "exact": bool(exact)}


def window_graph(log_or_user, time=None, category=None, *, window=8, horizon=None, strict_time=False,
                 category_window=0, self_loops=False, assume_sorted=False, check=True):
    """Event graph: each event receives edges from its user's recent earlier events.

    Nodes are the events sorted by (user, time), stable for ties
    (``np.lexsort((time, user))``).  With ``pos`` the node index and ``t`` the
    time, node i receives the edge j -> i when j belongs to the same user and

    * temporal (kind bit 1): ``1 <= pos(i) - pos(j) <= window`` and
      ``t(i) - t(j) <= horizon``;
    * category (kind bit 2, needs ``category`` and ``category_window > 0``):
      j is among the ``category_window`` most recent earlier events of the same
      user and category with ``t(i) - t(j) <= horizon`` (however far back);
    * self loop (kind bit 4, ``self_loops=True``): j = i, dt 0, hop 0.

    ``strict_time=True`` drops every pair with ``t(j) == t(i)`` (both kinds;
    the category window then counts only strictly earlier events).
    ``window=None`` / ``horizon=None`` mean no limit.  A pair that qualifies
    both ways is one edge with ``kind == 3``.

    Parameters
    ----------
    log_or_user : event log or int array (n,)
        An object with ``.user``, ``.time`` (and ``.category``), or the user ids.
        Ids are any integers (not used as offsets unless dense, see below).
    time : int64 or float64 array (n,), optional
        Event times (required with a user array); NaN/inf rejected.
    category : int array (n,), optional
        Category ids (taken from the log when a log is given).
    window, horizon, strict_time, category_window, self_loops
        See above.  ``window=0`` gives no temporal edges.
    assume_sorted : bool
        The input is already in (user, time) order: verify (a ValueError names
        the first offending position) instead of sorting.  Sorted input is
        detected either way (one pass that also validates), and then nothing
        is sorted or copied: ``perm`` is the identity.
    check : bool
        Validate the columns (dtype, shape, NaN); only trusted callers pass False.

    Returns
    -------
    Graph
        Square, n nodes, rows sorted by source ascending.  ``edata``:
        ``dt`` (t(i) - t(j), time dtype), ``hop`` (pos(i) - pos(j), int32),
        ``kind`` (uint8 bitmask 1 temporal | 2 category | 4 self).
        ``perm[node]`` = input row (int64).  ``segment_ptr``: when user ids are
        dense (0 <= id < 2 n + 1024) segment s is user s (ids 0..max user;
        users without events give empty segments); otherwise one segment per
        distinct user present, ascending id.  ``g.segment_user`` gives the user
        id of every segment in both cases.

    Raises
    ------
    MemoryError
        When the graph's arrays cannot fit in the available memory (counted
        exactly, without edge memory, before anything is allocated).

    Notes
    -----
    Cost: one parallel pass over (user, time) validates and detects order;
    unsorted input with dense ids is sorted by a parallel stable counting sort
    by user (two-level beyond 2**18 ids) followed by per-user time sorts only
    where a user's times are out of order (none at all when time alone never
    decreases, as in a log in arrival order); sparse ids use ``np.lexsort``
    (a stable argsort by user for a log in arrival order).  A count pass (O(n)
    for temporal edges) sizes the output and leaves each row's sources in
    ``indptr``, a fill pass writes the edges; both run over fixed chunks of
    nodes in parallel.

    Examples
    --------
    >>> import numpy as np
    >>> g = window_graph(np.array([0, 0, 0, 1]), np.array([10, 20, 30, 5]), window=1)
    >>> g.indptr.tolist(), g.indices.tolist(), g.edata["dt"].tolist()
    ([0, 0, 1, 2, 2], [0, 1], [10, 10])
    """
    cols = _columns(log_or_user, time, category)
    if _dispatch.backend_of(user=cols[0], time=cols[1], category=cols[2]) == _dispatch.GPU:
        return _window_graph_gpu(*cols, window, horizon, strict_time, category_window, self_loops,
                                 assume_sorted, check)
    k = _dispatch.kernels("window_graph", _dispatch.CPU)

    ts, cs, perm, seg, seg_user, window, horizon, category_window = _prepare(
        log_or_user, time, category, window, horizon, category_window, assume_sorted, check)
    n = ts.shape[0]
    run_ptr = seg   # empty segments are harmless to the kernels
    longest = int(np.diff(run_ptr).max()) if n else 0
    if longest - 1 > np.iinfo(np.int32).max and (window is None or window > np.iinfo(np.int32).max
                                                 or category_window):
        raise ValueError(f"a user has {longest} events, so hop (int32) could overflow; pass a window "
                         f"below 2**31 and no category window, or split the user")
    what = f"window_graph (n={n} events, window={window}, horizon={horizon}, category_window={category_window})"
    prev = None
    if cs is not None:
        _validate.fits(8 * n, what + " category workspace")
        prev = k.category_workspace(run_ptr, cs, perm)
    # the count pass is O(n) without category edges and needs no edge memory: size exactly.
    # It keeps each row's sources in what becomes indptr (n + 1 int64), so the fill does not recount.
    _validate.fits(8 * (n + 1), what + " indptr")
    counts = k.count(run_ptr, ts, prev, window, horizon, strict_time, category_window, self_loops)
    _validate.fits(_nbytes(n, seg.shape[0] - 1, int(counts[1].sum()), ts.dtype.itemsize), what)
    indptr, indices, dt, hop, kind = k.fill(ts, prev, horizon, strict_time, category_window, self_loops,
                                            counts, index_dtype_for(n))
    g = Graph(indptr, indices, n, edata={"dt": dt, "hop": hop, "kind": kind}, perm=perm,
              segment_ptr=seg, check=False, rows_sorted=True)
    g.segment_user = seg_user
    return g


# ----------------------------------------------------------------- GPU path
def _window_graph_gpu(user, time, category, window, horizon, strict_time, category_window, self_loops,
                      assume_sorted, check):
    """window_graph on CuPy columns: order on the device (two stable sorts), then the
    CUDA count/fill builder (``stgkern._cuda.window_graph.build``).  Same graph as the CPU."""
    import cupy as cp

    for name, a in (("user", user), ("time", time), ("category", category)):
        if a is not None and a.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one value per event), got shape {tuple(a.shape)}")
    n = user.shape[0]
    for name, a in (("time", time), ("category", category)):
        if a is not None and a.shape[0] != n:
            raise ValueError(f"{name} has {a.shape[0]} events but user has {n}; pass one value per event")
    user = _validate.integer_ids(user, "user")
    if category is not None:
        category = _validate.integer_ids(category, "category")
    if time.dtype.kind not in "iuf" or time.dtype == np.float16:
        raise TypeError(f"time has dtype {time.dtype}; expected int64 (e.g. seconds) or float64")
    time = cp.ascontiguousarray(time, dtype=np.float64 if time.dtype.kind == "f" else np.int64)
    user = cp.ascontiguousarray(user, dtype=np.int64)
    if check and time.dtype.kind == "f" and n:
        bad = int((~cp.isfinite(time)).sum())
        if bad:
            first = int(cp.flatnonzero(~cp.isfinite(time))[0])
            raise ValueError(f"time has {bad} NaN/inf value(s), first at position {first}; "
                             f"drop or fill them before building the graph")
    window, horizon, category_window = _check_params(time, window, horizon, category_window)
    if category is None:
        category_window = 0
    if category_window:
        category = cp.ascontiguousarray(category, dtype=np.int64)
    if n == 0:
        perm = cp.zeros(0, dtype=np.int64)
        us, ts = user, time
    else:
        # stable sorts: by time, then by user -> (user, time) order, ties in input order
        perm = cp.argsort(time, kind="stable")
        perm = perm[cp.argsort(user[perm], kind="stable")].astype(np.int64, copy=False)
        us, ts = user[perm], time[perm]
        if assume_sorted:
            moved = cp.flatnonzero(perm != cp.arange(n, dtype=np.int64))
            if moved.size:
                q = int(moved[0])
                raise ValueError(f"assume_sorted=True but events are not in (user, time) order at "
                                 f"position {q}; pass assume_sorted=False to sort them")
    umin = int(us[0]) if n else 0
    umax = int(us[-1]) if n else -1
    if n and umin >= 0 and umax < DENSE_USER_FACTOR * n + DENSE_USER_SLACK:
        seg_user = cp.arange(umax + 1, dtype=np.int64)
        seg = cp.searchsorted(us, cp.arange(umax + 2, dtype=np.int64)).astype(np.int64)
    elif n:
        starts = cp.flatnonzero(us[1:] != us[:-1]) + 1
        seg = cp.concatenate((cp.zeros(1, np.int64), starts.astype(np.int64), cp.full(1, n, np.int64)))
        seg_user = us[seg[:-1]].copy()
    else:
        seg, seg_user = cp.zeros(1, dtype=np.int64), cp.zeros(0, dtype=np.int64)
    cs = category[perm] if category_window else None
    k = _dispatch.kernels("window_graph", _dispatch.GPU)
    indptr, indices, dt, hop, kind = k.build(seg, ts, cs, window, horizon, strict_time, category_window,
                                             self_loops, index_dtype_for(n))
    g = Graph(indptr, indices, n, edata={"dt": dt, "hop": hop, "kind": kind}, perm=perm,
              segment_ptr=seg, check=False, rows_sorted=True)
    g.segment_user = seg_user
    return g
