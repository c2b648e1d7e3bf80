"""GCE-GNN global item graph: windowed co-occurrence counts, top neighbours.

The published script appends every pair to a list, counts them into one
insertion-ordered dict per item, then stable-sorts each dict by count
descending.  The equivalent here: scatter every pair's second item into its
first item's bucket *in visiting order* (a counting sort, which is stable),
then walk each bucket once, keeping distinct neighbours in first-appearance
order with their counts, and stable-sort those by count.  Rows are
independent, so the second phase runs in parallel and is deterministic.
"""
import numba as nb
import numpy as np

#: Row chunks per thread in the ranking phase.  Each chunk holds two int64
#: scratch arrays of ``n_items`` entries, so memory grows with it; more
#: chunks balance skewed (popular-item) rows better.
CHUNKS_PER_THREAD = 4


def _n_chunks(n_items):
    return max(1, min(nb.get_num_threads() * CHUNKS_PER_THREAD, n_items))


@nb.njit(cache=True)
def _bucket(ptr, items, n_items, epsilon, idx_dtype_example):
    n_seq = ptr.shape[0] - 1
    start = np.zeros(n_items + 1, dtype=np.int64)
    for s in range(n_seq):
        p0 = ptr[s]
        L = ptr[s + 1] - p0
        for k in range(1, epsilon + 1):
            for j in range(L - k):
                start[items[p0 + j] + 1] += 1
                start[items[p0 + j + k] + 1] += 1
    for i in range(n_items):
        start[i + 1] += start[i]
    nxt = start[:-1].copy()
    nb_ = np.empty(start[n_items], dtype=idx_dtype_example.dtype)
    # Visiting order of the published script: sequence, k, j; the forward pair
    # (s[j], s[j+k]) before the backward pair (s[j+k], s[j]).
    for s in range(n_seq):
        p0 = ptr[s]
        L = ptr[s + 1] - p0
        for k in range(1, epsilon + 1):
            for j in range(L - k):
                a = items[p0 + j]
                b = items[p0 + j + k]
                nb_[nxt[a]] = b
                nxt[a] += 1
                nb_[nxt[b]] = a
                nxt[b] += 1
    return start, nb_


@nb.njit(cache=True, parallel=True)
def _rank(start, nbrs, n_items, top, bounds, cnt_ws, n_distinct, n_keep):
    """Per item: distinct neighbours in first-appearance order with their
    counts, then the first ``top`` by count (ties: first appearance) moved to
    the bucket's head.  Chunk ``c`` owns rows ``bounds[c]:bounds[c+1]``
    (balanced by pair count) and its own dense scratch, so no hashing, no
    locks and no per-row allocation."""
    for c in nb.prange(bounds.shape[0] - 1):
        r0 = bounds[c]
        r1 = bounds[c + 1]
        if r0 >= r1:
            continue
        # seen[b] == a marks b as met in row a; slot[b] is then its distinct index
        slot = np.empty(n_items, dtype=np.int64)
        seen = np.full(n_items, -1, dtype=np.int64)
        kb = np.empty(top, dtype=nbrs.dtype)
        kc = np.empty(top, dtype=np.int64)
        for a in range(r0, r1):
            b0 = start[a]
            b1 = start[a + 1]
            m = 0
            for q in range(b0, b1):
                b = nbrs[q]
                if seen[b] != a:
                    seen[b] = a
                    slot[b] = m
                    nbrs[b0 + m] = b  # m <= q - b0: never overwrites unread entries
                    cnt_ws[b0 + m] = 1
                    m += 1
                else:
                    cnt_ws[b0 + slot[b]] += 1
            n_distinct[a] = m
            # Stable top-k by count: scan in first-appearance order and insert
            # behind every kept entry with an equal or larger count.
            sz = 0
            for i in range(m):
                c_i = cnt_ws[b0 + i]
                if sz == top and c_i <= kc[top - 1]:
                    continue
                pos = sz if sz < top else top - 1
                while pos > 0 and kc[pos - 1] < c_i:
                    if pos < top:
                        kb[pos] = kb[pos - 1]
                        kc[pos] = kc[pos - 1]
                    pos -= 1
                kb[pos] = nbrs[b0 + i]
                kc[pos] = c_i
                if sz < top:
                    sz += 1
            n_keep[a] = sz
            for i in range(sz):
                nbrs[b0 + i] = kb[i]
                cnt_ws[b0 + i] = kc[i]


@nb.njit(cache=True, parallel=True)
def _compact(start, nbrs, cnt_ws, indptr, indices, counts):
    n = indptr.shape[0] - 1
    for a in nb.prange(n):
        b0 = start[a]
        o = indptr[a]
        for i in range(indptr[a + 1] - o):
            indices[o + i] = nbrs[b0 + i]
            counts[o + i] = cnt_ws[b0 + i]


def n_pairs(ptr, epsilon):
    """Pairs the script would append (2 per (j, k) with j + k < L)."""
    lens = np.diff(ptr)
    tot = 0
    for k in range(1, epsilon + 1):
        tot += int(np.maximum(lens - k, 0).sum())
    return 2 * tot


def workspace_bytes(ptr, n_items, epsilon):
    """Peak temporary memory: bucketed pairs (index + count) and per-chunk scratch."""
    return n_pairs(ptr, epsilon) * 12 + n_items * (40 + 16 * _n_chunks(n_items))


def item_graph(ptr, items, n_items, epsilon, top):
    """Return (indptr, indices, counts, n_distinct) of the rank-ordered graph."""
    n_chunks = _n_chunks(n_items)
    idx_dtype = np.int32 if n_items <= np.iinfo(np.int32).max else np.int64
    start, nbrs = _bucket(ptr, items, n_items, epsilon, np.empty(0, dtype=idx_dtype))
    cnt_ws = np.empty(nbrs.shape[0], dtype=np.int64)
    n_distinct = np.zeros(n_items, dtype=np.int64)
    n_keep = np.zeros(n_items, dtype=np.int64)
    # chunk boundaries at equal shares of the pairs (popular items have long rows)
    cuts = np.searchsorted(start, np.linspace(0, start[-1], n_chunks + 1)[1:-1], side="left")
    bounds = np.concatenate(([0], cuts, [n_items])).astype(np.int64)
    _rank(start, nbrs, n_items, top, bounds, cnt_ws, n_distinct, n_keep)
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(n_keep, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = np.empty(nnz, dtype=idx_dtype)
    counts = np.empty(nnz, dtype=np.int64)
    _compact(start, nbrs, cnt_ws, indptr, indices, counts)
    return indptr, indices, counts, n_distinct
