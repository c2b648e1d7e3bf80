"""GCE-GNN in its original dense formulation (the reference of tests/test_models.py).

As published (Wang et al., SIGIR 2020): every session is reversed (position 0
= last click) and right-padded; its nodes are ``np.unique`` of the padded
row; a dense ``adj`` holds the relation codes (1 self, 2 in, 3 out, 4 both,
built pair by pair as the published ``Data.__getitem__``); the session-level
aggregator scores every node pair and masks by code; the global aggregator
reads a fixed (n_items + 1, 12) neighbour table; the readout adds position
embeddings.  Item ids here are ``1..n`` with 0 as padding.
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def naive_gcegnn_layout(seqs, max_len=None):
    """The published ``Data.__getitem__`` for a batch: (alias, adj, items, mask, inputs)."""
    lens = [len(s) for s in seqs]
    max_len = max(lens) if max_len is None else max_len
    inputs = [list(reversed(s)) + [0] * (max_len - le) if le < max_len else list(reversed(s[-max_len:]))
              for s, le in zip(seqs, lens)]
    mask = [[1] * le + [0] * (max_len - le) if le < max_len else [1] * max_len for le in lens]
    alias_all, adj_all, items_all = [], [], []
    for u_input in inputs:
        node = np.unique(u_input)
        items = node.tolist() + (max_len - len(node)) * [0]
        adj = np.zeros((max_len, max_len))
        for i in np.arange(len(u_input) - 1):
            u = np.where(node == u_input[i])[0][0]
            adj[u][u] = 1
            if u_input[i + 1] == 0:
                break
            v = np.where(node == u_input[i + 1])[0][0]
            if u == v or adj[u][v] == 4:
                continue
            adj[v][v] = 1
            if adj[v][u] == 2:
                adj[u][v] = 4
                adj[v][u] = 4
            else:
                adj[u][v] = 2
                adj[v][u] = 3
        alias_all.append([np.where(node == i)[0][0] for i in u_input])
        adj_all.append(adj)
        items_all.append(items)
    T = torch.tensor
    return (T(np.array(alias_all), dtype=torch.int64), T(np.array(adj_all)), T(np.array(items_all), dtype=torch.int64),
            T(np.array(mask), dtype=torch.int64), T(np.array(inputs), dtype=torch.int64))


class DenseLocal(nn.Module):
    def __init__(self, dim, alpha):
        super().__init__()
        self.dim = dim
        for r in range(4):
            setattr(self, f"a_{r}", nn.Parameter(torch.empty(dim, 1)))
        self.bias = nn.Parameter(torch.empty(dim))
        self.leakyrelu = nn.LeakyReLU(alpha)

    def forward(self, h, adj):
        B, N = h.shape[0], h.shape[1]
        a_input = (h.repeat(1, 1, N).view(B, N * N, self.dim) * h.repeat(1, N, 1)).view(B, N, N, self.dim)
        es = [self.leakyrelu(torch.matmul(a_input, getattr(self, f"a_{r}"))).squeeze(-1).view(B, N, N)
              for r in range(4)]
        alpha = torch.full_like(es[0], -9e15)
        for code, e in zip((1, 2, 3, 4), es):
            alpha = torch.where(adj.eq(code), e, alpha)
        return torch.matmul(torch.softmax(alpha, dim=-1), h)


class DenseGlobal(nn.Module):
    def __init__(self, dim, dropout):
        super().__init__()
        self.dim, self.dropout = dim, dropout
        self.w_1 = nn.Parameter(torch.empty(dim + 1, dim))
        self.w_2 = nn.Parameter(torch.empty(dim, 1))
        self.w_3 = nn.Parameter(torch.empty(2 * dim, dim))
        self.bias = nn.Parameter(torch.empty(dim))

    def forward(self, self_vectors, neighbor_vector, neighbor_weight, extra_vector):
        B = self_vectors.shape[0]
        alpha = torch.matmul(torch.cat([extra_vector.unsqueeze(2).repeat(1, 1, neighbor_vector.shape[2], 1)
                                        * neighbor_vector, neighbor_weight.unsqueeze(-1)], -1), self.w_1)
        alpha = torch.matmul(F.leaky_relu(alpha, 0.2), self.w_2).squeeze(-1)
        alpha = torch.softmax(alpha, -1).unsqueeze(-1)
        nv = torch.sum(alpha * neighbor_vector, dim=-2)
        out = F.dropout(torch.cat([self_vectors, nv], -1), self.dropout, training=self.training)
        return torch.relu(torch.matmul(out, self.w_3).view(B, -1, self.dim))


class DenseGCEGNN(nn.Module):
    """GCE-GNN with ``hops`` global hops; ``adj_table``/``num_table``: (n_items + 1, S) neighbour ids
    (1-based) and counts."""

    def __init__(self, n_items, adj_table, num_table, hidden_size=100, alpha=0.2, hops=1):
        super().__init__()
        d = hidden_size
        self.dim, self.hops = d, hops
        self.adj_all = torch.as_tensor(adj_table, dtype=torch.int64)
        self.num = torch.as_tensor(num_table, dtype=torch.float64)
        self.sample_num = self.adj_all.shape[1]
        self.local_agg = DenseLocal(d, alpha)
        for r in range(hops):
            self.add_module(f"agg_gcn_{r}", DenseGlobal(d, 0.0))
        self.embedding = nn.Embedding(n_items + 1, d)
        self.pos_embedding = nn.Embedding(200, d)
        self.w_1 = nn.Parameter(torch.empty(2 * d, d))
        self.w_2 = nn.Parameter(torch.empty(d, 1))
        self.glu1 = nn.Linear(d, d)
        self.glu2 = nn.Linear(d, d, bias=False)
        self.linear_transform = nn.Linear(d, d, bias=False)

    @classmethod
    def from_sparse(cls, model):
        """The same weights and neighbours as a :class:`stgkern.models.GCEGNN` (every item must have
        neighbours there: the published table pads an item without any with item 0)."""
        nb = model.neighbors
        deg = np.diff(nb.indptr)
        S = int(deg.max())
        assert (deg == S).all(), "the reference needs the resampled table (every row the same length)"
        adj = np.zeros((model.n_items + 1, S), np.int64)
        num = np.zeros((model.n_items + 1, S))
        adj[1:] = nb.indices.reshape(-1, S) + 1
        num[1:] = nb.weight.reshape(-1, S)
        dense = cls(model.n_items, adj, num, model.hidden_size, model.local_agg.alpha,
                    model.hops).to(model.embedding.weight.dtype)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        emb = state.pop("embedding.weight")
        state["embedding.weight"] = torch.cat([torch.zeros(1, emb.shape[1], dtype=emb.dtype), emb])
        dense.load_state_dict(state)
        dense.num = dense.num.to(emb.dtype)
        return dense

    def node_states(self, items, adj, mask, inputs):
        B, L = inputs.shape
        S, d = self.sample_num, self.dim
        h = self.embedding(items)
        h_local = self.local_agg(h, adj.to(h.dtype))
        # the neighbour tree, level by level: every slot of a level is an entity of the next one
        level_items, level_weights = [items], []
        for _ in range(self.hops):
            flat = level_items[-1].reshape(-1)
            level_items.append(self.adj_all[flat].view(B, -1))
            level_weights.append(self.num[flat].view(B, -1))
        vectors = [self.embedding(i) for i in level_items]
        item_emb = self.embedding(inputs) * mask.to(h.dtype).unsqueeze(-1)
        s = (torch.sum(item_emb, 1) / torch.sum(mask.to(h.dtype), -1).unsqueeze(-1)).unsqueeze(-2)
        for r in range(self.hops):
            agg = getattr(self, f"agg_gcn_{r}")
            vectors = [agg(vectors[k], vectors[k + 1].view(B, -1, S, d), level_weights[k].view(B, -1, S),
                           s.repeat(1, vectors[k].shape[1], 1)).view(B, -1, d)
                       for k in range(self.hops - r)]
        return h_local + vectors[0]

    def session_vectors(self, alias, adj, items, mask, inputs):
        hidden = self.node_states(items, adj, mask, inputs)
        seq_hidden = torch.stack([hidden[i][alias[i]] for i in range(len(alias))])
        m = mask.to(seq_hidden.dtype).unsqueeze(-1)
        B, L = seq_hidden.shape[0], seq_hidden.shape[1]
        pos_emb = self.pos_embedding.weight[:L].unsqueeze(0).repeat(B, 1, 1)
        hs = (torch.sum(seq_hidden * m, -2) / torch.sum(m, 1)).unsqueeze(-2).repeat(1, L, 1)
        nh = torch.tanh(torch.matmul(torch.cat([pos_emb, seq_hidden], -1), self.w_1))
        nh = torch.sigmoid(self.glu1(nh) + self.glu2(hs))
        beta = torch.matmul(nh, self.w_2) * m
        return torch.sum(beta * seq_hidden, 1)

    def forward(self, alias, adj, items, mask, inputs):
        return self.session_vectors(alias, adj, items, mask, inputs) @ self.embedding.weight[1:].T


def dense_gce_inputs(seqs, max_len=None):
    return naive_gcegnn_layout([[i + 1 for i in s] for s in seqs], max_len)
