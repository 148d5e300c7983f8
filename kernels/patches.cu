// Frame -> patches. One block per patch; blockDim.x must be a power of two <= 256.
//
// out[patch][y*p + x] = (v - offset) * gain, the same scaling the CPU path applies
// (src/patches.rs). With has_gap, pixels equal to the detector's gap value are invalid: they are
// replaced by the mean of the patch's valid (scaled) pixels, and n_invalid[patch] counts them so the
// host can mask patches with too many.

#define EXTRACT_MAX_THREADS 256

template <typename T>
__device__ void extract_patches_impl(const T* __restrict__ frame, int width, int cols, int patch,
                                     float offset, float gain, int has_gap, T gap,
                                     float* __restrict__ out, int* __restrict__ n_invalid) {
    __shared__ float s_sum[EXTRACT_MAX_THREADS];
    __shared__ int s_bad[EXTRACT_MAX_THREADS];
    const int idx = blockIdx.x;
    const int tid = threadIdx.x;
    const int x0 = (idx % cols) * patch;
    const int y0 = (idx / cols) * patch;
    const int pp = patch * patch;
    float* dst = out + (size_t)idx * pp;

    float sum = 0.0f;
    int bad = 0;
    for (int i = tid; i < pp; i += blockDim.x) {
        const T v = frame[(size_t)(y0 + i / patch) * width + x0 + i % patch];
        const float s = ((float)v - offset) * gain;
        dst[i] = s;
        if (has_gap && v == gap) {
            bad += 1;
        } else {
            sum += s;
        }
    }
    s_sum[tid] = sum;
    s_bad[tid] = bad;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (tid < stride) {
            s_sum[tid] += s_sum[tid + stride];
            s_bad[tid] += s_bad[tid + stride];
        }
        __syncthreads();
    }
    const int total_bad = s_bad[0];
    if (total_bad > 0) {
        const int valid = pp - total_bad;
        const float fill = valid > 0 ? s_sum[0] / (float)valid : 0.0f;
        for (int i = tid; i < pp; i += blockDim.x) {
            const T v = frame[(size_t)(y0 + i / patch) * width + x0 + i % patch];
            if (v == gap) {
                dst[i] = fill;
            }
        }
    }
    if (tid == 0) {
        n_invalid[idx] = total_bad;
    }
}

extern "C" __global__ void extract_patches_u16(const unsigned short* __restrict__ frame, int width, int cols,
                                               int patch, float offset, float gain, int has_gap,
                                               float* __restrict__ out, int* __restrict__ n_invalid) {
    extract_patches_impl<unsigned short>(frame, width, cols, patch, offset, gain, has_gap, (unsigned short)0xFFFFu,
                                         out, n_invalid);
}

extern "C" __global__ void extract_patches_u32(const unsigned int* __restrict__ frame, int width, int cols,
                                               int patch, float offset, float gain, int has_gap,
                                               float* __restrict__ out, int* __restrict__ n_invalid) {
    extract_patches_impl<unsigned int>(frame, width, cols, patch, offset, gain, has_gap, 0xFFFFFFFFu, out,
                                       n_invalid);
}

// f32 frames have no gap value (the CPU path's DType::F32 has none either).
extern "C" __global__ void extract_patches_f32(const float* __restrict__ frame, int width, int cols, int patch,
                                               float offset, float gain, float* __restrict__ out,
                                               int* __restrict__ n_invalid) {
    extract_patches_impl<float>(frame, width, cols, patch, offset, gain, 0, 0.0f, out, n_invalid);
}
