// The ResNet-18 trunk's convolutions, following the CPU plan (src/engine/plan.rs) exactly:
// activations are [slot][patch][channel]; a convolution is a list of classes, each the output slots
// whose in-bounds 3x3 (or 1x1) taps form the same rectangle, so padding is never multiplied.

// Stem: 7x7 stride-2 conv of the gray patch with BN folded in; bias_map[pos][co] already holds the
// folded bias minus the in-bounds taps' ImageNet-normalisation shift (src/engine/network.rs).
// One thread per (pos, patch, co): the stem is ~2 % of the work, so a direct loop is enough.
extern "C" __global__ void stem_conv(const float* __restrict__ patches, int n, int patch, int k, int stride,
                                     int pad, int out_w, int positions, int cout,
                                     const float* __restrict__ weight,    // [k*k][cout]
                                     const float* __restrict__ bias_map,  // [positions][cout]
                                     float* __restrict__ out) {           // [positions][n][cout]
    const long long total = (long long)positions * n * cout;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int co = (int)(e % cout);
        const int p = (int)((e / cout) % n);
        const int pos = (int)(e / ((long long)cout * n));
        const int oy = pos / out_w;
        const int ox = pos % out_w;
        const float* px = patches + (size_t)p * patch * patch;
        float acc = 0.0f;
        for (int ky = 0; ky < k; ++ky) {
            const int iy = oy * stride + ky - pad;
            if (iy < 0 || iy >= patch) continue;
            for (int kx = 0; kx < k; ++kx) {
                const int ix = ox * stride + kx - pad;
                if (ix < 0 || ix >= patch) continue;
                acc += px[iy * patch + ix] * weight[(ky * k + kx) * cout + co];
            }
        }
        acc += bias_map[pos * cout + co];
        out[e] = acc > 0.0f ? acc : 0.0f;
    }
}

// All classes of one convolution in one launch. Per class c, desc[5c..5c+5] =
// {first_slot, n_pos, n_taps, gather offset, weight offset}. The class is a GEMM
//   out[m][co] = sum_k A[m][k] * W[k][co],  m = pos*n + patch,  k = tap*cin + ci,
//   A[m][k] = in[(gather[pos][tap]*n + patch)*cin + ci],
// followed by + bias (+ residual) (+ ReLU). Output rows of a class are contiguous in `out` from
// first_slot*n*cout, so the epilogue writes a plain row-major tile.
//
// Tiling (kernels/README.md has the budget): a 128 x BN output tile per block (BN = 128, or 64 for
// layer1's 64 channels), K in slices of 8, 2*BN threads each owning 8 x 8 outputs: rows
// {4ty..4ty+3, 64+4ty..64+4ty+3}, columns {4tx..4tx+3, BN/2+4tx..BN/2+4tx+3}. Per k a thread reads
// 4 float4 from shared memory for 64 FMAs (the old 64x64 kernel: 8 scalar loads per 16).
// Shared tiles are double-buffered: slice k+1 is fetched from global memory into registers before
// slice k is multiplied and stored into the other buffer after it, one barrier per slice.
// Every load and store is a float4, so cin and cout must be multiples of 4 (ResNet-18: 64..512);
// a 4-group of k never crosses a tap because taps start at multiples of cin. Partial tiles in M
// (class rows), N (cout not a multiple of BN) and K (n_taps*cin not a multiple of 8) load zeros
// and store nothing outside the class.
#define CT_BM 128
#define CT_BK 8
// As is stored transposed ([k][m]); each warp's A store writes 16 rows at k and k+4. A row pitch
// of 132 floats puts k+4 sixteen banks away from k, so the 32 lanes hit 32 banks; with 128 the two
// halves would collide (2-way). Bs is stored as it is read (rows of float4), conflict-free unpadded.
#define CT_APAD 4

// The class and row tile of this block. The grid's x runs over every class's row tiles back to back
// (sum over classes of ceil(n_pos * n / CT_BM)), so no block is launched without work. Uniform per
// block. Must match ConvTables::block_tile in src/engine/cuda/tables.rs.
struct ClassTile {
    int first_slot;
    int n_pos;
    int n_taps;
    const int* gather;
    int w_off;  // the class's offset into the weights
    int M;      // rows: n_pos * n
    int K;      // n_taps * cin
    int m0;     // this block's first row
};

__device__ __forceinline__ ClassTile class_tile(const int* __restrict__ desc, const int* __restrict__ gathers, int n,
                                                int cin, int n_classes) {
    int cls = 0;
    int tile = blockIdx.x;
    for (; cls < n_classes - 1; ++cls) {
        const int tiles = (desc[5 * cls + 1] * n + CT_BM - 1) / CT_BM;
        if (tile < tiles) break;
        tile -= tiles;
    }
    const int* d = desc + 5 * cls;
    return ClassTile{d[0], d[1], d[2], gathers + d[3], d[4], d[1] * n, d[2] * cin, tile * CT_BM};
}

