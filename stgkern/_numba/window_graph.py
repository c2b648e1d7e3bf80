"""Window graphs over (user, time)-sorted events: one scan, an ordering, a count pass, a fill pass.

Backends assume validated input: ``t`` is the time column already in node
order (int64 or float64), ``run_ptr`` (int64) gives every segment's node
range (empty segments are fine), ``prev`` (int64, node order, from
:func:`category_workspace`) is given only when category edges are asked for:
``prev[i]`` is the latest earlier node of i's user with i's category, so the
category window is a walk of at most ``category_window`` (plus ties) steps.

Work is cut into fixed chunks of ``CHUNK_ROWS`` nodes (not users), so a
power-law user does not leave the other threads idle.  Every output element
is written by exactly one chunk, so results do not depend on the thread
count.  Within a user, times ascend, so the first source inside the horizon
and the first event of a run of equal times only move forward as the row
advances: both are kept as pointers (amortised O(1) per row) and found by
binary search only at a chunk's first row.

The count pass sums one total per chunk and leaves each row's temporal
sources (first source and count, packed in one int64) in the array that
becomes ``indptr``; the fill pass reads them back (no second walk of the
horizon and tie pointers), writes the edges from the chunk's offset and
overwrites the packed value with the row's end.  ``indptr`` is first touched
by the count pass, the edge arrays (allocated at their exact size with
``np.empty``) by the fill pass, both by the worker threads that write them.
"""
import numba as nb
import numpy as np

from ._twin import twin, use_threads

#: Nodes per parallel chunk of the scan, count and fill passes.
CHUNK_ROWS = 16384
#: The counting sort by user keeps one histogram of all user ids per thread;
#: it runs on one thread when threads * n_ids would exceed this many times the
#: event count (keeps its workspace below the size of the input).
HIST_PER_EVENT = 1
#: Above this many user ids the sort by user goes through 2**BUCKET_BITS buckets
#: first (two levels), so its write streams stay in cache; below it one
#: counting sort is faster (measured: 100k ids one level 1.2x faster, 2M ids
#: two levels 1.6x faster).
RADIX_MIN_IDS = 1 << 18
BUCKET_BITS = 10
#: Unsorted user runs up to this length are insertion-sorted in place; longer
#: ones go through a stable argsort.
INSERTION_SORT_MAX = 32
#: Index type of the hot loops: Numba wraps negative signed indices around (a
#: compare, a mask and an add per access, which also keeps LLVM from
#: vectorising and spills registers); unsigned indices skip that.  Only ever
#: used to index, never in arithmetic (int64 with uint64 gives float64).
_ix = np.uint64
#: Between the passes, row i's temporal sources lo .. lo + n_tmp - 1 wait in
#: indptr[i+1] as (i - lo) << ROW_SHIFT | n_tmp; both are at most the longest
#: hop, which int32 bounds anyway.
ROW_SHIFT = 32
ROW_MASK = (1 << ROW_SHIFT) - 1
#: The fill pass writes rows of up to this many temporal edges as a fixed-length
#: loop, which has no mispredicted exit (measured ~10% faster fill at window 8).
FILL_LANES = 8


# ----------------------------------------------------------------- scan
# A call, not Numba-IR inlining: the parallel and the serial loop both call it, and inlined
# twice into a parfor its body made the first (cold) compile several times slower; LLVM
# still inlines where it pays.
@nb.njit(cache=True)
def _scan_chunk(c, user, t, chunk, ustat, tstat, first_bad, n_bad_t, n_time_desc):
    n = user.shape[0]
    i0 = np.int64(c) * chunk
    i1 = min(n, i0 + chunk)
    umin = user[i0]
    umax = user[i0]
    tmin = t[i0]
    tmax = t[i0]
    bad = np.int64(-1)
    nonfinite = np.int64(0)
    desc = np.int64(0)
    start = i0 if i0 > 0 else np.int64(1)
    for p in range(i0, i1):
        u = user[_ix(p)]
        tp = t[_ix(p)]
        if u < umin:
            umin = u
        if u > umax:
            umax = u
        if tp < tmin:
            tmin = tp
        if tp > tmax:
            tmax = tp
        if not np.isfinite(tp):
            nonfinite += 1
        if p >= start:
            tq = t[_ix(p - 1)]
            desc += tp < tq
            if bad < 0:
                uq = user[_ix(p - 1)]
                if u < uq or (u == uq and tp < tq):
                    bad = p
    ustat[c, 0] = umin
    ustat[c, 1] = umax
    tstat[c, 0] = tmin
    tstat[c, 1] = tmax
    first_bad[c] = bad
    n_bad_t[c] = nonfinite
    n_time_desc[c] = desc


