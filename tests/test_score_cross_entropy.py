"""score_cross_entropy / _backward against the float64 reference, on the CPU."""
import numpy as np
import pytest

import stgkern
from naive import naive_score_cross_entropy
from stgkern import config

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-11}


def _case(rng, m, n, d, dtype, bias, scale=1.0):
    Q = (scale * rng.standard_normal((m, d))).astype(dtype)
    E = (scale * rng.standard_normal((n, d))).astype(dtype)
    t = rng.integers(0, n, m)
    b = rng.standard_normal(n).astype(dtype) if bias else None
    return Q, E, t, b


def _check(Q, E, t, b, g, dtype, keep=False):
    if keep:
        loss, lse, logits = stgkern.score_cross_entropy(Q, E, t, b, return_lse=True, return_logits=True)
        assert logits.shape == (len(t), len(E)) and logits.dtype == dtype
        np.testing.assert_allclose(logits, Q @ E.T, rtol=0, atol=TOL[dtype] * (1 + np.abs(Q @ E.T).max(initial=0)))
        assert np.array_equal(stgkern.score_cross_entropy(Q, E, t, b, return_logits=True)[0], loss)
    else:
        loss, lse = stgkern.score_cross_entropy(Q, E, t, b, return_lse=True)
        logits = None
    gQ, gE, gb = stgkern.score_cross_entropy_backward(g, Q, E, t, lse, b, logits=logits)
    ref, rQ, rE, rb = naive_score_cross_entropy(Q, E, t, b, g)
    assert loss.dtype == dtype and loss.shape == (len(t),) and lse.dtype == np.float64
    assert gQ.dtype == dtype and gE.dtype == dtype and gQ.shape == Q.shape and gE.shape == E.shape
    scale = 1.0 + np.abs(ref).max(initial=0)
    np.testing.assert_allclose(loss, ref, rtol=0, atol=TOL[dtype] * scale)
    np.testing.assert_allclose(gQ, rQ, rtol=0, atol=TOL[dtype] * (1 + np.abs(rQ).max(initial=0)))
    np.testing.assert_allclose(gE, rE, rtol=0, atol=TOL[dtype] * (1 + np.abs(rE).max(initial=0)))
    if b is None:
        assert gb is None
    else:
        np.testing.assert_allclose(gb, rb, rtol=0, atol=TOL[dtype] * (1 + np.abs(rb).max(initial=0)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("block", [None, 1, 7, "kept"], ids=["default", "block1", "block7", "kept-logits"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 33, 3), (13, 1025, 17), (300, 91, 8)],
                         ids=["one", "small", "odd", "many-rows"])
def test_matches_reference(dtype, bias, block, shape, rng):
    Q, E, t, b = _case(rng, *shape, dtype, bias)
    g = rng.standard_normal(shape[0])
    keep = block == "kept"
    with config.override(**({} if block in (None, "kept") else {"score_block_items": block})):
        _check(Q, E, t, b, g, dtype, keep)


def test_kept_logits_errors(rng):
    Q, E, t, b = _case(rng, 3, 6, 4, np.float32, True)
    loss, lse, logits = stgkern.score_cross_entropy(Q, E, t, b, return_lse=True, return_logits=True)
    g = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="logits must be the forward"):
        stgkern.score_cross_entropy_backward(g, Q, E, t, lse, b, logits=logits[:, :5].copy())
    with pytest.raises(ValueError, match="logits must be the forward"):
        stgkern.score_cross_entropy_backward(g, Q, E, t, lse, b, logits=logits.astype(np.float64))
    with pytest.raises(ValueError, match="writeable"):
        logits.flags.writeable = False
        stgkern.score_cross_entropy_backward(g, Q, E, t, lse, b, logits=logits)
    with pytest.raises(ValueError, match="C-contiguous"):
        stgkern.score_cross_entropy_backward(g, Q, E, t, lse, b, logits=np.asfortranarray(Q @ E.T))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_large_and_tied_logits(dtype, rng):
    # logits in the hundreds (exp overflows without the max shift) and rows of equal scores
    Q, E, t, b = _case(rng, 6, 50, 4, dtype, True, scale=8.0)
    Q[0] = 0                       # every score equal: loss = log n
    _check(Q, E, t, b, np.ones(6), dtype)
    assert np.isclose(stgkern.score_cross_entropy(Q[:1], E, t[:1])[0], np.log(50), rtol=1e-5)


def test_exp_f32_accuracy():
    from stgkern._numba.score_cross_entropy import exp_f32
    import numba

    @numba.njit
    def run(v):
        exp_f32(v, np.empty(v.shape[0], np.float32))

    x = np.linspace(-87.0, 0.0, 200001).astype(np.float32)
    y = x.copy()
    run(y)
    ref = np.exp(x.astype(np.float64))
    rel = np.abs(y.astype(np.float64) - ref) / ref
    assert rel.max() < 3 * np.finfo(np.float32).eps
    z = np.array([-1e4, -200.0, -88.0], np.float32)
    run(z)
    assert np.all(z <= 1.7e-38) and np.all(z >= 0)     # far below every row's max: negligible


def test_empty_rows_and_one_item(rng):
    E = rng.standard_normal((4, 3)).astype(np.float32)
    Q = np.zeros((0, 3), np.float32)
    loss, lse = stgkern.score_cross_entropy(Q, E, np.zeros(0, np.int64), return_lse=True)
    assert loss.shape == (0,)
    gQ, gE, _ = stgkern.score_cross_entropy_backward(np.zeros(0, np.float32), Q, E, np.zeros(0, np.int64), lse)
    assert gQ.shape == (0, 3) and np.all(gE == 0)
    one = stgkern.score_cross_entropy(np.ones((2, 3), np.float32), E[:1], np.array([0, 0]))
    np.testing.assert_allclose(one, 0.0, atol=1e-7)     # one item: probability 1


