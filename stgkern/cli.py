"""stgkern: graph-neural-network kernels and models for user-behaviour sequences.

``stgkern demo`` is the whole method on an event log (the built-in synthetic
one by default, or ``--data PATH --format taobao|movielens|recbole|yoochoose``):
k-core and minimum-length filters, the chronological leave-one-out split,
window graphs and features, the spatio-temporal GNN (PyTorch) and its NumPy
closed form, the most-popular, Markov, SR-GNN-style and SASRec-style
baselines on the same split (and on the synthetic log the generator's own
oracle), and next-item / next-behaviour metrics, with a progress bar, an ETA
inside training and the time of every stage; ``--seeds N`` repeats the
training with N seeds and reports mean ± std; ``--json`` writes all of it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

FORMATS = ("taobao", "movielens", "recbole", "yoochoose")


class Stages:
    """A progress bar over the pipeline's stages, with the time of each.

    ``tick(done, total)`` reports progress inside the running stage (training
    steps) with the elapsed time and an ETA: redrawn in place on a terminal,
    one line every ``every`` seconds otherwise (logs stay short).
    """

    def __init__(self, names, stream=sys.stderr, width=24, every=10.0):
        self.names = list(names)
        self.times: dict[str, float] = {}
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.every = every
        self._current = None
        self._last_print = 0.0

    def _bar(self, done: int) -> str:
        fill = int(self.width * done / len(self.names))
        return "[" + "#" * fill + "." * (self.width - fill) + f"] {done}/{len(self.names)}"

    def run(self, name, fn, *args, **kwargs):
        i = self.names.index(name)
        end = "\r" if self.tty else "\n"
        print(f"{self._bar(i)} {name} ...", end=end, file=self.stream, flush=True)
        t0 = time.perf_counter()
        self._current = (i, name, t0)
        self._last_print = t0
        try:
            out = fn(*args, **kwargs)
        finally:
            self._current = None
        self.times[name] = time.perf_counter() - t0
        print(f"{self._bar(i + 1)} {name}: {self.times[name]:.2f} s" + " " * 24, file=self.stream, flush=True)
        return out

    def tick(self, done, total):
        """Progress inside the running stage: ``done`` of at most ``total`` steps, elapsed and ETA."""
        if self._current is None or done <= 0:
            return
        i, name, t0 = self._current
        now = time.perf_counter()
        if not self.tty and now - self._last_print < self.every:
            return
        self._last_print = now
        eta = (now - t0) / done * (total - done)
        print(f"{self._bar(i)} {name}: step {done}/{total} ({now - t0:.0f} s, at most {eta:.0f} s left)",
              end="\r" if self.tty else "\n", file=self.stream, flush=True)

    def run_jobs(self, workers, jobs, busy=()):
        """Independent stages on this process and ``workers`` (:class:`stgkern._workers.Workers`).

        ``jobs``: ``(name, fn, args, kwargs)`` each, taken in order (longest
        first schedules best) by whichever process is free first: a worker
        takes the next one the moment it finishes one (a callback, so this
        process may be busy with a job of its own), this process takes the
        next one when it is done with its own, with :meth:`tick` as its
        ``progress`` when it takes one.  Then one line shows the steps of the
        jobs still running in workers.  Each stage's time is its own wall
        time, where it ran.  Returns ``{name: result}``.  ``busy``: futures of work already
        submitted to the workers (a warm-up); a worker running one takes its first job after it.

        This process runs its jobs on one Numba thread, as each worker does: the processes
        already fill the cores, a second thread would only contend for them, and with one
        thread the kernels' serial compilations are the only ones a fresh install compiles
        (``stgkern._numba._twin``).
        """
        import numba

        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return self._run_jobs(workers, jobs, busy)
        finally:
            numba.set_num_threads(threads)

    def _run_jobs(self, workers, jobs, busy):
        import inspect
        import threading

        from ._workers import wait_any
        todo, running, out, steps = list(jobs), {}, {}, {}
        lock = threading.Lock()
        end = "\r" if self.tty else "\n"
        t0, last = time.perf_counter(), -self.every

        def feed(_=None):           # a worker is free: give it the next job
            with lock:
                if not todo or sum(not f.done() for f in list(running) + list(busy)) >= workers.n:
                    return
                name, fn, a, kw = todo[0]
                try:
                    f = workers.submit(name, fn, *a, **kw)
                except RuntimeError:            # the pool was shut down (another job failed)
                    return
                todo.pop(0)
                running[f] = name
            f.add_done_callback(feed)

        def collect(finished):
            for name, d, total in workers.progress():
                steps[name] = (d, total)
            for f in finished:
                with lock:
                    name = running.pop(f)
                out[name], self.times[name] = f.result()
                steps.pop(name, None)
                print(f"{self._bar(len(self.times))} {name}: {self.times[name]:.2f} s (in a worker)" + " " * 40,
                      file=self.stream, flush=True)

        for f in busy:
            f.add_done_callback(feed)
        for _ in range(workers.n):
            feed()
        while True:
            with lock:
                job = todo.pop(0) if todo else None
                done = [f for f in running if f.done()]
            collect(done)
            if job is None:
                break
            name, fn, a, kw = job
            if "progress" in inspect.signature(fn).parameters:
                kw = dict(kw, progress=self.tick)
            out[name] = self.run(name, fn, *a, **kw)
        while running:
            done, _ = wait_any(list(running), 0.25)
            collect(done)
            now = time.perf_counter()
            if running and (self.tty or now - last >= self.every):
                last = now
                busy = ", ".join(f"{n} step {steps[n][0]}/{steps[n][1]}" if n in steps else f"{n} starting"
                                 for n in list(running.values()))
                print(f"{self._bar(len(self.times))} waiting for {busy} ({now - t0:.0f} s)", end=end,
                      file=self.stream, flush=True)
        return out


class _DataError(Exception):
    """A log that does not match its format, or nothing left to evaluate: reported in one line."""


def _fail(cmd, msg):
    """A user's mistake: one line on stderr, exit code 2 (no usage dump, no traceback)."""
    print(f"stgkern {cmd}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _check_demo_args(args):
    """Every demo argument a user can get wrong, checked before any work starts."""
    if args.data and not args.format:
        raise _DataError("--data needs --format (one of: " + ", ".join(FORMATS) + ")")
    if args.format and not args.data:
        raise _DataError("--format describes --data; pass both (without them the synthetic log is used)")
    for flag, path in (("--data", args.data), ("--categories", args.categories)):
        if path is not None:
            try:
                with open(path):
                    pass
            except OSError as exc:
                raise _DataError(f"cannot read {flag} {path}: {exc.strerror}") from None
    if args.categories and (not args.data or args.format not in ("movielens", "recbole")):
        raise _DataError("--categories goes with --data in format movielens (movies.csv) or recbole (.item)")
    at_least = {"users": 1, "seeds": 1, "epochs": 1, "k_core": 1, "min_length": 3, "window": 0,
                "category_window": 0, "jobs": 0}
    for name, lo in at_least.items():
        v = getattr(args, name)
        if v < lo:
            raise _DataError(f"--{name.replace('_', '-')} must be at least {lo}, got {v}")
    if not args.horizon_hours >= 0:
        raise _DataError(f"--horizon-hours must be at least 0, got {args.horizon_hours}")
    if not args.tau_hours > 0:
        raise _DataError(f"--tau-hours must be positive, got {args.tau_hours}")
    from .models.cli import unwritable
    why = unwritable(args.json) if args.json else None
    if why:
        raise _DataError(f"--json {args.json}: {why}")


def _load(path, fmt, categories=None):
    from stgkern import data as sd
    try:
        return sd.load(path, fmt, categories)
    except ValueError as exc:    # loaders name the line and the column
        raise _DataError(f"--data does not match --format {fmt}: {exc}") from None


def _prepare(log, k, min_length):
    from stgkern import model as sm
    try:
        return sm.prepare(log, k, min_length)
    except ValueError as exc:
        raise _DataError(str(exc)) from None


def _percentiles(a, qs=(0, 50, 90, 99, 100)):
    a = np.asarray(a)
    if a.size == 0:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(np.percentile(a, q)) for q in qs}