@twin()
def _scan(user, t, chunk, ustat, tstat, first_bad, n_bad_t, n_time_desc, parallel):
    n_chunks = first_bad.shape[0]
    if parallel:
        for c in nb.prange(n_chunks):
            _scan_chunk(np.int64(c), user, t, chunk, ustat, tstat, first_bad, n_bad_t, n_time_desc)
    else:
        for c in range(n_chunks):
            _scan_chunk(c, user, t, chunk, ustat, tstat, first_bad, n_bad_t, n_time_desc)


def scan(user, time):
    """One pass over the columns: ``(umin, umax, tmin, tmax, first_unsorted, n_nonfinite,
    time_sorted)``.

    ``first_unsorted`` is the first position p with (user, time)[p] <
    (user, time)[p-1] (lexicographic), or -1; ``n_nonfinite`` counts NaN/inf
    times (0 for integer times); ``time_sorted``: time alone never decreases
    and is finite (a log in arrival order), so a stable sort by user is the
    (user, time) order.  ``n`` must be > 0."""
    n = user.shape[0]
    chunk = np.int64(CHUNK_ROWS)
    n_chunks = (n + chunk - 1) // chunk
    ustat = np.empty((n_chunks, 2), dtype=np.int64)
    tstat = np.empty((n_chunks, 2), dtype=time.dtype)
    first_bad = np.empty(n_chunks, dtype=np.int64)
    n_bad_t = np.empty(n_chunks, dtype=np.int64)
    n_time_desc = np.empty(n_chunks, dtype=np.int64)
    _scan(user, time, chunk, ustat, tstat, first_bad, n_bad_t, n_time_desc, use_threads(n))
    bad = first_bad[first_bad >= 0]
    time_sorted = not (n_time_desc.any() or n_bad_t.any())
    return (int(ustat[:, 0].min()), int(ustat[:, 1].max()), tstat[:, 0].min(), tstat[:, 1].max(),
            int(bad.min()) if bad.size else -1, int(n_bad_t.sum()), time_sorted)


# ----------------------------------------------------------------- ordering
@twin()
def _iota(out, chunk, parallel):
    n = out.shape[0]
    n_chunks = (n + chunk - 1) // chunk
    if parallel:
        for c in nb.prange(n_chunks):
            for i in range(c * chunk, min(n, (c + 1) * chunk)):
                out[_ix(i)] = i
    else:
        for i in range(n):
            out[_ix(i)] = i


@twin()
def _dense_seg_of_sorted(user, lo, n_ids, seg, chunk, parallel):
    """seg[s] = first position whose user id - lo is >= s, for ascending ``user``.
    Each seg entry is written by the one position where the id steps over it."""
    n = user.shape[0]
    n_chunks = (n + chunk - 1) // chunk
    if parallel:
        for c in nb.prange(n_chunks):
            _seg_steps(user, lo, seg, c * chunk, min(n, (c + 1) * chunk))
    else:
        _seg_steps(user, lo, seg, np.int64(0), n)
    for s in range(user[n - 1] - lo + 1, n_ids + 1):
        seg[s] = n


@nb.njit(cache=True, inline="always")
def _seg_steps(user, lo, seg, i0, i1):
    for p in range(i0, i1):
        b = user[_ix(p)] - lo
        a = user[_ix(p - 1)] - lo + 1 if p > 0 else np.int64(0)
        for s in range(a, b + 1):
            seg[_ix(s)] = p


