"""Numba CPU kernels, one module per op.  They assume validated input.

Importing this package makes Numba's on-disk cache safe for several
processes at once (:func:`_lock_numba_cache`): the demo trains its models in
worker processes, which with a fresh cache compile kernels side by side.
"""


def _lock_numba_cache():
    """Hold an advisory file lock around each update and read of a Numba cache index.

    Numba saves a new specialisation by reading the function's index file,
    adding the entry (with the first free data-file name) and writing the
    index and the data file back, with no lock.  Two processes that compile
    two specialisations of one function at the same moment can both take the
    same data-file name, and the index can then point one signature at the
    other's machine code; a reader between the two writes can pair an index
    entry with a stale data file.  With an exclusive ``flock`` on
    ``<index>.lock`` around ``save`` and a shared one around ``load``, an
    update is atomic for every process that imported stgkern.  Where the
    lock file cannot be opened (a read-only cache folder), or on a platform
    without ``fcntl``, Numba runs as it does without stgkern.  The patch is
    process-wide, so it also covers other packages' cached functions.
    """
    try:
        import fcntl

        from numba.core import caching
    except ImportError:
        return False
    cls = getattr(caching, "IndexDataCacheFile", None)
    if cls is None or getattr(cls, "_stgkern_locked", False) or not all(
            callable(getattr(cls, name, None)) for name in ("save", "load")):
        return False

    def locked(fn, mode):
        def wrapper(self, *args, **kwargs):
            path = getattr(self, "_index_path", None)
            try:
                fh = open(path + ".lock", "a") if path else None
            except OSError:
                fh = None
            if fh is None:
                return fn(self, *args, **kwargs)
            with fh:
                fcntl.flock(fh, mode)
                try:
                    return fn(self, *args, **kwargs)
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        wrapper.__wrapped__ = fn
        return wrapper

    cls.save = locked(cls.save, fcntl.LOCK_EX)
    cls.load = locked(cls.load, fcntl.LOCK_SH)
    cls._stgkern_locked = True
    return True


_lock_numba_cache()
