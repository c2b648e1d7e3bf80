"""Blocked full-catalogue top-k: BLAS scores a tile, Numba selects.

Each query row keeps a running top-k as a min-heap of (score, index) whose
root is the current worst kept item.  Items are visited in ascending index
order, so a newcomer with a score *equal* to the root always has a larger
index and loses the tie: the only test in the hot loop is ``s > root``, which
rejects almost every item once the heap has warmed up.

The selection kernels are serial on purpose.  The matmul (multithreaded
BLAS) and the selection alternate once per tile; with a parallel Numba
kernel in between, the idle OpenMP and OpenBLAS worker threads spin-wait
against each other on every switch, which measured 20-30x slower on two
cores (200k items x 256 queries: 2.1 s against 0.06 s).  Serial selection
costs about 0.35 ns per score, a few percent of the matmul, so the BLAS
threads carry the parallelism.
"""
import numba as nb
import numpy as np

from .. import config

#: Items per fused sub-tile: the matmul writes a (TILE_ITEMS, rows) tile that
#: the selection reads back while it is still in cache (256 rows x 8192
#: items x 4 bytes = 8 MiB, inside L3).  2048 (L2-sized) ran as fast on a
#: quiet machine, but every tile is one fork/join of the BLAS threads, and on
#: a loaded machine each of those can wait a scheduler slice: fewer, larger
#: tiles hold up better.  32768 was ~50% slower (tile spills L3).
TILE_ITEMS = 8192
#: Query rows one selection task handles; the per-item rejection test is a
#: vector compare over this many rows.
ROW_CHUNK = 64
#: Query columns of every score product come in whole panels of this many (zero-padded): no
#: GEMV path and no ragged edge kernel, so a query's scores do not depend on the others'.  One
#: query then costs 16x the GEMV's flops: over 1M items, 73 ms against 57 at 65 dims, and about
#: 2.5x the GEMV's time at 193 (``config.topk_fixed_shape`` turns it off).
QUERY_PAD = 16


@nb.njit(inline="always")
def _worse(s_a, i_a, s_b, i_b):
    return s_a < s_b or (s_a == s_b and i_a > i_b)


@nb.njit(inline="always")
def _sift_down(hs, hi, n, pos):
    s = hs[pos]
    i = hi[pos]
    while True:
        c = 2 * pos + 1
        if c >= n:
            break
        if c + 1 < n and _worse(hs[c + 1], hi[c + 1], hs[c], hi[c]):
            c += 1
        if _worse(hs[c], hi[c], s, i):
            hs[pos] = hs[c]
            hi[pos] = hi[c]
            pos = c
        else:
            break
    hs[pos] = s
    hi[pos] = i


@nb.njit(inline="always")
def _sift_up(hs, hi, pos):
    s = hs[pos]
    i = hi[pos]
    while pos > 0:
        p = (pos - 1) // 2
        if _worse(s, i, hs[p], hi[p]):
            hs[pos] = hs[p]
            hi[pos] = hi[p]
            pos = p
        else:
            break
    hs[pos] = s
    hi[pos] = i


def _push_body(hs, hi, n, k, s, i):
    """Offer (s, i) to a row's min-heap of its ``k`` best (size ``n`` <= k, this module's order:
    higher score first, ties to the lower index); returns the heap's new size."""
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


#: :func:`_push_body` inlined into the caller's IR (hot loops); ``push`` is the same body as a
#: call, for kernels that run rarely and whose compile time in a fresh install matters more.
_push = nb.njit(inline="always")(_push_body)
push = nb.njit(_push_body)


@nb.njit(cache=True)
def _mark_excluded(ST, row0, col0, ex_ptr, ex_idx, ex_pos):
    """Set the scores of excluded items in the tile to NaN, which the
    selection never accepts; advance each row's exclusion cursor."""
    n_cols = ST.shape[0]
    n_rows = ST.shape[1]
    for rr in range(n_rows):
        r = row0 + rr
        p = ex_pos[r]
        pend = ex_ptr[r + 1]
        while p < pend and ex_idx[p] < col0 + n_cols:
            ST[ex_idx[p] - col0, rr] = np.nan
            p += 1
        ex_pos[r] = p


