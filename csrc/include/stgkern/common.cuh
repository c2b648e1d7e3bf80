// Shared device helpers for the stgkern CUDA kernels.
//
// The kernels are compiled two ways: ahead of time by nvcc (tools/cuda_build.py)
// and at run time by NVRTC through CuPy.  NVRTC ships no C library headers, so
// this file avoids <cstdint>/<cmath> and spells the few things it needs itself.
#pragma once

namespace stgkern {

// Edge and offset arithmetic is 64-bit everywhere: nnz and n*F pass 2^31.
typedef long long i64;

constexpr int kWarp = 32;
constexpr unsigned kFull = 0xffffffffu;

// Reductions
enum Reduce : int { kSum = 0, kMean = 1, kMax = 2, kMin = 3 };

// Does term m replace the running max/min acc (have: acc holds a term yet)?  A
// strictly greater (smaller) number does; a NaN does while acc is a number, and
// nothing replaces a NaN: NaN anywhere in a reduction is its result, at its
// first position, as NumPy's max/min give.
template <typename T>
__device__ __forceinline__ bool wins(T m, T acc, bool have, int reduce) {
    if (!have) return true;
    if (acc != acc) return false;
    if (m != m) return true;
    return reduce == kMax ? m > acc : m < acc;
}

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>() { return __longlong_as_double(0xfff0000000000000LL); }
template <typename T> __device__ __forceinline__ T quiet_nan();
template <> __device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double quiet_nan<double>() { return __longlong_as_double(0x7ff8000000000000LL); }

__device__ __forceinline__ float fexp(float x) { return expf(x); }
__device__ __forceinline__ double fexp(double x) { return exp(x); }
__device__ __forceinline__ float fsqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double fsqrt(double x) { return sqrt(x); }

// Sum over the 32 lanes with a fixed butterfly order: every lane gets the
// same, run-to-run reproducible result.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
    return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
    for (int o = kWarp / 2; o > 0; o >>= 1) {
        T u = __shfl_xor_sync(kFull, v, o);
        v = u > v ? u : v;
    }
    return v;
}

// Global warp id and lane of the calling thread (grids are sized in warps).
__device__ __forceinline__ i64 global_warp() {
    return (static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
}
__device__ __forceinline__ int lane_id() { return threadIdx.x & (kWarp - 1); }

}  // namespace stgkern

// Every kernel template is instantiated for these (value, index) pairs; the
// loader's name expressions list the same four.  STGKERN_FOR_TYPES(M) expands
// M(T, I) once per pair (used by the STGKERN_AOT instantiation blocks).
#define STGKERN_FOR_TYPES(M) M(float, int) M(float, long long) M(double, int) M(double, long long)
