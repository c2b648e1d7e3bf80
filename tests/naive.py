"""Slow, obviously correct references for every stgkern kernel.

Plain loops or dense NumPy, written for readability, never for speed. Each
section names the public op it checks; the tests compare the Numba kernels
(and, on a GPU, the CUDA kernels) against these on random inputs and edge
cases.
"""
import math

import numpy as np


# ==========================================================================
# construct
# Slow, obviously-correct references for window graphs and node/edge features.
# ==========================================================================

def naive_window_graph(user, time, category=None, window=8, horizon=None, strict_time=False,
                       category_window=0, self_loops=False):
    """Plain double loop per user.  Returns (perm, edges) where edges is a list of
    (dst, src, dt, hop, kind) in (dst, src) order."""
    user = np.asarray(user)
    time = np.asarray(time)
    perm = np.lexsort((time, user))
    u = [int(x) for x in user[perm]]
    t = list(time[perm])
    c = None if category is None else [int(x) for x in np.asarray(category)[perm]]
    n = len(u)
    edges = []
    for i in range(n):
        kinds = {}
        earlier = [j for j in range(i) if u[j] == u[i]]
        for j in earlier:
            dt = t[i] - t[j]
            if horizon is not None and dt > horizon:
                continue
            if strict_time and t[j] == t[i]:
                continue
            if window is None or 1 <= i - j <= window:
                kinds[j] = kinds.get(j, 0) | 1
        if c is not None and category_window > 0:
            cands = [j for j in earlier if c[j] == c[i]
                     and (horizon is None or t[i] - t[j] <= horizon)
                     and not (strict_time and t[j] == t[i])]
            for j in cands[::-1][:category_window]:
                kinds[j] = kinds.get(j, 0) | 2
        if self_loops:
            kinds[i] = 4
        for j in sorted(kinds):
            dt = t[i] - t[j] if j != i else t[i] - t[i]
            edges.append((i, j, dt, i - j, kinds[j]))
    return perm, edges


def naive_node_features(user, time, behavior, value, n_behaviors, intensity=True, context=True,
                        causal=True, order=None):
    """Dense loop reference for node_features, rows in ``order`` (default lexsort order)."""
    user = np.asarray(user)
    time = np.asarray(time)
    if order is None:
        order = np.lexsort((time, user))
    B = n_behaviors
    d = B + (1 if intensity else 0) + (B if context else 0) + (B if context and not causal else 0)
    out = np.zeros((len(order), d))
    for r, e in enumerate(order):
        out[r, behavior[e]] = 1.0
        col = B
        if intensity:
            out[r, col] = math.log1p(value[e]) if value is not None else 0.0
            col += 1
        if context:
            if r > 0 and user[order[r - 1]] == user[e]:
                out[r, col + behavior[order[r - 1]]] = 1.0
            col += B
            if not causal:
                if r + 1 < len(order) and user[order[r + 1]] == user[e]:
                    out[r, col + behavior[order[r + 1]]] = 1.0
    return out


def naive_time_encoding(dt, dim, omega=None, phase=None):
    dt = np.asarray(dt, dtype=np.float64)
    if omega is None:
        omega = [1.0 / 10 ** (9 * k / (dim - 1)) if dim > 1 else 1.0 for k in range(dim)]
    if phase is None:
        phase = [0.0] * dim
    out = np.zeros((len(dt), dim))
    for e in range(len(dt)):
        for k in range(dim):
            out[e, k] = math.cos(omega[k] * dt[e] + phase[k])
    return out


def naive_time_bucket(dt, base=2.0, n_buckets=None):
    out = []
    for x in np.asarray(dt, dtype=np.float64):
        b = 0
        if x > 0:
            # largest b with base**b <= 1 + x, by repeated multiplication
            p = base
            while p <= 1 + x:
                b += 1
                p *= base
        if n_buckets is not None:
            b = min(b, n_buckets - 1)
        out.append(b)
    return np.array(out, dtype=np.int64)


# ==========================================================================
# compat
# Faithful plain-Python re-implementations of published preprocessing scripts.
#
# Each function follows the logic of one published script step by step
# (Python lists, dicts, ``np.unique``/``np.where`` exactly where the script
# uses them), so that the fast kernels in ``stgkern.compat`` can be checked
# against the behaviour users rely on to reproduce published models:
#
# * SR-GNN (Wu et al., AAAI 2019): ``utils.data_masks`` + ``Data.get_slice``
#   (padded layout), ``preprocess.process_seqs`` (prefix augmentation).
# * GCE-GNN (Wang et al., SIGIR 2020): ``build_graph.py`` (global item graph).
# * TiSASRec (Li et al., WSDM 2020): ``util.cleanAndsort`` (per-user time
#   rescaling), ``util.Relation`` + ``computeRePos`` (interval matrices).
#
# Sequences come in as lists of lists (use :func:`naive_split` on CSR input).
# ==========================================================================

def naive_split(ptr, values):
    """CSR (ptr, values) -> list of Python lists."""
    return [list(np.asarray(values[ptr[s]:ptr[s + 1]]).tolist()) for s in range(len(ptr) - 1)]


