"""PyTorch autograd Functions and layers over stgkern's kernels.

Only ``import stgkern.torch`` imports torch; ``import stgkern`` never does.
Tensors cross to the kernels without copies: CPU tensors as NumPy views
(``tensor.numpy()`` / ``torch.from_numpy``), CUDA tensors as CuPy arrays
through DLPack (``cupy.from_dlpack`` / ``torch.from_dlpack``, on torch's
current stream), so the same code runs on either device.

Graphs
------
Every function and layer takes ``graph`` as either

* a ``stgkern.Graph`` (CSR by destination).  Per-edge tensors (weights,
  scores, ``e``, ``dt``, ``kind``) are in the graph's CSR edge order.  For
  CUDA tensors the graph is copied to the GPU once and the copy is cached on
  the Graph object; or
* a PyG ``edge_index`` (LongTensor (2, nnz), row 0 source, row 1
  destination, on the tensor's device).  Per-edge tensors are in the
  ``edge_index`` column order, inputs and outputs alike; the CSR graph (edges
  sorted by destination, then source) is built once per ``edge_index``
  tensor (cached while the tensor lives and is not modified in place).
  The node count is ``x.shape[0]`` (square graphs).

Functions (differentiable in every float tensor argument)
---------------------------------------------------------
``spmm(graph, x, edge_weight=None, reduce="sum")``
    ``out[i] = ⊕_{j -> i} w_ji · x[j]``, ⊕ ∈ sum, mean, max, min.
``message_passing(graph, x, e, op="mul", reduce="sum")``
    ``out[i] = ⊕_{k: j -> i} x[j] ∘ e[k]`` (needs ``stgkern.conv.message_passing``).
``sddmm(graph, x, y, op="dot")``
    per edge ``j -> i``: ``x[i]·y[j]`` (dot, cosine) or ``x[i] ∘ y[j]`` (add, sub, mul).
``edge_softmax(graph, scores, num_nodes=None)``
    softmax of per-edge scores over each destination's in-edges.
``segment_reduce(x, ptr, reduce="sum")``
    per segment ``ptr[s]:ptr[s+1]``: sum, mean, max or last row.
``score_cross_entropy(q, items, target, bias=None, reduction="mean")``
    softmax cross-entropy of ``q @ items.T (+ bias)`` over the whole catalogue,
    without the (m, n_items) score tensor.
``common_neighbor_fusion(graph, x, edge_weight=None)``
    per edge ``j -> i``: ``Σ_{m ∈ N(i) ∩ N(j)} A[i,m] A[j,m] x[m]``.
``graph_conv(graph, x, W_self, W_neigh=None, bias=None, edge_weight=None, reduce="sum", activation=None)``
    ``σ(x·W_self + agg(x)·W_neigh + b)`` (``stgkern.layer.graph_conv``).

Layers (``torch.nn.Module``)
----------------------------
``GraphConv(in_channels, out_channels, aggr="add", bias=True)``
    PyG's ``GraphConv``: ``lin_rel(⊕_j w_ji x_j) + lin_root(x_i)``, ⊕ ∈
    add/sum, mean, max, min; ``forward(x, edge_index, edge_weight=None,
    size=None)`` with ``x`` a tensor or a bipartite pair ``(x_src, x_dst)``,
    ``edge_index`` an edge_index, a Graph or a torch sparse ``adj_t`` (COO,
    CSR); ``in_channels`` may be a pair and -1 (lazy).  Same parameter
    names, so state dicts of a PyG GraphConv load both ways.
``STGConv(in_channels, out_channels, n_kinds=3, tau_init=86400.0, fuse_common_neighbors=False, bias=True, *, normalize=False, eps=1e-6)``
    ``n'_i = W_self n_i + Σ_j w_ji W_neigh n_j [+ Σ_j cn_ji] + b`` with
    ``w_ji = exp(-Δt_ji / τ_kind(ji))``; learnable ``log τ`` per edge kind;
    ``forward(x, graph, dt=None, kind=None)``.
``TemporalAttention(in_channels, out_channels, heads=1, time_dim=16)``
    TGAT-style multi-head attention over in-edges with a learnable harmonic
    encoding of Δt; ``forward(x, graph, dt=None)``.

Examples
--------
>>> import numpy as np, torch, stgkern
>>> from stgkern.torch import spmm
>>> g = stgkern.Graph(np.array([0, 0, 1, 3]), np.array([0, 0, 1]))
>>> x = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
>>> spmm(g, x).sum().backward()
>>> x.grad[:, 0].tolist()
[2.0, 1.0, 0.0]
"""
from __future__ import annotations

import contextlib
import functools
import math
import sys
import weakref

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import _validate
from . import config as _config
from . import conv as _conv
from . import edge as _edge
from . import readout as _readout
from .graph import Graph, _from_torch

__all__ = [
    "GraphConv",
    "STGConv",
    "TemporalAttention",
    "common_neighbor_fusion",
    "edge_softmax",
    "graph_conv",
    "message_passing",
    "score_cross_entropy",
    "sddmm",
    "segment_reduce",
    "spmm",
]

#: How many ``edge_index`` tensors keep their CSR graph cached at once.
EDGE_INDEX_CACHE_SIZE = 8

_FLOATS = (torch.float32, torch.float64)


# ======================================================================= plumbing
def _as_array(t):
    """A NumPy (CPU) or CuPy (CUDA) view of a tensor; no copy."""
    if t is None:
        return None
    if t.device.type in ("cpu", "cuda"):
        return _from_torch(t)
    raise TypeError(f"tensors on device {t.device} are not supported; use CPU or CUDA tensors")


def _as_tensor(a):
    """A tensor view of a NumPy or CuPy array; no copy."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        if not a.flags.writeable:
            a = a.copy()
        return torch.from_numpy(a)
    return torch.from_dlpack(a)


def _on_device(device):
    """Run CuPy work on torch's current stream and device (nothing for the CPU)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    import cupy
    stack = contextlib.ExitStack()
    stack.enter_context(cupy.cuda.Device(device.index if device.index is not None else torch.cuda.current_device()))
    stack.enter_context(cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream))
    return stack


def _tensor(t, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}; convert it with torch.as_tensor")
    return t


def _float_tensor(t, name, ndim):
    _tensor(t, name)
    if t.dtype not in _FLOATS:
        raise TypeError(f"{name} has dtype {t.dtype}; supported: torch.float32, torch.float64 "
                        f"(cast with {name}.float() or {name}.double())")
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if t.dim() not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimension(s), got shape {tuple(t.shape)}")
    return t


def _same_device(ref, ref_name, t, name):
    if t is not None and t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; "
                         f"move them to one device (e.g. {name}.to({ref_name}.device))")


def _same_dtype(ref, ref_name, t, name):
    if t is not None and t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; "
                        f"cast one of them (e.g. {name}.to({ref_name}.dtype))")


def _edge_tensor(t, name, nnz, ref, ref_name, ndim=1):
    """A float per-edge tensor: right device, dtype and length."""
    if t is None:
        return None
    _float_tensor(t, name, ndim)
    _same_device(ref, ref_name, t, name)
    _same_dtype(ref, ref_name, t, name)
    if t.shape[0] != nnz:
        raise ValueError(f"{name} has {t.shape[0]} entries but the graph has {nnz} edges; "
                         f"pass one value per edge")
    return t


# ------------------------------------------------------------------ graphs
class _Resolved:
    """A Graph on the tensors' device plus the edge order of the caller.

    ``order`` (LongTensor or None): CSR edge k came from caller edge
    ``order[k]``; ``inverse`` undoes it.  None means the caller already
    speaks CSR order (a stgkern Graph was given).
    """

    __slots__ = ("__weakref__", "g", "inverse", "order", "source")

    def __init__(self, g, order=None, inverse=None, source=None):
        self.g, self.order, self.inverse, self.source = g, order, inverse, source

    @property
    def nnz(self):
        return self.g.nnz

    def to_csr(self, t):
        return t if t is None or self.order is None else t.index_select(0, self.order)

    def from_csr(self, t):
        return t if self.order is None else t.index_select(0, self.inverse)


_EI_CACHE: dict = {}


