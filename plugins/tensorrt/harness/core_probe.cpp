// The probe's stand-in for the RoIAlign core's CUDA entry point. The probe library (CMake target
// mrd_trt_plugin_probe, used only by the harness) is the plugin's own sources linked with this file instead
// of roi_align_cuda.cu: mrd_roi_align_forward_cuda records what enqueue() hands the kernel (core_probe.h)
// and, for float32, runs the core's CPU kernel on the same buffers, which the harness allocates in host
// memory. So enqueue's plumbing (level sizes, pointers, extents, parameters) is checked without a GPU.
#include "core_probe.h"

namespace {
MrdProbeCall gLast{};
}  // namespace

extern "C" MRD_API int mrd_roi_align_forward_cuda(int dtype, const MrdLevels* levels, const void* const* features,
                                                  const void* rois, int64_t num_rois, const MrdPoolParams* params,
                                                  void* output, void* stream) {
  int32_t const calls = gLast.calls + 1;
  gLast = MrdProbeCall{};
  gLast.calls = calls;
  gLast.dtype = dtype;
  gLast.levels = *levels;
  for (int l = 0; l < levels->num_levels && l < MRD_MAX_LEVELS; ++l) gLast.features[l] = features[l];
  gLast.rois = rois;
  gLast.numRois = num_rois;
  gLast.params = *params;
  gLast.output = output;
  gLast.stream = stream;
  if (dtype != MRD_FLOAT32) return MRD_OK;  // the CPU kernel has no float16; the record is what is checked
  return mrd_roi_align_forward_cpu(dtype, levels, features, rois, num_rois, params, output, 1);
}

extern "C" MRD_API MrdProbeCall const* mrdProbeLastCall() { return &gLast; }
