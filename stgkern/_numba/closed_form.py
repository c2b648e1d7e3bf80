"""Exact top-k of the closed-form model's scores without the dense score matrix.

A user's score of item i is ``L(i) + S(i) + C(i)``: the ridge's low-rank
part ``L`` (a dot product, plus the item prior), the transition components
``S(i) = (a_last * T1[last, i] + a_window * sum_b bag_b * T1[b, i])
+ a_skip * T2[prev, i] >= 0`` (first-order, window and skip transitions: a
nonnegative combination of a few rows of the row-stochastic tables ``T1``,
``T2``) and the category component ``C(i) = w * TC[c_u, cat(i)] * share(i)
>= 0`` (next-category probability times the item's share of its category).

Given ``T``, the exact top-k of ``L`` over the user's unseen items (from
:func:`stgkern.topk`, one GEMM pass over the catalogue) with k-th score
``L_k``, every unseen item outside ``T`` has ``L(i) <= L_k``.  The kernel
scores ``T`` exactly and takes the k-th of those scores as the threshold
``theta`` (raised as better items are found: it only grows).  Then:

1. The transition walk (a threshold algorithm).  The user's rows of ``S``
   (``T1[last]``, ``T1[b]`` for each bag item ``b``, ``T2[prev]``; a row
   named twice is walked once with the weights summed) are walked through
   copies sorted by value, largest first (:func:`sort_rows`), always in the
   row whose head ``a_r * next value`` is largest.  An item not yet met in
   any row has ``T_r[i] <= `` that row's next value in every row, so
   ``S(i) <= B = sum_r a_r * next_r``.  Each item met gets its exact
   ``S(i)`` by binary search in each row of the index-sorted tables, and its
   dot product only where ``L_k + S(i) + C(i)`` reaches ``theta``.  The walk
   stops when the rows are spent (``B = 0``) or when
   ``L_k + B + Cmax < theta``, ``Cmax`` the largest ``C`` any item can have
   (each next category's weight times its largest share).
2. The category walk: each next category's items by share, largest first,
   until the first whose bound ``L_k + B + w * TC * share(i)`` falls below
   ``theta``; an item not met before gets its exact ``S`` and ``C``, and its
   dot product where ``L_k + S(i) + C(i)`` reaches ``theta``.

Every item skipped provably cannot enter the top-k: outside ``T`` it has
``L(i) <= L_k``; not met by the transition walk it has ``S(i) <= B``; not
met by the category walk it has ``C(i) < theta - L_k - B`` or, where its
category has no weight, ``C(i) = 0``, and ``L_k + B < theta`` once phase 2
runs with a nonzero ``B`` (phase 1 stopped on its bound), while with
``B = 0`` such an item has ``S = C = 0`` and scores at most ``L_k`` (the
low-rank top-k's own tie order decides, as for every item of ``T``).
``tol`` (relative, on ``theta``) covers the rounding of the dot products and
of the bounds.  Scores are summed in the order of the dense path
(``L + (((last + window) + skip) + category)``), the window term over the
bag's entries in their stored order, as SciPy's ``bag @ T1`` sums it, so
``S`` is the same bits as the dense path's.
"""
import numba as nb
import numpy as np

from .topk import _finish, _sift_down, _sift_up, _worse


@nb.njit(inline="always")
def _find(idx, lo, hi, x):
    """Position of ``x`` in the sorted ``idx[lo:hi]``, or -1."""
    while lo < hi:
        mid = (lo + hi) >> 1
        v = idx[mid]
        if v < x:
            lo = mid + 1
        elif v > x:
            hi = mid
        else:
            return mid
    return -1


@nb.njit(inline="always")
def _push(hs, hi, n, k, s, i):
    """Offer (s, i) to the row's min-heap of its k best (:mod:`.topk`'s order); returns its size."""
    if n < k:
        hs[n] = s
        hi[n] = i
        _sift_up(hs, hi, n)
        return n + 1
    if _worse(hs[0], hi[0], s, i):
        hs[0] = s
        hi[0] = i
        _sift_down(hs, hi, n, 0)
    return n


@nb.njit(inline="always")
def _fresh(i, r, mark, seen_ptr, seen_idx):
    """Whether item ``i`` is met for the first time in row ``r`` and not one of its seen items
    (it is marked either way: an item is looked at once per row)."""
    if mark[i] == r:
        return False
    mark[i] = r
    return _find(seen_idx, seen_ptr[r], seen_ptr[r + 1], i) < 0


@nb.njit(inline="always")
def _exact(Q, I, r, i, s, tc, w_cat, share_i):
    """The score in the dense path's order: ``L + (transitions + category)``."""
    L = 0.0
    for f in range(I.shape[1]):
        L += Q[r, f] * I[i, f]
    return L + (s + w_cat * (tc * share_i))


