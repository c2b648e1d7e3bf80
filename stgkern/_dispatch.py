"""The one place that decides where an op runs.

NumPy input runs on the Numba CPU kernels (``stgkern._numba.<op>``); CuPy
input runs on the CUDA kernels (``stgkern._cuda.<op>``).  Mixed input raises
``TypeError`` naming the arrays.  Nothing here imports CuPy unless a CuPy
array is actually passed in.
"""
from __future__ import annotations

import importlib

import numpy as np

CPU = "cpu"
GPU = "gpu"


def _is_cupy(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def backend_of(**arrays) -> str:
    """Return ``"cpu"`` or ``"gpu"`` for the given named arrays.

    ``None`` values are ignored.  A value that is neither a NumPy nor a CuPy
    array raises ``TypeError`` (a torch tensor must go through
    ``stgkern.torch``; a list must be converted with ``np.asarray``).
    """
    seen: dict[str, list[str]] = {CPU: [], GPU: []}
    for name, a in arrays.items():
        if a is None:
            continue
        if isinstance(a, np.ndarray):
            seen[CPU].append(name)
        elif _is_cupy(a):
            seen[GPU].append(name)
        else:
            mod = type(a).__module__.split(".")[0]
            hint = ("use stgkern.torch for torch tensors" if mod == "torch"
                    else "convert it with numpy.asarray (CPU) or cupy.asarray (GPU)")
            raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(a).__name__}; {hint}")
    if seen[CPU] and seen[GPU]:
        raise TypeError(
            "mixed NumPy and CuPy inputs: "
            f"{', '.join(seen[CPU])} on the CPU (NumPy) but {', '.join(seen[GPU])} on the GPU (CuPy); "
            "move them to one device (cupy.asarray / cupy.asnumpy, or Graph.to('gpu'/'cpu'))")
    if seen[GPU]:
        _same_device(arrays)
        return GPU
    return CPU


def _same_device(arrays) -> None:
    devs = {}
    for name, a in arrays.items():
        if a is not None and _is_cupy(a):
            devs.setdefault(int(a.device.id), []).append(name)
    if len(devs) > 1:
        desc = "; ".join(f"{', '.join(v)} on GPU {k}" for k, v in sorted(devs.items()))
        raise ValueError(f"arrays live on different GPUs ({desc}); copy them to one device first")


def array_module(backend: str):
    """``numpy`` for the CPU backend, ``cupy`` for the GPU backend."""
    if backend == GPU:
        import cupy
        return cupy
    return np


def kernels(op: str, backend: str):
    """Import and return the backend module implementing ``op``.

    CPU kernels live in ``stgkern._numba.<op>``, GPU launch wrappers in
    ``stgkern._cuda.<op>``.
    """
    pkg = "stgkern._numba" if backend == CPU else "stgkern._cuda"
    try:
        return importlib.import_module(f"{pkg}.{op}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{pkg}.{op}":
            raise
        where = "CPU (Numba)" if backend == CPU else "GPU (CUDA)"
        raise NotImplementedError(f"{op} has no {where} implementation yet") from None


def expand_ptr(ptr, dtype=np.int64):
    """Row id of every position of a CSR pointer array: ``repeat(arange(len(ptr) - 1), diff(ptr))``.

    ``numpy.repeat`` on the CPU; on the GPU a ``searchsorted`` over the row
    ends instead, because ``cupy.repeat`` takes no device array of counts
    before CuPy 14 (and would copy it to the host where it does).
    """
    if _is_cupy(ptr):
        import cupy
        n = int(ptr[-1]) if ptr.shape[0] else 0
        return cupy.searchsorted(ptr[1:], cupy.arange(n, dtype=ptr.dtype), side="right").astype(dtype)
    return np.repeat(np.arange(ptr.shape[0] - 1, dtype=dtype), np.diff(ptr))


def offsets(counts):
    """CSR pointer of per-row ``counts``: ``[0, cumsum(counts)...]`` as int64, on the counts' device."""
    xp = array_module(GPU if _is_cupy(counts) else CPU)
    out = xp.zeros(counts.shape[0] + 1, dtype=np.int64)
    if counts.shape[0]:
        out[1:] = xp.cumsum(counts)
    return out