@twin()
def _counting_sort(user, time, lo, n_ids, hist, seg, perm, ts, parallel):
    """Stable counting sort by user id: perm, ts = time[perm] and seg in one scatter.
    ``hist`` (n_parts, n_ids) zeroed, an integer type that holds n; part q owns a
    contiguous slice of events.  ``parallel`` (n_parts > 1) picks the twin that runs the parts
    side by side (:mod:`._twin`)."""
    n = user.shape[0]
    n_parts = hist.shape[0]
    step = (n + n_parts - 1) // n_parts
    for q in nb.prange(n_parts):
        for i in range(q * step, min(n, (q + 1) * step)):
            hist[_ix(q), _ix(user[_ix(i)] - lo)] += 1
    # exclusive offsets, user-major then part: stable across parts
    acc = np.int64(0)
    for s in range(n_ids):
        seg[s] = acc
        for q in range(n_parts):
            h = hist[q, s]
            hist[q, s] = acc
            acc += h
    seg[n_ids] = acc
    for q in nb.prange(n_parts):
        for i in range(q * step, min(n, (q + 1) * step)):
            s = _ix(user[_ix(i)] - lo)
            k = hist[_ix(q), s]
            perm[_ix(k)] = i
            ts[_ix(k)] = time[_ix(i)]
            hist[_ix(q), s] = k + 1


@nb.njit(cache=True, inline="always")
def _sort_run(a, b, ts, perm, insertion_max):
    """Stable-sort (ts, perm)[a:b] by ts unless already sorted.  Short runs are
    insertion-sorted in place (no allocation); a time-ordered log sorts nothing."""
    for q in range(a + 1, b):
        if ts[_ix(q)] < ts[_ix(q - 1)]:
            break
    else:
        return
    if b - a <= insertion_max:
        for q in range(a + 1, b):
            tv = ts[q]
            pv = perm[q]
            j = q - 1
            while j >= a and ts[j] > tv:   # strict: equal times keep their order
                ts[j + 1] = ts[j]
                perm[j + 1] = perm[j]
                j -= 1
            ts[j + 1] = tv
            perm[j + 1] = pv
    else:
        loc = np.argsort(ts[a:b], kind="mergesort")
        rows = perm[a:b].copy()
        tv = ts[a:b].copy()
        for q in range(b - a):
            perm[a + q] = rows[loc[q]]
            ts[a + q] = tv[loc[q]]


@twin()
def _sort_runs_by_time(seg, ts, perm, insertion_max, parallel):
    """Within each segment, stable-sort (ts, perm) by ts where ts is not already sorted; ``parallel``
    picks the twin that sorts segments side by side."""
    for s in nb.prange(seg.shape[0] - 1):
        _sort_run(seg[s], seg[s + 1], ts, perm, insertion_max)


@nb.njit(cache=True, parallel=True)
def _radix_sort(user, time, lo, n_ids, shift, hist, seg, perm, ts, tmp_u, tmp_i, tmp_t, sort_runs,
                insertion_max):
    """Stable two-level counting sort by user id, then per-user time sort.

    Pass 1 scatters (id, row, time) into ``n_b = hist.shape[1]`` buckets of
    2**shift consecutive ids (few enough write streams to stay in cache); pass
    2 counting-sorts each bucket by exact id inside its own, cache-sized range
    of the output, writes ``seg`` for its ids and (``sort_runs``) sorts each
    user's run by time while it is still in cache.  A one-level counting sort
    scatters to every user at once, which misses the cache once the ids
    outnumber its lines."""
    n = user.shape[0]
    n_parts = hist.shape[0]
    n_b = hist.shape[1]
    step = (n + n_parts - 1) // n_parts
    for q in nb.prange(n_parts):
        for i in range(q * step, min(n, (q + 1) * step)):
            hist[_ix(q), _ix((user[_ix(i)] - lo) >> shift)] += 1
    bstart = np.empty(n_b + 1, dtype=np.int64)
    acc = np.int64(0)
    for b in range(n_b):
        bstart[b] = acc
        for q in range(n_parts):
            h = hist[q, b]
            hist[q, b] = acc
            acc += h
    bstart[n_b] = acc
    for q in nb.prange(n_parts):
        for i in range(q * step, min(n, (q + 1) * step)):
            u = user[_ix(i)] - lo
            b = _ix(u >> shift)
            k = hist[_ix(q), b]
            tmp_u[_ix(k)] = u
            tmp_i[_ix(k)] = i
            tmp_t[_ix(k)] = time[_ix(i)]
            hist[_ix(q), b] = k + 1
    width = np.int64(1) << shift
    for b in nb.prange(n_b):
        u0 = np.int64(b) << shift
        u1 = min(n_ids, u0 + width)
        cur = np.zeros(u1 - u0, dtype=np.int64)
        for k in range(bstart[b], bstart[b + 1]):
            cur[_ix(tmp_u[_ix(k)] - u0)] += 1
        acc = bstart[b]
        for s in range(u1 - u0):
            seg[u0 + s] = acc
            c = cur[s]
            cur[s] = acc
            acc += c
        for k in range(bstart[b], bstart[b + 1]):
            s = _ix(tmp_u[_ix(k)] - u0)
            d = cur[s]
            perm[_ix(d)] = tmp_i[_ix(k)]
            ts[_ix(d)] = tmp_t[_ix(k)]
            cur[s] = d + 1
        if sort_runs:
            for s in range(u0, u1):
                _sort_run(seg[s], cur[s - u0], ts, perm, insertion_max)
    seg[n_ids] = n