def _graph_summary(g, X, args, horizon):
    kind = g.edata["kind"]
    return {
        "nodes": g.n_nodes, "edges": g.nnz,
        "edges_temporal_only": int(np.count_nonzero(kind == 1)),
        "edges_category_only": int(np.count_nonzero(kind == 2)),
        "edges_both": int(np.count_nonzero(kind == 3)),
        "window": args.window, "horizon_s": horizon, "category_window": args.category_window,
        "in_degree": _percentiles(np.diff(g.indptr)),
        "dt_seconds": _percentiles(g.edata["dt"].astype(np.float64)),
        "node_features": list(X.shape),
    }


def _versions():
    import numba
    import scipy

    import stgkern
    out = {"stgkern": stgkern.__version__, "python": sys.version.split()[0], "numpy": np.__version__,
           "numba": numba.__version__, "scipy": scipy.__version__}
    try:
        import torch
        out["torch"] = torch.__version__
    except ImportError:
        out["torch"] = None
    return out


def _synthetic(args):
    """The built-in log, and the generator's ground truth when this generator can give it."""
    import inspect

    from stgkern import data as sd
    if "return_truth" in inspect.signature(sd.synthetic_log).parameters:
        return sd.synthetic_log(n_users=args.users, seed=args.seed, return_truth=True)
    return sd.synthetic_log(n_users=args.users, seed=args.seed), None


def _original_rows(log, prep, users, rows):
    """Rows of the generator's log holding the given events of the prepared (filtered, compacted) log.

    Filtering keeps the order, so an event is found again by its original
    (user, time, item) ids.
    """
    h = prep.log
    key = {(int(u), int(t), int(i)): r for r, (u, t, i) in enumerate(zip(log.user_ids[log.user], log.time,
                                                                           log.item_ids[log.item]))}
    return np.array([key[(int(h.user_ids[h.user[r]]), int(h.time[r]), int(h.item_ids[h.item[r]]))] for r in rows],
                    np.int64)


