"""Benchmark: blocked ``stgkern.topk`` vs the full matmul + ``argpartition`` (NumPy) and ``torch.topk``.

pytest-benchmark suites on the shared ``catalog`` workload
(``stgkern.bench.workloads``; size from ``STGKERN_BENCH_SIZE``, default
``small``)::

    pytest benchmarks/bench_topk.py --benchmark-enable

Run as a script it writes ``benchmarks/results/topk_cpu.json``::

    python benchmarks/bench_topk.py [--size medium] [--k 20] [--out FILE]

On top of what ``stgkern bench --ops topk`` reports, the script measures
what the blocked design is for: peak temporary memory (``tracemalloc``;
NumPy reports its allocations to it) against the peer's full score matrix,
and the time of the bare tiled matmul and the bare full matmul (the compute
floor both share).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stgkern import config  # noqa: E402
from stgkern.bench import peers as P  # noqa: E402
from stgkern.bench import runner, workloads  # noqa: E402
from stgkern.readout import topk  # noqa: E402

SIZE = os.environ.get("STGKERN_BENCH_SIZE", "small")
K = 20


@pytest.fixture(scope="module")
def catalog():
    wl = workloads.get("catalog", SIZE)
    return wl.arrays["Q"], wl.arrays["items"]


def test_topk(benchmark, catalog):
    topk(*catalog, K)
    benchmark.group = f"topk {SIZE} k{K}"
    benchmark(topk, *catalog, K)


def test_topk_numpy(benchmark, catalog):
    benchmark.group = f"topk {SIZE} k{K}"
    benchmark(P.numpy_topk, *catalog, K)


def test_topk_torch(benchmark, catalog):
    pytest.importorskip("torch")
    benchmark.group = f"topk {SIZE} k{K}"
    benchmark(P.make_torch_topk(*catalog, K))


def _timed(fn, repeat):
    """Median wall time of ``repeat`` calls, all times, and the peak traced memory of a call."""
    ts, peak = [], 0
    for _ in range(repeat):
        tracemalloc.start()
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return float(np.median(ts)), ts, peak


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


def run(size="medium", k=K, repeat=3):
    wl = workloads.get("catalog", size)
    Q, items = wl.arrays["Q"], wl.arrays["items"]
    m, n_items, d = Q.shape[0], items.shape[0], Q.shape[1]
    load_before = os.getloadavg()
    topk(Q[:4], items[:1000], k)                      # JIT warm-up
    copy = runner.copy_bandwidth("cpu", 256 << 20)
    t_ours, ts_ours, mem_ours = _timed(lambda: topk(Q, items, k), repeat)
    t_tmm = _timed(lambda: tiled_matmul(Q, items), repeat)[0]
    t_mm = _timed(lambda: Q @ items.T, 1)[0]
    t_peer, ts_peer, mem_peer = _timed(lambda: P.numpy_topk(Q, items, k), repeat)
    ours, peer = topk(Q, items, k), P.numpy_topk(Q, items, k)
    flops = 2.0 * m * n_items * d
    bytes_min = items.nbytes + Q.nbytes + ours[0].nbytes + ours[1].nbytes
    return {
        "machine": runner.machine_info("cpu") | {"loadavg_before_after": [load_before, os.getloadavg()]},
        "workload": wl.description, "shape": {"n_items": n_items, "queries": m, "dim": d, "k": k, "dtype": "float32"},
        "config": {"topk_block_items": config.topk_block_items, "topk_block_rows": config.topk_block_rows},
        "copy_GBps": copy["GB_s"],
        "stgkern_topk": {"median_s": t_ours, "runs_s": ts_ours, "GFLOPs": flops / t_ours / 1e9,
                         "effective_GBps": bytes_min / t_ours / 1e9,
                         "pct_copy_bandwidth": 100 * bytes_min / t_ours / 1e9 / copy["GB_s"],
                         "peak_temp_MiB": mem_ours / 2**20},
        "peer_numpy_matmul_argpartition": {"median_s": t_peer, "runs_s": ts_peer, "GFLOPs": flops / t_peer / 1e9,
                                           "peak_temp_MiB": mem_peer / 2**20},
        "full_matmul_only_s": t_mm, "tiled_matmul_only_s": t_tmm,
        "speedup_vs_peer": t_peer / t_ours, "ratio_to_tiled_matmul": t_ours / t_tmm,
        "ratio_to_full_matmul": t_ours / t_mm, "memory_ratio_peer_over_ours": mem_peer / max(mem_ours, 1),
        "index_agreement_with_peer": float(np.mean(ours[0] == peer[0])),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="medium", choices=tuple(workloads.SIZES))
    ap.add_argument("--k", type=int, default=K)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "topk_cpu.json"))
    a = ap.parse_args()
    res = run(a.size, a.k, a.repeat)
    print(json.dumps(res, indent=2))
    if a.out != "-":
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
