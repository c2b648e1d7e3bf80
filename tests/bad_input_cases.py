"""The bad-input catalogue: one row per mistake a user can make, with what they are told.

Each case is ``(id, call, exception, words)``: ``call`` is Python source
evaluated in :func:`namespace` (so the catalogue reads as the calls users
write), and the exception's message must contain ``words``.
``tests/test_bad_input.py`` runs every row; ``tools/errors_doc.py`` writes
them to ``docs/errors.md`` (a test keeps that file current).  Rows found by
the bad-input sweep of issue 14 are marked in their id's first part.
"""
import numpy as np

CASES = [
    # --- graphs: every range check on the arrays as given, before any narrowing cast
    ("graph/int64-index-beyond-int32", "Graph(np.array([0, 1]), np.array([2**32]), 3)",
     ValueError, "indices must lie in [0, n_src=3)"),
    ("graph/uint64-index-beyond-int64", "Graph(np.array([0, 1]), np.array([2**63 + 2], np.uint64), 3)",
     ValueError, "found values in [9223372036854775810"),
    ("graph/negative-wide-index", "Graph(np.array([0, 1]), np.array([-2**32 + 1]), 3)",
     ValueError, "indices must lie in [0, n_src=3)"),
    ("graph/indptr-not-ending-at-nnz", "Graph(np.array([0, 3]), np.array([0]), 3)",
     ValueError, "end at nnz=1"),
    ("graph/write-into-validated-indices", "g.indices.__setitem__(0, 10**6)",
     ValueError, "read-only"),
    ("graph/replace-indices-out-of-range", "setattr(g, 'indices', np.array([0, 9, 1]))",
     ValueError, "indices must lie in [0, n_src=3)"),
    ("graph/not-a-graph", "graph_conv(None, X, np.eye(2), np.eye(2))",
     TypeError, "g must be a stgkern.Graph, got NoneType"),
    ("graph/scipy-matrix-for-a-graph", "spmm(scipy.sparse.csr_matrix(np.eye(3)), X)",
     TypeError, "Graph.from_scipy(A)"),
    ("graph/edge-index-array-for-a-graph", "sddmm(np.array([[0, 1], [1, 2]]), X, X)",
     TypeError, "Graph.from_edge_index"),
    # --- out= and arg
    ("out/overlaps-edge-weight", "spmm(g, X[:, :1].copy(), w, out=w.reshape(3, 1))",
     ValueError, "out overlaps edge_weight"),
    ("out/read-only", "spmm(g, X, out=frozen(np.zeros((3, 2))))",
     ValueError, "out is read-only"),
    ("out/overlaps-X", "spmm(g, X, out=X)", ValueError, "out overlaps X"),
    ("arg/edge-id-outside-its-row", "spmm_backward(g, X, X, reduce='max', arg=np.full((3, 2), 2))",
     ValueError, "arg row 0 holds edge ids outside row 0's edges"),
    ("arg/message-passing-garbage", "message_passing_backward(g, X, X, w, reduce='min', arg=np.full((3, 2), 99))",
     ValueError, "outside row 0's edges"),
    ("arg/missing-for-max", "spmm_backward(g, X, X, reduce='max')", ValueError, "needs arg of shape (3, 2)"),
    # --- counts and ids
    ("count/window-beyond-int64", "window_graph(np.zeros(3, int), np.arange(3.0), window=10**30)",
     ValueError, "beyond the int64 range"),
    ("count/negative-window", "window_graph(np.zeros(3, int), np.arange(3.0), window=-1)",
     ValueError, "window must be >= 0"),
    ("ids/uint64-user-beyond-int64", "window_graph(np.array([2**64 - 1, 1], np.uint64), np.arange(2.0), window=3)",
     ValueError, "above the int64 range"),
    ("ids/sparse-user-ids-would-allocate-TiB",
     "sequences(SimpleNamespace(user=np.array([2**40]), item=np.array([1]), time=np.array([1])))",
     MemoryError, "user ids up to 1099511627776"),
    ("ids/sparse-labels-would-allocate-TiB", "precision_recall_f1(np.array([2**40]), np.array([0]))",
     MemoryError, "labels up to 1099511627776"),
    # --- event logs
    ("log/more-than-127-behaviours",
     "EventLog.from_arrays(np.zeros(2, int), np.zeros(2, int), np.arange(2), behavior=np.array([0, 199]))",
     ValueError, "at most 127"),
    ("log/float-behaviour-codes",
     "EventLog.from_arrays(np.zeros(2, int), np.zeros(2, int), np.arange(2), behavior=np.array([0.0, 1.0]))",
     TypeError, "integer codes or string labels"),
    ("log/float-user-ids", "EventLog.from_arrays(np.array([0.5, 1.0]), np.zeros(2, int), np.arange(2))",
     TypeError, "integer or string ids"),
    ("log/zero-d-column", "EventLog.from_arrays(np.array(1), np.array(1), np.array(1))",
     ValueError, "must be 1-D with one entry per event"),
    ("log/mixed-object-column",
     "EventLog.from_arrays(np.array([1, 'a'], object), np.zeros(2, int), np.arange(2))",
     TypeError, "mixes int, str values"),
    ("log/split-an-empty-log", "split_last_period(empty_log, 3600)", ValueError, "this one is empty"),
    ("synthetic/zero-successors", "synthetic_log(n_successors=0, process='markov')",
     ValueError, "n_successors must be at least 1"),
    ("synthetic/markov-knob-for-stg", "synthetic_log(n_successors=3)", ValueError, "only apply to process='markov'"),
    # --- loaders: the path, the line and the column
    ("load/taobao-infinite-timestamp", "load_taobao(file('1,2,3,pv,5\\n1,2,3,pv,inf\\n'))",
     ValueError, "line 2, column 'timestamp': not a finite number"),
    ("load/taobao-fractional-user", "load_taobao(file('1.5,2,3,pv,5\\n'))",
     ValueError, "line 1, column 'user_id': not a whole-number id"),
    ("load/taobao-header-row",
     "load_taobao(file('user_id,item_id,category_id,behavior_type,timestamp\\n1,2,3,pv,5\\n'))",
     ValueError, "line 1 looks like a header row"),
    ("load/recbole-empty-user-id",
     "load_recbole(file('user_id:token\\titem_id:token\\ttimestamp:float\\n\\t5\\t1\\n'))",
     ValueError, "line 2, column 'user_id': missing value"),
    ("load/movielens-empty-file", "load_movielens(file(''))", ValueError, "empty file"),
    ("load/movielens-movies-without-genres",
     "load_movielens(file('userId,movieId,rating,timestamp\\n1,2,3.5,10\\n'), file('movieId,title\\n2,x\\n'))",
     ValueError, "no 'genres' column"),
]


