"""Window graphs over (user, time)-sorted events: count pass, then fill pass.

Backends assume validated input: ``t`` is the time column already in node
order, ``run_ptr`` (int64) gives the node range of every distinct user
present, ``cat`` (int64, node order) is given only when category edges are
asked for.  Rows are processed in fixed chunks of nodes (not per user) so a
power-law user does not leave the other thread idle; every row is written by
exactly one iteration, so results do not depend on the thread count.
"""
import numba as nb
import numpy as np

from .. import config

#: Nodes per parallel chunk of the count and fill passes.
CHUNK_ROWS = 16384


@nb.njit(cache=True)
def _run_of(run_ptr, i):
    """Index r of the run holding node i: run_ptr[r] <= i < run_ptr[r+1]."""
    lo = 0
    hi = run_ptr.shape[0] - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if run_ptr[mid] <= i:
            lo = mid
        else:
            hi = mid
    return lo


@nb.njit(cache=True, inline="always")
def _temporal_range(t, a, i, window, has_window, horizon, has_horizon, strict):
    """Temporal sources of row i form the contiguous range [lo, hi] (empty if lo > hi)."""
    ti = t[i]
    hi = i - 1
    if strict:
        while hi >= a and t[hi] == ti:
            hi -= 1
    lo = a
    if has_window:
        if i - window > lo:
            lo = i - window
    if has_horizon:
        # times ascend within a user, so dt grows as j falls: scan down from hi
        j = hi
        while j >= lo and ti - t[j] <= horizon:
            j -= 1
        lo = j + 1
    return lo, hi


@nb.njit(cache=True, parallel=True)
def _category_order(run_ptr, cat, corder, crank):
    """Per user: its nodes sorted by (category, position) -> ``corder``; ``crank[i]``
    is node i's place in that order (global offset)."""
    n_runs = run_ptr.shape[0] - 1
    for r in nb.prange(n_runs):
        a = run_ptr[r]
        b = run_ptr[r + 1]
        loc = np.argsort(cat[a:b], kind="mergesort")  # stable: position order inside a category
        for q in range(b - a):
            corder[a + q] = a + loc[q]
            crank[a + loc[q]] = a + q


@nb.njit(cache=True, inline="always")
def _row(i, a, t, cat, corder, crank, window, has_window, horizon, has_horizon, strict,
         cat_window, self_loops, base, indices, dt, hop, kind, fill):
    """Count (fill=False) or write (fill=True) row i; returns its edge count."""
    lo, hi = _temporal_range(t, a, i, window, has_window, horizon, has_horizon, strict)
    n_tmp = hi - lo + 1
    if n_tmp < 0:
        n_tmp = 0
    ti = t[i]
    n_extra = 0
    if cat_window > 0:
        # walk earlier same-category events, most recent first
        r = crank[i]
        ci = cat[i]
        taken = 0
        q = r - 1
        while q >= a and taken < cat_window:
            j = corder[q]
            if cat[j] != ci:
                break
            q -= 1
            if strict and t[j] == ti:
                continue
            if has_horizon and ti - t[j] > horizon:
                break
            taken += 1
            if j < lo:
                n_extra += 1
    total = n_extra + n_tmp + (1 if self_loops else 0)
    if not fill:
        return total
    # layout: [category-only sources ascending][temporal lo..hi][self]
    off = base + n_extra
    for j in range(lo, hi + 1):
        indices[off] = j
        dt[off] = ti - t[j]
        hop[off] = i - j
        kind[off] = 1
        off += 1
    if cat_window > 0:
        r = crank[i]
        ci = cat[i]
        taken = 0
        q = r - 1
        back = base + n_extra - 1
        while q >= a and taken < cat_window:
            j = corder[q]
            if cat[j] != ci:
                break
            q -= 1
            if strict and t[j] == ti:
                continue
            if has_horizon and ti - t[j] > horizon:
                break
            taken += 1
            if j < lo:
                indices[back] = j
                dt[back] = ti - t[j]
                hop[back] = i - j
                kind[back] = 2
                back -= 1
            else:
                kind[base + n_extra + (j - lo)] |= 2
    if self_loops:
        indices[off] = i
        dt[off] = 0
        hop[off] = 0
        kind[off] = 4
    return total


@nb.njit(cache=True, parallel=True)
def _pass(run_ptr, t, cat, corder, crank, window, has_window, horizon, has_horizon, strict,
          cat_window, self_loops, indptr, indices, dt, hop, kind, fill, chunk, parallel):
    """Count pass writes row counts to indptr[1:]; fill pass writes the edges."""
    n = t.shape[0]
    n_chunks = (n + chunk - 1) // chunk
    if parallel:
        for c in nb.prange(n_chunks):
            _chunk(c, run_ptr, t, cat, corder, crank, window, has_window, horizon, has_horizon, strict,
                   cat_window, self_loops, indptr, indices, dt, hop, kind, fill, chunk)
    else:
        for c in range(n_chunks):
            _chunk(c, run_ptr, t, cat, corder, crank, window, has_window, horizon, has_horizon, strict,
                   cat_window, self_loops, indptr, indices, dt, hop, kind, fill, chunk)


@nb.njit(cache=True, inline="always")
def _chunk(c, run_ptr, t, cat, corder, crank, window, has_window, horizon, has_horizon, strict,
           cat_window, self_loops, indptr, indices, dt, hop, kind, fill, chunk):
    n = t.shape[0]
    i0 = np.int64(c) * chunk
    i1 = min(n, i0 + chunk)
    r = _run_of(run_ptr, i0)
    for i in range(i0, i1):
        while run_ptr[r + 1] <= i:
            r += 1
        a = run_ptr[r]
        if fill:
            _row(i, a, t, cat, corder, crank, window, has_window, horizon, has_horizon, strict,
                 cat_window, self_loops, indptr[i], indices, dt, hop, kind, True)
        else:
            indptr[i + 1] = _row(i, a, t, cat, corder, crank, window, has_window, horizon, has_horizon,
                                 strict, cat_window, self_loops, 0, indices, dt, hop, kind, False)


