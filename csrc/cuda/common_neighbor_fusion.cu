// common_neighbor_fusion: for edge k (j -> i) of a square graph with sorted rows,
//   out[k] = sum_{m in N(i) & N(j)} A[i, m] * A[j, m] * X[m]
// (N = the row, A = the edge weight, 1 when w is null) and its backward.
//
// Intersection: the 32 lanes each take one entry of the first row and
// binary-search it in the second (sorted) row; the matches are then visited
// in ascending order through a ballot mask, with lanes over features.  The
// visiting order is the order of the CPU's sorted merge, and every output
// element is owned by one warp: deterministic, no atomics.
#include "stgkern/common.cuh"

using stgkern::i64;
using stgkern::kFull;
using stgkern::kWarp;

namespace {

// First position in [lo, hi) whose value is >= v; hi when none.
template <typename I>
__device__ __forceinline__ i64 lower_bound(const I* a, i64 lo, i64 hi, I v) {
    while (lo < hi) {
        const i64 mid = lo + (hi - lo) / 2;
        if (a[mid] < v) lo = mid + 1; else hi = mid;
    }
    return lo;
}

// Lane's entry p = p0 + lane of [p0, p1) searched in keys[q0, q1); returns the
// ballot of hits and sets u (the value) and q (its position in the second range).
template <typename I>
__device__ __forceinline__ unsigned search_chunk(const I* vals, i64 p0, i64 p1, const I* keys, i64 q0, i64 q1,
                                                 I& u, i64& q) {
    const i64 p = p0 + stgkern::lane_id();
    bool hit = false;
    u = 0;
    q = -1;
    if (p < p1) {
        u = vals[p];
        q = lower_bound(keys, q0, q1, u);
        hit = q < q1 && keys[q] == u;
    }
    return __ballot_sync(kFull, hit);
}

template <typename T>
__device__ __forceinline__ T weight(const T* w, i64 k) { return w == nullptr ? T(1) : w[k]; }

}  // namespace

template <typename T, typename I>
__global__ void cnf_fwd(const i64* indptr, const I* indices, const T* w, const T* X, T* out, i64 n, i64 F) {
    const i64 i = stgkern::global_warp();
    if (i >= n) return;
    const int lane = stgkern::lane_id();
    const i64 a0 = indptr[i], a1 = indptr[i + 1];
    for (i64 k = a0; k < a1; ++k) {
        const i64 j = static_cast<i64>(indices[k]);
        const i64 b0 = indptr[j], b1 = indptr[j + 1];
        for (i64 f0 = 0; f0 < F; f0 += kWarp) {
            const i64 f = f0 + lane;
            T acc = T(0);
            for (i64 p0 = a0; p0 < a1; p0 += kWarp) {
                I u;
                i64 q;
                unsigned mask = search_chunk(indices, p0, a1, indices, b0, b1, u, q);
                while (mask) {
                    const int t = __ffs(mask) - 1;
                    mask &= mask - 1;
                    const i64 m = static_cast<i64>(__shfl_sync(kFull, u, t));
                    const i64 qq = __shfl_sync(kFull, q, t);
                    const T c = weight(w, p0 + t) * weight(w, qq);
                    if (f < F) acc += c * X[m * F + f];
                }
            }
            if (f < F) out[k * F + f] = acc;
        }
    }
}

