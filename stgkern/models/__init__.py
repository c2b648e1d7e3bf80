"""Published session-recommendation models on stgkern's kernels (PyTorch).

* :class:`SRGNN` -- SR-GNN (Wu et al., AAAI 2019): a gated graph network
  over each session's item graph (in- and out-adjacency), soft-attention
  readout, hybrid local + global session vector, scores against every item.
  Its graph arithmetic runs on :func:`stgkern.torch.spmm` over the batch's
  session graphs as one block-diagonal CSR, and the readout on
  :func:`stgkern.torch.segment_reduce`: no padded per-batch adjacency.
* :class:`GCEGNN` -- GCE-GNN (Wang et al., SIGIR 2020): session-level
  attention over four relation kinds (``sddmm``, ``edge_softmax``,
  ``spmm`` over the block-diagonal relation graph) plus session-aware
  attention over each item's neighbours in the global item graph
  (:func:`stgkern.item_graph`, the same kernels over a bipartite graph to
  the item table), position-aware readout.
* :func:`fit` / :func:`evaluate` -- the published protocol: every proper
  prefix of every training session is an example, Adam with step decay,
  the epoch with the best validation P@20 kept, P@20 (= HR@20) and MRR@20
  over the whole catalogue with nothing excluded.
* :func:`save` / :func:`load` -- a trained model and its configuration.

Names are loaded on first use: the command line imports
``stgkern.models.cli`` without torch, and the models import it when touched.
"""
from __future__ import annotations

import importlib

_API = {"SessionBatch": "batch", "make_batch": "batch", "SRGNN": "srgnn",
        "GCEGNN": "gcegnn", "GlobalNeighbors": "gcegnn", "global_neighbors": "gcegnn", "make_gce_batch": "gcegnn",
        **{n: "train" for n in ("FitResult", "evaluate", "fit", "load", "save", "session_examples",
                                "split_validation")}}
__all__ = list(_API)


def __getattr__(name):
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module 'stgkern.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
