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

// All classes of one convolution in one launch: blockIdx.z = class. Per class c, desc[5c..5c+5] =
// {first_slot, n_pos, n_taps, gather offset, weight offset}. The class is a GEMM
//   out[m][co] = sum_k A[m][k] * W[k][co],  m = pos*n + patch,  k = tap*cin + ci,
//   A[m][k] = in[(gather[pos][tap]*n + patch)*cin + ci],
// followed by + bias (+ residual) (+ ReLU). Output rows of a class are contiguous in `out` from
// first_slot*n*cout, so the epilogue writes a plain row-major tile.
//
// Tiling: 64x64 output tile per block, K in steps of 16 (cin is a multiple of 16, so a K step
// never crosses a tap), 256 threads each owning a 4x4 register tile. cout must be a multiple of 64.
#define CG_TM 64
#define CG_TN 64
#define CG_TK 16
#define CG_THREADS 256

extern "C" __global__ void conv_classes(const float* __restrict__ in, float* __restrict__ out,
                                        const float* __restrict__ residual, int has_residual, int relu,
                                        const float* __restrict__ weights, const float* __restrict__ bias,
                                        const int* __restrict__ gathers, const int* __restrict__ desc, int n,
                                        int cin, int cout, int n_classes) {
    __shared__ float As[CG_TK][CG_TM + 4];
    __shared__ float Bs[CG_TK][CG_TN];

    // The grid's x runs over every class's row tiles back to back (sum over classes of
    // ceil(n_pos * n / CG_TM)), so no block is launched without work. Uniform per block.
    // Must match ConvTables::block_tile in src/engine/cuda/tables.rs.
    int cls = 0;
    int tile = blockIdx.x;
    for (; cls < n_classes - 1; ++cls) {
        const int tiles = (desc[5 * cls + 1] * n + CG_TM - 1) / CG_TM;
        if (tile < tiles) break;
        tile -= tiles;
    }
    const int* d = desc + 5 * cls;
    const int first_slot = d[0];
    const int n_pos = d[1];
    const int n_taps = d[2];
    const int* gather = gathers + d[3];
    const float* w = weights + d[4];
    const int M = n_pos * n;
    const int K = n_taps * cin;
    const int m0 = tile * CG_TM;
    const int n0 = blockIdx.y * CG_TN;
    // Uniform per block; only a grid larger than the tiles would take this exit.
    if (m0 >= M) return;

    const int tid = threadIdx.x;
    const int tx = tid % 16;  // 4 output columns each
    const int ty = tid / 16;  // 4 output rows each

    // The 4 A rows this thread loads: row = ty + 16*i, column kk = tx.
    int a_pos[4];
    int a_patch[4];
    bool a_ok[4];
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        a_ok[i] = m < M;
        a_pos[i] = a_ok[i] ? m / n : 0;
        a_patch[i] = a_ok[i] ? m % n : 0;
    }

    float acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += CG_TK) {
        const int tap = k0 / cin;
        const int ci = k0 % cin + tx;
        for (int i = 0; i < 4; ++i) {
            float v = 0.0f;
            if (a_ok[i]) {
                const int slot = gather[a_pos[i] * n_taps + tap];
                v = in[((size_t)slot * n + a_patch[i]) * cin + ci];
            }
            As[tx][ty + 16 * i] = v;
        }
        for (int i = 0; i < 4; ++i) {
            const int e = tid + CG_THREADS * i;
            const int kk = e / CG_TN;
            const int col = e % CG_TN;
            Bs[kk][col] = w[(size_t)(k0 + kk) * cout + n0 + col];
        }
        __syncthreads();
        for (int kk = 0; kk < CG_TK; ++kk) {
            float a[4];
            float b[4];
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx * 4 + j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }

    float* o = out + (size_t)first_slot * n * cout;
    const float* r = residual + (size_t)first_slot * n * cout;
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
        for (int j = 0; j < 4; ++j) {
            const int co = n0 + tx * 4 + j;
            float v = acc[i][j] + bias[co];
            if (has_residual) v += r[(size_t)m * cout + co];
            if (relu) v = v > 0.0f ? v : 0.0f;
            o[(size_t)m * cout + co] = v;
        }
    }
}
