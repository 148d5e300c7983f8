// Per-patch cosine similarity against the cached reference features, and the frame summary.
// blockDim.x must be a power of two <= 256 for both kernels.

#define SIM_MAX_THREADS 256

// One block per patch: out[p] = <a_p, b_p> / (|a_p| |b_p|); 1 when both vectors are all zero, 0 when
// one is (the CPU path's convention, src/damage/analyzer.rs).
extern "C" __global__ void cosine_rows(const float* __restrict__ a, const float* __restrict__ b, int n, int c,
                                       float* __restrict__ out) {
    __shared__ float s_ab[SIM_MAX_THREADS];
    __shared__ float s_aa[SIM_MAX_THREADS];
    __shared__ float s_bb[SIM_MAX_THREADS];
    const int p = blockIdx.x;
    const int tid = threadIdx.x;
    if (p >= n) return;
    const float* ra = a + (size_t)p * c;
    const float* rb = b + (size_t)p * c;
    float ab = 0.0f, aa = 0.0f, bb = 0.0f;
    for (int i = tid; i < c; i += blockDim.x) {
        ab += ra[i] * rb[i];
        aa += ra[i] * ra[i];
        bb += rb[i] * rb[i];
    }
    s_ab[tid] = ab;
    s_aa[tid] = aa;
    s_bb[tid] = bb;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (tid < stride) {
            s_ab[tid] += s_ab[tid + stride];
            s_aa[tid] += s_aa[tid + stride];
            s_bb[tid] += s_bb[tid + stride];
        }
        __syncthreads();
    }
    if (tid == 0) {
        const bool za = !(s_aa[0] > 0.0f);
        const bool zb = !(s_bb[0] > 0.0f);
        out[p] = (za && zb) ? 1.0f : (za || zb) ? 0.0f : s_ab[0] / (sqrtf(s_aa[0]) * sqrtf(s_bb[0]));
    }
}

// One block: out = {sum of sim, number of patches below threshold, min sim} over the n patches.
extern "C" __global__ void similarity_summary(const float* __restrict__ sim, int n, float threshold,
                                              float* __restrict__ out) {
    __shared__ float s_sum[SIM_MAX_THREADS];
    __shared__ float s_min[SIM_MAX_THREADS];
    __shared__ int s_below[SIM_MAX_THREADS];
    const int tid = threadIdx.x;
    float sum = 0.0f, mn = 3.0e38f;
    int below = 0;
    for (int i = tid; i < n; i += blockDim.x) {
        const float v = sim[i];
        sum += v;
        mn = v < mn ? v : mn;
        below += v < threshold ? 1 : 0;
    }
    s_sum[tid] = sum;
    s_min[tid] = mn;
    s_below[tid] = below;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (tid < stride) {
            s_sum[tid] += s_sum[tid + stride];
            s_min[tid] = s_min[tid + stride] < s_min[tid] ? s_min[tid + stride] : s_min[tid];
            s_below[tid] += s_below[tid + stride];
        }
        __syncthreads();
    }
    if (tid == 0) {
        out[0] = s_sum[0];
        out[1] = (float)s_below[0];
        out[2] = s_min[0];
    }
}
