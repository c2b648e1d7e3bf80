"""GPU graph_conv (csrc/cuda/graph_conv.cu + stgkern/_cuda/graph_conv.py).

The dense products go to cuBLAS; the kernels here are the fused elementwise
tail (epilogue: add, bias, activation; activation backward with per-tile
bias partials).  Host emulation runs them through the real wrappers and
compares with the Numba module; the public front door's GPU path (spmm and
graph_conv kernels together, NumPy standing in for CuPy) is compared with
the CPU layer.
"""
import numpy as np
import pytest

from stgkern import config, layer
from stgkern._numba import graph_conv as cpu
from test_graph_conv import GRAD_NAMES, make_inputs, random_graph

ACTS = [None, "relu", "sigmoid", "tanh"]


def _tol(dtype):
    return dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", [(0, 5), (1, 1), (300, 33), (517, 64)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_emulated_elementwise_matches_numba(emu, rng, dtype, act, shape):
    gpu = emu["graph_conv"]
    n, F = shape
    S = (rng.standard_normal(shape) * 30).astype(dtype)   # saturates sigmoid/tanh tails
    S[:1, :1] = np.nan if n else S[:1, :1]                  # NaN stays NaN through every activation
    Z = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    for z, bias in ((Z, b), (None, b), (Z, None), (None, None)):
        want = cpu.epilogue(S.copy(), z, bias, act)
        got = gpu.epilogue(S.copy(), z, bias, act)
        np.testing.assert_allclose(got, want, **_tol(dtype), err_msg=f"{act} z={z is not None} b={bias is not None}")
    out = cpu.epilogue(S.copy(), Z, b, act)
    GO = rng.standard_normal(shape).astype(dtype)
    with config.override(cuda_threads_per_block=32):          # several column passes per block when F > 32
        for want_bias in (True, False):
            G_c, gb_c = cpu.activation_backward(GO, out, act, want_bias)
            G_g, gb_g = gpu.activation_backward(GO, out, act, want_bias)
            np.testing.assert_allclose(G_g, G_c, **_tol(dtype))
            if want_bias:
                assert gb_g.shape == (F,) and gb_g.dtype == dtype
                np.testing.assert_allclose(gb_g, gb_c, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                           atol=1e-4 if dtype == np.float32 else 1e-10)
            else:
                assert gb_g is None


@pytest.mark.slow
@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_emulated_public_graph_conv_matches_cpu(emu, rng, monkeypatch, reduce):
    """graph_conv and its backward through the GPU wrappers (spmm + graph_conv kernels, cuBLAS
    products played by NumPy) give the CPU layer's results."""
    g = random_graph(rng, 90)
    X, Ws, Wn, b, w = make_inputs(rng, g, 7, 5, np.float64)
    X[:3] *= 200
    G = rng.standard_normal((g.n_nodes, 5))
    for act in ACTS:
        want = (layer.graph_conv(g, X, Ws, Wn, b, w, reduce, act),
                *layer.graph_conv_backward(g, G, X, Ws, Wn, b, w, reduce, act))
        with monkeypatch.context() as m, config.override(cuda_threads_per_block=32):
            m.setattr(layer._dispatch, "backend_of", lambda **arrays: "gpu")
            assert layer._elementwise("gpu") is emu["graph_conv"]
            got = (layer.graph_conv(g, X, Ws, Wn, b, w, reduce, act),
                   *layer.graph_conv_backward(g, G, X, Ws, Wn, b, w, reduce, act))
        for name, a, c in zip(["out"] + GRAD_NAMES, got, want):
            np.testing.assert_allclose(a, c, rtol=1e-11, atol=1e-11, err_msg=f"{act}: {name}")


@pytest.mark.cuda
@pytest.mark.parametrize("act", ACTS)
def test_gpu_elementwise_matches_cpu(cp, rng, act):
    from stgkern._cuda import graph_conv as gpu
    S = (rng.standard_normal((1000, 64)) * 10).astype(np.float32)
    Z = rng.standard_normal(S.shape).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    want = cpu.epilogue(S.copy(), Z, b, act)
    got = gpu.epilogue(cp.asarray(S), cp.asarray(Z), cp.asarray(b), act)
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=1e-5, atol=1e-6)
    GO = rng.standard_normal(S.shape).astype(np.float32)
    G_c, gb_c = cpu.activation_backward(GO, want, act, True)
    G_g, gb_g = gpu.activation_backward(cp.asarray(GO), cp.asarray(want), act, True)
    np.testing.assert_allclose(cp.asnumpy(G_g), G_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cp.asnumpy(gb_g), gb_c, rtol=1e-4, atol=1e-4)
    G_g2, gb_g2 = gpu.activation_backward(cp.asarray(GO), cp.asarray(want), act, True)
    assert (cp.asnumpy(gb_g2) == cp.asnumpy(gb_g)).all()  # reproducible bits
