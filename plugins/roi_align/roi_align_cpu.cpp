// CPU RoIAlign kernels (float32, float64), threaded with std::thread.
//
// Forward: rois are split across threads; each roi computes its bilinear taps once (roi_align_math.h)
// and reuses them for every channel. Backward: channels are split across threads, so two threads never
// add into the same gradient element and the result is deterministic.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <limits>
#include <thread>
#include <vector>

#include "roi_align_api.h"
#include "roi_align_common.h"
#include "roi_align_math.h"

namespace mrd {
namespace {

// Calls fn(begin, end) on consecutive chunks of [0, n) from up to num_threads threads.
template <typename Fn>
void parallel_for(int64_t n, int num_threads, int64_t chunk, Fn fn) {
  if (n <= 0) return;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, (n + chunk - 1) / chunk)));
  if (threads == 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::atomic<int64_t> next{0};
  auto worker = [&]() {
    for (int64_t begin = next.fetch_add(chunk); begin < n; begin = next.fetch_add(chunk)) fn(begin, std::min(n, begin + chunk));
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
}

// One roi resolved to its level and sampling grid, with every sample's taps (bin-major).
template <typename T>
struct RoiSamples {
  int level = -1;               // -1: nothing to pool (undefined FPN level), output stays 0
  int batch = 0;
  RoiGeometry<T> geometry{};
  int per_bin = 0;              // samples per bin
  std::vector<BilinearTaps<T>> taps;  // [pooled_h * pooled_w][per_bin]
};

// Level index of roi (batch_index, x1, y1, x2, y2) among lv's levels; -1 when undefined.
template <typename T>
int roi_level(const MrdLevels& lv, const T* roi) {
  return fpn_level_index<T>(roi[1], roi[2], roi[3], roi[4], static_cast<T>(lv.canonical_scale), lv.canonical_level,
                            static_cast<T>(lv.eps), level_from_scale(lv.spatial_scale[0]), lv.num_levels);
}

// Returns false when the roi's batch index is out of range.
template <typename T>
bool plan_roi(const MrdLevels& lv, const MrdPoolParams& p, const T* roi, RoiSamples<T>& s) {
  s.level = roi_level(lv, roi);
  s.taps.clear();
  s.per_bin = 0;
  if (s.level < 0) return true;
  const RoiGeometry<T> g = roi_geometry<T>(roi[0], roi[1], roi[2], roi[3], roi[4],
                                           static_cast<T>(lv.spatial_scale[s.level]), p.pooled_h, p.pooled_w,
                                           p.sampling_ratio, p.aligned != 0);
  s.geometry = g;
  s.batch = g.batch;
  if (g.batch < 0 || g.batch >= lv.batch || roi[0] != roi[0]) {
    s.level = -1;
    return false;
  }
  const int W = lv.width[s.level];  // the row stride; the image may cover fewer rows and columns
  const CoveredMap map = covered_map(lv.extents, g.batch, lv.height[s.level], W, lv.spatial_scale[s.level]);
  s.per_bin = g.grid_h * g.grid_w;
  s.taps.reserve(static_cast<size_t>(p.pooled_h) * p.pooled_w * s.per_bin);
  for (int ph = 0; ph < p.pooled_h; ++ph)
    for (int pw = 0; pw < p.pooled_w; ++pw)
      for (int iy = 0; iy < g.grid_h; ++iy) {
        const T y = sample_coordinate<T>(g.y_start, g.bin_h, ph, iy, g.grid_h);
        for (int ix = 0; ix < g.grid_w; ++ix)
          s.taps.push_back(
              bilinear_taps<T>(map.height, map.width, W, y, sample_coordinate<T>(g.x_start, g.bin_w, pw, ix, g.grid_w)));
      }
  return true;
}

template <typename T>
inline T interpolate(const T* plane, const BilinearTaps<T>& t) {
  return t.weight[0] * plane[t.offset[0]] + t.weight[1] * plane[t.offset[1]] + t.weight[2] * plane[t.offset[2]] +
         t.weight[3] * plane[t.offset[3]];
}

// Index of the first sample with the largest interpolated value in one bin (max mode).
template <typename T>
inline int argmax_sample(const T* plane, const BilinearTaps<T>* taps, int n) {
  int best = 0;
  T best_value = std::numeric_limits<T>::lowest();
  for (int s = 0; s < n; ++s) {
    const T v = interpolate(plane, taps[s]);
    if (v > best_value) { best_value = v; best = s; }
  }
  return best;
}

inline size_t plane_size(const MrdLevels& lv, int level) {
  return static_cast<size_t>(lv.height[level]) * lv.width[level];
}

template <typename T>
int forward(const MrdLevels& lv, const T* const* features, const T* rois, int64_t num_rois, const MrdPoolParams& p,
            T* output, int num_threads) {
  const int C = lv.channels, bins = p.pooled_h * p.pooled_w;
  std::atomic<bool> bad_batch{false};
  parallel_for(num_rois, num_threads, 4, [&](int64_t begin, int64_t end) {
    RoiSamples<T> s;
    for (int64_t r = begin; r < end; ++r) {
      T* out = output + r * C * bins;
      if (!plan_roi(lv, p, rois + 5 * r, s)) bad_batch = true;
      if (s.level < 0) {
        std::fill(out, out + static_cast<size_t>(C) * bins, T(0));
        continue;
      }
      const size_t hw = plane_size(lv, s.level);
      const T* image = features[s.level] + static_cast<size_t>(s.batch) * C * hw;
      for (int c = 0; c < C; ++c) {
        const T* plane = image + c * hw;
        for (int b = 0; b < bins; ++b) {
          const BilinearTaps<T>* taps = s.taps.data() + static_cast<size_t>(b) * s.per_bin;
          if (p.mode == kPoolAvg) {
            T sum = 0;
            for (int k = 0; k < s.per_bin; ++k) sum += interpolate(plane, taps[k]);
            out[c * bins + b] = sum / s.geometry.count;
          } else {
            out[c * bins + b] = s.per_bin ? interpolate(plane, taps[argmax_sample(plane, taps, s.per_bin)]) : T(0);
          }
        }
      }
    }
  });
  return bad_batch ? MRD_BATCH_INDEX_OUT_OF_RANGE : MRD_OK;
}

template <typename T>
int backward(const MrdLevels& lv, const T* const* features, const T* rois, int64_t num_rois, const MrdPoolParams& p,
             const T* grad_output, T* const* grad_features, int num_threads) {
  const int C = lv.channels, bins = p.pooled_h * p.pooled_w;
  if (p.mode == kPoolMax && features == nullptr) return MRD_BAD_ARGUMENT;
  std::atomic<bool> bad_batch{false};
  const int64_t per_thread = (C + std::max(num_threads, 1) - 1) / std::max(num_threads, 1);
  parallel_for(C, num_threads, std::max<int64_t>(per_thread, 1), [&](int64_t c_begin, int64_t c_end) {
    RoiSamples<T> s;
    for (int64_t r = 0; r < num_rois; ++r) {
      if (!plan_roi(lv, p, rois + 5 * r, s)) bad_batch = true;
      if (s.level < 0) continue;
      const size_t hw = plane_size(lv, s.level);
      const size_t image = static_cast<size_t>(s.batch) * C * hw;
      for (int64_t c = c_begin; c < c_end; ++c) {
        const T* grad = grad_output + (r * C + c) * bins;
        T* grad_plane = grad_features[s.level] + image + c * hw;
        for (int b = 0; b < bins; ++b) {
          const BilinearTaps<T>* taps = s.taps.data() + static_cast<size_t>(b) * s.per_bin;
          if (p.mode == kPoolAvg) {
            const T g = grad[b] / s.geometry.count;
            for (int k = 0; k < s.per_bin; ++k)
              for (int j = 0; j < 4; ++j) grad_plane[taps[k].offset[j]] += taps[k].weight[j] * g;
          } else if (s.per_bin) {
            const T* plane = features[s.level] + image + c * hw;
            const BilinearTaps<T>& t = taps[argmax_sample(plane, taps, s.per_bin)];
            for (int j = 0; j < 4; ++j) grad_plane[t.offset[j]] += t.weight[j] * grad[b];
          }
        }
      }
    }
  });
  return bad_batch ? MRD_BATCH_INDEX_OUT_OF_RANGE : MRD_OK;
}

template <typename T>
void fpn_levels(const MrdLevels& lv, const T* rois, int64_t num_rois, int32_t* level_out) {
  for (int64_t r = 0; r < num_rois; ++r) level_out[r] = roi_level(lv, rois + 5 * r);
}

// Runs body() and turns any C++ exception (e.g. thread creation failure) into a status.
template <typename Body>
int guarded(Body body) {
  try {
    return body();
  } catch (const std::exception&) {
    return static_cast<int>(MRD_INTERNAL_ERROR);
  }
}

}  // namespace
}  // namespace mrd

