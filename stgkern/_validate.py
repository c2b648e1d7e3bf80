"""Input checks shared by every public function and both backends.

Every message names the argument, what was found, and the fix.  Backends
assume clean input: Numba does no bounds checking, so what is not checked
here is a crash or silent corruption.
"""
from __future__ import annotations

import os

import numpy as np

from . import config

#: Floating dtypes every op accepts (float32 is the default; float64 is for
#: gradient checks and accuracy-sensitive callers).
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Index dtypes for graph structure arrays.
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def _names(dtypes) -> str:
    return ", ".join(str(d) for d in dtypes)


def float_array(a, name: str, *, ndim=(1, 2), dtype=None):
    """Check ``a`` is a floating array of an accepted rank; return it C-contiguous.

    ``dtype`` given: the array is cast to it (used to bring edge values to
    the features' dtype).  Integer or bool input raises ``TypeError``:
    silently casting ids to floats hides bugs.
    """
    if a.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name} must have {' or '.join(map(str, np.atleast_1d(ndim)))} dimension(s), "
                         f"got shape {tuple(a.shape)}")
    if dtype is None:
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} has dtype {a.dtype}; supported: {_names(FLOAT_DTYPES)} "
                            f"(cast with {name}.astype(numpy.float32))")
    else:
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{name} has dtype {a.dtype}; expected a numeric array")
        if a.dtype != dtype:
            a = a.astype(dtype)
    xp = _xp(a)
    return xp.ascontiguousarray(a)


def features(X, name: str, n_rows: int, *, ndim=2):
    """Node features: float32/float64, ``n_rows`` rows, made C-contiguous."""
    X = float_array(X, name, ndim=ndim)
    if X.shape[0] != n_rows:
        raise ValueError(f"{name} has {X.shape[0]} rows but the graph has {n_rows} nodes; "
                         f"pass one row per node")
    return X


def edge_values(w, name: str, nnz: int, dtype, *, ndim=(1, 2)):
    """Per-edge values (weights, features, scores): ``nnz`` rows, cast to ``dtype``."""
    if w is None:
        return None
    w = float_array(w, name, ndim=ndim, dtype=dtype)
    if w.shape[0] != nnz:
        raise ValueError(f"{name} has length {w.shape[0]} but the graph has {nnz} edges; "
                         f"pass one value per edge in the graph's CSR edge order")
    return w


def same_dtype(**arrays):
    """All named float arrays share one dtype; returns it."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    dts = {v.dtype for _, v in items}
    if len(dts) > 1:
        desc = ", ".join(f"{k}: {v.dtype}" for k, v in items)
        raise TypeError(f"dtypes must match ({desc}); cast them to one of {_names(FLOAT_DTYPES)}")
    return items[0][1].dtype if items else None


def choice(value, name: str, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(allowed)}")
    return value


def nonneg_int(value, name: str, *, allow_none=False, minimum=0):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer{' or None' if allow_none else ''}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > np.iinfo(np.int64).max:
        raise ValueError(f"{name} = {value} is beyond the int64 range the kernels count in "
                         f"(at most {np.iinfo(np.int64).max})")
    return int(value)


def integer_ids(a, name: str):
    """Integer id column (any int width; NumPy or CuPy, never copied to the host); floats that
    are whole numbers are not guessed at."""
    if not hasattr(a, "dtype"):
        a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer ids, got dtype {a.dtype}; "
                        f"map labels to integers first (e.g. pandas.factorize)")
    if a.dtype.kind == "u" and a.dtype.itemsize == 8 and a.size:
        hi = int(a.max())
        if hi > np.iinfo(np.int64).max:          # would wrap to a negative id in int64
            raise ValueError(f"{name} holds the id {hi}, above the int64 range ids are kept in; "
                             f"renumber them densely first (np.unique(ids, return_inverse=True)[1])")
    return a


def finite(a, name: str):
    xp = _xp(a)
    if a.dtype.kind == "f" and a.size and not bool(xp.isfinite(a).all()):
        bad = int((~xp.isfinite(a)).sum())
        first = int(xp.flatnonzero(~xp.isfinite(a))[0])
        raise ValueError(f"{name} has {bad} NaN or infinite value(s) (first at position {first}); "
                         f"drop or fill them before building graphs")
    return a


def available_memory() -> int:
    """Bytes of memory available now (Linux: MemAvailable; else physical pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def fits(nbytes: int, what: str, *, available: int | None = None) -> None:
    """Refuse an allocation of ``nbytes`` that cannot fit, before making it."""
    avail = available_memory() if available is None else available
    limit = int(avail * config.max_memory_fraction)
    if nbytes > limit:
        raise MemoryError(
            f"{what} needs an estimated {nbytes / 2**30:.2f} GiB but only {avail / 2**30:.2f} GiB is "
            f"available (limit {config.max_memory_fraction:.0%}); reduce the window/horizon, "
            f"split the log (e.g. by user ranges) or use stgkern.dask")


def _xp(a):
    if isinstance(a, np.ndarray):
        return np
    import cupy  # only reached for CuPy input
    return cupy


def graph(g, name: str = "g"):
    """``g`` when it is a :class:`stgkern.Graph`, else a TypeError that says how to build one
    from what was passed (a SciPy sparse matrix, a PyG ``edge_index``, an (indptr, indices) pair)."""
    from .graph import Graph
    if isinstance(g, Graph):
        return g
    kind = type(g).__name__
    mod = type(g).__module__.split(".")[0]
    if mod == "scipy":
        how = "stgkern.Graph.from_scipy(A) (row i of A pulls from the columns it holds)"
    elif mod == "torch" or (hasattr(g, "shape") and len(getattr(g, "shape", ())) == 2 and g.shape[0] == 2):
        how = "stgkern.Graph.from_edge_index(edge_index, n_nodes) (a PyG-style 2 x nnz source/target array)"
    elif isinstance(g, tuple) and len(g) in (2, 3):
        how = "stgkern.Graph(indptr, indices[, n_src]) from the CSR arrays"
    else:
        how = "stgkern.Graph(indptr, indices), Graph.from_scipy(A) or Graph.from_edge_index(edge_index, n)"
    raise TypeError(f"{name} must be a stgkern.Graph, got {kind}; build one with {how}")