@nb.njit(inline="always")
def _value(ptr, idx, val, row, i):
    """Entry ``(row, i)`` of an index-sorted CSR table, 0 where absent."""
    q = _find(idx, ptr[row], ptr[row + 1], i)
    return val[q] if q >= 0 else 0.0


@nb.njit(inline="always")
def _transitions(i, a, p, blo, bhi, bag_idx, bag_val, w_last, w_window, w_skip, p1, i1, v1, p2, i2, v2):
    """``S(i)`` in the dense path's order: ``(last + window) + skip``, the window summed over the
    bag's entries in their stored order from 0 (SciPy's ``bag @ T1`` adds each product so)."""
    win = 0.0
    if w_window != 0.0:
        for j in range(blo, bhi):
            b = bag_idx[j]
            q = _find(i1, p1[b], p1[b + 1], i)
            if q >= 0:
                win += bag_val[j] * v1[q]
    last = _value(p1, i1, v1, a, i) if w_last != 0.0 else 0.0
    skip = _value(p2, i2, v2, p, i) if (p >= 0 and w_skip != 0.0) else 0.0
    return (w_last * last + w_window * win) + w_skip * skip


@nb.njit(inline="always")
def _category(tc_ptr, tc_cat, tc_val, r, c):
    """``TC[c_u, c]`` of row ``r`` (its next-category row, index-sorted), 0 where absent."""
    q = _find(tc_cat, tc_ptr[r], tc_ptr[r + 1], c)
    return tc_val[q] if q >= 0 else 0.0


@nb.njit(parallel=True, cache=True)
def sort_rows(ptr, idx, val, out_idx, out_val):
    """Each CSR row's entries by value, largest first (ties by column: ``idx`` is index-sorted)."""
    for r in nb.prange(len(ptr) - 1):
        lo, hi = ptr[r], ptr[r + 1]
        order = np.argsort(-val[lo:hi], kind="mergesort")
        for j in range(hi - lo):
            out_idx[lo + j] = idx[lo + order[j]]
            out_val[lo + j] = val[lo + order[j]]


@nb.njit(inline="always")
def _add_row(R, rt, rr, rw, rpos, rend, t, row, wt, ptr):
    """Add row ``row`` of table ``t`` with weight ``wt`` to the walk's ``R`` rows (a row named
    twice gets the weights summed; empty rows and zero weights are left out); returns R."""
    if row < 0 or wt <= 0.0 or ptr[row] == ptr[row + 1]:
        return R
    for u in range(R):
        if rt[u] == t and rr[u] == row:
            rw[u] += wt
            return R
    rt[R], rr[R], rw[R], rpos[R], rend[R] = t, row, wt, ptr[row], ptr[row + 1]
    return R + 1


