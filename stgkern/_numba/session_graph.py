"""SR-GNN session graphs: batched CSR graph, padded layout, prefix augmentation.

Backends assume validated input: ``ptr`` int64 monotone from 0 to
``len(items)``, ``items`` int64 (>= 1 for the padded layout).
"""
import numba as nb
import numpy as np

from ._sort import sort_range
from ._twin import twin, use_threads

#: Up to this many values are sorted by insertion in place; longer runs are sorted in a copy
#: (``_sort.sort_range``; the copy and call cost more than a short session's sort).
_INSERTION_MAX = 48


@nb.njit(cache=True)
def _sort_unique(vals, out):
    """Sorted distinct values of ``vals`` written to ``out``; returns the count.

    ``out`` may be ``vals`` itself (sorted in place).
    """
    n = vals.shape[0]
    if n == 0:
        return 0
    if n <= _INSERTION_MAX:
        for i in range(n):
            x = vals[i]
            j = i
            while j > 0 and out[j - 1] > x:
                out[j] = out[j - 1]
                j -= 1
            out[j] = x
        srt = out
    else:
        srt = vals.copy()
        sort_range(srt, 0, n)
    m = 0
    for i in range(n):
        if i == 0 or srt[i] != out[m - 1]:
            out[m] = srt[i]
            m += 1
    return m


