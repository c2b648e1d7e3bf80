"""The helpers that keep a fresh install's compilation short: the in-place integer sort and the
serial/parallel kernel twins (that both twins give the same results is checked with each kernel:
the window graph's, session graphs', node features' serial-vs-parallel tests)."""
import numba
import numpy as np
import pytest

from stgkern import config
from stgkern._numba import _sort, _twin


@pytest.mark.parametrize("n", [0, 1, 2, 3, 15, 16, 17, 40, 257, 1000])
def test_sort_range_matches_numpy(n):
    rng = np.random.default_rng(n)
    for a in (rng.integers(-5, 5, n), rng.integers(0, 1 << 40, n), np.arange(n), np.arange(n)[::-1].copy(),
              np.full(n, 7)):
        a = a.astype(np.int64)
        pad = rng.integers(-99, 99, 3)
        buf = np.concatenate([pad, a, pad])                     # a sub-range: the rest stays put
        _sort.sort_range(buf, 3, 3 + n)
        np.testing.assert_array_equal(buf[3:3 + n], np.sort(a))
        np.testing.assert_array_equal(buf[:3], pad)
        np.testing.assert_array_equal(buf[3 + n:], pad)


def test_use_threads_needs_rows_and_a_second_thread():
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert not _twin.use_threads(10 ** 9)
        if numba.config.NUMBA_NUM_THREADS >= 2:
            numba.set_num_threads(2)
            assert _twin.use_threads(config.cpu_serial_rows)
            assert not _twin.use_threads(config.cpu_serial_rows - 1)
    finally:
        numba.set_num_threads(old)


def test_a_twin_calls_the_dispatcher_its_flag_names():
    calls = []

    class Fake:
        def __init__(self, tag):
            self.tag = tag

        def __call__(self, *args):
            calls.append(self.tag)
            return self.tag

    t = _twin.Twin.__new__(_twin.Twin)
    t.serial, t.parallel = Fake("serial"), Fake("parallel")
    assert t(1, 2, False) == "serial" and t(1, 2, True) == "parallel"
    assert calls == ["serial", "parallel"]