# ----------------------------------------------------------------- SR-GNN
def naive_srgnn_get_slice(seqs, len_max=None):
    """SR-GNN ``data_masks`` then ``Data.get_slice`` on one batch.

    ``len_max`` defaults to the batch's longest session (pass the data set's
    longest to reproduce the published global padding).
    """
    us_lens = [len(s) for s in seqs]
    if len_max is None:
        len_max = max(us_lens) if us_lens else 0
    inputs = [list(s) + [0] * (len_max - le) for s, le in zip(seqs, us_lens)]
    mask = [[1] * le + [0] * (len_max - le) for le in us_lens]

    items, n_node, A, alias_inputs = [], [], [], []
    for u_input in inputs:
        n_node.append(len(np.unique(u_input)))
    max_n_node = int(np.max(n_node)) if n_node else 0
    for u_input in inputs:
        node = np.unique(np.asarray(u_input, dtype=np.int64))
        items.append(node.tolist() + (max_n_node - len(node)) * [0])
        u_A = np.zeros((max_n_node, max_n_node))
        for i in np.arange(len(u_input) - 1):
            if u_input[i + 1] == 0:
                break
            u = np.where(node == u_input[i])[0][0]
            v = np.where(node == u_input[i + 1])[0][0]
            u_A[u][v] = 1
        u_sum_in = np.sum(u_A, 0)
        u_sum_in[np.where(u_sum_in == 0)] = 1
        u_A_in = np.divide(u_A, u_sum_in)
        u_sum_out = np.sum(u_A, 1)
        u_sum_out[np.where(u_sum_out == 0)] = 1
        u_A_out = np.divide(u_A.transpose(), u_sum_out)
        u_A = np.concatenate([u_A_in, u_A_out]).transpose()
        A.append(u_A)
        alias_inputs.append([np.where(node == i)[0][0] for i in u_input])
    n = len(seqs)
    # The script hands Python lists to torch; fix the dtypes NumPy would infer
    # for non-empty input so that empty batches compare too.
    return (np.asarray(alias_inputs, dtype=np.int64).reshape(n, len_max),
            np.asarray(A, dtype=np.float64).reshape(n, max_n_node, 2 * max_n_node),
            np.asarray(items, dtype=np.int64).reshape(n, max_n_node),
            np.asarray(mask, dtype=np.int64).reshape(n, len_max))


def naive_srgnn_session_graph(seqs):
    """Per session: (nodes, A_in, A_out) as dense matrices (SR-GNN semantics).

    ``A_in[v, u] = 1/indeg(v)`` and ``A_out[u, v] = 1/outdeg(u)`` for every
    distinct consecutive pair u -> v (node-local indices).
    """
    out = []
    for s in seqs:
        node = np.unique(np.asarray(s, dtype=np.int64))
        n = len(node)
        u_A = np.zeros((n, n))
        for i in range(len(s) - 1):
            u = np.where(node == s[i])[0][0]
            v = np.where(node == s[i + 1])[0][0]
            u_A[u][v] = 1
        indeg = u_A.sum(0)
        indeg[indeg == 0] = 1
        outdeg = u_A.sum(1)
        outdeg[outdeg == 0] = 1
        A_in = (u_A / indeg).T           # row v: sources u, / indeg(v)
        A_out = (u_A.T / outdeg).T       # row u: targets v, / outdeg(u)
        alias = [int(np.where(node == i)[0][0]) for i in s]
        out.append((node, A_in, A_out, alias))
    return out


def naive_srgnn_process_seqs(seqs):
    """SR-GNN ``process_seqs``: prefixes longest first, targets s[-1], s[-2], ..."""
    out_seqs, labs, ids = [], [], []
    for id, seq in zip(range(len(seqs)), seqs):
        for i in range(1, len(seq)):
            tar = seq[-i]
            labs += [tar]
            out_seqs += [seq[:-i]]
            ids += [id]
    return out_seqs, labs, ids


# ---------------------------------------------------------------- GCE-GNN
def naive_gcegnn_build_graph(seqs, num, epsilon=3, sample_num=12):
    """GCE-GNN ``build_graph.py``: returns (adj, weight), lists per item."""
    relation = []
    adj1 = [dict() for _ in range(num)]
    adj = [[] for _ in range(num)]
    for i in range(len(seqs)):
        data = seqs[i]
        for k in range(1, epsilon + 1):
            for j in range(len(data) - k):
                relation.append([data[j], data[j + k]])
                relation.append([data[j + k], data[j]])
    for tup in relation:
        if tup[1] in adj1[tup[0]].keys():
            adj1[tup[0]][tup[1]] += 1
        else:
            adj1[tup[0]][tup[1]] = 1
    weight = [[] for _ in range(num)]
    for t in range(num):
        x = [v for v in sorted(adj1[t].items(), reverse=True, key=lambda x: x[1])]
        adj[t] = [v[0] for v in x]
        weight[t] = [v[1] for v in x]
    for i in range(num):
        adj[i] = adj[i][:sample_num]
        weight[i] = weight[i][:sample_num]
    return adj, weight


# --------------------------------------------------------------- TiSASRec
def naive_tisasrec_rescale(time_list):
    """``cleanAndsort``'s per-user rescaling of a time-sorted list."""
    if not time_list:
        return []
    time_diff = set()
    for i in range(len(time_list) - 1):
        if time_list[i + 1] - time_list[i] != 0:
            time_diff.add(time_list[i + 1] - time_list[i])
    if len(time_diff) == 0:
        time_scale = 1
    else:
        time_scale = min(time_diff)
    time_min = min(time_list)
    return [int(round((x - time_min) / time_scale) + 1) for x in time_list]


def naive_tisasrec_compute_repos(time_seq, time_span):
    size = time_seq.shape[0]
    time_matrix = np.zeros([size, size], dtype=np.int32)
    for i in range(size):
        for j in range(size):
            span = abs(time_seq[i] - time_seq[j])
            if span > time_span:
                time_matrix[i][j] = time_span
            else:
                time_matrix[i][j] = span
    return time_matrix


