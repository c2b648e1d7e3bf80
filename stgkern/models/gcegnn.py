r"""GCE-GNN (Wang et al., "Global Context Enhanced Graph Neural Networks for Session-based
Recommendation", SIGIR 2020), on stgkern's kernels.

Two views of every item of a session are summed:

* **session level** -- over the session's item graph with four relation
  kinds (self, in, out, in-and-out), attention
  :math:`e_{ij} = \mathrm{LeakyReLU}(a_{r(ij)}^T (h_i \circ h_j))`
  softmaxed over each node's neighbours, :math:`h^l_i = \sum_j \alpha_{ij} h_j`
  (``sddmm`` "mul", ``edge_softmax``, ``spmm`` over the batch's block-diagonal
  relation graph);
* **global level** -- over the item's neighbours in the global item graph
  (:func:`stgkern.item_graph`, ε = 3, 12 neighbours), attention conditioned
  on the session (:math:`s` = mean embedding of its positions):
  :math:`\pi_{vk} = w_2^T \mathrm{LeakyReLU}(W_1^T [s \circ h_{n_k}; c_k])`,
  softmaxed over k, then :math:`h^g_v = \mathrm{ReLU}(W_3^T [h_v; \sum_k \pi_{vk} h_{n_k}])`
  (the same three kernels over a bipartite graph from the batch's nodes to
  the item table).  With ``hops`` = H > 1 (the published Diginetica setting
  is 2) the neighbours form a tree H levels deep -- every neighbour slot is
  its own entity, whose children are its item's neighbours -- and round
  ``r`` of H applies aggregator ``agg_gcn_r`` at levels ``0 .. H-1-r``,
  each level reading the level below as the previous round left it, as the
  published code does.

The session vector is a position-aware soft attention over the positions
(position 0 = the last click), and items are scored against the embedding
table.  Parameter names and shapes follow the published code, so its
weights load; ``tests/naive_gcegnn.py`` states the dense original and the
tests hold this one to it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import torch as stgtorch
from ..compat import item_graph, session_graph
from ..graph import Graph
from .batch import gather_rows, select

#: Relation kinds of the session graph (the published adjacency codes).
SELF, IN, OUT, BOTH = 1, 2, 3, 4


# ---------------------------------------------------------------- the global graph
@dataclass
class GlobalNeighbors:
    """Each item's global neighbours as CSR (``indptr``, ``indices``) with their pair counts."""
    indptr: np.ndarray
    indices: np.ndarray
    weight: np.ndarray

    @property
    def n_items(self):
        return len(self.indptr) - 1


def global_neighbors(ptr, items, n_items, epsilon=3, top=12, sample=12, seed=0, resample=True):
    """GCE-GNN's neighbour table from training sequences.

    :func:`stgkern.item_graph` keeps each item's ``top`` most frequent
    neighbours within ``epsilon`` steps.  With ``resample`` (the published
    ``handle_adj``), every item with neighbours gets exactly ``sample`` of
    them: drawn without replacement when it has at least ``sample``, with
    replacement (seeded) otherwise, so duplicates weigh more in the
    attention; items without neighbours keep none.  Without ``resample`` the
    kept neighbours are used as they are.
    """
    g = item_graph(ptr, items, n_items=n_items, epsilon=epsilon, top=top)
    indptr, indices, count = g.indptr, g.indices.astype(np.int64), g.edata["count"].astype(np.float64)
    if not resample:
        return GlobalNeighbors(indptr, indices, count)
    rng = np.random.default_rng(seed)
    deg = np.diff(indptr)
    has = deg > 0
    k = np.where(has, sample, 0)
    new_ptr = np.zeros(n_items + 1, np.int64)
    np.cumsum(k, out=new_ptr[1:])
    pick = np.empty((int(has.sum()), sample), np.int64)
    d = deg[has]
    full = d >= sample
    # without replacement: a random permutation's first `sample` (of a row's `top` kept neighbours)
    if full.any():
        keys = rng.random((int(full.sum()), int(d[full].max())))
        keys[np.arange(keys.shape[1])[None, :] >= d[full][:, None]] = np.inf
        pick[full] = np.argsort(keys, axis=1, kind="stable")[:, :sample]
    if (~full).any():
        pick[~full] = (rng.random((int((~full).sum()), sample)) * d[~full][:, None]).astype(np.int64)
    src = (indptr[:-1][has][:, None] + pick).ravel()
    return GlobalNeighbors(new_ptr, indices[src], count[src])


