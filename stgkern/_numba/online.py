"""Numba kernels of :mod:`stgkern.online`: the per-user event chains and the incremental states.

State layout (all flat arrays owned by ``OnlineRecommender``):

* a hash map from the caller's user ids to dense user slots (open
  addressing, linear probing, ``EMPTY`` marks a free key), and a hash set
  of ``user * n_items + item`` keys for each user's seen items;
* a pool of retained events: item, category, behaviour, time, the small
  node features, the layer-1 state ``H1`` and the in-edges (source slot,
  ``dt``, kind bitmask, normalised decay weight), with ``prev`` linking each
  user's retained events newest first from ``head[user]``;
* per user, a chain of seen items (``seen_head``, ``seen_next``).

Why the chains can stand in for the whole history: times never decrease
per user (older events are refused before any kernel runs), so an event
more than ``horizon`` older than a user's latest one can never again be an
in-neighbour, and a temporal (category) neighbour must be among the last
``window`` (last ``category_window`` same-category) events within the
horizon.  :func:`retain` keeps exactly those ("live"), the user's last two
events (the skip component reads the previous one whatever its age), every
in-neighbour of a live event and the latest event's two-hop neighbourhood
(what :meth:`explain` decomposes), and frees the rest.  A freed event is
never needed again: the live set only shrinks as events arrive.  Walking a
chain newest first, the first ``window`` entries within the horizon are the
user's true last ``window`` events (a freed one is either past the horizon,
and then so is everything older, or not among them), and the first
``category_window`` entries of a category within the horizon are the true
ones (a freed event of that category is older than ``category_window``
retained ones).  So :func:`insert` finds the same in-edges as
:func:`stgkern.window_graph` on the whole log, in the same (source
ascending) order.
"""
import numba as nb
import numpy as np

from ._simd import gather_wsum
from ._sort import sort_range

#: The empty key of the hash tables (a user id equal to it is refused by the caller).
EMPTY = np.iinfo(np.int64).min


@nb.njit(inline="always")
def _slot(keys, key):
    """Position of ``key`` in the open-addressing table, or of the empty slot where it would go."""
    mask = keys.shape[0] - 1
    h = (key * np.int64(-7046029254386353131)) & mask        # multiplicative hash (wraps)
    while keys[h] != key and keys[h] != EMPTY:
        h = (h + 1) & mask
    return h


@nb.njit(cache=True)
def ht_lookup(keys, vals, query, out):
    """``out[i]`` = the value of ``query[i]``, or -1 when absent."""
    for i in range(query.shape[0]):
        h = _slot(keys, query[i])
        out[i] = vals[h] if keys[h] == query[i] else -1


@nb.njit(cache=True)
def ht_insert(keys, vals, query, next_val, out):
    """Values of ``query`` (new keys get ``next_val``, ``next_val + 1``, ... in order of first
    appearance); returns the next free value.  The caller keeps the load below one half."""
    for i in range(query.shape[0]):
        h = _slot(keys, query[i])
        if keys[h] == EMPTY:
            keys[h] = query[i]
            vals[h] = next_val
            next_val += 1
        out[i] = vals[h]
    return next_val


@nb.njit(cache=True)
def ht_rehash(keys, vals, new_keys, new_vals):
    """Copy every entry into empty, larger tables."""
    for h in range(keys.shape[0]):
        if keys[h] != EMPTY:
            g = _slot(new_keys, keys[h])
            new_keys[g] = keys[h]
            new_vals[g] = vals[h]


def insert(runs, uidx, item, cat, beh, time, slots, window, cwin, horizon, has_horizon, head, latest,
           n_events, e_item, e_cat, e_beh, e_time, e_prev, e_nin, e_src, e_kind, dt_out, parallel):
    """Link a batch sorted by (user, time) into the chains, each event's in-edges found as
    :func:`stgkern.window_graph` finds them (temporal bit 1, category bit 2, sources ascending).

    ``runs`` starts each user's events in the batch (and ends with the batch size); users are
    independent, so runs go in parallel.  ``slots[b]`` is event b's free pool slot; in-edge q
    of event b writes ``t(event) - t(source)`` to ``dt_out[b * E + q]`` (E = ``e_src.shape[1]``).
    """
    args = (runs, uidx, item, cat, beh, time, slots, window, cwin, horizon, has_horizon, head, latest, n_events,
            e_item, e_cat, e_beh, e_time, e_prev, e_nin, e_src, e_kind, dt_out)
    if parallel:                      # the caller's use_threads(): rows enough and threads
        _insert_par(*args)
    else:
        _insert_runs(0, runs.shape[0] - 1, *args)


