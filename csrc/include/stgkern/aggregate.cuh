// Row-wise gather-reduce shared by spmm and message_passing.
//
//   out[i, f] = REDUCE_{k in row i}  X[indices[k], f]  (op)  E(k, f)
//
// E is absent (plain gather), one value per edge (e_width == 1, the spmm edge
// weight) or one per edge and feature (e_width == F).  op: 0 = mul, 1 = add.
//
// Geometry: one warp per destination row, lanes over features (chunks of 32);
// rows longer than config.cuda_long_row get a whole block (gather_reduce_long).
// The row's column indices and edge values are fetched 32 at a time, one per
// lane, and broadcast with shuffles, so each index is read once per feature
// chunk.  Every output element is written by exactly one lane and summed in
// CSR order: no atomics, bit-reproducible.
#pragma once
#include "stgkern/common.cuh"

namespace stgkern {

enum EdgeOp : int { kMul = 0, kAdd = 1 };

template <typename T>
__device__ __forceinline__ T combine(T x, T e, int op) { return op == kMul ? x * e : x + e; }

template <typename T>
struct Partial {
    T acc;
    i64 best;  // winning edge id (max/min), -1 while none
};

// One lane's reduction of feature f over the edges [kb, ke) of a row.  All 32
// lanes of the warp must call it with the same range (shuffles); lanes whose
// f is past F (live == false) only take part in the shuffles.
template <typename T, typename I>
__device__ __forceinline__ Partial<T> reduce_range(const I* __restrict__ indices, const T* __restrict__ X,
                                                  const T* __restrict__ E, int e_width, int op, i64 kb, i64 ke,
                                                  i64 f, bool live, i64 F, int reduce) {
    const int lane = lane_id();
    const bool extreme = reduce == kMax || reduce == kMin;
    Partial<T> p{reduce == kMax ? neg_inf<T>() : (reduce == kMin ? -neg_inf<T>() : T(0)), -1};
    for (i64 k0 = kb; k0 < ke; k0 += kWarp) {
        const i64 kl = k0 + lane;
        I j_l = 0;
        T e_l = T(1);
        if (kl < ke) {
            j_l = indices[kl];
            if (E != nullptr && e_width == 1) e_l = E[kl];
        }
        const int cnt = static_cast<int>(ke - k0 < kWarp ? ke - k0 : kWarp);
        for (int t = 0; t < cnt; ++t) {
            const I j = __shfl_sync(kFull, j_l, t);
            T e = __shfl_sync(kFull, e_l, t);
            if (!live) continue;
            const i64 k = k0 + t;
            if (E != nullptr && e_width != 1) e = E[k * F + f];
            const T x = X[static_cast<i64>(j) * F + f];
            const T m = E == nullptr ? x : combine(x, e, op);
            if (!extreme) {
                p.acc += m;
            } else if (wins(m, p.acc, p.best >= 0, reduce)) {  // strict: ties keep the lowest k
                p.acc = m;
                p.best = k;
            }
        }
    }
    return p;
}

template <typename T>
__device__ __forceinline__ void finish(Partial<T> p, i64 deg, int reduce, T* out, i64* arg, i64 o) {
    const bool extreme = reduce == kMax || reduce == kMin;
    if (reduce == kMean && deg > 0) p.acc /= static_cast<T>(deg);
    if (extreme && p.best < 0) p.acc = T(0);
    out[o] = p.acc;
    if (extreme && arg != nullptr) arg[o] = p.best;
}

// One warp per row.  Rows longer than long_row (when long_row >= 0) are left
// to gather_reduce_long.
template <typename T, typename I>
__device__ void gather_reduce(const i64* __restrict__ indptr, const I* __restrict__ indices,
                              const T* __restrict__ X, const T* __restrict__ E, int e_width, int op,
                              T* __restrict__ out, i64* __restrict__ arg, i64 n_rows, i64 F, int reduce,
                              i64 long_row) {
    const i64 row = global_warp();
    if (row >= n_rows) return;  // whole warp leaves together
    const i64 start = indptr[row], end = indptr[row + 1];
    if (long_row >= 0 && end - start > long_row) return;
    for (i64 f0 = 0; f0 < F; f0 += kWarp) {
        const i64 f = f0 + lane_id();
        const Partial<T> p = reduce_range<T, I>(indices, X, E, e_width, op, start, end, f, f < F, F, reduce);
        if (f < F) finish(p, end - start, reduce, out, arg, row * F + f);
    }
}

// 16-byte vectors: float4 (4 floats) / double2 (2 doubles).
template <typename T> struct Vec16;
template <> struct Vec16<float> {
    typedef float4 type;
    static constexpr int n = 4;
    static __device__ __forceinline__ float get(const float4& q, int u) {
        return u == 0 ? q.x : (u == 1 ? q.y : (u == 2 ? q.z : q.w));
    }
    static __device__ __forceinline__ float4 make(const float* v) { return float4{v[0], v[1], v[2], v[3]}; }
};
template <> struct Vec16<double> {
    typedef double2 type;
    static constexpr int n = 2;
    static __device__ __forceinline__ double get(const double2& q, int u) { return u == 0 ? q.x : q.y; }
    static __device__ __forceinline__ double2 make(const double* v) { return double2{v[0], v[1]}; }
};

// Vectorised gather-reduce for short rows, used when F is a multiple of the
// vector width, X and out are 16-byte aligned and E is absent or one value
// per edge (the launch wrapper checks).  A group of `group` lanes (a power of
// two dividing 32, about F / width) owns one row, each lane a 16-byte column
// slice; 32 / group rows per warp, so small F does not leave lanes idle.  No
// shuffles: every lane of a group reads the same index and weight (one
// broadcast load from L1), which also lets the groups of a warp run rows of
// different lengths.  Edges are summed in CSR order per element, exactly as
// in reduce_range: results are bit-identical to the scalar path.
template <typename T, typename I>
__device__ void gather_reduce_vec(const i64* __restrict__ indptr, const I* __restrict__ indices,
                                  const T* __restrict__ X, const T* __restrict__ E, int op, T* __restrict__ out,
                                  i64* __restrict__ arg, i64 n_rows, i64 F, int reduce, i64 long_row, int group) {
    typedef Vec16<T> V;
    typedef typename V::type VT;
    constexpr int W = V::n;
    const int lane = lane_id();
    const i64 row = global_warp() * (kWarp / group) + lane / group;
    if (row >= n_rows) return;  // no shuffles below: lanes may leave on their own
    const i64 start = indptr[row], end = indptr[row + 1];
    if (long_row >= 0 && end - start > long_row) return;
    const bool extreme = reduce == kMax || reduce == kMin;
    const i64 Fv = F / W;
    const VT* __restrict__ Xv = reinterpret_cast<const VT*>(X);
    for (i64 c = lane % group; c < Fv; c += group) {
        T acc[W];
        i64 best[W];
#pragma unroll
        for (int u = 0; u < W; ++u) {
            acc[u] = reduce == kMax ? neg_inf<T>() : (reduce == kMin ? -neg_inf<T>() : T(0));
            best[u] = -1;
        }
        for (i64 k = start; k < end; ++k) {
            const i64 j = static_cast<i64>(indices[k]);
            const T e = E != nullptr ? E[k] : T(1);
            const VT q = Xv[j * Fv + c];
#pragma unroll
            for (int u = 0; u < W; ++u) {
                const T x = V::get(q, u);
                const T m = E == nullptr ? x : combine(x, e, op);
                if (!extreme) {
                    acc[u] += m;
                } else if (wins(m, acc[u], best[u] >= 0, reduce)) {
                    acc[u] = m;
                    best[u] = k;
                }
            }
        }
#pragma unroll
        for (int u = 0; u < W; ++u) {
            if (reduce == kMean && end > start) acc[u] /= static_cast<T>(end - start);
            if (extreme && best[u] < 0) acc[u] = T(0);
            if (extreme && arg != nullptr) arg[row * F + c * W + u] = best[u];
        }
        reinterpret_cast<VT*>(out)[row * Fv + c] = V::make(acc);
    }
}

// One block per long row (rows[blockIdx.x]): warp w reduces the w-th
// contiguous slice of the row's edges, then warp 0 combines the slices in
// order (fixed order: deterministic; slices in edge order keep max/min ties
// on the lowest k).  blockDim.x is a multiple of 32, at most 1024.
template <typename T, typename I>
__device__ void gather_reduce_long(const i64* __restrict__ rows, const i64* __restrict__ indptr,
                                   const I* __restrict__ indices, const T* __restrict__ X,
                                   const T* __restrict__ E, int e_width, int op, T* __restrict__ out,
                                   i64* __restrict__ arg, i64 F, int reduce) {
    __shared__ T s_acc[kWarp][kWarp];
    __shared__ i64 s_best[kWarp][kWarp];
    const i64 row = rows[blockIdx.x];
    const int lane = lane_id(), warp = threadIdx.x / kWarp, n_warps = blockDim.x / kWarp;
    const i64 start = indptr[row], end = indptr[row + 1];
    const i64 part = (end - start + n_warps - 1) / n_warps;
    const i64 kb = start + warp * part < end ? start + warp * part : end;
    const i64 ke = kb + part < end ? kb + part : end;
    const bool extreme = reduce == kMax || reduce == kMin;
    for (i64 f0 = 0; f0 < F; f0 += kWarp) {
        const i64 f = f0 + lane;
        const Partial<T> p = reduce_range<T, I>(indices, X, E, e_width, op, kb, ke, f, f < F, F, reduce);
        s_acc[warp][lane] = p.acc;
        s_best[warp][lane] = p.best;
        __syncthreads();
        if (warp == 0 && f < F) {
            Partial<T> r{s_acc[0][lane], s_best[0][lane]};
            for (int w = 1; w < n_warps; ++w) {
                const T v = s_acc[w][lane];
                if (!extreme) {
                    r.acc += v;
                } else if (s_best[w][lane] >= 0 && wins(v, r.acc, r.best >= 0, reduce)) {
                    r.acc = v;
                    r.best = s_best[w][lane];
                }
            }
            finish(r, end - start, reduce, out, arg, row * F + f);
        }
        __syncthreads();
    }
}

// Gradient w.r.t. X, pulled over the transpose: row j of (t_indptr, t_indices)
// lists the destinations i of j's out-edges, t_eid their edge ids in the
// forward graph.
//   grad_X[j, f] = sum_t  c(i, f, k) * dmsg/dx,   k = t_eid[t], i = t_indices[t]
// c = grad_out[i, f] (/ deg(i) for mean; only where arg[i, f] == k for max/min),
// dmsg/dx = E(k, f) for mul (1 without E), 1 for add.
template <typename T, typename I>
__device__ void gather_reduce_grad_x(const i64* __restrict__ indptr, const i64* __restrict__ t_indptr,
                                     const I* __restrict__ t_indices, const i64* __restrict__ t_eid,
                                     const T* __restrict__ grad_out, const T* __restrict__ E, int e_width, int op,
                                     const i64* __restrict__ arg, T* __restrict__ grad_x,
                                     i64 n_src, i64 F, int reduce) {
    const i64 row = global_warp();
    if (row >= n_src) return;
    const int lane = lane_id();
    const i64 start = t_indptr[row], end = t_indptr[row + 1];
    const bool extreme = reduce == kMax || reduce == kMin;
    for (i64 f0 = 0; f0 < F; f0 += kWarp) {
        const i64 f = f0 + lane;
        const bool live = f < F;
        T acc = T(0);
        for (i64 t0 = start; t0 < end; t0 += kWarp) {
            const i64 tl = t0 + lane;
            I i_l = 0;
            i64 k_l = 0;
            T s_l = T(1);  // per-edge scalar factor: edge weight and 1/deg
            if (tl < end) {
                i_l = t_indices[tl];
                k_l = t_eid[tl];
                if (E != nullptr && e_width == 1 && op == kMul) s_l = E[k_l];
                if (reduce == kMean) s_l /= static_cast<T>(indptr[i_l + 1] - indptr[i_l]);
            }
            const int cnt = static_cast<int>(end - t0 < kWarp ? end - t0 : kWarp);
            for (int t = 0; t < cnt; ++t) {
                const I i = __shfl_sync(kFull, i_l, t);
                const i64 k = __shfl_sync(kFull, k_l, t);
                const T s = __shfl_sync(kFull, s_l, t);
                if (!live) continue;
                const i64 o = static_cast<i64>(i) * F + f;
                if (extreme && arg[o] != k) continue;
                T d = s;
                if (E != nullptr && e_width != 1 && op == kMul) d *= E[k * F + f];
                acc += grad_out[o] * d;
            }
        }
        if (live) grad_x[row * F + f] = acc;
    }
}

// Gradient w.r.t. E, one warp per destination row, edges in CSR order:
//   grad_E[k, f] = c(i, f, k) * dmsg/de   (e_width == F)
//   grad_E[k]    = sum_f of the same       (e_width == 1, a warp reduction)
// dmsg/de = X[j, f] for mul, 1 for add.
template <typename T, typename I>
__device__ void gather_reduce_grad_e(const i64* __restrict__ indptr, const I* __restrict__ indices,
                                     const T* __restrict__ X, const T* __restrict__ grad_out, int e_width, int op,
                                     const i64* __restrict__ arg, T* __restrict__ grad_e,
                                     i64 n_rows, i64 F, int reduce) {
    const i64 row = global_warp();
    if (row >= n_rows) return;
    const int lane = lane_id();
    const i64 start = indptr[row], end = indptr[row + 1];
    const bool extreme = reduce == kMax || reduce == kMin;
    const T scale = (reduce == kMean && end > start) ? T(1) / static_cast<T>(end - start) : T(1);
    for (i64 k = start; k < end; ++k) {
        const i64 j = static_cast<i64>(indices[k]);
        T part = T(0);
        for (i64 f = lane; f < F; f += kWarp) {
            const i64 o = row * F + f;
            T c = (extreme && arg[o] != k) ? T(0) : grad_out[o] * scale;
            if (op == kMul) c *= X[j * F + f];
            if (e_width == 1) part += c; else grad_e[k * F + f] = c;
        }
        if (e_width == 1) {
            part = warp_sum(part);
            if (lane == 0) grad_e[k] = part;
        }
    }
}

}  // namespace stgkern
