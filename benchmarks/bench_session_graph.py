"""SR-GNN session graphs / layout and TiSASRec intervals vs the faithful Python scripts and NumPy.

pytest-benchmark suites on the shared ``sessions`` and ``sequences``
workloads (``stgkern.bench.workloads``; size from ``STGKERN_BENCH_SIZE``,
default ``small``)::

    pytest benchmarks/bench_session_graph.py --benchmark-enable

``python benchmarks/bench_session_graph.py [--size medium] [--json FILE]``
is ``stgkern bench --ops session_graph time_intervals`` (NumPy peers, output
checks, copy bandwidth).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from naive import naive_split, naive_srgnn_get_slice, naive_tisasrec_relation  # noqa: E402
from stgkern import bench, session_graph, srgnn_layout, time_intervals  # noqa: E402
from stgkern.bench import peers as P  # noqa: E402
from stgkern.bench import workloads  # noqa: E402

SIZE = os.environ.get("STGKERN_BENCH_SIZE", "small")
#: Users of the sequences workload used for time_intervals (its output is maxlen² ints per user).
USERS = 200


def each(fn, args):
    """Run ``fn`` per batch and drop the result, as a training loop does (keeping
    every output alive would measure page faults, not the kernel)."""
    def run():
        for a in args:
            fn(*a)
    return run


@pytest.fixture(scope="module")
def batches():
    return workloads.get("sessions", SIZE).batches


@pytest.fixture(scope="module")
def user_times():
    wl = workloads.get("sequences", SIZE)
    ptr = wl.arrays["ptr"][:USERS + 1]
    return ptr, wl.arrays["times"][:ptr[-1]]


def test_layout_stgkern(benchmark, batches):
    benchmark(each(srgnn_layout, batches))


def test_layout_published_python(benchmark, batches):
    seqs = [naive_split(p, i) for p, i in batches]
    benchmark(each(naive_srgnn_get_slice, [(s,) for s in seqs]))


def test_session_graph_stgkern(benchmark, batches):
    benchmark(each(session_graph, batches))


def test_session_graph_numpy(benchmark, batches):
    benchmark(each(P.numpy_session_graph, batches))


def test_time_intervals_stgkern(benchmark, user_times):
    benchmark(time_intervals, *user_times)


def test_time_intervals_numpy(benchmark, user_times):
    benchmark(P.numpy_time_intervals, *user_times)


def test_time_intervals_published_python(benchmark, user_times):
    ptr, times = user_times
    tl = naive_split(ptr, times)
    benchmark.pedantic(lambda: naive_tisasrec_relation(tl, 50, 256), rounds=1)


if __name__ == "__main__":
    sys.exit(bench.main(["--ops", "session_graph", "time_intervals", *sys.argv[1:]]))