# ---------------------------------------------------------------- a batch
@dataclass
class GlobalLevel:
    """One level of the global neighbour tree of a batch.

    Its **entities** are level 0's batch nodes, or one per neighbour slot of
    the level above; ``item`` and ``session`` give each entity's item and
    session, and ``entity_graph`` pulls from the next level's entities
    (columns: that level's entities, in slot order; ``slot`` maps its edges
    to the ``items_graph`` edges they repeat).  Entities of one
    session with one item see the same neighbours, so the first round's
    attention runs once per distinct (session, item) **row**: ``row`` maps
    entities to rows, ``items_graph`` pulls each row from its neighbours'
    item ids (columns: the item table) with pair counts ``weight``, and the
    attention's d x d product runs once per distinct (session, neighbour
    item) **pair** (``pair_graph``: sessions to items, ``pair`` maps each
    ``items_graph`` edge to its pair).  The results are exact; only the
    repeated work is gone.  Item ids here are positions in the batch's
    ``used`` items.
    """
    items_graph: Graph
    weight: torch.Tensor
    row: torch.Tensor
    pair_graph: Graph
    pair: torch.Tensor
    entity_graph: Graph
    slot: torch.Tensor
    item: torch.Tensor
    session: torch.Tensor


@dataclass
class GCEBatch:
    """A batch of sequences for :class:`GCEGNN`.

    ``graph``: the block-diagonal session graph, row ``i`` pulls from every
    ``j`` it has a relation with, ``kind`` the relation (0..3 for self, in,
    out, both); ``levels``: the global neighbour tree (:class:`GlobalLevel`,
    one per hop), whose item ids index ``used``; per position ``alias`` (node), ``rpos`` (distance from the
    session's last click), ``seq`` (session); ``pos_ptr``; ``node_seq``.
    """
    graph: Graph
    kind: torch.Tensor
    levels: list
    used: torch.Tensor
    node_item: torch.Tensor
    node_seq: torch.Tensor
    alias: torch.Tensor
    rpos: torch.Tensor
    seq: torch.Tensor
    pos_ptr: np.ndarray
    target: torch.Tensor | None = None

    def __len__(self):
        return len(self.pos_ptr) - 1


def relation_graph(g):
    """The four-relation session graph from :func:`stgkern.session_graph`'s ``g`` (edges u -> v).

    Every node gets a self edge; for each distinct click transition u -> v
    (u != v), v pulls from u as "in" and u from v as "out", "both" where
    the reverse transition exists too.  Returns ``(indptr, indices, kind)``
    with kind 0 self, 1 in, 2 out, 3 both (the published codes minus one).
    """
    n = g.n_nodes
    v = np.repeat(np.arange(n, dtype=np.int64), np.diff(g.indptr))
    u = g.indices.astype(np.int64)
    keep = u != v
    u, v = u[keep], v[keep]
    # (row, col, bit): bit 1 = col precedes row in a click (in), 2 = col follows row (out)
    rows = np.concatenate([v, u, np.arange(n)])
    cols = np.concatenate([u, v, np.arange(n)])
    bits = np.concatenate([np.full(len(u), 1), np.full(len(u), 2), np.zeros(n, np.int64)])
    key = rows * n + cols
    order = np.argsort(key, kind="stable")
    key, bits = key[order], bits[order]
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    merged = np.bitwise_or.reduceat(bits, starts) if len(starts) else bits[:0]
    ukey = key[starts]
    r, c = ukey // max(n, 1), ukey % max(n, 1)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
    return indptr, c, merged          # merged: 0 self, 1 in, 2 out, 3 both