def order_events(user, time, lo, n_ids, is_sorted=False, time_sorted=False):
    """(perm, seg, ts) for dense user ids: perm in (user, time) order, stable for
    ties; seg[s]:seg[s+1] is the node range of user lo + s; ts = time[perm].

    ``is_sorted``: the caller has verified (user, time) order, so perm is the
    identity, ts is ``time`` itself (no copy) and seg comes from the id steps.
    ``time_sorted``: the caller has verified that time alone never decreases,
    so the stable sort by user is the whole ordering (no user's run is checked
    or sorted by time)."""
    n = user.shape[0]
    chunk = np.int64(CHUNK_ROWS)
    par = use_threads(n)
    perm = np.empty(n, dtype=np.int64)
    seg = np.empty(n_ids + 1, dtype=np.int64)
    if n == 0:
        seg[:] = 0
        return perm, seg, time[:0].copy()
    if is_sorted:
        _iota(perm, chunk, par)
        _dense_seg_of_sorted(user, np.int64(lo), np.int64(n_ids), seg, chunk, par)
        return perm, seg, time
    n_parts = nb.get_num_threads() if par else 1
    ts = np.empty_like(time)
    shift = max(0, (n_ids - 1).bit_length() - BUCKET_BITS) if n_ids >= RADIX_MIN_IDS else 0
    if shift == 0:   # few users: one counting sort already scatters inside the cache
        if n_parts * n_ids > HIST_PER_EVENT * n:
            n_parts = 1
        # int32 offsets while they fit: half the table the scatter keeps in cache (measured 1.2x faster
        # on 5M events, 100k users)
        hist = np.zeros((n_parts, n_ids), dtype=np.int32 if n <= np.iinfo(np.int32).max else np.int64)
        _counting_sort(user, time, np.int64(lo), np.int64(n_ids), hist, seg, perm, ts, n_parts > 1)
        if not time_sorted:
            _sort_runs_by_time(seg, ts, perm, np.int64(INSERTION_SORT_MAX), par)
        return perm, seg, ts
    hist = np.zeros((n_parts, ((n_ids - 1) >> shift) + 1), dtype=np.int64)
    narrow = np.int32 if n_ids <= np.iinfo(np.int32).max and n <= np.iinfo(np.int32).max else np.int64
    tmp_u = np.empty(n, dtype=narrow)   # half the workspace and traffic while ids and rows fit
    tmp_i = np.empty(n, dtype=narrow)
    tmp_t = np.empty_like(time)
    _radix_sort(user, time, np.int64(lo), np.int64(n_ids), np.int64(shift), hist, seg, perm, ts,
                tmp_u, tmp_i, tmp_t, not time_sorted, np.int64(INSERTION_SORT_MAX))
    return perm, seg, ts


# ----------------------------------------------------------------- count / fill
@nb.njit(cache=True)
def _run_of(run_ptr, i):
    """Index r of the last run with run_ptr[r] <= i (the run holding node i)."""
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
def _first_in_horizon(t, lo, i, horizon):
    """First j in [lo, i] with t[i] - t[j] <= horizon (times ascend on [lo, i])."""
    ti = t[i]
    hi = i
    while lo < hi:
        mid = (lo + hi) >> 1
        if ti - t[mid] > horizon:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True, inline="always")
def _first_tie(t, lo, i):
    """First j in [lo, i] with t[j] == t[i] (times ascend on [lo, i])."""
    ti = t[i]
    hi = i
    while lo < hi:
        mid = (lo + hi) >> 1
        if t[mid] < ti:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True, inline="always")
def _category_extra(i, lo, t, prev, cat_window, horizon, has_horizon, strict):
    """Category sources of row i below the temporal range (j < lo)."""
    ti = t[_ix(i)]
    taken = 0
    n_extra = 0
    j = prev[_ix(i)]
    while j >= 0 and taken < cat_window:
        jj = j
        j = prev[_ix(j)]
        tj = t[_ix(jj)]
        if strict and tj == ti:
            continue
        if has_horizon and ti - tj > horizon:
            break
        taken += 1
        if jj < lo:
            n_extra += 1
    return n_extra