def _graph_on(g: Graph, device) -> Graph:
    """``g`` with its arrays on ``device``; copies are cached on ``g``."""
    want = "gpu" if device.type == "cuda" else "cpu"
    if g.device == want and (want == "cpu" or int(g.indptr.device.id) == _cuda_index(device)):
        return g
    cache = g.__dict__.setdefault("_torch_copies", {})
    key = f"cuda:{_cuda_index(device)}" if want == "gpu" else "cpu"
    if key not in cache:
        with _on_device(device):
            cache[key] = g.to(want)
    return cache[key]


def _cuda_index(device):
    return device.index if device.index is not None else torch.cuda.current_device()


def _check_edge_index(ei, num_nodes, x, x_name, n_dst=None, dst_name=None):
    if ei.dim() != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, nnz) (row 0 sources, row 1 destinations), "
                         f"got {tuple(ei.shape)}")
    if ei.dtype.is_floating_point or ei.dtype == torch.bool or ei.is_complex():
        raise TypeError(f"edge_index has dtype {ei.dtype}; node ids must be integers (torch.long)")
    _same_device(x, x_name, ei, "edge_index")
    if not ei.shape[1]:
        return
    if n_dst is None:
        lo, hi = int(ei.min()), int(ei.max())
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"edge_index holds node ids in [{lo}, {hi}] but the graph has {num_nodes} nodes "
                             f"(from {x_name}); ids must lie in [0, {num_nodes})")
        return
    for row, what, n, name in ((0, "sources", num_nodes, x_name), (1, "destinations", n_dst, dst_name)):
        lo, hi = int(ei[row].min()), int(ei[row].max())
        if lo < 0 or hi >= n:
            raise ValueError(f"edge_index row {row} ({what}) holds node ids in [{lo}, {hi}] but there are {n} "
                             f"{what} (from {name}); ids must lie in [0, {n})")


def _from_edge_index(ei, num_nodes, x, x_name, n_dst=None, dst_name=None):
    """The CSR graph of an ``edge_index`` (cached per tensor).

    Square with ``num_nodes`` nodes, or, given ``n_dst``, rectangular: ``n_dst``
    destination rows over ``num_nodes`` sources (``dst_name`` says where
    ``n_dst`` came from, for messages).
    """
    _same_device(x, x_name.split(".")[0], ei, "edge_index")
    key = id(ei)
    hit = _EI_CACHE.get(key)
    if hit is not None:
        ref, version, n, res = hit
        if ref() is ei and version == ei._version and n == (num_nodes, n_dst):
            return res
        del _EI_CACHE[key]
    _check_edge_index(ei, num_nodes, x, x_name, n_dst, dst_name)
    with _on_device(ei.device):
        rows = num_nodes if n_dst is None else max(num_nodes, n_dst)
        g = Graph.from_edge_index(_as_array(ei.to(torch.int64)), rows)
        order = _as_tensor(g.edge_order).to(torch.int64)
        if n_dst is not None and (n_dst, num_nodes) != g.shape:
            # ids were checked: rows past n_dst are empty, columns lie below num_nodes
            g = Graph(g.indptr[:n_dst + 1], g.indices, num_nodes, check=False)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.shape[0], device=order.device)
    res = _Resolved(g, order, inverse)
    while len(_EI_CACHE) >= EDGE_INDEX_CACHE_SIZE:
        _EI_CACHE.pop(next(iter(_EI_CACHE)))
    _EI_CACHE[key] = (weakref.ref(ei), ei._version, (num_nodes, n_dst), res)
    return res


def _resolve(graph, x, x_name="x", num_nodes=None) -> _Resolved:
    """The graph for tensors on ``x``'s device (``num_nodes`` for edge_index: default ``x.shape[0]``)."""
    if isinstance(graph, _Resolved):
        return graph
    if isinstance(graph, Graph):
        return _Resolved(_graph_on(graph, x.device), source=graph)
    if isinstance(graph, torch.Tensor):
        if num_nodes is None:
            num_nodes, x_name = x.shape[0], f"{x_name}.shape[0]"
        return _from_edge_index(graph, int(num_nodes), x, x_name)
    try:
        _validate.graph(graph, "graph")
    except TypeError as e:
        raise TypeError(f"{e}; a PyG edge_index LongTensor (2, nnz) is taken as it is") from None


def _from_sparse(adj, x, x_name):
    """A torch sparse adjacency in PyG's ``adj_t`` orientation: ``(resolved graph, values in CSR order)``.

    ``adj`` is (n_dst, n_src), row = destination, column = source, COO or
    CSR with scalar float values (the edge weights; gradients flow back to
    them).  COO is coalesced first (duplicate entries summed, as
    ``torch.sparse.mm`` does); CSR entries are taken as they are.  The graph
    is cached per tensor, like an ``edge_index``'s.
    """
    if adj.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise TypeError(f"a sparse adjacency must have layout torch.sparse_coo or torch.sparse_csr, got {adj.layout}; "
                        f"convert it with adj.to_sparse_csr()")
    if adj.dim() != 2 or adj.dense_dim() != 0:
        raise ValueError(f"a sparse adjacency must be a 2-D (n_dst, n_src) matrix with one scalar per entry, got "
                         f"shape {tuple(adj.shape)} with {adj.dense_dim()} dense dimension(s)")
    if not adj.dtype.is_floating_point:
        raise TypeError(f"the sparse adjacency has dtype {adj.dtype}; its values are edge weights and must be "
                        f"floats (e.g. adj.to({x.dtype}))")
    _same_device(x, x_name, adj, "the sparse adjacency")
    coo = adj.layout == torch.sparse_coo
    if coo and not adj.is_coalesced():
        adj_c = adj.coalesce()               # differentiable: duplicates' values are summed
    else:
        adj_c = adj
    values = adj_c.values()
    n_dst, n_src = int(adj.shape[0]), int(adj.shape[1])
    key = ("sparse", id(adj))
    hit = _EI_CACHE.get(key)
    if hit is not None:
        ref, version, shape, res = hit
        if ref() is adj and version == adj._version and shape == (n_dst, n_src) and res.nnz == values.shape[0]:
            return res, values
        del _EI_CACHE[key]
    if coo:
        rows, cols = adj_c.indices().detach()
        if rows.numel():
            for ids, what, n in ((rows, "row (destination)", n_dst), (cols, "column (source)", n_src)):
                lo, hi = int(ids.min()), int(ids.max())
                if lo < 0 or hi >= n:
                    raise ValueError(f"the sparse adjacency holds {what} ids in [{lo}, {hi}] but its shape "
                                     f"{tuple(adj.shape)} allows [0, {n})")
        indptr = torch.zeros(n_dst + 1, dtype=torch.int64, device=adj.device)
        torch.cumsum(torch.bincount(rows, minlength=n_dst), 0, out=indptr[1:])
        indices = cols.clone()
    else:
        indptr, indices = adj.crow_indices().detach().clone(), adj.col_indices().detach().clone()
    with _on_device(adj.device):
        try:
            g = Graph(_as_array(indptr), _as_array(indices), n_src)
        except ValueError as e:
            raise ValueError(f"the sparse adjacency {tuple(adj.shape)} is not a valid CSR matrix: {e}") from None
    res = _Resolved(g)
    while len(_EI_CACHE) >= EDGE_INDEX_CACHE_SIZE:
        _EI_CACHE.pop(next(iter(_EI_CACHE)))
    _EI_CACHE[key] = (weakref.ref(adj), adj._version, (n_dst, n_src), res)
    return res, values


def _check_rows(t, name, n, what):
    if t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} rows but the graph has {n} {what}; pass one row per node")


