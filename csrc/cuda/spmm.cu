// spmm: out[i] = REDUCE_{k in row i} w[k] * X[indices[k]]  (sum, mean, max, min)
// and its backward (grad_X pulled over the cached transpose, grad_w per edge).
#include "stgkern/aggregate.cuh"

using stgkern::i64;

template <typename T, typename I>
__global__ void spmm_fwd(const i64* indptr, const I* indices, const T* X, const T* w,
                         T* out, i64* arg, i64 n_rows, i64 F, int reduce, i64 long_row) {
    stgkern::gather_reduce<T, I>(indptr, indices, X, w, 1, stgkern::kMul, out, arg, n_rows, F, reduce, long_row);
}

// Vectorised short rows (see gather_reduce_vec): `group` lanes per row.
template <typename T, typename I>
__global__ void spmm_fwd_vec(const i64* indptr, const I* indices, const T* X, const T* w,
                             T* out, i64* arg, i64 n_rows, i64 F, int reduce, i64 long_row, int group) {
    stgkern::gather_reduce_vec<T, I>(indptr, indices, X, w, stgkern::kMul, out, arg, n_rows, F, reduce, long_row,
                                     group);
}

// Rows with more than long_row edges, one block each (rows lists them).
template <typename T, typename I>
__global__ void spmm_fwd_long(const i64* rows, const i64* indptr, const I* indices, const T* X, const T* w,
                              T* out, i64* arg, i64 F, int reduce) {
    stgkern::gather_reduce_long<T, I>(rows, indptr, indices, X, w, 1, stgkern::kMul, out, arg, F, reduce);
}

template <typename T, typename I>
__global__ void spmm_bwd_x(const i64* indptr, const i64* t_indptr, const I* t_indices, const i64* t_eid,
                           const T* grad_out, const T* w, const i64* arg, T* grad_x, i64 n_src, i64 F,
                           int reduce) {
    stgkern::gather_reduce_grad_x<T, I>(indptr, t_indptr, t_indices, t_eid, grad_out, w, 1, stgkern::kMul,
                                        arg, grad_x, n_src, F, reduce);
}

template <typename T, typename I>
__global__ void spmm_bwd_w(const i64* indptr, const I* indices, const T* X, const T* grad_out,
                           const i64* arg, T* grad_w, i64 n_rows, i64 F, int reduce) {
    stgkern::gather_reduce_grad_e<T, I>(indptr, indices, X, grad_out, 1, stgkern::kMul, arg, grad_w,
                                        n_rows, F, reduce);
}

#ifdef STGKERN_AOT
#define STGKERN_SPMM(T, I) \
    fp[n++] = (void*)&spmm_fwd<T, I>; fp[n++] = (void*)&spmm_fwd_vec<T, I>; fp[n++] = (void*)&spmm_fwd_long<T, I>; \
    fp[n++] = (void*)&spmm_bwd_x<T, I>; fp[n++] = (void*)&spmm_bwd_w<T, I>;
int stgkern_aot_spmm(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_SPMM) return n; }
#endif
