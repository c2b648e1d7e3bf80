// message_passing: out[i] = REDUCE_{k in row i} X[indices[k]] (op) E[k], op in {mul, add},
// E of width F or 1 (broadcast), and its backward (grad_X over the transpose, grad_E per edge).
#include "stgkern/aggregate.cuh"

using stgkern::i64;

template <typename T, typename I>
__global__ void mp_fwd(const i64* indptr, const I* indices, const T* X, const T* E, int e_width, int op,
                       T* out, i64* arg, i64 n_rows, i64 F, int reduce, i64 long_row) {
    stgkern::gather_reduce<T, I>(indptr, indices, X, E, e_width, op, out, arg, n_rows, F, reduce, long_row);
}

// Vectorised short rows for E absent or one value per edge (see gather_reduce_vec).
template <typename T, typename I>
__global__ void mp_fwd_vec(const i64* indptr, const I* indices, const T* X, const T* E, int op,
                           T* out, i64* arg, i64 n_rows, i64 F, int reduce, i64 long_row, int group) {
    stgkern::gather_reduce_vec<T, I>(indptr, indices, X, E, op, out, arg, n_rows, F, reduce, long_row, group);
}

// Rows with more than long_row edges, one block each (rows lists them).
template <typename T, typename I>
__global__ void mp_fwd_long(const i64* rows, const i64* indptr, const I* indices, const T* X, const T* E,
                            int e_width, int op, T* out, i64* arg, i64 F, int reduce) {
    stgkern::gather_reduce_long<T, I>(rows, indptr, indices, X, E, e_width, op, out, arg, F, reduce);
}

template <typename T, typename I>
__global__ void mp_bwd_x(const i64* indptr, const i64* t_indptr, const I* t_indices, const i64* t_eid,
                         const T* grad_out, const T* E, int e_width, int op, const i64* arg, T* grad_x,
                         i64 n_src, i64 F, int reduce) {
    stgkern::gather_reduce_grad_x<T, I>(indptr, t_indptr, t_indices, t_eid, grad_out, E, e_width, op, arg,
                                        grad_x, n_src, F, reduce);
}

template <typename T, typename I>
__global__ void mp_bwd_e(const i64* indptr, const I* indices, const T* X, const T* grad_out, int e_width,
                         int op, const i64* arg, T* grad_e, i64 n_rows, i64 F, int reduce) {
    stgkern::gather_reduce_grad_e<T, I>(indptr, indices, X, grad_out, e_width, op, arg, grad_e, n_rows, F,
                                        reduce);
}

#ifdef STGKERN_AOT
#define STGKERN_MP(T, I) \
    fp[n++] = (void*)&mp_fwd<T, I>; fp[n++] = (void*)&mp_fwd_vec<T, I>; fp[n++] = (void*)&mp_fwd_long<T, I>; \
    fp[n++] = (void*)&mp_bwd_x<T, I>; fp[n++] = (void*)&mp_bwd_e<T, I>;
int stgkern_aot_message_passing(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_MP) return n; }
#endif
