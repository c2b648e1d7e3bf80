"""Independent jobs side by side on the machine's cores, in spawned worker processes.

The demo's stages after the split (the trained methods and each seed of
them, the graph summary, the oracle, the baselines) do not depend on each
other, and each runs on one thread: a training step's work is too small to
split (see ``stgkern.cli.demo``).  So they run one process per core.  Every
fit function seeds itself (``torch.manual_seed(seed)`` and its own
generators) and the kernels are bit-identical across thread counts, so a
job's result is the same bit for bit in a worker as in the calling process
(``tests/test_cli.py`` checks it).

Workers are spawned, not forked: forking a process whose OpenMP (PyTorch) or
Numba thread pools have started is unsafe.  Each worker runs PyTorch and
Numba on one thread, so ``n`` workers keep ``n`` cores busy and no more.
Progress (``progress(done, total)`` inside a fit) comes back over a queue,
at most twice a second per job.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

_QUEUE = None
_REPORT_EVERY = 0.5


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # macOS, Windows
        return os.cpu_count() or 1


def keep_freed_memory(mmap_threshold=256 << 20, trim_threshold=512 << 20):
    """Let glibc keep large freed blocks for reuse instead of returning them to the system.

    A training step allocates and frees several item-table-sized arrays (the
    kept logits, the table's gradients: 17 MB each on Diginetica).  Above
    glibc's mmap threshold each one comes as fresh pages, and the page faults
    of first touch cost more than the arithmetic on them (GCE-GNN: a step took
    157 ms with this and 180 without, same run; the demo's MovieLens models
    5-7 % faster).  Process-wide, so it is for training entry points
    (``stgkern train``, ``stgkern demo`` and its workers, the benchmarks),
    not for library calls; does nothing where ``mallopt`` is not glibc's.
    Returns whether it took effect.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, int(mmap_threshold))
                    and libc.mallopt(m_trim_threshold, int(trim_threshold)))
    except (OSError, AttributeError):
        return False


def one_thread_process():
    """Set this process up as a demo worker runs: freed memory kept (:func:`keep_freed_memory`),
    Numba and (when installed) PyTorch on one thread.  For worker processes and the benchmarks'
    child processes, not for library calls."""
    keep_freed_memory()
    import numba
    numba.set_num_threads(1)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def _init(q):
    global _QUEUE
    _QUEUE = q
    one_thread_process()
    from . import model  # noqa: F401  (imported once per worker, while the parent loads data)


def _ready():
    return os.getpid()


def _call(name, fn, args, kwargs):
    import inspect
    last = [-_REPORT_EVERY]

    def progress(done, total):
        now = time.perf_counter()
        if now - last[0] >= _REPORT_EVERY or done >= total:
            last[0] = now
            _QUEUE.put((name, int(done), int(total)))

    if "progress" in inspect.signature(fn).parameters:
        kwargs = dict(kwargs, progress=progress)
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


class Workers:
    """``n`` spawned worker processes; started at once, so they import while the caller works.

    ``submit(name, fn, *args, **kwargs)`` runs ``fn(*args, **kwargs)`` in a worker (with
    ``progress=`` a reporter when ``fn`` takes one) and returns a future of ``(result, seconds)``; ``fn`` must be importable by
    name (a module-level function) and its arguments picklable.  Use as a context
    manager: leaving it cancels what has not started and waits for the rest.
    """

    def __init__(self, n: int):
        ctx = mp.get_context("spawn")
        self.n = int(n)
        self.queue = ctx.Queue()
        self.pool = ProcessPoolExecutor(self.n, mp_context=ctx, initializer=_init, initargs=(self.queue,))
        self._ready = [self.pool.submit(_ready) for _ in range(self.n)]   # spawns all n now

    def submit(self, name, fn, *args, **kwargs):
        return self.pool.submit(_call, name, fn, args, kwargs)

    def progress(self) -> list:
        """The ``(name, done, total)`` reports that arrived since the last call."""
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue_module.Empty:
                return out

    def close(self, wait=True):
        """Cancel the jobs not started; with ``wait``, wait for the running ones and the exits.
        Without, the interpreter still waits for the workers to exit when it ends."""
        if self.pool is not None:
            self.pool.shutdown(wait=wait, cancel_futures=True)
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_any(futures, timeout):
    """``concurrent.futures.wait`` for the first of ``futures`` to finish, at most ``timeout`` s."""
    return wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