@nb.njit(cache=True, inline="always")
def _category_fill(i, lo, t, prev, cat_window, horizon, has_horizon, strict, tmp_start, indices, dt, hop,
                   kind):
    """Write category-only sources descending below ``tmp_start`` (they are the
    row's lowest sources) and mark temporal edges that are also category edges."""
    ti = t[_ix(i)]
    taken = 0
    back = tmp_start - 1
    q = prev[_ix(i)]
    while q >= 0 and taken < cat_window:
        j = q
        q = prev[_ix(j)]
        tj = t[_ix(j)]
        if strict and tj == ti:
            continue
        if has_horizon and ti - tj > horizon:
            break
        taken += 1
        if j < lo:
            e = _ix(back)
            indices[e] = j
            dt[e] = ti - tj
            hop[e] = i - j
            kind[e] = 2
            back -= 1
        else:
            kind[_ix(tmp_start + (j - lo))] |= 2


# A call, not Numba-IR inlining: the parallel and the serial loop both call it, and inlined
# twice into a parfor its body made the first (cold) compile several times slower; LLVM
# still inlines where it pays.
@nb.njit(cache=True)
def _count_chunk(c, run_ptr, t, prev, window, has_window, horizon, has_horizon, strict,
                 cat_window, self_loops, chunk, totals, rows):
    """Rows of chunk c: totals[c] = its edges and, when ``rows`` is not empty,
    rows[i+1] = row i's temporal sources packed as (i - lo) << ROW_SHIFT | n_tmp
    (they are lo .. lo + n_tmp - 1)."""
    n = t.shape[0]
    keep = rows.shape[0] > 0
    i0 = np.int64(c) * chunk
    i1 = min(n, i0 + chunk)
    r = _run_of(run_ptr, i0)
    while run_ptr[r + 1] <= i0:
        r += 1
    a = run_ptr[r]
    # pointers for row i0: first source inside the horizon, first event tied with i0
    p = a
    if has_window and i0 - window > p:
        p = i0 - window
    if has_horizon:
        p = _first_in_horizon(t, p, i0, horizon)
    tie = _first_tie(t, a, i0) if strict else a
    total = np.int64(0)
    nxt = run_ptr[_ix(r + 1)]
    for i in range(i0, i1):
        if nxt <= i:
            while run_ptr[_ix(r + 1)] <= i:
                r += 1
            nxt = run_ptr[_ix(r + 1)]
            a = i
            p = i
            tie = i
        ti = t[_ix(i)]
        if strict and i > a and ti != t[_ix(i - 1)]:
            tie = i
        hi = tie - 1 if strict else i - 1
        lo = a
        if has_window and i - window > lo:
            lo = i - window
        if has_horizon:
            if p < lo:
                p = lo
            while p < i and ti - t[_ix(p)] > horizon:
                p += 1
            lo = p
        n_tmp = hi - lo + 1
        if n_tmp < 0:
            n_tmp = 0
        if cat_window > 0:
            total += _category_extra(i, lo, t, prev, cat_window, horizon, has_horizon, strict)
        total += n_tmp
        if self_loops:
            total += 1
        if keep:
            rows[_ix(i + 1)] = ((i - lo) << ROW_SHIFT) | n_tmp
    totals[c] = total


