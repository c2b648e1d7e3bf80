"""GPU score_cross_entropy (csrc/cuda/score_cross_entropy.cu, stgkern/_cuda/score_cross_entropy.py).

* ``test_emulated_*`` (need g++): the kernels compiled for the host
  (tests/cuda_support.py's ``emu``) and run through the real wrappers, NumPy
  standing in for CuPy, against the float64 reference; ``TILE_VALUES`` is
  patched small so the logits come in several item tiles and the per-tile
  (max, sum) merge, the per-tile gradient slices and the target at either
  side of a tile boundary all run.
* ``test_gpu_*`` (need a CUDA device): the public front door on CuPy input
  against the same call on NumPy input (the CPU kernels).
"""
import numpy as np
import pytest

import stgkern
from naive import naive_score_cross_entropy
from stgkern import config
from stgkern._cuda import score_cross_entropy as _gpu  # noqa: F401  (registers its kernels with the loader)

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-11}


def _case(rng, m, n, d, dtype, bias, scale=1.0):
    Q = (scale * rng.standard_normal((m, d))).astype(dtype)
    E = (scale * rng.standard_normal((n, d))).astype(dtype)
    t = rng.integers(0, n, m).astype(np.int64)
    b = rng.standard_normal(n).astype(dtype) if bias else None
    return Q, E, t, b


def _near(got, ref, dtype):
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL[dtype] * (1 + np.abs(ref).max(initial=0)))


# --------------------------------------------------------------------------- real GPU
# (first in the file: the module-scoped ``emu`` fixture stands NumPy in for CuPy until the module ends)

def _gpu_vs_cpu(cp, Q, E, t, b, g, dtype):
    d = {k: None if v is None else cp.asarray(v) for k, v in dict(Q=Q, E=E, t=t, b=b, g=g).items()}
    loss_c, lse_c = stgkern.score_cross_entropy(Q, E, t, b, return_lse=True)
    loss, lse = stgkern.score_cross_entropy(d["Q"], d["E"], d["t"], d["b"], return_lse=True)
    assert isinstance(loss, cp.ndarray) and loss.dtype == dtype and lse.dtype == np.float64
    _near(cp.asnumpy(loss), loss_c, dtype)
    np.testing.assert_allclose(cp.asnumpy(lse), lse_c, rtol=TOL[dtype])
    cpu = stgkern.score_cross_entropy_backward(g, Q, E, t, lse_c, b)
    gpu = stgkern.score_cross_entropy_backward(d["g"], d["Q"], d["E"], d["t"], lse, d["b"])
    # the kept-logits path: the forward returns Q @ items.T, the backward turns it into its gradient
    _, lse_k, logits = stgkern.score_cross_entropy(d["Q"], d["E"], d["t"], d["b"], return_lse=True,
                                                   return_logits=True)
    assert isinstance(logits, cp.ndarray) and logits.shape == (len(t), len(E))
    kept = stgkern.score_cross_entropy_backward(d["g"], d["Q"], d["E"], d["t"], lse_k, d["b"], logits=logits)
    for got, got_k, want in zip(gpu, kept, cpu):
        if want is None:
            assert got is None and got_k is None
        else:
            assert isinstance(got, cp.ndarray) and got.dtype == dtype
            _near(cp.asnumpy(got), want, dtype)
            _near(cp.asnumpy(got_k), want, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (13, 1025, 17), (300, 4099, 64)], ids=["one", "odd", "many"])
