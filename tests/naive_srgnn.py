"""SR-GNN in its original dense formulation: the reference and the speed peer.

The published code (Wu et al., AAAI 2019) pads every session of a batch to the
data set's longest, builds per-session dense ``[A_in | A_out]`` matrices in
Python (``naive_srgnn_get_slice``), propagates with batched dense matmuls,
attends over the padded positions under a mask and scores against
``embedding.weight[1:]`` (id 0 is padding).  This module re-states that
formulation with the same parameter names as :class:`stgkern.models.SRGNN`,
so weights move between the two (``from_sparse``): the tests check the
sparse model against it, and ``benchmarks/bench_srgnn.py`` times it.

Item ids here are the files' ``1..n`` (0 = padding); stgkern's are ``0..n-1``.
"""
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from naive import naive_srgnn_get_slice


class DenseGNN(nn.Module):
    def __init__(self, d, step=1):
        super().__init__()
        self.step = step
        self.w_ih = nn.Parameter(torch.empty(3 * d, 2 * d))
        self.w_hh = nn.Parameter(torch.empty(3 * d, d))
        self.b_ih = nn.Parameter(torch.empty(3 * d))
        self.b_hh = nn.Parameter(torch.empty(3 * d))
        self.b_iah = nn.Parameter(torch.empty(d))
        self.b_oah = nn.Parameter(torch.empty(d))
        self.linear_edge_in = nn.Linear(d, d)
        self.linear_edge_out = nn.Linear(d, d)

    def cell(self, A, hidden):
        n = A.shape[1]
        input_in = torch.matmul(A[:, :, :n], self.linear_edge_in(hidden)) + self.b_iah
        input_out = torch.matmul(A[:, :, n:2 * n], self.linear_edge_out(hidden)) + self.b_oah
        gi = F.linear(torch.cat([input_in, input_out], 2), self.w_ih, self.b_ih)
        gh = F.linear(hidden, self.w_hh, self.b_hh)
        i_r, i_i, i_n = gi.chunk(3, 2)
        h_r, h_i, h_n = gh.chunk(3, 2)
        resetgate = torch.sigmoid(i_r + h_r)
        inputgate = torch.sigmoid(i_i + h_i)
        newgate = torch.tanh(i_n + resetgate * h_n)
        return newgate + inputgate * (hidden - newgate)

    def forward(self, A, hidden):
        for _ in range(self.step):
            hidden = self.cell(A, hidden)
        return hidden


class DenseSRGNN(nn.Module):
    """SR-GNN over ``n_items`` items (ids 1..n_items, 0 = padding), dense per-batch tensors."""

    def __init__(self, n_items, hidden_size=100, step=1, nonhybrid=False):
        super().__init__()
        d = hidden_size
        self.hidden_size, self.nonhybrid = d, nonhybrid
        self.embedding = nn.Embedding(n_items + 1, d)
        self.gnn = DenseGNN(d, step)
        self.linear_one = nn.Linear(d, d)
        self.linear_two = nn.Linear(d, d)
        self.linear_three = nn.Linear(d, 1, bias=False)
        self.linear_transform = nn.Linear(2 * d, d)
        stdv = 1.0 / math.sqrt(d)
        for w in self.parameters():
            w.data.uniform_(-stdv, stdv)

    @classmethod
    def from_sparse(cls, model):
        """The same weights as a :class:`stgkern.models.SRGNN` (embedding row 0 = zeros)."""
        dense = cls(model.n_items, model.hidden_size, model.gnn.step, model.nonhybrid).to(
            model.embedding.weight.dtype)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        emb = state.pop("embedding.weight")
        state["embedding.weight"] = torch.cat([torch.zeros(1, emb.shape[1], dtype=emb.dtype), emb])
        dense.load_state_dict(state)
        return dense

    def session_vectors(self, alias_inputs, A, items, mask):
        hidden = self.gnn(A, self.embedding(items))
        seq_hidden = torch.stack([hidden[i][alias_inputs[i]] for i in range(len(alias_inputs))])
        ht = seq_hidden[torch.arange(mask.shape[0]), torch.sum(mask, 1) - 1]
        q1 = self.linear_one(ht).view(ht.shape[0], 1, ht.shape[1])
        q2 = self.linear_two(seq_hidden)
        alpha = self.linear_three(torch.sigmoid(q1 + q2))
        a = torch.sum(alpha * seq_hidden * mask.view(mask.shape[0], -1, 1).to(seq_hidden.dtype), 1)
        if not self.nonhybrid:
            a = self.linear_transform(torch.cat([a, ht], 1))
        return a

    def forward(self, alias_inputs, A, items, mask):
        return self.session_vectors(alias_inputs, A, items, mask) @ self.embedding.weight[1:].T


def dense_inputs(seqs, len_max=None, dtype=torch.float32):
    """``naive_srgnn_get_slice`` of sequences of 0-based ids, as the tensors the model takes."""
    alias, A, items, mask = naive_srgnn_get_slice([[i + 1 for i in s] for s in seqs], len_max)
    return (torch.from_numpy(alias), torch.from_numpy(A).to(dtype), torch.from_numpy(items),
            torch.from_numpy(mask))


def dense_loss(model, seqs, target, len_max=None):
    """The published training loss: cross-entropy of ``scores`` against ``targets - 1``."""
    inp = dense_inputs(seqs, len_max, model.embedding.weight.dtype)
    return F.cross_entropy(model(*inp), torch.as_tensor(np.asarray(target), dtype=torch.int64))
