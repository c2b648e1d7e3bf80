"""Exact top-k of the closed-form model's scores without the dense score matrix.

A user's score of item i is ``L(i) + S(i) + C(i)``: the ridge's low-rank
part ``L`` (a dot product, plus the item prior), the transition components
``S(i) = (a_last * T1[last, i] + a_window * window(i)) + a_skip * T2[prev, i]
>= 0`` with ``window(i) = sum_b bag_b * T1[b, i]`` (first-order, window and
skip transitions: nonzero only on the successors of the user's recent items)
and the category component ``C(i) = w * TC[c_u, cat(i)] * share(i) >= 0``
(next-category probability times the item's share of its category).

The user's transitions are scattered into per-thread dense accumulators
(an item's row: the user it was last touched for, then last, window, skip:
one cache line, reset lazily when a new user touches it), so ``S`` of any
item is read in O(1); the support is the list of items the scatter touched
(about ten rows of ``T1``/``T2``: ~10k items a user at 100M events, ~0.1 ms).
``window`` adds the bag's entries in their stored order from 0, exactly as
SciPy's ``bag @ T1`` does (``sums[k] += v * B[j, k]``), and ``S`` is summed
in the dense path's order, so ``S`` is the dense path's bits and a score
differs from it only by the dot product's rounding.  (A threshold walk down
value-sorted copies of the rows, which never forms the support, was tried
and measured slower: the category bound, 0.03-0.3 at 100M, exceeds the gap
``theta - L_k``, 0.003-0.03, so the walk met every item of the support, and
each met item's ``S`` cost ~10 binary searches, ~2 us against ~25 ns here.)

Given ``T``, the exact top-k of ``L`` over the user's unseen items (from
:func:`stgkern.topk`, one GEMM pass over the catalogue) with k-th score
``L_k``, an unseen item outside ``T`` and outside the support of ``S`` has
``L(i) <= L_k`` and so scores at most ``L_k + w * TC[c_u, cat(i)] * share(i)``.
The kernel scores ``T`` exactly and takes the k-th of those scores as the
threshold ``theta`` (raised as better items are found).  An item of the
support of ``S`` gets its dot product only where its bound
``L_k + S(i) + C(i)`` reaches ``theta``; then each next category's items
are walked by share, largest first, and a category stops at the first item
whose bound falls below ``theta``; an item there is outside the support
(each support item was looked at once above), so ``S(i) = 0``.  Every item
skipped provably cannot enter the top-k: its bound uses its ``S`` and ``C``
as the dense path computes them, and ``tol`` (relative, on ``theta``)
covers the rounding of the dot products, the only place the two paths'
arithmetic differs (``topk``'s ``L`` against the kernel's, the dense
path's GEMM against both).  ``theta`` only rises, so an item pruned stays
pruned.
"""
import numba as nb
import numpy as np

from .. import config
from ._twin import named
from .topk import _finish, _push, push

# The row helpers below are plain functions, bound at the end of the module: the parallel rerank
# inlines them into its IR (its prange body is compiled with the arrays marked non-aliasing, and
# inlined the helpers' accesses are too); the serial one calls them: its first compile in a fresh
# install takes ~1.5 s less (the demo's replay compiles only the serial one), and it runs within
# noise of the inlined one (MovieLens' 610 users: 27.8-28.7 against 26.8-27.9 ms a call).


def _exact(Q, I, r, i, s, tc, w_cat, share_i):
    """The score in the dense path's order: ``L + (transitions + category)``."""
    L = 0.0
    for f in range(I.shape[1]):
        L += Q[r, f] * I[i, f]
    return L + (s + w_cat * (tc * share_i))


def _touch(i, r, acc, sup, n_sup):
    """Put item ``i`` in row ``r``'s support (its accumulators zeroed) if it is not there yet.
    ``acc[i]``: (row whose support holds i, last, window, skip), one cache line an item."""
    if acc[i, 0] != r:
        acc[i, 0] = r
        acc[i, 1] = 0.0
        acc[i, 2] = 0.0
        acc[i, 3] = 0.0
        sup[n_sup] = i
        n_sup += 1
    return n_sup


def _transitions(acc, i, r, w_last, w_window, w_skip):
    """``S(i)`` of row ``r`` from its accumulators (0 outside its support), in the dense path's
    order: ``(last + window) + skip``."""
    if acc[i, 0] != r:
        return 0.0
    return (w_last * acc[i, 1] + w_window * acc[i, 2]) + w_skip * acc[i, 3]


