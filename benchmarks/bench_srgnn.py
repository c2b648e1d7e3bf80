"""One SR-GNN training step on Diginetica: stgkern's sparse formulation vs the dense original (CPU).

``python benchmarks/bench_srgnn.py [n_batches] [--data DIR]`` takes the
Diginetica split (default ``../shared/data/diginetica`` beside the
repository), its 719,470 training prefixes in one seeded random order, and
times ``n_batches`` (default 240) training steps of batch 100, d = 100, for

* ``stgkern``: :class:`stgkern.models.SRGNN` -- ``make_batch`` (the batch's
  session graphs as one block-diagonal CSR), ``spmm`` over in/out edges,
  ``segment_reduce`` readout, ``score_cross_entropy`` (full-catalogue softmax;
  the (100, 43,097) product kept from the forward for the backward, so three
  products against the item table, not four), torch's fused Adam; the step's
  Numba kernels and torch ops on one thread, as ``fit`` runs them (``step_threads``);
* ``dense``: the published formulation (``tests/naive_srgnn.py``): every
  batch padded to the data set's longest session and laid out by the
  original's Python ``get_slice`` (dense ``[A_in | A_out]`` per session),
  batched dense matmuls, masked attention over padded positions,
  ``F.cross_entropy`` on the (100, 43,097) scores, torch's default Adam;
  timed at torch's default thread count (``dense``) and at one thread
  (``dense_1t``), and the speed-up is quoted against the faster of the two.

Both start from the same weights and see the same batches; they are timed
in alternating rounds (the machine is shared and noisy) and the per-batch
median of each round's mean is reported, with each phase (batch layout,
forward, backward, optimiser step) timed separately.  The epoch time is the
per-batch time times the 7,195 batches of the published epoch.  Floors
measured in the same run: the three (100 x 100) x (100 x 43,097) products
of the scoring layer as NumPy BLAS calls, and the item table's Adam traffic
(read p, g, m, v; write p, m, v: 7 x 17 MB) at the copy bandwidth.
The process keeps freed large blocks for reuse (``keep_freed_memory``), as
``stgkern train`` does; both formulations run under it.
Writes ``benchmarks/results/srgnn_cpu.json``.
"""
import argparse
import contextlib
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import stgkern  # noqa: E402
from stgkern.bench import memcopy  # noqa: E402
from stgkern.models import SRGNN, make_batch  # noqa: E402
from stgkern._workers import keep_freed_memory  # noqa: E402
from stgkern.models.train import make_adam, step_threads, session_examples  # noqa: E402
from naive_srgnn import DenseSRGNN, dense_inputs  # noqa: E402

