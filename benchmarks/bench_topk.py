"""Benchmark: blocked ``stgkern.topk`` vs NumPy matmul + argpartition.

Run as a script (writes ``benchmarks/results/topk_cpu.json``)::

    python benchmarks/bench_topk.py [--items 1000000 --queries 1024 --dim 64 --k 20]

or through pytest-benchmark (small sizes): ``pytest benchmarks/bench_topk.py``.

The peer scores the full (m, n_items) matrix with one matmul, takes
``np.argpartition`` per row and sorts the k survivors.  Both are measured in
the same run, after a warm-up, together with a plain memory copy (for
effective bandwidth) and the bare full matmul (the compute floor both share).
Peak temporary memory is measured with ``tracemalloc`` (NumPy reports its
allocations to it).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np

from stgkern import config
from stgkern.readout import topk


def peer_topk(Q, items, k):
    S = Q @ items.T
    part = np.argpartition(S, -k, axis=1)[:, -k:]
    ps = np.take_along_axis(S, part, axis=1)
    # sort the k by score desc, then index asc (same order as stgkern.topk)
    order = np.lexsort((part, -ps), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(ps, order, axis=1)


def _best(fn, repeat):
    """Best wall time of ``repeat`` calls, all times, and the peak traced
    memory of a call (tracemalloc only hooks allocations, so the few large
    NumPy buffers cost it nothing measurable)."""
    ts, peak = [], 0
    for _ in range(repeat):
        tracemalloc.start()
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return min(ts), ts, peak


def tiled_matmul(Q, items):
    """The matmul part of stgkern.topk alone (same tiles, no selection)."""
    from stgkern._numba.topk import TILE_ITEMS
    rows_b, tile = config.topk_block_rows, min(config.topk_block_items, TILE_ITEMS)
    buf = np.empty(rows_b * tile, dtype=Q.dtype)
    for t0 in range(0, items.shape[0], tile):
        t1 = min(items.shape[0], t0 + tile)
        for r0 in range(0, Q.shape[0], rows_b):
            r1 = min(Q.shape[0], r0 + rows_b)
            np.matmul(items[t0:t1], Q[r0:r1].T, out=buf[:(t1 - t0) * (r1 - r0)].reshape(t1 - t0, r1 - r0))


def run(n_items=1_000_000, m=1024, d=64, k=20, repeat=3, seed=0):
    load_before = os.getloadavg()
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((n_items, d), dtype=np.float32)
    Q = rng.standard_normal((m, d), dtype=np.float32)
    topk(Q[:4], items[:1000], k)  # JIT warm-up
    peer_topk(Q[:4], items[:1000], k)

    src = np.ones(64 << 20, dtype=np.float32)  # 256 MiB
    dst = np.empty_like(src)
    t_copy = _best(lambda: np.copyto(dst, src), 5)[0]
    copy_gbs = 2 * src.nbytes / t_copy / 1e9
    del src, dst

    t_ours, ts_ours, mem_ours = _best(lambda: topk(Q, items, k), repeat)
    ours = topk(Q, items, k)
    t_tmm = _best(lambda: tiled_matmul(Q, items), repeat)[0]
    t_mm = _best(lambda: Q @ items.T, 1)[0]
    t_peer, ts_peer, mem_peer = _best(lambda: peer_topk(Q, items, k), repeat)
    peer = peer_topk(Q, items, k)
    agree = float(np.mean(ours[0] == peer[0]))

    flops = 2.0 * m * n_items * d
    bytes_min = items.nbytes + Q.nbytes + ours[0].nbytes + ours[1].nbytes
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "numpy": np.__version__,
                    "loadavg_before_after": [load_before, os.getloadavg()]},
        "shape": {"n_items": n_items, "queries": m, "dim": d, "k": k, "dtype": "float32"},
        "config": {"topk_block_items": config.topk_block_items,
                   "topk_block_rows": config.topk_block_rows},
        "copy_GBps": copy_gbs,
        "stgkern_topk": {"best_s": t_ours, "runs_s": ts_ours, "GFLOPs": flops / t_ours / 1e9,
                         "effective_GBps": bytes_min / t_ours / 1e9,
                         "pct_copy_bandwidth": 100 * bytes_min / t_ours / 1e9 / copy_gbs,
                         "peak_temp_MiB": mem_ours / 2**20},
        "peer_numpy_matmul_argpartition": {"best_s": t_peer, "runs_s": ts_peer,
                                           "GFLOPs": flops / t_peer / 1e9,
                                           "peak_temp_MiB": mem_peer / 2**20},
        "full_matmul_only_s": t_mm,
        "tiled_matmul_only_s": t_tmm,
        "speedup_vs_peer": t_peer / t_ours,
        "ratio_to_tiled_matmul": t_ours / t_tmm,
        "ratio_to_full_matmul": t_ours / t_mm,
        "memory_ratio_peer_over_ours": mem_peer / max(mem_ours, 1),
        "index_agreement_with_peer": agree,
    }


def test_topk_small(benchmark):
    rng = np.random.default_rng(0)
    items = rng.standard_normal((100_000, 64), dtype=np.float32)
    Q = rng.standard_normal((128, 64), dtype=np.float32)
    topk(Q, items, 20)
    benchmark.group = "topk 100k x 128 d64 k20"
    benchmark(topk, Q, items, 20)


def test_peer_small(benchmark):
    rng = np.random.default_rng(0)
    items = rng.standard_normal((100_000, 64), dtype=np.float32)
    Q = rng.standard_normal((128, 64), dtype=np.float32)
    benchmark.group = "topk 100k x 128 d64 k20"
    benchmark(peer_topk, Q, items, 20)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "topk_cpu.json"))
    a = ap.parse_args()
    res = run(a.items, a.queries, a.dim, a.k, a.repeat)
    print(json.dumps(res, indent=2))
    if a.out != "-":
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