# ============================================================ autograd Functions
class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, reduce, x, w):
        with _on_device(x.device):
            X, W = _as_array(x), _as_array(w)
            out, arg = _conv.spmm(g, X, W, reduce, return_arg=True)
        ctx.g, ctx.reduce, ctx.arg = g, reduce, arg
        ctx.save_for_backward(x, w)
        return _as_tensor(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        with _on_device(x.device):
            gX, gW = _conv.spmm_backward(ctx.g, _as_array(grad_out), _as_array(x), _as_array(w), ctx.reduce, ctx.arg)
        return None, None, _as_tensor(gX), (_as_tensor(gW) if ctx.needs_input_grad[3] else None)


def spmm(graph, x, edge_weight=None, reduce="sum"):
    """Differentiable sparse aggregation over in-edges.

    ``out[i] = ⊕_{k: j -> i} w[k] · x[j]`` with ⊕ ∈ sum, mean (sum divided
    by the in-degree), max, min; rows without in-edges give 0.  max/min route
    the gradient to the winning edge (ties: lowest CSR edge).

    Parameters
    ----------
    graph : stgkern.Graph or edge_index LongTensor (2, nnz)
    x : Tensor (n_src, F), float32 or float64
    edge_weight : Tensor (nnz,), same dtype and device as ``x``, optional
    reduce : {"sum", "mean", "max", "min"}

    Returns
    -------
    Tensor (n_nodes, F)

    Examples
    --------
    >>> ei = torch.tensor([[0, 0, 1], [1, 2, 2]])
    >>> spmm(ei, torch.eye(3)).tolist()
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    """
    _float_tensor(x, "x", 2)
    r = _resolve(graph, x)
    _check_rows(x, "x", r.g.n_src, "source nodes")
    w = r.to_csr(_edge_tensor(edge_weight, "edge_weight", r.nnz, x, "x"))
    return _SpMM.apply(r.g, reduce, x, w)


class _MessagePassing(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, op, reduce, x, e):
        from .conv import message_passing as mp
        with _on_device(x.device):
            out, arg = mp(g, _as_array(x), _as_array(e), op, reduce, return_arg=True)
        ctx.g, ctx.op, ctx.reduce, ctx.arg = g, op, reduce, arg
        ctx.save_for_backward(x, e)
        return _as_tensor(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        from .conv import message_passing_backward as mpb
        x, e = ctx.saved_tensors
        with _on_device(x.device):
            gX, gE = mpb(ctx.g, _as_array(grad_out), _as_array(x), _as_array(e), ctx.op, ctx.reduce, ctx.arg)
        return None, None, None, _as_tensor(gX), _as_tensor(gE).reshape(e.shape)


def message_passing(graph, x, e, op="mul", reduce="sum"):
    """Differentiable message passing with per-edge features.

    ``out[i] = ⊕_{k: j -> i} x[j] ∘ e[k]`` with ∘ ∈ mul, add and ⊕ ∈ sum,
    mean, max, min; ``e`` is (nnz, F) or (nnz,)/(nnz, 1), broadcast over
    features.  Gradients flow to ``x`` and ``e``.

    Parameters
    ----------
    graph : stgkern.Graph or edge_index LongTensor (2, nnz)
    x : Tensor (n_src, F)
    e : Tensor (nnz, F), (nnz, 1) or (nnz,), same dtype and device as ``x``
    op : {"mul", "add"}
    reduce : {"sum", "mean", "max", "min"}

    Returns
    -------
    Tensor (n_nodes, F)

    Examples
    --------
    >>> out = message_passing(g, x, e, op="mul", reduce="max")  # doctest: +SKIP
    """
    _float_tensor(x, "x", 2)
    r = _resolve(graph, x)
    _check_rows(x, "x", r.g.n_src, "source nodes")
    e = r.to_csr(_edge_tensor(e, "e", r.nnz, x, "x", ndim=(1, 2)))
    return _MessagePassing.apply(r.g, op, reduce, x, e)


class _SDDMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, op, x, y):
        with _on_device(x.device):
            out = _edge.sddmm(g, _as_array(x), _as_array(y), op)
        ctx.g, ctx.op = g, op
        ctx.save_for_backward(x, y)
        return _as_tensor(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, y = ctx.saved_tensors
        with _on_device(x.device):
            gX, gY = _edge.sddmm_backward(ctx.g, _as_array(grad_out), _as_array(x), _as_array(y), ctx.op)
        return None, None, _as_tensor(gX), _as_tensor(gY)


def sddmm(graph, x, y, op="dot"):
    """Differentiable per-edge scores from destination and source features.

    For edge ``j -> i``: dot ``x[i]·y[j]``; cosine ``x[i]·y[j]/(‖x[i]‖‖y[j]‖)``
    (0 when a norm is 0); add/sub/mul ``x[i] ∘ y[j]``.

    Parameters
    ----------
    graph : stgkern.Graph or edge_index LongTensor (2, nnz)
    x : Tensor (n_nodes, F) destination features
    y : Tensor (n_src, F) source features, same dtype and device as ``x``
    op : {"dot", "cosine", "add", "sub", "mul"}

    Returns
    -------
    Tensor (nnz,) for dot/cosine, (nnz, F) otherwise; per edge in the
    caller's edge order.

    Examples
    --------
    >>> ei = torch.tensor([[0, 1], [1, 0]])
    >>> sddmm(ei, torch.tensor([[1., 2.], [3., 4.]]), torch.tensor([[1., 2.], [3., 4.]])).tolist()
    [11.0, 11.0]
    """
    _float_tensor(x, "x", 2)
    _float_tensor(y, "y", 2)
    _same_device(x, "x", y, "y")
    _same_dtype(x, "x", y, "y")
    r = _resolve(graph, x)
    _check_rows(x, "x", r.g.n_nodes, "destination nodes")
    _check_rows(y, "y", r.g.n_src, "source nodes")
    return r.from_csr(_SDDMM.apply(r.g, op, x, y))


class _EdgeSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, s):
        with _on_device(s.device):
            out = _as_tensor(_edge.edge_softmax(g, _as_array(s)))
        ctx.g = g
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        with _on_device(out.device):
            gs = _edge.edge_softmax_backward(ctx.g, _as_array(grad_out), _as_array(out))
        return None, _as_tensor(gs)


def edge_softmax(graph, scores, num_nodes=None):
    """Differentiable softmax of edge scores over each destination's in-edges.

    ``out[k] = exp(s[k]) / Σ_{k' -> same destination} exp(s[k'])`` (computed
    with the row maximum subtracted), per head when ``scores`` is (nnz, H).

    Parameters
    ----------
    graph : stgkern.Graph or edge_index LongTensor (2, nnz)
    scores : Tensor (nnz,) or (nnz, H), float32 or float64
    num_nodes : int, optional
        Node count for an ``edge_index`` (default: largest id + 1).

    Returns
    -------
    Tensor shaped like ``scores``

    Examples
    --------
    >>> ei = torch.tensor([[0, 1], [2, 2]])
    >>> edge_softmax(ei, torch.log(torch.tensor([1., 3.], dtype=torch.float64))).tolist()
    [0.25, 0.75]
    """
    _float_tensor(scores, "scores", (1, 2))
    if isinstance(graph, torch.Tensor) and num_nodes is None:
        num_nodes = int(graph.max()) + 1 if graph.numel() else 0
    r = _resolve(graph, scores, "num_nodes", num_nodes=num_nodes)
    if scores.shape[0] != r.nnz:
        raise ValueError(f"scores has {scores.shape[0]} entries but the graph has {r.nnz} edges; "
                         f"pass one score (or one row of H heads) per edge")
    return r.from_csr(_EdgeSoftmax.apply(r.g, r.to_csr(scores)))


class _SegmentReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ptr, reduce, x):
        with _on_device(x.device):
            out, arg = _readout.segment_reduce(_as_array(x), ptr, reduce, return_arg=True)
        ctx.ptr, ctx.reduce, ctx.arg = ptr, reduce, arg
        ctx.save_for_backward(x)
        return _as_tensor(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        with _on_device(x.device):
            gX = _readout.segment_reduce_backward(_as_array(grad_out), _as_array(x), ctx.ptr, ctx.reduce, ctx.arg)
        return None, None, _as_tensor(gX)


def _ptr_array(ptr, x):
    """``ptr`` as a NumPy/CuPy array on ``x``'s device."""
    if isinstance(ptr, torch.Tensor):
        _same_device(x, "x", ptr, "ptr")
        return _as_array(ptr)
    if isinstance(ptr, np.ndarray):
        if x.device.type == "cuda":
            import cupy
            with _on_device(x.device):
                return cupy.asarray(ptr)
        return ptr
    if type(ptr).__module__.split(".")[0] == "cupy":
        if x.device.type != "cuda":
            raise ValueError("ptr is a CuPy (GPU) array but x is on the CPU; pass ptr.get() or move x to CUDA")
        return ptr
    raise TypeError(f"ptr must be a torch.Tensor, NumPy or CuPy integer array, got {type(ptr).__name__}")


def segment_reduce(x, ptr, reduce="sum"):
    """Differentiable reduction of contiguous row ranges.

    ``out[s] = ⊕_{r = ptr[s]}^{ptr[s+1]-1} x[r]`` with ⊕ ∈ sum, mean, max
    (per feature, ties to the lowest row) and last; empty segments give 0.

    Parameters
    ----------
    x : Tensor (n, F) or (n,), float32 or float64
    ptr : integer Tensor / ndarray (n_seg + 1,), non-decreasing, 0 .. n
        (e.g. ``Graph.segment_ptr``).
    reduce : {"sum", "mean", "max", "last"}

    Returns
    -------
    Tensor (n_seg, F) or (n_seg,)

    Examples
    --------
    >>> segment_reduce(torch.tensor([[1.], [3.], [2.]]), torch.tensor([0, 2, 2, 3]), "max").tolist()
    [[3.0], [0.0], [2.0]]
    """
    _float_tensor(x, "x", (1, 2))
    return _SegmentReduce.apply(_ptr_array(ptr, x), reduce, x)


class _ScoreCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, items, target, bias):
        keep = q.shape[0] * items.shape[0] * q.element_size() <= _config.score_keep_bytes
        with _on_device(q.device):
            loss, lse, *logits = _readout.score_cross_entropy(
                _as_array(q), _as_array(items), _as_array(target), _as_array(bias), return_lse=True,
                return_logits=keep)
        ctx.lse, ctx.logits = lse, (logits[0] if keep else None)
        ctx.save_for_backward(q, items, target, bias)
        return _as_tensor(loss)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        q, items, target, bias = ctx.saved_tensors
        logits, ctx.logits = ctx.logits, None      # overwritten: a second backward forms the products again
        with _on_device(q.device):
            gq, gi, gb = _readout.score_cross_entropy_backward(
                _as_array(grad_loss.contiguous()), _as_array(q), _as_array(items), _as_array(target), ctx.lse,
                _as_array(bias), logits=logits)
        return _as_tensor(gq), _as_tensor(gi), None, (_as_tensor(gb) if bias is not None else None)