def _distinct(session, item, n_items):
    """Distinct ``(session, item)`` pairs in key order: ``(sessions, items, inverse)``."""
    key = session * np.int64(n_items) + item
    uniq, inv = np.unique(key, return_inverse=True)
    return uniq // n_items, uniq % n_items, inv.reshape(-1)


def global_levels(neighbors: GlobalNeighbors, node_item, node_seq, hops, n_sessions):
    """The ``hops`` levels of the global neighbour tree over the nodes ``node_item`` (sessions ``node_seq``).

    Returns ``(levels, used)``: item ids in the levels index ``used``, the
    sorted distinct items the tree touches, so that the model reads one
    (len(used), d) slice of the item table (one gradient scatter into the
    table instead of one per kernel).
    """
    n = neighbors.n_items
    raw, item, sess = [], np.asarray(node_item, np.int64), np.asarray(node_seq, np.int64)
    for _ in range(hops):
        r_sess, r_item, row = _distinct(sess, item, n)
        gptr, gidx = gather_rows(neighbors.indptr, neighbors.indices, r_item)
        _, gw = gather_rows(neighbors.indptr, neighbors.weight, r_item)
        p_sess, p_item, pair = _distinct(np.repeat(r_sess, np.diff(gptr)), gidx, n)
        pptr = np.zeros(n_sessions + 1, np.int64)
        np.cumsum(np.bincount(p_sess, minlength=n_sessions), out=pptr[1:])
        # every entity's slots: its row's neighbour list, in order
        eptr, eidx = gather_rows(gptr, np.arange(len(gidx), dtype=np.int64), row)
        raw.append((gptr, gidx, gw, row, pptr, p_item, pair, eptr, eidx, item, sess))
        item, sess = gidx[eidx].astype(np.int64), np.repeat(sess, np.diff(eptr))
    used = np.unique(np.concatenate([np.asarray(node_item, np.int64)] + [r[1] for r in raw] + [r[9] for r in raw]))
    T = torch.from_numpy
    m = len(used)

    def local(ids):
        return np.searchsorted(used, ids).astype(np.int64)

    levels = [GlobalLevel(
        items_graph=Graph(gptr, local(gidx), m, check=False), weight=T(gw.astype(np.float32)), row=T(row),
        pair_graph=Graph(pptr, local(p_item), m, check=False, rows_sorted=True), pair=T(pair),
        entity_graph=Graph(eptr, np.arange(len(eidx), dtype=np.int64), len(eidx), check=False, rows_sorted=True),
        slot=T(eidx), item=T(local(item)), session=T(sess))
        for gptr, gidx, gw, row, pptr, p_item, pair, eptr, eidx, item, sess in raw]
    return levels, used


def make_gce_batch(ptr, items, neighbors: GlobalNeighbors, rows=None, target=None, hops=1):
    """The :class:`GCEBatch` of sequences ``rows`` of ``(ptr, items)`` (0-based ids), ``hops`` global levels."""
    ptr, items, lens, target = select(ptr, items, rows, target)
    g, node_item, alias = session_graph(ptr, items)
    indptr, indices, kind = relation_graph(g)
    n_nodes = g.n_nodes
    sess = Graph(indptr, indices, n_nodes, check=False, rows_sorted=True)
    node_seq = np.repeat(np.arange(len(lens), dtype=np.int64), np.diff(g.segment_ptr))
    seq = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    rpos = (ptr[1:][seq] - 1) - np.arange(len(items), dtype=np.int64)
    levels, used = global_levels(neighbors, node_item, node_seq, hops, len(lens))
    T = torch.from_numpy
    return GCEBatch(
        graph=sess, kind=T(kind.astype(np.int64)), levels=levels, used=T(used),
        node_item=T(node_item), node_seq=T(node_seq), alias=T(alias), rpos=T(rpos), seq=T(seq), pos_ptr=ptr,
        target=target)