def _graph_stage(prep, args, horizon):
    """Summary of the graph the test predictions run on (train + validation events)."""
    import stgkern
    g = stgkern.window_graph(prep.history, window=args.window, horizon=horizon, category_window=args.category_window)
    return _graph_summary(g, stgkern.node_features(prep.history, g), args, horizon)


def _oracle(prep, log, truth, k=20):
    """The generator's own next-item top-k and next-behaviour probabilities: the ceiling.

    Items are ranked with the same exclusion as every method; the behaviour
    offsets are calibrated on the validation targets, as for the models.
    """
    import scipy.sparse as sp

    from stgkern import model as sm
    h, n_orig = prep.log, log.n_items
    # event rows of the filtered log: validation target = last history row, test = last log row
    test_rows = sm.last_rows(h, prep.eval_user)
    valid_rows = test_rows - 1

    def exclude(seen):
        seen = sp.csr_matrix(seen)
        return sp.csr_matrix((seen.data, h.item_ids[seen.indices], seen.indptr), shape=(seen.shape[0], n_orig))

    # the truth conditions on the history before a row: the state after the row before the target
    prev_t = _original_rows(log, prep, prep.eval_user, test_rows - 1)
    prev_v = _original_rows(log, prep, prep.eval_user, valid_rows - 1)
    top = np.asarray(truth.next_item_topk(prev_t, k, exclude(prep.seen_test)))
    back = np.full(n_orig + 1, -1, np.int64)
    back[h.item_ids] = np.arange(len(h.item_ids))
    idx = back[np.where(top >= 0, top, n_orig)]
    Pv = np.log(np.asarray(truth.next_behavior_probs(prev_v), np.float64) + 1e-12)
    Pt = np.log(np.asarray(truth.next_behavior_probs(prev_t), np.float64) + 1e-12)
    off = sm.calibrate_offsets(Pv, prep.valid_behavior, sm.behavior_prior(prep.train, prep.n_behaviors))
    return idx, (Pt + off).argmax(1)


def _aggregate(runs):
    """Per method and metric: mean, std (population), min and max over the runs."""
    out = {}
    for name in runs[0]:
        out[name] = {}
        for key in runs[0][name]:
            v = np.array([r[name][key] for r in runs], np.float64)
            out[name][key] = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
                              "max": float(v.max())}
    return out


def demo(args) -> dict:
    """The whole method on one log: preprocessing, split, baselines, the model, metrics.

    With ``--seeds N`` every trained method runs N times (training seeds
    ``seed .. seed+N-1`` on the same data and split); ``metrics`` then holds
    the means and ``aggregate`` the mean, std, min and max of each figure.
    """
    t_start = time.perf_counter()
    from ._workers import keep_freed_memory
    keep_freed_memory()
    n_seeds = max(1, int(args.seeds))
    # worker processes for the neural models, spawned first so that they import PyTorch alongside this
    # process; this process trains too (so one core = no workers).  Without PyTorch the jobs are short
    # once compiled and run here, except in a fresh install of the default log, where a worker
    # compiles side by side with this process (see _warm_up)
    n_workers = min(_workers_for(args), 3 * n_seeds) - 1
    cold = not args.data and _kernels_cold()
    workers = None
    if n_workers > 0 and ((args.backend != "numpy" and _torch_installed()) or cold):
        from ._workers import Workers
        workers = Workers(n_workers)
    try:
        return _demo(args, workers, t_start, cold)
    finally:
        if workers is not None:
            workers.close(wait=False)       # they exit while the summary is printed


def _torch_installed() -> bool:
    """PyTorch can be found (without importing it); False when ``sys.modules['torch']`` is None."""
    import importlib.util
    try:
        return importlib.util.find_spec("torch") is not None
    except ValueError:
        return False


def _workers_for(args) -> int:
    """Processes for the trained methods, this one included: ``--jobs``, or one per usable core (0)."""
    from ._workers import usable_cores
    return args.jobs if args.jobs > 0 else usable_cores()