def test_gpu_matches_cpu(cp, rng, dtype, bias, shape):
    Q, E, t, b = _case(rng, *shape, dtype, bias)
    _gpu_vs_cpu(cp, Q, E, t, b, rng.standard_normal(shape[0]).astype(dtype), dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_gpu_multi_tile_and_empty(cp, rng, monkeypatch, dtype):
    monkeypatch.setattr(_gpu, "TILE_VALUES", 7 * 100)         # 7 rows: tiles of 100 items
    Q, E, t, b = _case(rng, 7, 1000, 32, dtype, True, scale=3.0)
    t[:3] = [99, 100, 999]
    _gpu_vs_cpu(cp, Q, E, t, b, rng.standard_normal(7).astype(dtype), dtype)
    Q, E, t, b = _case(rng, 0, 10, 4, dtype, True)
    _gpu_vs_cpu(cp, Q, E, t, b, np.zeros(0, dtype), dtype)


# --------------------------------------------------------------------------- emulated

def _run_emu(k, Q, E, t, b, g, dtype, keep=False):
    loss, lse, logits = k.forward(Q, E, t, b, 1, keep)
    assert (logits is None) != keep
    if keep:
        np.testing.assert_allclose(logits, Q @ E.T, rtol=0, atol=TOL[dtype] * (1 + np.abs(Q @ E.T).max(initial=0)))
    gQ, gE, gb = k.backward(g.astype(dtype), Q, E, t, lse, b, 1, logits)
    assert loss.dtype == dtype and lse.dtype == np.float64 and loss.shape == lse.shape == (len(t),)
    assert gQ.dtype == gE.dtype == dtype and gQ.shape == Q.shape and gE.shape == E.shape
    ref, rQ, rE, rb = naive_score_cross_entropy(Q, E, t, b, g)
    _near(loss, ref, dtype)
    _near(gQ, rQ, dtype)
    _near(gE, rE, dtype)
    if b is None:
        assert gb is None
    else:
        assert gb.dtype == dtype
        _near(gb, rb, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("width, keep", [(1, False), (4, False), (13, False), (64, False), (4, True)],
                         ids=["w1", "w4", "w13", "w64-whole", "kept-logits"])
def test_emulated_matches_reference(emu, rng, monkeypatch, dtype, bias, width, keep):
    k = emu["score_cross_entropy"]
    m, n = 5, 13
    monkeypatch.setattr(k, "TILE_VALUES", m * width)     # tiles of `width` items (whole catalogue at 64)
    Q, E, t, b = _case(rng, m, n, 3, dtype, bias, scale=2.0)
    # targets on both sides of a tile boundary, the first and the last item
    t[:] = [0, min(width, n) - 1, min(width, n - 1), n - 1, 6]
    with config.override(cuda_threads_per_block=32):
        _run_emu(k, Q, E, t, b, rng.standard_normal(m), dtype, keep)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_emulated_one_item_and_large_logits(emu, rng, monkeypatch, dtype):
    k = emu["score_cross_entropy"]
    # one item: loss 0 and zero gradients whatever the scores
    Q, E, t, b = _case(rng, 3, 1, 4, dtype, True)
    with config.override(cuda_threads_per_block=64):
        _run_emu(k, Q, E, t, b, np.ones(3), dtype)
        loss = k.forward(Q, E, t, b, 1)[0]
        np.testing.assert_allclose(loss, 0, atol=TOL[dtype])
        # logits in the hundreds (exp overflows without the max shift), a row of equal scores,
        # and more rows than a block has warps
        monkeypatch.setattr(k, "TILE_VALUES", 3 * 9)
        Q, E, t, b = _case(rng, 3, 40, 4, dtype, False, scale=8.0)
        Q[0] = 0
        _run_emu(k, Q, E, t, b, rng.standard_normal(3), dtype)
        np.testing.assert_allclose(k.forward(Q, E, t, b, 1)[0][0], np.log(40), rtol=1e-5)


def test_emulated_no_rows(emu, rng):
    k = emu["score_cross_entropy"]
    for bias in (False, True):
        Q, E, t, b = _case(rng, 0, 6, 3, np.float32, bias)
        loss, lse, logits = k.forward(Q, E, t, b, 1, bias)       # kept logits too: (0, 6)
        assert loss.shape == lse.shape == (0,) and loss.dtype == np.float32 and lse.dtype == np.float64
        assert (logits is None) if not bias else logits.shape == (0, 6)
        gQ, gE, gb = k.backward(np.zeros(0, np.float32), Q, E, t, lse, b, 1, logits)
        assert gQ.shape == (0, 3) and not gE.any() and gE.shape == E.shape
        assert (gb is None) if not bias else (gb.shape == (6,) and not gb.any())
