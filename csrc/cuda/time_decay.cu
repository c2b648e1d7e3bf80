// time_decay: out[e] = exp(-dt[e] / tau), formed in double as on the CPU
// (dt.astype(float64) * (-1 / tau)), stored as T.  The index type I is unused
// (every kernel is instantiated over the loader's four type pairs).
#include "stgkern/common.cuh"

using stgkern::i64;

template <typename T, typename I>
__global__ void time_decay_fwd(const double* dt, double neg_inv_tau, T* out, i64 n) {
    const i64 e = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e >= n) return;
    out[e] = static_cast<T>(exp(dt[e] * neg_inv_tau));
}

#ifdef STGKERN_AOT
#define STGKERN_TD(T, I) fp[n++] = (void*)&time_decay_fwd<T, I>;
int stgkern_aot_time_decay(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_TD) return n; }
#endif