@nb.njit(cache=True)
def _local_index(nodes, m, x):
    """Position of ``x`` in the sorted ``nodes[:m]`` (present by construction)."""
    lo = 0
    hi = m
    while lo < hi:
        mid = (lo + hi) >> 1
        if nodes[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@twin()
def _analyse(ptr, items, nodes_ws, alias_local, pairs_ws, n_nodes, n_edges, parallel):
    n_seq = ptr.shape[0] - 1
    if parallel:
        for s in nb.prange(n_seq):
            _analyse_one(np.int64(s), ptr, items, nodes_ws, alias_local, pairs_ws, n_nodes, n_edges)
    else:
        for s in range(n_seq):
            _analyse_one(s, ptr, items, nodes_ws, alias_local, pairs_ws, n_nodes, n_edges)


@nb.njit(cache=True)
def _analyse_one(s, ptr, items, nodes_ws, alias_local, pairs_ws, n_nodes, n_edges):
    """Session s: unique items (into ``nodes_ws`` at the session's offset),
    local alias of each position, distinct (dst, src) pair codes sorted
    (into ``pairs_ws`` at the session's offset)."""
    p0 = ptr[s]
    p1 = ptr[s + 1]
    L = p1 - p0
    m = _sort_unique(items[p0:p1], nodes_ws[p0:p1])
    n_nodes[s] = m
    nodes = nodes_ws[p0:p1]
    for p in range(p0, p1):
        alias_local[p] = _local_index(nodes, m, items[p])
    if L < 2:
        n_edges[s] = 0
        return
    codes = pairs_ws[p0:p1 - 1]
    for p in range(p0, p1 - 1):
        u = alias_local[p]
        v = alias_local[p + 1]
        codes[p - p0] = v * m + u  # row (destination) major, then source
    n_edges[s] = _sort_unique(codes, codes)


@twin()
def _fill(ptr, nodes_ws, alias_local, pairs_ws, n_nodes, n_edges, node_ptr, edge_ptr,
          node_item, alias, indptr, indices, w_in, w_out, parallel):
    n_seq = ptr.shape[0] - 1
    # degree counters at each session's own offset (a session has at most
    # as many nodes as positions): no allocation per session
    indeg_ws = np.empty(ptr[n_seq], dtype=np.int64)
    outdeg_ws = np.empty(ptr[n_seq], dtype=np.int64)
    if parallel:
        for s in nb.prange(n_seq):
            _fill_one(np.int64(s), ptr, nodes_ws, alias_local, pairs_ws, n_nodes, n_edges, node_ptr, edge_ptr,
                      node_item, alias, indptr, indices, w_in, w_out, indeg_ws, outdeg_ws)
    else:
        for s in range(n_seq):
            _fill_one(s, ptr, nodes_ws, alias_local, pairs_ws, n_nodes, n_edges, node_ptr, edge_ptr,
                      node_item, alias, indptr, indices, w_in, w_out, indeg_ws, outdeg_ws)


@nb.njit(cache=True)
def _fill_one(s, ptr, nodes_ws, alias_local, pairs_ws, n_nodes, n_edges, node_ptr, edge_ptr,
              node_item, alias, indptr, indices, w_in, w_out, indeg_ws, outdeg_ws):
    p0 = ptr[s]
    p1 = ptr[s + 1]
    m = n_nodes[s]
    b = node_ptr[s]
    e0 = edge_ptr[s]
    ne = n_edges[s]
    for i in range(m):
        node_item[b + i] = nodes_ws[p0 + i]
    for p in range(p0, p1):
        alias[p] = b + alias_local[p]
    indeg = indeg_ws[p0:p0 + m]
    outdeg = outdeg_ws[p0:p0 + m]
    indeg[:] = 0
    outdeg[:] = 0
    for k in range(ne):
        c = pairs_ws[p0 + k]
        v = c // m
        u = c - v * m
        indeg[v] += 1
        outdeg[u] += 1
        indices[e0 + k] = b + u
    # Codes are sorted by destination, so rows are contiguous and each row's
    # sources ascend.
    acc = e0
    for i in range(m):
        indptr[b + i] = acc
        acc += indeg[i]
    for k in range(ne):
        c = pairs_ws[p0 + k]
        v = c // m
        u = c - v * m
        w_in[e0 + k] = 1.0 / indeg[v]
        w_out[e0 + k] = 1.0 / outdeg[u]


def _parallel(n_seq):
    # Thread start-up costs more than a training batch's work (and, on a busy
    # machine, far more): small batches run on the calling thread.
    return use_threads(n_seq)


def session_graph(ptr, items, dtype):
    """Return (indptr, indices, w_in, w_out, node_ptr, node_item, alias)."""
    n_seq = ptr.shape[0] - 1
    par = _parallel(n_seq)
    n_pos = items.shape[0]
    nodes_ws = np.empty(n_pos, dtype=np.int64)
    pairs_ws = np.empty(n_pos, dtype=np.int64)
    alias_local = np.empty(n_pos, dtype=np.int64)
    n_nodes = np.empty(n_seq, dtype=np.int64)
    n_edges = np.empty(n_seq, dtype=np.int64)
    _analyse(ptr, items, nodes_ws, alias_local, pairs_ws, n_nodes, n_edges, par)
    node_ptr = np.zeros(n_seq + 1, dtype=np.int64)
    np.cumsum(n_nodes, out=node_ptr[1:])
    edge_ptr = np.zeros(n_seq + 1, dtype=np.int64)
    np.cumsum(n_edges, out=edge_ptr[1:])
    n_total = int(node_ptr[-1])
    nnz = int(edge_ptr[-1])
    node_item = np.empty(n_total, dtype=np.int64)
    alias = np.empty(n_pos, dtype=np.int64)
    indptr = np.empty(n_total + 1, dtype=np.int64)
    indptr[n_total] = nnz
    idx_dtype = np.int32 if n_total <= np.iinfo(np.int32).max else np.int64
    indices = np.empty(nnz, dtype=idx_dtype)
    w_in = np.empty(nnz, dtype=np.float64)
    w_out = np.empty(nnz, dtype=np.float64)
    _fill(ptr, nodes_ws, alias_local, pairs_ws, n_nodes, n_edges, node_ptr, edge_ptr,
          node_item, alias, indptr, indices, w_in, w_out, par)
    # 1/deg in float64 then rounded once, as SR-GNN's float64 matrices are
    # when torch converts them.
    return indptr, indices, w_in.astype(dtype, copy=False), w_out.astype(dtype, copy=False), \
        node_ptr, node_item, alias


# ----------------------------------------------------------- padded layout
@twin()
def _layout(ptr, items, len_max, max_n, alias_out, A, items_out, mask, parallel):
    # Scratch at each session's own offset (p0 + s, length L + 1) instead of
    # per-session allocations, which cost more than a short session's work.
    n_seq = ptr.shape[0] - 1
    n_ws = items.shape[0] + n_seq
    nodes = np.empty(n_ws, dtype=np.int64)
    indeg = np.zeros(n_ws, dtype=np.int64)
    outdeg = np.zeros(n_ws, dtype=np.int64)
    eu = np.empty(n_ws, dtype=np.int64)
    ev = np.empty(n_ws, dtype=np.int64)
    if parallel:
        for s in nb.prange(n_seq):
            _layout_one(np.int64(s), ptr, items, len_max, max_n, alias_out, A, items_out, mask,
                        nodes, indeg, outdeg, eu, ev)
    else:
        for s in range(n_seq):
            _layout_one(s, ptr, items, len_max, max_n, alias_out, A, items_out, mask,
                        nodes, indeg, outdeg, eu, ev)


@nb.njit(cache=True)
def _layout_one(s, ptr, items, len_max, max_n, alias_out, A, items_out, mask,
                nodes_ws, indeg_ws, outdeg_ws, eu_ws, ev_ws):
    p0 = ptr[s]
    p1 = ptr[s + 1]
    L = p1 - p0
    w0 = p0 + s
    nodes = nodes_ws[w0:w0 + L + 1]
    indeg = indeg_ws[w0:w0 + L + 1]
    outdeg = outdeg_ws[w0:w0 + L + 1]
    eu = eu_ws[w0:w0 + L + 1]
    ev = ev_ws[w0:w0 + L + 1]
    # Padding 0 is a node whenever the padded row has any (items are >= 1,
    # so it sorts first).
    off = 1 if L < len_max else 0
    nodes[0] = 0
    for p in range(L):
        nodes[off + p] = items[p0 + p]
    nodes[off:off + L].sort()
    m = off
    for p in range(off, off + L):
        if p == off or nodes[p] != nodes[p - 1]:
            nodes[m] = nodes[p]
            m += 1
    for i in range(m):
        items_out[s, i] = nodes[i]
    for p in range(L):
        alias_out[s, p] = _local_index(nodes, m, items[p0 + p])
        mask[s, p] = 1
    # padding positions: alias 0 (node 0), mask 0 -- already zero
    ne = 0
    Ad = A[s]
    # Distinct edges u -> v: mark A_in[v, u] with 1 first, count degrees.
    for p in range(L - 1):
        u = alias_out[s, p]
        v = alias_out[s, p + 1]
        if Ad[v, u] == 0.0:
            Ad[v, u] = 1.0
            indeg[v] += 1
            outdeg[u] += 1
            eu[ne] = u
            ev[ne] = v
            ne += 1
    for e in range(ne):
        u = eu[e]
        v = ev[e]
        # A[:, :n] = u_A_in^T: row v, column u -> 1/indeg(v)
        # A[:, n:] = u_A_out^T: row u, column v -> 1/outdeg(u)
        Ad[v, u] = 1.0 / indeg[v]
        Ad[u, max_n + v] = 1.0 / outdeg[u]


@twin()
def _n_unique(ptr, items, len_max, out, parallel):
    n_seq = ptr.shape[0] - 1
    if parallel:
        for s in nb.prange(n_seq):
            out[s] = _n_unique_one(np.int64(s), ptr, items, len_max)
    else:
        for s in range(n_seq):
            out[s] = _n_unique_one(s, ptr, items, len_max)


@nb.njit(cache=True)
def _n_unique_one(s, ptr, items, len_max):
    p0 = ptr[s]
    p1 = ptr[s + 1]
    ws = np.empty(p1 - p0, dtype=np.int64)
    return _sort_unique(items[p0:p1], ws) + (1 if p1 - p0 < len_max else 0)


def srgnn_layout_size(ptr, items, len_max):
    """Largest node count of a padded session (``M``; for the memory estimate)."""
    n_seq = ptr.shape[0] - 1
    n_u = np.zeros(n_seq, dtype=np.int64)
    _n_unique(ptr, items, len_max, n_u, _parallel(n_seq))
    return int(n_u.max()) if n_seq else 0


def srgnn_layout(ptr, items, len_max, max_n):
    """``max_n`` from :func:`srgnn_layout_size`."""
    n_seq = ptr.shape[0] - 1
    alias = np.zeros((n_seq, len_max), dtype=np.int64)
    A = np.zeros((n_seq, max_n, 2 * max_n), dtype=np.float64)
    items_out = np.zeros((n_seq, max_n), dtype=np.int64)
    mask = np.zeros((n_seq, len_max), dtype=np.int64)
    _layout(ptr, items, len_max, max_n, alias, A, items_out, mask, _parallel(n_seq))
    return alias, A, items_out, mask


# ----------------------------------------------------- prefix augmentation
@nb.njit(cache=True, parallel=True)
def _prefixes(ptr, items, ex_ptr, out_ptr, out_items, targets, seq_id):
    n_seq = ptr.shape[0] - 1
    for s in nb.prange(n_seq):
        p0 = ptr[s]
        L = ptr[s + 1] - p0
        e = ex_ptr[s]
        # example index e + (i - 1) holds prefix s[:L-i] and target s[L-i]
        # (prefix lengths L-1, L-2, ..., 1: longest first, as process_seqs).
        # Its items start at out_ptr[e]; sum of earlier prefix lengths of s.
        base = out_ptr[e]
        for i in range(1, L):
            plen = L - i
            ex = e + i - 1
            targets[ex] = items[p0 + plen]
            seq_id[ex] = s
            for q in range(plen):
                out_items[base + q] = items[p0 + q]
            base += plen


def srgnn_prefixes(ptr, items):
    lens = np.diff(ptr)
    n_ex_per = np.maximum(lens - 1, 0)
    ex_ptr = np.zeros(lens.shape[0] + 1, dtype=np.int64)
    np.cumsum(n_ex_per, out=ex_ptr[1:])
    n_ex = int(ex_ptr[-1])
    # prefix lengths, example by example: L-1, L-2, ..., 1 for each sequence
    seq_of_ex = np.repeat(np.arange(lens.shape[0], dtype=np.int64), n_ex_per)
    rank = np.arange(n_ex, dtype=np.int64) - ex_ptr[:-1][seq_of_ex]
    plen = lens[seq_of_ex] - 1 - rank
    out_ptr = np.zeros(n_ex + 1, dtype=np.int64)
    np.cumsum(plen, out=out_ptr[1:])
    out_items = np.empty(int(out_ptr[-1]), dtype=items.dtype)
    targets = np.empty(n_ex, dtype=items.dtype)
    seq_id = np.empty(n_ex, dtype=np.int64)
    _prefixes(ptr, items, ex_ptr, out_ptr, out_items, targets, seq_id)
    return out_ptr, out_items, targets, seq_id
