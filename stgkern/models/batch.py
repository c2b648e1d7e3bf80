"""A mini-batch of sessions as one block-diagonal session graph."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..compat import session_graph
from ..graph import Graph


@dataclass
class SessionBatch:
    """The tensors a session model needs for a batch of sequences.

    ``graph`` is :func:`stgkern.session_graph` of the batch (row ``v`` pulls
    from the ``u`` of every edge ``u -> v``, weight ``w_in = 1/indeg(v)``);
    ``graph_t`` its transpose with ``w_out_t = 1/outdeg(u)`` in the
    transpose's edge order, so ``spmm(graph_t, H, w_out_t)`` is SR-GNN's
    ``A_out @ H``.  ``alias[p]`` is the node of position ``p``,
    ``pos_ptr`` the CSR of positions per sequence, ``seq[p]`` the sequence
    of position ``p`` and ``last[s]`` the node of sequence ``s``'s last
    position.  ``w_out`` (graph's edge order) and ``w_in_t`` (the
    transpose's) are the same weights in the other order, what the
    backward of a fused pull over both directions walks.
    """
    graph: Graph
    graph_t: Graph
    node_item: torch.Tensor
    w_in: torch.Tensor
    w_out_t: torch.Tensor
    alias: torch.Tensor
    pos_ptr: np.ndarray
    seq: torch.Tensor
    last: torch.Tensor
    target: torch.Tensor | None = None
    w_out: torch.Tensor | None = None
    w_in_t: torch.Tensor | None = None

    def __len__(self):
        return len(self.pos_ptr) - 1


def gather_rows(ptr, values, rows):
    """CSR ``(ptr, values)`` restricted to ``rows`` (in that order): ``(new_ptr, new_values)``."""
    rows = np.asarray(rows, np.int64)
    starts = ptr[rows]
    lens = ptr[rows + 1] - starts
    new_ptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lens, out=new_ptr[1:])
    pos = np.arange(new_ptr[-1], dtype=np.int64) + np.repeat(starts - new_ptr[:-1], lens)
    return new_ptr, values[pos]


def select(ptr, items, rows=None, target=None):
    """Sequences ``rows`` of ``(ptr, items)`` and their targets, every one non-empty."""
    if rows is not None:
        ptr, items = gather_rows(ptr, items, rows)
        if target is not None:
            target = np.asarray(target)[rows]
    lens = np.diff(ptr)
    if lens.size and int(lens.min()) < 1:
        raise ValueError(f"sequence {int(np.argmin(lens))} of the batch is empty; every example needs >= 1 item")
    target = None if target is None else torch.from_numpy(np.ascontiguousarray(target, np.int64))
    return ptr, items, lens, target


def make_batch(ptr, items, rows=None, target=None, dtype=np.float32):
    """The :class:`SessionBatch` of sequences ``rows`` of the CSR ``(ptr, items)``.

    Parameters
    ----------
    ptr, items : int arrays
        Sequences of 0-based item ids (``items[ptr[s]:ptr[s+1]]``).
    rows : int array, optional
        Which sequences, in batch order (default all).
    target : int array, optional
        Next item of every sequence in ``(ptr, items)`` (indexed by ``rows`` too).
    """
    ptr, items, lens, target = select(ptr, items, rows, target)
    g, node_item, alias = session_graph(ptr, items, dtype=dtype)
    gt = g.transpose()
    T = torch.from_numpy
    eid = gt.edata["eid"]
    return SessionBatch(
        graph=g, graph_t=gt, node_item=T(node_item),
        w_in=T(g.edata["w_in"]), w_out_t=T(np.ascontiguousarray(g.edata["w_out"][eid])),
        alias=T(alias), pos_ptr=ptr, seq=T(np.repeat(np.arange(len(lens), dtype=np.int64), lens)),
        last=T(alias[ptr[1:] - 1]), target=target,
        w_out=T(np.ascontiguousarray(g.edata["w_out"])), w_in_t=T(np.ascontiguousarray(g.edata["w_in"][eid])))