// Split-K for the tensor-core kernels, where a grid is too small to fill the GPU (kernels/README.md):
// blockIdx.z of gridDim.z takes K slices [z*slices/Z, (z+1)*slices/Z), balanced, empty only when
// slices < Z (its block then stores zeros). Returns that k range, its end capped at K. Must match
// split_slices in src/engine/cuda/tables.rs.
__device__ __forceinline__ int2 split_k_range(int K, int bk) {
    const int slices = (K + bk - 1) / bk;
    const int begin = (int)(blockIdx.z * slices / gridDim.z);
    const int end = (int)((blockIdx.z + 1) * slices / gridDim.z);
    return make_int2(begin * bk, min(K, end * bk));
}

// The (tap, ci) of a thread's k after a slice of `step`: a slice may cross several tap starts when
// cin is smaller than it.
__device__ __forceinline__ void next_slice(int& tap, int& ci, int step, int cin) {
    ci += step;
    while (ci >= cin) {
        ci -= cin;
        ++tap;
    }
}

template <int BN>
__device__ __forceinline__ void conv_tiled(const float* __restrict__ in, float* __restrict__ out,
                                           const float* __restrict__ residual, int has_residual, int relu,
                                           const float* __restrict__ weights, const float* __restrict__ bias,
                                           const int* __restrict__ gathers, const int* __restrict__ desc, int n,
                                           int cin, int cout, int n_classes) {
    constexpr int THREADS = 2 * BN;
    constexpr int TX = BN / 8;                          // threads across the columns
    constexpr int A_LOADS = CT_BM * CT_BK / 4 / THREADS;  // float4 of A per thread per slice: 1 or 2
    constexpr int B_ROW4 = BN / 4;                      // float4 per row of a B slice
    __shared__ __align__(16) float As[2][CT_BK][CT_BM + CT_APAD];
    __shared__ __align__(16) float Bs[2][CT_BK][BN];

    const ClassTile ct = class_tile(desc, gathers, n, cin, n_classes);
    const int first_slot = ct.first_slot;
    const int n_taps = ct.n_taps;
    const int* gather = ct.gather;
    const float* w = weights + ct.w_off;
    const int M = ct.M;
    const int K = ct.K;
    const int m0 = ct.m0;
    const int n0 = blockIdx.y * BN;
    // Uniform per block; only a grid larger than the tiles would take this exit.
    if (m0 >= M) return;

    const int tid = threadIdx.x;
    const int tx = tid % TX;
    const int ty = tid / TX;

    // A loads: float4 e = tid + THREADS*i covers row e/2, k = k0 + 4*(e%2); THREADS is even, so
    // every load of a thread has the same k and one (tap, ci) walks the K slices for all of them.
    const int a_kq = (tid & 1) * 4;
    int a_gather[A_LOADS];  // pos * n_taps, or -1 past the class's last row
    int a_patch[A_LOADS];
    int a_row[A_LOADS];
#pragma unroll
    for (int i = 0; i < A_LOADS; ++i) {
        a_row[i] = (tid + THREADS * i) / 2;
        const int m = m0 + a_row[i];
        a_gather[i] = m < M ? (m / n) * n_taps : -1;
        a_patch[i] = m < M ? m % n : 0;
    }
    int a_tap = a_kq / cin;
    int a_ci = a_kq % cin;
    // B loads: one float4 per thread, row kb of the slice, columns cb..cb+3 of the tile.
    const int b_k = tid / B_ROW4;
    const int b_c = (tid % B_ROW4) * 4;
    const bool b_col_ok = n0 + b_c < cout;

    float4 a_reg[A_LOADS];
    float4 b_reg;
    const float4 zero4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);

    // Slice k0 from global memory into registers (zeros outside the class, K or cout).
    auto fetch = [&](int k0) {
        const bool k_ok = k0 + a_kq < K;
#pragma unroll
        for (int i = 0; i < A_LOADS; ++i) {
            a_reg[i] = zero4;
            if (k_ok && a_gather[i] >= 0) {
                const int slot = gather[a_gather[i] + a_tap];
                a_reg[i] = *reinterpret_cast<const float4*>(in + ((size_t)slot * n + a_patch[i]) * cin + a_ci);
            }
        }
        b_reg = zero4;
        if (k0 + b_k < K && b_col_ok) b_reg = *reinterpret_cast<const float4*>(w + (size_t)(k0 + b_k) * cout + n0 + b_c);
    };
    // Registers into shared buffer s: A transposed to [k][m], B as it is.
    auto stash = [&](int s) {
#pragma unroll
        for (int i = 0; i < A_LOADS; ++i) {
            As[s][a_kq + 0][a_row[i]] = a_reg[i].x;
            As[s][a_kq + 1][a_row[i]] = a_reg[i].y;
            As[s][a_kq + 2][a_row[i]] = a_reg[i].z;
            As[s][a_kq + 3][a_row[i]] = a_reg[i].w;
        }
        *reinterpret_cast<float4*>(&Bs[s][b_k][b_c]) = b_reg;
    };
    auto advance = [&]() { next_slice(a_tap, a_ci, CT_BK, cin); };

    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

    const int slices = (K + CT_BK - 1) / CT_BK;
    fetch(0);
    stash(0);
    __syncthreads();
    for (int ks = 0; ks < slices; ++ks) {
        const int s = ks & 1;
        const bool more = ks + 1 < slices;
        if (more) {
            advance();
            fetch((ks + 1) * CT_BK);  // in flight while slice ks is multiplied
        }
#pragma unroll
        for (int kk = 0; kk < CT_BK; ++kk) {
            const float4 a0 = *reinterpret_cast<const float4*>(&As[s][kk][4 * ty]);
            const float4 a1 = *reinterpret_cast<const float4*>(&As[s][kk][64 + 4 * ty]);
            const float4 b0 = *reinterpret_cast<const float4*>(&Bs[s][kk][4 * tx]);
            const float4 b1 = *reinterpret_cast<const float4*>(&Bs[s][kk][BN / 2 + 4 * tx]);
            const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int i = 0; i < 8; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        // Buffer s^1 was last read in slice ks-1, before the barrier that ended it.
        if (more) stash(s ^ 1);
        __syncthreads();
    }

    float* o = out + (size_t)first_slot * n * cout;
    const float* r = residual + (size_t)first_slot * n * cout;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int m = m0 + (i < 4 ? 4 * ty + i : 64 + 4 * ty + i - 4);
        if (m >= M) continue;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int co = n0 + (h == 0 ? 4 * tx : BN / 2 + 4 * tx);
            if (co >= cout) continue;
            const float4 bv = *reinterpret_cast<const float4*>(bias + co);
            float v[4] = {acc[i][4 * h] + bv.x, acc[i][4 * h + 1] + bv.y, acc[i][4 * h + 2] + bv.z,
                          acc[i][4 * h + 3] + bv.w};
            if (has_residual) {
                const float4 rv = *reinterpret_cast<const float4*>(r + (size_t)m * cout + co);
                v[0] += rv.x;
                v[1] += rv.y;
                v[2] += rv.z;
                v[3] += rv.w;
            }
            if (relu)
#pragma unroll
                for (int j = 0; j < 4; ++j) v[j] = v[j] > 0.0f ? v[j] : 0.0f;
            *reinterpret_cast<float4*>(o + (size_t)m * cout + co) = make_float4(v[0], v[1], v[2], v[3]);
        }
    }
}