def naive_tisasrec_relation(time_lists, maxlen, time_span, drop_last=0):
    """Rescale each user's times, then ``Relation``'s left-padded matrices.

    ``drop_last[u]`` events are removed from the end after rescaling (the
    published pipeline rescales the full history, then builds matrices from
    ``user_train[u][:-1]``).
    """
    n = len(time_lists)
    drops = [drop_last] * n if np.ndim(drop_last) == 0 else list(drop_last)
    mats = np.zeros((n, maxlen, maxlen), dtype=np.int32)
    seqs = np.zeros((n, maxlen), dtype=np.int32)
    for u, tl in enumerate(time_lists):
        resc = naive_tisasrec_rescale([x for x in tl])
        if drops[u]:
            resc = resc[:-drops[u]]
        time_seq = np.zeros([maxlen], dtype=np.int32)
        idx = maxlen - 1
        for t in reversed(resc):
            time_seq[idx] = t
            idx -= 1
            if idx == -1:
                break
        seqs[u] = time_seq
        mats[u] = naive_tisasrec_compute_repos(time_seq, time_span)
    return mats, seqs


# ---------------------------------------------------------------- log -> CSR
def naive_sequences(user, item, time):
    """Group events by user (dense ids 0..max), each sorted by time, stable."""
    n_users = int(max(user)) + 1 if len(user) else 0
    per = [[] for _ in range(n_users)]
    for r in range(len(user)):
        per[int(user[r])].append((time[r], r))
    ptr = [0]
    rows = []
    for u in range(n_users):
        ev = sorted(per[u], key=lambda x: x[0])  # stable: ties keep input order
        rows += [r for _, r in ev]
        ptr.append(len(rows))
    rows = np.asarray(rows, dtype=np.int64)
    return np.asarray(ptr, dtype=np.int64), np.asarray(item)[rows], np.asarray(time)[rows]


# ==========================================================================
# data
# Slow references for stgkern.data.
# ==========================================================================

def naive_k_core(user, item, user_k, item_k):
    keep = [True] * len(user)
    changed = True
    while changed:
        changed = False
        uc, ic = {}, {}
        for k in range(len(user)):
            if keep[k]:
                uc[user[k]] = uc.get(user[k], 0) + 1
                ic[item[k]] = ic.get(item[k], 0) + 1
        for k in range(len(user)):
            if keep[k] and (uc[user[k]] < user_k or ic[item[k]] < item_k):
                keep[k] = False
                changed = True
    return np.array(keep, bool)


# ==========================================================================
# conv
# Dense / loop references for stgkern.conv.
# ==========================================================================

def naive_spmm(indptr, indices, X, w, reduce):
    n = len(indptr) - 1
    F = X.shape[1]
    out = np.zeros((n, F), dtype=np.float64)
    for i in range(n):
        ks = range(indptr[i], indptr[i + 1])
        if len(ks) == 0:
            continue
        msgs = np.array([(1.0 if w is None else float(w[k])) * X[indices[k]].astype(np.float64) for k in ks])
        if reduce == "sum":
            out[i] = msgs.sum(0)
        elif reduce == "mean":
            out[i] = msgs.mean(0)
        elif reduce == "max":
            out[i] = msgs.max(0)
        else:
            out[i] = msgs.min(0)
    return out


def naive_spmm_backward(indptr, indices, G, X, w, reduce, arg):
    n = len(indptr) - 1
    gX = np.zeros(X.shape, dtype=np.float64)
    gw = np.zeros(len(indices), dtype=np.float64)
    for i in range(n):
        deg = indptr[i + 1] - indptr[i]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            c = 1.0 if w is None else float(w[k])
            if reduce in ("sum", "mean"):
                m = G[i].astype(np.float64) / (deg if reduce == "mean" else 1)
            else:
                m = np.where(arg[i] == k, G[i], 0.0).astype(np.float64)
            gX[j] += c * m
            gw[k] = m @ X[j].astype(np.float64)
    return gX, gw


# ==========================================================================
# edge
# Slow, obviously-correct references for the edge ops (loops / dense NumPy).
# ==========================================================================

def naive_edge_list(indptr, indices):
    """(dst, src) per CSR edge, as Python ints."""
    return [(i, int(indices[k])) for i in range(len(indptr) - 1) for k in range(indptr[i], indptr[i + 1])]


def naive_sddmm(indptr, indices, X, Y, op="dot"):
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    rows = []
    for i, j in naive_edge_list(indptr, indices):
        x, y = X[i], Y[j]
        if op == "dot":
            rows.append(x @ y)
        elif op == "cosine":
            nx, ny = np.sqrt(x @ x), np.sqrt(y @ y)
            rows.append(0.0 if nx == 0 or ny == 0 else (x @ y) / (nx * ny))
        elif op == "add":
            rows.append(x + y)
        elif op == "sub":
            rows.append(x - y)
        elif op == "mul":
            rows.append(x * y)
    F = X.shape[1]
    if op in ("dot", "cosine"):
        return np.array(rows, dtype=np.float64).reshape(-1)
    return np.array(rows, dtype=np.float64).reshape(-1, F)


def naive_sddmm_backward(indptr, indices, grad_out, X, Y, op="dot"):
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    G = np.asarray(grad_out, dtype=np.float64)
    gX, gY = np.zeros_like(X), np.zeros_like(Y)
    for k, (i, j) in enumerate(naive_edge_list(indptr, indices)):
        x, y, g = X[i], Y[j], G[k]
        if op == "dot":
            gX[i] += g * y
            gY[j] += g * x
        elif op == "cosine":
            nx, ny = np.sqrt(x @ x), np.sqrt(y @ y)
            if nx == 0 or ny == 0:
                continue
            c = (x @ y) / (nx * ny)
            gX[i] += g * (y / (nx * ny) - c * x / nx**2)
            gY[j] += g * (x / (nx * ny) - c * y / ny**2)
        elif op == "add":
            gX[i] += g
            gY[j] += g
        elif op == "sub":
            gX[i] += g
            gY[j] -= g
        elif op == "mul":
            gX[i] += g * y
            gY[j] += g * x
    return gX, gY


