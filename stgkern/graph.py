"""The ``Graph``: a CSR adjacency by destination, its edge data and caches.

Row ``i`` lists the sources ``j`` whose messages node ``i`` receives
(``indices[indptr[i]:indptr[i+1]]``).  Aggregation is a row-wise pull, so
every kernel is deterministic and needs no atomics.  The transpose (by
source) that backward kernels pull over is built once and cached.

Arrays live on one device: NumPy arrays (CPU) or CuPy arrays (GPU).
"""
from __future__ import annotations

import numpy as np

from . import _dispatch, _validate

INT32_MAX = np.iinfo(np.int32).max


def index_dtype_for(n: int) -> np.dtype:
    """int32 column indices while the node count fits, int64 beyond."""
    return np.dtype(np.int32) if n <= INT32_MAX else np.dtype(np.int64)


def _from_torch(a):
    """A torch tensor as a NumPy (CPU) or CuPy (CUDA) array sharing its memory; anything else as is."""
    if type(a).__module__.split(".")[0] != "torch":
        return a
    a = a.detach()
    if a.device.type == "cpu":
        return a.resolve_conj().resolve_neg().numpy()
    import cupy
    return cupy.from_dlpack(a)


def _frozen(a):
    """A read-only view of a NumPy array (CuPy arrays have no such flag: returned as they are)."""
    if isinstance(a, np.ndarray):
        a = a.view()
        a.flags.writeable = False
    return a