# A call, not Numba-IR inlining: the parallel and the serial loop both call it, and inlined
# twice into a parfor its body made the first (cold) compile several times slower; LLVM
# still inlines where it pays.
@nb.njit(cache=True)
def _fill_chunk(c, t, prev, horizon, has_horizon, strict, cat_window, self_loops, chunk, offsets,
                indptr, indices, dt, hop, kind):
    """Edges of the rows of chunk c, from offsets[c] on, each row's temporal sources
    read from indptr[i+1] (as the count pass packed them) before its end overwrites
    them.  Row layout: [category-only sources ascending][temporal lo..hi][self]."""
    n = t.shape[0]
    i0 = np.int64(c) * chunk
    i1 = min(n, i0 + chunk)
    k = offsets[c]
    end = offsets[c + 1]
    for i in range(i0, i1):
        packed = indptr[_ix(i + 1)]
        lo = i - (packed >> ROW_SHIFT)
        n_tmp = packed & ROW_MASK
        ti = t[_ix(i)]
        if cat_window > 0:
            k += _category_extra(i, lo, t, prev, cat_window, horizon, has_horizon, strict)
        start = k
        if n_tmp <= FILL_LANES and k + FILL_LANES <= end and lo + FILL_LANES <= n:
            # a fixed-length loop (no mispredicted exit); slots past the row's last
            # edge are overwritten by the rows after it, all inside this chunk
            for s in range(FILL_LANES):
                e = _ix(k + s)
                j = lo + s
                indices[e] = j
                dt[e] = ti - t[_ix(j)]
                hop[e] = i - j
                kind[e] = 1
            k += n_tmp
        else:
            for j in range(lo, lo + n_tmp):
                e = _ix(k)
                indices[e] = j
                dt[e] = ti - t[_ix(j)]
                hop[e] = i - j
                kind[e] = 1
                k += 1
        if cat_window > 0:
            _category_fill(i, lo, t, prev, cat_window, horizon, has_horizon, strict, start,
                           indices, dt, hop, kind)
        if self_loops:
            e = _ix(k)
            indices[e] = i
            dt[e] = 0
            hop[e] = 0
            kind[e] = 4
            k += 1
        indptr[_ix(i + 1)] = k


@twin()
def _count(run_ptr, t, prev, window, has_window, horizon, has_horizon, strict,
           cat_window, self_loops, chunk, totals, rows, parallel):
    n_chunks = totals.shape[0]
    if parallel:
        for c in nb.prange(n_chunks):
            _count_chunk(np.int64(c), run_ptr, t, prev, window, has_window, horizon, has_horizon, strict,
                         cat_window, self_loops, chunk, totals, rows)
    else:
        for c in range(n_chunks):
            _count_chunk(c, run_ptr, t, prev, window, has_window, horizon, has_horizon, strict,
                         cat_window, self_loops, chunk, totals, rows)


@twin()
def _fill(t, prev, horizon, has_horizon, strict, cat_window, self_loops, chunk, offsets,
          indptr, indices, dt, hop, kind, parallel):
    n_chunks = offsets.shape[0] - 1
    if parallel:
        for c in nb.prange(n_chunks):
            _fill_chunk(np.int64(c), t, prev, horizon, has_horizon, strict, cat_window, self_loops, chunk, offsets,
                        indptr, indices, dt, hop, kind)
    else:
        for c in range(n_chunks):
            _fill_chunk(c, t, prev, horizon, has_horizon, strict, cat_window, self_loops, chunk, offsets,
                        indptr, indices, dt, hop, kind)


@twin()
def _prev_same(run_ptr, part_runs, category, perm, last_pos, last_run, prev, parallel):
    """prev[i]: the latest earlier node of i's user with i's category, or -1.

    Part q walks users part_runs[q]:part_runs[q+1] in order, keeping per category
    the last node seen and the user it was seen in (a stale user means none),
    so nothing is reset or allocated per user.  ``parallel`` (more than one part) picks the twin
    that walks the parts side by side."""
    for q in nb.prange(last_pos.shape[0]):
        for r in range(part_runs[q], part_runs[q + 1]):
            for i in range(run_ptr[r], run_ptr[r + 1]):
                c = category[perm[i]]
                prev[i] = last_pos[q, c] if last_run[q, c] == r else -1
                last_run[q, c] = r
                last_pos[q, c] = i


def _args(t, window, horizon):
    has_window = window is not None
    has_horizon = horizon is not None
    w = np.int64(window if has_window else 0)
    h = t.dtype.type(horizon if has_horizon else 0)
    return w, has_window, h, has_horizon