def naive_edge_softmax(indptr, scores):
    S = np.asarray(scores, dtype=np.float64)
    out = np.zeros_like(S)
    for i in range(len(indptr) - 1):
        a, b = indptr[i], indptr[i + 1]
        if a == b:
            continue
        seg = S[a:b]
        e = np.exp(seg - seg.max(axis=0))
        out[a:b] = e / e.sum(axis=0)
    return out


def naive_edge_softmax_backward(indptr, grad_out, out):
    G = np.asarray(grad_out, dtype=np.float64)
    O = np.asarray(out, dtype=np.float64)
    res = np.zeros_like(O)
    for i in range(len(indptr) - 1):
        a, b = indptr[i], indptr[i + 1]
        res[a:b] = O[a:b] * (G[a:b] - (G[a:b] * O[a:b]).sum(axis=0))
    return res


def naive_dense_adjacency(indptr, indices, n, weight=None):
    """Dense A with A[i, j] = weight of edge j -> i (1 when None)."""
    A = np.zeros((n, n))
    for k, (i, j) in enumerate(naive_edge_list(indptr, indices)):
        A[i, j] += 1.0 if weight is None else float(weight[k])
    return A


def naive_common_neighbor_fusion(indptr, indices, X, edge_weight=None):
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    A = naive_dense_adjacency(indptr, indices, n, edge_weight)
    rows = [(A[i] * A[j]) @ X for i, j in naive_edge_list(indptr, indices)]
    return np.array(rows, dtype=np.float64).reshape(-1, X.shape[1])


def naive_common_neighbor_fusion_backward(indptr, indices, grad_out, X, edge_weight=None):
    """Gradients by direct differentiation of the dense formula."""
    X = np.asarray(X, dtype=np.float64)
    G = np.asarray(grad_out, dtype=np.float64)
    n = X.shape[0]
    A = naive_dense_adjacency(indptr, indices, n, edge_weight)
    edges = naive_edge_list(indptr, indices)
    gX = np.zeros_like(X)
    gA = np.zeros((n, n))
    for k, (i, j) in enumerate(edges):
        gX += np.outer(A[i] * A[j], G[k])
        d = X @ G[k]                      # d[m] = grad_out[k] . X[m]
        gA[i] += A[j] * d
        gA[j] += A[i] * d
    gw = None if edge_weight is None else np.array([gA[i, j] for i, j in edges])
    return gX, gw


def naive_random_csr(rng, n_dst, n_src, p=0.3, loops=True):
    """Random CSR (indptr int64, indices int64) with sorted, unique rows."""
    indptr = [0]
    indices = []
    for i in range(n_dst):
        row = [j for j in range(n_src) if rng.random() < p and (loops or j != i)]
        indices.extend(row)
        indptr.append(len(indices))
    return np.array(indptr, dtype=np.int64), np.array(indices, dtype=np.int64)


# ==========================================================================
# readout
# Slow, obviously-correct references for readout, top-k and metrics.
# ==========================================================================

def naive_segment_reduce(X, ptr, reduce):
    """Loops in float64; returns (out, arg) with arg shaped like out (or None)."""
    X = np.asarray(X, dtype=np.float64)
    flat = X.ndim == 1
    X2 = X.reshape(len(X), 1) if flat else X
    n_seg = len(ptr) - 1
    out = np.zeros((n_seg, X2.shape[1]))
    arg = np.full((n_seg, X2.shape[1]), -1, dtype=np.int64)
    for s in range(n_seg):
        a, b = int(ptr[s]), int(ptr[s + 1])
        for f in range(X2.shape[1]):
            if b == a:
                continue
            col = [X2[r, f] for r in range(a, b)]
            if reduce == "sum":
                out[s, f] = math.fsum(col)
            elif reduce == "mean":
                out[s, f] = math.fsum(col) / (b - a)
            elif reduce == "max":
                nan_rows = [r for r in range(a, b) if np.isnan(X2[r, f])]
                best = nan_rows[0] if nan_rows else a       # NumPy's max: NaN anywhere wins
                for r in range(a, b):
                    if not nan_rows and X2[r, f] > X2[best, f]:
                        best = r
                out[s, f], arg[s, f] = X2[best, f], best
            elif reduce == "last":
                out[s, f], arg[s, f] = X2[b - 1, f], b - 1
    if flat:
        out, arg = out.reshape(-1), arg.reshape(-1)
    return out, (arg if reduce in ("max", "last") else None)


def naive_segment_reduce_backward(grad_out, X_shape, ptr, reduce, arg=None):
    g = np.asarray(grad_out, dtype=np.float64)
    g = g.reshape(len(ptr) - 1, 1) if g.ndim == 1 else g
    grad = np.zeros((X_shape[0], g.shape[1]))
    for s in range(len(ptr) - 1):
        a, b = int(ptr[s]), int(ptr[s + 1])
        for f in range(g.shape[1]):
            if reduce == "sum":
                for r in range(a, b):
                    grad[r, f] += g[s, f]
            elif reduce == "mean":
                for r in range(a, b):
                    grad[r, f] += g[s, f] / (b - a)
            elif b > a:
                r = (b - 1) if reduce == "last" else int(np.asarray(arg).reshape(g.shape)[s, f])
                grad[r, f] += g[s, f]
    return grad.reshape(X_shape)


def naive_topk(Q, items, k, excluded_rows=None):
    """Full score matrix in float64 + stable argsort of -scores per row.

    ``excluded_rows``: list of sets of excluded items per row (or None).
    """
    S = np.asarray(Q, dtype=np.float64) @ np.asarray(items, dtype=np.float64).T
    m = S.shape[0]
    idx = np.full((m, k), -1, dtype=np.int64)
    sc = np.full((m, k), -np.inf)
    for r in range(m):
        cand = [c for c in range(S.shape[1]) if not excluded_rows or c not in excluded_rows[r]]
        cand = np.array(cand, dtype=np.int64)
        order = cand[np.argsort(-S[r, cand], kind="stable")][:k]
        idx[r, :len(order)] = order
        sc[r, :len(order)] = S[r, order]
    return idx, sc


