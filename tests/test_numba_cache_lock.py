"""Numba's cache index under concurrent writers: stgkern's lock keeps every entry paired with its data."""
import multiprocessing as mp

import pytest

import stgkern._numba  # noqa: F401  (installs the lock)

caching = pytest.importorskip("numba.core.caching")
pytest.importorskip("fcntl")


def _writer(path, who, n, barrier):
    import stgkern._numba  # noqa: F401
    from numba.core.caching import IndexDataCacheFile
    f = IndexDataCacheFile(path, "fn", ("stamp", 1))
    barrier.wait()
    for i in range(n):
        f.save((who, i), {"who": who, "i": i, "pad": b"x" * 2000})


def test_concurrent_saves_keep_every_entry_with_its_own_data(tmp_path):
    assert caching.IndexDataCacheFile._stgkern_locked
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 40, barrier)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    f = caching.IndexDataCacheFile(str(tmp_path), "fn", ("stamp", 1))
    for w in range(3):
        for i in range(40):
            got = f.load((w, i))                  # none lost, none paired with another's data
            assert got is not None and (got["who"], got["i"]) == (w, i), (w, i, got)
