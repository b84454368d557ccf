// Attributes of maskrcnn_deploy::MultiLevelRoIAlign (docs/ops.md) as TensorRT plugin fields.
//
// TensorRT's ONNX parser hands a plugin creator every node attribute named in the creator's
// getFieldNames(), as PluginFields typed by the attribute: int -> kINT32, float and floats -> kFLOAT32,
// string -> kCHAR (with or without a terminating NUL). The same fields come back at deserialization
// (createPlugin with TensorRTPhase::kRUNTIME gets what getFieldsToSerialize() returned), so one parser
// serves both phases.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mrd {
namespace trt {

struct RoIAlignAttributes {
  int32_t outputHeight{0};           // bins per roi along y
  int32_t outputWidth{0};            // bins per roi along x
  int32_t samplingRatio{0};          // samples per bin per axis; 0 = adaptive
  int32_t aligned{0};                // 1 = half-pixel offset (ROIAlignV2)
  std::vector<float> spatialScales;  // feature cells per input pixel of each level, e.g. 1/4 .. 1/32
  float canonicalScale{0.f};         // FPN level rule: canonical box size in pixels (224)
  int32_t canonicalLevel{0};         // FPN level rule: level of the canonical box (4)
  float levelEps{0.f};               // FPN level rule: added before the floor (1e-6)
  std::string mode;                  // "avg" or "max"

  int32_t numLevels() const { return static_cast<int32_t>(spatialScales.size()); }
  int32_t poolMode() const;    // mrd::kPoolAvg or mrd::kPoolMax
  int32_t firstLevel() const;  // FPN level number of the first map (2 for a scale of 1/4)
};

// The fields in the order of docs/ops.md with their types and no data: what getFieldNames() lists.
std::vector<nvinfer1::PluginField> attributeFieldSpecs();

// Parses and validates fields; every field is required, unknown or repeated ones are rejected.
// Throws std::invalid_argument whose message names the field and what was expected.
RoIAlignAttributes parseAttributes(nvinfer1::PluginFieldCollection const* fields);

// Throws std::invalid_argument when a value is outside what the op and the RoIAlign core accept.
void validateAttributes(RoIAlignAttributes const& attributes);

// Fields that point into `attributes` (valid while it lives unchanged): what getFieldsToSerialize() returns.
std::vector<nvinfer1::PluginField> attributeFields(RoIAlignAttributes const& attributes);

// One-line summary, e.g. "7x7 sampling_ratio=2 aligned=0 mode=avg spatial_scales=[0.25,...] ...".
std::string describeAttributes(RoIAlignAttributes const& attributes);

}  // namespace trt
}  // namespace mrd