@nb.njit(cache=True)
def _cumsum_inplace(indptr):
    acc = np.int64(0)
    for i in range(1, indptr.shape[0]):
        acc += indptr[i]
        indptr[i] = acc


def _args(t, window, horizon):
    has_window = window is not None
    has_horizon = horizon is not None
    w = np.int64(window if has_window else 0)
    h = t.dtype.type(horizon if has_horizon else 0)
    return w, has_window, h, has_horizon


def category_workspace(run_ptr, cat):
    n = cat.shape[0]
    corder = np.empty(n, dtype=np.int64)
    crank = np.empty(n, dtype=np.int64)
    if n:
        _category_order(run_ptr, cat, corder, crank)
    return corder, crank


def count(run_ptr, t, cat, corder, crank, window, horizon, strict, cat_window, self_loops):
    """indptr (int64, n+1) of the window graph; ``cat``/``corder``/``crank`` None without category edges."""
    n = t.shape[0]
    indptr = np.zeros(n + 1, dtype=np.int64)
    if n == 0:
        return indptr
    w, hw, h, hh = _args(t, window, horizon)
    cat, corder, crank = _ws(cat, corder, crank)
    e_i = np.empty(0, np.int32)
    _pass(run_ptr, t, cat, corder, crank, w, hw, h, hh, bool(strict), np.int64(cat_window), bool(self_loops),
          indptr, e_i, t[:0], e_i, np.empty(0, np.uint8), False, np.int64(CHUNK_ROWS),
          n >= config.cpu_serial_rows)
    _cumsum_inplace(indptr)
    return indptr


def fill(run_ptr, t, cat, corder, crank, window, horizon, strict, cat_window, self_loops, indptr, index_dtype):
    """Edges of the window graph for a given ``indptr``: (indices, dt, hop, kind)."""
    n = t.shape[0]
    nnz = int(indptr[-1])
    indices = np.empty(nnz, dtype=index_dtype)
    dt = np.empty(nnz, dtype=t.dtype)
    hop = np.empty(nnz, dtype=np.int32)
    kind = np.empty(nnz, dtype=np.uint8)
    if nnz:
        w, hw, h, hh = _args(t, window, horizon)
        cat, corder, crank = _ws(cat, corder, crank)
        _pass(run_ptr, t, cat, corder, crank, w, hw, h, hh, bool(strict), np.int64(cat_window),
              bool(self_loops), indptr, indices, dt, hop, kind, True, np.int64(CHUNK_ROWS),
              n >= config.cpu_serial_rows)
    return indices, dt, hop, kind


def _ws(cat, corder, crank):
    if cat is None:
        z = np.empty(0, np.int64)
        return z, z, z
    return cat, corder, crank


def window_graph(run_ptr, t, cat, window, horizon, strict, cat_window, self_loops, index_dtype):
    """Both passes: (indptr, indices, dt, hop, kind)."""
    corder = crank = None
    if cat is not None and cat_window > 0:
        corder, crank = category_workspace(run_ptr, cat)
    else:
        cat = None
        cat_window = 0
    indptr = count(run_ptr, t, cat, corder, crank, window, horizon, strict, cat_window, self_loops)
    return (indptr, *fill(run_ptr, t, cat, corder, crank, window, horizon, strict, cat_window,
                          self_loops, indptr, index_dtype))


@nb.njit(cache=True)
def _counting_order(user, lo, n_ids, perm, run_ptr_full):
    """Stable counting sort of events by user id (ids lo..lo+n_ids-1)."""
    n = user.shape[0]
    for i in range(n):
        run_ptr_full[user[i] - lo + 1] += 1
    for s in range(n_ids):
        run_ptr_full[s + 1] += run_ptr_full[s]
    nxt = run_ptr_full[:-1].copy()
    for i in range(n):
        s = user[i] - lo
        perm[nxt[s]] = i
        nxt[s] += 1


@nb.njit(cache=True, parallel=True)
def _sort_runs_by_time(seg, ts, perm):
    """Within each segment, stable-sort (ts, perm) by ts where ts is not already sorted.

    ``ts`` is the time already gathered in counting-sort order, so the check
    reads memory sequentially; a time-ordered log needs no sort at all."""
    n_seg = seg.shape[0] - 1
    for s in nb.prange(n_seg):
        a = seg[s]
        b = seg[s + 1]
        ok = True
        for q in range(a + 1, b):
            if ts[q] < ts[q - 1]:
                ok = False
                break
        if not ok:
            loc = np.argsort(ts[a:b], kind="mergesort")
            rows = perm[a:b].copy()
            tv = ts[a:b].copy()
            for q in range(b - a):
                perm[a + q] = rows[loc[q]]
                ts[a + q] = tv[loc[q]]


def order_events(user, time, lo, n_ids):
    """(perm, seg, ts) for dense user ids: perm in (user, time) order, stable for
    ties; seg[s]:seg[s+1] is the node range of user lo + s; ts = time[perm]."""
    n = user.shape[0]
    perm = np.empty(n, dtype=np.int64)
    seg = np.zeros(n_ids + 1, dtype=np.int64)
    _counting_order(user, np.int64(lo), np.int64(n_ids), perm, seg)
    ts = time[perm]
    _sort_runs_by_time(seg, ts, perm)
    return perm, seg, ts
