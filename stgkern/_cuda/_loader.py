"""Load and launch the CUDA kernels of ``csrc/cuda/<op>.cu``.

One module per (op, value type, index type, device), memoized.  The loader
prefers the prebuilt fatbin ``stgkern/_cuda/prebuilt/<op>.fatbin`` (written
by ``setup.py`` through ``tools/cuda_build.py`` together with
``<op>.names.json``, the name-expression -> mangled-symbol map) and otherwise
compiles the same source with NVRTC through ``cupy.RawModule``.

Where the sources come from, first hit wins:

1. ``stgkern/_cuda/prebuilt/src`` -- copied there by the AOT build, so a wheel
   built with nvcc present can still recompile with NVRTC;
2. ``<repo>/csrc`` next to the package -- source checkouts and editable
   installs.

A wheel built *without* nvcc ships neither; the error then says so.  Set
``STGKERN_CUDA_NVRTC=1`` to ignore the fatbins (useful to test both paths).

CuPy is imported on first use only.
"""
from __future__ import annotations

import json
import os
import threading
import weakref
from pathlib import Path

import numpy as np

from .. import config

_HERE = Path(__file__).resolve().parent
PREBUILT = _HERE / "prebuilt"

#: Kernel templates per op; every one is instantiated for the four
#: (value, index) pairs of ``STGKERN_FOR_TYPES`` in csrc/include/stgkern/common.cuh.
KERNELS = {
    "spmm": ("spmm_fwd", "spmm_fwd_vec", "spmm_fwd_long", "spmm_bwd_x", "spmm_bwd_w"),
    "message_passing": ("mp_fwd", "mp_fwd_vec", "mp_fwd_long", "mp_bwd_x", "mp_bwd_e"),
    "sddmm": ("sddmm_fwd",),
    "score_cross_entropy": ("sce_tile_lse", "sce_tile_grad"),
    "edge_softmax": ("edge_softmax_fwd", "edge_softmax_bwd"),
    "segment_reduce": ("segment_reduce_fwd", "segment_reduce_bwd"),
    "common_neighbor_fusion": ("cnf_fwd", "cnf_bwd_x", "cnf_bwd_w"),
    "topk": ("topk_select",),
    "time_decay": ("time_decay_fwd",),
    "time_encoding": ("time_encoding_fwd",),
    "node_features": ("node_features_fwd",),
    "graph_conv": ("gc_epilogue", "gc_act_bwd"),
    # instantiated for time types long long / double (not float) x int / long long
    "window_graph": ("window_graph_count", "window_graph_fill"),
    # weight type float / double x int / long long (the layout and prefix kernels ignore both)
    "session_graph": ("session_graph_count", "session_graph_fill", "srgnn_layout_fill", "srgnn_prefixes_fill"),
    # instantiated for long long (unused) x int / long long (column indices)
    "item_graph": ("item_graph_pairs", "item_graph_count", "item_graph_groups", "item_graph_fill"),
    # instantiated for time types long long / double x long long (unused)
    "time_intervals": ("time_intervals_rescale", "time_intervals_matrices"),
}
_VALUE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double",
          np.dtype(np.int64): "long long"}  # int64: integer times (window_graph, time_intervals), item_graph
_INDEX = {np.dtype(np.int32): "int", np.dtype(np.int64): "long long"}

_lock = threading.Lock()
_modules: dict = {}
_state = {"paths": {}, "loaded": []}


def source_root() -> Path | None:
    """Directory holding ``cuda/`` and ``include/`` (see the module docstring), or None."""
    for cand in (PREBUILT / "src", _HERE.parents[1] / "csrc"):
        if (cand / "cuda").is_dir() and (cand / "include").is_dir():
            return cand
    return None


def name_expression(kernel: str, dtype, index_dtype) -> str:
    return f"{kernel}<{_VALUE[np.dtype(dtype)]},{_INDEX[np.dtype(index_dtype)]}>"