def score_cross_entropy(q, items, target, bias=None, reduction="mean"):
    """Differentiable softmax cross-entropy of ``q @ items.T (+ bias)`` against ``target``.

    The same value as ``F.cross_entropy(q @ items.T + bias, target,
    reduction=reduction)`` without the (m, n_items) score tensor or its
    gradient (:func:`stgkern.score_cross_entropy`).

    Parameters
    ----------
    q : Tensor (m, d), float32 or float64
    items : Tensor (n_items, d), same dtype and device
    target : LongTensor (m,), ids in ``[0, n_items)``
    bias : Tensor (n_items,), optional
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> q = torch.zeros(1, 2, requires_grad=True)
    >>> round(float(score_cross_entropy(q, torch.eye(2), torch.tensor([1]))), 4)
    0.6931
    """
    _float_tensor(q, "q", 2)
    _float_tensor(items, "items", 2)
    _same_device(q, "q", items, "items")
    _same_dtype(q, "q", items, "items")
    _tensor(target, "target")
    _same_device(q, "q", target, "target")
    if bias is not None:
        _float_tensor(bias, "bias", 1)
        _same_device(q, "q", bias, "bias")
        _same_dtype(q, "q", bias, "bias")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    loss = _ScoreCrossEntropy.apply(q, items, target, bias)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


class _CommonNeighborFusion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, x, w):
        with _on_device(x.device):
            out = _edge.common_neighbor_fusion(g, _as_array(x), _as_array(w))
        ctx.g = g
        ctx.save_for_backward(x, w)
        return _as_tensor(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        with _on_device(x.device):
            gX, gW = _edge.common_neighbor_fusion_backward(ctx.g, _as_array(grad_out), _as_array(x), _as_array(w))
        return None, _as_tensor(gX), (_as_tensor(gW) if ctx.needs_input_grad[2] else None)


def common_neighbor_fusion(graph, x, edge_weight=None):
    """Differentiable per-edge sum over the common in-neighbours of both ends.

    For edge ``j -> i``: ``Σ_{m ∈ N(i) ∩ N(j)} A[i,m] A[j,m] x[m]`` with
    ``A`` the edge weight (1 when None).  The graph must be square with
    strictly ascending rows (window graphs are; see ``Graph.sorted``).

    Parameters
    ----------
    graph : stgkern.Graph or edge_index LongTensor (2, nnz) without duplicate edges
    x : Tensor (n_nodes, F)
    edge_weight : Tensor (nnz,), optional

    Returns
    -------
    Tensor (nnz, F), per edge in the caller's edge order

    Examples
    --------
    >>> ei = torch.tensor([[0, 0, 1], [1, 2, 2]])   # edge 1 -> 2 shares in-neighbour 0
    >>> common_neighbor_fusion(ei, torch.tensor([[5.], [7.], [9.]]))[:, 0].tolist()
    [0.0, 0.0, 5.0]
    """
    _float_tensor(x, "x", 2)
    r = _resolve(graph, x)
    w = r.to_csr(_edge_tensor(edge_weight, "edge_weight", r.nnz, x, "x"))
    return r.from_csr(_CommonNeighborFusion.apply(r.g, x, w))


class _GraphConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, reduce, activation, x, W_self, W_neigh, bias, w):
        from .layer import graph_conv as gc
        with _on_device(x.device):
            out = _as_tensor(gc(g, *map(_as_array, (x, W_self, W_neigh, bias, w)), reduce, activation))
        ctx.g, ctx.reduce, ctx.activation = g, reduce, activation
        ctx.save_for_backward(x, W_self, W_neigh, bias, w, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        from .layer import graph_conv_backward as gcb
        x, W_self, W_neigh, bias, w, out = ctx.saved_tensors
        with _on_device(x.device):
            grads = gcb(ctx.g, _as_array(grad_out), *map(_as_array, (x, W_self, W_neigh, bias, w)),
                        ctx.reduce, ctx.activation, _as_array(out))
        return (None, None, None, *(_as_tensor(a) if need else None
                                    for a, need in zip(grads, ctx.needs_input_grad[3:])))


def graph_conv(graph, x, W_self, W_neigh=None, bias=None, edge_weight=None, reduce="sum", activation=None):
    """Differentiable graph convolution (``stgkern.layer.graph_conv``).

    ``out = σ(x·W_self + agg(x)·W_neigh + b)`` with ``agg`` = :func:`spmm`
    (``reduce``) and σ ∈ None, relu, sigmoid, tanh.

    Parameters
    ----------
    graph : stgkern.Graph (square) or edge_index LongTensor (2, nnz)
    x : Tensor (n_nodes, F_in)
    W_self : Tensor (F_in, F_out)
    W_neigh : Tensor (F_in, F_out) or None (identity; needs F_out == F_in)
    bias : Tensor (F_out,) or None
    edge_weight : Tensor (nnz,) or None
    reduce : {"sum", "mean", "max", "min"}
    activation : {None, "relu", "sigmoid", "tanh"}

    Returns
    -------
    Tensor (n_nodes, F_out)

    Examples
    --------
    >>> out = graph_conv(ei, x, W_self, W_neigh, bias, activation="relu")  # doctest: +SKIP
    """
    _float_tensor(x, "x", 2)
    for name, t, nd in (("W_self", W_self, 2), ("W_neigh", W_neigh, 2), ("bias", bias, 1)):
        if t is not None:
            _float_tensor(t, name, nd)
            _same_device(x, "x", t, name)
            _same_dtype(x, "x", t, name)
    r = _resolve(graph, x)
    w = r.to_csr(_edge_tensor(edge_weight, "edge_weight", r.nnz, x, "x"))
    return _GraphConv.apply(r.g, reduce, activation, x, W_self, W_neigh, bias, w)


# ======================================================================== layers
def _per_edge(value, default_name, r, x, name, *, floating):
    """A per-edge data tensor (dt, kind) on x's device in CSR order.

    ``value`` None: the graph's ``edata[default_name]`` (cached per device
    and dtype on the Graph).  A float result takes x's dtype (it is data,
    not a parameter: integer times are fine).
    """
    dtype = x.dtype if floating else torch.int64
    if value is None:
        if r.source is None:
            raise ValueError(f"{name} is required with an edge_index graph (a stgkern.Graph supplies "
                             f"edata[{default_name!r}])")
        if default_name not in r.source.edata:
            raise ValueError(f"{name} was not given and the graph has no edata[{default_name!r}]; pass {name} "
                             f"(one value per edge) or build the graph with stgkern.window_graph")
        cache = r.source.__dict__.setdefault("_torch_edata", {})
        arr = r.source.edata[default_name]
        key = (default_name, str(x.device), dtype)
        if key not in cache or cache[key][0] is not arr:     # set_edata may have replaced the array
            with _on_device(x.device):
                cache[key] = (arr, _as_tensor(arr).to(device=x.device, dtype=dtype))
        return cache[key][1]
    if not isinstance(value, torch.Tensor):
        value = _as_tensor(value) if hasattr(value, "__dlpack__") else torch.as_tensor(value)
        value = value.to(x.device)
    _same_device(x, "x", value, name)
    if value.dim() != 1 or value.shape[0] != r.nnz:
        raise ValueError(f"{name} must be 1-D with one value per edge ({r.nnz}), got shape {tuple(value.shape)}")
    if floating:
        if not (value.dtype.is_floating_point or value.dtype in (torch.int32, torch.int64, torch.int16,
                                                                  torch.uint8, torch.int8)):
            raise TypeError(f"{name} has dtype {value.dtype}; expected a float or integer tensor")
    elif value.dtype.is_floating_point or value.dtype == torch.bool:
        raise TypeError(f"{name} has dtype {value.dtype}; expected integer kind codes (window_graph bitmask)")
    return r.to_csr(value).to(dtype)


def _layer_input(layer, x, weight, name="x", width=None, expects=None):
    """Validate a layer's node features against its parameters (width, dtype, device).

    ``width`` defaults to ``layer.in_channels``; -1 (a lazy layer) takes any
    width.  ``expects`` words the width in the message (default
    ``in_channels=<width>``).
    """
    _float_tensor(x, name, 2)
    width = layer.in_channels if width is None else width
    if width != -1 and x.shape[1] != width:
        raise ValueError(f"{name} has {x.shape[1]} features but the layer expects {expects or f'in_channels={width}'}")
    if x.dtype != weight.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the layer's parameters are {weight.dtype}; cast {name} "
                        f"({name}.to({weight.dtype})) or the layer (layer.to({x.dtype}))")
    if x.device != weight.device:
        raise ValueError(f"{name} is on {x.device} but the layer's parameters are on {weight.device}; move {name} "
                         f"({name}.to('{weight.device}')) or the layer (layer.to('{x.device}'))")


