"""Published session-recommendation models on stgkern's kernels (PyTorch).

* :class:`SRGNN` -- SR-GNN (Wu et al., AAAI 2019): a gated graph network
  over each session's item graph (in- and out-adjacency), soft-attention
  readout, hybrid local + global session vector, scores against every item.
  Its graph arithmetic runs on :func:`stgkern.torch.spmm` over the batch's
  session graphs as one block-diagonal CSR, and the readout on
  :func:`stgkern.torch.segment_reduce`: no padded per-batch adjacency.
* :func:`fit` / :func:`evaluate` -- the published protocol: every proper
  prefix of every training session is an example, Adam with step decay,
  the epoch with the best validation P@20 kept, P@20 (= HR@20) and MRR@20
  over the whole catalogue with nothing excluded.
* :func:`save` / :func:`load` -- a trained model and its configuration.

Only importing this package imports torch.
"""
from __future__ import annotations

from .batch import SessionBatch, make_batch
from .srgnn import SRGNN
from .train import (FitResult, evaluate, fit, load, save, session_examples, split_validation)

__all__ = ["SRGNN", "SessionBatch", "make_batch", "FitResult", "fit", "evaluate", "save", "load",
           "session_examples", "split_validation"]