def naive_ranking_metrics(topk_idx, relevant, k):
    """Per-row loops; ``relevant`` is a list of sets. Returns a dict of means
    over rows with a non-empty relevant set."""
    hit, rec, prec, ndcg, mrr = [], [], [], [], []
    for r, rel in enumerate(relevant):
        if not rel:
            continue
        lst = list(topk_idx[r][:k])
        hits = [i for i, c in enumerate(lst) if c in rel]
        hit.append(1.0 if hits else 0.0)
        rec.append(len(hits) / len(rel))
        prec.append(len(hits) / k)
        dcg = sum(1.0 / math.log2(i + 2) for i in hits)
        idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(rel), k)))
        ndcg.append(dcg / idcg)
        mrr.append(1.0 / (hits[0] + 1) if hits else 0.0)
    mean = (lambda v: float(np.mean(v)) if v else float("nan"))
    return {"hit": mean(hit), "recall": mean(rec), "precision": mean(prec),
            "ndcg": mean(ndcg), "mrr": mean(mrr)}


def naive_rank_against_negatives(target_scores, negative_scores):
    """Pessimistic ties: every negative scoring >= the target ranks above it."""
    out = []
    for t, negs in zip(target_scores, negative_scores):
        out.append(sum(1 for v in negs if v >= t))
    return np.array(out, dtype=np.int64)


def naive_classification(y_true, y_pred, n_classes):
    """Per-class precision, recall, f1 by counting."""
    p, r, f = [], [], []
    for c in range(n_classes):
        tp = sum(1 for a, b in zip(y_true, y_pred) if a == c and b == c)
        npred = sum(1 for b in y_pred if b == c)
        ntrue = sum(1 for a in y_true if a == c)
        pc = tp / npred if npred else 0.0
        rc = tp / ntrue if ntrue else 0.0
        p.append(pc)
        r.append(rc)
        f.append(2 * pc * rc / (pc + rc) if pc + rc else 0.0)
    return np.array(p), np.array(r), np.array(f)


# ==========================================================================
# cuda
# Slow references for the GPU-kernel emulation tests (tests/test_cuda.py).
#
# The generic row gather-reduce that spmm and message_passing share on the GPU:
#
#     out[i, f] = REDUCE_{k in row i} X[indices[k], f] (op) E(k, f)
#
# E is None, (nnz,) / (nnz, 1) (broadcast) or (nnz, F); op "mul" or "add";
# reduce sum, mean, max, min (arg = winning edge id, lowest on ties, -1 empty).
# ==========================================================================

def _edge_values(E, nnz, F, dtype):
    if E is None:
        return None
    E = np.asarray(E, dtype=np.float64)
    return np.broadcast_to(E.reshape(nnz, -1), (nnz, F))


def naive_gather_reduce(indptr, indices, X, E, op, reduce):
    n, F = len(indptr) - 1, X.shape[1]
    Ev = _edge_values(E, len(indices), F, X.dtype)
    out = np.zeros((n, F))
    arg = np.full((n, F), -1, np.int64)
    for i in range(n):
        ks = range(indptr[i], indptr[i + 1])
        for f in range(F):
            msgs = []
            for k in ks:
                x = float(X[indices[k], f])
                m = x if Ev is None else (x * Ev[k, f] if op == "mul" else x + Ev[k, f])
                msgs.append((m, k))
            if not msgs:
                continue
            if reduce in ("sum", "mean"):
                out[i, f] = sum(m for m, _ in msgs) / (len(msgs) if reduce == "mean" else 1)
            else:
                nans = [mk for mk in msgs if mk[0] != mk[0]]
                if nans:                    # NumPy's max/min: NaN anywhere is the result (its first edge)
                    out[i, f], arg[i, f] = nans[0]
                    continue
                best = msgs[0]
                for m, k in msgs[1:]:
                    if (m > best[0]) if reduce == "max" else (m < best[0]):
                        best = (m, k)
                out[i, f], arg[i, f] = best
    return out, (arg if reduce in ("max", "min") else None)


def naive_gather_reduce_backward(indptr, indices, grad_out, X, E, op, reduce, arg, n_src):
    """(grad_X (n_src, F), grad_E shaped like E or None)."""
    n, F = len(indptr) - 1, grad_out.shape[1]
    Ev = _edge_values(E, len(indices), F, X.dtype)
    gX = np.zeros((n_src, F))
    gE = np.zeros((len(indices), F))
    for i in range(n):
        deg = indptr[i + 1] - indptr[i]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            for f in range(F):
                c = grad_out[i, f]
                if reduce == "mean":
                    c /= deg
                if reduce in ("max", "min") and arg[i, f] != k:
                    c = 0.0
                dx = 1.0 if (Ev is None or op == "add") else Ev[k, f]
                de = 1.0 if op == "add" else X[j, f]
                gX[j, f] += c * dx
                gE[k, f] = c * de
    if E is None:
        return gX, None
    if np.ndim(E) == 1 or np.shape(E)[1] == 1:
        return gX, gE.sum(axis=1).reshape(np.shape(E))
    return gX, gE


# ==========================================================================
# message_passing
# Slow references for fused message_passing (plain loops, float64).
# ==========================================================================

def _edge_matrix(E, nnz, F):
    E = np.asarray(E, dtype=np.float64)
    E = E.reshape(nnz, 1) if E.ndim == 1 else E
    return np.broadcast_to(E, (nnz, F))


