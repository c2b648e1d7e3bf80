// SR-GNN session graphs on the GPU: the batched CSR graph (count, fill), the
// padded per-batch layout and the prefix augmentation.  Semantics and output
// order are those of stgkern/_numba/session_graph.py.
//
// One warp per session, no sorting: a session of L positions is short (the
// wrapper sends batches with a session longer than config.cuda_long_row to
// its sort-based path), so every question is answered by counting over the
// session with all 32 lanes reading the same element at a time (a broadcast
// load), O(L^2 / 32) steps per warp:
//
//   first[p]   position p holds the first occurrence of its item
//   local[p]   rank of items[p] among the session's distinct items
//              = #{q : first[q] and items[q] < items[p]}  (the node, ascending item order)
//   efirst[p]  pair p -> p+1 is the first occurrence of its edge (local[p], local[p+1])
//   edge rank  #{first pairs with (v, u) lexicographically smaller}: the CSR slot
//              (rows by destination v, sources u ascending, as the CPU's sorted codes)
//   indeg(v), outdeg(u)  #{first pairs with the same v / the same u}
//
// The flags live in global scratch (one byte per position) written in one
// phase and read by every lane in the next, with __syncwarp() between.  Every
// output element is written by exactly one lane and every count is a plain
// loop or a fixed-order warp sum: no atomics, bit-reproducible.  Weights are
// 1/deg in double rounded once to T, as the CPU's float64 -> astype.
//
// Template T is the weight type (float, double), I the column index type; the
// layout and prefix kernels use neither (they are instantiated alongside).
#include "stgkern/common.cuh"

using stgkern::i64;
using stgkern::kWarp;

namespace {

// Every helper sees one session: x, first, at, efirst point at its first
// position, L is its length.  Only the items are __restrict__: node ids and
// flags are written earlier in the same kernel, so they must not be read
// through the non-coherent read-only path.

// first[p] for p < L; returns this lane's number of first occurrences.
__device__ __forceinline__ i64 mark_first(const i64* __restrict__ x, i64 L, unsigned char* first, int lane) {
    i64 n = 0;
    for (i64 p = lane; p < L; p += kWarp) {
        const i64 v = x[p];
        bool dup = false;
        for (i64 q = 0; q < p && !dup; ++q) dup = x[q] == v;
        first[p] = dup ? 0 : 1;
        n += dup ? 0 : 1;
    }
    return n;
}

// Number of distinct values of x[0:L) below v (first marks one position per value).
__device__ __forceinline__ i64 rank_below(const i64* __restrict__ x, const unsigned char* first, i64 L, i64 v) {
    i64 r = 0;
    for (i64 q = 0; q < L; ++q) r += (first[q] && x[q] < v) ? 1 : 0;
    return r;
}

// efirst[p] for the pairs p -> p+1 (p < L - 1) of node ids at[]; returns this
// lane's count of first pairs.
__device__ __forceinline__ i64 mark_first_pairs(const i64* at, i64 L, unsigned char* efirst, int lane) {
    i64 n = 0;
    for (i64 p = lane; p < L - 1; p += kWarp) {
        const i64 u = at[p], v = at[p + 1];
        bool dup = false;
        for (i64 q = 0; q < p && !dup; ++q) dup = at[q] == u && at[q + 1] == v;
        efirst[p] = dup ? 0 : 1;
        n += dup ? 0 : 1;
    }
    return n;
}

// In-degree of v and out-degree of u over the distinct edges (first pairs).
__device__ __forceinline__ void degrees(const i64* at, const unsigned char* efirst, i64 L, i64 u,
                                        i64 v, i64& indeg, i64& outdeg) {
    indeg = 0;
    outdeg = 0;
    for (i64 q = 0; q < L - 1; ++q) {
        if (!efirst[q]) continue;
        indeg += at[q + 1] == v ? 1 : 0;
        outdeg += at[q] == u ? 1 : 0;
    }
}

}  // namespace