// 128x128 tiles for cout a multiple of 128 (layers 2-4); 128x64 for layer1 (cout 64) and any cout
// that 128 does not divide. The launch bounds give the block size only: ptxas then allocates
// 125-128 and 136-139 registers without spilling (2 and 3 blocks per SM); asking for 2 blocks of 256 (a cap of
// 128) made it spill 24 bytes (NVRTC 12.9, sm_80 and sm_90; tests/kernels_nvrtc.rs checks this).
extern "C" __global__ void __launch_bounds__(256)
    conv_tiled_128x128(const float* __restrict__ in, float* __restrict__ out, const float* __restrict__ residual,
                       int has_residual, int relu, const float* __restrict__ weights, const float* __restrict__ bias,
                       const int* __restrict__ gathers, const int* __restrict__ desc, int n, int cin, int cout,
                       int n_classes) {
    conv_tiled<128>(in, out, residual, has_residual, relu, weights, bias, gathers, desc, n, cin, cout, n_classes);
}

extern "C" __global__ void __launch_bounds__(128)
    conv_tiled_128x64(const float* __restrict__ in, float* __restrict__ out, const float* __restrict__ residual,
                      int has_residual, int relu, const float* __restrict__ weights, const float* __restrict__ bias,
                      const int* __restrict__ gathers, const int* __restrict__ desc, int n, int cin, int cout,
                      int n_classes) {
    conv_tiled<64>(in, out, residual, has_residual, relu, weights, bias, gathers, desc, n, cin, cout, n_classes);
}