# ---------------------------------------------------------------- the model
class LocalAggregator(nn.Module):
    """Session-level attention over the four relation kinds."""

    def __init__(self, dim, alpha):
        super().__init__()
        self.alpha = alpha
        for r in range(4):
            setattr(self, f"a_{r}", nn.Parameter(torch.empty(dim, 1)))
        self.bias = nn.Parameter(torch.empty(dim))        # published, unused

    def forward(self, b: GCEBatch, h):
        A = torch.cat([self.a_0, self.a_1, self.a_2, self.a_3], 1)            # (d, 4)
        e = (stgtorch.sddmm(b.graph, h, h, op="mul") @ A).gather(1, b.kind[:, None])[:, 0]
        att = stgtorch.edge_softmax(b.graph, F.leaky_relu(e, self.alpha))
        return stgtorch.spmm(b.graph, h, att)


class GlobalAggregator(nn.Module):
    """Session-aware attention over the global neighbours, then ``act(W_3^T [h; agg])``."""

    def __init__(self, dim, dropout, act=torch.relu):
        super().__init__()
        self.dropout, self.act = dropout, act
        self.w_1 = nn.Parameter(torch.empty(dim + 1, dim))
        self.w_2 = nn.Parameter(torch.empty(dim, 1))
        self.w_3 = nn.Parameter(torch.empty(2 * dim, dim))
        self.bias = nn.Parameter(torch.empty(dim))        # published, unused

    def forward(self, graph, weight, h, table, xw, rows=None):
        """``act(W_3^T [h; Σ_k π_k table[k]])`` for the rows of ``graph`` (pair counts ``weight``).

        ``xw`` is ``(s ∘ table[k]) W_1[:d]`` per edge of ``graph``; with
        ``rows`` the graph's rows are distinct entities and ``rows`` maps
        the entities ``h`` to them.
        """
        d = h.shape[1]
        pi = (F.leaky_relu(xw + weight.to(h.dtype)[:, None] * self.w_1[d], 0.2) @ self.w_2)[:, 0]
        att = stgtorch.edge_softmax(graph, pi)
        nv = stgtorch.spmm(graph, table, att)
        if rows is not None:
            nv = nv[rows]
        out = F.dropout(torch.cat([h, nv], 1), self.dropout, training=self.training)
        return self.act(out @ self.w_3)