BATCH = 100
PHASES = ("layout", "forward", "backward", "optimiser")
EPOCH_BATCHES = -(-719470 // BATCH)


def _seqs(ptr, items, rows):
    return [items[ptr[r]:ptr[r + 1]].tolist() for r in rows]


class Timer:
    def __init__(self):
        self.t = {}

    def phases(self, *stamps):
        """Add the four phases' times from their five boundary stamps."""
        for name, a, z in zip(PHASES, stamps, stamps[1:]):
            self.t[name] = self.t.get(name, 0.0) + z - a


def step_stgkern(model, opt, ex, rows, tm):
    ptr, items, target = ex
    t0 = time.perf_counter()
    b = make_batch(ptr, items, rows, target)
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = model.loss(b)
    t2 = time.perf_counter()
    loss.backward()
    t3 = time.perf_counter()
    opt.step()
    t4 = time.perf_counter()
    tm.phases(t0, t1, t2, t3, t4)
    return float(loss.detach())


def step_dense(model, opt, ex, rows, len_max, tm):
    ptr, items, target = ex
    t0 = time.perf_counter()
    inp = dense_inputs(_seqs(ptr, items, rows), len_max)
    tgt = torch.from_numpy(target[rows])
    t1 = time.perf_counter()
    opt.zero_grad()
    loss = F.cross_entropy(model(*inp), tgt)
    t2 = time.perf_counter()
    loss.backward()
    t3 = time.perf_counter()
    opt.step()
    t4 = time.perf_counter()
    tm.phases(t0, t1, t2, t3, t4)
    return float(loss.detach())


@contextlib.contextmanager
def torch_threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def floors(n_items, d):
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((BATCH, d), dtype=np.float32)
    E = rng.standard_normal((n_items, d), dtype=np.float32)
    G = rng.standard_normal((BATCH, n_items), dtype=np.float32)
    out = {}

    def products():
        Q @ E.T
        G @ E
        G.T @ Q
    products()
    t = min(_timed(products) for _ in range(5))
    out["scoring_products_ms"] = 1e3 * t
    out["scoring_products_gflops"] = 3 * 2 * BATCH * n_items * d / t / 1e9
    nbytes = n_items * d * 4
    src, dst = memcopy.copy_pair(256 << 20)
    cp = memcopy.best_copy_time(dst, src)
    bw = (src.nbytes + dst.nbytes) / cp["best"]           # bytes moved (read + write) per second
    out["copy_GBps"] = bw / 1e9
    out["adam_table_floor_ms"] = 1e3 * 7 * nbytes / bw
    return out


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n_batches", nargs="?", type=int, default=240)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "diginetica"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "srgnn_cpu.json"))
    ap.add_argument("--system-malloc", action="store_true",
                    help="leave glibc's default of returning large freed blocks (no keep_freed_memory)")
    args = ap.parse_args()
    freed_kept = False if args.system_malloc else keep_freed_memory()   # as stgkern train runs (both benefit)

    data = stgkern.load_diginetica(args.data)
    ex = session_examples(data.train_ptr, data.train_items)
    len_max = int(np.diff(ex[0]).max())            # the published data_masks pads to the longest prefix
    order = np.random.default_rng(0).permutation(len(ex[2]))
    per_round = max(1, args.n_batches // args.rounds)

    torch.manual_seed(0)
    ours = SRGNN(data.n_items)
    dense = DenseSRGNN.from_sparse(ours)
    opt_ours = make_adam(ours, 1e-3, 1e-5)
    opt_dense = torch.optim.Adam(dense.parameters(), lr=1e-3, weight_decay=1e-5)
    # warm-up (JIT compilation, first-touch allocations), then check both compute the same loss
    rows0 = order[:BATCH]
    with torch.no_grad():
        l_ours = float(ours.loss(make_batch(ex[0], ex[1], rows0, ex[2])))
        l_dense = float(F.cross_entropy(dense(*dense_inputs(_seqs(ex[0], ex[1], rows0), len_max)),
                                        torch.from_numpy(ex[2][rows0])))
    assert abs(l_ours - l_dense) < 1e-4 * max(1.0, abs(l_dense)), (l_ours, l_dense)
    for i in range(3):
        rows = order[i * BATCH:(i + 1) * BATCH]
        step_stgkern(ours, opt_ours, ex, rows, Timer())
        step_dense(dense, opt_dense, ex, rows, len_max, Timer())

    names = ("stgkern", "dense", "dense_1t")
    res = {k: [] for k in names}
    phases = {k: Timer() for k in names}
    pos = 3
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            for i in range(per_round):
                rows = order[(pos + i) * BATCH:(pos + i + 1) * BATCH]
                if name == "stgkern":
                    with step_threads():           # as stgkern.models.fit trains
                        step_stgkern(ours, opt_ours, ex, rows, phases[name])
                elif name == "dense":
                    step_dense(dense, opt_dense, ex, rows, len_max, phases[name])
                else:
                    with torch_threads(1):
                        step_dense(dense, opt_dense, ex, rows, len_max, phases[name])
            res[name].append((time.perf_counter() - t0) / per_round)
        pos += per_round
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {1e3 * res[k][-1]:.1f}" for k in names)
              + " ms/batch", file=sys.stderr)

    n_timed = per_round * args.rounds
    out = {
        "benchmark": "SR-GNN training step, Diginetica, batch 100, d 100, 43,097 items",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "numba_threads": __import__("numba").get_num_threads(), "glibc_keeps_freed_memory": freed_kept},
        "batches_timed_each": n_timed, "rounds": args.rounds, "len_max": len_max,
        "ms_per_batch": {k: 1e3 * float(np.median(v)) for k, v in res.items()},
        "ms_per_batch_rounds": {k: [1e3 * x for x in v] for k, v in res.items()},
        "phases_ms_per_batch": {k: {p: 1e3 * t / n_timed for p, t in tm.t.items()} for k, tm in phases.items()},
        "floors": floors(data.n_items, ours.hidden_size),
    }
    ms = out["ms_per_batch"]
    best_dense = min(("dense", "dense_1t"), key=ms.get)
    out["dense_best"] = best_dense
    out["speedup_vs_dense"] = ms[best_dense] / ms["stgkern"]
    out["epoch_seconds"] = {k: v * EPOCH_BATCHES / 1e3 for k, v in ms.items()}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"{'':10}{'ms/batch':>10}{'epoch s':>9}  " + "  ".join(f"{p:>9}" for p in PHASES))
    for k in names:
        ph = out["phases_ms_per_batch"][k]
        print(f"{k:10}{ms[k]:10.1f}{out['epoch_seconds'][k]:9.0f}  " + "  ".join(f"{ph[p]:9.1f}" for p in PHASES))
    fl = out["floors"]
    print(f"speed-up {out['speedup_vs_dense']:.2f}x (against {best_dense}); floors: scoring products {fl['scoring_products_ms']:.1f} ms "
          f"({fl['scoring_products_gflops']:.0f} GFLOP/s), Adam table "
          f"{fl.get('adam_table_floor_ms', float('nan')):.1f} ms")


if __name__ == "__main__":
    main()