def rerank(t_idx, l_k, Q, I, last_item, prev_item, bag_ptr, bag_idx, bag_val, w_last, w_window, w_skip,
           p1, i1, v1, p2, i2, v2, tc_ptr, tc_cat, tc_val, w_cat, cat_ptr, cat_items, share, item_category,
           seen_ptr, seen_idx, tol, n_chunks, mark_buf, acc_buf, base, out_idx, out_score):
    """:func:`_rerank_body` compiled parallel for calls of ``config.rerank_parallel_min_rows`` rows
    or more, serial below.  The parallel kernel runs twice as fast even on one thread (its loop
    body is compiled with the arrays marked non-aliasing) but takes 11.5 s to compile in a fresh
    install against 4 s: a recommend block or a part takes it, a served user or the demo's
    replay of a few hundred users need not wait for it."""
    kernel = _rerank_parallel if t_idx.shape[0] >= config.rerank_parallel_min_rows else _rerank_serial
    return kernel(t_idx, l_k, Q, I, last_item, prev_item, bag_ptr, bag_idx, bag_val, w_last, w_window, w_skip,
                  p1, i1, v1, p2, i2, v2, tc_ptr, tc_cat, tc_val, w_cat, cat_ptr, cat_items, share, item_category,
                  seen_ptr, seen_idx, tol, n_chunks, mark_buf, acc_buf, base, out_idx, out_score)


