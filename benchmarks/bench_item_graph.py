"""GCE-GNN global item graph on 1M sequence positions vs the faithful build_graph.py logic.

pytest-benchmark suites (``--benchmark-enable``) plus ``python
benchmarks/bench_item_graph.py``, which times kernel and peer in the same
run (with a memory copy as the bandwidth reference) and merges the figures
into ``benchmarks/results/compat_cpu.json``.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from naive import naive_gcegnn_build_graph, naive_split  # noqa: E402
from stgkern import item_graph  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "compat_cpu.json"


def sessions(n_positions=1_000_000, n_items=40000, seed=0):
    """Diginetica-like: mean length ~5, Zipf item popularity (skewed rows)."""
    rng = np.random.default_rng(seed)
    lens = np.minimum(rng.geometric(0.2, n_positions // 4), 60)
    lens = lens[np.cumsum(lens) <= n_positions]
    ptr = np.zeros(len(lens) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(lens)
    items = (rng.zipf(1.2, ptr[-1]) % (n_items - 1)) + 1
    return ptr, items.astype(np.int64), n_items


def best(fn, repeat=15):
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


@pytest.fixture(scope="module")
def data():
    return sessions(100_000)


def test_item_graph_stgkern(benchmark, data):
    ptr, items, n = data
    benchmark(lambda: item_graph(ptr, items, n))


def test_item_graph_published_python(benchmark, data):
    ptr, items, n = data
    seqs = naive_split(ptr, items)
    benchmark.pedantic(lambda: naive_gcegnn_build_graph(seqs, n), rounds=1)


def main():
    a = np.ones(32 << 20)
    b = np.empty_like(a)
    bw = 2 * a.nbytes / best(lambda: np.copyto(b, a))
    ptr, items, n = sessions()
    t_k = best(lambda: item_graph(ptr, items, n))
    seqs = naive_split(ptr, items)
    t0 = time.perf_counter()
    adj, _ = naive_gcegnn_build_graph(seqs, n)
    t_ref = time.perf_counter() - t0
    g = item_graph(ptr, items, n)
    assert [g.indices[g.indptr[r]:g.indptr[r + 1]].tolist() for r in range(n)] == adj
    from stgkern._numba.item_graph import n_pairs
    pairs = n_pairs(ptr, 3)
    # bytes the kernel must touch at least: read items twice, write+read each pair's neighbour (int32)
    moved = 2 * items.nbytes + 2 * 4 * pairs
    res = {"positions": int(ptr[-1]), "sessions": len(ptr) - 1, "n_items": n, "pairs": pairs,
           "stgkern_ms": 1e3 * t_k, "published_python_ms": 1e3 * t_ref, "speedup_vs_published": t_ref / t_k,
           "copy_GBps": bw / 1e9, "pct_copy_bandwidth": 100 * (moved / t_k) / bw, "outputs_equal": True}
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    old["item_graph"] = res
    RESULTS.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