// ---- bf16 tensor cores: conv_mma_bf16_128x128 / conv_mma_bf16_128x64 ------------------------------
// The same classes, grid and epilogue as conv_tiled<BN>, with the multiply on tensor cores:
// mma.sync m16n8k16, bf16 operands, f32 accumulation (sm_80 and later; `precision = "bf16"`).
// Activations stay f32 in global memory and are rounded to bf16 (nearest, ties to even) as they are
// staged into shared memory; the weights come pre-rounded and transposed per class, W_t[co][k]
// (ConvTables::weights_bf16_t). The bias, residual and ReLU are applied in f32.
//
// Tiling: a 128 x BN output tile per block, 256 threads = 8 warps laid out WM x WN (2 x 4 for
// BN = 128, 4 x 2 for 64), each warp a (128/WM) x 32 tile = MT x 4 mma tiles of 16 x 8. K in
// slices of 32 (two k16 steps), double-buffered: before slice k is multiplied, slice k+1's
// activations are loaded into registers (4 float4 per thread; rounded to bf16 and stored into the
// other buffer after the multiply) and its weights copied straight into the other buffer
// (cp.async, BN/64 16-byte copies per thread, zero-filled outside the class); one barrier per
// slice, after the copies are waited for. Copying the weights without registers keeps the kernel
// at 128 registers without spilling (2 blocks per SM); through registers it needed 166.
// Shared tiles are [row][k] with a pitch of 40 bf16 (20 words): a fragment load of lane (g, t)
// reads word 20g + t (+ const), 32 distinct banks for the 8 x 4 lanes.
// Needs cin and cout multiples of 8 (a uint4 of weights never crosses a tap or a class; ResNet-18:
// 64..512); partial tiles in M, N and K load zeros and store nothing outside the class.
#define MMA_BK 32
#define MMA_PITCH 40  // bf16 per shared row: 32 + 8 of padding
#define MMA_THREADS 256

// The epilogue of both tensor-core kernels: accumulator (i, j, r) of a warp's MT x 4 mma tiles is
// row 16i + g + 8*(r/2), column 8j + 2t + r%2 of the warp's tile (the mma's C fragment); bias,
// residual and ReLU in f32, float2 stores (cout is even). Split z stores into plane z of `out`
// (`plane` floats apart); a split launch passes the partial-sum buffer as `out`, zero bias, no
// residual and no ReLU, and splitk_reduce finishes the sums.
template <int MT, int WM>
__device__ __forceinline__ void mma_epilogue(const float (&acc)[MT][4][4], float* __restrict__ out,
                                             const float* __restrict__ residual, int has_residual, int relu,
                                             const float* __restrict__ bias, int first_slot, int n, int cout, int M,
                                             int m0, int n0, int wm, int wn, int g, int t, long long plane) {
    float* o = out + blockIdx.z * plane + (size_t)first_slot * n * cout;
    const float* res = residual + (size_t)first_slot * n * cout;
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int m = m0 + wm * (CT_BM / WM) + 16 * i + g + 8 * h;
            if (m >= M) continue;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int co = n0 + wn * 32 + 8 * j + 2 * t;
                if (co >= cout) continue;
                const float2 bv = *reinterpret_cast<const float2*>(bias + co);
                float2 v = make_float2(acc[i][j][2 * h] + bv.x, acc[i][j][2 * h + 1] + bv.y);
                if (has_residual) {
                    const float2 rv = *reinterpret_cast<const float2*>(res + (size_t)m * cout + co);
                    v.x += rv.x;
                    v.y += rv.y;
                }
                if (relu) {
                    v.x = v.x > 0.0f ? v.x : 0.0f;
                    v.y = v.y > 0.0f ? v.y : 0.0f;
                }
                *reinterpret_cast<float2*>(o + (size_t)m * cout + co) = v;
            }
        }
}

