// C interface of the RoIAlign core library: what Python (ctypes), the ONNX Runtime custom op and the
// TensorRT plugin call. Plain C types only, so every caller links the same kernels.
//
// Layouts (all contiguous, row-major):
//   features of level l : [batch, channels, height_l, width_l]
//   rois                : [num_rois, 5] = (batch_index, x1, y1, x2, y2) in input pixels, float32; float64 only
//                         with float64 features (CPU). `dtype` arguments name the features' type.
//   output              : [num_rois, channels, pooled_h, pooled_w]
//   extents (optional)  : [batch, 2] float32 = (height, width) in input pixels of the region each image's maps
//                         cover (what the eager model pads the image to); a tap beyond ceil(extent * scale)
//                         rows/columns of a level reads as outside the map. NULL: every image covers every map.
// A single-level RoIAlign is the one-level case (no level assignment).
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MRD_API __declspec(dllexport)
#else
#define MRD_API __attribute__((visibility("default")))
#endif

#define MRD_MAX_LEVELS 8

typedef enum MrdStatus {
  MRD_OK = 0,
  MRD_BAD_ARGUMENT = 1,                 // a size or parameter out of its range
  MRD_BATCH_INDEX_OUT_OF_RANGE = 2,     // a roi names an image the batch does not have
  MRD_UNSUPPORTED_DTYPE = 3,            // dtype not built for this device
  MRD_CUDA_ERROR = 4,                   // a CUDA launch failed
  MRD_INTERNAL_ERROR = 5,               // e.g. threads could not be created
} MrdStatus;

typedef enum MrdDType { MRD_FLOAT32 = 0, MRD_FLOAT16 = 1, MRD_FLOAT64 = 2 } MrdDType;

typedef struct MrdPoolParams {
  int32_t pooled_h, pooled_w;  // output bins per roi
  int32_t sampling_ratio;      // samples per bin per axis; 0 = adaptive ceil(roi / bin)
  int32_t aligned;             // 1 = half-pixel offset (ROIAlignV2), 0 = legacy
  int32_t mode;                // 0 = average, 1 = max over the bin's samples
} MrdPoolParams;

typedef struct MrdLevels {
  int32_t num_levels;                   // 1..MRD_MAX_LEVELS; 1 = plain RoIAlign
  int32_t batch, channels;              // shared by every level
  int32_t height[MRD_MAX_LEVELS], width[MRD_MAX_LEVELS];
  float spatial_scale[MRD_MAX_LEVELS];  // feature cells per input pixel; powers of two when num_levels > 1
  float canonical_scale;                // FPN rule: canonical box size (224)
  int32_t canonical_level;              // FPN rule: its level (4)
  float eps;                            // FPN rule: added before the floor (torchvision: 1e-6)
  const float* extents;                 // [batch, 2] (height, width) input pixels, or NULL (see above); a device
                                        // pointer for the CUDA functions, a host pointer for the CPU ones
} MrdLevels;

// Message for a status code (static string).
MRD_API const char* mrd_status_message(int status);

// Level index (0 = first level) each roi pools from; -1 where the rule is undefined (negative area).
MRD_API int mrd_fpn_levels_cpu(int dtype, const MrdLevels* levels, const void* rois, int64_t num_rois,
                               int32_t* level_out);

// Forward: output[r] = RoIAlign of roi r on its level. features[l] points at level l.
MRD_API int mrd_roi_align_forward_cpu(int dtype, const MrdLevels* levels, const void* const* features,
                                      const void* rois, int64_t num_rois, const MrdPoolParams* params,
                                      void* output, int num_threads);

// Backward: grad_features[l] (zero-filled by the caller) += d output / d features[l] * grad_output.
// features is read only in max mode (to find each bin's arg-max sample); it may be NULL for average.
MRD_API int mrd_roi_align_backward_cpu(int dtype, const MrdLevels* levels, const void* const* features,
                                       const void* rois, int64_t num_rois, const MrdPoolParams* params,
                                       const void* grad_output, void* const* grad_features, int num_threads);

// CUDA versions (library built only where nvcc is found). Pointers are device pointers; `stream` is a
// cudaStream_t. dtype: the features' (and output's) MRD_FLOAT32 or MRD_FLOAT16; rois are float32 for both.
// Float16 accumulates in float32; grad_features are always float32 buffers.
// Rois whose batch index is out of range produce zeros (callers validate; kernels cannot report).
MRD_API int mrd_roi_align_forward_cuda(int dtype, const MrdLevels* levels, const void* const* features,
                                       const void* rois, int64_t num_rois, const MrdPoolParams* params,
                                       void* output, void* stream);
MRD_API int mrd_roi_align_backward_cuda(int dtype, const MrdLevels* levels, const void* const* features,
                                        const void* rois, int64_t num_rois, const MrdPoolParams* params,
                                        const void* grad_output, void* const* grad_features, void* stream);

#ifdef __cplusplus
}
#endif
