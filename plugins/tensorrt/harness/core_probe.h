// What the probe build of the plugin library (harness/core_probe.cpp, CMake target mrd_trt_plugin_probe)
// records of the last call enqueue() made into the RoIAlign core's mrd_roi_align_forward_cuda.
#pragma once

#include <cstdint>

#include "roi_align_api.h"

struct MrdProbeCall {
  int32_t calls;                              // calls so far (0: enqueue never reached the core)
  int dtype;                                  // MRD_FLOAT32 / MRD_FLOAT16
  MrdLevels levels;                           // as enqueue filled it in, extents pointer included
  void const* features[MRD_MAX_LEVELS];       // the level pointers
  void const* rois;
  int64_t numRois;
  MrdPoolParams params;
  void* output;
  void* stream;
};

// Exported by the probe library: the last call recorded (never null).
using MrdProbeLastCallFn = MrdProbeCall const* (*)();
