// node_features: per-event features in graph node order (see
// stgkern/features.py for the columns).  One thread per output element
// (node r, column c): coalesced stores of the (n, d) matrix; the gathers of
// order/user/behavior are the same few values for the d threads of a row and
// hit in cache.  Column layout, B = n_behaviors:
//   [0, B)            one-hot behavior[e]
//   B                 log1p(value[e]) when intensity (0 without values)
//   next B            one-hot of the previous node's behavior, same user only
//   next B            one-hot of the next node's behavior (future), same user only
#include "stgkern/common.cuh"

using stgkern::i64;

template <typename T, typename I>
__global__ void node_features_fwd(const i64* order, const i64* user, const i64* behavior, const double* value,
                                  T* out, i64 n, i64 d, i64 B, int intensity, int context, int future) {
    const i64 o = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (o >= n * d) return;
    const i64 r = o / d;
    i64 c = o - r * d;
    const i64 e = order[r];
    double v = 0.0;
    if (c < B) {
        v = behavior[e] == c ? 1.0 : 0.0;
    } else {
        c -= B;
        if (intensity) {
            if (c == 0 && value != nullptr) v = log1p(value[e]);
            c -= 1;
        }
        if (c >= 0 && context) {
            // c in [0, B): previous event; [B, 2B): next event (future only)
            const i64 nb = c < B ? r - 1 : r + 1;
            const i64 col = c < B ? c : c - B;
            if ((c < B || future) && nb >= 0 && nb < n) {
                const i64 en = order[nb];
                if (user[en] == user[e] && behavior[en] == col) v = 1.0;
            }
        }
    }
    out[o] = static_cast<T>(v);
}

#ifdef STGKERN_AOT
#define STGKERN_NF(T, I) fp[n++] = (void*)&node_features_fwd<T, I>;
int stgkern_aot_node_features(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_NF) return n; }
#endif