def test_thread_count_does_not_matter(rng):
    import numba
    Q, E, t, b = _case(rng, 40, 3000, 16, np.float32, True)
    g = rng.standard_normal(40).astype(np.float32)
    old = numba.get_num_threads()
    outs = []
    try:
        for n in (1, max(1, min(2, numba.config.NUMBA_NUM_THREADS))):
            numba.set_num_threads(n)
            loss, lse = stgkern.score_cross_entropy(Q, E, t, b, return_lse=True)
            outs.append((loss, *stgkern.score_cross_entropy_backward(g, Q, E, t, lse, b)))
    finally:
        numba.set_num_threads(old)
    for a, c in zip(*outs):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("call, exc, words", [
    (lambda Q, E, t: stgkern.score_cross_entropy(Q, E, t + 100), ValueError, "outside [0, 6)"),
    (lambda Q, E, t: stgkern.score_cross_entropy(Q, E, t - 100), ValueError, "outside [0, 6)"),
    (lambda Q, E, t: stgkern.score_cross_entropy(Q, E, t[:2]), ValueError, "one item id per row"),
    (lambda Q, E, t: stgkern.score_cross_entropy(Q, E, t.astype(np.float32)), TypeError, "integer item ids"),
    (lambda Q, E, t: stgkern.score_cross_entropy(Q, E.astype(np.float64), t), TypeError, "dtype"),
    (lambda Q, E, t: stgkern.score_cross_entropy(Q, E[:, :2], t), ValueError, "width"),
    (lambda Q, E, t: stgkern.score_cross_entropy(Q, E[:0], t), ValueError, "items is empty"),
    (lambda Q, E, t: stgkern.score_cross_entropy(np.full_like(Q, np.nan), E, t), ValueError, "NaN"),
    (lambda Q, E, t: stgkern.score_cross_entropy(Q, E, t, np.ones(5, np.float32)), ValueError, "one per item"),
    (lambda Q, E, t: stgkern.score_cross_entropy(Q.astype(np.int64), E, t), TypeError, "dtype"),
    (lambda Q, E, t: stgkern.score_cross_entropy_backward(np.ones(2, np.float32), Q, E, t, np.zeros(3)),
     ValueError, "grad_loss"),
])
def test_bad_inputs(call, exc, words, rng):
    Q = rng.standard_normal((3, 4)).astype(np.float32)
    E = rng.standard_normal((6, 4)).astype(np.float32)
    with pytest.raises(exc, match=None) as info:
        call(Q, E, np.array([0, 5, 2]))
    assert words in str(info.value)


def test_torch_matches_cross_entropy_and_gradcheck():
    torch = pytest.importorskip("torch")
    from stgkern.torch import score_cross_entropy
    g = torch.Generator().manual_seed(0)
    q = torch.randn(7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    E = torch.randn(40, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(40, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randint(0, 40, (7,), generator=g)
    assert torch.autograd.gradcheck(lambda q, E, b: score_cross_entropy(q, E, t, b, reduction="none"), (q, E, b))
    for red in ("mean", "sum", "none"):
        ours = score_cross_entropy(q, E, t, b, reduction=red)
        ref = torch.nn.functional.cross_entropy(q @ E.T + b, t, reduction=red)
        torch.testing.assert_close(ours, ref)
    # the kept-logits path (the default at this size) and the re-forming one agree; a second
    # backward through a retained graph forms the products again (the kept array was overwritten)
    grads = []
    for keep in (1 << 30, 0):
        with config.override(score_keep_bytes=keep):
            loss = score_cross_entropy(q, E, t, b)
            grads.append(torch.autograd.grad(loss, (q, E, b), retain_graph=True))
            grads.append(torch.autograd.grad(loss, (q, E, b)))
    for other in grads[1:]:
        for a, c in zip(grads[0], other):
            torch.testing.assert_close(a, c, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        score_cross_entropy(q, E, t, reduction="avg")
    with pytest.raises(TypeError, match="dtype"):
        score_cross_entropy(q.float(), E, t)


def test_kernels_load_from_numba_cache_in_a_new_process(tmp_path):
    """A second process finds both kernels in Numba's on-disk cache: no recompilation, no cache
    index that grows per process (a compiled helper passed in as an argument defeated the cache
    and, after enough processes, broke it)."""
    import os
    import subprocess
    import sys
    code = ("import numpy as np, stgkern\n"
            "from stgkern._numba import score_cross_entropy as K\n"
            "for dt in (np.float32, np.float64):\n"
            "    Q, E, t = np.ones((3, 2), dt), np.ones((5, 2), dt), np.array([0, 1, 4])\n"
            "    loss, lse, L = stgkern.score_cross_entropy(Q, E, t, return_lse=True, return_logits=True)\n"
            "    stgkern.score_cross_entropy_backward(np.ones(3, dt), Q, E, t, lse, logits=L)\n"
            "f = (K.block_max_sumexp, K.block_grad_logits)\n"
            "print(sum(len(k.stats.cache_misses) for k in f), sum(len(k.stats.cache_hits) for k in f))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            for _ in range(2)]
    first, second = ([int(x) for x in r.stdout.split()] for r in runs)
    assert first == [4, 0]                   # compiled once: two dtypes x two kernels
    assert second == [0, 4]                  # then only loaded
