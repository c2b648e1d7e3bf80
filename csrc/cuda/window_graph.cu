// window_graph on the GPU: count and fill over events already in (user, time)
// order (segment s = one user's events seg_ptr[s]:seg_ptr[s+1], times
// ascending inside a segment).  One thread per destination event i; the
// row layout and every rule match stgkern/_numba/window_graph.py exactly:
//
//   [category-only sources, ascending][temporal sources lo..hi][self]
//
// temporal: j in [lo, hi], lo = max(segment start, i - window, first j with
//   t[i] - t[j] <= horizon), hi = i - 1 (strict_time: the last j with
//   t[j] < t[i]); kind 1, dt = t[i] - t[j], hop = i - j.
// category: walking the user's same-category events backwards (corder: the
//   user's nodes sorted by (category, position); crank: each node's place in
//   it), skipping equal times under strict_time, stopping at the horizon,
//   taking at most category_window; a source below lo is a category-only
//   edge (kind 2), one inside [lo, hi] adds 2 to that temporal edge's kind.
// self loop last: kind 4, dt 0, hop 0.
//
// The walk is bounded by category_window matches, not by a scan length:
// corder lists only same-category events, so no cap is needed.
// Template T is the time type (long long or double), I the index type.
#include "stgkern/common.cuh"

using stgkern::i64;

namespace {

template <typename T>
struct Rules {
    const i64* seg_ptr;
    i64 n_seg;
    const T* t;
    const i64* cat;  // null: no category edges
    const i64* corder;
    const i64* crank;
    i64 window;  // < 0: no window
    T horizon;
    int has_horizon, strict;
    i64 cat_window;
    int self_loops;
};

// Start of the segment holding node i (last s with seg_ptr[s] <= i).
__device__ __forceinline__ i64 segment_start(const i64* seg_ptr, i64 n_seg, i64 i) {
    i64 lo = 0, hi = n_seg;  // seg_ptr[lo] <= i < seg_ptr[hi]
    while (hi - lo > 1) {
        const i64 mid = (lo + hi) >> 1;
        if (seg_ptr[mid] <= i) lo = mid; else hi = mid;
    }
    return seg_ptr[lo];
}

// The temporal range [lo, hi] of row i (hi < lo: none) and the segment start a.
template <typename T>
__device__ __forceinline__ void temporal_range(const Rules<T>& R, i64 i, i64& a, i64& lo, i64& hi) {
    a = segment_start(R.seg_ptr, R.n_seg, i);
    const T ti = R.t[i];
    lo = a;
    if (R.window >= 0 && i - R.window > lo) lo = i - R.window;
    if (R.has_horizon) {  // first j in [lo, i] with ti - t[j] <= horizon (times ascend)
        i64 h = i;
        while (lo < h) {
            const i64 mid = (lo + h) >> 1;
            if (ti - R.t[mid] > R.horizon) lo = mid + 1; else h = mid;
        }
    }
    hi = i - 1;
    if (R.strict) {  // last j with t[j] < ti: before the first tie of i in [a, i]
        i64 l = a, h = i;
        while (l < h) {
            const i64 mid = (l + h) >> 1;
            if (R.t[mid] < ti) l = mid + 1; else h = mid;
        }
        hi = l - 1;
    }
}

// Walk row i's category sources newest first; visit(j) for each taken one.
template <typename T, typename V>
__device__ __forceinline__ void category_walk(const Rules<T>& R, i64 i, i64 a, V visit) {
    const T ti = R.t[i];
    const i64 ci = R.cat[i];
    i64 taken = 0;
    for (i64 q = R.crank[i] - 1; q >= a && taken < R.cat_window; --q) {
        const i64 j = R.corder[q];
        if (R.cat[j] != ci) break;
        if (R.strict && R.t[j] == ti) continue;
        if (R.has_horizon && ti - R.t[j] > R.horizon) break;
        ++taken;
        visit(j);
    }
}

template <typename T>
__device__ __forceinline__ i64 row_count(const Rules<T>& R, i64 i) {
    i64 a, lo, hi;
    temporal_range(R, i, a, lo, hi);
    i64 n = hi >= lo ? hi - lo + 1 : 0;
    if (R.cat != nullptr && R.cat_window > 0) category_walk(R, i, a, [&](i64 j) { n += j < lo; });
    return n + (R.self_loops ? 1 : 0);
}

}  // namespace

template <typename T, typename I>
__global__ void window_graph_count(const i64* seg_ptr, i64 n_seg, const T* t, const i64* cat, const i64* corder,
                                   const i64* crank, i64 window, T horizon, int has_horizon, int strict,
                                   i64 cat_window, int self_loops, i64 n, i64* counts) {
    const i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const Rules<T> R{seg_ptr, n_seg, t, cat, corder, crank, window, horizon, has_horizon, strict, cat_window,
                     self_loops};
    counts[i] = row_count(R, i);
}

// indptr: (n + 1) prefix sums of the counts.
template <typename T, typename I>
__global__ void window_graph_fill(const i64* seg_ptr, i64 n_seg, const T* t, const i64* cat, const i64* corder,
                                  const i64* crank, i64 window, T horizon, int has_horizon, int strict,
                                  i64 cat_window, int self_loops, i64 n, const i64* indptr, I* indices, T* dt,
                                  int* hop, unsigned char* kind) {
    const i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const Rules<T> R{seg_ptr, n_seg, t, cat, corder, crank, window, horizon, has_horizon, strict, cat_window,
                     self_loops};
    i64 a, lo, hi;
    temporal_range(R, i, a, lo, hi);
    const bool with_cat = cat != nullptr && cat_window > 0;
    i64 n_extra = 0;
    if (with_cat) category_walk(R, i, a, [&](i64 j) { n_extra += j < lo; });
    const T ti = t[i];
    const i64 start = indptr[i] + n_extra;  // first temporal edge
    i64 k = start;
    for (i64 j = lo; j <= hi; ++j, ++k) {
        indices[k] = static_cast<I>(j);
        dt[k] = ti - t[j];
        hop[k] = static_cast<int>(i - j);
        kind[k] = 1;
    }
    if (with_cat) {
        i64 back = start - 1;
        category_walk(R, i, a, [&](i64 j) {
            if (j < lo) {
                indices[back] = static_cast<I>(j);
                dt[back] = ti - t[j];
                hop[back] = static_cast<int>(i - j);
                kind[back] = 2;
                --back;
            } else {
                kind[start + (j - lo)] |= 2;
            }
        });
    }
    if (self_loops) {
        indices[k] = static_cast<I>(i);
        dt[k] = T(0);
        hop[k] = 0;
        kind[k] = 4;
    }
}

#ifdef STGKERN_AOT
// time is int64 or float64 (never float32); indices int32 or int64
#define STGKERN_WG(T, I) fp[n++] = (void*)&window_graph_count<T, I>; fp[n++] = (void*)&window_graph_fill<T, I>;
int stgkern_aot_window_graph(void** fp) {
    int n = 0;
    STGKERN_WG(long long, int) STGKERN_WG(long long, long long) STGKERN_WG(double, int)
    STGKERN_WG(double, long long)
    return n;
}
#endif
