"""Software prefetch in the CPU gather kernels: when it is chosen, and that it never changes a bit."""
import numpy as np
import pytest
from naive import naive_message_passing, naive_spmm, naive_spmm_backward

from stgkern import config
from stgkern._numba._prefetch import distance_for
from stgkern.bench import workloads
from stgkern.conv import message_passing, message_passing_backward, spmm, spmm_backward
from stgkern.graph import Graph


def random_graph(rng, n, nnz, n_src=None):
    """Uniform random sources; rows 100..199 left empty."""
    n_src = n if n_src is None else n_src
    dst = rng.integers(0, n, nnz)
    dst = np.sort(np.where((dst >= 100) & (dst < 200), dst + 100, dst) if n > 300 else dst)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    return Graph(indptr, rng.integers(0, n_src, nnz).astype(np.int32), n_src)


def banded_graph(n, back):
    """Node i pulls from i-1 .. i-back (a window graph's shape)."""
    rows = [np.arange(max(0, i - back), i) for i in range(n)]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    return Graph(indptr, np.concatenate(rows).astype(np.int32), n)


def test_auto_prefers_prefetch_only_for_scattered_sources():
    rng = np.random.default_rng(0)
    scattered = random_graph(rng, 20_000, 200_000)
    banded = banded_graph(20_000, 8)
    assert distance_for(scattered, 256) == config.cpu_prefetch_distance
    assert distance_for(banded, 256) == 0
    # the same structure with rows so wide that 8 of them leave L1 counts as scattered
    assert distance_for(banded, 64 * 1024) == config.cpu_prefetch_distance
    assert distance_for(random_graph(rng, 100, 500), 256) == 0          # small: cached after first touch
    assert distance_for(Graph(np.zeros(5, np.int64), np.zeros(0, np.int32), 4), 256) == 0
    with config.override(cpu_prefetch=True):
        assert distance_for(banded, 256) == config.cpu_prefetch_distance
    with config.override(cpu_prefetch=False):
        assert distance_for(scattered, 256) == 0
    with config.override(cpu_prefetch="sometimes"), pytest.raises(ValueError, match="cpu_prefetch"):
        distance_for(scattered, 256)


def test_window_and_powerlaw_benchmark_graphs_take_the_measured_choice():
    """The benchmark's two spmm graphs: prefetch off on the window graph (it measured slower), on for power-law."""
    rng = np.random.default_rng(1)
    pl = workloads.powerlaw_graph(20_000, 320_000, rng)
    assert distance_for(pl, 64 * 4) > 0
    assert distance_for(pl.transpose(), 64 * 4) > 0
    from stgkern.construct import window_graph
    from stgkern.data import synthetic_log
    wg = window_graph(synthetic_log(n_users=600, events_per_user=50, seed=3, process="markov"), window=8, horizon=86_400)
    assert distance_for(wg, 64 * 4) == 0


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("F", [1, 16, 33, 64])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_spmm_bits_do_not_depend_on_prefetch(dt, F, reduce):
    rng = np.random.default_rng(F)
    g = random_graph(rng, 6_000, 60_000)
    assert (g.degrees()[100:200] == 0).all()
    X = rng.standard_normal((g.n_src, F)).astype(dt)
    w = rng.standard_normal(g.nnz).astype(dt)
    G = rng.standard_normal((g.n_nodes, F)).astype(dt)
    runs = {}
    for mode in (True, False):
        with config.override(cpu_prefetch=mode):
            out = spmm(g, X, w, reduce)
            gX, gw = spmm_backward(g, G, X, w, reduce)
            runs[mode] = (out, gX, gw)
    for a, b in zip(runs[True], runs[False]):
        np.testing.assert_array_equal(a, b)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dt == np.float64 else {"rtol": 3e-5, "atol": 3e-5}
    np.testing.assert_allclose(runs[True][0], naive_spmm(g.indptr, g.indices, X, w, reduce), **tol)
    rX, rw = naive_spmm_backward(g.indptr, g.indices, G, X, w, reduce, None)
    np.testing.assert_allclose(runs[True][1], rX, **tol)
    np.testing.assert_allclose(runs[True][2], rw, **tol)


@pytest.mark.parametrize("op", ["mul", "add"])
@pytest.mark.parametrize("width", ["F", 1])
def test_message_passing_bits_do_not_depend_on_prefetch(op, width):
    rng = np.random.default_rng(7)
    g = random_graph(rng, 2_000, 12_000)
    F = 33
    X = rng.standard_normal((g.n_src, F))
    E = rng.standard_normal((g.nnz, F) if width == "F" else g.nnz)
    G = rng.standard_normal((g.n_nodes, F))
    runs = {}
    for mode in (True, False):
        with config.override(cpu_prefetch=mode):
            out = message_passing(g, X, E, op, "sum")
            runs[mode] = (out, *message_passing_backward(g, G, X, E, op, "sum"))
    for a, b in zip(runs[True], runs[False]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(runs[True][0], naive_message_passing(g.indptr, g.indices, X, E, op, "sum")[0],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "16"])
def test_prefetch_distance_must_be_a_positive_int(bad):
    g = random_graph(np.random.default_rng(0), 20_000, 200_000)
    X = np.ones((g.n_src, 4), np.float32)
    with config.override(cpu_prefetch=True, cpu_prefetch_distance=bad):
        with pytest.raises(ValueError, match="cpu_prefetch_distance must be a positive int"):
            spmm(g, X)
