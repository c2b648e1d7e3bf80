import numpy as np
import pytest
from hypothesis import given, strategies as st

from naive import naive_segment_reduce, naive_segment_reduce_backward
from stgkern.readout import segment_reduce, segment_reduce_backward

REDUCES = ["sum", "mean", "max", "last"]
DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _random_case(rng, n_seg, F, dtype, ints=False):
    lens = rng.integers(0, 5, n_seg)
    ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    shape = (int(ptr[-1]),) if F is None else (int(ptr[-1]), F)
    X = rng.integers(-2, 3, shape) if ints else rng.standard_normal(shape)
    return X.astype(dtype), ptr


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("F", [None, 1, 33, 127])
def test_forward_backward_match_naive(reduce, dtype, F, rng):
    X, ptr = _random_case(rng, 23, F, dtype)
    out, arg = segment_reduce(X, ptr, reduce, return_arg=True)
    ref, ref_arg = naive_segment_reduce(X, ptr, reduce)
    assert out.dtype == dtype and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, **_tol(dtype))
    if ref_arg is None:
        assert arg is None
    else:
        np.testing.assert_array_equal(arg, ref_arg)
    g = rng.standard_normal(out.shape).astype(dtype)
    gx = segment_reduce_backward(g, X, ptr, reduce, arg)
    assert gx.shape == X.shape and gx.dtype == dtype
    np.testing.assert_allclose(gx, naive_segment_reduce_backward(g, X.shape, ptr, reduce, arg), **_tol(dtype))


@given(st.integers(0, 12), st.sampled_from([None, 1, 2, 5]), st.sampled_from(REDUCES),
       st.sampled_from(DTYPES), st.integers(0, 2**31 - 1))
def test_hypothesis_ties(n_seg, F, reduce, dtype, seed):
    rng = np.random.default_rng(seed)
    X, ptr = _random_case(rng, n_seg, F, dtype, ints=True)  # integer values: many ties in max
    out, arg = segment_reduce(X, ptr, reduce, return_arg=True)
    ref, ref_arg = naive_segment_reduce(X, ptr, reduce)
    np.testing.assert_allclose(out, ref, **_tol(dtype))
    if ref_arg is not None:
        np.testing.assert_array_equal(arg, ref_arg)  # lowest row wins ties


def test_empty_and_single():
    X = np.zeros((0, 3), np.float32)
    out = segment_reduce(X, np.array([0]), "max")
    assert out.shape == (0, 3)
    out = segment_reduce(X, np.array([0, 0, 0]), "mean")
    np.testing.assert_array_equal(out, np.zeros((2, 3)))
    out, arg = segment_reduce(np.array([[5.0]]), np.array([0, 1]), "max", return_arg=True)
    assert out[0, 0] == 5.0 and arg[0, 0] == 0
    _, arg = segment_reduce(X, np.array([0, 0]), "last", return_arg=True)
    assert arg[0, 0] == -1


def test_non_contiguous_and_int32_ptr(rng):
    base = rng.standard_normal((30, 8))
    X = base[::2, ::2]
    ptr = np.array([0, 4, 4, 10, 15], dtype=np.int32)
    np.testing.assert_allclose(segment_reduce(X, ptr, "sum"), naive_segment_reduce(X, ptr, "sum")[0],
                               rtol=1e-12)


def test_last_backward_without_arg(rng):
    X, ptr = _random_case(rng, 9, 3, np.float64)
    g = rng.standard_normal((9, 3))
    np.testing.assert_allclose(segment_reduce_backward(g, X, ptr, "last"),
                               naive_segment_reduce_backward(g, X.shape, ptr, "last"))


def test_threads_agree(rng):
    # same result whatever the thread count (each segment owned by one iteration)
    import numba
    X, ptr = _random_case(rng, 4000, 5, np.float32)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = segment_reduce(X, ptr, "mean")
        numba.set_num_threads(max(1, min(2, numba.config.NUMBA_NUM_THREADS)))
        b = segment_reduce(X, ptr, "mean")
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ptr, msg", [
    (np.array([0, 2]), "end at the number of rows"),
    (np.array([1, 3]), "start at 0"),
    (np.array([0, 2, 1, 3]), "non-decreasing"),
    (np.array([0.0, 3.0]), "integer offsets"),
    (np.zeros((2, 2), np.int64), "1-D"),
])
def test_bad_ptr(ptr, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        segment_reduce(np.ones((3, 2)), ptr)


def test_bad_inputs():
    X = np.ones((3, 2))
    with pytest.raises(TypeError, match="X has dtype int64"):
        segment_reduce(np.ones((3, 2), np.int64), np.array([0, 3]))
    with pytest.raises(ValueError, match="reduce='min'"):
        segment_reduce(X, np.array([0, 3]), "min")
    with pytest.raises(ValueError, match="needs arg"):
        segment_reduce_backward(np.ones((1, 2)), X, np.array([0, 3]), "max")
    with pytest.raises(ValueError, match="grad_out has shape"):
        segment_reduce_backward(np.ones((2, 2)), X, np.array([0, 3]), "sum")
    with pytest.raises(TypeError, match="dtypes must match"):
        segment_reduce_backward(np.ones((1, 2), np.float32), X, np.array([0, 3]), "sum")
    with pytest.raises(ValueError, match="outside segment 0"):
        segment_reduce_backward(np.ones((2, 2)), X, np.array([0, 1, 3]), "max",
                                np.array([[1, 0], [1, 2]]))