def _demo(args, workers, t_start, cold=False):
    from stgkern import model as sm

    backend = args.backend
    if backend == "auto":
        backend = "torch" if sm.torch_available() else "numpy"
    elif backend == "torch" and not sm.torch_available():
        raise _DataError("--backend torch needs PyTorch (pip install 'stgkern[torch]'); "
                         "use --backend numpy for the closed form")
    if backend == "torch":
        import torch
        # One intra-op thread: the training steps' matmuls are small (a batch is ~1,600 events), a
        # second OpenMP thread saved little, and on a busy machine its spin-waits made training 5x
        # slower (default demo, 2 cores with another job running: 124 s with 2 threads, 22 s with 1).
        # Numba's kernels keep their threads; the two pools take turns, never run together.
        torch.set_num_threads(1)
    model_name = f"STG-GNN ({args.model})"
    n_seeds = max(1, int(args.seeds))
    seeds = [args.seed + i for i in range(n_seeds)]
    trained = ["SR-GNN"] + (["SASRec"] if backend == "torch" else []) + ["STG closed form"] \
        + ([model_name] if backend == "torch" else [])
    per_seed = lambda name: [f"{name} #{s}" for s in seeds] if n_seeds > 1 else [name]
    names = ["load", "preprocess + split", "window graph + features", "most-popular", "Markov"]
    if not args.data:
        names.append("oracle")
    names += [x for t in trained for x in per_seed(t)] + ["metrics", "online replay"]
    stages = Stages(names)
    if backend != "torch" and workers is not None and not cold:
        workers.close(wait=False)
        workers = None
    horizon = None if args.horizon_hours is None else args.horizon_hours * 3600.0
    tau = args.tau_hours * 3600.0
    graph_args = dict(window=args.window, horizon=horizon, category_window=args.category_window, tau=tau)
    warm = None
    if workers is not None and cold:
        # A fresh install: while this process generates the log (compiling the generator), a worker
        # compiles the closed form's and the online replay's kernels on a tiny log, which this
        # process would otherwise compile last, after the STG-GNN.
        warm = workers.submit("warm-up", _warm_up, graph_args)
    truth = None
    if args.data:
        log = stages.run("load", _load, args.data, args.format, getattr(args, "categories", None))
        source = f"{args.format}:{args.data}"
    else:
        log, truth = stages.run("load", _synthetic, args)
        source = f"synthetic (n_users={args.users}, seed={args.seed})"
    prep = stages.run("preprocess + split", _prepare, log, args.k_core, args.min_length)

    tag = (lambda name, seed: f"{name} #{seed}") if n_seeds > 1 else (lambda name, seed: name)
    # every stage after the split, in the order they run one after the other: (name, function, args,
    # keyword args); none depends on another
    jobs = [("window graph + features", _graph_stage, (prep, args, horizon), {}),
            ("most-popular", sm.popularity, (prep,), {}), ("Markov", sm.markov, (prep,), {})]
    if truth is not None:
        jobs.append(("oracle", _oracle, (prep, log, truth), {}))
    elif "oracle" in names:
        stages.names.remove("oracle")
    for seed in seeds:
        if backend == "torch":
            jobs += [(tag("SR-GNN", seed), sm.fit_srgnn, (prep,), dict(seed=seed, epochs=args.epochs)),
                     (tag("SASRec", seed), sm.fit_sasrec, (prep,), dict(seed=seed, epochs=args.epochs))]
        else:
            jobs.append((tag("SR-GNN", seed), sm.srgnn_closed_form, (prep,), dict(seed=seed)))
        jobs.append((tag("STG closed form", seed), _closed_form_job, (prep,),
                     dict(seed=seed, online=seed == seeds[0], **graph_args)))
        if backend == "torch":
            jobs.append((tag(model_name, seed), sm.fit_torch, (prep,),
                         dict(conv=args.model, seed=seed, epochs=args.epochs, **graph_args)))
    if workers is not None:
        # longest first (MovieLens, a busy hour: STG-GNN 45-50 s, SR-GNN 37-42 s, SASRec 30-33 s, the
        # closed form ~3 s, so one process runs the STG-GNN and the closed form, the other the SR-GNN
        # then SASRec; a cold Numba cache adds most to the first two): each goes to the next free
        # process, a worker or this one
        order = {sm.fit_torch: 0, sm.fit_srgnn: 1, sm.fit_sasrec: 2, _closed_form_job: 3, _graph_stage: 4, _oracle: 5}
        if backend != "torch":
            # the closed forms (a fresh install, with the warm-up running): this process takes the
            # SR-GNN's and the oracle's first, whose kernels the warm-up does not compile, and the
            # closed form's job and the window graph's last, when the warm-up has compiled theirs
            order = {sm.srgnn_closed_form: 0, _oracle: 1, _closed_form_job: 2, _graph_stage: 3}
        results = stages.run_jobs(workers, sorted(jobs, key=lambda j: order.get(j[1], 5)),
                                  busy=[warm] if warm is not None else [])
    else:
        results = {}
        for name, fn, a, kw in jobs:
            kw = dict(kw, progress=stages.tick) if fn in (sm.fit_srgnn, sm.fit_sasrec, sm.fit_torch) else kw
            results[name] = stages.run(name, fn, *a, **kw)
    graph = results["window graph + features"]
    fixed = {name: results[name] for name in ("most-popular", "Markov", "oracle") if name in results}
    runs, info = [], {}
    for seed in seeds:
        preds, inf = dict(fixed), {}
        sr, inf["SR-GNN"] = results[tag("SR-GNN", seed)]
        preds["SR-GNN"] = (sr, None)
        if backend == "torch":
            sas, inf["SASRec"] = results[tag("SASRec", seed)]
            preds["SASRec"] = (sas, None)
        cf, on, t_on = results[tag("STG closed form", seed)]
        preds["STG closed form"], inf["STG closed form"] = cf[:2], cf[2]
        if on is not None:                      # the replay ran inside the closed form's job: its own time
            online = on
            stages.times["online replay"] = t_on
            stages.times[tag("STG closed form", seed)] -= t_on
        if backend == "torch":
            stg = results[tag(model_name, seed)]
            preds[model_name], inf[model_name] = stg[:2], stg[2]
        runs.append(preds)
        info[str(seed)] = inf

    def metrics():
        order = ["oracle", "most-popular", "Markov", "SR-GNN", "SASRec", "STG closed form", model_name]
        per = [{n: sm.evaluate(prep, *p[n]) for n in order if n in p} for p in runs]
        per_class = {n: sm.behavior_per_class(prep, runs[0][n][1]) for n in order
                     if n in runs[0] and runs[0][n][1] is not None}
        return per, per_class
    per, per_class = stages.run("metrics", metrics)
    agg = _aggregate(per)

    seen = np.asarray(prep.seen_test[np.arange(len(prep.eval_user)), prep.test_item]).ravel() > 0
    out = {
        "source": source,
        "config": {k: v for k, v in vars(args).items() if k != "cmd"} | {"backend": backend},
        "versions": _versions(),
        "data": prep.report,
        "events_loaded": prep.report["events_in"], "events": prep.report["events"],
        "users": prep.report["users"], "items": prep.report["items"], "categories": prep.report["categories"],
        "graph": graph,
        "evaluation": {
            "split": "leave-one-out by time: last event test, the one before validation",
            "test_users": int(len(prep.eval_user)),
            "exclusion": "items the user interacted with before the target are excluded from every "
                         "method's ranking",
            "test_targets_already_seen": float(seen.mean()) if seen.size else float("nan"),
            "behavior_classes": list(prep.log.behavior_names),
            "model_selection": "every choice (early stopping, ridge strength, mixing weights, behaviour "
                               "offsets) on the validation targets only",
        },
        "model": model_name if backend == "torch" else "STG closed form",
        "seeds": seeds,
        "metrics": {n: {k: v["mean"] for k, v in m.items()} for n, m in agg.items()},
        "behavior_per_class": per_class,
        "training": info if n_seeds > 1 else info[str(seeds[0])],
        "online": online,
        "seconds_per_stage": {n: stages.times[n] for n in stages.names if n in stages.times},
        "seconds_total": float(sum(stages.times.values())),
        "seconds_wall": time.perf_counter() - t_start,
        "workers": 1 + (workers.n if workers is not None else 0),
        "warm_up_seconds": _warm_up_seconds(warm),
    }
    if n_seeds > 1:
        out["aggregate"] = agg
        out["per_seed"] = per
    return out


