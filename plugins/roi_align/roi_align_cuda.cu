// CUDA RoIAlign kernels (float32 and float16 feature maps, float32 rois, float32 accumulation).
//
// The kernels are templated on the feature type T (float or __half; the output and its gradient have it
// too); rois are float32 whatever T is, because box corners of 1024 px and more move in 1-pixel steps in
// float16 (level boundaries flip, windows shift).
//
// One thread per output element (roi, channel, bin), grid-stride; each thread resolves its roi's FPN
// level and sampling grid with roi_align_math.h (the same code the CPU kernels run) and accumulates
// its bin's samples. Backward scatters with float atomics into float32 gradient buffers.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cfloat>

#include "roi_align_api.h"
#include "roi_align_common.h"
#include "roi_align_math.h"

namespace mrd {
namespace {

template <typename T>
struct LevelPointers {
  T* level[kMaxLevels];
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half(v); }

template <typename T>
__device__ __forceinline__ float interpolate(const T* plane, const BilinearTaps<float>& t) {
  return t.weight[0] * to_float(plane[t.offset[0]]) + t.weight[1] * to_float(plane[t.offset[1]]) +
         t.weight[2] * to_float(plane[t.offset[2]]) + t.weight[3] * to_float(plane[t.offset[3]]);
}

// Level and geometry of roi r; false when it pools nothing (undefined level or bad batch index).
__device__ __forceinline__ bool resolve_roi(const MrdLevels& lv, const MrdPoolParams& p, const float* roi,
                                            int first_level, int* level, RoiGeometry<float>* g) {
  const float b = roi[0], x1 = roi[1], y1 = roi[2], x2 = roi[3], y2 = roi[4];
  *level = fpn_level_index<float>(x1, y1, x2, y2, lv.canonical_scale, lv.canonical_level, lv.eps, first_level,
                                  lv.num_levels);
  if (*level < 0) return false;
  *g = roi_geometry<float>(b, x1, y1, x2, y2, lv.spatial_scale[*level], p.pooled_h, p.pooled_w, p.sampling_ratio,
                           p.aligned != 0);
  return g->batch >= 0 && g->batch < lv.batch;
}

// Output element i of [R, C, pooled_h, pooled_w] as (roi, channel, bin row, bin column).
struct OutputIndex {
  int64_t roi;
  int channel, ph, pw;
};

__device__ __forceinline__ OutputIndex output_index(int64_t i, int channels, const MrdPoolParams& p) {
  const int bins = p.pooled_h * p.pooled_w;
  const int b = static_cast<int>(i % bins);
  return {i / (static_cast<int64_t>(bins) * channels), static_cast<int>((i / bins) % channels), b / p.pooled_w,
          b % p.pooled_w};
}

// Offset of the (image, channel) plane an output element reads, in its level's feature map.
__device__ __forceinline__ int64_t plane_offset(const MrdLevels& lv, int level, int batch, int channel) {
  return (static_cast<int64_t>(batch) * lv.channels + channel) * lv.height[level] * lv.width[level];
}

// Taps of sample s (row-major over the grid) of bin (ph, pw) on the covered part `map` of a plane W wide.
__device__ __forceinline__ BilinearTaps<float> sample_taps(const RoiGeometry<float>& g, CoveredMap map, int W, int ph,
                                                           int pw, int s) {
  const int iy = s / g.grid_w, ix = s % g.grid_w;
  return bilinear_taps<float>(map.height, map.width, W,
                              sample_coordinate<float>(g.y_start, g.bin_h, ph, iy, g.grid_h),
                              sample_coordinate<float>(g.x_start, g.bin_w, pw, ix, g.grid_w));
}

// The part of roi's level that its image covers.
__device__ __forceinline__ CoveredMap roi_map(const MrdLevels& lv, int level, const RoiGeometry<float>& g) {
  return covered_map(lv.extents, g.batch, lv.height[level], lv.width[level], lv.spatial_scale[level]);
}

template <typename T>
__global__ void forward_kernel(MrdLevels lv, LevelPointers<const T> features, const float* rois, int64_t total,
                               MrdPoolParams p, int first_level, T* output) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const OutputIndex o = output_index(i, lv.channels, p);
    int level;
    RoiGeometry<float> g;
    float value = 0.f;
    if (resolve_roi(lv, p, rois + 5 * o.roi, first_level, &level, &g)) {
      const int W = lv.width[level];
      const CoveredMap map = roi_map(lv, level, g);
      const T* plane = features.level[level] + plane_offset(lv, level, g.batch, o.channel);
      const int n = g.grid_h * g.grid_w;
      if (p.mode == kPoolAvg) {
        for (int s = 0; s < n; ++s) value += interpolate(plane, sample_taps(g, map, W, o.ph, o.pw, s));
        value /= g.count;
      } else if (n > 0) {
        value = -FLT_MAX;
        for (int s = 0; s < n; ++s) value = fmaxf(value, interpolate(plane, sample_taps(g, map, W, o.ph, o.pw, s)));
      }
    }
    output[i] = from_float<T>(value);
  }
}

