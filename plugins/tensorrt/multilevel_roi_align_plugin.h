// TensorRT plugin for the custom ONNX op maskrcnn_deploy::MultiLevelRoIAlign, version 1 (docs/ops.md).
//
//   inputs : rois [R, 5] (batch_index, x1, y1, x2, y2) float32, then one feature map per level
//            [B, C, H_l, W_l] (p2..p5 for Mask R-CNN), all float32 or all float16, then optionally
//            extents [B, 2] float32 = (height, width) in input pixels of the region each image's maps cover
//            (graphs exported before it have no extents: every image covers every map); linear layout
//   output : pooled [R, C, output_height, output_width], the feature maps' type
//
// Each roi is pooled on its FPN level; enqueue() calls the shared CUDA kernels of the RoIAlign core
// (plugins/roi_align/roi_align_cuda.cu, float32 accumulation), so the sampling math exists once.
// The plugin implements IPluginV3 with the core, build and runtime capabilities of the "V3One" family;
// its state is the op's attributes, serialized as plugin fields.
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

#include "multilevel_roi_align_attributes.h"

static_assert(NV_TENSORRT_MAJOR >= 10, "the IPluginV3 interfaces need TensorRT 10 or newer headers");

namespace mrd {
namespace trt {

constexpr char kPluginName[] = "MultiLevelRoIAlign";  // the ONNX op_type the parser looks up
constexpr char kPluginVersion[] = "1";                // the parser's default plugin_version
constexpr char kPluginNamespace[] = "";               // the parser's default plugin_namespace

class MultiLevelRoIAlignPlugin : public nvinfer1::IPluginV3,
                                 public nvinfer1::IPluginV3OneCore,
                                 public nvinfer1::IPluginV3OneBuild,
                                 public nvinfer1::IPluginV3OneRuntime {
 public:
  // `attributes` must have passed validateAttributes(); `layerName` is used in error messages.
  MultiLevelRoIAlignPlugin(std::string layerName, RoIAlignAttributes attributes);
  MultiLevelRoIAlignPlugin(MultiLevelRoIAlignPlugin const&) = delete;
  MultiLevelRoIAlignPlugin& operator=(MultiLevelRoIAlignPlugin const&) = delete;
  ~MultiLevelRoIAlignPlugin() override = default;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override { return kPluginName; }
  char const* getPluginVersion() const noexcept override { return kPluginVersion; }
  char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override { return 1; }
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
  char const* getMetadataString() noexcept override { return mMetadata.c_str(); }

  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

 private:
  int32_t numInputs() const { return 1 + mAttributes.numLevels(); }  // without extents; numInputs() + 1 with
  bool hasExtents(int32_t nbInputs) const { return nbInputs == numInputs() + 1; }
  // Empty when nbInputs/nbOutputs are one of the op's two forms; otherwise what is wrong.
  std::string checkCounts(int32_t nbInputs, int32_t nbOutputs) const;
  std::string inputName(int32_t index) const;  // "rois", "p2", "p3", ..., "extents"
  // Empty when the input dims fit the op (-1 = not known yet); otherwise what is wrong.
  std::string checkInputDims(nvinfer1::Dims const* dims, int32_t nbInputs, int32_t nbOutputs) const;
  // configurePlugin/onShapeChange: fail() with checkInputDims' problem, or record whether extents are present; 0 = ok.
  int32_t acceptInputDims(nvinfer1::Dims const* dims, int32_t nbInputs, int32_t nbOutputs);
  int32_t fail(std::string const& message) const;  // logs with the layer name; returns -1

  std::string mLayerName;
  RoIAlignAttributes mAttributes;
  bool mHasExtents = false;  // the inputs of the last configurePlugin/onShapeChange end with extents (for enqueue)
  std::string mMetadata;
  std::vector<nvinfer1::PluginField> mSerialFields;  // rebuilt by getFieldsToSerialize(), point into mAttributes
  nvinfer1::PluginFieldCollection mSerialCollection{};
};

}  // namespace trt
}  // namespace mrd