def _closed_form_job(prep, online=False, **kwargs):
    """``fit_closed_form`` and, with ``online``, the replay of its model (:func:`_online_stage`) in
    the same job: the replay needs the model, and run as a job of its own after all the others
    its first-call compilation (~9 s in a fresh install) was the demo's tail.  Returns
    ``(fit_closed_form's result, replay result or None, replay seconds)``."""
    from stgkern import model as sm
    cf = sm.fit_closed_form(prep, return_model=True, **kwargs)
    if not online:
        return cf, None, 0.0
    t0 = time.perf_counter()
    with sm._numba_threads(1):      # a demo-sized replay: serial kernels, nothing parallel to compile
        on = _online_stage(prep, cf[3])
    return cf, on, time.perf_counter() - t0


def _kernels_cold() -> bool:
    """Whether the online replay's serial rerank (the last kernel the demo compiles) has no
    on-disk Numba cache yet: a fresh install, or one whose cache was cleared.  False when that
    cannot be told (no cache, a Numba without these internals): no warm-up then."""
    try:
        from stgkern._numba.closed_form import _rerank_serial
        return not os.path.exists(_rerank_serial._cache._cache_file._index_path)
    except Exception:
        return False


def _warm_up(graph_args):
    """The closed form's job (fit and online replay) on a tiny log with the default log's column
    types: compiles (and caches on disk) the kernels of the window graph, the closed form and
    the replay, in a worker, while the demo's own process generates the real log.  Returns
    the replay's ``(events, scored)``: both nonzero, or the tiny log exercised nothing.  The
    default preprocessing whatever the demo's (the kernels do not depend on it, and a strict
    ``--k-core`` would leave nothing of the tiny log)."""
    from stgkern import model as sm
    from stgkern.data import EventLog
    rng = np.random.default_rng(0)
    n_users, per_user, n_items, n_cats = 40, 12, 30, 6
    user = np.repeat(np.arange(n_users, dtype=np.int64), per_user)
    item = rng.integers(0, n_items, user.size).astype(np.int64)
    time_ = np.cumsum(rng.integers(1, 7200, user.size)).astype(np.int64)   # ascending within each user
    log = EventLog(user, item, item % n_cats, rng.integers(0, 4, user.size).astype(np.int8), time_,
                   np.ones(user.size), np.arange(n_users), np.arange(n_items), np.arange(n_cats),
                   ("pv", "cart", "fav", "buy"))
    prep = sm.prepare(log, 5, 3)
    on = _closed_form_job(prep, online=True, seed=0, **graph_args)[1]
    return on["events"], on["scored"]


def _warm_up_seconds(warm):
    """Seconds the warm-up took in its worker, or None when there was none.  A warm-up that
    failed is reported (it only compiles ahead: the demo's results do not depend on it)."""
    if warm is None:
        return None
    try:
        return warm.result()[1]
    except Exception as e:      # noqa: BLE001 - reported, not fatal
        print(f"note: the compile warm-up failed ({type(e).__name__}: {e}); the demo's results are "
              "unaffected", file=sys.stderr)
        return None


