// topk selection: merge one (rows, cols) score tile into a running per-row
// top-k.  The tile S = Q[r0:r1] @ items[c0:c1].T comes from cuBLAS (cupy.matmul
// in stgkern/_cuda/topk.py); this kernel only selects.
//
// One block per query row of the tile.  The row's running top-k (best_s,
// best_i: (m, k), best-first, unfilled slots score -inf / index -1) is loaded
// into a shared buffer; the block then scans the tile row blockDim.x scores at
// a time, appends every score that beats the current k-th (warp ballots and a
// block prefix give each candidate its slot, no atomics) and, when the next
// round might not fit, sorts the buffer (bitonic, best-first) and keeps the
// first k.  Items arrive in ascending index order, so a score *equal* to the
// k-th always has the larger index and loses the tie: the only test per score
// is `s > kth`, exactly as on the CPU.  The sort key (score descending, index
// ascending) is a total order over distinct items, so the result does not
// depend on the order candidates were appended in.
//
// Excluded items (CSR, rows sorted ascending) are set to NaN in the tile first;
// NaN never compares greater, so they are never selected.
#include "stgkern/common.cuh"

using stgkern::i64;

namespace {

// Capacity of the shared candidate buffer: k + blockDim.x <= kCap, so
// k <= 1024 with up to 1024 threads (the wrapper falls back beyond that).
constexpr int kCap = 2048;

template <typename T>
__device__ __forceinline__ bool better(T sa, i64 ia, T sb, i64 ib) {
    // valid (index >= 0) beats padding; then higher score; then lower index
    if (ia < 0) return false;
    if (ib < 0) return true;
    return sa > sb || (sa == sb && ia < ib);
}

// Sort s_s/s_i[0:n) best-first; n a power of two, every thread of the block calls.
template <typename T>
__device__ void bitonic_sort(T* s_s, i64* s_i, int n) {
    for (int size = 2; size <= n; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
                const int i = 2 * t - (t & (stride - 1));
                const int j = i + stride;
                const bool best_first = (i & size) == 0;
                const bool swap = best_first ? better(s_s[j], s_i[j], s_s[i], s_i[i])
                                             : better(s_s[i], s_i[i], s_s[j], s_i[j]);
                if (swap) {
                    const T ts = s_s[i]; s_s[i] = s_s[j]; s_s[j] = ts;
                    const i64 ti = s_i[i]; s_i[i] = s_i[j]; s_i[j] = ti;
                }
            }
            __syncthreads();
        }
    }
}

}  // namespace

// tile: (n_rows, n_cols) row-major scores of rows r0.. and items c0..;
// ex_ptr/ex_idx: exclusion CSR over all m rows (ex_ptr null: none);
// best_s/best_i: (m, k) running top-k, updated in place.
template <typename T, typename I>
__global__ void topk_select(T* tile, i64 n_rows, i64 n_cols, i64 r0, i64 c0, const i64* ex_ptr,
                            const i64* ex_idx, T* best_s, i64* best_i, i64 k) {
    __shared__ T s_s[kCap];
    __shared__ i64 s_i[kCap];
    __shared__ int s_warp[32];
    __shared__ i64 s_ex[2];
    const i64 rr = blockIdx.x;
    if (rr >= n_rows) return;
    const i64 r = r0 + rr;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, n_warps = blockDim.x >> 5;
    T* row = tile + rr * n_cols;
    const T nan = stgkern::quiet_nan<T>();

    if (ex_ptr != nullptr) {
        if (tid == 0) {  // the row's exclusions inside [c0, c0 + n_cols): two binary searches
            i64 bounds[2];
            for (int b = 0; b < 2; ++b) {
                const i64 key = c0 + (b ? n_cols : 0);
                i64 lo = ex_ptr[r], hi = ex_ptr[r + 1];
                while (lo < hi) {
                    const i64 mid = lo + (hi - lo) / 2;
                    if (ex_idx[mid] < key) lo = mid + 1; else hi = mid;
                }
                bounds[b] = lo;
            }
            s_ex[0] = bounds[0];
            s_ex[1] = bounds[1];
        }
        __syncthreads();
        for (i64 p = s_ex[0] + tid; p < s_ex[1]; p += blockDim.x) row[ex_idx[p] - c0] = nan;
        __syncthreads();  // global writes of this block are visible to it after the barrier
    }

    int cap = 1;
    while (cap < k + blockDim.x) cap <<= 1;
    for (int t = tid; t < cap; t += blockDim.x) {
        s_s[t] = t < k ? best_s[r * k + t] : stgkern::neg_inf<T>();
        s_i[t] = t < k ? best_i[r * k + t] : -1;
    }
    __syncthreads();
    // k-th best so far; -inf while fewer than k are kept
    T kth = s_i[k - 1] >= 0 ? s_s[k - 1] : stgkern::neg_inf<T>();
    int count = static_cast<int>(k);
    for (i64 c_base = 0; c_base < n_cols; c_base += blockDim.x) {
        if (count + static_cast<int>(blockDim.x) > cap) {
            for (int t = count + tid; t < cap; t += blockDim.x) {
                s_s[t] = stgkern::neg_inf<T>();
                s_i[t] = -1;
            }
            __syncthreads();
            bitonic_sort(s_s, s_i, cap);
            count = static_cast<int>(k);
            kth = s_i[k - 1] >= 0 ? s_s[k - 1] : stgkern::neg_inf<T>();
        }
        const i64 c = c_base + tid;
        const T s = c < n_cols ? row[c] : nan;
        const bool take = s > kth;
        const unsigned mask = __ballot_sync(stgkern::kFull, take);
        if (lane == 0) s_warp[warp] = __popc(mask);
        __syncthreads();
        int before = 0, total = 0;
        for (int w = 0; w < n_warps; ++w) {
            before += w < warp ? s_warp[w] : 0;
            total += s_warp[w];
        }
        if (take) {
            const int slot = count + before + __popc(mask & ((1u << lane) - 1u));
            s_s[slot] = s;
            s_i[slot] = c0 + c;
        }
        count += total;
        __syncthreads();  // s_warp is rewritten next round; the buffer is read by the sort
    }
    for (int t = count + tid; t < cap; t += blockDim.x) {
        s_s[t] = stgkern::neg_inf<T>();
        s_i[t] = -1;
    }
    __syncthreads();
    if (count > static_cast<int>(k)) bitonic_sort(s_s, s_i, cap);
    for (int t = tid; t < k; t += blockDim.x) {
        best_s[r * k + t] = s_i[t] >= 0 ? s_s[t] : stgkern::neg_inf<T>();
        best_i[r * k + t] = s_i[t];
    }
}

#ifdef STGKERN_AOT
#define STGKERN_TOPK(T, I) fp[n++] = (void*)&topk_select<T, I>;
int stgkern_aot_topk(void** fp) { int n = 0; STGKERN_FOR_TYPES(STGKERN_TOPK) return n; }
#endif
