// TiSASRec's time rescaling and clipped interval matrices on the GPU
// (semantics: stgkern/_numba/time_intervals.py).
//
//   time_intervals_rescale    one warp per sequence: t_min and the smallest
//                             non-zero gap between consecutive events (warp
//                             min-reductions: min is exact, so the order does
//                             not matter), then
//                             out[p] = rint((t[p] - t_min) / scale) + 1
//                             (rint rounds half to even, as np.round; the
//                             subtraction is in T, exact for integer times,
//                             the division in double, as on the CPU);
//   time_intervals_matrices   one block per sequence: the block writes the
//                             left-padded row seq (the last maxlen kept
//                             rescaled times), synchronises, then writes
//                             M[i, j] = min(|seq_i - seq_j|, span) with
//                             consecutive threads on consecutive entries
//                             (coalesced stores; the row is re-read from L1).
//
// Each output element has one writer; no atomics.  Template T is the time
// type (long long or double); the index type I is unused (long long).
#include "stgkern/common.cuh"

using stgkern::i64;
using stgkern::kFull;
using stgkern::kWarp;

namespace {

template <typename T>
__device__ __forceinline__ T warp_min(T v) {
#pragma unroll
    for (int o = kWarp / 2; o > 0; o >>= 1) {
        const T u = __shfl_xor_sync(kFull, v, o);
        v = u < v ? u : v;
    }
    return v;
}

}  // namespace

// out: float64 (n_pos,), whole numbers; empty sequences write nothing.
template <typename T, typename I>
__global__ void time_intervals_rescale(const i64* __restrict__ ptr, i64 n_seq, const T* __restrict__ times,
                                       double* out) {
    const i64 s = stgkern::global_warp();
    if (s >= n_seq) return;  // whole warp
    const int lane = stgkern::lane_id();
    const i64 p0 = ptr[s], p1 = ptr[s + 1];
    if (p1 == p0) return;  // whole warp
    T t_min = times[p0];
    T gap = T(0);
    int have = 0;  // a non-zero gap was seen
    for (i64 p = p0 + lane; p < p1; p += kWarp) {
        const T t = times[p];
        t_min = t < t_min ? t : t_min;
        if (p + 1 < p1) {
            const T d = times[p + 1] - t;
            if (d != T(0) && (!have || d < gap)) {
                gap = d;
                have = 1;
            }
        }
    }
    t_min = warp_min(t_min);
    // a lane without a non-zero gap borrows the gap of the first lane that has one
    const unsigned with = __ballot_sync(kFull, have != 0);
    const T other = __shfl_sync(kFull, gap, with ? __ffs(static_cast<int>(with)) - 1 : 0);
    const T scale = warp_min(have ? gap : other);
    const double sc = with ? static_cast<double>(scale) : 1.0;  // 1 when every gap is 0
    for (i64 p = p0 + lane; p < p1; p += kWarp) out[p] = rint(static_cast<double>(times[p] - t_min) / sc) + 1.0;
}

// drop[s]: events removed from the end (drop[s] <= length); seqs (n_seq, maxlen)
// and mats (n_seq, maxlen, maxlen) int32.  resc values fit int32 (checked by the caller).
template <typename T, typename I>
__global__ void time_intervals_matrices(const i64* __restrict__ ptr, i64 n_seq, const double* __restrict__ resc,
                                        const i64* __restrict__ drop, i64 maxlen, i64 span, int* seqs, int* mats) {
    const i64 s = blockIdx.x;
    if (s >= n_seq) return;  // whole block
    const i64 p0 = ptr[s], p1 = ptr[s + 1] - drop[s];
    const i64 kept = p1 - p0 > 0 ? p1 - p0 : 0;
    const i64 n = kept < maxlen ? kept : maxlen;
    int* row = seqs + s * maxlen;
    for (i64 c = threadIdx.x; c < maxlen; c += blockDim.x) {
        const i64 src = c - (maxlen - n);  // left padding with time 0
        row[c] = src >= 0 ? static_cast<int>(resc[p1 - n + src]) : 0;
    }
    __syncthreads();
    int* M = mats + s * maxlen * maxlen;
    const i64 total = maxlen * maxlen;
    for (i64 e = threadIdx.x; e < total; e += blockDim.x) {
        const i64 i = e / maxlen, j = e - i * maxlen;
        i64 d = static_cast<i64>(row[i]) - static_cast<i64>(row[j]);
        d = d < 0 ? -d : d;
        M[e] = static_cast<int>(d < span ? d : span);
    }
}

#ifdef STGKERN_AOT
// times are int64 or float64; the index type is always long long
#define STGKERN_TI(T, I) \
    fp[n++] = (void*)&time_intervals_rescale<T, I>; fp[n++] = (void*)&time_intervals_matrices<T, I>;
int stgkern_aot_time_intervals(void** fp) {
    int n = 0;
    STGKERN_TI(long long, long long) STGKERN_TI(double, long long)
    return n;
}
#endif