def _online_stage(prep, model, n_items=3):
    """The closed form served online (:mod:`stgkern.online`): the log replayed in time order,
    each test event scored by the list made just before it, and one user's explanations."""
    from stgkern import model as sm
    from stgkern.online import describe, replay
    L = prep.log
    r = replay(model, L, sm.last_rows(L, prep.eval_user), k=20)
    rec = r.pop("recommender")
    user = L.user_ids[prep.eval_user[0]]
    items, scores = rec.recommend([user], k=n_items)
    names = list(L.behavior_names)
    expl = [{"item": it.item(), "score": float(sc), "because": describe(rec.explain(user, it), names)}
            for it, sc in zip(items[0], scores[0]) if it >= 0]
    return {**r, "state_bytes": rec.nbytes()["total"], "retained_events": rec.nbytes()["retained_events"],
            "sample_user": user.item(), "sample_recommendations": expl}


ITEM_COLUMNS = ("HR@10", "HR@20", "NDCG@10", "NDCG@20", "MRR@20")
BEHAVIOR_COLUMNS = ("accuracy", "precision", "recall", "F1")


def _print_summary(s):
    ev = s["evaluation"]
    print()
    print(f"source        {s['source']}")
    print(f"events        {s['events']:,} of {s['events_loaded']:,} after the {s['config']['k_core']}-core "
          f"(users {s['users']:,}, items {s['items']:,}, categories {s['categories']:,})")
    gr = s["graph"]
    print(f"window graph  {gr['nodes']:,} nodes, {gr['edges']:,} edges (temporal {gr['edges_temporal_only']:,}, "
          f"category {gr['edges_category_only']:,}, both {gr['edges_both']:,})")
    print(f"test          {ev['test_users']:,} users, last event each; seen items excluded for every method "
          f"({100 * ev['test_targets_already_seen']:.1f}% of test targets were seen before and cannot be hit)")
    print()
    agg = s.get("aggregate")
    cell = (lambda n, c, f: f"{agg[n][c]['mean']:.{f}f}±{agg[n][c]['std']:.{f}f}") if agg else \
        (lambda n, c, f: f"{s['metrics'][n][c]:.{f}f}")
    wi, wb = (15, 12) if agg else (9, 7)
    w = max(len(m) for m in s["metrics"]) + 2
    head = "method".ljust(w) + "".join(f"{c:>{wi}}" for c in ITEM_COLUMNS) + "   next behaviour:" \
        + "".join(f"{c[:4]:>{wb}}" for c in BEHAVIOR_COLUMNS)
    print(head)
    print("-" * len(head))
    for name, m in s["metrics"].items():
        row = name.ljust(w) + "".join(f"{cell(name, c, 4):>{wi}}" for c in ITEM_COLUMNS) + " " * 17
        row += "".join(f"{cell(name, c, 3):>{wb}}" if c in m else f"{'-':>{wb}}" for c in BEHAVIOR_COLUMNS)
        print(row)
    if agg:
        print(f"mean ± std over training seeds {s['seeds']}")
    print()
    print("behaviour: accuracy and macro precision / recall / F1 over "
          + ", ".join(ev["behavior_classes"]))
    on = s.get("online")
    if on:
        print()
        print(f"online        {on['events']:,} events replayed in time order ({on['batches']:,} batches, "
              f"{on['events_per_s']:,.0f} events/s with the recommending); HR@20 of the list made just before "
              f"each test event: {on['hit_rate']:.4f} ({on['hits']}/{on['scored']}; the closed form's test HR@20 "
              f"above is the same figure computed offline)")
        print(f"why           user {on['sample_user']}'s top items and the past events that drove them:")
        for r in on["sample_recommendations"]:
            print(f"  item {r['item']} (score {r['score']:.4f})")
            for line in r["because"]:
                print(f"      {line}")
    print("time per stage  " + "  ".join(f"{k} {v:.1f}s" for k, v in s["seconds_per_stage"].items())
          + f"   total {s['seconds_total']:.1f}s")
    if s.get("workers", 1) > 1:
        print(f"wall time {s['seconds_wall']:.1f}s: the trained methods ran side by side in {s['workers']} "
              "processes (each stage's time is its own)")
    if s.get("warm_up_seconds") is not None:
        print(f"fresh install  a worker compiled the closed form's and the replay's kernels on a tiny log "
              f"while this process generated the log ({s['warm_up_seconds']:.1f} s)")


def _sample_log(args, parts_dir):
    """The training sample: every event of the users in the first ``--train-parts`` parts."""
    from stgkern import pipeline
    return pipeline.read_part(parts_dir, list(range(args.train_parts)))