# The parallel paths are prange loops of their own around the row functions, compiled the first
# time a batch is large enough to take them: a serial update (a small batch, or one Numba thread,
# as the demo's replay runs) never pays their compilation (2-3 s each in a fresh install).
# Python threads over the row functions instead compiled nothing, but the update ran ~0.6x as fast.
@nb.njit(cache=True, parallel=True)
def _insert_par(runs, uidx, item, cat, beh, time, slots, window, cwin, horizon, has_horizon, head, latest, n_events,
                e_item, e_cat, e_beh, e_time, e_prev, e_nin, e_src, e_kind, dt_out):
    n_runs = runs.shape[0] - 1
    for c in nb.prange((n_runs + 63) // 64):
        _insert_runs(c * 64, min(n_runs, (c + 1) * 64), runs, uidx, item, cat, beh, time, slots, window, cwin,
                     horizon, has_horizon, head, latest, n_events, e_item, e_cat, e_beh, e_time, e_prev, e_nin,
                     e_src, e_kind, dt_out)


@nb.njit(cache=True, nogil=True)
def _insert_runs(r0, r1, runs, uidx, item, cat, beh, time, slots, window, cwin, horizon, has_horizon, head,
                 latest, n_events, e_item, e_cat, e_beh, e_time, e_prev, e_nin, e_src, e_kind, dt_out):
    E = e_src.shape[1]
    src = np.empty(E, np.int32)
    knd = np.empty(E, np.uint8)
    for r in range(r0, r1):
        for b in range(runs[r], runs[r + 1]):
            u, s, t, c = uidx[b], slots[b], time[b], cat[b]
            d, pos, cc, j = 0, 0, 0, head[u]
            while j >= 0 and (pos < window or cc < cwin):
                if has_horizon and t - e_time[j] > horizon:
                    break                           # so is every older event
                k = np.uint8(0)
                if pos < window:
                    k |= np.uint8(1)
                if cc < cwin and e_cat[j] == c:
                    k |= np.uint8(2)
                    cc += 1
                if k != 0:
                    src[d] = j
                    knd[d] = k
                    d += 1
                pos += 1
                j = e_prev[j]
            for q in range(d):                      # chain order is newest first: reverse it
                e_src[s, q] = src[d - 1 - q]
                e_kind[s, q] = knd[d - 1 - q]
                dt_out[b * E + q] = t - e_time[src[d - 1 - q]]
            e_nin[s] = d
            e_item[s], e_cat[s], e_beh[s], e_time[s] = item[b], c, beh[b], t
            e_prev[s] = head[u]
            head[u] = s
            latest[u] = t
            n_events[u] += 1


@nb.njit(cache=True)
def insert_seen(uidx, item, n_item_keys, seen_keys, seen_vals, seen_head, seen_item, seen_next, n_seen):
    """Record each (user, item) pair not seen before; returns the new count."""
    for b in range(uidx.shape[0]):
        u = uidx[b]
        key = u * n_item_keys + item[b]
        h = _slot(seen_keys, key)
        if seen_keys[h] == EMPTY:
            seen_keys[h] = key
            seen_vals[h] = n_seen
            seen_item[n_seen] = item[b]
            seen_next[n_seen] = seen_head[u]
            seen_head[u] = n_seen
            n_seen += 1
    return n_seen


@nb.njit(cache=True)
def seen_rows(uidx, seen_head, s_item, s_next, n_items):
    """Each user's seen items below ``n_items`` as sorted CSR rows ``(indptr, indices)``."""
    indptr = np.zeros(uidx.shape[0] + 1, np.int64)
    for r in range(uidx.shape[0]):
        j, c = seen_head[uidx[r]], 0
        while j >= 0:
            c += s_item[j] < n_items
            j = s_next[j]
        indptr[r + 1] = indptr[r] + c
    indices = np.empty(indptr[-1], np.int64)
    for r in range(uidx.shape[0]):
        j, o = seen_head[uidx[r]], indptr[r]
        while j >= 0:
            if s_item[j] < n_items:
                indices[o] = s_item[j]
                o += 1
            j = s_next[j]
        sort_range(indices, indptr[r], o)
    return indptr, indices


def layer1(slots, w_ptr, w64, e_nin, e_src, e_w, e_item, e_cat, e_F, E_item, E_cat, e_H1, parallel):
    """Each batch event's normalised decay weights (``w64``: ``exp(-dt/τ)`` in float64, the
    event's edges at ``w_ptr[b]:w_ptr[b + 1]``) and ``H1 = Σ ŵ X[src]`` by spmm's own row fold.
    Every event's H1 reads only node inputs, so events go in parallel chunks with ``parallel``
    (a small batch: a parallel launch costs more than it saves)."""
    args = (slots, w_ptr, w64, e_nin, e_src, e_w, e_item, e_cat, e_F, E_item, E_cat, e_H1)
    if parallel:                      # the caller's use_threads(): rows enough and threads
        _layer1_par(*args)
    else:
        _layer1_rows(0, slots.shape[0], *args)


@nb.njit(cache=True, parallel=True)
def _layer1_par(slots, w_ptr, w64, e_nin, e_src, e_w, e_item, e_cat, e_F, E_item, E_cat, e_H1):
    n = slots.shape[0]
    for c in nb.prange((n + 255) // 256):
        _layer1_rows(c * 256, min(n, (c + 1) * 256), slots, w_ptr, w64, e_nin, e_src, e_w, e_item, e_cat, e_F,
                     E_item, E_cat, e_H1)


@nb.njit(cache=True, nogil=True)
def _layer1_rows(b0, b1, slots, w_ptr, w64, e_nin, e_src, e_w, e_item, e_cat, e_F, E_item, E_cat, e_H1):
    idx = np.empty(e_src.shape[1], np.int64)
    for b in range(b0, b1):
        _layer1_row(b, slots, w_ptr, w64, e_nin, e_src, e_w, e_item, e_cat, e_F, E_item, E_cat, e_H1, idx)


@nb.njit(inline="always")
def _layer1_row(b, slots, w_ptr, w64, e_nin, e_src, e_w, e_item, e_cat, e_F, E_item, E_cat, e_H1, idx):
    """One event's ŵ and H1.  ``X[src] = [E_item[item], E_cat[cat], F[src]]`` column block by
    block: a column's sum depends only on that column, so folding each block straight from its
    table gives spmm's bits without copying the node inputs anywhere."""
    s = slots[b]
    d = e_nin[s]
    rs = 0.0
    for q in range(d):                              # np.bincount's order: edge by edge from 0
        rs += w64[w_ptr[b] + q]
    rs = max(rs, 1e-30)
    for q in range(d):
        e_w[s, q] = np.float32(w64[w_ptr[b] + q] / rs)
    a, c = E_item.shape[1], E_cat.shape[1]
    for q in range(d):
        idx[q] = e_item[e_src[s, q]]
    gather_wsum(e_H1[s, :a], E_item, idx, e_w[s], None, 0, d, None)
    for q in range(d):
        idx[q] = e_cat[e_src[s, q]]
    gather_wsum(e_H1[s, a:a + c], E_cat, idx, e_w[s], None, 0, d, None)
    for q in range(d):
        idx[q] = e_src[s, q]
    gather_wsum(e_H1[s, a + c:], e_F, idx, e_w[s], None, 0, d, None)


@nb.njit(cache=True)
def layer2(slots, e_nin, e_src, e_w, e_H1, out):
    """``out[i] = Σ ŵ H1[src]`` over the in-edges of ``slots[i]`` (spmm's row fold)."""
    Hs = np.empty((e_src.shape[1], e_H1.shape[1]), np.float32)
    loc = np.arange(e_src.shape[1])
    for i in range(slots.shape[0]):
        s = slots[i]
        d = e_nin[s]
        for q in range(d):
            # element by element: a row assignment (Hs[q] = e_H1[...]) compiles Numba's
            # broadcasting setitem and its string-formatting error path, 2-5 s in a fresh install
            src = e_src[s, q]
            for f in range(Hs.shape[1]):
                Hs[q, f] = e_H1[src, f]
        gather_wsum(out[i], Hs, loc, e_w[s], None, 0, d, None)


def chain_lengths(users, head, e_prev, out, parallel):
    """``out[i]`` = the number of retained events of ``users[i]``."""
    if parallel:                      # the caller's use_threads(): rows enough and threads
        _chain_lengths_par(users, head, e_prev, out)
    else:
        _chain_lengths(0, users.shape[0], users, head, e_prev, out)


@nb.njit(cache=True, parallel=True)
def _chain_lengths_par(users, head, e_prev, out):
    n = users.shape[0]
    for c in nb.prange((n + 255) // 256):
        _chain_lengths(c * 256, min(n, (c + 1) * 256), users, head, e_prev, out)


@nb.njit(cache=True, nogil=True)
def _chain_lengths(i0, i1, users, head, e_prev, out):
    for i in range(i0, i1):
        n, j = 0, head[users[i]]
        while j >= 0:
            n += 1
            j = e_prev[j]
        out[i] = n


def retain(users, offsets, window, cwin, horizon, has_horizon, n_categories, head, latest, e_cat, e_time, e_prev,
           e_nin, e_src, mark, chain, freed, n_freed, n_chunks):
    """Unlink each of ``users``' events that no future event or explanation can need (module
    docstring).  User i's chain goes to ``chain[offsets[i]:offsets[i + 1]]``, its freed slots to
    the front of ``freed``'s same range and their count to ``n_freed[i]``; users are independent
    (each touches its own slots only), so they go in parallel.  ``mark`` is zero on entry and
    left zero.  ``n_chunks`` > 1 runs that many chunks in parallel (one a thread: each zeroes a
    count per category once); 1 runs serially."""
    args = (users, offsets, window, cwin, horizon, has_horizon, n_categories, head, latest, e_cat, e_time, e_prev,
            e_nin, e_src, mark, chain, freed, n_freed)
    if n_chunks > 1:
        _retain_par(n_chunks, *args)
    else:
        _retain_users(0, users.shape[0], *args)


@nb.njit(cache=True, parallel=True)
def _retain_par(n_chunks, users, offsets, window, cwin, horizon, has_horizon, n_categories, head, latest, e_cat,
                e_time, e_prev, e_nin, e_src, mark, chain, freed, n_freed):
    step = (users.shape[0] + n_chunks - 1) // n_chunks
    for c in nb.prange(n_chunks):
        _retain_users(min(users.shape[0], c * step), min(users.shape[0], (c + 1) * step), users, offsets, window,
                      cwin, horizon, has_horizon, n_categories, head, latest, e_cat, e_time, e_prev, e_nin, e_src,
                      mark, chain, freed, n_freed)


@nb.njit(cache=True, nogil=True)
def _retain_users(i0, i1, users, offsets, window, cwin, horizon, has_horizon, n_categories, head, latest, e_cat,
                  e_time, e_prev, e_nin, e_src, mark, chain, freed, n_freed):
    cat_count = np.zeros(n_categories, np.int64)
    for ui in range(i0, i1):
        u = users[ui]
        t = latest[u]
        o = offsets[ui]
        n, j = 0, head[u]
        while j >= 0:
            chain[o + n] = j
            n += 1
            j = e_prev[j]
        for p in range(n):
            j = chain[o + p]
            inside = (not has_horizon) or t - e_time[j] <= horizon
            live = False
            if inside:
                if p < window:
                    live = True
                if cat_count[e_cat[j]] < cwin:
                    cat_count[e_cat[j]] += 1
                    live = True
            if live or p < 2:
                mark[j] = 1
            if live:
                for q in range(e_nin[j]):
                    mark[e_src[j, q]] = 1
        for p in range(n):
            cat_count[e_cat[chain[o + p]]] = 0
        if n > 0:                                   # the latest event's two-hop neighbourhood
            j = chain[o]
            for q in range(e_nin[j]):
                a = e_src[j, q]
                mark[a] = 1
                for r in range(e_nin[a]):
                    mark[e_src[a, r]] = 1
        last, nf = -1, 0
        for p in range(n):                          # relink the kept, free the rest
            j = chain[o + p]
            if mark[j]:
                mark[j] = 0
                if last < 0:
                    head[u] = j
                else:
                    e_prev[last] = j
                last = j
            else:
                freed[o + nf] = j
                nf += 1
        if last >= 0:
            e_prev[last] = -1
        n_freed[ui] = nf
