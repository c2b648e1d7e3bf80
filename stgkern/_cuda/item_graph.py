"""GPU GCE-GNN global item graph (csrc/cuda/item_graph.cu).

Same functions and results as ``stgkern._numba.item_graph`` (``n_pairs``,
``workspace_bytes``, ``item_graph``: rank-ordered rows, int64 counts, the
distinct-neighbour count per item), on validated CuPy input.

The CPU scatters pairs into per-item buckets in visiting order and dedupes
each bucket with a dense ``seen`` array per thread; on the GPU a thread (or
warp) per item cannot own an ``n_items`` scratch array, and hashing would need
atomics, so the dedupe is a sort:

1. ``item_graph_pairs`` (thread per position) writes every pair at its
   visiting index (sequence, k, j, forward then backward);
2. a stable sort by (item, neighbour) -- ``cupy.argsort`` on a packed key, or
   ``cupy.lexsort`` when the key would not fit 63 bits -- puts every distinct
   (item, neighbour) in one run whose first element is its first appearance;
3. ``item_graph_count`` / ``item_graph_groups`` (warp per item) find the runs:
   neighbour, count and first appearance per distinct neighbour;
4. a sort of those groups by (item, count descending, first appearance) is
   the script's ranking (first appearances are distinct: no ties left);
5. ``item_graph_fill`` (warp per item) keeps each row's first ``top``.

Row boundaries come from ``searchsorted`` on the sorted rows, offsets from
``cumsum``: no atomics anywhere, deterministic.  CuPy is imported on first use.
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch
from ._loader import launch

_OP = "item_graph"
_T = np.int64  # the kernels' unused value type
_KEY_MAX = np.iinfo(np.int64).max  # largest packed sort key (tests lower it to reach lexsort)
INT32_MAX = np.iinfo(np.int32).max  # column indices int32 up to here (tests lower it)


def stable_order(keys, sizes, xp=None):
    """Indices that sort rows by ``keys`` (most significant first), ties in input order.

    ``sizes[i]`` bounds ``keys[i]`` (``0 <= keys[i] < sizes[i]``).  While the
    product of the sizes fits 63 bits the keys are packed into one int64 and
    sorted by one stable ``argsort`` (a radix sort on the GPU); otherwise
    ``lexsort`` with the input position as the last key (so stability does not
    depend on the sort).  ``xp``: the array module (default CuPy; the
    benchmark's compositions pass NumPy too).
    """
    if xp is None:
        import cupy as xp
    total = 1
    for s in sizes:
        total *= max(int(s), 1)
    if total <= _KEY_MAX:
        key = keys[0].astype(np.int64, copy=True)
        for k, s in zip(keys[1:], sizes[1:]):
            key *= max(int(s), 1)
            key += k
        return xp.argsort(key, kind="stable")
    n = keys[0].shape[0]
    return xp.lexsort(xp.stack([xp.arange(n, dtype=np.int64)] + [k.astype(np.int64) for k in reversed(keys)]))


def _pairs_per_sequence(ptr, epsilon):
    """2 * sum_{k=1..epsilon} max(L - k, 0) per sequence (closed form)."""
    import cupy as cp

    lens = ptr[1:] - ptr[:-1]
    K = cp.maximum(cp.minimum(lens - 1, epsilon), 0)
    return 2 * (K * lens - K * (K + 1) // 2)


def _epsilon(ptr, epsilon):
    # no pair spans more than a sequence: keeps the closed form in int64 for any epsilon
    return min(int(epsilon), max(int(ptr[-1]), 1))


def n_pairs(ptr, epsilon):
    """Pairs the script would append (2 per (j, k) with j + k < L)."""
    return int(_pairs_per_sequence(ptr, _epsilon(ptr, epsilon)).sum()) if ptr.shape[0] > 1 else 0


def workspace_bytes(ptr, n_items, epsilon):
    """Peak temporary device memory: the pairs (row, neighbour, sort key, order, sorted
    neighbours), the groups (neighbour, count, first, row, rank) and per-item offsets."""
    return n_pairs(ptr, epsilon) * 80 + n_items * 40


def item_graph(ptr, items, n_items, epsilon, top):
    """Return (indptr, indices, counts, n_distinct) of the rank-ordered graph."""
    import cupy as cp

    n_seq, n_pos = ptr.shape[0] - 1, items.shape[0]
    idx_dtype = np.int32 if n_items <= INT32_MAX else np.int64
    eps = _epsilon(ptr, epsilon)
    pair_ptr = _dispatch.offsets(_pairs_per_sequence(ptr, eps))
    P = int(pair_ptr[-1])
    row = cp.empty(P, dtype=np.int64)
    nbr = cp.empty(P, dtype=np.int64)
    launch(_OP, "item_graph_pairs", _T, idx_dtype, (n_pos + 31) // 32,
           (ptr, n_seq, items, n_pos, eps, pair_ptr, row, nbr))
    hi = int(items.max()) + 1 if n_pos else 1
    order = stable_order([row, nbr], [hi, hi])
    sb = nbr[order]
    rstart = cp.searchsorted(row[order], cp.arange(n_items + 1, dtype=np.int64), side="left").astype(np.int64)
    del row, nbr
    n_distinct = cp.empty(n_items, dtype=np.int64)
    launch(_OP, "item_graph_count", _T, idx_dtype, n_items, (rstart, n_items, sb, n_distinct))
    gptr = _dispatch.offsets(n_distinct)
    G = int(gptr[-1])
    gnbr, gcount, gfirst, grow = (cp.empty(G, dtype=np.int64) for _ in range(4))
    launch(_OP, "item_graph_groups", _T, idx_dtype, n_items,
           (rstart, n_items, sb, order, gptr, gnbr, gcount, gfirst, grow))
    del sb, order
    max_count = int(gcount.max()) if G else 1
    rank = stable_order([grow, max_count - gcount, gfirst], [hi, max_count, max(P, 1)])
    indptr = _dispatch.offsets(cp.minimum(n_distinct, top))
    nnz = int(indptr[-1])
    indices = cp.empty(nnz, dtype=idx_dtype)
    counts = cp.empty(nnz, dtype=np.int64)
    launch(_OP, "item_graph_fill", _T, idx_dtype, n_items, (gptr, indptr, n_items, rank, gnbr, gcount, indices, counts))
    return indptr, indices, counts, n_distinct
