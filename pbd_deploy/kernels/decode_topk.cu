// Segment decode + per-window top-k: core.windows.window_candidates for a batch of windows,
// on the engine's outputs where they are, so only the kept candidates cross the bus.
//
// Computes, for window b of the batch and every (point n, class k), flat index i = n * K + k:
//   candidate  when positions[n] < limit[b] (a point of real, not padded, input) and
//              double(scores[b, n, k]) > thresh (select_topk's pre_nms_thresh);
//   rank       = the number of candidates j of window b with scores[b, j] > scores[b, i], or
//              equal and j < i: its place in select_topk's stable sort by score, descending;
//   seconds    = clip((offset[b] + (segments[b, n, :] + 0.5f) * fpp) / fps, 0, duration):
//              core.windows.points_to_seconds then np.clip, in float32 as numpy computes them
//              (numpy casts the Python scalars to float32: offset[b] = float32(start *
//              step_frames), fpp = float32(frames_per_point), fps, duration likewise).
// A candidate with rank < cap writes out_segments[b, rank] = (start_s, end_s),
// out_scores[b, rank] and out_labels[b, rank] = k; count[b] receives the number of candidates.
// The host keeps, per window, rows [0, min(count[b], cap)) whose end_s > start_s (select_topk
// drops zero-length segments after the top-k), in window order: window_candidates exactly.
//
// Layout (C-contiguous): scores float32 (B, N, K); segments float32 (B, N, 2) in head points;
// positions float32 (N,); offset, limit float32 (B,); out_segments float32 (B, cap, 2);
// out_scores float32 (B, cap); out_labels int32 (B, cap); count int32 (B,), zeroed before.
// Launch: grid (ceil(N * K / 256), B), block 256 (TILE). Compiled with --fmad=false, so the
// multiply and the add round separately, as in numpy.

#define TILE 256

__device__ __forceinline__ bool is_candidate(const float* scores, const float* positions,
                                             int j, int classes, float limit, double thresh) {
    return positions[j / classes] < limit && (double)scores[j] > thresh;
}

extern "C" __global__ void decode_topk(const float* scores, const float* segments,
                                       const float* positions, const float* offset,
                                       const float* limit, int points, int classes, float fpp,
                                       float fps, float duration, double thresh, int cap,
                                       float* out_segments, float* out_scores, int* out_labels,
                                       int* count) {
    __shared__ float tile_score[TILE];
    __shared__ int tile_ok[TILE];
    const int b = blockIdx.y, total = points * classes;
    const int i = blockIdx.x * TILE + threadIdx.x;
    const float* sc = scores + (long long)b * total;
    const float lim = limit[b];
    const bool mine = i < total && is_candidate(sc, positions, i, classes, lim, thresh);
    const float s = i < total ? sc[i] : 0.0f;
    int rank = 0;
    for (int base = 0; base < total; base += TILE) {
        int j = base + threadIdx.x;
        tile_ok[threadIdx.x] = j < total && is_candidate(sc, positions, j, classes, lim, thresh);
        tile_score[threadIdx.x] = j < total ? sc[j] : 0.0f;
        __syncthreads();
        if (mine) {
            int n = min(TILE, total - base);
            for (int t = 0; t < n; ++t) {
                float v = tile_score[t];
                rank += tile_ok[t] && (v > s || (v == s && base + t < i));
            }
        }
        __syncthreads();
    }
    if (!mine) return;
    atomicAdd(count + b, 1);
    if (rank >= cap) return;
    const int n = i / classes;
    const float* seg = segments + ((long long)b * points + n) * 2;
    const long long o = (long long)b * cap + rank;
    for (int e = 0; e < 2; ++e) {
        float t = offset[b] + (seg[e] + 0.5f) * fpp;
        out_segments[o * 2 + e] = fminf(fmaxf(t / fps, 0.0f), duration);
    }
    out_scores[o] = s;
    out_labels[o] = i - n * classes;
}