class _Module:
    """A loaded RawModule plus the map from name expression to symbol."""

    def __init__(self, op: str, names: list[str]):
        import cupy

        fatbin, names_json = PREBUILT / f"{op}.fatbin", PREBUILT / f"{op}.names.json"
        fallback = ""
        if fatbin.is_file() and names_json.is_file() and not os.environ.get("STGKERN_CUDA_NVRTC"):
            symbols = json.loads(names_json.read_text())
            missing = [n for n in names if n not in symbols]
            if not missing:
                try:
                    raw = cupy.RawModule(path=str(fatbin))
                    raw.get_function(symbols[names[0]])  # loads now: a driver too old for it falls back
                except Exception as exc:  # CuPy's driver errors have no common base class
                    fallback = f"prebuilt fatbin not loadable ({type(exc).__name__}: {exc})"
                else:
                    self.raw, self.symbols, self.path = raw, {n: symbols[n] for n in names}, "prebuilt"
                    return
            else:
                fallback = f"prebuilt fatbin lacks {missing}"
        root = source_root()
        if root is None:
            raise RuntimeError(
                f"stgkern: no CUDA source for {op!r}: neither a prebuilt fatbin under {PREBUILT} nor csrc/ "
                "next to the package was found; reinstall stgkern from a source checkout (pip install -e .) "
                "or build with nvcc on PATH")
        code = (root / "cuda" / f"{op}.cu").read_text()
        self.raw = cupy.RawModule(code=code, options=("-std=c++17", f"-I{root / 'include'}"),
                                  name_expressions=names)
        self.symbols = {n: n for n in names}
        self.path = f"nvrtc ({root})" + (f"; {fallback}" if fallback else "")

    def function(self, name: str):
        return self.raw.get_function(self.symbols[name])


def _module(op: str, dtype, index_dtype) -> _Module:
    import cupy

    dev = cupy.cuda.Device().id
    key = (op, np.dtype(dtype), np.dtype(index_dtype), dev)
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                names = [name_expression(k, dtype, index_dtype) for k in KERNELS[op]]
                mod = _Module(op, names)
                _modules[key] = mod
                _state["paths"][op] = mod.path
                _state["loaded"].extend(f"{n} @ GPU {dev}" for n in names)
    return mod


def _threads() -> int:
    return min(1024, max(32, int(config.cuda_threads_per_block) // 32 * 32))


def _pack(args):
    return tuple(np.uint64(0) if a is None else (np.int64(a) if isinstance(a, int) else a) for a in args)


def _run(op, name, fn, grid, threads, args) -> None:
    try:
        fn((grid,), (threads,), _pack(args))
        if config.cuda_debug:
            import cupy
            cupy.cuda.Device().synchronize()
    except Exception as exc:  # CuPy raises CUDADriverError / CUDARuntimeError
        raise RuntimeError(f"CUDA kernel {name} ({op}) failed: {exc}") from exc


def launch(op: str, kernel: str, dtype, index_dtype, n_warps: int, args) -> None:
    """Launch ``kernel<dtype,index>`` of ``op`` with one warp per work item.

    ``args``: CuPy arrays, ``None`` (a null pointer), Python ints (64-bit) or
    ``numpy.int32`` scalars (the kernels' ``int`` parameters).  Block size is
    ``config.cuda_threads_per_block`` (rounded down to whole warps).
    """
    n_warps = int(n_warps)
    if n_warps <= 0:
        return
    name = name_expression(kernel, dtype, index_dtype)
    fn = _module(op, dtype, index_dtype).function(name)
    threads = _threads()
    _run(op, name, fn, (n_warps + threads // 32 - 1) // (threads // 32), threads, args)


def launch_blocks(op: str, kernel: str, dtype, index_dtype, n_blocks: int, args, threads: int | None = None) -> None:
    """Launch with one block per work item: ``threads`` threads (a multiple of 32, at most 1024),
    by default ``config.cuda_threads_per_block``."""
    n_blocks = int(n_blocks)
    if n_blocks <= 0:
        return
    name = name_expression(kernel, dtype, index_dtype)
    threads = _threads() if threads is None else int(threads)
    _run(op, name, _module(op, dtype, index_dtype).function(name), n_blocks, threads, args)


_long_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def long_rows(g):
    """Rows of ``g`` with more than ``config.cuda_long_row`` edges (int64 CuPy array), cached per graph."""
    import cupy

    threshold = int(config.cuda_long_row)
    key = (threshold, id(g.indptr))
    hit = _long_cache.get(g)
    if hit is None or hit[0] != key:
        rows = cupy.nonzero(cupy.diff(g.indptr) > threshold)[0].astype(np.int64)
        hit = (key, rows)
        _long_cache[g] = hit
    return threshold, hit[1]


def info() -> dict:
    """Which path each op was loaded from and which kernels are loaded so far."""
    return {"paths": dict(_state["paths"]), "loaded": list(_state["loaded"]),
            "prebuilt_dir": str(PREBUILT), "prebuilt_available": sorted(p.stem for p in PREBUILT.glob("*.fatbin")),
            "source_root": str(source_root()) if source_root() else None}