// Pass 1, one warp per session: first[], local[] (and efirst[] when
// with_edges) for every position; n_nodes[s], n_edges[s] (0 without edges).
template <typename T, typename I>
__global__ void session_graph_count(const i64* __restrict__ ptr, i64 n_seq, const i64* __restrict__ items,
                                    int with_edges, unsigned char* first, i64* local, unsigned char* efirst,
                                    i64* n_nodes, i64* n_edges) {
    const i64 s = stgkern::global_warp();
    if (s >= n_seq) return;  // whole warp
    const int lane = stgkern::lane_id();
    const i64 p0 = ptr[s], L = ptr[s + 1] - p0;
    const i64* x = items + p0;
    unsigned char* f = first + p0;
    i64* at = local + p0;
    const i64 m = stgkern::warp_sum(mark_first(x, L, f, lane));
    __syncwarp();
    for (i64 p = lane; p < L; p += kWarp) at[p] = rank_below(x, f, L, x[p]);
    i64 ne = 0;
    if (with_edges) {
        __syncwarp();
        ne = stgkern::warp_sum(mark_first_pairs(at, L, efirst + p0, lane));
    }
    if (lane == 0) {
        n_nodes[s] = m;
        n_edges[s] = ne;
    }
}

// Pass 2, one warp per session: node_ptr / edge_ptr are the exclusive prefix
// sums of pass 1's counts.  indptr[n_nodes_total] is set by the caller.
template <typename T, typename I>
__global__ void session_graph_fill(const i64* __restrict__ ptr, i64 n_seq, const i64* __restrict__ items,
                                   const unsigned char* __restrict__ first, const i64* __restrict__ local,
                                   const unsigned char* __restrict__ efirst, const i64* __restrict__ node_ptr,
                                   const i64* __restrict__ edge_ptr, i64* node_item, i64* alias, i64* indptr,
                                   I* indices, T* w_in, T* w_out) {
    const i64 s = stgkern::global_warp();
    if (s >= n_seq) return;
    const int lane = stgkern::lane_id();
    const i64 p0 = ptr[s], L = ptr[s + 1] - p0;
    const i64 b = node_ptr[s], m = node_ptr[s + 1] - b, e0 = edge_ptr[s];
    const i64* at = local + p0;
    const unsigned char* ef = efirst + p0;
    for (i64 p = lane; p < L; p += kWarp) {
        alias[p0 + p] = b + at[p];
        if (first[p0 + p]) node_item[b + at[p]] = items[p0 + p];
    }
    for (i64 p = lane; p < L - 1; p += kWarp) {
        if (!ef[p]) continue;
        const i64 u = at[p], v = at[p + 1];
        i64 rank = 0;  // distinct edges (vq, uq) < (v, u)
        for (i64 q = 0; q < L - 1; ++q) {
            if (!ef[q]) continue;
            const i64 vq = at[q + 1];
            rank += (vq < v || (vq == v && at[q] < u)) ? 1 : 0;
        }
        i64 indeg, outdeg;
        degrees(at, ef, L, u, v, indeg, outdeg);
        const i64 k = e0 + rank;
        indices[k] = static_cast<I>(b + u);
        w_in[k] = static_cast<T>(1.0 / static_cast<double>(indeg));
        w_out[k] = static_cast<T>(1.0 / static_cast<double>(outdeg));
    }
    // Row i starts after every distinct edge into a lower node.
    for (i64 i = lane; i < m; i += kWarp) {
        i64 c = 0;
        for (i64 q = 0; q < L - 1; ++q) c += (ef[q] && at[q + 1] < i) ? 1 : 0;
        indptr[b + i] = e0 + c;
    }
}

