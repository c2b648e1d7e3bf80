// GCE-GNN's global item graph on the GPU (stgkern/_numba/item_graph.py gives
// the semantics).  The script counts every pair (s[j], s[j+k]) and its mirror
// in a fixed visiting order (sequence, k, j, forward before backward) and
// ranks each item's neighbours by count descending, ties by first appearance.
//
// Stages (stgkern/_cuda/item_graph.py runs them; sorts are CuPy's):
//
//   item_graph_pairs   one thread per position p (item a = s[j]): for every
//                      k with j + k < L it writes the forward pair (a, s[j+k])
//                      and the backward pair (s[j+k], a) at their visiting
//                      index, so the pair array is in the script's order;
//   [stable sort of the pairs by (row, neighbour): CuPy]
//   item_graph_count   one warp per item row: distinct neighbours (runs of
//                      equal neighbours in the sorted row, found with ballots);
//   item_graph_groups  one warp per item row: per distinct neighbour its
//                      count (run length) and first appearance (the run's
//                      first visiting index: the sort is stable);
//   [sort of the groups by (row, count desc, first appearance): CuPy]
//   item_graph_fill    one warp per item row: the first min(distinct, top)
//                      groups of the row in rank order -> indices, counts.
//
// Every output element has one writer and every count is a ballot/popc over
// a fixed range: no atomics, deterministic.  Template T is unused (the loader
// instantiates long long), I is the column index type.
#include "stgkern/common.cuh"

using stgkern::i64;
using stgkern::kFull;
using stgkern::kWarp;

// Sequence s owns positions ptr[s]:ptr[s+1] and pairs pair_ptr[s]:pair_ptr[s+1];
// within it, offset k (1..epsilon) starts after 2 * sum_{k' < k} max(L - k', 0)
// pairs and pair j of offset k sits at 2 j (forward) and 2 j + 1 (backward).
template <typename T, typename I>
__global__ void item_graph_pairs(const i64* __restrict__ ptr, i64 n_seq, const i64* __restrict__ items, i64 n_pos,
                                 i64 epsilon, const i64* __restrict__ pair_ptr, i64* row, i64* nbr) {
    const i64 p = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (p >= n_pos) return;
    i64 lo = 0, hi = n_seq;  // the sequence holding p: last s with ptr[s] <= p (and a non-empty range)
    while (hi - lo > 1) {
        const i64 mid = (lo + hi) >> 1;
        if (ptr[mid] <= p) lo = mid; else hi = mid;
    }
    const i64 p0 = ptr[lo], L = ptr[lo + 1] - p0, j = p - p0;
    const i64 a = items[p];
    i64 o = pair_ptr[lo];
    for (i64 k = 1; k <= epsilon && j + k < L; ++k) {
        const i64 b = items[p + k];
        const i64 i = o + 2 * j;
        row[i] = a;
        nbr[i] = b;
        row[i + 1] = b;
        nbr[i + 1] = a;
        o += 2 * (L - k);
    }
}

// Distinct neighbours of row a: runs in sb[rstart[a]:rstart[a+1]] (the
// neighbours of the pairs sorted by (row, neighbour)).
template <typename T, typename I>
__global__ void item_graph_count(const i64* __restrict__ rstart, i64 n_items, const i64* __restrict__ sb,
                                 i64* n_distinct) {
    const i64 a = stgkern::global_warp();
    if (a >= n_items) return;
    const int lane = stgkern::lane_id();
    const i64 r0 = rstart[a], r1 = rstart[a + 1];
    i64 d = 0;
    for (i64 c0 = r0; c0 < r1; c0 += kWarp) {
        const i64 q = c0 + lane;
        const bool head = q < r1 && (q == r0 || sb[q] != sb[q - 1]);
        d += __popc(__ballot_sync(kFull, head));
    }
    if (lane == 0) n_distinct[a] = d;
}

// One group per run: group g = gptr[a] + (run index in the row) gets the
// neighbour, the run length and the first visiting index order[run start].
// A run's end is the next head: in the same 32-chunk it is found from the
// ballot mask; the chunk's last run stays open until a later chunk's first
// head (or the row end) closes it.
template <typename T, typename I>
__global__ void item_graph_groups(const i64* __restrict__ rstart, i64 n_items, const i64* __restrict__ sb,
                                  const i64* __restrict__ order, const i64* __restrict__ gptr, i64* gnbr, i64* gcount,
                                  i64* gfirst, i64* grow) {
    const i64 a = stgkern::global_warp();
    if (a >= n_items) return;
    const int lane = stgkern::lane_id();
    const i64 r0 = rstart[a], r1 = rstart[a + 1];
    const unsigned below = (1u << lane) - 1u, above = ~((2u << lane) - 1u);
    i64 g0 = gptr[a];   // group index of the next run
    i64 open = -1;      // start of the run left open by the previous chunk
    for (i64 c0 = r0; c0 < r1; c0 += kWarp) {
        const i64 q = c0 + lane;
        const bool head = q < r1 && (q == r0 || sb[q] != sb[q - 1]);
        const unsigned mask = __ballot_sync(kFull, head);
        if (mask == 0) continue;  // the open run goes on (warp-uniform)
        if (head) {
            const i64 g = g0 + __popc(mask & below);
            gnbr[g] = sb[q];
            gfirst[g] = order[q];
            grow[g] = a;
            const unsigned later = mask & above;
            if (later) gcount[g] = (c0 + __ffs(later) - 1) - q;
        }
        if (lane == 0 && open >= 0) gcount[g0 - 1] = (c0 + __ffs(mask) - 1) - open;
        g0 += __popc(mask);
        open = c0 + (31 - __clz(static_cast<int>(mask)));
    }
    if (lane == 0 && open >= 0) gcount[g0 - 1] = r1 - open;
}

// Row a keeps the first min(distinct, top) groups of rank[gptr[a]:gptr[a+1]]
// (the groups sorted by row, count descending, first appearance).
template <typename T, typename I>
__global__ void item_graph_fill(const i64* __restrict__ gptr, const i64* __restrict__ indptr, i64 n_items,
                                const i64* __restrict__ rank, const i64* __restrict__ gnbr,
                                const i64* __restrict__ gcount, I* indices, i64* counts) {
    const i64 a = stgkern::global_warp();
    if (a >= n_items) return;
    const int lane = stgkern::lane_id();
    const i64 g0 = gptr[a], o = indptr[a], keep = indptr[a + 1] - o;
    for (i64 r = lane; r < keep; r += kWarp) {
        const i64 g = rank[g0 + r];
        indices[o + r] = static_cast<I>(gnbr[g]);
        counts[o + r] = gcount[g];
    }
}

#ifdef STGKERN_AOT
// T unused (long long); indices int32 or int64
#define STGKERN_IG(T, I)                                                                                  \
    fp[n++] = (void*)&item_graph_pairs<T, I>; fp[n++] = (void*)&item_graph_count<T, I>;                   \
    fp[n++] = (void*)&item_graph_groups<T, I>; fp[n++] = (void*)&item_graph_fill<T, I>;
int stgkern_aot_item_graph(void** fp) {
    int n = 0;
    STGKERN_IG(long long, int) STGKERN_IG(long long, long long)
    return n;
}
#endif
