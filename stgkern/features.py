"""Node features of events and edge features from time gaps.

Node features follow the graph's node order (``g.perm``) so row r describes
node r.  Edge features take the ``dt`` of a window graph (``g.edata['dt']``).
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _dispatch, _validate


# ------------------------------------------------------------ node features
def _get(obj, name):
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _feature_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in _validate.FLOAT_DTYPES:
        raise TypeError(f"dtype={dtype} is not supported; use numpy.float32 or numpy.float64")
    return dtype


def node_feature_names(behaviors, *, intensity=True, context=True, causal=True):
    """Column names of :func:`node_features` in order.

    ``behavior=b`` (one-hot of the event's behaviour), ``log1p_value``,
    ``prev_behavior=b`` (one-hot of the user's previous event's behaviour),
    ``next_behavior=b`` (only with ``causal=False``).  ``behaviors`` is the
    behaviour count (columns named by code), a sequence of behaviour names,
    or an event log (its ``behavior_names``, e.g. pv, cart, fav, buy).

    >>> node_feature_names(2, causal=False)
    ['behavior=0', 'behavior=1', 'log1p_value', 'prev_behavior=0', 'prev_behavior=1', 'next_behavior=0', 'next_behavior=1']
    >>> node_feature_names(["pv", "buy"], context=False)
    ['behavior=pv', 'behavior=buy', 'log1p_value']
    """
    labels = getattr(behaviors, "behavior_names", behaviors)
    if isinstance(labels, (list, tuple)):
        if not labels:
            raise ValueError("behaviors is empty; an event log has at least one behaviour")
        labels = [str(x) for x in labels]
    else:
        labels = [str(b) for b in range(_validate.nonneg_int(labels, "behaviors", minimum=1))]
    names = [f"behavior={b}" for b in labels]
    if intensity:
        names.append("log1p_value")
    if context:
        names += [f"prev_behavior={b}" for b in labels]
        if not causal:
            names += [f"next_behavior={b}" for b in labels]
    return names


def node_features(log_or_arrays, g=None, *, n_behaviors=None, intensity=True, context=True, causal=True,
                  dtype=np.float32):
    """Per-event node features in the graph's node order.

    With B = ``n_behaviors`` and node r coming from input row ``e = order[r]``
    (``order = g.perm``, or the (user, time) order ``np.lexsort((time, user))``
    when no graph is given), the columns are

    ====================  =====================================================
    ``0 .. B-1``          one-hot of ``behavior[e]``
    ``B`` (intensity)     ``log1p(value[e])`` (0 when the log has no value)
    next B (context)      one-hot of the behaviour of node r-1 when it is the
                          same user's previous event, zeros for a first event
    next B (non-causal)   with ``causal=False`` only: the same for node r+1
    ====================  =====================================================

    ``node_feature_names(...)`` returns the column names.  The default is
    causal: no column looks at a later event.

    Parameters
    ----------
    log_or_arrays : event log or dict
        Needs ``user``, ``behavior`` (ints in [0, n_behaviors)), ``time`` (when
        ``g`` is None), optional ``value`` (non-negative, > -1 for log1p) and
        ``n_behaviors``.
    g : Graph, optional
        A graph with ``perm`` (e.g. from :func:`stgkern.window_graph`).
    n_behaviors : int, optional
        Defaults to ``log.n_behaviors``, else ``max(behavior) + 1``.
    intensity, context, causal : bool
        Column groups, see above.
    dtype : float32 (default) or float64

    Returns
    -------
    ndarray, shape (n_nodes, B + intensity + B·context + B·(context and not causal))

    Examples
    --------
    >>> import numpy as np
    >>> X = node_features({"user": np.array([0, 0]), "time": np.array([1, 2]),
    ...                    "behavior": np.array([1, 0]), "value": None}, n_behaviors=2, intensity=False)
    >>> X.tolist()
    [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]]
    """
    dtype = _feature_dtype(dtype)
    user = _get(log_or_arrays, "user")
    behavior = _get(log_or_arrays, "behavior")
    value = _get(log_or_arrays, "value")
    time = _get(log_or_arrays, "time")
    if user is None or behavior is None:
        raise TypeError("log_or_arrays needs 'user' and 'behavior' (an event log or a dict of arrays)")
    backend = _dispatch.backend_of(user=user, behavior=behavior, value=value, time=time)
    xp = _dispatch.array_module(backend)
    n = user.shape[0]
    for name, a in (("user", user), ("behavior", behavior), ("value", value), ("time", time)):
        if a is not None and a.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one value per event), got shape {tuple(a.shape)}")
        if a is not None and a.shape[0] != n:
            raise ValueError(f"{name} has {a.shape[0]} events but user has {n}; pass one value per event")
    user = xp.ascontiguousarray(_validate.integer_ids(user, "user"), dtype=np.int64)
    behavior = xp.ascontiguousarray(_validate.integer_ids(behavior, "behavior"), dtype=np.int64)
    if n_behaviors is None:
        n_behaviors = _get(log_or_arrays, "n_behaviors")
    if n_behaviors is None:
        n_behaviors = int(behavior.max()) + 1 if n else 1
    B = _validate.nonneg_int(n_behaviors, "n_behaviors", minimum=1)
    if n and (int(behavior.min()) < 0 or int(behavior.max()) >= B):
        raise ValueError(f"behavior ids must lie in [0, n_behaviors={B}), found values in "
                         f"[{int(behavior.min())}, {int(behavior.max())}]; pass n_behaviors= or remap them")
    if value is not None and intensity:
        if value.dtype.kind not in "iuf":
            raise TypeError(f"value has dtype {value.dtype}; expected a numeric array")
        value = xp.ascontiguousarray(value, dtype=np.float64)
        _validate.finite(value, "value")
        if n and float(value.min()) <= -1:
            raise ValueError(f"value must be > -1 for log1p, found {float(value.min())}")
    else:
        value = None
    if g is not None:
        if g.perm is None:
            raise ValueError("g has no perm (node -> event row); build it with window_graph or pass g=None")
        order = g.perm
        if order.shape[0] != n:
            raise ValueError(f"g has {order.shape[0]} nodes but the log has {n} events; use the log the "
                             f"graph was built from")
        if n and (int(order.min()) < 0 or int(order.max()) >= n):
            raise ValueError(f"g.perm must hold event rows in [0, {n}), found [{int(order.min())}, "
                             f"{int(order.max())}]")
    else:
        if time is None:
            raise TypeError("node_features needs 'time' to order the events when no graph g is given")
        if backend == _dispatch.GPU:  # (user, time, position): the CPU's stable order, whatever the sort
            order = xp.lexsort(xp.stack([xp.arange(n, dtype=np.int64), xp.asarray(time), user]))
        else:
            from .construct import _order
            order = _order(user, np.asarray(time), False)[0]
    order = xp.ascontiguousarray(order, dtype=np.int64)
    k = _dispatch.kernels("node_features", backend)
    return k.node_features(order, user, behavior, value, B, bool(intensity), bool(context), bool(causal),
                           dtype)


# ------------------------------------------------------------ edge features
def _dt_array(dt):
    _dispatch.backend_of(dt=dt)
    if dt.ndim != 1:
        raise ValueError(f"dt must be 1-D (one gap per edge), got shape {tuple(dt.shape)}")
    if dt.dtype.kind not in "iuf":
        raise TypeError(f"dt has dtype {dt.dtype}; expected integer or floating time gaps")
    _validate.finite(dt, "dt")
    return dt


def _positive(x, name):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a number, got {x!r}")
    if not (np.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be finite and > 0, got {x}")
    return float(x)


def time_decay(dt, tau, *, dtype=np.float32):
    """Exponential time decay ``exp(-dt / tau)`` per edge.

    Parameters
    ----------
    dt : int or float array (nnz,)
        Time gaps, e.g. ``g.edata['dt']`` (NumPy or CuPy).
    tau : float > 0
        Decay constant in the units of ``dt``.
    dtype : float32 (default) or float64

    Returns
    -------
    array (nnz,) of ``dtype`` in (0, 1] for dt >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> time_decay(np.array([0, 3600]), tau=3600.0, dtype=np.float64).round(4).tolist()
    [1.0, 0.3679]
    """
    dtype = _feature_dtype(dtype)
    dt = _dt_array(dt)
    tau = _positive(tau, "tau")
    backend = _dispatch.backend_of(dt=dt)
    if backend == _dispatch.GPU:  # one fused kernel instead of three passes
        return _dispatch.kernels("time_decay", backend).time_decay(dt, tau, dtype)
    xp = _dispatch.array_module(backend)
    return xp.exp(dt.astype(np.float64) * (-1.0 / tau)).astype(dtype)


def default_omega(dim):
    """TGAT/TGN frequencies ``omega_k = 10 ** (-9 k / (dim - 1))``, k = 0..dim-1 (``[1.0]`` for dim 1)."""
    dim = _validate.nonneg_int(dim, "dim", minimum=1)
    if dim == 1:
        return np.ones(1)
    return 1.0 / 10.0 ** (9.0 * np.arange(dim) / (dim - 1))


def time_encoding(dt, dim, omega=None, phase=None, *, dtype=np.float32):
    """Harmonic time encoding ``out[e, k] = cos(omega_k * dt_e + phase_k)``.

    TGAT / TGN convention: ``omega_k = 1 / 10**(9 k / (dim - 1))`` for
    k = 0..dim-1 (1.0 when dim = 1) and ``phase = 0`` unless given.  The
    argument is formed in float64; only the result is cast to ``dtype``.

    Parameters
    ----------
    dt : int or float array (nnz,)
    dim : int >= 1
    omega, phase : float arrays (dim,), optional
    dtype : float32 (default) or float64

    Returns
    -------
    ndarray (nnz, dim)

    Examples
    --------
    >>> import numpy as np
    >>> time_encoding(np.array([0.0, np.pi]), 1).tolist()
    [[1.0], [-1.0]]
    """
    dtype = _feature_dtype(dtype)
    dt = _dt_array(dt)
    dim = _validate.nonneg_int(dim, "dim", minimum=1)
    backend = _dispatch.backend_of(dt=dt)
    xp = _dispatch.array_module(backend)
    params = []
    for name, p, default in (("omega", omega, default_omega(dim)), ("phase", phase, np.zeros(dim))):
        if p is None:
            p = default
        p = p.get() if hasattr(p, "get") and not isinstance(p, np.ndarray) else np.asarray(p)  # (dim,): tiny
        if p.shape != (dim,):
            raise ValueError(f"{name} must have shape ({dim},) to match dim, got {p.shape}")
        if p.dtype.kind not in "iuf":
            raise TypeError(f"{name} has dtype {p.dtype}; expected floats")
        p = np.ascontiguousarray(p, dtype=np.float64)
        _validate.finite(p, name)
        params.append(p)
    dt = xp.ascontiguousarray(dt, dtype=np.float64)
    k = _dispatch.kernels("time_encoding", backend)
    return k.time_encoding(dt, params[0], params[1], dtype)


def time_bucket(dt, base=2.0, n_buckets=None):
    """Log-scale integer buckets of time gaps.

    ``bucket = floor(log_base(1 + dt))`` for dt > 0 and 0 for dt <= 0, i.e.
    the largest b with ``base**b <= 1 + dt``; clipped to ``n_buckets - 1``
    when ``n_buckets`` is given.  Exact at bucket edges (a float rounding of the
    logarithm is corrected against the power).

    Parameters
    ----------
    dt : int or float array (nnz,)
    base : float > 1
    n_buckets : int >= 1, optional

    Returns
    -------
    int64 array (nnz,)

    Examples
    --------
    >>> import numpy as np
    >>> time_bucket(np.array([0, 1, 2, 3, 7, 1000]), n_buckets=5).tolist()
    [0, 1, 1, 2, 3, 4]
    """
    dt = _dt_array(dt)
    base = _positive(base, "base")
    if base <= 1:
        raise ValueError(f"base must be > 1, got {base}")
    n_buckets = _validate.nonneg_int(n_buckets, "n_buckets", allow_none=True, minimum=1)
    xp = _dispatch.array_module(_dispatch.backend_of(dt=dt))
    x = 1.0 + xp.maximum(dt.astype(np.float64), 0.0)
    b = xp.floor(xp.log(x) / np.log(base))
    # correct one-off rounding of the log at exact powers
    b = xp.where(base ** (b + 1) <= x, b + 1, b)
    b = xp.where(base ** b > x, b - 1, b)
    b = xp.maximum(b, 0).astype(np.int64)
    if n_buckets is not None:
        b = xp.minimum(b, n_buckets - 1)
    return b