def _rerank_body(t_idx, l_k, Q, I, last_item, prev_item, bag_ptr, bag_idx, bag_val, w_last, w_window, w_skip,
                 p1, i1, v1, p2, i2, v2, tc_ptr, tc_cat, tc_val, w_cat, cat_ptr, cat_items, share, item_category,
                 seen_ptr, seen_idx, tol, n_chunks, mark_buf, acc_buf, base, out_idx, out_score):
    """Exact top-k per row (see the module docstring); writes ``out_idx``/``out_score`` (k columns,
    best first, -1/-inf padding) and returns ``(items scored exactly, size of the supports)``.

    Row ``r``'s transitions: its last item ``last_item[r]`` (``T1``: ``p1/i1/v1``, weight
    ``w_last``), its bag (``bag_*``, CSR in SciPy's stored order; ``T1``, weight ``w_window``)
    and its previous item ``prev_item[r]`` (``T2``: ``p2/i2/v2``, weight ``w_skip``; -1: none).
    ``tc_*``: each row's next-category row (CSR, any order).  Rows are split into ``n_chunks``
    parallel chunks, each with its own accumulators: ``mark_buf[ch]`` (n_cols,) and
    ``acc_buf[ch]`` (n_cols, 4), kept by the caller across calls (at a million items they are
    40 MB a chunk, more than a served user's whole rerank to fill).  Row ``r`` stamps them with
    ``base + r``, so the caller passes a ``base`` above every stamp already written (first -1
    everywhere, then ``base`` grows by the rows of each call) and nothing needs clearing."""
    m, k = t_idx.shape
    n_items = I.shape[0]
    n_cols = max(n_items, len(p1) - 1, len(p2) - 1)      # the tables' columns (an extra unknown item)
    cap = 1
    for r in range(m):                                       # the largest support a row can have
        c = 0
        for j in range(bag_ptr[r], bag_ptr[r + 1]):
            c += p1[bag_idx[j] + 1] - p1[bag_idx[j]]
        c += p1[last_item[r] + 1] - p1[last_item[r]]
        if prev_item[r] >= 0:
            c += p2[prev_item[r] + 1] - p2[prev_item[r]]
        cap = max(cap, c)
    n_cat = len(cat_ptr) - 1
    heap_n = np.zeros(m, np.int64)
    scored = np.zeros(n_chunks, np.int64)
    support = np.zeros(n_chunks, np.int64)
    for ch in nb.prange(n_chunks):
        mark = mark_buf[ch]                              # row r's seen items and T (stamp st)
        acc = acc_buf[ch]                                # see _touch
        sup = np.empty(cap, np.int64)
        catw = np.zeros(n_cat)                           # TC[c_u, c], row r's
        for r in range(ch * m // n_chunks, (ch + 1) * m // n_chunks):
            hs, hi = out_score[r], out_idx[r]            # the row's heap, sorted in place by _finish
            st = base + r
            n = 0
            full = t_idx[r, k - 1] >= 0                 # T padded: every unseen item is already in T
            lk = l_k[r]
            n_sup = 0
            if w_window != 0.0:
                for j in range(bag_ptr[r], bag_ptr[r + 1]):  # SciPy's bag @ T1: bag entries in order
                    b, beta = bag_idx[j], bag_val[j]
                    for q in range(p1[b], p1[b + 1]):
                        i = i1[q]
                        n_sup = _touch(i, st, acc, sup, n_sup)
                        acc[i, 2] += beta * v1[q]
            if w_last != 0.0:
                a = last_item[r]
                for q in range(p1[a], p1[a + 1]):
                    n_sup = _touch(i1[q], st, acc, sup, n_sup)
                    acc[i1[q], 1] += v1[q]             # (+=: a duplicate entry sums, as in toarray())
            a = prev_item[r]
            if w_skip != 0.0 and a >= 0:
                for q in range(p2[a], p2[a + 1]):
                    n_sup = _touch(i2[q], st, acc, sup, n_sup)
                    acc[i2[q], 3] += v2[q]
            support[ch] += n_sup
            for q in range(tc_ptr[r], tc_ptr[r + 1]):
                if 0 <= tc_cat[q] < n_cat:
                    catw[tc_cat[q]] = tc_val[q]
            for q in range(seen_ptr[r], seen_ptr[r + 1]):
                mark[seen_idx[q]] = st                    # seen: never scored
            for j in range(k):                           # T, exactly
                i = t_idx[r, j]
                if i < 0 or mark[i] == st:
                    continue
                mark[i] = st
                c = catw[item_category[i]]
                n = _push(hs, hi, n, k, _exact(Q, I, r, i, _transitions(acc, i, st, w_last, w_window, w_skip), c,
                                               w_cat, share[i]), i)
                scored[ch] += 1
            prune = full and n == k
            for j in range(n_sup):                       # the support, where its bound reaches theta
                i = sup[j]                               # (each once: T and seen items are marked)
                if i >= n_items:
                    continue
                s = _transitions(acc, i, st, w_last, w_window, w_skip)
                c = catw[item_category[i]]
                if prune and lk + (s + w_cat * (c * share[i])) < hs[0] - tol * (abs(hs[0]) + 1.0):
                    continue                             # L(i) <= L_k outside T: it cannot reach theta
                if mark[i] == st:
                    continue
                n = _push(hs, hi, n, k, _exact(Q, I, r, i, s, c, w_cat, share[i]), i)
                scored[ch] += 1
            if full and n == k:
                for p in range(tc_ptr[r], tc_ptr[r + 1]):    # each next category's items, largest share first
                    a_c = w_cat * tc_val[p]
                    c = tc_cat[p]
                    if a_c <= 0.0 or c < 0 or c >= n_cat:
                        continue
                    for q in range(cat_ptr[c], cat_ptr[c + 1]):
                        i = cat_items[q]
                        if lk + a_c * share[i] < hs[0] - tol * (abs(hs[0]) + 1.0):
                            break                        # shares only fall from here: none can reach theta
                        if acc[i, 0] == st or mark[i] == st:
                            continue                     # the support's, T's (all looked at above) or seen
                        # not in the support: no transition part
                        n = _push(hs, hi, n, k, _exact(Q, I, r, i, 0.0, tc_val[p], w_cat, share[i]), i)
                        scored[ch] += 1
            for q in range(tc_ptr[r], tc_ptr[r + 1]):
                if 0 <= tc_cat[q] < n_cat:
                    catw[tc_cat[q]] = 0.0
            heap_n[r] = n
    _finish(out_score, out_idx, heap_n)
    return scored.sum(), support.sum()


_HELPERS = (_exact, _touch, _transitions)
_rerank_parallel = nb.njit(cache=True, parallel=True)(named(
    _rerank_body, "_rerank_parallel", _push=_push, **{f.__name__: nb.njit(inline="always")(f) for f in _HELPERS}))
_rerank_serial = nb.njit(cache=True)(named(                                   # prange is range here
    _rerank_body, "_rerank_serial", _push=push, **{f.__name__: nb.njit(f) for f in _HELPERS}))


@nb.njit(cache=True)
def mix_ndcg20(base, comps, w, ex_ptr, ex_idx, target, k, gain):
    """Each row's NDCG@k term (into ``gain``; their mean is the figure) of the scores
    ``base + (0 + w[0] comps[0] + w[1] comps[1] + ...)`` (dense float64 (m, n), summed in that
    order, so each score is the bits the NumPy expression gives) from each target's rank alone:
    the non-excluded items scoring higher, and those tied with a lower index.

    What the closed form's coordinate ascent over its mixing weights evaluates some forty times;
    here the mixed matrix is never formed (NumPy made a temporary for each term, then a masked copy
    and two comparison matrices).  ``ex_ptr``/``ex_idx``: CSR of each row's excluded items.
    """
    m, n = base.shape
    excl = np.zeros(n, np.bool_)
    for r in range(m):
        gain[r] = 0.0
        for e in range(ex_ptr[r], ex_ptr[r + 1]):
            excl[ex_idx[e]] = True
        t = target[r]
        if not excl[t]:
            acc = 0.0
            for c in range(len(comps)):
                acc = acc + w[c] * comps[c][r, t]
            ts = base[r, t] + acc
            if np.isfinite(ts):
                rank = 0
                for j in range(n):
                    if excl[j]:
                        continue
                    acc = 0.0
                    for c in range(len(comps)):
                        acc = acc + w[c] * comps[c][r, j]
                    s = base[r, j] + acc
                    if s > ts or (s == ts and j < t):
                        rank += 1
                if rank < k:
                    gain[r] = 1.0 / np.log2(rank + 2.0)
        for e in range(ex_ptr[r], ex_ptr[r + 1]):
            excl[ex_idx[e]] = False
