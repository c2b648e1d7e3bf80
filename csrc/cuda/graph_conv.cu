// graph_conv's elementwise tail, fused (the dense products go to cuBLAS, the
// sparse step to spmm):
//
//   gc_epilogue:  S[i, f] = act(S[i, f] + Z[i, f] + b[f])   in place, one pass
//                 (Z and b may be null); one thread per element.
//   gc_act_bwd:   G[i, f] = grad_out[i, f] * act'(out[i, f]) (act' from the
//                 forward output: relu out > 0, sigmoid out(1 - out), tanh
//                 1 - out^2), written unless write_g == 0 (identity), and the
//                 bias-gradient partials partial[t, f] = sum of G over the
//                 rows of tile t (tile_rows rows, summed in row order).  One
//                 block per tile, threads over f; the wrapper adds the tile
//                 partials in tile order, so the bias gradient is the same
//                 bits on every run (no atomics).
//
// The arithmetic matches stgkern/_numba/graph_conv.py: relu maps every value
// that is not > 0 (NaN included) to v - v (+0, NaN stays NaN); sigmoid takes
// exp of a non-positive argument only.  The index type I is unused.
#include "stgkern/common.cuh"

using stgkern::i64;

namespace {

enum Act : int { kIdentity = 0, kRelu = 1, kSigmoid = 2, kTanh = 3 };

__device__ __forceinline__ float ftanh(float x) { return tanhf(x); }
__device__ __forceinline__ double ftanh(double x) { return tanh(x); }

template <typename T>
__device__ __forceinline__ T activate(T v, int act) {
    if (act == kRelu) {
        if (!(v > T(0))) v = v - v;
    } else if (act == kSigmoid) {
        if (v >= T(0)) {
            v = T(1) / (T(1) + stgkern::fexp(-v));
        } else {
            const T e = stgkern::fexp(v);
            v = e / (T(1) + e);
        }
    } else if (act == kTanh) {
        v = ftanh(v);
    }
    return v;
}

template <typename T>
__device__ __forceinline__ T act_grad(T g, T o, int act) {
    if (act == kRelu) return o > T(0) ? g : g * T(0);
    if (act == kSigmoid) return g * (o * (T(1) - o));
    if (act == kTanh) return g * (T(1) - o * o);
    return g;
}

}  // namespace

template <typename T, typename I>
__global__ void gc_epilogue(T* __restrict__ S, const T* __restrict__ Z, const T* __restrict__ b, i64 n, i64 F,
                            int act) {
    const i64 e = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e >= n * F) return;
    T v = S[e];
    if (Z != nullptr) v += Z[e];
    if (b != nullptr) v += b[e % F];
    S[e] = activate(v, act);
}

template <typename T, typename I>
__global__ void gc_act_bwd(const T* __restrict__ grad_out, const T* __restrict__ out, T* __restrict__ G,
                           T* __restrict__ partial, i64 n, i64 F, int act, int write_g, i64 tile_rows) {
    const i64 r0 = static_cast<i64>(blockIdx.x) * tile_rows;
    const i64 r1 = r0 + tile_rows < n ? r0 + tile_rows : n;
    for (i64 f = threadIdx.x; f < F; f += blockDim.x) {
        T acc = T(0);
        for (i64 i = r0; i < r1; ++i) {
            const i64 e = i * F + f;
            const T g = act == kIdentity ? grad_out[e] : act_grad(grad_out[e], out[e], act);
            if (write_g) G[e] = g;
            acc += g;
        }
        if (partial != nullptr) partial[static_cast<i64>(blockIdx.x) * F + f] = acc;
    }
}

#ifdef STGKERN_AOT
#define STGKERN_GC(T, I) fp[n++] = (void*)&gc_epilogue<T, I>; fp[n++] = (void*)&gc_act_bwd<T, I>;
int stgkern_aot_graph_conv(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_GC) return n; }
#endif