def naive_message_passing(indptr, indices, X, E, op, reduce):
    """(out (n, F) float64, arg (n, F) int64 or None); arg = lowest winning edge id, -1 empty."""
    n, F = len(indptr) - 1, X.shape[1]
    Ev = _edge_matrix(E, len(indices), F)
    out = np.zeros((n, F))
    arg = np.full((n, F), -1, np.int64)
    for i in range(n):
        for f in range(F):
            best = None
            total = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                x = float(X[indices[k], f])
                m = x * Ev[k, f] if op == "mul" else x + Ev[k, f]
                total += m
                if best is None or (m > best[0] if reduce == "max" else m < best[0]):
                    best = (m, k)
            deg = indptr[i + 1] - indptr[i]
            if reduce == "sum":
                out[i, f] = total
            elif reduce == "mean":
                out[i, f] = total / deg if deg else 0.0
            elif best is not None:
                out[i, f], arg[i, f] = best
    return out, (arg if reduce in ("max", "min") else None)


def naive_message_passing_backward(indptr, indices, grad_out, X, E, op, reduce, arg):
    """(grad_X (n_src, F), grad_E shaped like E), float64."""
    n, F = len(indptr) - 1, grad_out.shape[1]
    nnz = len(indices)
    Ev = _edge_matrix(E, nnz, F)
    gX = np.zeros(X.shape)
    gE = np.zeros((nnz, F))
    for i in range(n):
        deg = indptr[i + 1] - indptr[i]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            for f in range(F):
                c = float(grad_out[i, f])
                if reduce == "mean":
                    c /= deg
                if reduce in ("max", "min") and arg[i, f] != k:
                    c = 0.0
                gX[j, f] += c * (Ev[k, f] if op == "mul" else 1.0)
                gE[k, f] = c * (float(X[j, f]) if op == "mul" else 1.0)
    E = np.asarray(E)
    if E.ndim == 1 or E.shape[1] == 1:
        return gX, gE.sum(axis=1).reshape(E.shape)
    return gX, gE


# ==========================================================================
# graph_conv
# Slow, obviously-correct references for ``graph_conv`` (dense NumPy, float64).
#
# Sum/mean aggregation is a dense matrix A (A[i, j] accumulates w[k] for every
# edge k = j -> i, divided by the in-degree of i for mean); max/min loop over
# each row's edges, ties to the lowest edge id.
# ==========================================================================

def naive_gc_dense_adjacency(indptr, indices, n_src, w=None, mean=False):
    n = len(indptr) - 1
    A = np.zeros((n, n_src))
    for i in range(n):
        deg = indptr[i + 1] - indptr[i]
        for k in range(indptr[i], indptr[i + 1]):
            c = 1.0 if w is None else float(w[k])
            A[i, indices[k]] += c / deg if mean else c
    return A


def naive_gc_aggregate(indptr, indices, X, w, reduce):
    """``(agg, arg)``: agg (n, F) float64; arg winning edge id for max/min (-1 for empty rows)."""
    X = np.asarray(X, dtype=np.float64)
    n = len(indptr) - 1
    F = X.shape[1]
    if reduce in ("sum", "mean"):
        A = naive_gc_dense_adjacency(indptr, indices, X.shape[0], w, reduce == "mean")
        return A @ X, None
    agg = np.zeros((n, F))
    arg = np.full((n, F), -1, dtype=np.int64)
    for i in range(n):
        for f in range(F):
            best = None
            for k in range(indptr[i], indptr[i + 1]):
                v = (1.0 if w is None else float(w[k])) * X[indices[k], f]
                if best is None or (v > best if reduce == "max" else v < best):
                    best, arg[i, f] = v, k
            if best is not None:
                agg[i, f] = best
    return agg, arg


def naive_gc_activation(pre, activation):
    if activation is None:
        return pre.copy()
    if activation == "relu":
        return np.maximum(pre, 0.0)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-pre))
    if activation == "tanh":
        return np.tanh(pre)
    raise ValueError(activation)


def naive_gc_activation_grad(pre, activation):
    """dσ/dpre, elementwise."""
    if activation is None:
        return np.ones_like(pre)
    if activation == "relu":
        return (pre > 0).astype(np.float64)
    s = naive_gc_activation(pre, activation)
    return s * (1 - s) if activation == "sigmoid" else 1 - s * s


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def naive_stgconv(indptr, indices, X, W_self, W_neigh, bias, log_tau, dt, kind, normalize, eps=1e-6):
    """STGConv's output row by row in float64: ``X W_selfᵀ + Σ_{k into i} w_k (X W_neighᵀ)[src_k] / Z_i + b``
    with ``w_k = exp(-dt_k / τ[min(kind_k - 1, n_kinds - 1)])`` and ``Z_i = Σ w_k + eps`` (1 without
    ``normalize``)."""
    X, W_self, W_neigh, log_tau, dt = map(_f64, (X, W_self, W_neigh, log_tau, dt))
    tau = np.exp(log_tau)
    Yn = X @ W_neigh.T
    out = X @ W_self.T + (0.0 if bias is None else _f64(bias))
    for i in range(len(indptr) - 1):
        acc, z = np.zeros(Yn.shape[1]), 0.0
        for k in range(indptr[i], indptr[i + 1]):
            w = np.exp(-dt[k] / tau[min(int(kind[k]) - 1, len(tau) - 1)])
            acc += w * Yn[indices[k]]
            z += w
        out[i] += acc / (z + eps) if normalize else acc
    return out


def naive_graph_conv(indptr, indices, X, W_self, W_neigh=None, bias=None, w=None, reduce="sum",
                     activation=None, return_pre=False):
    X, W_self, W_neigh, bias, w = map(_f64, (X, W_self, W_neigh, bias, w))
    agg, _ = naive_gc_aggregate(indptr, indices, X, w, reduce)
    pre = X @ W_self + (agg if W_neigh is None else agg @ W_neigh)
    if bias is not None:
        pre = pre + bias
    out = naive_gc_activation(pre, activation)
    return (out, pre) if return_pre else out


