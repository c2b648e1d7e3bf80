"""GPU SR-GNN builders (csrc/cuda/session_graph.cu): session graphs, padded layout, prefixes.

Same functions, arguments and results as ``stgkern._numba.session_graph``
(bit-identical integers, the same float weights), on validated CuPy input:
``ptr`` int64 from 0 to ``len(items)``, ``items`` int64 (>= 1 for the layout).

Two paths, chosen per batch by its longest session:

* sessions of at most ``config.cuda_long_row`` positions (the usual case):
  one warp per session, no sort -- ``session_graph_count`` (unique items,
  local alias, distinct edges) -> ``cupy.cumsum`` of the node and edge counts
  -> ``session_graph_fill`` (node items, alias, CSR rows, 1/deg weights).  A
  session costs O(L^2 / 32) warp steps (see the .cu); a batch costs two
  kernels and two cumsums, no sort; ``srgnn_layout_fill`` and
  ``srgnn_prefixes_fill`` are single launches;
* a batch with a longer session takes :func:`session_graph_sorted`, a CuPy
  composition with two global sorts (O(n log n) whatever the lengths); the
  padded layout is then scattered from that graph.  The same composition is
  the CuPy peer in ``benchmarks/device_check.py``, which times both paths on
  SR-GNN batches (where the crossover length lies is not measured yet).

Integer counts are kernel loops or prefix sums; the only CuPy reduction with
atomics inside is ``bincount`` of integers on the long path (exact).  CuPy is
imported on first use.
"""
from __future__ import annotations

import numpy as np

from .. import _dispatch, config
from ._loader import launch
from .item_graph import stable_order

_OP = "session_graph"
_ANY = (np.float64, np.int64)  # instantiation for the kernels that read no weights or column indices
INT32_MAX = np.iinfo(np.int32).max


def _index_dtype(n):
    return np.int32 if n <= INT32_MAX else np.int64


def _longest(ptr):
    return int((ptr[1:] - ptr[:-1]).max()) if ptr.shape[0] > 1 else 0


def _short(ptr):
    return _longest(ptr) <= int(config.cuda_long_row)


def _count(x, n):
    import cupy as cp

    return cp.bincount(x, minlength=n).astype(np.int64) if x.shape[0] else cp.zeros(n, dtype=np.int64)


def _pass1(ptr, items, dtype, index_dtype, with_edges):
    import cupy as cp

    n_seq, n_pos = ptr.shape[0] - 1, items.shape[0]
    first = cp.empty(n_pos, dtype=np.uint8)
    local = cp.empty(n_pos, dtype=np.int64)
    efirst = cp.empty(n_pos, dtype=np.uint8) if with_edges else None
    n_nodes = cp.empty(n_seq, dtype=np.int64)
    n_edges = cp.empty(n_seq, dtype=np.int64)
    launch(_OP, "session_graph_count", dtype, index_dtype, n_seq,
           (ptr, n_seq, items, np.int32(with_edges), first, local, efirst, n_nodes, n_edges))
    return first, local, efirst, n_nodes, n_edges


# --------------------------------------------------------------- session graph
def session_graph(ptr, items, dtype):
    """Return (indptr, indices, w_in, w_out, node_ptr, node_item, alias)."""
    import cupy as cp

    if not _short(ptr):
        return session_graph_sorted(ptr, items, dtype)
    dtype = np.dtype(dtype)
    n_seq, n_pos = ptr.shape[0] - 1, items.shape[0]
    # n_pos bounds the node count, so pass 1 almost always loads the fill's instantiation
    first, local, efirst, n_nodes, n_edges = _pass1(ptr, items, dtype, _index_dtype(n_pos), True)
    node_ptr, edge_ptr = _dispatch.offsets(n_nodes), _dispatch.offsets(n_edges)
    n_total, nnz = int(node_ptr[-1]), int(edge_ptr[-1])
    index_dtype = _index_dtype(n_total)  # the CPU's rule, on the node count
    node_item = cp.empty(n_total, dtype=np.int64)
    alias = cp.empty(n_pos, dtype=np.int64)
    indptr = cp.empty(n_total + 1, dtype=np.int64)
    indptr[n_total] = nnz
    indices = cp.empty(nnz, dtype=index_dtype)
    w_in = cp.empty(nnz, dtype=dtype)
    w_out = cp.empty(nnz, dtype=dtype)
    launch(_OP, "session_graph_fill", dtype, index_dtype, n_seq,
           (ptr, n_seq, items, first, local, efirst, node_ptr, edge_ptr, node_item, alias, indptr, indices,
            w_in, w_out))
    return indptr, indices, w_in, w_out, node_ptr, node_item, alias


def _sorted_nodes(ptr, items):
    """Nodes by one sort of the positions by (session, item): ``(seg, alias, node_item, node_ptr)``."""
    import cupy as cp

    n_seq, n_pos = ptr.shape[0] - 1, items.shape[0]
    seg = _dispatch.expand_ptr(ptr)
    hi = int(items.max()) + 1 if n_pos else 1
    order = stable_order([seg, items], [max(n_seq, 1), hi])
    s_items, s_seg = items[order], seg[order]
    new = cp.ones(n_pos, dtype=bool)
    if n_pos > 1:
        new[1:] = (s_items[1:] != s_items[:-1]) | (s_seg[1:] != s_seg[:-1])
    alias = cp.empty(n_pos, dtype=np.int64)
    alias[order] = cp.cumsum(new, dtype=np.int64) - 1
    node_seg = s_seg[new]
    node_ptr = cp.searchsorted(node_seg, cp.arange(n_seq + 1, dtype=np.int64), side="left").astype(np.int64)
    return seg, alias, s_items[new], node_ptr


