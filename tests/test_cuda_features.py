"""GPU node/edge features (csrc/cuda/{node_features,time_encoding,time_decay}.cu).

Host emulation compares the kernels, through their launch wrappers, with
``tests/naive.py`` and the Numba backends; the ``cuda`` tests compare the
public functions on CuPy input with the same call on NumPy input.
"""
import numpy as np
import pytest

import stgkern
from stgkern import config
from stgkern.features import default_omega
from naive import naive_node_features, naive_time_encoding


def _log(rng, n, n_users=4, B=3):
    user = rng.integers(0, n_users, n).astype(np.int64)
    time = rng.integers(0, 5, n).astype(np.int64)  # many equal times: stable order matters
    behavior = rng.integers(0, B, n).astype(np.int64)
    value = rng.random(n) * 3
    return user, time, behavior, value


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "both"])
def test_node_features_match_cpu(cp, rng, dtype, causal):  # noqa: F811
    user, time, behavior, value = _log(rng, 300)
    arrays = dict(user=user, time=time, behavior=behavior, value=value)
    want = stgkern.node_features(arrays, causal=causal, n_behaviors=3, dtype=dtype)
    got = stgkern.node_features({k: cp.asarray(v) for k, v in arrays.items()}, causal=causal, n_behaviors=3,
                                dtype=dtype)
    assert isinstance(got, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_time_features_match_cpu(cp, rng, dtype):  # noqa: F811
    dt = rng.integers(0, 10**6, 1000)
    for dim in (1, 16, 33):
        got = stgkern.time_encoding(cp.asarray(dt), dim, dtype=dtype)
        assert isinstance(got, cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(got), stgkern.time_encoding(dt, dim, dtype=dtype),
                                   rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6 if dtype == np.float32
                                   else 1e-12)
    got = stgkern.time_decay(cp.asarray(dt), 3600.0, dtype=dtype)
    np.testing.assert_allclose(cp.asnumpy(got), stgkern.time_decay(dt, 3600.0, dtype=dtype), rtol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        stgkern.time_encoding(cp.asarray([0.0, np.nan]), 4)


EMU_TPB = [32, 64]


@pytest.mark.slow
@pytest.mark.parametrize("tpb", EMU_TPB, ids=lambda t: f"tpb{t}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("flags", [(True, True, True), (True, True, False), (False, True, True),
                                   (True, False, True), (False, False, True)],
                         ids=["all-causal", "all-future", "no-intensity", "no-context", "onehot"])
def test_emulated_node_features(emu, rng, tpb, dtype, flags):
    from stgkern._numba import node_features as cpu
    intensity, context, causal = flags
    n, B = 37, 3
    user, time, behavior, value = _log(rng, n, B=B)
    order = np.lexsort((time, user)).astype(np.int64)
    for val in (value, None):
        with config.override(cuda_threads_per_block=tpb):
            got = emu["node_features"].node_features(order, user, behavior, val, B, intensity, context, causal,
                                                     dtype)
        want = cpu.node_features(order, user, behavior, val, B, intensity, context, causal, dtype)
        ref = naive_node_features(user, time, behavior, val, B, intensity, context, causal, order=order)
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-15)
        np.testing.assert_allclose(got, ref, rtol=1e-6 if dtype == np.float32 else 1e-15)


@pytest.mark.slow
def test_emulated_node_features_edge_cases(emu):
    one = np.zeros(1, np.int64)
    got = emu["node_features"].node_features(one, one, one, None, 1, True, True, False, np.float64)
    np.testing.assert_array_equal(got, [[1.0, 0.0, 0.0, 0.0]])
    empty = np.zeros(0, np.int64)
    assert emu["node_features"].node_features(empty, empty, empty, None, 2, True, True, True,
                                              np.float32).shape == (0, 5)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("dim", [1, 3, 33, 127])
def test_emulated_time_encoding(emu, rng, dtype, dim):
    from stgkern._numba import time_encoding as cpu
    dt = np.concatenate([[0.0], rng.integers(0, 10**7, 20).astype(np.float64), [1e9]])
    omega, phase = default_omega(dim), rng.standard_normal(dim)
    with config.override(cuda_threads_per_block=32):
        got = emu["time_encoding"].time_encoding(dt, omega, phase, dtype)
    assert got.shape == (dt.shape[0], dim) and got.dtype == dtype
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, cpu.time_encoding(dt, omega, phase, dtype), **tol)
    np.testing.assert_allclose(got, naive_time_encoding(dt, dim, omega, phase), **tol)
    assert emu["time_encoding"].time_encoding(dt[:0], omega, phase, dtype).shape == (0, dim)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_emulated_time_decay(emu, rng, dtype):
    for dt in (rng.integers(0, 10**5, 71), rng.random(70) * 1e4, rng.integers(0, 9, 64).astype(np.int32)[::2],
               np.zeros(0)):
        with config.override(cuda_threads_per_block=64):
            got = emu["time_decay"].time_decay(dt, 3600.0, dtype)
        assert got.shape == dt.shape and got.dtype == dtype
        np.testing.assert_allclose(got, stgkern.time_decay(dt, 3600.0, dtype=dtype),
                                   rtol=1e-6 if dtype == np.float32 else 1e-14)