def naive_graph_conv_backward(indptr, indices, grad_out, X, W_self, W_neigh=None, bias=None, w=None,
                              reduce="sum", activation=None):
    """``(grad_X, grad_W_self, grad_W_neigh, grad_bias, grad_w)`` in float64, None where the input was None."""
    grad_out, X, W_self, W_neigh, bias, w = map(_f64, (grad_out, X, W_self, W_neigh, bias, w))
    _, pre = naive_graph_conv(indptr, indices, X, W_self, W_neigh, bias, w, reduce, activation, return_pre=True)
    G = grad_out * naive_gc_activation_grad(pre, activation)
    agg, arg = naive_gc_aggregate(indptr, indices, X, w, reduce)
    G_agg = G if W_neigh is None else G @ W_neigh.T
    gX = G @ W_self.T
    gw = np.zeros(len(indices))
    n = len(indptr) - 1
    for i in range(n):
        deg = indptr[i + 1] - indptr[i]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            c = 1.0 if w is None else w[k]
            if reduce in ("sum", "mean"):
                m = G_agg[i] / (deg if reduce == "mean" else 1)
            else:
                m = np.where(arg[i] == k, G_agg[i], 0.0)
            gX[j] += c * m
            gw[k] = m @ X[j]
    return (gX, X.T @ G, None if W_neigh is None else agg.T @ G,
            None if bias is None else G.sum(axis=0), None if w is None else gw)


# ==========================================================================
# model baselines
# Slow, obviously-correct references for stgkern.model's baselines (plain loops).
# ==========================================================================

def naive_popularity_ranking(train_items, n_items, seen, k):
    """Items by training count descending, ties to the lower id, ``seen`` (a set) left out."""
    counts = np.bincount(np.asarray(train_items), minlength=n_items)
    order = sorted(range(n_items), key=lambda i: (-counts[i], i))
    out = [i for i in order if i not in seen][:k]
    return out + [-1] * (k - len(out))


def naive_markov_ranking(sequences, last_item, n_items, seen, k):
    """Successor counts of ``last_item`` over all consecutive pairs, popularity breaking ties."""
    succ = np.zeros(n_items)
    counts = np.zeros(n_items)
    for seq in sequences:
        for a, b in zip(seq[:-1], seq[1:]):
            if a == last_item:
                succ[b] += 1
        for a in seq:
            counts[a] += 1
    order = sorted(range(n_items), key=lambda i: (-succ[i], -counts[i], i))
    out = [i for i in order if i not in seen][:k]
    return out + [-1] * (k - len(out))


def _edge_term(X, idx, coef, k, c, f, op):
    """One edge's term for feature f in X's dtype: ``X[idx[k], f]`` times
    (op "mul") or plus (op "add") ``coef[c]`` / ``coef[c, f]``; the row
    alone without coef."""
    dt = X.dtype.type
    x = dt(X[idx[k], f])
    if coef is None:
        return x
    v = dt(coef[c] if coef.ndim == 1 else coef[c, f])
    return dt(v * x) if op == "mul" else dt(x + v)


def naive_pair_fold_row(X, idx, coef, s, e, op="mul"):
    """``Σ_{k in [s, e)} t_k`` with ``t_k = c_k·X[idx[k]]`` (op "mul") or
    ``X[idx[k]] + c_k`` (op "add"), ``c_k`` = ``coef[k]`` or ``coef[k, :]``,
    in the kernels' fixed order, one scalar at a time in X's dtype:
    ``o = t0 + t1`` for the first pair, ``o = o + (t0 + t1)`` for each next
    pair, ``o = o + t`` for a lone last edge (added to zero when it is the
    only one); without ``coef`` the terms are the plain rows.  Bit-exact
    target for the vector code."""
    dt = X.dtype.type
    F = X.shape[1]
    o = [dt(0)] * F

    def term(k, f):
        return _edge_term(X, idx, coef, k, k, f, op)

    k = s
    if e - s >= 2:
        o = [dt(term(k, f) + term(k + 1, f)) for f in range(F)]
        k += 2
    while k + 1 < e:
        o = [dt(o[f] + dt(term(k, f) + term(k + 1, f))) for f in range(F)]
        k += 2
    if k < e:
        o = [dt(o[f] + term(k, f)) for f in range(F)]
    return np.array(o, dtype=X.dtype)


def naive_arg_fold_row(X, idx, coef, s, e, pick="max", op="mul"):
    """Row winner per feature and its CSR position, one scalar at a time: the
    first edge's term, replaced by a strictly larger (smaller) one, or by a
    NaN while it is a number (so the lowest position wins ties and the first
    NaN wins outright, NumPy's rule); 0 and -1 for an empty row.  Terms as in
    :func:`naive_pair_fold_row`."""
    F = X.shape[1]
    if e == s:
        return np.zeros(F, X.dtype), np.full(F, -1, np.int64)

    def term(k, f):
        return _edge_term(X, idx, coef, k, k, f, op)

    o = [term(s, f) for f in range(F)]
    a = [s] * F
    for k in range(s + 1, e):
        for f in range(F):
            v = term(k, f)
            if o[f] == o[f] and (v != v or ((v > o[f]) if pick == "max" else (v < o[f]))):
                o[f], a[f] = v, k
    return np.array(o, X.dtype), np.array(a, np.int64)


def naive_won_row(o, X, idx, coef, cidx, arg, s, e):
    """``o`` plus, edge by edge in order, ``coef(cidx[t])·X[idx[t], f]`` for
    the features where ``arg[idx[t], f] == cidx[t]`` (a max/min backward over
    the transpose), one scalar at a time in X's dtype."""
    dt = X.dtype.type
    o = [dt(v) for v in o]
    for t in range(s, e):
        for f in range(X.shape[1]):
            if arg[idx[t], f] == cidx[t]:
                o[f] = dt(o[f] + _edge_term(X, idx, coef, t, cidx[t], f, "mul"))
    return np.array(o, X.dtype)