class GCEGNN(nn.Module):
    """GCE-GNN over ``n_items`` items (ids ``0 .. n_items - 1``).

    Parameters
    ----------
    n_items : int
    neighbors : GlobalNeighbors
        From :func:`global_neighbors` on the training sequences.
    hidden_size : int
        Published: 100.
    hops : int
        Depth of the global neighbour tree (published ``n_iter``: 2 for
        Diginetica, 1 for Tmall and Nowplaying).  An entity whose item has
        no global neighbour aggregates nothing (zeros) where the published
        table would give it twelve copies of the padding row.
    dropout_gcn, dropout_local, dropout_global : float
        Published for Diginetica: 0.2, 0.0, 0.5.
    alpha : float
        LeakyReLU slope of the session-level attention (0.2).
    """

    def __init__(self, n_items, neighbors, hidden_size=100, hops=2, dropout_gcn=0.2, dropout_local=0.0,
                 dropout_global=0.5, alpha=0.2, max_positions=200):
        super().__init__()
        d = hidden_size
        if int(hops) < 1:
            raise ValueError(f"hops must be at least 1, got {hops}")
        self.n_items, self.hidden_size, self.hops = int(n_items), d, int(hops)
        self.neighbors = neighbors
        self.dropout_local, self.dropout_global = dropout_local, dropout_global
        self._cfg = {"hops": self.hops, "dropout_gcn": dropout_gcn, "dropout_local": dropout_local,
                     "dropout_global": dropout_global, "alpha": alpha, "max_positions": max_positions}
        self.local_agg = LocalAggregator(d, alpha)
        for r in range(self.hops):                  # the published names: agg_gcn_0, agg_gcn_1, ...
            self.add_module(f"agg_gcn_{r}", GlobalAggregator(d, dropout_gcn))
        self.embedding = nn.Embedding(self.n_items, d)
        self.pos_embedding = nn.Embedding(max_positions, d)
        self.w_1 = nn.Parameter(torch.empty(2 * d, d))
        self.w_2 = nn.Parameter(torch.empty(d, 1))
        self.glu1 = nn.Linear(d, d)
        self.glu2 = nn.Linear(d, d, bias=False)
        self.linear_transform = nn.Linear(d, d, bias=False)   # published, unused
        self.reset_parameters()

    def config(self):
        return {"model": "gcegnn", "n_items": self.n_items, "hidden_size": self.hidden_size, **self._cfg}

    def reset_parameters(self):
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            w.data.uniform_(-stdv, stdv)

    def make_batch(self, ptr, items, rows=None, target=None):
        return make_gce_batch(ptr, items, self.neighbors, rows, target, self.hops)

    def node_states(self, b: GCEBatch):
        if len(b.levels) != self.hops:
            raise ValueError(f"the batch has {len(b.levels)} global levels, the model {self.hops} hops: "
                             "build it with model.make_batch")
        # One gather from the item table per step: its backward fills a table-sized zero gradient
        # (17 MB on Diginetica, fresh pages each step) and adds it to the loss's, so a second gather
        # for the nodes cost ~13 ms a step; the nodes' items are among ``used`` (sorted).
        table = self.embedding.weight[b.used]           # the items this batch's tree touches
        h = table[torch.searchsorted(b.used, b.node_item)]
        h_local = self.local_agg(b, h)
        session = stgtorch.segment_reduce(h[b.alias], b.pos_ptr, "mean")      # mean embedding of the positions
        lv, d = b.levels, self.hidden_size
        vec = [h] + [table[level.item] for level in lv[1:]]                  # every level's entities
        for r in range(self.hops):
            agg = getattr(self, f"agg_gcn_{r}")
            w1 = agg.w_1[:d]
            if r == 0:      # round 0 reads the item table: once per distinct row and pair
                vec = [agg(level.items_graph, level.weight, vec[k], table,
                           (stgtorch.sddmm(level.pair_graph, session, table, op="mul") @ w1)[level.pair],
                           level.row)
                       for k, level in enumerate(lv)]
            else:           # later rounds read the level below as the previous round left it
                vec = [agg(lv[k].entity_graph, lv[k].weight[lv[k].slot], vec[k], vec[k + 1],
                           stgtorch.sddmm(lv[k].entity_graph, session[lv[k].session], vec[k + 1], op="mul") @ w1)
                       for k in range(self.hops - r)]
        h_global = vec[0]
        return (F.dropout(h_local, self.dropout_local, training=self.training)
                + F.dropout(h_global, self.dropout_global, training=self.training))

    def session_vectors(self, b: GCEBatch):
        """Position-aware soft attention over each session's positions, ``(len(b), d)``."""
        if len(b) and int(b.rpos.max()) >= self.pos_embedding.num_embeddings:
            raise ValueError(f"a session of {int(b.rpos.max()) + 1} positions exceeds the "
                             f"{self.pos_embedding.num_embeddings} position embeddings")
        hp = self.node_states(b)[b.alias]
        hs = stgtorch.segment_reduce(hp, b.pos_ptr, "mean")[b.seq]
        nh = torch.tanh(torch.cat([self.pos_embedding(b.rpos), hp], 1) @ self.w_1)
        nh = torch.sigmoid(self.glu1(nh) + self.glu2(hs))
        beta = nh @ self.w_2
        return stgtorch.segment_reduce(beta * hp, b.pos_ptr, "sum")

    def item_vectors(self):
        return self.embedding.weight

    def forward(self, b: GCEBatch):
        return self.session_vectors(b) @ self.item_vectors().T

    def loss(self, b: GCEBatch):
        return stgtorch.score_cross_entropy(self.session_vectors(b), self.item_vectors(), b.target)