def namespace(tmp_path):
    """What the calls see: stgkern's public names, a small graph ``g`` (3 nodes, 3 edges),
    ``X`` (3, 2), edge weights ``w``, and ``file(text)`` writing a temporary file."""
    import itertools
    import types

    import scipy.sparse

    import stgkern
    from stgkern import metrics
    from stgkern.data import EventLog, load_movielens, load_recbole, load_taobao, split_last_period

    counter = itertools.count()

    def file(text):
        p = tmp_path / f"f{next(counter)}.txt"
        p.write_text(text)
        return str(p)

    def frozen(a):
        a.flags.writeable = False
        return a

    g = stgkern.Graph(np.array([0, 1, 2, 3]), np.array([1, 2, 0]), 3)
    ns = {name: getattr(stgkern, name) for name in dir(stgkern) if not name.startswith("_")}
    ns.update(np=np, scipy=scipy, SimpleNamespace=types.SimpleNamespace, EventLog=EventLog,
              load_taobao=load_taobao, load_movielens=load_movielens, load_recbole=load_recbole,
              split_last_period=split_last_period, precision_recall_f1=metrics.precision_recall_f1,
              sequences=stgkern.sequences, file=file, frozen=frozen, g=g,
              X=np.arange(6.0).reshape(3, 2), w=np.ones(3),
              empty_log=EventLog.from_arrays(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int)))
    return ns
