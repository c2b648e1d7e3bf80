"""Benchmark: edge ops (``sddmm``, ``edge_softmax``, ``common_neighbor_fusion``) vs peers.

pytest-benchmark suites on the shared workloads (``stgkern.bench.workloads``;
size from ``STGKERN_BENCH_SIZE``, default ``small``)::

    pytest benchmarks/bench_edge.py --benchmark-enable

Run as a script, it is ``stgkern bench`` restricted to these ops (copy
bandwidth, medians, GB/s, % of copy, peer ratios, output checks)::

    python benchmarks/bench_edge.py [--size medium] [--json benchmarks/results/edge_cpu.json]

Peers (written once in ``stgkern.bench.peers``): the PyTorch scatter softmax
and ``torch_geometric.utils.softmax``; SciPy's ``A diag(x_f) A^T`` read at
A's pattern (python-graphblas when installed); NumPy ``einsum`` and the
torch gather formulation for SDDMM.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stgkern import bench  # noqa: E402
from stgkern.bench import peers as P  # noqa: E402
from stgkern.bench import workloads  # noqa: E402
from stgkern.edge import common_neighbor_fusion, edge_softmax, sddmm  # noqa: E402

SIZE = os.environ.get("STGKERN_BENCH_SIZE", "small")
OPS = ["sddmm", "edge_softmax", "common_neighbor_fusion"]


@pytest.fixture(scope="module", params=["window", "powerlaw"])
def graph(request):
    return workloads.get(request.param, SIZE)


@pytest.fixture(scope="module")
def window():
    return workloads.get("window", SIZE)


def _scores(g):
    return np.random.default_rng(1).standard_normal(g.nnz, dtype=np.float32)


def test_bench_edge_softmax(benchmark, graph):
    s = _scores(graph.graph)
    edge_softmax(graph.graph, s)
    benchmark(edge_softmax, graph.graph, s)


def test_bench_edge_softmax_torch(benchmark, graph):
    pytest.importorskip("torch")
    benchmark(P.make_torch_gather_edge_softmax(graph.graph, _scores(graph.graph)))


def test_bench_edge_softmax_pyg(benchmark, graph):
    pytest.importorskip("torch_geometric")
    benchmark(P.make_pyg_edge_softmax(graph.graph, _scores(graph.graph)))


def _cnf_inputs(wl, F=8):
    rng = np.random.default_rng(2)
    g = wl.graph
    return g, rng.uniform(0.5, 1.5, (g.n_nodes, F)).astype(np.float32), rng.uniform(0.5, 1.5, g.nnz).astype(np.float32)


def test_bench_common_neighbor_fusion(benchmark, window):
    g, X, w = _cnf_inputs(window)
    common_neighbor_fusion(g, X, w)
    benchmark(common_neighbor_fusion, g, X, w)


def test_bench_common_neighbor_fusion_scipy(benchmark, window):
    benchmark(P.make_scipy_cnf(*_cnf_inputs(window)))


def test_bench_sddmm_dot(benchmark, graph):
    g, X = graph.graph, graph.arrays["X"]
    sddmm(g, X, X)
    benchmark(sddmm, g, X, X)


def test_bench_sddmm_dot_numpy(benchmark, graph):
    benchmark(P.make_numpy_sddmm(graph.graph, graph.arrays["X"], graph.arrays["X"]))


def test_bench_sddmm_dot_torch(benchmark, graph):
    pytest.importorskip("torch")
    benchmark(P.make_torch_gather_sddmm(graph.graph, graph.arrays["X"], graph.arrays["X"]))


if __name__ == "__main__":
    sys.exit(bench.main(["--ops", *OPS, *sys.argv[1:]]))
