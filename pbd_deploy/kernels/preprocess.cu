// Fused pre-processing of one model window, written straight into the engine's input buffer.
//
// Computes core.windows.model_input(core.video.take_window(frames, start, T)) on the GPU:
//   out[slot, c, t, y, x] = (float(frames[min(t, valid - 1), top + y, left + x, c]) - mean[c])
//                           / std[c]
// i.e. the window's frames (those past `valid` repeat the last valid one, as take_window pads),
// centre-cropped to crop x crop at (top, left) = ((H - crop) / 2, (W - crop) / 2), normalised
// with the model's mean/std (0..255 units) and transposed to channels-first.
//
// Arguments: frames, out, then valid, H, W, T, crop, top, left, slot (int) and mean[3],
// std[3] (float32, as numpy casts them).
// Layout: frames  uint8 (valid, H, W, 3), C-contiguous, as decoded (the decoder already
//                 resized the short side to the model's `resize`, with FFmpeg's swscale, the
//                 same as the CPU path, so no resampling happens here);
//         out     (B, 3, T, crop, crop) C-contiguous, float32 (preprocess_f32) or float16
//                 (preprocess_f16, round to nearest even); the kernel writes batch slot `slot`.
// One thread per output element (grid-stride loop). float32 results are bit-identical to numpy:
// one IEEE subtraction and one IEEE division (NVRTC's default -prec-div=true, and the loader
// compiles with --fmad=false); float16 is that value rounded like numpy's astype(float16).

#define WINDOW_ARGS int valid, int height, int width, int frames_per_window, int crop, int top, \
    int left, int slot, float mean0, float mean1, float mean2, float std0, float std1, float std2

// The normalised value of output element i of the slot, and its index in `out`.
__device__ __forceinline__ float normalised(const unsigned char* frames, long long i,
                                            long long* out_index, WINDOW_ARGS) {
    long long plane = (long long)crop * crop;
    long long per_channel = plane * frames_per_window;
    int c = (int)(i / per_channel);
    long long rest = i - c * per_channel;
    int t = (int)(rest / plane);
    rest -= t * plane;
    int y = (int)(rest / crop), x = (int)(rest - (long long)y * crop);
    int src_t = t < valid ? t : valid - 1;
    long long src = (((long long)src_t * height + (top + y)) * width + (left + x)) * 3 + c;
    *out_index = (long long)slot * 3 * per_channel + i;
    float mean = c == 0 ? mean0 : (c == 1 ? mean1 : mean2);
    float std = c == 0 ? std0 : (c == 1 ? std1 : std2);
    return ((float)frames[src] - mean) / std;
}

#define PASS_WINDOW_ARGS valid, height, width, frames_per_window, crop, top, left, slot, \
    mean0, mean1, mean2, std0, std1, std2

extern "C" __global__ void preprocess_f32(const unsigned char* frames, float* out, WINDOW_ARGS) {
    long long total = 3LL * frames_per_window * crop * crop;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long o;
        float v = normalised(frames, i, &o, PASS_WINDOW_ARGS);
        out[o] = v;
    }
}

extern "C" __global__ void preprocess_f16(const unsigned char* frames, unsigned short* out,
                                          WINDOW_ARGS) {
    long long total = 3LL * frames_per_window * crop * crop;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long o;
        float v = normalised(frames, i, &o, PASS_WINDOW_ARGS);
        unsigned short h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
        out[o] = h;
    }
}