def category_workspace(run_ptr, category, perm):
    """``prev`` (int64, node order) for the category walk: prev[i] is the latest earlier
    node of the same user and category, -1 if none.  ``category`` is the input
    column (input order, int64); ``perm`` maps node -> input row."""
    n = perm.shape[0]
    prev = np.empty(n, dtype=np.int64)
    if n == 0:
        return prev
    lo, hi = int(category.min()), int(category.max())
    if lo < 0 or hi >= 2 * n + 1024:      # sparse ids (e.g. hashes): number them densely first
        category = np.unique(category, return_inverse=True)[1].astype(np.int64).reshape(-1)
        hi = int(category.max())
    n_cats = hi + 1
    n_runs = run_ptr.shape[0] - 1
    n_parts = nb.get_num_threads() if use_threads(n) else 1
    n_parts = max(1, min(n_parts, n // n_cats, n_runs))   # the tables stay below the event count
    # parts of about equal event counts, cut at user boundaries
    part_runs = np.searchsorted(run_ptr, np.arange(n_parts + 1) * (n / n_parts), side="left").astype(np.int64)
    part_runs[0], part_runs[-1] = 0, n_runs
    last_pos = np.empty((n_parts, n_cats), dtype=np.int64)
    last_run = np.full((n_parts, n_cats), -1, dtype=np.int64)
    _prev_same(run_ptr, part_runs, category, perm, last_pos, last_run, prev, n_parts > 1)
    return prev


def count(run_ptr, t, prev, window, horizon, strict, cat_window, self_loops, keep_rows=True):
    """The count pass: ``(chunk, totals, rows)``; ``totals.sum()`` is nnz.  ``prev`` (from
    :func:`category_workspace`) is None without category edges.

    ``keep_rows``: ``rows`` (int64, n + 1) holds each row's temporal sources for
    :func:`fill`, which turns it into ``indptr`` in place, so the fill pass does
    not recount; False (a size estimate only): ``rows`` is None."""
    n = t.shape[0]
    chunk = np.int64(CHUNK_ROWS)
    totals = np.zeros((n + chunk - 1) // chunk, dtype=np.int64)
    rows = np.empty(n + 1, dtype=np.int64) if keep_rows else None
    if n == 0:
        return chunk, totals, rows
    if keep_rows:   # packing needs every hop below 2**31, as the front door's hop (int32) check ensures
        longest = int(np.diff(run_ptr).max())
        span = longest - 1 if window is None else min(longest - 1, int(window))
        if span > ROW_MASK >> 1:
            raise ValueError(f"a user has {longest} events, so hop (int32) could overflow; pass a "
                             f"window below 2**31 or split the user")
    w, hw, h, hh = _args(t, window, horizon)
    prev = np.empty(0, np.int64) if prev is None else prev
    _count(run_ptr, t, prev, w, hw, h, hh, bool(strict), np.int64(cat_window), bool(self_loops),
           chunk, totals, np.empty(0, np.int64) if rows is None else rows, use_threads(n))
    return chunk, totals, rows


def fill(t, prev, horizon, strict, cat_window, self_loops, counts, index_dtype):
    """The fill pass for ``counts`` from :func:`count` (``keep_rows=True``, used up):
    (indptr, indices, dt, hop, kind).  Edge arrays are allocated here at their exact
    size and first touched by the worker threads that fill them."""
    chunk, totals, indptr = counts
    n = t.shape[0]
    offsets = np.zeros(totals.shape[0] + 1, dtype=np.int64)
    np.cumsum(totals, out=offsets[1:])
    nnz = int(offsets[-1])
    indptr[0] = 0
    indices = np.empty(nnz, dtype=index_dtype)
    dt = np.empty(nnz, dtype=t.dtype)
    hop = np.empty(nnz, dtype=np.int32)
    kind = np.empty(nnz, dtype=np.uint8)
    if n:
        _, _, h, hh = _args(t, None, horizon)
        prev = np.empty(0, np.int64) if prev is None else prev
        _fill(t, prev, h, hh, bool(strict), np.int64(cat_window), bool(self_loops), chunk, offsets,
              indptr, indices, dt, hop, kind, use_threads(n))
    return indptr, indices, dt, hop, kind


def window_graph(run_ptr, t, cat, window, horizon, strict, cat_window, self_loops, index_dtype):
    """Both passes: (indptr, indices, dt, hop, kind).  ``cat`` (node order) or None."""
    prev = None
    if cat is not None and cat_window > 0:
        prev = category_workspace(run_ptr, cat, identity_perm(t.shape[0]))
    else:
        cat_window = 0
    counts = count(run_ptr, t, prev, window, horizon, strict, cat_window, self_loops)
    return fill(t, prev, horizon, strict, cat_window, self_loops, counts, index_dtype)


def identity_perm(n):
    """``arange(n)`` (int64), its pages first touched by the worker threads."""
    perm = np.empty(n, dtype=np.int64)
    _iota(perm, np.int64(CHUNK_ROWS), use_threads(n))
    return perm