@nb.njit(cache=True)
def _select(ST, row0, col0, heap_s, heap_i, heap_n, thr):
    """Merge the tile ``ST[c, rr] = score(row0 + rr, col0 + c)`` into the
    running top-k of each row.

    ``thr[r]`` is the score to beat: the heap root once the heap is full,
    else -inf.  Rows are split into chunks of ROW_CHUNK; per item a
    vectorisable OR of ``score > thr`` over the chunk rejects the item for
    all rows at once, and only a hit falls into the scalar heap update.
    """
    n_cols = ST.shape[0]
    n_rows = ST.shape[1]
    k = heap_s.shape[1]
    n_chunks = (n_rows + ROW_CHUNK - 1) // ROW_CHUNK
    for ch in range(n_chunks):
        lo = ch * ROW_CHUNK
        hi = min(n_rows, lo + ROW_CHUNK)
        t = thr[row0 + lo:row0 + hi]
        for c in range(n_cols):
            srow = ST[c, lo:hi]
            hit = False
            for j in range(hi - lo):
                hit |= srow[j] > t[j]
            if not hit:
                continue
            for j in range(hi - lo):
                s = srow[j]
                if s > t[j]:
                    r = row0 + lo + j
                    hs = heap_s[r]
                    hix = heap_i[r]
                    n = heap_n[r]
                    if n < k:
                        hs[n] = s
                        hix[n] = col0 + c
                        _sift_up(hs, hix, n)
                        n += 1
                        heap_n[r] = n
                        if n == k:
                            t[j] = hs[0]
                    else:
                        # equal scores never get here: later items have
                        # larger indices and lose the tie
                        hs[0] = s
                        hix[0] = col0 + c
                        _sift_down(hs, hix, k, 0)
                        t[j] = hs[0]


@nb.njit(cache=True)
def _finish(heap_s, heap_i, heap_n):
    """Pop each heap worst-first into the tail: rows end sorted best-first;
    unfilled slots get index -1 and score -inf."""
    m = heap_s.shape[0]
    k = heap_s.shape[1]
    for r in range(m):
        hs = heap_s[r]
        hi = heap_i[r]
        n = heap_n[r]
        for j in range(n, k):
            hs[j] = -np.inf
            hi[j] = -1
        while n > 1:
            s = hs[0]
            i = hi[0]
            n -= 1
            hs[0] = hs[n]
            hi[0] = hi[n]
            _sift_down(hs, hi, n, 0)
            hs[n] = s
            hi[n] = i


def topk(Q, items, k, exclude, fixed_shape=None):
    """Validated input: ``Q`` (m, d), ``items`` (n_items, d) C-contiguous,
    same float dtype; ``exclude`` None or ``(indptr int64, indices int64)``
    with every row sorted ascending.  ``fixed_shape`` (default
    ``config.topk_fixed_shape``): pad query blocks to whole panels (below).
    Returns ``(indices, scores)``."""
    m = Q.shape[0]
    n_items = items.shape[0]
    heap_s = np.empty((m, k), dtype=Q.dtype)
    heap_i = np.empty((m, k), dtype=np.int64)
    heap_n = np.zeros(m, dtype=np.int64)
    thr = np.full(m, -np.inf, dtype=Q.dtype)
    if exclude is not None:
        ex_ptr, ex_idx = exclude
        ex_pos = ex_ptr[:-1].copy()
    rows_b = max(1, int(config.topk_block_rows))
    items_b = max(1, int(config.topk_block_items))
    tile = max(1, min(items_b, TILE_ITEMS))
    buf = np.empty(rows_b * tile, dtype=Q.dtype)
    # Item blocks outermost: a block of item vectors comes from memory once
    # and is reused by every query block; the tile loop inside keeps each
    # score tile in cache between the matmul and the selection.  The tile is
    # item-major (items @ Q.T) so that one item's scores for all rows of the
    # block are contiguous for the vector rejection test.
    #
    # Every matmul has a multiple of QUERY_PAD query columns: a ragged block of queries is padded
    # with zero rows (the extra columns are dropped before the selection).  BLAS rounds an element
    # by the shape of the product it sits in (a single query goes down a GEMV path, ragged columns
    # down edge kernels); with whole column panels a query gets the same scores whichever queries
    # are ranked with it: a user's top-k is the same bits in any batch, part or worker.
    fixed = bool(config.topk_fixed_shape if fixed_shape is None else fixed_shape)
    pad = np.zeros((rows_b + QUERY_PAD, Q.shape[1]), dtype=Q.dtype)
    pbuf = np.empty((rows_b + QUERY_PAD) * tile, dtype=Q.dtype)
    for c0 in range(0, n_items, items_b):
        c1 = min(n_items, c0 + items_b)
        for r0 in range(0, m, rows_b):
            r1 = min(m, r0 + rows_b)
            nq = r1 - r0
            wide = -(-nq // QUERY_PAD) * QUERY_PAD if fixed else nq
            if wide != nq:
                pad[:nq] = Q[r0:r1]
                pad[nq:wide] = 0
            QbT = Q[r0:r1].T if wide == nq else pad[:wide].T
            for t0 in range(c0, c1, tile):
                t1 = min(c1, t0 + tile)
                ST = buf[: (t1 - t0) * nq].reshape(t1 - t0, nq)
                if wide == nq:
                    np.matmul(items[t0:t1], QbT, out=ST)
                else:
                    SP = pbuf[: (t1 - t0) * wide].reshape(t1 - t0, wide)
                    np.matmul(items[t0:t1], QbT, out=SP)
                    ST[:] = SP[:, :nq]
                if exclude is not None:
                    _mark_excluded(ST, r0, t0, ex_ptr, ex_idx, ex_pos)
                _select(ST, r0, t0, heap_s, heap_i, heap_n, thr)
    _finish(heap_s, heap_i, heap_n)
    return heap_i, heap_s


forward = topk
