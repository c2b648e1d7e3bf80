"""GCE-GNN global item graph vs the faithful ``build_graph.py`` logic and a vectorised NumPy build.

pytest-benchmark suites on the shared ``sequences`` workload
(``stgkern.bench.workloads``; size from ``STGKERN_BENCH_SIZE``, default
``small``)::

    pytest benchmarks/bench_item_graph.py --benchmark-enable

``python benchmarks/bench_item_graph.py [--size medium] [--json FILE]`` is
``stgkern bench --ops item_graph`` (NumPy peer, output check, copy
bandwidth); ``--published`` also times the published Python script's logic
once on the same sequences and checks that its lists equal ours.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from stgkern import bench, item_graph  # noqa: E402
from stgkern.bench import peers as P  # noqa: E402
from stgkern.bench import workloads  # noqa: E402

SIZE = os.environ.get("STGKERN_BENCH_SIZE", "small")


@pytest.fixture(scope="module")
def data():
    wl = workloads.get("sequences", SIZE)
    return wl.arrays["ptr"], wl.arrays["items"], wl.meta["n_items"]


def test_item_graph_stgkern(benchmark, data):
    ptr, items, n = data
    item_graph(ptr, items, n)
    benchmark(item_graph, ptr, items, n)


def test_item_graph_numpy(benchmark, data):
    ptr, items, n = data
    benchmark(P.numpy_item_graph, ptr, items, n)


def test_item_graph_published_python(benchmark, data):
    from naive import naive_gcegnn_build_graph, naive_split
    ptr, items, n = data
    seqs = naive_split(ptr, items)
    benchmark.pedantic(lambda: naive_gcegnn_build_graph(seqs, n), rounds=1)


def published(size):
    """Time the published script's logic once and check its lists against ours."""
    from naive import naive_gcegnn_build_graph, naive_split
    wl = workloads.get("sequences", size)
    ptr, items, n = wl.arrays["ptr"], wl.arrays["items"], wl.meta["n_items"]
    t0 = time.perf_counter()
    item_graph(ptr, items, n)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    adj, _ = naive_gcegnn_build_graph(naive_split(ptr, items), n)
    t_ref = time.perf_counter() - t0
    g = item_graph(ptr, items, n)
    assert [g.indices[g.indptr[r]:g.indptr[r + 1]].tolist() for r in range(n)] == adj
    print(f"published build_graph.py logic: {t_ref:.2f} s, stgkern {1e3 * t_ours:.1f} ms "
          f"(one call each, outputs equal): {t_ref / t_ours:.0f}x")


if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if a != "--published"]
    rc = bench.main(["--ops", "item_graph", *argv])
    if "--published" in sys.argv:
        size = argv[argv.index("--size") + 1] if "--size" in argv else "small"
        published(size)
    sys.exit(rc)