@nb.njit(parallel=True, cache=True)
def rerank(t_idx, l_k, Q, I, last, prev, bag_ptr, bag_idx, bag_val, w_last, w_window, w_skip,
           p1, i1, v1, d1_idx, d1_val, p2, i2, v2, d2_idx, d2_val,
           tc_ptr, tc_cat, tc_val, w_cat, cat_ptr, cat_items, share, item_category,
           seen_ptr, seen_idx, tol, n_chunks, out_idx, out_score):
    """Exact top-k per row (see the module docstring); writes ``out_idx``/``out_score`` (k columns,
    best first, -1/-inf padding) and returns ``(items scored exactly, items whose S was looked up)``.

    Row ``r``'s transitions: its last item ``last[r]`` (``T1``, weight ``w_last``), its bag
    (``bag_*``, CSR; ``T1``, weight ``w_window`` times the bag's) and its previous item
    ``prev[r]`` (``T2``, weight ``w_skip``; -1: none).  ``p*/i*/v*``: the index-sorted tables,
    ``d*_idx/d*_val``: the same rows by value (:func:`sort_rows`)."""
    m, k = t_idx.shape
    n_items = I.shape[0]
    max_rows = 2
    for r in range(m):
        max_rows = max(max_rows, bag_ptr[r + 1] - bag_ptr[r] + 2)
    heap_n = np.zeros(m, np.int64)
    scored = np.zeros(n_chunks, np.int64)
    probed = np.zeros(n_chunks, np.int64)
    for ch in nb.prange(n_chunks):
        mark = np.full(n_items, -1, np.int64)
        rt = np.empty(max_rows, np.int64)           # the walk's rows: table (1 or 2), row, weight, cursor, end
        rr = np.empty(max_rows, np.int64)
        rw = np.empty(max_rows, np.float64)
        rpos = np.empty(max_rows, np.int64)
        rend = np.empty(max_rows, np.int64)
        for r in range(ch * m // n_chunks, (ch + 1) * m // n_chunks):
            hs, hi = out_score[r], out_idx[r]        # the row's heap, sorted in place by _finish
            n = 0
            full = t_idx[r, k - 1] >= 0             # T padded: every unseen item is already in T
            lk = l_k[r]
            a, p, blo, bhi = last[r], prev[r], bag_ptr[r], bag_ptr[r + 1]
            for j in range(k):                       # T, exactly
                i = t_idx[r, j]
                if i < 0 or not _fresh(i, r, mark, seen_ptr, seen_idx):
                    continue
                s = _transitions(i, a, p, blo, bhi, bag_idx, bag_val, w_last, w_window, w_skip,
                                 p1, i1, v1, p2, i2, v2)
                n = _push(hs, hi, n, k, _exact(Q, I, r, i, s, _category(tc_ptr, tc_cat, tc_val, r,
                                                                        item_category[i]),
                                                w_cat, share[i]), i)
                scored[ch] += 1
                probed[ch] += 1
            if not (full and n == k):
                heap_n[r] = n
                continue
            R = _add_row(0, rt, rr, rw, rpos, rend, 1, a, w_last, p1)     # the walk's rows
            for j in range(blo, bhi):
                R = _add_row(R, rt, rr, rw, rpos, rend, 1, bag_idx[j], w_window * bag_val[j], p1)
            R = _add_row(R, rt, rr, rw, rpos, rend, 2, p, w_skip, p2)
            cmax = 0.0                               # the largest category component of any item
            for q in range(tc_ptr[r], tc_ptr[r + 1]):
                c = tc_cat[q]
                if 0 <= c and c + 1 < len(cat_ptr) and cat_ptr[c] < cat_ptr[c + 1]:
                    cmax = max(cmax, w_cat * tc_val[q] * share[cat_items[cat_ptr[c]]])
            B = 0.0
            while True:                              # 1. the transition walk
                B = 0.0
                best = -1
                bh = 0.0
                for u in range(R):
                    if rpos[u] < rend[u]:
                        h = rw[u] * (d1_val[rpos[u]] if rt[u] == 1 else d2_val[rpos[u]])
                        B += h
                        if h > bh:
                            bh = h
                            best = u
                if best < 0:
                    B = 0.0
                    break                            # every row spent
                if lk + B + cmax < hs[0] - tol * (abs(hs[0]) + 1.0):
                    break                            # no item not yet met can reach theta
                i = d1_idx[rpos[best]] if rt[best] == 1 else d2_idx[rpos[best]]
                rpos[best] += 1
                if i >= n_items or not _fresh(i, r, mark, seen_ptr, seen_idx):
                    continue
                s = _transitions(i, a, p, blo, bhi, bag_idx, bag_val, w_last, w_window, w_skip,
                                 p1, i1, v1, p2, i2, v2)
                probed[ch] += 1
                tc = _category(tc_ptr, tc_cat, tc_val, r, item_category[i])
                if lk + (s + w_cat * (tc * share[i])) < hs[0] - tol * (abs(hs[0]) + 1.0):
                    continue                         # L(i) <= L_k outside T: it cannot reach theta
                n = _push(hs, hi, n, k, _exact(Q, I, r, i, s, tc, w_cat, share[i]), i)
                scored[ch] += 1
            for q in range(tc_ptr[r], tc_ptr[r + 1]):    # 2. each next category's items, largest share first
                wc = w_cat * tc_val[q]
                c = tc_cat[q]
                if wc <= 0.0 or c < 0 or c + 1 >= len(cat_ptr):
                    continue
                for u in range(cat_ptr[c], cat_ptr[c + 1]):
                    i = cat_items[u]
                    if lk + B + wc * share[i] < hs[0] - tol * (abs(hs[0]) + 1.0):
                        break                        # shares only fall from here: none can reach theta
                    if not _fresh(i, r, mark, seen_ptr, seen_idx):
                        continue
                    s = _transitions(i, a, p, blo, bhi, bag_idx, bag_val, w_last, w_window, w_skip,
                                     p1, i1, v1, p2, i2, v2)
                    probed[ch] += 1
                    if lk + (s + w_cat * (tc_val[q] * share[i])) < hs[0] - tol * (abs(hs[0]) + 1.0):
                        continue
                    n = _push(hs, hi, n, k, _exact(Q, I, r, i, s, tc_val[q], w_cat, share[i]), i)
                    scored[ch] += 1
            heap_n[r] = n
    _finish(out_score, out_idx, heap_n)
    return scored.sum(), probed.sum()
