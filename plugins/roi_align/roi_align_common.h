// Host-side argument checks and status strings shared by the CPU and CUDA entry points.
#pragma once

#include <cmath>

#include "roi_align_api.h"
#include "roi_align_math.h"

namespace mrd {

inline const char* status_text(int status) {
  switch (status) {
    case MRD_OK: return "ok";
    case MRD_BAD_ARGUMENT: return "bad argument (sizes, levels, pooled size, sampling ratio, aligned or mode out of range)";
    case MRD_BATCH_INDEX_OUT_OF_RANGE: return "a roi's batch index is outside [0, batch)";
    case MRD_UNSUPPORTED_DTYPE: return "dtype not supported on this device";
    case MRD_CUDA_ERROR: return "CUDA error (kernel launch failed)";
    case MRD_INTERNAL_ERROR: return "internal error (threads could not be created)";
    default: return "unknown status";
  }
}

// MRD_OK when the level description and pooling parameters are usable. Several levels must be
// consecutive FPN levels (spatial scales 2^-k, 2^-(k+1), ...), as torchvision's MultiScaleRoIAlign infers.
inline int check_arguments(const MrdLevels* levels, const MrdPoolParams* params, int64_t num_rois) {
  if (levels == nullptr || params == nullptr || num_rois < 0) return MRD_BAD_ARGUMENT;
  if (levels->num_levels < 1 || levels->num_levels > MRD_MAX_LEVELS) return MRD_BAD_ARGUMENT;
  if (levels->batch < 0 || levels->channels < 0) return MRD_BAD_ARGUMENT;
  for (int l = 0; l < levels->num_levels; ++l) {
    const float s = levels->spatial_scale[l];
    if (levels->height[l] < 1 || levels->width[l] < 1 || !(s > 0.f) || !std::isfinite(s)) return MRD_BAD_ARGUMENT;
    if (levels->num_levels > 1) {
      const int k = level_from_scale(s);
      if (std::fabs(std::ldexp(1.0, -k) - s) > 1e-6 * s) return MRD_BAD_ARGUMENT;  // not a power of two
      if (k != level_from_scale(levels->spatial_scale[0]) + l) return MRD_BAD_ARGUMENT;  // not consecutive
    }
  }
  if (levels->num_levels > 1 && !(levels->canonical_scale > 0.f)) return MRD_BAD_ARGUMENT;
  if (params->pooled_h < 1 || params->pooled_w < 1 || params->sampling_ratio < 0) return MRD_BAD_ARGUMENT;
  if ((params->aligned != 0 && params->aligned != 1) || (params->mode != kPoolAvg && params->mode != kPoolMax))
    return MRD_BAD_ARGUMENT;
  return MRD_OK;
}

}  // namespace mrd
