// Max-pool and global average pool over [slot][patch][channel] activations.

// 3x3 stride-2 max-pool of the stem output into layer1's slot order. windows[win_off[s] ..
// win_off[s+1]] are the stem positions in slot s's window (in-bounds only). Inputs are >= 0 after
// ReLU, so starting from 0 equals torchvision's -inf-padded max (the CPU path does the same).
extern "C" __global__ void max_pool(const float* __restrict__ in, const int* __restrict__ win_off,
                                    const int* __restrict__ windows, int slots, int n, int c,
                                    float* __restrict__ out) {
    const long long total = (long long)slots * n * c;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long nc = (long long)n * c;
        const int s = (int)(e / nc);
        const long long within = e % nc;
        float m = 0.0f;
        for (int w = win_off[s]; w < win_off[s + 1]; ++w) {
            const float v = in[windows[w] * nc + within];
            m = v > m ? v : m;
        }
        out[e] = m;
    }
}

// [slots][n][c] -> [n][c], summed in slot order then scaled, like the CPU path.
extern "C" __global__ void global_avg_pool(const float* __restrict__ x, int slots, int n, int c,
                                           float* __restrict__ out) {
    const long long total = (long long)n * c;
    const float inv = 1.0f / (float)slots;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int t = 0; t < slots; ++t) s += x[t * total + e];
        out[e] = s * inv;
    }
}
