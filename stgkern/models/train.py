"""Training and evaluation of the session models under the published protocol."""
from __future__ import annotations

import contextlib
import copy
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import metrics as M
from ..compat import srgnn_prefixes
from ..readout import topk
from .batch import gather_rows

#: Cut-off of the published tables (P@20, MRR@20).
K = 20


# ---------------------------------------------------------------- data
def session_examples(ptr, items):
    """Every proper prefix of every session with its next item (SR-GNN's augmentation).

    Returns ``(ex_ptr, ex_items, target)``: CSR prefixes in the published
    order (per session, longest prefix first) and the item that followed each.
    """
    ex_ptr, ex_items, target, _ = srgnn_prefixes(ptr, items)
    return ex_ptr, ex_items, target


def split_validation(ptr, items, fraction=0.1, seed=0):
    """Hold out a seeded ``fraction`` of the training *sessions* for validation.

    Splitting sessions rather than prefixes keeps the prefixes of one session
    on one side, so validation never scores a prefix whose longer siblings
    were trained on.  Returns ``((train_ptr, train_items), (valid_ptr, valid_items))``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {fraction}")
    n = len(ptr) - 1
    order = np.random.default_rng(seed).permutation(n)
    n_valid = int(round(n * fraction))
    valid, train = np.sort(order[:n_valid]), np.sort(order[n_valid:])
    return gather_rows(ptr, items, train), gather_rows(ptr, items, valid)


# ---------------------------------------------------------------- progress
class Progress:
    """Batches/s, ETA and running loss of one epoch on stderr (redrawn in place on a terminal,
    a line every ``every`` seconds otherwise)."""

    def __init__(self, total, label, stream=sys.stderr, every=30.0, enabled=True):
        self.total, self.label, self.stream, self.enabled = total, label, stream, enabled
        self.tty = getattr(stream, "isatty", lambda: False)()
        self.every = 0.5 if self.tty else every
        self.t0 = self.last = time.perf_counter()

    def __call__(self, done, loss=None, final=False):
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and now - self.last < self.every:
            return
        self.last = now
        el = now - self.t0
        rate = done / el if el > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        msg = f"{self.label} {done}/{self.total} batches  {rate:6.1f} b/s  "
        msg += f"elapsed {el:5.0f}s" if final else f"ETA {eta:5.0f}s"
        if loss is not None:
            msg += f"  loss {loss:.4f}"
        print(msg + (" " * 4), end="\n" if (final or not self.tty) else "\r", file=self.stream, flush=True)


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, ptr, items, target, k=K, batch_size=500):
    """P@k (= HR@k) and MRR@k over the whole catalogue, nothing excluded, in percent.

    Every example's top-k comes from :func:`stgkern.topk` over
    ``model.item_vectors()`` (ties to the lower item id).
    """
    was = model.training
    model.eval()
    try:
        items_mat = np.ascontiguousarray(model.item_vectors().detach().numpy(), np.float32)
        n = len(ptr) - 1
        hits = rr = 0.0
        for lo in range(0, n, batch_size):
            rows = np.arange(lo, min(n, lo + batch_size))
            b = model.make_batch(ptr, items, rows)
            q = np.ascontiguousarray(model.session_vectors(b).numpy(), np.float32)
            idx, _ = topk(q, items_mat, k)
            t = np.asarray(target)[rows]
            hits += M.hit_rate(idx, t, k) * len(rows)
            rr += M.mrr(idx, t, k) * len(rows)
    finally:
        model.train(was)
    return {f"P@{k}": 100.0 * hits / max(n, 1), f"MRR@{k}": 100.0 * rr / max(n, 1)}


# ---------------------------------------------------------------- training
@dataclass
class FitResult:
    """What :func:`fit` did: the selected epoch, the curves and the test figures at that epoch."""
    best_epoch: int
    valid: dict
    test: dict | None
    curve: list = field(default_factory=list)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)

    def to_dict(self):
        return {"best_epoch": self.best_epoch, "valid": self.valid, "test": self.test, "curve": self.curve,
                "seconds": self.seconds, "config": self.config}


@contextlib.contextmanager
def step_threads():
    """Run a training step's Numba kernels and torch ops on one thread each.

    A batch's session graphs are a few hundred nodes: the kernels take
    microseconds and a parallel region costs more than it saves.  Once torch
    is imported Numba's threads are OpenMP's, and their fork/join around
    every small kernel, next to torch's and OpenBLAS's own threads, made a
    step 4x slower here (bench_srgnn: 192 against 50 ms per batch).  torch's
    own OpenMP workers, which spin after each of the step's small layers,
    took the cores from the scoring layer's OpenBLAS threads next: with
    torch at one thread a step went from 72-88 to 54-59 ms on two cores.
    The big products (``score_cross_entropy``, NumPy BLAS) still use every
    core.  Both thread counts are restored on exit.
    """
    import numba
    old_nb, old_torch = numba.get_num_threads(), torch.get_num_threads()
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(old_nb)
        torch.set_num_threads(old_torch)


def make_adam(model, lr, l2):
    """Adam with L2 as published; torch's fused CPU/GPU update where this torch has it
    (one pass over the 4.3M-value item table instead of a dozen)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=l2, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=l2)