def recommend(args) -> dict:
    """``stgkern recommend``: partition, fit on a sample of users, score every user; returns a summary."""
    from pathlib import Path

    from stgkern import model as sm
    from stgkern import pipeline
    for name, lo in (("k", 1), ("parts", 0), ("train_parts", 1), ("workers", 0), ("epochs", 1), ("graph_users", 1),
                     ("memory_budget", 0)):
        if getattr(args, name) < lo:
            raise _DataError(f"--{name.replace('_', '-')} must be at least {lo}, got {getattr(args, name)}")
    if args.parts and args.train_parts > args.parts:
        raise _DataError(f"--train-parts ({args.train_parts}) cannot exceed --parts ({args.parts})")
    out = Path(args.out)
    t = {}
    t0 = time.perf_counter()
    if args.scheduler != "none" and args.format not in ("taobao", "parquet"):
        raise _DataError(f"--scheduler runs the Taobao CSV and Parquet formats; score a {args.format} log "
                         f"out of core (--scheduler none)")
    budget = int(args.memory_budget * 2 ** 30) or None
    parts = pipeline.partition(args.data, out / "work", args.parts or None, format=args.format,
                               categories=args.categories, memory_budget=budget)
    t["partition"] = time.perf_counter() - t0
    args.parts = pipeline._read_manifest(parts)["n_parts"]
    if args.train_parts > args.parts:
        raise _DataError(f"--train-parts ({args.train_parts}) exceeds the {args.parts} part(s) the log was split "
                         f"into; lower it or pass --parts")
    t0 = time.perf_counter()
    if args.model == "stgnn":
        if not _torch_installed():
            raise _DataError("--model stgnn needs PyTorch: pip install torch")
        model, fit = pipeline.fit_torch_partitions(parts, epochs=args.epochs, graph_users=args.graph_users)
        trained = (f"trained the STG-GNN on {fit['events']:,} events of {fit['users']:,} users, every part, "
                   f"{fit['epochs_run']} epoch(s), {fit['events_per_second']:,.0f} events/s; "
                   f"{fit['items']:,} items, validation NDCG@20 {fit['valid_NDCG@20']:.4f}")
        t["train"] = time.perf_counter() - t0
    else:
        prep = sm.prepare(_sample_log(args, parts))
        *_, model = sm.fit_closed_form(prep, return_model=True)
        trained = (f"fitted on {len(prep.log):,} events of {prep.log.n_users:,} users ({args.train_parts} of "
                   f"{args.parts} parts; {prep.n_items:,} items)")
        t["fit on the sample"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.scheduler == "none":
        outs = pipeline.recommend_partitions(parts, out / "recommendations", model, k=args.k)
        where = out / "recommendations"
    else:
        import distributed

        from stgkern import dask as sdask
        from ._workers import usable_cores
        if args.scheduler == "local":
            cluster = distributed.LocalCluster(n_workers=args.workers or usable_cores(), threads_per_worker=1,
                                               dashboard_address=None)
        else:
            cluster = args.scheduler
        with distributed.Client(cluster) as client:
            where = sdask.recommend(args.data, model, out / "dask", format=args.format, k=args.k,
                                    npartitions=args.parts, client=client)
        if args.scheduler == "local":
            cluster.close()
        outs = sorted(Path(where).glob("*.parquet"))
    t["recommend"] = time.perf_counter() - t0
    import pandas as pd
    users = sum(pd.read_parquet(o, columns=["user_id"])["user_id"].nunique() for o in outs)
    print(f"{trained}; top-{args.k} for {users:,} users in {where}")
    print("time per stage  " + "  ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    return {"users": int(users), "output": str(where), "seconds": t}


def info(args) -> dict:
    import numba
    import scipy

    import stgkern
    out = {"stgkern": stgkern.__version__, "numpy": np.__version__, "numba": numba.__version__,
           "scipy": scipy.__version__, "numba_threads": numba.config.NUMBA_NUM_THREADS}
    try:
        from stgkern import _cuda
        out["cuda"] = _cuda.info()
    except Exception as exc:  # no CuPy, no device, or no GPU path: say which
        out["cuda"] = f"unavailable ({type(exc).__name__}: {exc})"
    return out


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in --help where it has one worth showing (not None, False or
    one the help text already gives)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in h:
            return h
        return super()._get_help_string(action)


def main(argv=None) -> int:
    from . import __version__
    p = argparse.ArgumentParser(prog="stgkern", description=__doc__.splitlines()[0],
                                epilog="`stgkern COMMAND --help` describes each command and its options.")
    p.add_argument("--version", action="version", version=f"stgkern {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, title="commands", metavar="COMMAND")
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, formatter_class=_HelpFormatter, **k)
    d = sub.add_parser("demo", help="the whole method on an event log: baselines, model, metrics",
                       description="Preprocess a log (k-core, minimum length), split it by time (each "
                                   "user's last event tests, the one before validates), train the "
                                   "spatio-temporal GNN and the baselines, and report next-item and "
                                   "next-behaviour metrics.")
    d.add_argument("--data", help="path of a real log (default: the built-in synthetic log)")
    d.add_argument("--format", choices=FORMATS, help="format of --data")
    d.add_argument("--categories", help="side file giving item categories: movies.csv (movielens) "
                                        "or the .item file (recbole)")
    d.add_argument("--users", type=int, default=300, help="synthetic log: number of users")
    d.add_argument("--seed", type=int, default=0, help="seed of the synthetic log and of training")
    d.add_argument("--k-core", type=int, default=5, help="k-core filter for users and items")
    d.add_argument("--min-length", type=int, default=3, help="drop users with fewer events (>= 3)")
    d.add_argument("--window", type=int, default=8, help="temporal edges from the last N events")
    d.add_argument("--horizon-hours", type=float, default=24.0, help="no edge spans more than this")
    d.add_argument("--category-window", type=int, default=2,
                   help="edges from the last N events of the same category")
    d.add_argument("--tau-hours", type=float, default=1.0, help="initial time-decay constant of the edges")
    d.add_argument("--model", choices=("stgconv", "attention"), default="stgconv",
                   help="graph layer of the PyTorch model")
    d.add_argument("--backend", choices=("auto", "torch", "numpy"), default="auto",
                   help="torch: the GNN trained with PyTorch; numpy: the closed form (no PyTorch); "
                        "auto: torch when installed")
    d.add_argument("--epochs", type=int, default=20, help="most training epochs (early stopping on validation)")
    d.add_argument("--seeds", type=int, default=1,
                   help="train every method with this many seeds (--seed, --seed+1, ...) on the same data and "
                        "report mean ± std")
    d.add_argument("--jobs", type=int, default=0,
                   help="processes for the trained methods (side by side, one thread each; results are identical "
                        "to --jobs 1); 0: one per usable core")
    d.add_argument("--json", help="also write config, times and every metric as JSON to this file")
    from . import bench
    b = sub.add_parser("bench", help="every op against its peers on the standard workloads",
                       description=bench.__doc__.splitlines()[0].replace("``", ""))
    bench.add_arguments(b)
    from .models import cli as mcli
    tr = sub.add_parser("train", help="train a published session model (SR-GNN, GCE-GNN) on a benchmark split",
                        description="Train SR-GNN or GCE-GNN on a session split (Diginetica) under the published protocol: "
                                    "every training prefix an example, the best validation epoch kept, "
                                    "P@20 and MRR@20 over every item on the test split.")
    mcli.add_train_arguments(tr)
    ev = sub.add_parser("evaluate", help="P@20 and MRR@20 of a model saved by stgkern train",
                        description="Evaluate a saved session model on the test split of --data.")
    mcli.add_evaluate_arguments(ev)
    r = sub.add_parser("recommend", help="top-k for every user of a log larger than memory (out of core or Dask)",
                       description="Fit the closed-form STG model on the users of the first --train-parts parts "
                                   "(or, with --model stgnn, train the PyTorch STG-GNN on every part, --graph-users "
                                   "users at a time), then score every user part by part: on this machine out "
                                   "of core, or on a Dask cluster (--scheduler).  Writes user_id, rank, item_id, "
                                   "score as Parquet.")
    r.add_argument("--data", required=True, help="the log: a Taobao UserBehavior CSV or a Parquet file")
    r.add_argument("--format", choices=("taobao", "parquet", "movielens", "recbole", "yoochoose"), default="taobao",
                   help="taobao: UserBehavior CSV; parquet: the same columns; movielens: ratings.csv; recbole: "
                        "an .inter file; yoochoose: GRU4Rec's SessionId/ItemId/Time or clicks.dat")
    r.add_argument("--categories", help="movielens: movies.csv (a movie's first genre is its category); "
                                        "recbole: the .item file")
    r.add_argument("--out", required=True, help="working and output folder")
    r.add_argument("--k", type=int, default=20, help="items per user")
    r.add_argument("--parts", type=int, default=0,
                   help="partitions of the log (by user hash); 0: as many as keep a part's work within "
                        "--memory-budget")
    r.add_argument("--memory-budget", type=float, default=0,
                   help="GiB one part's work may take, the model aside (0: half the memory available now)")
    r.add_argument("--train-parts", type=int, default=1,
                   help="closed form: the model is fitted on the users of this many parts")
    r.add_argument("--model", choices=("closed-form", "stgnn"), default="closed-form",
                   help="closed-form (no PyTorch) or stgnn: the PyTorch STG-GNN trained out of core on every part")
    r.add_argument("--epochs", type=int, default=3, help="stgnn: epoch cap (early stopping on validation)")
    r.add_argument("--graph-users", type=int, default=1024,
                   help="stgnn: users whose window graphs are built and trained on at a time")
    r.add_argument("--scheduler", default="none",
                   help="none: out of core on this machine (resumable); local: a Dask LocalCluster; "
                        "or a distributed scheduler address such as tcp://host:8786")
    r.add_argument("--workers", type=int, default=0, help="LocalCluster workers (0: one per usable core)")
    i = sub.add_parser("info", help="versions, threads and the GPU path in use")
    i.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    if args.cmd == "demo":
        try:
            _check_demo_args(args)
            s = demo(args)
        except _DataError as exc:
            _fail("demo", str(exc))
        _print_summary(s)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(s, fh, indent=2)
    elif args.cmd in ("train", "evaluate"):
        try:
            getattr(mcli, args.cmd)(args)
        except mcli.UserError as exc:
            _fail(args.cmd, str(exc))
    elif args.cmd == "recommend":
        try:
            recommend(args)
        except (_DataError, ValueError, FileNotFoundError, FileExistsError) as exc:
            _fail("recommend", str(exc))
    elif args.cmd == "bench":
        return bench.run(args)
    elif args.cmd == "info":
        s = info(args)
        print(json.dumps(s, indent=2) if args.json else "\n".join(f"{k:14s} {v}" for k, v in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
