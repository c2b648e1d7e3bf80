// sddmm forward: per edge k (j -> i)
//   dot     out[k]    = X[i] . Y[j]
//   cosine  out[k]    = X[i] . Y[j] / (|X[i]| |Y[j]|)   (0 when a norm is 0)
//   add/sub/mul out[k, f] = X[i, f] (op) Y[j, f]
// One warp per destination row i, edges in CSR order, lanes over features.
// The backward is composed in Python from the message_passing and
// segment_reduce kernels (pulls over the row and over the transpose).
#include "stgkern/common.cuh"

using stgkern::i64;

enum SddmmOp : int { kDot = 0, kCosine = 1, kAddOp = 2, kSubOp = 3, kMulOp = 4 };

template <typename T, typename I>
__global__ void sddmm_fwd(const i64* indptr, const I* indices, const T* X, const T* Y, T* out, i64 n_rows,
                          i64 F, int op) {
    const i64 row = stgkern::global_warp();
    if (row >= n_rows) return;
    const int lane = stgkern::lane_id();
    const i64 start = indptr[row], end = indptr[row + 1];
    const T* x = X + row * F;
    if (op == kDot || op == kCosine) {
        T nx = T(0);
        if (op == kCosine) {
            for (i64 f = lane; f < F; f += stgkern::kWarp) nx += x[f] * x[f];
            nx = stgkern::fsqrt(stgkern::warp_sum(nx));
        }
        for (i64 k = start; k < end; ++k) {
            const T* y = Y + static_cast<i64>(indices[k]) * F;
            T d = T(0), ny = T(0);
            for (i64 f = lane; f < F; f += stgkern::kWarp) {
                d += x[f] * y[f];
                if (op == kCosine) ny += y[f] * y[f];
            }
            d = stgkern::warp_sum(d);
            if (op == kCosine) {
                ny = stgkern::fsqrt(stgkern::warp_sum(ny));
                d = (nx == T(0) || ny == T(0)) ? T(0) : d / (nx * ny);
            }
            if (lane == 0) out[k] = d;
        }
        return;
    }
    for (i64 k = start; k < end; ++k) {
        const T* y = Y + static_cast<i64>(indices[k]) * F;
        for (i64 f = lane; f < F; f += stgkern::kWarp) {
            const T a = x[f], b = y[f];
            out[k * F + f] = op == kAddOp ? a + b : (op == kSubOp ? a - b : a * b);
        }
    }
}

#ifdef STGKERN_AOT
#define STGKERN_SD(T, I) fp[n++] = (void*)&sddmm_fwd<T, I>;
int stgkern_aot_sddmm(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_SD) return n; }
#endif
