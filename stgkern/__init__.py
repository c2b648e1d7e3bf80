"""stgkern: fast, exact kernels for graph neural networks on user-behaviour sequences.

One public function per op; NumPy input runs the Numba CPU kernels, CuPy
input the CUDA kernels.  Importing stgkern imports neither CuPy nor torch,
and compiles nothing: each stage module is loaded on first use.

>>> import stgkern
>>> log = stgkern.synthetic_log(n_users=50, seed=0)      # doctest: +SKIP
>>> g = stgkern.window_graph(log, window=8)              # doctest: +SKIP
"""
from __future__ import annotations

import importlib

from . import config
from .graph import Graph

__version__ = "0.1.0"

# public name -> stage module that defines it
_API = {
    # data
    "EventLog": "data", "synthetic_log": "data", "from_dataframe": "data",
    "load": "data", "load_taobao": "data", "load_diginetica": "data", "SessionData": "data", "load_movielens": "data", "load_recbole": "data", "load_yoochoose": "data",
    "k_core": "data", "filter_min_length": "data", "filter_time": "data",
    "split_leave_one_out": "data", "split_last_period": "data", "log_marginals": "data",
    # construction
    "window_graph": "construct", "estimate_window_graph": "construct",
    "sequences": "compat", "session_graph": "compat", "srgnn_layout": "compat", "srgnn_prefixes": "compat",
    "item_graph": "compat", "time_intervals": "compat",
    # features
    "node_features": "features", "node_feature_names": "features", "time_decay": "features", "time_encoding": "features", "time_bucket": "features",
    # convolution
    "spmm": "conv", "spmm_backward": "conv",
    "message_passing": "conv", "message_passing_backward": "conv",
    "graph_conv": "layer", "graph_conv_backward": "layer",
    "sddmm": "edge", "sddmm_backward": "edge",
    "edge_softmax": "edge", "edge_softmax_backward": "edge",
    "common_neighbor_fusion": "edge", "common_neighbor_fusion_backward": "edge",
    # readout and scoring
    "segment_reduce": "readout", "segment_reduce_backward": "readout", "topk": "readout",
    "score_cross_entropy": "readout", "score_cross_entropy_backward": "readout",
}

__all__ = ["Graph", "config", "metrics", *_API]


#: stage modules reachable as attributes (``stgkern.compat.session_graph``); optional
#: ones (torch, dask, bench) import their extra only when touched.
_SUBMODULES = {"data", "construct", "compat", "features", "conv", "edge", "layer", "readout", "metrics",
               "model", "bench", "torch", "dask"}


def __getattr__(name):
    if name in _SUBMODULES:
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise                      # e.g. stgkern.torch without torch installed
            raise AttributeError(f"module 'stgkern' has no attribute {name!r}") from None
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module 'stgkern' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
