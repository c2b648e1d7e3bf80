// edge_softmax: per destination row and head h,
//   out[k, h] = exp(s[k, h] - max_row) / sum_row exp(s - max_row)
// backward: grad_s[k, h] = out[k, h] * (grad_out[k, h] - sum_row grad_out * out).
// One warp per (row, head), lanes over the row's edges: max, exp-sum and the
// normalisation run in one kernel; the warp reductions have a fixed order.
#include "stgkern/common.cuh"

using stgkern::i64;

// I is unused (only indptr is read); kept so every op shares one naming scheme.
template <typename T, typename I>
__global__ void edge_softmax_fwd(const i64* indptr, const T* s, T* out, i64 n_rows, i64 H) {
    const i64 w = stgkern::global_warp();
    if (w >= n_rows * H) return;
    const int lane = stgkern::lane_id();
    const i64 row = w / H, h = w % H;
    const i64 start = indptr[row], end = indptr[row + 1];
    T m = stgkern::neg_inf<T>();
    for (i64 k = start + lane; k < end; k += stgkern::kWarp) {
        const T v = s[k * H + h];
        m = v > m ? v : m;
    }
    m = stgkern::warp_max(m);
    T z = T(0);
    for (i64 k = start + lane; k < end; k += stgkern::kWarp) z += stgkern::fexp(s[k * H + h] - m);
    z = stgkern::warp_sum(z);
    for (i64 k = start + lane; k < end; k += stgkern::kWarp) out[k * H + h] = stgkern::fexp(s[k * H + h] - m) / z;
}

template <typename T, typename I>
__global__ void edge_softmax_bwd(const i64* indptr, const T* grad_out, const T* out, T* grad_s, i64 n_rows,
                                 i64 H) {
    const i64 w = stgkern::global_warp();
    if (w >= n_rows * H) return;
    const int lane = stgkern::lane_id();
    const i64 row = w / H, h = w % H;
    const i64 start = indptr[row], end = indptr[row + 1];
    T d = T(0);
    for (i64 k = start + lane; k < end; k += stgkern::kWarp) d += grad_out[k * H + h] * out[k * H + h];
    d = stgkern::warp_sum(d);
    for (i64 k = start + lane; k < end; k += stgkern::kWarp) {
        const i64 o = k * H + h;
        grad_s[o] = out[o] * (grad_out[o] - d);
    }
}

#ifdef STGKERN_AOT
#define STGKERN_ES(T, I) fp[n++] = (void*)&edge_softmax_fwd<T, I>; fp[n++] = (void*)&edge_softmax_bwd<T, I>;
int stgkern_aot_edge_softmax(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_ES) return n; }
#endif