def train_epoch(model, opt, ex_ptr, ex_items, target, *, batch_size, rng, max_batches=None, progress=None):
    """One pass over the examples in a seeded random order; returns (mean loss, batches, seconds)."""
    model.train()
    n = len(ex_ptr) - 1
    order = rng.permutation(n)
    n_batches = -(-n // batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, int(max_batches))
    total, t0 = 0.0, time.perf_counter()
    with step_threads():
        total = _run_batches(model, opt, ex_ptr, ex_items, target, order, batch_size, n_batches, progress)
    if progress is not None:
        progress(n_batches, total / max(n_batches, 1), final=True)
    return total / max(n_batches, 1), n_batches, time.perf_counter() - t0


def _run_batches(model, opt, ex_ptr, ex_items, target, order, batch_size, n_batches, progress):
    total = 0.0
    for i in range(n_batches):
        rows = order[i * batch_size:(i + 1) * batch_size]
        b = model.make_batch(ex_ptr, ex_items, rows, target)
        opt.zero_grad(set_to_none=True)
        loss = model.loss(b)
        loss.backward()
        opt.step()
        total += float(loss.detach())
        if progress is not None:
            progress(i + 1, total / (i + 1))
    return total


def fit(model, data, *, epochs=30, batch_size=100, lr=1e-3, lr_dc=0.1, lr_dc_step=3, l2=1e-5, patience=10,
        valid_fraction=0.1, split_seed=0, seed=0, max_batches=None, test_each_epoch=True, progress=True,
        log=None, checkpoint=None, resume=False):
    """Train ``model`` on ``data`` (:class:`stgkern.data.SessionData`) as SR-GNN's paper does.

    Adam (``lr``, L2 ``l2``), the rate multiplied by ``lr_dc`` every
    ``lr_dc_step`` epochs, mini-batches of ``batch_size`` prefixes in a
    seeded random order each epoch.  A ``valid_fraction`` of the
    training sessions (seeded by ``split_seed``, the same for every
    ``seed``) is held out; after each epoch the validation P@20 is
    measured and the best epoch's weights are kept (stopping after
    ``patience`` epochs without a gain).  The model is left at its best
    epoch and evaluated on the test set.  With ``test_each_epoch`` the test
    figures of every epoch are recorded in the curve too (for the record
    only: the selection never looks at them).

    ``valid_fraction=0`` is the refit that follows a tuned run (the
    published workflow: tune with a held-out split, then train on all of
    the training data): every training session is trained on for exactly
    ``epochs`` epochs, nothing is selected, the last epoch is kept and
    evaluated on the test set, and ``valid`` is None.

    With ``checkpoint`` (a path) the whole training state -- weights, the
    optimiser's moments, the learning-rate schedule, the batch-order and
    dropout generators, the curve and the best epoch's weights -- is written
    there after every epoch (to a temporary name, then renamed, so a killed
    run leaves the previous epoch's checkpoint whole).  ``resume=True``
    continues from it: the result is bit-identical to a run that was never
    interrupted.  Every setting must match the checkpoint's except
    ``epochs`` and ``patience``, which may be raised to train on.

    Returns
    -------
    FitResult
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    rng = np.random.default_rng(seed)
    (tr_ptr, tr_items), (va_ptr, va_items) = split_validation(data.train_ptr, data.train_items, valid_fraction, split_seed)
    ex_ptr, ex_items, ex_target = session_examples(tr_ptr, tr_items)
    va = session_examples(va_ptr, va_items)
    refit = len(va[2]) == 0                      # nothing held out: train `epochs` epochs, keep the last
    opt = make_adam(model, lr, l2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_dc_step, gamma=lr_dc)
    cfg = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "lr_dc": lr_dc, "lr_dc_step": lr_dc_step, "l2": l2,
           "patience": patience, "valid_fraction": valid_fraction, "split_seed": split_seed, "seed": seed, "max_batches": max_batches,
           "train_examples": len(ex_target), "valid_examples": len(va[2]), "model": model.config()}
    log(f"training on {len(ex_target):,} prefixes ({len(tr_ptr) - 1:,} sessions), validating on "
        f"{len(va[2]):,} ({len(va_ptr) - 1:,} sessions), testing on {len(data.test_target):,}")
    best, best_epoch, best_state, curve, t_start, before = -1.0, 0, None, [], time.perf_counter(), 0.0
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs the checkpoint path it resumes from")
        best, best_epoch, best_state, curve, before = _restore(checkpoint, model, opt, sched, rng, cfg)
        if len(curve) > epochs:
            raise CheckpointError(f"{checkpoint} has already trained {len(curve)} epochs; epochs={epochs} is fewer")
        log(f"resumed from {checkpoint} after epoch {len(curve)}")
    for epoch in range(len(curve) + 1, epochs + 1):
        if not refit and best_epoch and epoch - 1 - best_epoch >= patience:
            break
        n_b = -(-len(ex_target) // batch_size)
        bar = Progress(n_b if max_batches is None else min(n_b, max_batches), f"epoch {epoch}/{epochs}",
                       enabled=progress)
        loss, nb, secs = train_epoch(model, opt, ex_ptr, ex_items, ex_target, batch_size=batch_size, rng=rng,
                                     max_batches=max_batches, progress=bar)
        sched.step()
        t0 = time.perf_counter()
        v = None if refit else evaluate(model, *va)
        row = {"epoch": epoch, "loss": loss, "batches": nb, "train_seconds": secs, "valid": v}
        if test_each_epoch or (refit and epoch == epochs):
            row["test"] = evaluate(model, data.test_ptr, data.test_items, data.test_target)
        row["eval_seconds"] = time.perf_counter() - t0
        curve.append(row)
        log(f"epoch {epoch}: loss {loss:.4f}"
            + ("" if refit else f"  valid P@20 {v['P@20']:.2f} MRR@20 {v['MRR@20']:.2f}")
            + (f"  (test P@20 {row['test']['P@20']:.2f} MRR@20 {row['test']['MRR@20']:.2f})" if "test" in row else "")
            + f"  train {secs:.0f}s eval {row['eval_seconds']:.0f}s")
        if refit:
            best_epoch, best_state = epoch, None
        elif v["P@20"] > best:
            best, best_epoch = v["P@20"], epoch
            best_state = copy.deepcopy(model.state_dict())
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, opt, sched, rng, cfg, curve, best, best_epoch, best_state,
                             before + time.perf_counter() - t_start)
    if best_state is not None:
        model.load_state_dict(best_state)
    test = next((r["test"] for r in curve if r["epoch"] == best_epoch and "test" in r), None)
    if test is None:
        test = evaluate(model, data.test_ptr, data.test_items, data.test_target)
    return FitResult(best_epoch, curve[best_epoch - 1]["valid"], test, curve,
                     before + time.perf_counter() - t_start, cfg)


# ---------------------------------------------------------------- checkpoints
#: Format tag of :func:`fit`'s checkpoints (a torch file of plain containers and tensors).
CHECKPOINT_FORMAT = "stgkern.fit-checkpoint/1"
#: Settings a resumed run may change: training may go on for more epochs or with more patience.
_RESUMABLE = ("epochs", "patience")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: missing, not one of :func:`fit`'s, or from other settings."""


def _save_checkpoint(path, model, opt, sched, rng, cfg, curve, best, best_epoch, best_state, seconds):
    import json
    import os
    blob = {"format": CHECKPOINT_FORMAT, "config": json.dumps(cfg, sort_keys=True), "epoch": len(curve),
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "numpy_rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
            "curve": json.dumps(curve), "best": float(best), "best_epoch": int(best_epoch),
            "best_state": best_state, "seconds": float(seconds)}
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)                    # atomic: a reader sees the old checkpoint or the new one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _restore(path, model, opt, sched, rng, cfg):
    """Load a checkpoint of :func:`fit` into the fresh model, optimiser, schedule and generators."""
    import json
    import os
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint to resume from at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a training checkpoint of stgkern: {exc}") from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint of stgkern (format {CHECKPOINT_FORMAT})")
    saved = json.loads(blob["config"])
    now = json.loads(json.dumps(cfg, sort_keys=True))
    differ = sorted(k for k in set(saved) | set(now) if k not in _RESUMABLE and saved.get(k) != now.get(k))
    if differ:
        raise CheckpointError(f"cannot resume {path}: its run had different settings ("
                         + "; ".join(f"{k}: {saved.get(k)!r} there, {now.get(k)!r} here" for k in differ)
                         + "); only " + " and ".join(_RESUMABLE) + " may change")
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    rng.bit_generator.state = json.loads(blob["numpy_rng"])
    torch.set_rng_state(blob["torch_rng"])
    return blob["best"], blob["best_epoch"], blob["best_state"], json.loads(blob["curve"]), blob["seconds"]


