"""Software prefetch for the row-gather kernels, and when to use it.

A pull kernel (spmm, message_passing, their backward over the transpose)
reads one source row per edge.  When the sources of nearby edges are far
apart in memory, every row is a cache miss, and the loop waits on them one
edge pair at a time: the hardware prefetchers cannot guess a random index.
The gathers (``_simd``) then ask for the row that edge ``k + distance`` will
read, so that many misses are in flight at once; this module decides the
distance, or none.

On a graph whose sources sit next to their destination (the window graph:
each event's sources are the few events just before it) the rows are already
in L1 and the extra instructions only cost time, so ``distance_for`` turns it
off there.  Measured on this project's 2-core benchmark machine with the
register gathers of ``_simd``: spmm, F=64 float32, power-law graph of 500k
nodes / 8M edges, 103 ms without prefetch, 93-94 ms at a distance of 8 or 16
edges, 97 at 32, 102 at 64, 105 at 4; on the 2M-event window graph 2%
slower with it (10-15% with the older scratch-row loop).  The figures of the
last run are in benchmarks/results/conv_cpu.json
(``t_kernel_prefetch_flipped`` is the same call with the choice reversed).

Prefetching never changes a result: the arithmetic and its order are the
same with and without it.
"""
from __future__ import annotations

import numpy as np

from .. import config

#: Bytes per cache line on the x86-64 and Arm server cores this targets.
LINE_BYTES = 64
#: Edges sampled to judge a graph's locality.
_SAMPLE = 4096
#: A sampled edge whose source row lies within this many bytes of its
#: destination row counts as local (a window graph's sources are a few rows back).
_LOCAL_BYTES = 16 * 1024


def _distances(g) -> np.ndarray:
    """Sorted |source - destination| over an even sample of edges; cached on ``g``."""
    d = getattr(g, "_gather_distances", None)
    if d is None:
        k = np.linspace(0, g.nnz - 1, min(g.nnz, _SAMPLE)).astype(np.int64)
        dst = np.searchsorted(g.indptr, k, side="right") - 1
        d = np.sort(np.abs(g.indices[k].astype(np.int64) - dst))
        g._gather_distances = d
    return d


def distance_for(g, row_bytes: int) -> int:
    """Prefetch distance in edges for a pull over ``g`` reading rows of
    ``row_bytes`` bytes; 0 means no prefetch.

    ``config.cpu_prefetch``: ``"auto"`` (prefetch unless most sampled edges
    are local, see the module docstring), ``True`` or ``False``.
    """
    mode = config.cpu_prefetch
    if mode is False or g.nnz == 0:
        return 0
    if mode == "auto":
        if g.nnz < _SAMPLE:
            return 0  # a small graph's rows are in cache after the first touch
        d = _distances(g)
        local = np.searchsorted(d, _LOCAL_BYTES // max(int(row_bytes), 1), side="right") / d.shape[0]
        if local >= 0.5:
            return 0
    elif mode is not True:
        raise ValueError(f"config.cpu_prefetch must be 'auto', True or False, got {mode!r}")
    dist = config.cpu_prefetch_distance
    if isinstance(dist, bool) or not isinstance(dist, (int, np.integer)) or dist < 1:
        raise ValueError(f"config.cpu_prefetch_distance must be a positive int (edges ahead), got {dist!r}")
    return int(dist)
