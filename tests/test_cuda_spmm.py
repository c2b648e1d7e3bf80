"""16-byte vector loads in the spmm / message_passing forward kernels (``*_fwd_vec``).

Host emulation: for every F in 1, 3, 4, 33, 64, 127 (and the aligned widths
8 and 128), float32 and float64, every reduce, the forward through the real
wrappers equals ``naive_gather_reduce``, and the vector path equals the
scalar warp-per-row path bit for bit (same summation order).  Misaligned
contiguous views of X must take the scalar path and stay right.
"""
import numpy as np
import pytest

from stgkern import config
from naive import naive_gather_reduce
from cuda_support import emu_graph as _emu_graph, emu_tol as _emu_tol

FEATS = [1, 3, 4, 8, 33, 64, 127, 128]


def _misaligned(X):
    """A C-contiguous copy of X whose data pointer is 4 bytes past a 16-byte boundary... or 8 for float64."""
    buf = np.empty(X.size + 16, dtype=X.dtype)
    base = buf.__array_interface__["data"][0]
    skip = ((16 - base % 16) % 16) // X.itemsize + 1  # aligned, then one element further
    out = buf[skip:skip + X.size].reshape(X.shape)
    out[...] = X
    assert out.flags.c_contiguous and out.__array_interface__["data"][0] % 16
    return out


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("F,reduce", [(F, r) for F in FEATS for r in ("sum", "mean", "max", "min")
                                      if F < 100 or r in ("sum", "max")])
def test_emulated_vector_forward(emu, rng, dtype, F, reduce):
    from stgkern._cuda import spmm as gspmm
    idx = np.int32 if dtype == np.float64 else np.int64
    g = _emu_graph(rng, idx)
    X = rng.standard_normal((g.n_src, F)).astype(dtype)
    X[1] = X[2]  # ties for max/min
    w = rng.standard_normal(g.nnz).astype(dtype)
    width = 16 // X.itemsize
    with config.override(cuda_threads_per_block=64, cuda_long_row=5):
        for op_name, E, op in [("spmm", None, "mul"), ("spmm", w, "mul"), ("message_passing", w, "mul"),
                               ("message_passing", w.reshape(-1, 1), "add")]:
            ref, ref_arg = naive_gather_reduce(g.indptr, g.indices, X, E if E is None else E.ravel(), op, reduce)
            outs = {}
            vec_applies = gspmm.vector_group(X, np.empty_like(X)) > 0
            for vec in (True, False) if vec_applies else (True,):
                with config.override(cuda_vector_loads=vec):
                    if op_name == "spmm":
                        outs[vec] = emu["spmm"].forward(g, X, E, reduce)
                    else:
                        outs[vec] = emu["message_passing"].forward(g, X, E, op, reduce)
            out, arg = outs[True]
            np.testing.assert_allclose(out, ref, **_emu_tol(dtype), err_msg=f"{op_name} {op} F={F}")
            if ref_arg is not None:
                np.testing.assert_array_equal(arg, ref_arg)
            if vec_applies:
                np.testing.assert_array_equal(out, outs[False][0])  # bit-identical to the scalar path
                if ref_arg is not None:
                    np.testing.assert_array_equal(arg, outs[False][1])
        assert (gspmm.vector_group(X, np.empty_like(X)) > 0) == (F % width == 0)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("F", [4, 64])
def test_emulated_vector_misaligned_view_takes_scalar_path(emu, rng, dtype, F):
    from stgkern._cuda import spmm as gspmm
    g = _emu_graph(rng, np.int32)
    X = _misaligned(rng.standard_normal((g.n_src, F)).astype(dtype))
    assert gspmm.vector_group(X, np.empty_like(X)) == 0
    assert gspmm.vector_group(np.ascontiguousarray(X.copy()), np.empty_like(X)) > 0
    ref, _ = naive_gather_reduce(g.indptr, g.indices, X, None, "mul", "sum")
    with config.override(cuda_threads_per_block=32, cuda_long_row=5):
        out, _ = emu["spmm"].forward(g, X, None, "sum")
    np.testing.assert_allclose(out, ref, **_emu_tol(dtype))


@pytest.mark.parametrize("F,dtype,group", [(4, np.float32, 1), (8, np.float32, 2), (64, np.float32, 16),
                                           (128, np.float32, 32), (512, np.float32, 32), (64, np.float64, 32),
                                           (2, np.float64, 1), (3, np.float32, 0), (33, np.float64, 0)])
def test_vector_group(F, dtype, group):
    from stgkern._cuda import spmm as gspmm
    X = np.zeros((2, F), dtype)
    assert gspmm.vector_group(X, np.zeros_like(X)) == group