// A 16-byte cp.async into shared memory, zero-filled (nothing read) where !ok.
__device__ __forceinline__ void cp_async16(void* smem, const void* src, bool ok) {
    const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Every copy this thread issued has landed (visible to the block after the next barrier).
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void zero_acc(float* acc, int count) {
#pragma unroll
    for (int i = 0; i < count; ++i) acc[i] = 0.0f;
}

// Two floats as bf16x2, round to nearest even: `lo` in the low half (the lower k).
__device__ __forceinline__ unsigned int pack_bf16x2(float lo, float hi) {
    unsigned int r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

template <int BN>
__device__ __forceinline__ void conv_mma_bf16(const float* __restrict__ in, float* __restrict__ out,
                                              const float* __restrict__ residual, int has_residual, int relu,
                                              const unsigned short* __restrict__ weights_t,
                                              const float* __restrict__ bias, const int* __restrict__ gathers,
                                              const int* __restrict__ desc, int n, int cin, int cout,
                                              int n_classes, long long plane) {
#if __CUDA_ARCH__ >= 800
    constexpr int WN = BN / 32;            // warps across the columns
    constexpr int WM = 8 / WN;             // warps across the rows
    constexpr int MT = CT_BM / WM / 16;    // m16 tiles per warp: 4 (BN 128) or 2 (BN 64)
    constexpr int A_LOADS = CT_BM * MMA_BK / 4 / MMA_THREADS;  // float4 per thread: 4
    constexpr int B_LOADS = BN * MMA_BK / 8 / MMA_THREADS;     // 16-byte copies per thread: 2 or 1
    __shared__ __align__(16) unsigned short As[2][CT_BM][MMA_PITCH];
    __shared__ __align__(16) unsigned short Bs[2][BN][MMA_PITCH];

    const ClassTile ct = class_tile(desc, gathers, n, cin, n_classes);
    const int first_slot = ct.first_slot;
    const int n_pos = ct.n_pos;
    const int n_taps = ct.n_taps;
    const int* gather = ct.gather;
    const unsigned short* w = weights_t + ct.w_off;  // [cout][K] of this class
    const int M = ct.M;
    const int m0 = ct.m0;
    const int n0 = blockIdx.y * BN;
    if (m0 >= M) return;
    // This split's k range [k_begin, K): K stands for its end in the guards and the loop; the
    // weight rows keep the class's own length.
    const int2 kr = split_k_range(ct.K, MMA_BK);
    const int k_begin = kr.x;
    const int K = kr.y;
    const int w_len = ct.K;

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp / WN;
    const int wn = warp % WN;
    const int g = lane >> 2;  // the mma's groupID
    const int t = lane & 3;   // and thread in group

    // A loads: float4 e = tid + 256*i is row e/8 = tid/8 + 32i, k = k0 + 4*(e%8); 256 is a multiple
    // of 8, so every load of a thread has the same k and one (tap, ci) walks the slices for all of
    // them. Only the first row's (position, patch) is kept; the others follow 32 rows on, each
    // fetch (registers are what this kernel is short of).
    const int a_kq = (tid & 7) * 4;
    const int a_m0 = m0 + tid / 8;
    const int a_pos0 = a_m0 / n;
    const int a_patch0 = a_m0 % n;
    int a_tap = (k_begin + a_kq) / cin;
    int a_ci = (k_begin + a_kq) % cin;
    // B copies: 16 bytes e = tid + 256*j are column e/4 of the tile, k = k0 + 8*(e%4).
    const int b_kq = (tid & 3) * 8;

    float4 a_reg[A_LOADS];
    const float4 zero4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);

    auto fetch = [&](int k0) {
        const bool k_ok = k0 + a_kq < K;
        int pos = a_pos0;
        int patch = a_patch0;
#pragma unroll
        for (int i = 0; i < A_LOADS; ++i) {
            if (i > 0) {
                patch += MMA_THREADS / 8;
                while (patch >= n) {
                    patch -= n;
                    ++pos;
                }
            }
            a_reg[i] = zero4;
            if (k_ok && pos < n_pos) {
                const int slot = gather[pos * n_taps + a_tap];
                a_reg[i] = *reinterpret_cast<const float4*>(in + ((size_t)slot * n + patch) * cin + a_ci);
            }
        }
    };
    // Slice k0's weights into buffer s: 16 bytes per copy, the source size 0 (all zeros) past
    // cout or K. Visible to the block after cp_async_wait() and the barrier.
    auto copy_weights = [&](int k0, int s) {
#pragma unroll
        for (int j = 0; j < B_LOADS; ++j) {
            const int row = (tid + MMA_THREADS * j) / 4;
            const int co = n0 + row;
            const bool ok = co < cout && k0 + b_kq < K;
            cp_async16(&Bs[s][row][b_kq], ok ? w + (size_t)co * w_len + k0 + b_kq : w, ok);
        }
        cp_async_commit();
    };
    auto stash = [&](int s) {
#pragma unroll
        for (int i = 0; i < A_LOADS; ++i) {
            const uint2 v = make_uint2(pack_bf16x2(a_reg[i].x, a_reg[i].y), pack_bf16x2(a_reg[i].z, a_reg[i].w));
            *reinterpret_cast<uint2*>(&As[s][(tid + MMA_THREADS * i) / 8][a_kq]) = v;
        }
    };
    auto advance = [&]() { next_slice(a_tap, a_ci, MMA_BK, cin); };

    float acc[MT][4][4];
    zero_acc(&acc[0][0][0], MT * 4 * 4);

    // An empty split copies zeros (k0 >= K) and multiplies nothing.
    fetch(k_begin);
    copy_weights(k_begin, (k_begin / MMA_BK) & 1);
    stash((k_begin / MMA_BK) & 1);
    cp_async_wait();
    __syncthreads();
    for (int k0 = k_begin; k0 < K; k0 += MMA_BK) {
        const int s = (k0 / MMA_BK) & 1;
        const bool more = k0 + MMA_BK < K;
        if (more) {
            // Buffer s^1 was last read in the slice before, before the barrier that ended it.
            advance();
            fetch(k0 + MMA_BK);
            copy_weights(k0 + MMA_BK, s ^ 1);
        }
#pragma unroll
        for (int kk = 0; kk < MMA_BK; kk += 16) {
            // B's fragments for the whole k16 step, A's one m16 tile at a time (fewer live registers).
            unsigned int b[4][2];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int c = wn * 32 + 8 * j + g;
                b[j][0] = *reinterpret_cast<const unsigned int*>(&Bs[s][c][kk + 2 * t]);
                b[j][1] = *reinterpret_cast<const unsigned int*>(&Bs[s][c][kk + 8 + 2 * t]);
            }
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int r = wm * (CT_BM / WM) + 16 * i + g;
                unsigned int a[4];
                a[0] = *reinterpret_cast<const unsigned int*>(&As[s][r][kk + 2 * t]);
                a[1] = *reinterpret_cast<const unsigned int*>(&As[s][r + 8][kk + 2 * t]);
                a[2] = *reinterpret_cast<const unsigned int*>(&As[s][r][kk + 8 + 2 * t]);
                a[3] = *reinterpret_cast<const unsigned int*>(&As[s][r + 8][kk + 8 + 2 * t]);
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    asm volatile(
                        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                        "{%8,%9}, {%0,%1,%2,%3};\n"
                        : "+f"(acc[i][j][0]), "+f"(acc[i][j][1]), "+f"(acc[i][j][2]), "+f"(acc[i][j][3])
                        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[j][0]), "r"(b[j][1]));
            }
        }
        if (more) stash(s ^ 1);
        cp_async_wait();
        __syncthreads();
    }

    mma_epilogue<MT, WM>(acc, out, residual, has_residual, relu, bias, first_slot, n, cout, M, m0, n0, wm, wn, g, t,
                         plane);
