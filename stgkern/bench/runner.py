"""Run the cases, time them, check them against the peers, and collect the JSON record."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import ops as O
from . import workloads

SCHEMA = "stgkern-bench/1"
#: Timed runs per implementation (after one untimed warm-up run) ...
REPEAT = 7
#: ... unless they pass this many seconds, then stop (but after at least MIN_REPEAT runs).
TIME_BUDGET_S = 2.0
MIN_REPEAT = 3
#: Bytes copied to measure the bandwidth, per size.
COPY_BYTES = {"tiny": 8 << 20, "small": 256 << 20, "medium": 512 << 20, "large": 512 << 20}


# ------------------------------------------------------------------ timing
class Timer:
    """Times a zero-argument callable: ``perf_counter`` on the CPU; CUDA events
    around the call on the GPU (the end event is synchronised inside the timed
    region, so asynchronous launches are counted in full)."""

    def __init__(self, backend: str, repeat: int | None = None, budget: float | None = None):
        self.backend, self.default_repeat, self.default_budget = backend, repeat, budget
        if backend == "gpu":
            import cupy
            self.cp = cupy

    def once(self, fn) -> float:
        if self.backend == "gpu":
            cp = self.cp
            a, b = cp.cuda.Event(), cp.cuda.Event()
            a.record()
            fn()
            b.record()
            b.synchronize()
            return cp.cuda.get_elapsed_time(a, b) / 1e3
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def repeat(self, fn, repeat=None, budget=None, min_repeat=None) -> list[float]:
        """Times of up to ``repeat`` calls, stopping early (after ``min_repeat``) once ``budget`` s have passed."""
        repeat = repeat or self.default_repeat or REPEAT
        budget = budget or self.default_budget or TIME_BUDGET_S
        min_repeat = MIN_REPEAT if min_repeat is None else min_repeat
        ts = []
        t0 = time.perf_counter()
        while len(ts) < repeat:
            ts.append(self.once(fn))
            if len(ts) >= min_repeat and time.perf_counter() - t0 > budget:
                break
        return ts


def copy_bandwidth(backend: str, nbytes: int, repeat: int = 5) -> dict:
    """Memory copy bandwidth (read + write counted): ``cupy.copyto`` on the GPU;
    on the CPU the faster (by median) of ``np.copyto`` (one thread) and the same
    copy over Numba's threads (``memcopy.threaded_copy``), since the kernels it
    judges run on every core and one core does not saturate memory."""
    xp = _xp(backend)
    src = xp.ones(nbytes // 4, dtype=np.float32)
    dst = xp.zeros_like(src)                  # touched, so the copy writes to mapped pages
    timer = Timer(backend)
    if backend == "gpu":
        methods = {"cupy.copyto": lambda: xp.copyto(dst, src)}
    else:
        from .memcopy import threaded_copy
        methods = {"numpy.copyto": lambda: np.copyto(dst, src),
                   "threaded copy": lambda: threaded_copy(dst, src)}
    runs = {}
    for name, fn in methods.items():
        timer.once(fn)
        runs[name] = timer.repeat(fn, repeat=repeat, budget=10.0)
    name = min(runs, key=lambda k: np.median(runs[k]))
    ts = runs[name]
    med = float(np.median(ts))
    return {"method": f"{name} of {nbytes / 2**20:.0f} MiB, read + write counted (fastest of {', '.join(runs)})",
            "bytes": 2 * int(src.nbytes), "times_s": ts, "median_s": med,
            "GB_s": 2 * src.nbytes / med / 1e9, "best_GB_s": 2 * src.nbytes / min(ts) / 1e9,
            "median_GB_s_by_method": {k: 2 * src.nbytes / float(np.median(v)) / 1e9 for k, v in runs.items()}}


def _xp(backend):
    if backend == "gpu":
        import cupy
        return cupy
    return np


def _stats(ts):
    ts = np.asarray(ts)
    med = float(np.median(ts))
    q25, q75 = np.percentile(ts, [25, 75])
    return med, float((q75 - q25) / med) if med > 0 else 0.0


# -------------------------------------------------------------- metadata
def _version(mod):
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "installed")
    except Exception:
        return None


def _git_commit():
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_model():
    try:
        import cupy
        dev = cupy.cuda.Device()
        return cupy.cuda.runtime.getDeviceProperties(dev.id)["name"].decode()
    except Exception as exc:
        return f"none ({type(exc).__name__})"


def machine_info(backend: str) -> dict:
    import numba

    import stgkern
    torch_threads = None
    try:
        import torch
        torch_threads = torch.get_num_threads()
    except ImportError:
        pass
    libs = {m: _version(m) for m in ("numpy", "numba", "scipy", "torch", "torch_geometric", "cupy",
                                     "graphblas", "matplotlib", "rich")}
    return {"stgkern": stgkern.__version__, "git_commit": _git_commit(), "python": sys.version.split()[0],
            "libraries": libs, "platform": platform.platform(), "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(), "gpu_model": _gpu_model() if backend == "gpu" else None,
            "numba_threads": numba.get_num_threads(), "torch_threads": torch_threads,
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def check_device(backend: str) -> None:
    """Raise a clear error when the GPU backend cannot run here."""
    if backend != "gpu":
        return
    try:
        import cupy
    except ImportError:
        raise RuntimeError("--device gpu needs CuPy and an NVIDIA GPU: CuPy is not installed "
                           "(pip install 'stgkern[cuda]'), or run with --device cpu") from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise RuntimeError(f"--device gpu: CuPy finds no usable CUDA device ({exc}); run with --device cpu") \
            from None
    if n < 1:
        raise RuntimeError("--device gpu: no CUDA device found; run with --device cpu")


# -------------------------------------------------------------------- run
class Progress:
    """A one-line progress bar on stderr (``\\r``-updated on a terminal, one line per step otherwise)."""

    def __init__(self, total, stream=None, width=24, enabled=True):
        self.total, self.done, self.width = max(total, 1), 0, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def show(self, label):
        """Draw the bar at the current count with ``label`` (on a terminal the line is redrawn in place)."""
        if not self.enabled:
            return
        fill = int(self.width * self.done / self.total)
        bar = "[" + "#" * fill + "." * (self.width - fill) + f"] {self.done}/{self.total} {label}"
        print(bar[:78].ljust(78) if self.tty else bar, end="\r" if self.tty else "\n", file=self.stream,
              flush=True)

    def close(self):
        if self.enabled and self.tty:
            print(" " * 78, end="\r", file=self.stream, flush=True)


def _entry(case, impl, status, reason=None, times=None, copy_gbs=None):
    e = {"op": case.op, "variant": case.variant, "workload": case.workload, "impl": impl, "status": status,
         "reason": reason, "flops": case.flops, "floor_bytes": case.floor_bytes,
         "intensity_flop_per_byte": None if case.flops is None else case.flops / case.floor_bytes,
         "times_s": times or [], "median_s": None, "spread": None, "GFLOP_s": None, "GB_s": None,
         "pct_of_copy": None}
    if times:
        med, spread = _stats(times)
        e.update(median_s=med, spread=spread, GB_s=case.floor_bytes / med / 1e9,
                 pct_of_copy=100 * case.floor_bytes / med / 1e9 / copy_gbs)
        if case.flops is not None:
            e["GFLOP_s"] = case.flops / med / 1e9
    return e


def measure_case(case, timer, copy_gbs, selected_peers) -> list[dict]:
    """Entries for stgkern and every peer of ``case``: warm-up, correctness check, timings.

    Every peer that runs is checked against stgkern's output first; on a
    mismatch nothing is timed (a benchmark of a wrong result is no benchmark).
    """
    try:
        ours_fn = case.ours()
        ours_out = ours_fn()                              # warm-up: JIT / NVRTC compile happens here
    except Exception as exc:
        return [_entry(case, "stgkern", "error", f"{type(exc).__name__}: {exc}")]
    rows, to_time, checked, mismatch = {}, {}, [], None
    # the reference peer first: when it agrees with stgkern, a disagreeing other peer is the one that is wrong
    order = sorted(case.peers, key=lambda n: n != case.reference)
    ref_agrees = False
    for name in order:
        factory = case.peers[name]
        timed = selected_peers is None or name in selected_peers
        if not timed and name != case.reference:
            rows[name] = _entry(case, name, "skipped", "not selected (--peers)")
            continue
        try:
            pfn = factory()
            pout = pfn()
        except O.P.PeerUnavailable as exc:
            rows[name] = _entry(case, name, "skipped", str(exc))
            continue
        except Exception as exc:
            rows[name] = _entry(case, name, "error", f"{type(exc).__name__}: {exc}")
            continue
        ok, detail = case.check(ours_out, pout)
        del pout
        checked.append(name)
        if not ok and ref_agrees:
            rows[name] = _entry(case, name, "mismatch",
                                f"peer output differs from stgkern and from {case.reference}: {detail}")
        elif not ok:
            mismatch = f"output differs from {name}: {detail}"
            rows[name] = _entry(case, name, "mismatch", mismatch)
        elif timed:
            to_time[name] = pfn
        else:
            rows[name] = _entry(case, name, "skipped", f"not selected (--peers); output checked ({detail})")
        if ok and name == case.reference:
            ref_agrees = True
    del ours_out
    if mismatch:
        for name in to_time:
            rows[name] = _entry(case, name, "not timed", "stgkern's output is wrong")
        return [_entry(case, "stgkern", "mismatch", mismatch)] + [rows[n] for n in case.peers if n in rows]
    unchecked = None if checked else "no peer could run to check the output"
    ours = _entry(case, "stgkern", "unchecked" if unchecked else "ok", unchecked, timer.repeat(ours_fn), copy_gbs)
    ours["checked_against"] = checked
    ours["speedup_vs"] = {}
    for name, pfn in to_time.items():
        e = _entry(case, name, "ok", None, timer.repeat(pfn), copy_gbs)
        e["stgkern_speedup"] = e["median_s"] / ours["median_s"]
        rows[name] = e
    for name in case.peers:
        ours["speedup_vs"][name] = rows[name].get("stgkern_speedup")
    return [ours] + [rows[n] for n in case.peers]


def run(ops=None, size="small", backend="cpu", peers=None, progress=True, seed=0, stream=None,
        repeat=None, budget=None) -> dict:
    """Run the benchmark and return the JSON-ready record.

    Parameters
    ----------
    ops : list of str, optional
        Ops to run (default all of ``ops.OPS``); ops whose function this install lacks are
        listed under ``not_available``.
    size : "tiny", "small", "medium" or "large"
    backend : "cpu" or "gpu"
    peers : list of str, optional
        Peers to time (default all installed); the reference peer of each
        case still runs, untimed, to check the output.
    progress : bool
        Progress bar on ``stream`` (default stderr).
    seed : int
        Seed of the workloads and the random op inputs.
    repeat, budget : optional
        Timed runs per implementation and the seconds after which it stops
        early (defaults ``REPEAT`` and ``TIME_BUDGET_S``; never fewer than
        ``MIN_REPEAT`` runs).

    Returns
    -------
    dict
        The record written by ``--json``: ``meta`` (versions, git commit,
        CPU/GPU model, threads), ``copy`` (bandwidth and raw times),
        ``byte_floors``, ``flop_convention``, ``workloads``,
        ``not_available`` and ``results``: one entry per op, variant,
        workload and implementation with ``status``, ``reason``, raw
        ``times_s``, ``median_s``, ``spread``, ``GFLOP_s``, ``GB_s``,
        ``pct_of_copy``, and for stgkern ``checked_against`` and
        ``speedup_vs`` (peer time / stgkern time, None where the peer did
        not run).

    Examples
    --------
    >>> from stgkern.bench import runner
    >>> rec = runner.run(["topk"], "tiny", progress=False)     # doctest: +SKIP
    >>> [r["impl"] for r in rec["results"]]                    # doctest: +SKIP
    ['stgkern', 'numpy', 'torch']
    """
    t_start = time.perf_counter()
    check_device(backend)
    ops = list(O.OPS if not ops else ops)
    bad = [o for o in ops if o not in O.OPS]
    if bad:
        raise ValueError(f"unknown op(s) {bad}; choose from {', '.join(O.OPS)}")
    badp = [p for p in (peers or []) if p not in O.PEERS]
    if badp:
        raise ValueError(f"unknown peer(s) {badp}; choose from {', '.join(O.PEERS)}")
    if size not in workloads.SIZES:
        raise ValueError(f"size must be one of {', '.join(workloads.SIZES)}, got {size!r}")
    timer = Timer(backend, repeat, budget)
    copy = copy_bandwidth(backend, COPY_BYTES[size])
    record = {"schema": SCHEMA, "meta": machine_info(backend), "size": size, "device": backend,
              "argv": sys.argv[1:], "timing": {"repeat": repeat or REPEAT, "min_repeat": MIN_REPEAT,
                                               "budget_s_per_impl": budget or TIME_BUDGET_S, "statistic": "median",
                                               "spread": "interquartile range / median",
                                               "warm_up": "one untimed call first (JIT/NVRTC compile)"},
              "flop_convention": O.FLOP_CONVENTION, "byte_floors": O.BYTE_FLOORS, "copy": copy,
              "workloads": {}, "not_available": [], "results": []}
    todo = []
    for op in ops:
        if O.available(op) is None:
            record["not_available"].append(op)
        else:
            todo.append(op)
    bar = Progress(len(todo), stream=stream, enabled=progress)
    for op in todo:
        bar.show(f"{op}: building inputs")
        try:
            cs = O.cases(op, size, backend, seed)
        except Exception as exc:
            record["results"].append({"op": op, "variant": "", "workload": "", "impl": "stgkern",
                                      "status": "error", "reason": f"{type(exc).__name__}: {exc}",
                                      "times_s": []})
            continue
        for c in cs:
            bar.show(c.key)
            record["results"].extend(measure_case(c, timer, copy["GB_s"], peers))
        bar.done += 1
    bar.close()
    record["workloads"] = {w.name: {"description": w.description, **w.meta} for w in workloads.built(size, seed)}
    record["meta"]["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    record["wall_s"] = time.perf_counter() - t_start
    return record