extern "C" {

MRD_API const char* mrd_status_message(int status) { return mrd::status_text(status); }

MRD_API int mrd_fpn_levels_cpu(int dtype, const MrdLevels* levels, const void* rois, int64_t num_rois,
                               int32_t* level_out) {
  MrdPoolParams unused{1, 1, 0, 0, 0};
  if (int st = mrd::check_arguments(levels, &unused, num_rois)) return st;
  if (dtype == MRD_FLOAT32) mrd::fpn_levels(*levels, static_cast<const float*>(rois), num_rois, level_out);
  else if (dtype == MRD_FLOAT64) mrd::fpn_levels(*levels, static_cast<const double*>(rois), num_rois, level_out);
  else return MRD_UNSUPPORTED_DTYPE;
  return MRD_OK;
}

MRD_API int mrd_roi_align_forward_cpu(int dtype, const MrdLevels* levels, const void* const* features,
                                      const void* rois, int64_t num_rois, const MrdPoolParams* params,
                                      void* output, int num_threads) {
  if (int st = mrd::check_arguments(levels, params, num_rois)) return st;
  return mrd::guarded([&] {
    if (dtype == MRD_FLOAT32)
      return mrd::forward(*levels, reinterpret_cast<const float* const*>(features), static_cast<const float*>(rois),
                          num_rois, *params, static_cast<float*>(output), num_threads);
    if (dtype == MRD_FLOAT64)
      return mrd::forward(*levels, reinterpret_cast<const double* const*>(features), static_cast<const double*>(rois),
                          num_rois, *params, static_cast<double*>(output), num_threads);
    return static_cast<int>(MRD_UNSUPPORTED_DTYPE);
  });
}

MRD_API int mrd_roi_align_backward_cpu(int dtype, const MrdLevels* levels, const void* const* features,
                                       const void* rois, int64_t num_rois, const MrdPoolParams* params,
                                       const void* grad_output, void* const* grad_features, int num_threads) {
  if (int st = mrd::check_arguments(levels, params, num_rois)) return st;
  return mrd::guarded([&] {
    if (dtype == MRD_FLOAT32)
      return mrd::backward(*levels, reinterpret_cast<const float* const*>(features), static_cast<const float*>(rois),
                           num_rois, *params, static_cast<const float*>(grad_output),
                           reinterpret_cast<float* const*>(grad_features), num_threads);
    if (dtype == MRD_FLOAT64)
      return mrd::backward(*levels, reinterpret_cast<const double* const*>(features), static_cast<const double*>(rois),
                           num_rois, *params, static_cast<const double*>(grad_output),
                           reinterpret_cast<double* const*>(grad_features), num_threads);
    return static_cast<int>(MRD_UNSUPPORTED_DTYPE);
  });
}

}  // extern "C"