#else
    // Tensor-core bf16 needs sm_80; the host never launches this kernel on an older GPU.
    __trap();
#endif
}

extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2)
    conv_mma_bf16_128x128(const float* __restrict__ in, float* __restrict__ out, const float* __restrict__ residual,
                          int has_residual, int relu, const unsigned short* __restrict__ weights_t,
                          const float* __restrict__ bias, const int* __restrict__ gathers,
                          const int* __restrict__ desc, int n, int cin, int cout, int n_classes,
                          long long plane) {
    conv_mma_bf16<128>(in, out, residual, has_residual, relu, weights_t, bias, gathers, desc, n, cin, cout,
                       n_classes, plane);
}

extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2)
    conv_mma_bf16_128x64(const float* __restrict__ in, float* __restrict__ out, const float* __restrict__ residual,
                         int has_residual, int relu, const unsigned short* __restrict__ weights_t,
                         const float* __restrict__ bias, const int* __restrict__ gathers,
                         const int* __restrict__ desc, int n, int cin, int cout, int n_classes,
                         long long plane) {
    conv_mma_bf16<64>(in, out, residual, has_residual, relu, weights_t, bias, gathers, desc, n, cin, cout,
                      n_classes, plane);
}

// ---- fp32 on tensor cores: conv_mma_tf32x3_128x128 / conv_mma_tf32x3_128x64 ----------------------
// `precision = "fp32"` where the GPU's start-up probe measures it faster than conv_tiled (sm_80 and
// later): every product as three TF32 products, x = hi + lo with hi = tf32(x), lo = tf32(x - hi)
// (round to nearest, ties away), a*b ~ a_lo*b_hi + a_hi*b_lo + a_hi*b_hi with
// mma.sync.aligned.m16n8k8 and f32 accumulation. What it drops (a_lo*b_lo and lo's own rounding) is
// ~ 2^-21 of each product: fp32-level accuracy (the GPU tests hold it to 1e-5 of the convolution,
// 1e-4 of the CPU path's features), on tensor cores (H100/H200: 495 TFLOP/s dense TF32, so up to
// 165 effective against 67 for FFMA).
//
// The same grid, warps, mma tiles and epilogue as conv_mma_bf16; K in slices of 16 (two k8 steps).
// Shared tiles hold f32, [row][k] with a pitch of 20 floats (a fragment load of lane (g, t) reads
// word 20g + t + const: 32 banks); both operands are copied straight from global memory with
// cp.async (16 bytes, zero-filled past the class, cout or K) into the buffer the next slice uses,
// and split into hi and lo as the fragments are read, so no registers hold a slice in flight.
// Weights come transposed per class, W_t[co][k] (ConvTables::weights_f32_t). cin and cout must be
// multiples of 4, as for conv_tiled.
#define TF_BK 16
#define TF_PITCH 20

