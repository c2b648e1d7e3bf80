"""Counting-sort transpose of a CSR graph (destination-major -> source-major)."""
import numba as nb
import numpy as np


@nb.njit(cache=True)
def _count(indices, n_src):
    deg = np.zeros(n_src + 1, dtype=np.int64)
    for k in range(indices.shape[0]):
        deg[indices[k] + 1] += 1
    for i in range(n_src):
        deg[i + 1] += deg[i]
    return deg


@nb.njit(cache=True)
def _fill(indptr, indices, t_indptr, t_indices, eid):
    nxt = t_indptr[:-1].copy()
    n_dst = indptr.shape[0] - 1
    # Destinations visited in ascending order, so every transposed row
    # comes out sorted without a second pass.
    for i in range(n_dst):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            p = nxt[j]
            t_indices[p] = i
            eid[p] = k
            nxt[j] = p + 1


def transpose(indptr, indices, n_dst, n_src, index_dtype):
    """Return ``(t_indptr, t_indices, eid)``: row j of the transpose lists the
    destinations of source j; ``eid[p]`` is the original edge id of edge p."""
    t_indptr = _count(indices, n_src)
    nnz = indices.shape[0]
    t_indices = np.empty(nnz, dtype=index_dtype)
    eid = np.empty(nnz, dtype=np.int64)
    _fill(indptr, indices, t_indptr, t_indices, eid)
    return t_indptr, t_indices, eid
