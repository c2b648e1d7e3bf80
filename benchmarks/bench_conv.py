"""SpMM benchmarks vs scipy.sparse and torch.sparse (CPU).

``python benchmarks/bench_conv.py`` prints a table and writes
``benchmarks/results/conv_cpu.json``.  Only spmm (sum, weighted, float32,
F=64) is covered so far; message_passing / graph_conv are not written yet.
"""
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stgkern.graph import Graph  # noqa: E402
from stgkern.conv import spmm  # noqa: E402

F = 64


def window_graph(n_events=2_000_000, window=8, seed=0):
    """Events sorted by user (power-law lengths); each event pulls from its <=window previous same-user events."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum((rng.pareto(1.2, n_events) + 1).astype(np.int64), 5000)
    lengths = lengths[np.cumsum(lengths) <= n_events]
    lengths = np.append(lengths, n_events - lengths.sum()) if lengths.sum() < n_events else lengths
    pos = np.arange(n_events) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # position within user
    deg = np.minimum(pos, window)
    indptr = np.zeros(n_events + 1, np.int64)
    np.cumsum(deg, out=indptr[1:])
    dst = np.repeat(np.arange(n_events), deg)
    off = np.arange(indptr[-1]) - np.repeat(indptr[:-1], deg)
    src = (dst - deg[dst] + off).astype(np.int32)
    return indptr, src


def powerlaw_graph(n=500_000, nnz=8_000_000, seed=0):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n + 1) ** 0.8
    p /= p.sum()
    src = rng.permutation(n)[rng.choice(n, nnz, p=p)].astype(np.int32)
    dst = np.sort(rng.integers(0, n, nnz))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    return indptr, src


def best(f, reps=5):
    f()
    t = 1e9
    for _ in range(reps):
        s = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - s)
    return t


def run_case(name, indptr, src):
    import scipy.sparse as sp
    import torch
    n = len(indptr) - 1
    nnz = len(src)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, F)).astype(np.float32)
    w = rng.random(nnz).astype(np.float32)
    g = Graph(indptr, src, n)
    A = sp.csr_matrix((w, src, indptr), shape=(n, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        T = torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(src.astype(np.int64)),
                                    torch.from_numpy(w), size=(n, n))
    Xt = torch.from_numpy(X)
    ours = spmm(g, X, w)
    np.testing.assert_allclose(ours, A @ X, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ours, torch.sparse.mm(T, Xt).numpy(), rtol=1e-3, atol=1e-3)
    floor_bytes = 8 * nnz + 8 * n * F
    a = np.ones(floor_bytes // 8, np.float32)  # touched, so the copy reads real pages
    b = np.zeros_like(a)
    t_copy = best(lambda: np.copyto(b, a))
    copy_bw = 2 * a.nbytes / t_copy
    t_ours = best(lambda: spmm(g, X, w))
    t_scipy = best(lambda: A @ X, 3)
    t_torch = best(lambda: torch.sparse.mm(T, Xt), 3)
    gbs = floor_bytes / t_ours
    return dict(graph=name, n=n, nnz=nnz, F=F, t_spmm=t_ours, t_scipy=t_scipy, t_torch=t_torch,
                gflops=2 * nnz * F / t_ours / 1e9, gbs=gbs / 1e9, copy_gbs=copy_bw / 1e9,
                pct_copy=100 * gbs / copy_bw, x_scipy=t_scipy / t_ours, x_torch=t_torch / t_ours)


def test_spmm_powerlaw(benchmark):
    indptr, src = powerlaw_graph(50_000, 800_000)
    n = len(indptr) - 1
    g = Graph(indptr, src, n)
    X = np.random.default_rng(0).standard_normal((n, F)).astype(np.float32)
    benchmark(spmm, g, X)


if __name__ == "__main__":
    rows = [run_case("window8_2M", *window_graph()), run_case("powerlaw_500k_8M", *powerlaw_graph())]
    for r in rows:
        print(f"{r['graph']:>18} nnz={r['nnz']:>9} spmm {r['t_spmm']*1e3:7.1f} ms  {r['gflops']:5.1f} GFLOP/s "
              f"{r['gbs']:5.1f} GB/s ({r['pct_copy']:4.0f}% of copy {r['copy_gbs']:.1f} GB/s)  "
              f"x scipy {r['x_scipy']:.2f}  x torch {r['x_torch']:.2f}")
    out = os.path.join(os.path.dirname(__file__), "results", "conv_cpu.json")
    with open(out, "w") as fh:
        json.dump({"spmm_sum_weighted_f32_F64": rows}, fh, indent=1)