__device__ __forceinline__ unsigned int tf32_bits(float x) {
    unsigned int r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

__device__ __forceinline__ void split_tf32(float x, unsigned int& hi, unsigned int& lo) {
    hi = tf32_bits(x);
    lo = tf32_bits(x - __uint_as_float(hi));
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const unsigned int (&a)[4], const unsigned int (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <int BN>
__device__ __forceinline__ void conv_mma_tf32x3(const float* __restrict__ in, float* __restrict__ out,
                                                const float* __restrict__ residual, int has_residual, int relu,
                                                const float* __restrict__ weights_t, const float* __restrict__ bias,
                                                const int* __restrict__ gathers, const int* __restrict__ desc, int n,
                                                int cin, int cout, int n_classes, long long plane) {
#if __CUDA_ARCH__ >= 800
    constexpr int WN = BN / 32;
    constexpr int WM = 8 / WN;
    constexpr int MT = CT_BM / WM / 16;
    constexpr int A_COPIES = CT_BM * TF_BK / 4 / MMA_THREADS;  // 16-byte copies per thread: 2
    constexpr int B_COPIES = BN * TF_BK / 4 / MMA_THREADS;     // 2 or 1
    __shared__ __align__(16) float As[2][CT_BM][TF_PITCH];
    __shared__ __align__(16) float Bs[2][BN][TF_PITCH];

    const ClassTile ct = class_tile(desc, gathers, n, cin, n_classes);
    const int first_slot = ct.first_slot;
    const int n_pos = ct.n_pos;
    const int n_taps = ct.n_taps;
    const int* gather = ct.gather;
    const float* w = weights_t + ct.w_off;  // [cout][K] of this class
    const int M = ct.M;
    const int m0 = ct.m0;
    const int n0 = blockIdx.y * BN;
    if (m0 >= M) return;
    const int2 kr = split_k_range(ct.K, TF_BK);  // as in conv_mma_bf16
    const int k_begin = kr.x;
    const int K = kr.y;
    const int w_len = ct.K;

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int wm = warp / WN;
    const int wn = warp % WN;
    const int g = lane >> 2;
    const int t = lane & 3;

    // Copy e = tid + 256*i of a slice is row e/4 = tid/4 + 64i, k = k0 + 4*(e%4), for both operands.
    const int kq = (tid & 3) * 4;
    const int a_m0 = m0 + tid / 4;
    const int a_pos0 = a_m0 / n;
    const int a_patch0 = a_m0 % n;
    int a_tap = (k_begin + kq) / cin;
    int a_ci = (k_begin + kq) % cin;

    auto copy_slice = [&](int k0, int s) {
        const bool k_ok = k0 + kq < K;
        int pos = a_pos0;
        int patch = a_patch0;
#pragma unroll
        for (int i = 0; i < A_COPIES; ++i) {
            if (i > 0) {
                patch += MMA_THREADS / 4;
                while (patch >= n) {
                    patch -= n;
                    ++pos;
                }
            }
            const bool ok = k_ok && pos < n_pos;
            const float* src = ok ? in + ((size_t)gather[pos * n_taps + a_tap] * n + patch) * cin + a_ci : in;
            cp_async16(&As[s][tid / 4 + (MMA_THREADS / 4) * i][kq], src, ok);
        }
#pragma unroll
        for (int j = 0; j < B_COPIES; ++j) {
            const int row = (tid + MMA_THREADS * j) / 4;
            const int co = n0 + row;
            const bool ok = co < cout && k_ok;
            cp_async16(&Bs[s][row][kq], ok ? w + (size_t)co * w_len + k0 + kq : w, ok);
        }
        cp_async_commit();
    };
    auto advance = [&]() { next_slice(a_tap, a_ci, TF_BK, cin); };

    float acc[MT][4][4];
    zero_acc(&acc[0][0][0], MT * 4 * 4);

    copy_slice(k_begin, (k_begin / TF_BK) & 1);
    cp_async_wait();
    __syncthreads();
    for (int k0 = k_begin; k0 < K; k0 += TF_BK) {
        const int s = (k0 / TF_BK) & 1;
        if (k0 + TF_BK < K) {
            // Buffer s^1 was last read in the slice before, before the barrier that ended it.
            advance();
            copy_slice(k0 + TF_BK, s ^ 1);
        }
#pragma unroll
        for (int kk = 0; kk < TF_BK; kk += 8) {
            // m16n8k8 tf32 fragments: A register q of lane (g, t) is row g + 8*(q%2), column
            // t + 4*(q/2); B register q is row (k) t + 4q of column g.
            unsigned int bh[4][2], bl[4][2];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int c = wn * 32 + 8 * j + g;
                split_tf32(Bs[s][c][kk + t], bh[j][0], bl[j][0]);
                split_tf32(Bs[s][c][kk + t + 4], bh[j][1], bl[j][1]);
            }
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int r = wm * (CT_BM / WM) + 16 * i + g;
                unsigned int ah[4], al[4];
                split_tf32(As[s][r][kk + t], ah[0], al[0]);
                split_tf32(As[s][r + 8][kk + t], ah[1], al[1]);
                split_tf32(As[s][r][kk + t + 4], ah[2], al[2]);
                split_tf32(As[s][r + 8][kk + t + 4], ah[3], al[3]);
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    // The small terms first, so they are not lost against the large one.
                    mma_tf32(acc[i][j], al, bh[j]);
                    mma_tf32(acc[i][j], ah, bl[j]);
                    mma_tf32(acc[i][j], ah, bh[j]);
                }
            }
        }
        cp_async_wait();
        __syncthreads();
    }
    mma_epilogue<MT, WM>(acc, out, residual, has_residual, relu, bias, first_slot, n, cout, M, m0, n0, wm, wn, g, t,
                         plane);
#else
    // Tensor-core TF32 needs sm_80; the host never launches this kernel on an older GPU.
    __trap();
#endif
}

extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2)
    conv_mma_tf32x3_128x128(const float* __restrict__ in, float* __restrict__ out, const float* __restrict__ residual,
                            int has_residual, int relu, const float* __restrict__ weights_t,
                            const float* __restrict__ bias, const int* __restrict__ gathers,
                            const int* __restrict__ desc, int n, int cin, int cout, int n_classes,
                            long long plane) {
    conv_mma_tf32x3<128>(in, out, residual, has_residual, relu, weights_t, bias, gathers, desc, n, cin, cout,
                         n_classes, plane);
}

extern "C" __global__ void __launch_bounds__(MMA_THREADS, 2)
    conv_mma_tf32x3_128x64(const float* __restrict__ in, float* __restrict__ out, const float* __restrict__ residual,
                           int has_residual, int relu, const float* __restrict__ weights_t,
                           const float* __restrict__ bias, const int* __restrict__ gathers,
                           const int* __restrict__ desc, int n, int cin, int cout, int n_classes,
                           long long plane) {
    conv_mma_tf32x3<64>(in, out, residual, has_residual, relu, weights_t, bias, gathers, desc, n, cin, cout,
                        n_classes, plane);
}

// ---- split-K's second step ----------------------------------------------------------------------
// out = the sum of the `splits` planes of `partial` (in z order, `plane` floats apart) + bias
// (+ residual) (+ ReLU), over every element of the convolution's output (its classes cover every
// output slot), a float4 at a time (cout is a multiple of 4, so a float4 never crosses a row).
// Grid-stride; `total4` = out_slots*n*cout/4.
extern "C" __global__ void splitk_reduce(const float* __restrict__ partial, long long plane, int splits,
                                         float* __restrict__ out, const float* __restrict__ residual,
                                         int has_residual, int relu, const float* __restrict__ bias, int cout,
                                         long long total4) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total4;
         e += (long long)gridDim.x * blockDim.x) {
        const long long i = 4 * e;
        float4 v = *reinterpret_cast<const float4*>(partial + i);
        for (int z = 1; z < splits; ++z) {
            const float4 p = *reinterpret_cast<const float4*>(partial + z * plane + i);
            v.x += p.x;
            v.y += p.y;
            v.z += p.z;
            v.w += p.w;
        }
        const float4 bv = *reinterpret_cast<const float4*>(bias + (int)(i % cout));
        v.x += bv.x;
        v.y += bv.y;
        v.z += bv.z;
        v.w += bv.w;
        if (has_residual) {
            const float4 rv = *reinterpret_cast<const float4*>(residual + i);
            v.x += rv.x;
            v.y += rv.y;
            v.z += rv.z;
            v.w += rv.w;
        }
        if (relu) {
            v.x = v.x > 0.0f ? v.x : 0.0f;
            v.y = v.y > 0.0f ? v.y : 0.0f;
            v.z = v.z > 0.0f ? v.z : 0.0f;
            v.w = v.w > 0.0f ? v.w : 0.0f;
        }
        *reinterpret_cast<float4*>(out + i) = v;
    }
}
