"""GPU full-catalogue top-k (csrc/cuda/topk.cu): cuBLAS scores a tile, a CUDA kernel selects.

For each block of ``config.topk_block_items`` items (outermost, ascending)
and each block of ``config.topk_block_rows`` query rows, ``cupy.matmul``
writes the score tile ``Q[r0:r1] @ items[c0:c1].T`` into one reused buffer
and ``topk_select`` (one CUDA block per query row) merges it into the
running top-k held in the output arrays themselves.  Memory: the outputs
(m·k) plus one tile (rows_block · items_block values).

Ties go to the lower item index and rows with fewer than k candidates pad
with -1 / -inf, as in ``stgkern._numba.topk``.  The selection's shared
buffer holds k + threads-per-block candidates (at most 2048), so k <= 1024
runs on the GPU; a larger k falls back to the CPU selection (the inputs are
copied to the host and the result back), which is correct but slow.
"""
from __future__ import annotations

import numpy as np

from .. import config
from ._loader import _threads, launch_blocks

#: Largest k the selection kernel handles (shared buffer of 2048 candidates).
MAX_K = 1024
_CAP = 2048


def _block_threads(k: int) -> int:
    # k + threads must fit the shared buffer; fewer threads for a large k
    threads = _threads()
    while threads > 32 and k + threads > _CAP:
        threads //= 2
    return threads


def _cpu_fallback(Q, items, k, exclude):
    import cupy as cp

    from .._numba import topk as cpu
    ex = None if exclude is None else (cp.asnumpy(exclude[0]), cp.asnumpy(exclude[1]))
    idx, s = cpu.topk(cp.asnumpy(Q), cp.asnumpy(items), k, ex)
    return cp.asarray(idx), cp.asarray(s)


def topk(Q, items, k, exclude):
    """Validated input as in ``stgkern._numba.topk.topk``; returns ``(indices int64 (m, k), scores (m, k))``."""
    import cupy as cp

    if k > MAX_K:
        return _cpu_fallback(Q, items, k, exclude)
    m, n_items = Q.shape[0], items.shape[0]
    best_s = cp.full((m, k), -np.inf, dtype=Q.dtype)
    best_i = cp.full((m, k), -1, dtype=np.int64)
    ex_ptr, ex_idx = (None, None) if exclude is None else exclude
    rows_b = max(1, int(config.topk_block_rows))
    items_b = max(1, int(config.topk_block_items))
    buf = cp.empty(min(rows_b, m) * min(items_b, n_items), dtype=Q.dtype)
    threads = _block_threads(k)
    for c0 in range(0, n_items, items_b):
        c1 = min(n_items, c0 + items_b)
        itemsT = items[c0:c1].T
        for r0 in range(0, m, rows_b):
            r1 = min(m, r0 + rows_b)
            tile = buf[: (r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
            cp.matmul(Q[r0:r1], itemsT, out=tile)
            launch_blocks("topk", "topk_select", Q.dtype, np.int32, r1 - r0,
                          (tile, r1 - r0, c1 - c0, r0, c0, ex_ptr, ex_idx, best_s, best_i, k), threads=threads)
    return best_i, best_s


forward = topk
