// time_encoding: out[e, k] = cos(omega[k] * dt[e] + phase[k]), the argument in
// double (dt in seconds times omega = 1 loses all phase in float), only the
// result stored as T.  One thread per output element: consecutive threads write
// consecutive columns of a row, so stores coalesce for any dim.
#include "stgkern/common.cuh"

using stgkern::i64;

template <typename T, typename I>
__global__ void time_encoding_fwd(const double* dt, const double* omega, const double* phase, T* out, i64 n,
                                  i64 dim) {
    const i64 o = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (o >= n * dim) return;
    const i64 e = o / dim, k = o - e * dim;
    out[o] = static_cast<T>(cos(omega[k] * dt[e] + phase[k]));
}

#ifdef STGKERN_AOT
#define STGKERN_TE(T, I) fp[n++] = (void*)&time_encoding_fwd<T, I>;
int stgkern_aot_time_encoding(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_TE) return n; }
#endif