# ---------------------------------------------------------------- full-catalogue cross-entropy
def naive_score_cross_entropy(Q, items, target, bias=None, grad_loss=None):
    """Per-row loss ``logsumexp(z_r) - z_{r,t_r}`` with ``z = Q items^T + bias`` in float64, and
    (with ``grad_loss``) the gradients of ``Σ g_r loss_r`` for Q, items and bias."""
    Q64, E64 = np.asarray(Q, np.float64), np.asarray(items, np.float64)
    m = Q64.shape[0]
    Z = Q64 @ E64.T
    if bias is not None:
        Z = Z + np.asarray(bias, np.float64)
    loss = np.empty(m)
    P = np.zeros_like(Z)
    for r in range(m):
        mx = Z[r].max()
        lse = mx + np.log(np.exp(Z[r] - mx).sum())
        loss[r] = lse - Z[r, target[r]]
        P[r] = np.exp(Z[r] - lse)
        P[r, target[r]] -= 1.0
    if grad_loss is None:
        return loss
    P *= np.asarray(grad_loss, np.float64)[:, None]
    return loss, P @ E64, P.T @ Q64, P.sum(0)


# ==========================================================================
# online (stgkern.online)
# ==========================================================================

def naive_online_retained(user, time, category, window, horizon, category_window):
    """Which events a user's online state must hold, from the whole (user, time)-sorted log:
    rows whose event a future event can take as an in-neighbour (within the horizon of the
    user's latest event, and among the last ``window`` events or the last ``category_window``
    of its category inside the horizon), the last two events, every in-neighbour of those
    live events, and the latest event's in-neighbours and theirs.  Returns a sorted row list."""
    perm, edges = naive_window_graph(user, time, category, window=window, horizon=horizon,
                                     category_window=category_window)
    assert np.array_equal(perm, np.arange(len(user)))
    sources = {}
    for dst, src, *_ in edges:
        sources.setdefault(dst, []).append(src)
    keep = set()
    n = len(user)
    start = 0
    while start < n:
        end = start
        while end < n and user[end] == user[start]:
            end += 1
        latest = time[end - 1]
        live, per_cat = [], {}
        for p, j in enumerate(range(end - 1, start - 1, -1)):
            inside = horizon is None or latest - time[j] <= horizon
            in_cat = inside and per_cat.get(category[j], 0) < category_window
            if in_cat:
                per_cat[category[j]] = per_cat.get(category[j], 0) + 1
            if inside and (p < window or in_cat):
                live.append(j)
        keep.update(live)
        keep.update(range(max(start, end - 2), end))
        for j in live:
            keep.update(sources.get(j, []))
        for q in sources.get(end - 1, []):
            keep.add(q)
            keep.update(sources.get(q, []))
        start = end
    return sorted(keep)


def naive_sampled_softmax(states, v_pos, b_pos, v_neg, b_neg, y, neg):
    """Mean over rows of -log softmax([pos, negatives without row r's hits])[0], and its
    gradients (states, v_pos, b_pos, v_neg, b_neg), row by row in float64."""
    S, Vp, bp, Vn, bn = (np.asarray(a, np.float64) for a in (states, v_pos, b_pos, v_neg, b_neg))
    B = S.shape[0]
    g = [np.zeros_like(a) for a in (S, Vp, bp, Vn, bn)]
    loss = 0.0
    for r in range(B):
        cols = [j for j in range(len(neg)) if neg[j] != y[r]]
        logits = [S[r] @ Vp[r] + bp[r]] + [S[r] @ Vn[j] + bn[j] for j in cols]
        m = max(logits)
        lse = m + np.log(np.exp(np.array(logits) - m).sum())
        p = np.exp(np.array(logits) - lse)
        loss += (lse - logits[0]) / B
        d = p.copy()
        d[0] -= 1.0
        d /= B
        g[0][r] += d[0] * Vp[r]
        g[1][r] += d[0] * S[r]
        g[2][r] += d[0]
        for k, j in enumerate(cols, 1):
            g[0][r] += d[k] * Vn[j]
            g[3][j] += d[k] * S[r]
            g[4][j] += d[k]
    return loss, g


def naive_gru_gates(gi, gh, h):
    """torch.nn.GRUCell's update from its pre-activations (r, z, n order), in float64."""
    gi, gh, h = (np.asarray(a, np.float64) for a in (gi, gh, h))
    d = h.shape[1]
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))
    r = sig(gi[:, :d] + gh[:, :d])
    z = sig(gi[:, d:2 * d] + gh[:, d:2 * d])
    n = np.tanh(gi[:, 2 * d:] + r * gh[:, 2 * d:])
    return (1 - z) * n + z * h


def naive_session_pull(A, B, x):
    """``[A x, B x, A 1, B 1]`` with dense (N, N) matrices, in float64."""
    A, B, x = (np.asarray(a, np.float64) for a in (A, B, x))
    return np.hstack([A @ x, B @ x, A.sum(1, keepdims=True), B.sum(1, keepdims=True)])


def naive_attention_readout(h, Z, u, q, alias, ptr):
    """SR-GNN's soft-attention readout, one position at a time, in float64:
    ``glob[s] = Σ_{p in s} (q · σ(u[s] + Z[alias[p]])) h[alias[p]]``."""
    h, Z, u, q = (np.asarray(a, np.float64) for a in (h, Z, u, q))
    q = q.reshape(-1)
    glob = np.zeros_like(u)
    for s in range(len(ptr) - 1):
        for p in range(ptr[s], ptr[s + 1]):
            n = alias[p]
            a = q @ (1.0 / (1.0 + np.exp(-(u[s] + Z[n]))))
            glob[s] += a * h[n]
    return glob
