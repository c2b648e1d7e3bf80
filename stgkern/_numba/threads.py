"""Chunks of a ``nogil`` Numba function side by side on Python threads.

For kernels whose parallel loop only hands out independent chunks to a row
function, run rarely enough that compiling the loop costs more than it
saves: a ``prange`` costs seconds of compilation in a fresh install, a
thread pool over the compiled row function nothing, and ~20 us a chunk to
run (the synthetic generator's and the oracle's kernels: 6.0 -> 3.7 s and
5.0 -> 2.9 s at first call).  Not for hot kernels: Numba compiles a
``prange`` body with its arrays marked non-aliasing and a plain function
without, and the closed form's rerank ran at half speed as a row function
even on one thread (it keeps its ``prange``; see ``closed_form.rerank``).
The row function must be ``@njit(nogil=True)`` and write disjoint parts of
its outputs per chunk; the result does not depend on the chunking.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numba

_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def _pool(n_threads: int) -> ThreadPoolExecutor:
    with _LOCK:
        pool = _POOLS.get(n_threads)
        if pool is None:
            pool = _POOLS[n_threads] = ThreadPoolExecutor(n_threads, thread_name_prefix="stgkern")
        return pool


def run_chunks(fn, n: int, parallel: bool, *args, n_chunks: int | None = None) -> list:
    """``fn(lo, hi, *args)`` over ``[0, n)``: one call when ``parallel`` is false or Numba has one
    thread, else ``n_chunks`` contiguous ranges (default four per thread) taken in turn by
    ``numba.get_num_threads()`` threads, the calling one among them, each taking the next range
    when done with one (rows of uneven cost balance out; each call unboxes its arguments holding
    the GIL, ~2 us an array, so a few chunks a thread is the sweet spot).  Returns the calls'
    results in range order."""
    threads = numba.get_num_threads()
    if not parallel or threads < 2 or n < 2:
        return [fn(0, n, *args)]
    chunks = max(1, min(n, n_chunks if n_chunks else 4 * threads))
    todo = iter([(c, c * n // chunks, (c + 1) * n // chunks) for c in range(chunks)])
    out = [None] * chunks
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                job = next(todo, None)
            if job is None:
                return
            out[job[0]] = fn(job[1], job[2], *args)

    helpers = [_pool(threads - 1).submit(work) for _ in range(min(threads, chunks) - 1)]
    work()
    for h in helpers:
        h.result()
    return out