def _eager_only(reason):
    """Decorator: under ``torch.compile`` the function runs eagerly, as a graph break.

    Dynamo cannot trace the NumPy/CuPy views and the Numba/CUDA launches
    behind the kernels (tracing into them breaks Numba's compiler), so the
    function is wrapped in ``torch._dynamo.disable(fn, reason=reason)``; with
    ``fullgraph=True`` Dynamo then refuses it and shows ``reason``.  The
    wrapper is made on the first call after something has imported Dynamo
    (``torch.compile`` does), so importing stgkern.torch and eager use never
    import it.
    """
    def decorate(fn):
        disabled = []

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            if not disabled:
                if "torch._dynamo" not in sys.modules:
                    return fn(*args, **kwargs)
                import torch._dynamo
                disabled.append(torch._dynamo.disable(fn, reason=reason))
            return disabled[0](*args, **kwargs)
        return inner
    return decorate


class _Linear(torch.nn.Linear):
    """``torch.nn.Linear`` that may be lazy (``in_features=-1``), like PyG's ``Linear``.

    A lazy layer's weight is a ``torch.nn.parameter.UninitializedParameter``
    until :meth:`materialize` gives it the input width and draws weight and
    bias as PyG's default init does (kaiming-uniform weight and uniform bias,
    both in ``±1/sqrt(in)`` as in ``torch.nn.Linear``; the same draws in the
    same order, so under one seed they equal PyG's).  State dicts follow PyG's ``Linear``: an uninitialised
    weight is saved as such, and loading one makes the layer lazy again;
    loading a real weight into a lazy layer materialises it with that shape.
    """

    def __init__(self, in_features, out_features, bias=True):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        if in_features == -1:
            self.weight = torch.nn.parameter.UninitializedParameter()
        else:
            self.weight = torch.nn.Parameter(torch.empty(out_features, in_features))
        if bias:
            self.bias = torch.nn.Parameter(torch.zeros(out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def lazy(self):
        return torch.nn.parameter.is_lazy(self.weight)

    def reset_parameters(self):
        if not self.lazy:
            super().reset_parameters()

    @torch.no_grad()
    def materialize(self, in_features):
        """Give a lazy layer its input width and draw its parameters (nothing if not lazy).

        The bounds are PyG's own expressions (``torch.nn.Linear``'s differ in
        the last bit), so under one seed both libraries draw the same values.
        """
        if self.lazy:
            self.in_features = int(in_features)
            self.weight.materialize((self.out_features, self.in_features))
            fan = self.in_features
            self.weight.uniform_(-math.sqrt(6 / ((1 + 5) * fan)), math.sqrt(6 / ((1 + 5) * fan)))
            if self.bias is not None:
                self.bias.uniform_(-1.0 / math.sqrt(fan), 1.0 / math.sqrt(fan))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if not self.lazy:
            return super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.weight
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(prefix + "weight")
        if weight is not None and torch.nn.parameter.is_lazy(weight):
            if not self.lazy:
                dtype, device = self.weight.dtype, self.weight.device
                self.in_features = -1
                self.weight = torch.nn.parameter.UninitializedParameter(device=device, dtype=dtype)
        elif weight is not None and self.lazy and isinstance(weight, torch.Tensor) and weight.dim() == 2:
            self.in_features = int(weight.shape[-1])
            self.weight.materialize((self.out_features, self.in_features))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


#: ``aggr`` names PyG's GraphConv resolves to an aggregation stgkern has (after PyG's
#: normalisation: lower case, without "-", "_", " "), and the spmm reduce they run.
_GRAPHCONV_AGGR = {"add": "sum", "sum": "sum", "sumaggregation": "sum", "mean": "mean", "meanaggregation": "mean",
                   "max": "max", "maxaggregation": "max", "min": "min", "minaggregation": "min"}


def _graphconv_reduce(aggr):
    key = aggr.lower().replace("-", "").replace("_", "").replace(" ", "") if isinstance(aggr, str) else None
    if key not in _GRAPHCONV_AGGR:
        raise ValueError(f"aggr={aggr!r} is not supported; choose one of 'add', 'sum', 'mean', 'max', 'min' (PyG's "
                         f"other aggregations, lists and Aggregation modules have no stgkern kernel)")
    return _GRAPHCONV_AGGR[key]


def _in_channels(value):
    """``in_channels`` as PyG takes it: an int or a pair (sources, destinations); -1 = lazy."""
    pair = isinstance(value, (tuple, list))
    if pair and len(value) != 2:
        raise ValueError(f"in_channels must be an int or a pair (in_src, in_dst), got {value!r}")
    out = []
    for i, v in enumerate(value if pair else (value,)):
        name = f"in_channels[{i}]" if pair else "in_channels"
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int (-1 for lazy initialisation), got {type(v).__name__}")
        if v < 1 and v != -1:
            raise ValueError(f"{name} must be positive, or -1 to take the width from the first forward, got {v}")
        out.append(int(v))
    return tuple(out) if pair else out[0]


_NO_COMPILE = ("stgkern.torch.GraphConv runs Numba/CUDA kernels on NumPy/CuPy views of its tensors, which "
               "torch.compile cannot trace; it runs eagerly (a graph break), so fullgraph=True cannot hold it")


class GraphConv(torch.nn.Module):
    """PyG-compatible ``GraphConv`` on stgkern kernels.

    ``out_i = lin_rel(⊕_{j -> i} w_ji x_j) + lin_root(x_i)`` with ⊕ from
    ``aggr`` ("add"/"sum", "mean" (divided by the in-degree), "max", "min";
    rows without in-edges aggregate to 0) and ``w_ji`` the optional edge
    weight (max/min take the extreme of the weighted messages, as PyG does).
    ``lin_rel`` has the bias, ``lin_root`` none: the parameter layout of
    ``torch_geometric.nn.GraphConv``, so state dicts load as they are, both
    ways, lazy ones included.

    Parameters
    ----------
    in_channels : int or (int, int)
        Input width, or (source width, destination width) for bipartite
        graphs; -1 (alone or in the pair) takes the width from the first
        forward (PyG's lazy initialisation: ``lin_rel`` from ``x_src``,
        ``lin_root`` from ``x_dst``, drawn as PyG draws them).
    out_channels : int
    aggr : {"add", "sum", "mean", "max", "min"}
        Also PyG's spellings of these ("Max", "max_aggregation",
        "MaxAggregation", ...).  Anything else is a ValueError.
    bias : bool

    Forward
    -------
    ``forward(x, edge_index, edge_weight=None, size=None)``:

    * ``x``: Tensor (n, in) for a square graph, or a pair ``(x_src, x_dst)``
      (``x_dst`` may be None: then there is no root term) for a bipartite
      one, which has ``n_dst`` destination rows over ``n_src`` sources;
    * ``edge_index``: a PyG ``edge_index`` LongTensor (2, nnz) (row 0
      source; per-edge weights in its column order), a ``stgkern.Graph``
      (CSR by destination; weights in CSR order), or a torch sparse tensor
      (COO or CSR) in PyG's ``adj_t`` orientation: shape (n_dst, n_src),
      row = destination, column = source, its values the edge weights
      (differentiable; COO duplicates are summed, as ``torch.sparse.mm``
      does).  With a sparse tensor ``edge_weight`` must be None (PyG ignores
      it there; here that is an error).  ``torch_sparse.SparseTensor`` is not
      taken (convert it with ``adj.to_torch_sparse_csr_tensor()``);
    * ``size``: ``(n_src, n_dst)`` as in PyG (either may be None); for an
      edge_index it sets the node counts (default: rows of ``x_src``, and
      rows of ``x_dst``, or ``n_src`` without it), otherwise it must agree
      with the graph.

    Returns Tensor (n_dst, out_channels).

    ``torch.compile`` works: the layer runs eagerly inside the compiled model
    (a graph break; ``fullgraph=True`` is refused).  ``torch.jit.script`` and
    ``torch.jit.trace`` raise a RuntimeError: TorchScript cannot express the
    kernels, and a trace would freeze the graph it saw.

    Examples
    --------
    >>> conv = GraphConv(16, 32, aggr="mean")
    >>> out = conv(torch.randn(5, 16), torch.tensor([[0, 1, 2], [1, 2, 3]]))
    >>> tuple(out.shape)
    (5, 32)
    >>> bip = GraphConv((16, 8), 4, aggr="min")
    >>> tuple(bip((torch.randn(5, 16), torch.randn(3, 8)), torch.tensor([[0, 4], [2, 2]])).shape)
    (3, 4)
    """

    def __init__(self, in_channels, out_channels, aggr="add", bias=True):
        super().__init__()
        _graphconv_reduce(aggr)
        self.in_channels, self.out_channels, self.aggr = _in_channels(in_channels), int(out_channels), aggr
        in_src, in_dst = self.in_channels if isinstance(self.in_channels, tuple) else (self.in_channels,) * 2
        self.lin_rel = _Linear(in_src, self.out_channels, bias=bias)
        self.lin_root = _Linear(in_dst, self.out_channels, bias=False)

    def reset_parameters(self):
        self.lin_rel.reset_parameters()
        self.lin_root.reset_parameters()

    def __prepare_scriptable__(self):
        raise RuntimeError("stgkern.torch.GraphConv cannot be compiled by torch.jit.script: its forward runs Numba/CUDA "
                           "kernels through torch.autograd.Function on NumPy/CuPy views, which TorchScript cannot "
                           "express. Use it eagerly or under torch.compile (it runs as a graph break there), or "
                           "script torch_geometric.nn.GraphConv with the same state_dict.")

    def _expects(self, lin, kind):
        ic = self.in_channels
        if isinstance(ic, int) and ic != -1:
            return f"in_channels={ic}"
        note = ", set by the first forward" if -1 in (ic if isinstance(ic, tuple) else (ic,)) else ""
        return f"{lin.in_features} {kind} features (in_channels={ic!r}{note})"

    @_eager_only(_NO_COMPILE)
    def forward(self, x, edge_index, edge_weight=None, size=None):
        if torch.jit.is_tracing():
            raise RuntimeError("stgkern.torch.GraphConv cannot be traced by torch.jit.trace: the trace would keep "
                               "the graph of the example input as a constant (and TorchScript cannot run the "
                               "kernels); use the layer eagerly or under torch.compile")
        reduce = _graphconv_reduce(self.aggr)
        # ---- node features
        pair = isinstance(x, (tuple, list))
        if pair:
            if len(x) != 2:
                raise ValueError(f"x must be a Tensor or a pair (x_src, x_dst), got a sequence of {len(x)}")
            x_src, x_dst = x
            src, dst = "x[0]", "x[1]"
            if not isinstance(x_src, torch.Tensor):
                raise TypeError(f"x[0] (source features) must be a torch.Tensor, got {type(x_src).__name__}")
            if x_dst is not None and not isinstance(x_dst, torch.Tensor):
                raise TypeError(f"x[1] (destination features) must be a torch.Tensor or None, "
                                f"got {type(x_dst).__name__}")
        elif isinstance(x, torch.Tensor):
            x_src = x_dst = x
            src = dst = "x"
        else:
            raise TypeError(f"x must be a torch.Tensor (n, in_channels) or a pair (x_src, x_dst) for a bipartite "
                            f"graph, got {type(x).__name__}")
        rel, root = self.lin_rel, self.lin_root
        _layer_input(self, x_src, rel.weight, src, rel.in_features, self._expects(rel, "source"))
        if x_dst is not None:
            _layer_input(self, x_dst, root.weight, dst, root.in_features, self._expects(root, "destination"))
        if size is not None:
            if not (isinstance(size, (tuple, list)) and len(size) == 2):
                raise TypeError(f"size must be None or a pair (n_src, n_dst), got {size!r}")
            size = tuple(None if s is None else _validate.nonneg_int(s, f"size[{i}]") for i, s in enumerate(size))
        # ---- the graph
        adj, values = edge_index, None
        if isinstance(adj, torch.Tensor) and adj.layout != torch.strided:
            r, values = _from_sparse(adj, x_src, src)
            if edge_weight is not None:
                raise ValueError("edge_weight was given with a sparse adjacency, whose values are the edge weights "
                                 "(PyG ignores edge_weight there); pass edge_weight=None, or put the weights in "
                                 "the sparse tensor's values")
        elif isinstance(adj, torch.Tensor):
            s0 = None if size is None else size[0]
            s1 = None if size is None else size[1]
            if s0 is not None and s0 != x_src.shape[0]:
                raise ValueError(f"size[0]={s0} (sources) but {src} has {x_src.shape[0]} rows")
            if s1 is not None and x_dst is not None and s1 != x_dst.shape[0]:
                raise ValueError(f"size[1]={s1} (destinations) but {dst} has {x_dst.shape[0]} rows")
            n_src = x_src.shape[0]
            if not pair:
                r = _from_edge_index(adj, n_src, x_src, "x.shape[0]")
            else:
                src_name = f"{src}.shape[0]"
                if s1 is not None:
                    n_dst, dst_name = s1, "size[1]"
                elif x_dst is not None:
                    n_dst, dst_name = x_dst.shape[0], f"{dst}.shape[0]"
                else:
                    n_dst, dst_name = n_src, f"{src}.shape[0], as x[1] is None and size is not given"
                r = _from_edge_index(adj, n_src, x_src, src_name, n_dst, dst_name)
        elif type(adj).__name__ == "SparseTensor" and type(adj).__module__.split(".")[0] == "torch_sparse":
            raise TypeError("torch_sparse.SparseTensor is not supported; convert it with "
                            "adj.to_torch_sparse_csr_tensor() (same adj_t orientation: row = destination)")
        else:
            r = _resolve(adj, x_src, src)
        g = r.g
        if not isinstance(adj, torch.Tensor) or values is not None:
            if size is not None and any(s is not None and s != n for s, n in zip(size, (g.n_src, g.n_nodes))):
                raise ValueError(f"size={size} (n_src, n_dst) disagrees with the graph, which has {g.n_src} sources "
                                 f"and {g.n_nodes} destinations")
        if not pair:
            if g.n_src != g.n_nodes or x.shape[0] != g.n_nodes:
                raise ValueError(f"GraphConv needs a square graph with one row of x per node; graph is {g.shape}, "
                                 f"x has {x.shape[0]} rows (pass x as a pair (x_src, x_dst) for a bipartite graph)")
        else:
            _check_rows(x_src, src, g.n_src, "source nodes")
            if x_dst is not None:
                _check_rows(x_dst, dst, g.n_nodes, "destination nodes")
        if values is not None:
            w = values if values.dtype == x_src.dtype else values.to(x_src.dtype)
        else:
            w = r.to_csr(_edge_tensor(edge_weight, "edge_weight", r.nnz, x_src, src))
        # ---- lazy parameters (PyG's order: lin_rel, then lin_root when it is used)
        rel.materialize(x_src.shape[1])
        if x_dst is not None:
            root.materialize(x_dst.shape[1])
        # ---- compute
        if reduce in ("sum", "mean") and self.out_channels < x_src.shape[1]:
            # sum/mean are linear: aggregate at the narrower width
            out = _SpMM.apply(g, reduce, x_src @ rel.weight.T, w)
            if rel.bias is not None:
                out = out + rel.bias
        else:
            out = rel(_SpMM.apply(g, reduce, x_src, w))
        return out if x_dst is None else out + root(x_dst)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, aggr={self.aggr!r}"


class STGConv(torch.nn.Module):
    r"""Spatio-temporal graph convolution with learnable per-kind time decay.

    .. math::

        n'_i = W_{self} n_i + \frac{1}{Z_i}\Big(\sum_{j \to i} w_{ji} W_{neigh} n_j
               + \sum_{j \to i} c_{ji}\Big) + b, \qquad
        w_{ji} = \exp(-\Delta t_{ji} / \tau_{\kappa(ji)})

    where ``κ(ji) = min(kind_ji - 1, n_kinds - 1)`` maps the window-graph
    kind bitmask (1 temporal, 2 category, 3 both, 4+ self loops) to one of
    ``n_kinds`` learnable ``log τ``; ``Z_i = Σ_j w_ji + eps`` when
    ``normalize`` else 1.  With ``fuse_common_neighbors``,
    ``c_ji = Σ_{m ∈ N(i) ∩ N(j)} w_im w_jm W_cn n_m`` (common-neighbour
    fusion of :func:`common_neighbor_fusion` with the decay weights, so the
    gradient reaches τ through it too); the graph must be square with sorted
    rows (window graphs are).

    Parameters
    ----------
    in_channels, out_channels : int
    n_kinds : int >= 1
    tau_init : float > 0
        Initial τ (same unit as Δt) for every kind.
    fuse_common_neighbors : bool
    bias : bool
    normalize : bool, keyword-only
    eps : float, keyword-only

    Forward: ``forward(x, graph, dt=None, kind=None)``; ``x`` (n, in_channels);
    ``graph`` a stgkern Graph (``dt``/``kind`` default to its
    ``edata["dt"]``/``edata["kind"]``) or an edge_index (then pass both, in
    edge_index order); returns (n, out_channels).

    Examples
    --------
    >>> g = stgkern.window_graph(log, window=8)                     # doctest: +SKIP
    >>> h = STGConv(16, 32, tau_init=3600.0)(x, g)                  # doctest: +SKIP
    """

    def __init__(self, in_channels, out_channels, n_kinds=3, tau_init=86400.0, fuse_common_neighbors=False,
                 bias=True, *, normalize=False, eps=1e-6):
        super().__init__()
        if int(n_kinds) < 1:
            raise ValueError(f"n_kinds must be >= 1, got {n_kinds}")
        if not (float(tau_init) > 0 and math.isfinite(float(tau_init))):
            raise ValueError(f"tau_init must be a positive finite time scale, got {tau_init}")
        self.in_channels, self.out_channels, self.n_kinds = int(in_channels), int(out_channels), int(n_kinds)
        self.fuse_common_neighbors, self.normalize, self.eps = bool(fuse_common_neighbors), bool(normalize), float(eps)
        self.lin_self = torch.nn.Linear(self.in_channels, self.out_channels, bias=False)
        self.lin_neigh = torch.nn.Linear(self.in_channels, self.out_channels, bias=False)
        self.lin_cn = (torch.nn.Linear(self.in_channels, self.out_channels, bias=False)
                       if self.fuse_common_neighbors else None)
        self.log_tau = torch.nn.Parameter(torch.full((self.n_kinds,), math.log(float(tau_init))))
        self.bias = torch.nn.Parameter(torch.zeros(self.out_channels)) if bias else None

    def edge_weights(self, x, graph, dt=None, kind=None):
        """The decay weights ``w`` (nnz,) in CSR order, and the resolved graph."""
        r, dt, k = self._edges(x, graph, dt, kind)
        return self._decay(dt, k), r

    def _decay(self, dt, k):
        """``exp(-dt / τ[k])`` per edge, in ``dt``'s dtype."""
        return torch.exp(-dt * torch.exp(-self.log_tau.to(dt.dtype))[k])

    def _edges(self, x, graph, dt, kind):
        """``(resolved graph, dt in x's dtype, each edge's τ index)``, all in CSR order; the kind
        bitmask (window_graph's: 1 temporal, 2 category, 3 both) validated and mapped to
        ``0..n_kinds-1``."""
        r = _resolve(graph, x)
        dt = _per_edge(dt, "dt", r, x, "dt", floating=True)
        kind = _per_edge(kind, "kind", r, x, "kind", floating=False)
        if kind.numel() and int(kind.min()) < 1:
            raise ValueError(f"kind holds {int(kind.min())}; it is the window_graph bitmask (1 temporal, "
                             f"2 category, 3 both), not a 0-based class: pass graph.edata['kind'] unchanged")
        return r, dt, (kind - 1).clamp_(max=self.n_kinds - 1)

    def forward(self, x, graph, dt=None, kind=None):
        _layer_input(self, x, self.lin_self.weight)
        fused = not self.fuse_common_neighbors and x.device.type == "cpu" and x.dtype == torch.float32
        r, dt, k = self._edges(x, graph, dt, kind)
        g = r.g
        if g.n_src != g.n_nodes or x.shape[0] != g.n_nodes:
            raise ValueError(f"STGConv needs a square graph with one row of x per node; graph is {g.shape}, "
                             f"x has {x.shape[0]} rows")
        if fused and g.nnz <= STGCONV_FUSED_MAX_NNZ:
            # one GEMM for both transforms; the aggregation, normalisation, self term and bias in one pass
            y = torch.mm(x, torch.cat([self.lin_neigh.weight, self.lin_self.weight]).T)
            bias = self.bias if self.bias is not None else x.new_zeros(self.out_channels)
            return _STGAggregate.apply(y, self.log_tau, bias, dt, g, k, self.normalize, self.eps)
        w = self._decay(dt, k)
        agg = _SpMM.apply(g, "sum", self.lin_neigh(x), w)
        if self.fuse_common_neighbors:
            gs, ws = g, w
            if not g.rows_sorted:
                gs, order = _sorted_copy(g)
                ws = w.index_select(0, order)
            cn = _CommonNeighborFusion.apply(gs, self.lin_cn(x), ws)
            agg = agg + _SegmentReduce.apply(gs.indptr, "sum", cn)
        if self.normalize:
            z = _SegmentReduce.apply(g.indptr, "sum", w[:, None])
            agg = agg / (z + self.eps)
        out = self.lin_self(x) + agg
        return out if self.bias is None else out + self.bias

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, n_kinds={self.n_kinds}, "
                f"fuse_common_neighbors={self.fuse_common_neighbors}, normalize={self.normalize}")


#: ``STGConv`` on float32 CPU tensors (without common-neighbour fusion) runs its aggregation as one
#: fused serial pass (:mod:`stgkern._numba.stgconv`) on graphs of up to this many edges: a training
#: or serving batch, where the composite's dozen passes and autograd nodes cost more than the
#: arithmetic (MovieLens batch, ~9,000 edges: 2.0 ms a layer forward and backward through the
#: composite).  Larger graphs take the composite, whose spmm runs on every Numba thread.
STGCONV_FUSED_MAX_NNZ = 1 << 20


class _STGAggregate(torch.autograd.Function):
    """``Yn``'s decayed (normalised) aggregation + ``Ys`` + bias from ``y = [Yn | Ys]``; see
    :mod:`stgkern._numba.stgconv`."""

    @staticmethod
    def forward(ctx, y, log_tau, bias, dt, g, kind_index, normalize, eps):
        from ._numba import stgconv as _k
        y, dt = y.contiguous(), dt.contiguous()
        n, F = y.shape[0], y.shape[1] // 2
        inv_tau = torch.exp(-log_tau.detach()).contiguous()
        out, agg = y.new_empty(n, F), y.new_empty(n, F)
        w, Z = y.new_empty(g.nnz), y.new_empty(n)
        kappa = kind_index.contiguous().numpy()
        _k.forward(g.indptr, g.indices, dt.numpy(), kappa, inv_tau.numpy(), y.detach().numpy(),
                   bias.detach().contiguous().numpy(), bool(normalize), np.float32(eps), out.numpy(), agg.numpy(),
                   w.numpy(), Z.numpy())
        ctx.save_for_backward(y, agg, w, Z, dt, inv_tau)
        ctx.g, ctx.kappa, ctx.normalize = g, kappa, bool(normalize)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        from ._numba import stgconv as _k
        y, agg, w, Z, dt, inv_tau = ctx.saved_tensors
        g = ctx.g
        grad = grad.contiguous()
        dy, ddt = torch.empty_like(y), torch.empty_like(dt)
        Gs = np.empty(agg.shape[1], np.float32)
        dlt = np.zeros(len(inv_tau), np.float64)
        _k.backward(g.indptr, g.indices, dt.numpy(), ctx.kappa, inv_tau.numpy(), y.detach().numpy(), agg.numpy(),
                    w.numpy(), Z.numpy(), grad.numpy(), ctx.normalize, Gs, dy.numpy(), ddt.numpy(), dlt)
        d_log_tau = torch.from_numpy(dlt).to(inv_tau.dtype) if ctx.needs_input_grad[1] else None
        d_bias = grad.sum(0) if ctx.needs_input_grad[2] else None
        return dy, d_log_tau, d_bias, (ddt if ctx.needs_input_grad[3] else None), None, None, None, None


def _sorted_copy(g):
    """``(g with sorted rows, order)``: sorted edge k is edge ``order[k]`` of ``g``; cached on ``g``."""
    cache = g.__dict__.setdefault("_torch_sorted", {})
    if "g" not in cache:
        xp = g.xp
        order = xp.lexsort(xp.stack([g.indices, g.dst()])).astype(np.int64)
        cache["g"] = Graph(g.indptr, g.indices[order], g.n_src, check=False)
        cache["order"] = _as_tensor(order)
    return cache["g"], cache["order"]


def _edge_graph(g):
    """Graph whose row i lists the *edge ids* of row i of ``g`` (n_src = nnz).

    Per-edge features then act as source features: ``spmm`` over it sums
    per-edge rows into destinations, ``sddmm`` scores a node row against its
    edges' rows.  Cached on ``g``.
    """
    cache = g.__dict__.setdefault("_torch_edge_graph", {})
    if "g" not in cache:
        cache["g"] = Graph(g.indptr, g.xp.arange(g.nnz, dtype=np.int64), g.nnz, check=False, rows_sorted=True)
    return cache["g"]


class TemporalAttention(torch.nn.Module):
    r"""TGAT-style temporal graph attention over in-edges (multi-head, concatenated).

    With the harmonic time encoding ``φ(Δt) = cos(ω Δt + ϕ)`` (``time_dim``
    learnable frequencies ω initialised to ``stgkern.features.default_omega``
    and phases ϕ initialised to 0), for head h of width ``d = out/heads``::

        q_i    = W_q x_i + W_qt φ(0)               (query: destination, Δt = 0)
        k_ji   = W_k x_j + W_kt φ(Δt_ji)           (key: source ‖ time encoding)
        v_ji   = W_v x_j + W_vt φ(Δt_ji)           (value: source ‖ time encoding)
        α_ji,h = softmax_j(q_i,h · k_ji,h / sqrt(d))   over the in-edges of i
        out_i  = concat_h Σ_j α_ji,h v_ji,h + W_self x_i + b

    (a linear map of ``[x_j ‖ φ]`` split into its two blocks).  Scores run
    through :func:`sddmm` (dot) and :func:`edge_softmax`, aggregation through
    :func:`spmm` with the attention as edge weights; the per-edge time terms
    use an "edge graph" whose sources are the edges, so they too are sddmm /
    spmm kernels.  Nodes without in-edges get ``W_self x_i + b``.

    Parameters
    ----------
    in_channels, out_channels : int (out_channels divisible by heads)
    heads : int >= 1
    time_dim : int >= 1

    Forward: ``forward(x, graph, dt=None)``; ``dt`` defaults to
    ``graph.edata["dt"]`` (required for an edge_index); returns
    (n, out_channels).

    Examples
    --------
    >>> att = TemporalAttention(16, 32, heads=2)                 # doctest: +SKIP
    >>> h = att(x, stgkern.window_graph(log))                    # doctest: +SKIP
    """

    def __init__(self, in_channels, out_channels, heads=1, time_dim=16):
        super().__init__()
        from .features import default_omega
        if int(heads) < 1 or int(out_channels) % int(heads):
            raise ValueError(f"out_channels={out_channels} must be a positive multiple of heads={heads} "
                             f"(heads are concatenated)")
        if int(time_dim) < 1:
            raise ValueError(f"time_dim must be >= 1, got {time_dim}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.heads, self.time_dim = int(heads), int(time_dim)
        lin = torch.nn.Linear
        self.lin_q = lin(self.in_channels, self.out_channels, bias=False)
        self.lin_k = lin(self.in_channels, self.out_channels, bias=False)
        self.lin_v = lin(self.in_channels, self.out_channels, bias=False)
        self.lin_qt = lin(self.time_dim, self.out_channels, bias=False)
        self.lin_kt = lin(self.time_dim, self.out_channels, bias=False)
        self.lin_vt = lin(self.time_dim, self.out_channels, bias=False)
        self.lin_self = lin(self.in_channels, self.out_channels, bias=True)
        self.omega = torch.nn.Parameter(torch.as_tensor(default_omega(self.time_dim), dtype=torch.float32))
        self.phase = torch.nn.Parameter(torch.zeros(self.time_dim))

    def time_encoding(self, dt):
        """``cos(ω Δt + ϕ)`` for a 1-D tensor of gaps: (len(dt), time_dim)."""
        return torch.cos(dt[:, None] * self.omega.to(dt.dtype) + self.phase.to(dt.dtype))

    def forward(self, x, graph, dt=None):
        _layer_input(self, x, self.lin_q.weight)
        r = _resolve(graph, x)
        g = r.g
        if g.n_src != g.n_nodes or x.shape[0] != g.n_nodes:
            raise ValueError(f"TemporalAttention needs a square graph with one row of x per node; graph is "
                             f"{g.shape}, x has {x.shape[0]} rows")
        dt = _per_edge(dt, "dt", r, x, "dt", floating=True)
        eg = _edge_graph(g)
        phi = self.time_encoding(dt)                                    # (nnz, T)
        phi0 = torch.cos(self.phase)                                    # φ(0)
        q = self.lin_q(x) + self.lin_qt(phi0)
        k, v = self.lin_k(x), self.lin_v(x)
        H, d = self.heads, self.out_channels // self.heads
        scale = 1.0 / math.sqrt(d)
        scores = []
        for h in range(H):
            sl = slice(h * d, (h + 1) * d)
            qh = q[:, sl].contiguous()
            s_node = _SDDMM.apply(g, "dot", qh, k[:, sl].contiguous())
            # q_i · (W_kt φ_k) = (W_kt^T q_i) · φ_k: score each node's projected query against its edges
            s_time = _SDDMM.apply(eg, "dot", qh @ self.lin_kt.weight[sl], phi)
            scores.append((s_node + s_time) * scale)
        alpha = _EdgeSoftmax.apply(g, torch.stack(scores, 1))         # (nnz, H)
        outs = []
        for h in range(H):
            sl = slice(h * d, (h + 1) * d)
            a = alpha[:, h].contiguous()
            o_node = _SpMM.apply(g, "sum", v[:, sl].contiguous(), a)
            o_time = _SpMM.apply(eg, "sum", phi, a) @ self.lin_vt.weight[sl].T
            outs.append(o_node + o_time)
        return torch.cat(outs, 1) + self.lin_self(x)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, heads={self.heads}, time_dim={self.time_dim}"