# ---------------------------------------------------------------- persistence
def save(model, path, fit_result=None):
    """Write the model's configuration, weights and (optionally) its :class:`FitResult`."""
    blob = {"config": model.config(), "state_dict": model.state_dict(),
            "fit": None if fit_result is None else fit_result.to_dict()}
    nb = getattr(model, "neighbors", None)
    if nb is not None:          # GCE-GNN: the global neighbour table is part of the model
        blob["neighbors"] = {k: torch.from_numpy(np.ascontiguousarray(getattr(nb, k)))
                             for k in ("indptr", "indices", "weight")}
    torch.save(blob, path)


def build(config, neighbors=None):
    """A fresh model from :meth:`config` output (GCE-GNN also needs its neighbour table)."""
    from .gcegnn import GCEGNN, GlobalNeighbors
    from .srgnn import SRGNN
    cfg = dict(config)
    name = cfg.pop("model")
    if name == "srgnn":
        return SRGNN(**cfg)
    if name == "gcegnn":
        if neighbors is None:
            raise ValueError("a saved GCE-GNN must carry its neighbour table ('neighbors')")
        nb = GlobalNeighbors(**{k: v.numpy() for k, v in neighbors.items()})
        cfg.setdefault("hops", 1)                  # written before the hop count was a setting: one hop
        return GCEGNN(cfg.pop("n_items"), nb, **cfg)
    raise ValueError(f"unknown model {name!r} in the saved configuration; this stgkern knows 'srgnn', 'gcegnn'")


def load(path):
    """A model written by :func:`save`, in eval mode: ``(model, fit_dict or None)``."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = build(blob["config"], blob.get("neighbors"))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob.get("fit")
