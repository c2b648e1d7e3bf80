// segment_reduce: out[s] = REDUCE over rows ptr[s]:ptr[s+1] of X (sum, mean, max, last);
// arg (max, last) is the winning row, -1 for empty segments; max ties keep the lowest row.
// One warp per segment, lanes over features, rows in ascending order.
#include "stgkern/common.cuh"

using stgkern::i64;

enum SegReduce : int { kSegSum = 0, kSegMean = 1, kSegMax = 2, kSegLast = 3 };

template <typename T, typename I>
__global__ void segment_reduce_fwd(const i64* ptr, const T* X, T* out, i64* arg, i64 n_seg, i64 F, int reduce) {
    const i64 s = stgkern::global_warp();
    if (s >= n_seg) return;
    const int lane = stgkern::lane_id();
    const i64 a = ptr[s], b = ptr[s + 1];
    for (i64 f = lane; f < F; f += stgkern::kWarp) {
        T acc = T(0);
        i64 best = -1;
        if (b > a) {
            if (reduce == kSegLast) {
                best = b - 1;
                acc = X[best * F + f];
            } else if (reduce == kSegMax) {
                best = a;
                acc = X[a * F + f];
                for (i64 r = a + 1; r < b; ++r) {
                    const T v = X[r * F + f];
                    if (stgkern::wins(v, acc, true, stgkern::kMax)) { acc = v; best = r; }
                }
            } else {
                for (i64 r = a; r < b; ++r) acc += X[r * F + f];
                if (reduce == kSegMean) acc *= T(1) / static_cast<T>(b - a);
            }
        }
        out[s * F + f] = acc;
        if (arg != nullptr) arg[s * F + f] = best;
    }
}

// grad_X must be zero-filled by the caller (rows outside every segment stay 0).
template <typename T, typename I>
__global__ void segment_reduce_bwd(const i64* ptr, const T* grad_out, const i64* arg, T* grad_x, i64 n_seg,
                                   i64 F, int reduce) {
    const i64 s = stgkern::global_warp();
    if (s >= n_seg) return;
    const int lane = stgkern::lane_id();
    const i64 a = ptr[s], b = ptr[s + 1];
    if (b == a) return;
    const T scale = reduce == kSegMean ? T(1) / static_cast<T>(b - a) : T(1);
    for (i64 r = a; r < b; ++r) {
        for (i64 f = lane; f < F; f += stgkern::kWarp) {
            const T g = grad_out[s * F + f];
            T v;
            if (reduce == kSegSum || reduce == kSegMean) v = g * scale;
            else v = arg[s * F + f] == r ? g : T(0);
            grad_x[r * F + f] = v;
        }
    }
}

#ifdef STGKERN_AOT
#define STGKERN_SR(T, I) fp[n++] = (void*)&segment_reduce_fwd<T, I>; fp[n++] = (void*)&segment_reduce_bwd<T, I>;
int stgkern_aot_segment_reduce(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_SR) return n; }
#endif
