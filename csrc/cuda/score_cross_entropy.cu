// score_cross_entropy: the two elementwise passes over a logit tile
// L = Q @ items[s:s+w].T (m, w), which cuBLAS writes (stgkern/_cuda/score_cross_entropy.py).
//   sce_tile_lse:  per row r, tmax[r] = max_c z_rc and tsum[r] = sum_c exp(z_rc - tmax[r]),
//                  z_rc = L[r, c] + bias[s + c]; the wrapper merges the tiles in tile order.
//   sce_tile_grad: L[r, c] = g[r] * (exp(z_rc - lse[r]) - [s + c == target[r]]), in place,
//                  the tile the gradient products then consume.
// One warp per row, lanes striding the row so reads coalesce; the warp reductions
// have a fixed butterfly order, so the results do not change from run to run.
// bias == nullptr means no bias.
#include "stgkern/common.cuh"

using stgkern::i64;

// I is unused (the targets are int64); kept so every op shares one naming scheme.
template <typename T, typename I>
__global__ void sce_tile_lse(const T* L, const T* bias, i64 s, double* tmax, double* tsum, i64 m, i64 w) {
    const i64 r = stgkern::global_warp();
    if (r >= m) return;
    const int lane = stgkern::lane_id();
    const T* row = L + r * w;
    const T* b = bias ? bias + s : nullptr;
    T mx = stgkern::neg_inf<T>();
    for (i64 c = lane; c < w; c += stgkern::kWarp) {
        const T v = b ? row[c] + b[c] : row[c];
        mx = v > mx ? v : mx;
    }
    mx = stgkern::warp_max(mx);
    // the exponentials are in T, their sum in double: a lane adds up to w / 32
    // terms, which float32 would round once per term
    double acc = 0.0;
    for (i64 c = lane; c < w; c += stgkern::kWarp) {
        const T v = b ? row[c] + b[c] : row[c];
        acc += static_cast<double>(stgkern::fexp(v - mx));
    }
    acc = stgkern::warp_sum(acc);
    if (lane == 0) {
        tmax[r] = static_cast<double>(mx);
        tsum[r] = acc;
    }
}

template <typename T, typename I>
__global__ void sce_tile_grad(T* L, const T* bias, const i64* target, const double* lse, const T* g, i64 s, i64 m,
                              i64 w) {
    const i64 r = stgkern::global_warp();
    if (r >= m) return;
    const int lane = stgkern::lane_id();
    T* row = L + r * w;
    const T* b = bias ? bias + s : nullptr;
    // lse in T, as the CPU kernel takes it: the difference z - lse is what must be accurate,
    // and both sides then carry T's rounding
    const T off = static_cast<T>(lse[r]), gr = g[r];
    const i64 t = target[r] - s;
    for (i64 c = lane; c < w; c += stgkern::kWarp) {
        const T v = b ? row[c] + b[c] : row[c];
        const T p = stgkern::fexp(v - off);
        row[c] = gr * (c == t ? p - T(1) : p);
    }
}

#ifdef STGKERN_AOT
#define STGKERN_SCE(T, I) fp[n++] = (void*)&sce_tile_lse<T, I>; fp[n++] = (void*)&sce_tile_grad<T, I>;
int stgkern_aot_score_cross_entropy(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_SCE) return n; }
#endif