// SR-GNN's padded layout, one warp per session.  alias_out, A, items_out and
// mask are zero-filled by the caller ((n_seq, len_max), (n_seq, max_n,
// 2 max_n), (n_seq, max_n), (n_seq, len_max)).  The padding item 0 is node 0
// whenever the session is shorter than len_max (items are >= 1), so real
// nodes shift by off.  The alias row doubles as the session's node ids.
template <typename T, typename I>
__global__ void srgnn_layout_fill(const i64* __restrict__ ptr, i64 n_seq, const i64* __restrict__ items,
                                  i64 len_max, i64 max_n, unsigned char* first, unsigned char* efirst,
                                  i64* alias_out, double* A, i64* items_out, i64* mask) {
    const i64 s = stgkern::global_warp();
    if (s >= n_seq) return;
    const int lane = stgkern::lane_id();
    const i64 p0 = ptr[s], L = ptr[s + 1] - p0;
    const i64 off = L < len_max ? 1 : 0;
    const i64* x = items + p0;
    unsigned char* f = first + p0;
    unsigned char* ef = efirst + p0;
    i64* at = alias_out + s * len_max;
    mark_first(x, L, f, lane);
    __syncwarp();
    for (i64 p = lane; p < L; p += kWarp) {
        const i64 r = off + rank_below(x, f, L, x[p]);
        at[p] = r;
        mask[s * len_max + p] = 1;
        if (f[p]) items_out[s * max_n + r] = x[p];
    }
    __syncwarp();
    mark_first_pairs(at, L, ef, lane);
    __syncwarp();
    double* Ad = A + s * max_n * 2 * max_n;
    for (i64 p = lane; p < L - 1; p += kWarp) {
        if (!ef[p]) continue;
        const i64 u = at[p], v = at[p + 1];
        i64 indeg, outdeg;
        degrees(at, ef, L, u, v, indeg, outdeg);
        Ad[v * 2 * max_n + u] = 1.0 / static_cast<double>(indeg);           // u_A_in^T
        Ad[u * 2 * max_n + max_n + v] = 1.0 / static_cast<double>(outdeg);  // u_A_out^T
    }
}

// SR-GNN's prefix augmentation, one warp per sequence.  Example ex_ptr[s] + i - 1
// (i = 1 .. L-1) is the prefix s[:L-i] with target s[L-i]; its items start at
// item_ptr[s] + (i-1) L - (i-1) i / 2 (after the earlier, longer prefixes of s).
// out_ptr[0] is set by the caller; the kernel writes every later entry.
template <typename T, typename I>
__global__ void srgnn_prefixes_fill(const i64* __restrict__ ptr, i64 n_seq, const i64* __restrict__ items,
                                    const i64* __restrict__ ex_ptr, const i64* __restrict__ item_ptr, i64* out_ptr,
                                    i64* out_items, i64* targets, i64* seq_id) {
    const i64 s = stgkern::global_warp();
    if (s >= n_seq) return;
    const int lane = stgkern::lane_id();
    const i64 p0 = ptr[s], L = ptr[s + 1] - p0, e = ex_ptr[s], base = item_ptr[s];
    for (i64 i = 1 + lane; i < L; i += kWarp) {
        const i64 ex = e + i - 1;
        targets[ex] = items[p0 + L - i];
        seq_id[ex] = s;
        out_ptr[ex + 1] = base + i * L - i * (i + 1) / 2;
    }
    for (i64 i = 1; i < L; ++i) {
        const i64 start = base + (i - 1) * L - (i - 1) * i / 2, plen = L - i;
        for (i64 q = lane; q < plen; q += kWarp) out_items[start + q] = items[p0 + q];
    }
}

#ifdef STGKERN_AOT
#define STGKERN_SG(T, I)                                                                                   \
    fp[n++] = (void*)&session_graph_count<T, I>; fp[n++] = (void*)&session_graph_fill<T, I>;               \
    fp[n++] = (void*)&srgnn_layout_fill<T, I>; fp[n++] = (void*)&srgnn_prefixes_fill<T, I>;
int stgkern_aot_session_graph(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_SG) return n; }
#endif
