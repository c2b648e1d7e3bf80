"""max/min reductions propagate NaN as NumPy's ``max`` does, wherever the NaN sits in the row.

Before, a NaN won only as a row's first term (the comparisons with it are
false), so the result depended on edge order.  Every max/min path is held to
the rule: spmm and message_passing (the SIMD gather intrinsics and the CUDA
warp, vector and block paths in host emulation), and segment_reduce; the
winner's position (``arg``, the backward's route) is the first NaN.
"""
import numpy as np
import pytest

import stgkern
from stgkern import config
from stgkern.graph import Graph
from naive import naive_gather_reduce, naive_segment_reduce


def _row_graph(deg, n_src):
    """One row per NaN position: row p pulls sources 0..deg-1 in order."""
    indptr = np.arange(0, (deg + 1) * deg, deg, dtype=np.int64)[: deg + 1]
    indices = np.tile(np.arange(deg, dtype=np.int64), deg)
    return Graph(indptr, indices, n_src)


def _nan_inputs(deg, F, dtype):
    """Numbers in X; the NaN comes from the edge weights: row p's NaN weight is its p-th edge."""
    X = np.arange(1.0, deg * F + 1).reshape(deg, F).astype(dtype)
    E = np.ones(deg * deg, dtype)
    E[np.arange(deg) * deg + np.arange(deg)] = np.nan     # row p: NaN at its p-th edge
    return X, E


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reduce", ["max", "min"])
@pytest.mark.parametrize("F", [1, 5, 19])                # one lane, a partial vector, several blocks
def test_spmm_and_message_passing_propagate_nan(dtype, reduce, F):
    deg = 11
    g = _row_graph(deg, deg)
    X, E = _nan_inputs(deg, F, dtype)
    for name, run in (("spmm", lambda: stgkern.spmm(g, X, E, reduce=reduce, return_arg=True)),
                      ("message_passing", lambda: stgkern.message_passing(g, X, E, op="mul", reduce=reduce,
                                                                           return_arg=True))):
        out, arg = run()
        ref, ref_arg = naive_gather_reduce(g.indptr, g.indices, X, E, "mul", reduce)
        assert np.isnan(out).all(), name                     # every row holds one NaN edge, in every feature
        np.testing.assert_array_equal(arg, ref_arg, err_msg=name)
        np.testing.assert_array_equal(arg[:, 0], g.indptr[:-1] + np.arange(deg), err_msg=name)


@pytest.mark.parametrize("reduce", ["max", "min"])
def test_nan_in_one_feature_only(reduce, rng):
    g = _row_graph(6, 6)
    X = rng.standard_normal((6, 4))
    X[3, 2] = np.nan
    out, arg = stgkern.spmm(g, X, reduce=reduce, return_arg=True)
    ref, ref_arg = naive_gather_reduce(g.indptr, g.indices, X, None, "mul", reduce)
    np.testing.assert_array_equal(out, ref)                  # NaN only in feature 2, numbers elsewhere
    np.testing.assert_array_equal(arg, ref_arg)
    assert np.isnan(out[:, 2]).all() and not np.isnan(np.delete(out, 2, axis=1)).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_segment_reduce_max_propagates_nan(dtype):
    n = 7
    for pos in range(n):
        X = np.arange(n * 3, dtype=dtype).reshape(n, 3)
        X[pos, 1] = np.nan
        ptr = np.array([0, n])
        out = stgkern.segment_reduce(X, ptr, "max")
        ref, ref_arg = naive_segment_reduce(X, ptr, "max")
        np.testing.assert_array_equal(out, ref.astype(dtype))
        assert np.isnan(out[0, 1]) and out[0, 0] == X[:, 0].max()
        np.testing.assert_array_equal(out[0], np.max(X, axis=0))          # NumPy's rule


@pytest.mark.parametrize("reduce", ["max", "min"])
def test_nan_gradient_goes_to_the_nan_edge(reduce):
    torch = pytest.importorskip("torch")
    from stgkern.torch import spmm
    g = _row_graph(5, 5)
    X = torch.arange(1.0, 6.0, dtype=torch.float64).reshape(5, 1)
    X[2, 0] = float("nan")
    X.requires_grad_(True)
    spmm(g, X, reduce=reduce).sum().backward()
    assert X.grad[2, 0] == 5 and torch.count_nonzero(X.grad) == 1   # every row's winner is source 2


# --------------------------------------------------------------------------- CUDA, host emulation
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("geometry", [(32, 40), (32, 3), (96, 5)], ids=["warp", "block32", "block96"])
def test_emulated_cuda_propagates_nan(emu, dtype, geometry):
    threads, long_row = geometry
    deg = 11
    g = _row_graph(deg, deg)
    for F in (1, 8, 19):                                     # scalar lanes; 16-byte vectors at 8
        X, E = _nan_inputs(deg, F, dtype)
        with config.override(cuda_threads_per_block=threads, cuda_long_row=long_row):
            for reduce in ("max", "min"):
                ref, ref_arg = naive_gather_reduce(g.indptr, g.indices, X, E, "mul", reduce)
                for vec in (True, False):
                    with config.override(cuda_vector_loads=vec):
                        out, arg = emu["spmm"].forward(g, X, E, reduce)
                        assert np.isnan(out).all()
                        np.testing.assert_array_equal(arg, ref_arg)
                        out, arg = emu["message_passing"].forward(g, X, E, "mul", reduce)
                        assert np.isnan(out).all()
                        np.testing.assert_array_equal(arg, ref_arg)
    X = np.arange(21.0, dtype=dtype).reshape(7, 3)
    X[4, 1] = np.nan
    with config.override(cuda_threads_per_block=threads):
        out, arg = emu["segment_reduce"].forward(X, np.array([0, 7]), "max")
    assert np.isnan(out[0, 1]) and arg[0, 1] == 4 and out[0, 0] == 18