// grad_X[m] = sum_{t: i = t_indices[t] (m -> i)} sum_{k = (j -> i), j in out(m)} A[i, m] A[j, m] G[k]
// One warp per m; row i searched against the transpose row of m.
template <typename T, typename I>
__global__ void cnf_bwd_x(const i64* indptr, const I* indices, const i64* t_indptr, const I* t_indices,
                          const i64* t_eid, const T* w, const T* G, T* grad_x, i64 n, i64 F) {
    const i64 m = stgkern::global_warp();
    if (m >= n) return;
    const int lane = stgkern::lane_id();
    const i64 t0 = t_indptr[m], t1 = t_indptr[m + 1];
    for (i64 f0 = 0; f0 < F; f0 += kWarp) {
        const i64 f = f0 + lane;
        T acc = T(0);
        for (i64 t = t0; t < t1; ++t) {
            const i64 i = static_cast<i64>(t_indices[t]);
            const T wi = weight(w, t_eid[t]);
            const i64 a0 = indptr[i], a1 = indptr[i + 1];
            for (i64 k0 = a0; k0 < a1; k0 += kWarp) {
                I u;
                i64 q;
                unsigned mask = search_chunk(indices, k0, a1, t_indices, t0, t1, u, q);
                while (mask) {
                    const int s = __ffs(mask) - 1;
                    mask &= mask - 1;
                    const i64 qq = __shfl_sync(kFull, q, s);
                    const T c = wi * weight(w, t_eid[qq]);
                    if (f < F) acc += c * G[(k0 + s) * F + f];
                }
            }
        }
        if (f < F) grad_x[m * F + f] = acc;
    }
}

// grad_w of the edges of row a, both roles (see stgkern/_numba/common_neighbor_fusion.py);
// only lane 0 writes, in a fixed order.
template <typename T, typename I>
__global__ void cnf_bwd_w(const i64* indptr, const I* indices, const i64* t_indptr, const I* t_indices,
                          const i64* t_eid, const T* w, const T* G, const T* X, T* grad_w, i64 n, i64 F) {
    const i64 a = stgkern::global_warp();
    if (a >= n) return;
    const int lane = stgkern::lane_id();
    const i64 a0 = indptr[a], a1 = indptr[a + 1];
    if (lane == 0)
        for (i64 p = a0; p < a1; ++p) grad_w[p] = T(0);
    // Role A[i, m] with i = a: edges k = (j -> a); matches p in row a, q in row j.
    for (i64 k = a0; k < a1; ++k) {
        const i64 j = static_cast<i64>(indices[k]);
        const i64 b0 = indptr[j], b1 = indptr[j + 1];
        for (i64 p0 = a0; p0 < a1; p0 += kWarp) {
            I u;
            i64 q;
            unsigned mask = search_chunk(indices, p0, a1, indices, b0, b1, u, q);
            while (mask) {
                const int t = __ffs(mask) - 1;
                mask &= mask - 1;
                const i64 um = static_cast<i64>(__shfl_sync(kFull, u, t));
                const i64 qq = __shfl_sync(kFull, q, t);
                T s = T(0);
                for (i64 f = lane; f < F; f += kWarp) s += G[k * F + f] * X[um * F + f];
                s = stgkern::warp_sum(s);
                if (lane == 0) grad_w[p0 + t] += w[qq] * s;
            }
        }
    }
    // Role A[j, m] with j = a: edges k = (a -> i); matches p in row i, q in row a.
    for (i64 t = t_indptr[a]; t < t_indptr[a + 1]; ++t) {
        const i64 i = static_cast<i64>(t_indices[t]);
        const i64 k = t_eid[t];
        const i64 p0i = indptr[i], p1i = indptr[i + 1];
        for (i64 p0 = p0i; p0 < p1i; p0 += kWarp) {
            I u;
            i64 q;
            unsigned mask = search_chunk(indices, p0, p1i, indices, a0, a1, u, q);
            while (mask) {
                const int s_lane = __ffs(mask) - 1;
                mask &= mask - 1;
                const i64 um = static_cast<i64>(__shfl_sync(kFull, u, s_lane));
                const i64 qq = __shfl_sync(kFull, q, s_lane);
                T s = T(0);
                for (i64 f = lane; f < F; f += kWarp) s += G[k * F + f] * X[um * F + f];
                s = stgkern::warp_sum(s);
                if (lane == 0) grad_w[qq] += w[p0 + s_lane] * s;
            }
        }
    }
}

#ifdef STGKERN_AOT
#define STGKERN_CNF(T, I) \
    fp[n++] = (void*)&cnf_fwd<T, I>; fp[n++] = (void*)&cnf_bwd_x<T, I>; fp[n++] = (void*)&cnf_bwd_w<T, I>;
int stgkern_aot_common_neighbor_fusion(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_CNF) return n; }
#endif
