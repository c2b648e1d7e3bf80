// Host emulation of the handful of CUDA features the stgkern kernels use, so
// that the kernel sources can be compiled with g++ and run on the CPU in tests
// (tests/test_cuda.py::test_emulated_*).  Not a simulator of performance or of
// memory ordering: each CUDA thread is a std::thread, warps meet at barriers
// in every shuffle/ballot, blocks run one after another (so __shared__ can be
// a function-local static).  Use with -x c++ -std=c++20 -include this file.
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };

struct emu_dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local emu_dim3 threadIdx, blockIdx;
inline emu_dim3 blockDim, gridDim;

struct EmuWarp {
    std::barrier<> bar{32};
    unsigned long long slot[32];
};
inline thread_local EmuWarp* emu_warp = nullptr;
inline std::barrier<>* emu_block_bar = nullptr;

template <typename T>
inline T emu_exchange(T v, int src) {
    const int lane = threadIdx.x & 31;
    unsigned long long raw = 0;
    std::memcpy(&raw, &v, sizeof(T));
    emu_warp->slot[lane] = raw;
    emu_warp->bar.arrive_and_wait();
    raw = emu_warp->slot[src & 31];
    emu_warp->bar.arrive_and_wait();
    T out;
    std::memcpy(&out, &raw, sizeof(T));
    return out;
}
template <typename T> inline T __shfl_sync(unsigned, T v, int src) { return emu_exchange(v, src); }
template <typename T> inline T __shfl_xor_sync(unsigned, T v, int m) { return emu_exchange(v, (threadIdx.x & 31) ^ m); }
inline unsigned __ballot_sync(unsigned, bool p) {
    const int lane = threadIdx.x & 31;
    emu_warp->slot[lane] = p;
    emu_warp->bar.arrive_and_wait();
    unsigned m = 0;
    for (int l = 0; l < 32; ++l) m |= unsigned(emu_warp->slot[l] != 0) << l;
    emu_warp->bar.arrive_and_wait();
    return m;
}
inline void __syncthreads() { emu_block_bar->arrive_and_wait(); }
// __syncwarp orders memory among the lanes of a warp (all 32 must call it).
inline void __syncwarp(unsigned = 0xffffffffu) { emu_warp->bar.arrive_and_wait(); }
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
using std::exp;
using std::cos;
using std::log1p;
using std::sqrt;
using std::rint;
inline float expf(float x) { return std::exp(x); }
inline float sqrtf(float x) { return std::sqrt(x); }

// Run kernel(args...) over grid x block threads (1-D), blocks in sequence.
// A warp that returns early must do so as a whole (true of every kernel here).
template <typename F>
inline void emu_launch(unsigned grid, unsigned block, F&& body) {
    gridDim.x = grid;
    blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {
        std::vector<EmuWarp> warps(block / 32);
        std::barrier<> bbar(block);
        emu_block_bar = &bbar;
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t)
            threads.emplace_back([&, t] {
                threadIdx.x = t;
                blockIdx.x = b;
                emu_warp = &warps[t / 32];
                body();
                // a returning thread leaves the block barrier's expected count
                bbar.arrive_and_drop();
            });
        for (auto& th : threads) th.join();
    }
}