template <typename T>
__global__ void backward_kernel(MrdLevels lv, LevelPointers<const T> features, const float* rois, int64_t total,
                                MrdPoolParams p, int first_level, const T* grad_output,
                                LevelPointers<float> grad_features) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const OutputIndex o = output_index(i, lv.channels, p);
    int level;
    RoiGeometry<float> g;
    if (!resolve_roi(lv, p, rois + 5 * o.roi, first_level, &level, &g)) continue;
    const int W = lv.width[level], ph = o.ph, pw = o.pw;
    const CoveredMap map = roi_map(lv, level, g);
    const int64_t offset = plane_offset(lv, level, g.batch, o.channel);
    float* grad_plane = grad_features.level[level] + offset;
    const int n = g.grid_h * g.grid_w;
    const float grad = to_float(grad_output[i]);
    if (p.mode == kPoolAvg) {
      const float share = grad / g.count;
      for (int s = 0; s < n; ++s) {
        const BilinearTaps<float> t = sample_taps(g, map, W, ph, pw, s);
        for (int j = 0; j < 4; ++j)
          if (t.weight[j] != 0.f) atomicAdd(grad_plane + t.offset[j], t.weight[j] * share);
      }
    } else if (n > 0) {  // the gradient goes to the first sample holding the bin's maximum
      const T* plane = features.level[level] + offset;
      int best = 0;
      float best_value = -FLT_MAX;
      for (int s = 0; s < n; ++s) {
        const float v = interpolate(plane, sample_taps(g, map, W, ph, pw, s));
        if (v > best_value) { best_value = v; best = s; }
      }
      const BilinearTaps<float> t = sample_taps(g, map, W, ph, pw, best);
      for (int j = 0; j < 4; ++j)
        if (t.weight[j] != 0.f) atomicAdd(grad_plane + t.offset[j], t.weight[j] * grad);
    }
  }
}

int blocks_for(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 * 32 ? blocks : 65535 * 32);
}

constexpr int kThreads = 256;

template <typename T>
int launch_forward(const MrdLevels& lv, const void* const* features, const void* rois, int64_t num_rois,
                   const MrdPoolParams& p, void* output, cudaStream_t stream) {
  const int64_t total = num_rois * lv.channels * p.pooled_h * p.pooled_w;
  if (total == 0) return MRD_OK;
  LevelPointers<const T> f{};
  for (int l = 0; l < lv.num_levels; ++l) f.level[l] = static_cast<const T*>(features[l]);
  forward_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, stream>>>(
      lv, f, static_cast<const float*>(rois), total, p, level_from_scale(lv.spatial_scale[0]),
      static_cast<T*>(output));
  return cudaGetLastError() == cudaSuccess ? MRD_OK : MRD_CUDA_ERROR;
}

template <typename T>
int launch_backward(const MrdLevels& lv, const void* const* features, const void* rois, int64_t num_rois,
                    const MrdPoolParams& p, const void* grad_output, void* const* grad_features, cudaStream_t stream) {
  const int64_t total = num_rois * lv.channels * p.pooled_h * p.pooled_w;
  if (total == 0) return MRD_OK;
  if (p.mode == kPoolMax && features == nullptr) return MRD_BAD_ARGUMENT;
  LevelPointers<const T> f{};
  LevelPointers<float> gf{};
  for (int l = 0; l < lv.num_levels; ++l) {
    f.level[l] = features ? static_cast<const T*>(features[l]) : nullptr;
    gf.level[l] = static_cast<float*>(grad_features[l]);
  }
  backward_kernel<T><<<blocks_for(total, kThreads), kThreads, 0, stream>>>(
      lv, f, static_cast<const float*>(rois), total, p, level_from_scale(lv.spatial_scale[0]),
      static_cast<const T*>(grad_output), gf);
  return cudaGetLastError() == cudaSuccess ? MRD_OK : MRD_CUDA_ERROR;
}

}  // namespace
}  // namespace mrd

extern "C" {

MRD_API const char* mrd_status_message(int status) { return mrd::status_text(status); }

MRD_API int mrd_roi_align_forward_cuda(int dtype, const MrdLevels* levels, const void* const* features,
                                       const void* rois, int64_t num_rois, const MrdPoolParams* params,
                                       void* output, void* stream) {
  if (int st = mrd::check_arguments(levels, params, num_rois)) return st;
  const auto s = static_cast<cudaStream_t>(stream);
  if (dtype == MRD_FLOAT32) return mrd::launch_forward<float>(*levels, features, rois, num_rois, *params, output, s);
  if (dtype == MRD_FLOAT16) return mrd::launch_forward<__half>(*levels, features, rois, num_rois, *params, output, s);
  return MRD_UNSUPPORTED_DTYPE;
}

MRD_API int mrd_roi_align_backward_cuda(int dtype, const MrdLevels* levels, const void* const* features,
                                        const void* rois, int64_t num_rois, const MrdPoolParams* params,
                                        const void* grad_output, void* const* grad_features, void* stream) {
  if (int st = mrd::check_arguments(levels, params, num_rois)) return st;
  const auto s = static_cast<cudaStream_t>(stream);
  if (dtype == MRD_FLOAT32)
    return mrd::launch_backward<float>(*levels, features, rois, num_rois, *params, grad_output, grad_features, s);
  if (dtype == MRD_FLOAT16)
    return mrd::launch_backward<__half>(*levels, features, rois, num_rois, *params, grad_output, grad_features, s);
  return MRD_UNSUPPORTED_DTYPE;
}

}  // extern "C"
