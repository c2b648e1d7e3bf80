"""The memory-copy yardstick for the CPU benchmarks.

Every CPU benchmark reports its effective bandwidth as a fraction of a copy
measured in the same run.  ``np.copyto`` is one ``memcpy`` on one thread, and
one core cannot saturate a server's memory: on this project's 2-core
benchmark machine a 512 MiB ``np.copyto`` measured 27 GB/s (read + write
counted) against 35 GB/s for the same copy split over both cores.  Kernels
that run on every core were being judged against the slower of the two,
which is how a kernel could show "132% of copy".  :func:`threaded_copy`
splits the copy into contiguous 1 MiB chunks over Numba's threads (the same
threads the kernels use), and :func:`best_copy_time` times both copies and
keeps the faster, so a percentage of copy never flatters a kernel.
"""
from __future__ import annotations

import time

import numba
import numpy as np
from numba import prange

#: Bytes per parallel task: large enough that the scheduling is noise,
#: small enough that both threads get equal shares of a 100 MB copy.
CHUNK_BYTES = 1 << 20


@numba.njit(cache=True, parallel=True)
def _copy_chunks(dst, src, chunk):
    n = src.shape[0]
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(n, lo + chunk)
        dst[lo:hi] = src[lo:hi]


def threaded_copy(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` for C-contiguous arrays of one dtype and size, over Numba's threads."""
    if not (dst.flags.c_contiguous and src.flags.c_contiguous):
        raise ValueError("threaded_copy needs C-contiguous arrays")
    if dst.dtype != src.dtype or dst.size != src.size:
        raise ValueError(f"threaded_copy needs arrays of one dtype and size, got {dst.dtype}[{dst.size}] "
                         f"and {src.dtype}[{src.size}]")
    _copy_chunks(dst.reshape(-1).view(np.uint8), src.reshape(-1).view(np.uint8), CHUNK_BYTES)


def copy_pair(nbytes: int):
    """Source and destination float32 arrays for a copy that moves ``nbytes``
    (half read, half written); both touched, so the copy meets mapped pages."""
    src = np.ones(max(nbytes // 8, 1), np.float32)
    return src, np.zeros_like(src)


def copies(dst, src) -> dict:
    """The two copies, by name, for benchmarks that interleave their own timing."""
    return {"copy_numpy": lambda: np.copyto(dst, src), "copy_threaded": lambda: threaded_copy(dst, src)}


def best_interleaved(fns: dict, reps: int = 5) -> dict:
    """Best-of-``reps`` seconds per function, after one untimed call each, the
    functions taking turns each round: on a shared machine the load drifts,
    and interleaving exposes a kernel, its peers and the copy to the same
    conditions, so their ratios hold."""
    for f in fns.values():
        f()
    t = {k: float("inf") for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            s = time.perf_counter()
            f()
            t[k] = min(t[k], time.perf_counter() - s)
    return t


def best_copy_time(dst, src, reps: int = 5) -> dict:
    """Best-of-``reps`` seconds of each copy, their turns interleaved, and ``best`` (the faster)."""
    t = best_interleaved(copies(dst, src), reps)
    t["best"] = min(t.values())
    return t
