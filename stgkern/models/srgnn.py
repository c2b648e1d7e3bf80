r"""SR-GNN (Wu et al., "Session-based Recommendation with Graph Neural Networks", AAAI 2019).

For a session with item nodes ``h`` (embeddings), one propagation step is

.. math::
    a_\mathrm{in} = A_\mathrm{in} (h W_\mathrm{ein}^T + b_\mathrm{ein}) + b_\mathrm{iah}, \quad
    a_\mathrm{out} = A_\mathrm{out} (h W_\mathrm{eout}^T + b_\mathrm{eout}) + b_\mathrm{oah}

followed by a GRU-style gate on ``[a_in, a_out]`` and ``h``.  Per position
``p`` of the session, ``α_p = w_3^T σ(W_1 h_last + b_1 + W_2 h_p + b_2)``;
the session vector is ``W_t [Σ_p α_p h_p ; h_last]`` and item ``i`` scores
``s · e_i``.  ``A_in`` / ``A_out`` are the in-/out-degree normalised
session adjacencies (:func:`stgkern.session_graph`).

The parameters carry the published PyTorch code's names and shapes (a test
holds them to the published list), so its ``state_dict`` loads with the
embedding's padding row 0 dropped and its unused ``gnn.linear_edge_f``
ignored; the dense formulation in ``tests/naive_srgnn.py`` checks this one.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .. import torch as stgtorch
from .._train_step import gru_update
from .batch import SessionBatch, make_batch


class GatedSessionGNN(nn.Module):
    """SR-GNN's gated propagation over in- and out-edges (``step`` times, shared weights)."""

    def __init__(self, hidden_size, step=1):
        super().__init__()
        d = hidden_size
        self.step = step
        self.w_ih = nn.Parameter(torch.empty(3 * d, 2 * d))
        self.w_hh = nn.Parameter(torch.empty(3 * d, d))
        self.b_ih = nn.Parameter(torch.empty(3 * d))
        self.b_hh = nn.Parameter(torch.empty(3 * d))
        self.b_iah = nn.Parameter(torch.empty(d))
        self.b_oah = nn.Parameter(torch.empty(d))
        self.linear_edge_in = nn.Linear(d, d)
        self.linear_edge_out = nn.Linear(d, d)

    def cell(self, b: SessionBatch, h):
        a_in = stgtorch.spmm(b.graph, self.linear_edge_in(h), b.w_in.to(h.dtype)) + self.b_iah
        a_out = stgtorch.spmm(b.graph_t, self.linear_edge_out(h), b.w_out_t.to(h.dtype)) + self.b_oah
        gi = F.linear(torch.cat([a_in, a_out], 1), self.w_ih, self.b_ih)
        # torch's own arithmetic (not the fused kernel): the committed Diginetica runs stay reproducible
        return gru_update(gi, F.linear(h, self.w_hh, self.b_hh), h)

    def forward(self, b: SessionBatch, h):
        for _ in range(self.step):
            h = self.cell(b, h)
        return h


class SRGNN(nn.Module):
    """SR-GNN over a catalogue of ``n_items`` items (ids ``0 .. n_items - 1``).

    Parameters
    ----------
    n_items : int
    hidden_size : int
        Embedding and state width (published: 100).
    step : int
        Propagation steps (published: 1).
    nonhybrid : bool
        Use only the attention (global) vector, not ``[global; last]``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from stgkern.models import SRGNN, make_batch
    >>> m = SRGNN(10, hidden_size=8)
    >>> b = make_batch(np.array([0, 3, 5]), np.array([1, 2, 1, 4, 4]))
    >>> m(b).shape
    torch.Size([2, 10])
    """

    def __init__(self, n_items, hidden_size=100, step=1, nonhybrid=False):
        super().__init__()
        d = hidden_size
        self.n_items, self.hidden_size, self.nonhybrid = int(n_items), d, nonhybrid
        self.embedding = nn.Embedding(self.n_items, d)
        self.gnn = GatedSessionGNN(d, step)
        self.linear_one = nn.Linear(d, d)
        self.linear_two = nn.Linear(d, d)
        self.linear_three = nn.Linear(d, 1, bias=False)
        self.linear_transform = nn.Linear(2 * d, d)
        self.reset_parameters()

    def config(self):
        return {"model": "srgnn", "n_items": self.n_items, "hidden_size": self.hidden_size,
                "step": self.gnn.step, "nonhybrid": self.nonhybrid}

    def reset_parameters(self):
        """Every parameter uniform in ±1/√d, as published."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            w.data.uniform_(-stdv, stdv)

    def make_batch(self, ptr, items, rows=None, target=None):
        """The :class:`SessionBatch` of sequences ``rows`` (see :func:`make_batch`)."""
        return make_batch(ptr, items, rows, target)

    def session_vectors(self, b: SessionBatch):
        """The session representation of every sequence of the batch, ``(len(b), d)``."""
        h = self.gnn(b, self.embedding(b.node_item))
        hp = h[b.alias]                                   # per position
        ht = h[b.last]                                    # per session: its last position
        alpha = self.linear_three(torch.sigmoid(self.linear_one(ht)[b.seq] + self.linear_two(hp)))
        a = stgtorch.segment_reduce(alpha * hp, b.pos_ptr, "sum")
        if self.nonhybrid:
            return a
        return self.linear_transform(torch.cat([a, ht], 1))

    def item_vectors(self):
        return self.embedding.weight

    def forward(self, b: SessionBatch):
        """Scores of every item for every sequence, ``(len(b), n_items)``."""
        return self.session_vectors(b) @ self.item_vectors().T

    def loss(self, b: SessionBatch):
        """Mean cross-entropy of the next items ``b.target`` over the whole catalogue
        (:func:`stgkern.torch.score_cross_entropy`: the scores are never stored)."""
        return stgtorch.score_cross_entropy(self.session_vectors(b), self.item_vectors(), b.target)