def session_graph_sorted(ptr, items, dtype):
    """:func:`session_graph` as a CuPy composition: nodes from a sort of (session, item), distinct
    edges from a sort of (destination, source) over global node ids, degrees from ``bincount``."""
    import cupy as cp

    dtype = np.dtype(dtype)
    seg, alias, node_item, node_ptr = _sorted_nodes(ptr, items)
    n_total = node_item.shape[0]
    same = seg[1:] == seg[:-1]  # consecutive positions of one session
    u, v = alias[:-1][same], alias[1:][same]
    order = stable_order([v, u], [max(n_total, 1), max(n_total, 1)])
    v, u = v[order], u[order]
    new = cp.ones(v.shape[0], dtype=bool)
    if v.shape[0] > 1:
        new[1:] = (v[1:] != v[:-1]) | (u[1:] != u[:-1])
    ev, eu = v[new], u[new]
    indptr = cp.searchsorted(ev, cp.arange(n_total + 1, dtype=np.int64), side="left").astype(np.int64)
    indeg = indptr[1:] - indptr[:-1]
    outdeg = _count(eu, n_total)
    w_in = (1.0 / indeg[ev].astype(np.float64)).astype(dtype)
    w_out = (1.0 / outdeg[eu].astype(np.float64)).astype(dtype)
    return indptr, eu.astype(_index_dtype(n_total)), w_in, w_out, node_ptr, node_item, alias


# ----------------------------------------------------------- padded layout
def srgnn_layout_size(ptr, items, len_max):
    """Largest node count of a padded session (``M``; for the memory estimate)."""
    n_seq = ptr.shape[0] - 1
    if n_seq == 0:
        return 0
    if _short(ptr):
        n_nodes = _pass1(ptr, items, *_ANY, False)[3]
    else:
        node_ptr = _sorted_nodes(ptr, items)[3]
        n_nodes = node_ptr[1:] - node_ptr[:-1]
    pad = (ptr[1:] - ptr[:-1] < len_max).astype(np.int64)
    return int((n_nodes + pad).max())


def srgnn_layout(ptr, items, len_max, max_n):
    """``max_n`` from :func:`srgnn_layout_size`."""
    import cupy as cp

    n_seq, n_pos = ptr.shape[0] - 1, items.shape[0]
    alias = cp.zeros((n_seq, len_max), dtype=np.int64)
    A = cp.zeros((n_seq, max_n, 2 * max_n), dtype=np.float64)
    items_out = cp.zeros((n_seq, max_n), dtype=np.int64)
    mask = cp.zeros((n_seq, len_max), dtype=np.int64)
    if not _short(ptr):
        _layout_from_graph(ptr, len_max, max_n, session_graph_sorted(ptr, items, np.float64),
                           alias, A, items_out, mask)
        return alias, A, items_out, mask
    first = cp.empty(n_pos, dtype=np.uint8)
    efirst = cp.empty(n_pos, dtype=np.uint8)
    launch(_OP, "srgnn_layout_fill", *_ANY, n_seq,
           (ptr, n_seq, items, len_max, max_n, first, efirst, alias, A, items_out, mask))
    return alias, A, items_out, mask


def _layout_from_graph(ptr, len_max, max_n, graph, alias_out, A, items_out, mask):
    """Scatter a float64 session graph into SR-GNN's padded arrays (node 0 is the padding item
    when a session is shorter than ``len_max``, so real nodes shift by one there)."""
    import cupy as cp

    indptr, indices, w_in, w_out, node_ptr, node_item, alias = graph
    n_pos, n_total = alias.shape[0], node_item.shape[0]
    off = (ptr[1:] - ptr[:-1] < len_max).astype(np.int64)
    seg = _dispatch.expand_ptr(ptr)
    col = cp.arange(n_pos, dtype=np.int64) - ptr[seg]
    alias_out[seg, col] = alias - node_ptr[seg] + off[seg]
    mask[seg, col] = 1
    nseg = _dispatch.expand_ptr(node_ptr)
    loc = cp.arange(n_total, dtype=np.int64) - node_ptr[nseg] + off[nseg]
    items_out[nseg, loc] = node_item
    dst = _dispatch.expand_ptr(indptr)
    src = indices.astype(np.int64)
    s_e, v, u = nseg[dst], loc[dst], loc[src]
    A[s_e, v, u] = w_in
    A[s_e, u, max_n + v] = w_out


# ----------------------------------------------------- prefix augmentation
def srgnn_prefixes(ptr, items):
    """Return (out_ptr, out_items, targets, seq_id) as ``stgkern._numba.session_graph.srgnn_prefixes``."""
    import cupy as cp

    n_seq = ptr.shape[0] - 1
    lens = ptr[1:] - ptr[:-1]
    ex_ptr = _dispatch.offsets(cp.maximum(lens - 1, 0))
    item_ptr = _dispatch.offsets(lens * (lens - 1) // 2)
    n_ex, n_out = int(ex_ptr[-1]), int(item_ptr[-1])
    out_ptr = cp.empty(n_ex + 1, dtype=np.int64)
    out_ptr[0] = 0
    out_items = cp.empty(n_out, dtype=items.dtype)
    targets = cp.empty(n_ex, dtype=items.dtype)
    seq_id = cp.empty(n_ex, dtype=np.int64)
    launch(_OP, "srgnn_prefixes_fill", *_ANY, n_seq,
           (ptr, n_seq, items, ex_ptr, item_ptr, out_ptr, out_items, targets, seq_id))
    return out_ptr, out_items, targets, seq_id