class Graph:
    """CSR graph by destination with optional per-edge data.

    Parameters
    ----------
    indptr : int array, shape (n_nodes + 1,)
        Row pointer; stored as int64.
    indices : int array, shape (nnz,)
        Source node of every edge, row by row; stored as int32 while
        ``n_src`` fits, int64 beyond.
    n_src : int, optional
        Number of source nodes (columns).  Defaults to ``n_nodes`` (square).
    edata : dict of str -> array, optional
        Per-edge arrays of length ``nnz`` in CSR order (e.g. ``dt``, ``hop``,
        ``kind`` for window graphs).
    perm : int64 array, optional
        ``perm[node]`` is the input row (event) the node came from.
    segment_ptr : int64 array, optional
        ``segment_ptr[s]:segment_ptr[s+1]`` is the node range of user (or
        session) ``s``.
    check : bool
        Validate the structure (monotone ``indptr``, in-range ``indices``).
        Only trusted callers should pass ``False``.

    Examples
    --------
    >>> import numpy as np
    >>> g = Graph(np.array([0, 0, 1, 3]), np.array([0, 0, 1]))
    >>> g.n_nodes, g.nnz
    (3, 3)
    """

    def __init__(self, indptr, indices, n_src=None, *, edata=None, perm=None,
                 segment_ptr=None, check=True, rows_sorted=None):
        backend = _dispatch.backend_of(indptr=indptr, indices=indices)
        xp = _dispatch.array_module(backend)
        if indptr.ndim != 1 or indptr.shape[0] < 1:
            raise ValueError(f"indptr must be 1-D with n_nodes + 1 >= 1 entries, got shape {tuple(indptr.shape)}")
        if indices.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {tuple(indices.shape)}")
        for name, a in (("indptr", indptr), ("indices", indices)):
            if a.dtype.kind not in "iu":
                raise TypeError(f"{name} must be an integer array, got {a.dtype}")
        n = int(indptr.shape[0] - 1)
        n_src = n if n_src is None else _validate.nonneg_int(n_src, "n_src")
        if check:
            # the range checks run on the arrays as given, before any narrowing cast: an id such
            # as 2**32 must be refused, not wrapped to a valid int32 id
            self._check_ranges(indptr, indices, n_src)
        self._backend = backend
        self._indptr = _frozen(xp.ascontiguousarray(indptr, dtype=np.int64))
        self._indices = _frozen(xp.ascontiguousarray(indices, dtype=index_dtype_for(max(n, n_src))))
        self.n_nodes = n
        self.n_src = n_src
        if check:
            self._check_structure()
        self.edata = {}
        for k, v in (edata or {}).items():
            self.set_edata(k, v)
        self.perm = None if perm is None else xp.ascontiguousarray(perm, dtype=np.int64)
        self.segment_ptr = None if segment_ptr is None else xp.ascontiguousarray(segment_ptr, dtype=np.int64)
        #: For graphs built from an edge list: CSR edge k came from input edge ``edge_order[k]``.
        self.edge_order = None
        self._rows_sorted = rows_sorted
        self._transpose = None
        self._dst = None

    # ------------------------------------------------------------------ basics
    # The structure the kernels index by is read-only (on the CPU): writing into
    # g.indices after validation could send a kernel outside its arrays.  The
    # indices can be replaced whole (say, in another index width), which
    # validates again; the arrays given to the
    # constructor are shared when no cast is needed, and must not change either.
    @property
    def indptr(self):
        return self._indptr

    @property
    def indices(self):
        return self._indices

    @indices.setter
    def indices(self, a):
        if tuple(a.shape) != tuple(self._indices.shape) or a.dtype not in (np.int32, np.int64):
            raise ValueError(f"replacement indices must be int32 or int64 of shape {tuple(self._indices.shape)}, "
                             f"got {a.dtype} {tuple(a.shape)}; build a new Graph instead")
        if a.dtype == np.int32 and max(self.n_nodes, self.n_src) > np.iinfo(np.int32).max:
            raise ValueError("int32 indices cannot address this graph's nodes")
        self._check_ranges(self._indptr, a, self.n_src)
        self._indices = _frozen(self.xp.ascontiguousarray(a))
        self._structure_changed()

    def _structure_changed(self) -> None:
        self._rows_sorted, self._transpose, self._dst = None, None, None
        self.__dict__.pop("_torch_copies", None)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_nodes, self.n_src)

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"gpu"``."""
        return self._backend

    @property
    def xp(self):
        return _dispatch.array_module(self._backend)

    @property
    def index_dtype(self) -> np.dtype:
        return self.indices.dtype

    def __repr__(self) -> str:
        extra = f", edata={sorted(self.edata)}" if self.edata else ""
        return f"Graph(n_nodes={self.n_nodes}, n_src={self.n_src}, nnz={self.nnz}, device={self.device!r}{extra})"

    @staticmethod
    def _check_ranges(indptr, indices, n_src) -> None:
        """Value ranges of the arrays as given (any integer width, before they are cast)."""
        nnz = int(indices.shape[0])
        if int(indptr[0]) != 0 or int(indptr[-1]) != nnz:
            raise ValueError(f"indptr must start at 0 and end at nnz={nnz}, got {int(indptr[0])} ... {int(indptr[-1])}")
        if nnz:
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= n_src:
                raise ValueError(f"indices must lie in [0, n_src={n_src}), found values in [{lo}, {hi}]")

    def _check_structure(self) -> None:
        xp = self.xp
        ip = self.indptr
        self._check_ranges(ip, self.indices, self.n_src)
        if self.n_nodes and bool((xp.diff(ip) < 0).any()):
            raise ValueError("indptr must be non-decreasing")

    def set_edata(self, name: str, values) -> None:
        """Attach a per-edge array (length ``nnz``, CSR edge order)."""
        _dispatch.backend_of(**{"g.indices": self.indices, f"edata[{name!r}]": values})
        if values.shape[0] != self.nnz:
            raise ValueError(f"edata[{name!r}] has length {values.shape[0]} but the graph has {self.nnz} edges")
        self.edata[name] = values

    # ------------------------------------------------------------- derived
    def degrees(self):
        """In-degree of every node (number of sources in its row), int64."""
        return self.xp.diff(self.indptr)

    def out_degrees(self):
        """Out-degree of every source node, int64."""
        return self.xp.diff(self.transpose().indptr)

    def dst(self):
        """Destination (row) of every edge, int array of length ``nnz``; cached."""
        if self._dst is None:
            self._dst = _dispatch.expand_ptr(self.indptr, self.index_dtype)
        return self._dst

    @property
    def rows_sorted(self) -> bool:
        """Whether every row's source indices are strictly ascending (cached)."""
        if self._rows_sorted is None:
            if self.nnz < 2:
                self._rows_sorted = True
            else:
                inc = self.indices[1:].astype(np.int64) > self.indices[:-1]
                # Positions where a new row starts need no order.
                starts = self.indptr[1:-1]
                starts = starts[(starts > 0) & (starts < self.nnz)]
                ok = inc.copy()
                ok[starts - 1] = True
                self._rows_sorted = bool(ok.all())
        return self._rows_sorted

    def require_sorted_rows(self, op: str) -> None:
        if not self.rows_sorted:
            raise ValueError(f"{op} needs each row's source indices strictly ascending (sorted, no duplicates); "
                             f"call g.sorted() first")

    def transpose(self) -> "Graph":
        """The graph by source (reverse edges), built once and cached.

        ``edata['eid']`` of the result maps each transposed edge to its edge
        id in this graph, so per-edge values can be gathered in either order.
        """
        if self._transpose is None:
            if self._backend == _dispatch.CPU:
                from ._numba.transpose import transpose as _t
                t_indptr, t_indices, eid = _t(self.indptr, self.indices, self.n_nodes, self.n_src, self.index_dtype)
            else:
                xp = self.xp
                eid = xp.lexsort(xp.stack([self.dst(), self.indices])).astype(np.int64)
                t_indices = self.dst()[eid]
                counts = xp.bincount(self.indices, minlength=self.n_src)
                t_indptr = xp.zeros(self.n_src + 1, dtype=np.int64)
                xp.cumsum(counts, out=t_indptr[1:])
            t = Graph(t_indptr, t_indices, self.n_nodes, check=False, rows_sorted=None)
            t.edata["eid"] = _frozen(eid)      # forward edge ids: kernels index by them
            self._transpose = t
        return self._transpose

    def to_node_order(self, rows):
        """Per-event values given in the input's row order (``rows[r]`` for event ``r``), put
        in node order: ``rows[g.perm]``.  Graphs from an event log number their nodes by
        (user, time), not by input row; features computed per input row must pass through
        here before they meet the graph's kernels."""
        perm = self._require_perm("to_node_order")
        if rows.shape[0] != perm.shape[0]:
            raise ValueError(f"rows has {rows.shape[0]} entries but the graph was built from "
                             f"{perm.shape[0]} events; pass one entry per input event")
        return rows[perm]

    def to_row_order(self, nodes):
        """The inverse of :meth:`to_node_order`: per-node values (e.g. a layer's output) put
        back in the input's row order, so ``out[r]`` belongs to input event ``r``."""
        perm = self._require_perm("to_row_order")
        if nodes.shape[0] != self.n_nodes:
            raise ValueError(f"nodes has {nodes.shape[0]} entries but the graph has {self.n_nodes} nodes")
        out = self.xp.empty_like(nodes)
        out[perm] = nodes
        return out

    def _require_perm(self, what):
        if self.perm is None:
            raise ValueError(f"{what} needs g.perm (node -> input row), which only graphs built from an "
                             f"event log have (window_graph); this graph's nodes are already the caller's rows")
        if self.perm.shape[0] != self.n_nodes:
            raise ValueError(f"{what}: g.perm covers {self.perm.shape[0]} of the {self.n_nodes} nodes")
        return self.perm

    def sorted(self) -> "Graph":
        """A copy whose rows are sorted by source index (edge data permuted along)."""
        if self.rows_sorted:
            return self
        xp = self.xp
        order = xp.lexsort(xp.stack([self.indices, self.dst()]))
        g = Graph(self.indptr, self.indices[order], self.n_src, check=False,
                  edata={k: v[order] for k, v in self.edata.items()}, perm=self.perm, segment_ptr=self.segment_ptr)
        g.edge_order = order if self.edge_order is None else self.edge_order[order]
        return g

    # --------------------------------------------------------- conversions
    def to(self, device: str) -> "Graph":
        """Copy to ``"cpu"`` (NumPy) or ``"gpu"`` (CuPy); returns self when already there."""
        _validate.choice(device, "device", (_dispatch.CPU, _dispatch.GPU))
        if device == self._backend:
            return self
        if device == _dispatch.GPU:
            import cupy
            move = cupy.asarray
        else:
            import cupy
            move = cupy.asnumpy
        opt = lambda a: None if a is None else move(a)  # noqa: E731
        g = Graph(move(self.indptr), move(self.indices), self.n_src, check=False,
                  edata={k: move(v) for k, v in self.edata.items()},
                  perm=opt(self.perm), segment_ptr=opt(self.segment_ptr), rows_sorted=self._rows_sorted)
        g.edge_order = opt(self.edge_order)
        return g

    def to_scipy(self, weight=None, dtype=None, *, matrix=False):
        """``scipy.sparse.csr_array`` of shape (n_nodes, n_src); A[i, j] = weight of edge j -> i.

        ``weight`` is an edata name or a length-``nnz`` array; default ones.
        ``dtype`` is the values' type (default: the weight's own, float32 for
        ones).  ``matrix=True`` gives the older ``csr_matrix`` instead.  The
        result owns copies of the arrays (the graph's are read-only).
        """
        import scipy.sparse as sp
        if self._backend != _dispatch.CPU:
            raise TypeError("to_scipy needs a CPU graph; call g.to('cpu') first (or use cupyx.scipy.sparse)")
        if isinstance(weight, str):
            weight = self.edata[weight]
        if weight is None:
            data = np.ones(self.nnz, dtype=np.float32 if dtype is None else dtype)
        else:
            data = np.array(weight, dtype=dtype, copy=True)
            if data.shape != (self.nnz,):
                raise ValueError(f"weight must hold one value per edge, shape ({self.nnz},); "
                                 f"got shape {data.shape}")
        cls = sp.csr_matrix if matrix else sp.csr_array
        return cls((data, self.indices.copy(), self.indptr.copy()), shape=self.shape)

    @classmethod
    def from_scipy(cls, A, *, weight_name: str | None = "weight") -> "Graph":
        """Graph from a scipy sparse matrix whose row i lists the sources of node i.

        Explicitly stored zeros are kept as edges (nothing is dropped); the
        values go to ``edata[weight_name]`` unless ``weight_name`` is None.
        """
        import scipy.sparse as sp
        if not sp.issparse(A):
            raise TypeError(f"A must be a scipy.sparse matrix or array, got {type(A).__name__}")
        A = A.tocsr()
        edata = {weight_name: A.data} if weight_name else None
        return cls(A.indptr, A.indices, A.shape[1], edata=edata, rows_sorted=bool(A.has_sorted_indices) or None)

    def to_edge_index(self, torch=False):
        """PyG-style ``edge_index`` (2 x nnz, int64): row 0 sources, row 1 destinations.

        A NumPy or CuPy array like the graph's, or with ``torch=True`` a torch
        tensor on the matching device (handed over without a copy)."""
        xp = self.xp
        ei = xp.stack([self.indices.astype(np.int64), self.dst().astype(np.int64)])
        if not torch:
            return ei
        import torch as _torch
        return _torch.from_numpy(ei) if xp is np else _torch.from_dlpack(ei)

    @classmethod
    def from_edge_index(cls, edge_index, num_nodes: int | None = None, *, edata=None) -> "Graph":
        """Graph from a PyG-style ``edge_index`` (row 0 source, row 1 destination).

        ``edge_index`` and the ``edata`` arrays may be NumPy or CuPy arrays or
        torch tensors (CPU tensors become NumPy arrays, CUDA ones CuPy arrays,
        without a copy).  Edges are ordered by (destination, source), stable for duplicates
        (which are kept: nothing is merged or dropped).  ``g.edge_order[k]``
        is the input position of CSR edge ``k``; per-edge arrays in
        ``edata`` are permuted accordingly.
        """
        edge_index = _from_torch(edge_index)
        edata = {k: _from_torch(v) for k, v in (edata or {}).items()}
        backend = _dispatch.backend_of(edge_index=edge_index)
        xp = _dispatch.array_module(backend)
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape (2, nnz), got {tuple(edge_index.shape)}")
        if edge_index.dtype.kind not in "iu":
            raise TypeError(f"edge_index must be an integer array, got {edge_index.dtype}")
        src, dst = edge_index[0], edge_index[1]
        nnz = int(src.shape[0])
        if nnz and int(edge_index.min()) < 0:
            raise ValueError(f"edge_index has negative node ids (min {int(edge_index.min())})")
        top = int(edge_index.max()) + 1 if nnz else 0
        if num_nodes is None:
            num_nodes = top
        elif top > num_nodes:
            raise ValueError(f"edge_index refers to node {top - 1} but num_nodes={num_nodes}")
        order = xp.lexsort(xp.stack([src, dst])).astype(np.int64)
        counts = xp.bincount(dst, minlength=num_nodes) if nnz else xp.zeros(num_nodes, dtype=np.int64)
        indptr = xp.zeros(num_nodes + 1, dtype=np.int64)
        xp.cumsum(counts, out=indptr[1:])
        ed = {}
        for k, v in (edata or {}).items():
            if v.shape[0] != nnz:
                raise ValueError(f"edata[{k!r}] has length {v.shape[0]} but edge_index has {nnz} edges")
            ed[k] = v[order]
        g = cls(indptr, src[order], num_nodes, edata=ed, check=False)
        g.edge_order = order
        return g
