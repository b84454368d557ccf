// Creator of the MultiLevelRoIAlign plugin: what TensorRT's plugin registry holds and what the ONNX
// parser finds for a node whose op_type is "MultiLevelRoIAlign" (plugin_version "1", namespace "").
#pragma once

#include <NvInferRuntime.h>

#include <vector>

namespace mrd {
namespace trt {

class MultiLevelRoIAlignCreator : public nvinfer1::IPluginCreatorV3One {
 public:
  MultiLevelRoIAlignCreator();

  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;

  // The op's attributes (docs/ops.md) with their types; the ONNX parser passes exactly these.
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;

  // The same fields in both phases (kBUILD: from the ONNX node or the user; kRUNTIME: from
  // getFieldsToSerialize). Returns nullptr and logs why when a field is missing, unknown or invalid.
  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;

 private:
  std::vector<nvinfer1::PluginField> mFieldSpecs;
  nvinfer1::PluginFieldCollection mFieldCollection{};
};

}  // namespace trt
}  // namespace mrd
