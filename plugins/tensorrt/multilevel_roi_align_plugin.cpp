// MultiLevelRoIAlign plugin (see multilevel_roi_align_plugin.h).
#include "multilevel_roi_align_plugin.h"

#include <cstdint>
#include <exception>
#include <limits>
#include <utility>

#include "plugin_logging.h"
#include "roi_align_api.h"  // mrd_roi_align_forward_cuda, MrdLevels, MrdPoolParams

namespace mrd {
namespace trt {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace {

bool isFloatType(DataType type) { return type == DataType::kFLOAT || type == DataType::kHALF; }

char const* dataTypeName(DataType type) {
  switch (type) {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kINT8: return "int8";
    case DataType::kINT32: return "int32";
    case DataType::kBOOL: return "bool";
    case DataType::kUINT8: return "uint8";
    case DataType::kFP8: return "fp8";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT64: return "int64";
    default: return "an unsupported type";
  }
}

// A dimension that is known (not -1) and not what it should be.
bool differs(int64_t value, int64_t expected) { return value >= 0 && expected >= 0 && value != expected; }

// A constant dimension expression's value, -1 for one known only at run time.
int64_t knownValue(nvinfer1::IDimensionExpr const* e) { return e->isConstant() ? e->getConstantValue() : -1; }

// Empty when extents of rank `nbDims` and dims [batch, last] (-1 = not known) fit feature maps of batch
// `mapBatch`; otherwise what is wrong.
std::string checkExtents(int32_t nbDims, int64_t batch, int64_t last, int64_t mapBatch) {
  if (nbDims != 2) return "'extents' must be [B, 2], got rank " + std::to_string(nbDims);
  if (differs(last, 2)) return "'extents' must be [B, 2], got [B, " + std::to_string(last) + "]";
  if (differs(batch, mapBatch))
    return "'extents' has batch " + std::to_string(batch) + ", the feature maps have " + std::to_string(mapBatch);
  return {};
}

}  // namespace

MultiLevelRoIAlignPlugin::MultiLevelRoIAlignPlugin(std::string layerName, RoIAlignAttributes attributes)
    : mLayerName(std::move(layerName)),
      mAttributes(std::move(attributes)),
      mMetadata(describeAttributes(mAttributes)) {}

nvinfer1::IPluginCapability* MultiLevelRoIAlignPlugin::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* MultiLevelRoIAlignPlugin::clone() noexcept {
  try {
    auto* copy = new MultiLevelRoIAlignPlugin(mLayerName, mAttributes);
    copy->mHasExtents = mHasExtents;
    return copy;
  } catch (std::exception const& e) {
    fail(std::string("clone failed: ") + e.what());
  }
  return nullptr;
}

std::string MultiLevelRoIAlignPlugin::inputName(int32_t index) const {
  if (index == 0) return "rois";
  return index == numInputs() ? "extents" : "p" + std::to_string(mAttributes.firstLevel() + index - 1);
}

std::string MultiLevelRoIAlignPlugin::checkCounts(int32_t nbInputs, int32_t nbOutputs) const {
  if ((nbInputs == numInputs() || hasExtents(nbInputs)) && nbOutputs == 1) return {};
  return "expects " + std::to_string(numInputs()) + " inputs (rois and " + std::to_string(mAttributes.numLevels()) +
         " feature maps) or " + std::to_string(numInputs() + 1) + " (then extents) and 1 output, got " +
         std::to_string(nbInputs) + " and " + std::to_string(nbOutputs);
}

int32_t MultiLevelRoIAlignPlugin::fail(std::string const& message) const {
  logError("layer '" + mLayerName + "': " + message);
  return -1;
}

int32_t MultiLevelRoIAlignPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                                     DataType const* inputTypes, int32_t nbInputs) const noexcept {
  try {
    std::string const counts = checkCounts(nbInputs, nbOutputs);
    if (!counts.empty()) return fail(counts);
    if (inputTypes[0] != DataType::kFLOAT)  // box corners >= 1024 px would move in 1-pixel steps in float16
      return fail(std::string("'rois' must be float32, got ") + dataTypeName(inputTypes[0]));
    if (hasExtents(nbInputs) && inputTypes[numInputs()] != DataType::kFLOAT)  // like rois: input pixels
      return fail(std::string("'extents' must be float32, got ") + dataTypeName(inputTypes[numInputs()]));
    for (int32_t i = 1; i < numInputs(); ++i) {
      if (!isFloatType(inputTypes[i]))
        return fail("input '" + inputName(i) + "' is " + dataTypeName(inputTypes[i]) +
                    "; feature maps must be float32 or float16");
      if (inputTypes[i] != inputTypes[1])
        return fail("all feature maps must have one type: '" + inputName(i) + "' is " + dataTypeName(inputTypes[i]) +
                    ", '" + inputName(1) + "' is " + dataTypeName(inputTypes[1]));
    }
    outputTypes[0] = inputTypes[1];  // pooled has the feature maps' type
    return 0;
  } catch (std::exception const& e) {
    return fail(e.what());
  }
}

// pooled [R, C, output_height, output_width] from rois [R, 5] and the first map [B, C, H, W].
int32_t MultiLevelRoIAlignPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                                                  nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t nbShapeInputs,
                                                  nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                                  nvinfer1::IExprBuilder& exprBuilder) noexcept {
  try {
    std::string const counts = checkCounts(nbInputs, nbOutputs);
    if (!counts.empty()) return fail(counts);
    if (nbShapeInputs != 0) return fail("expects no shape inputs, got " + std::to_string(nbShapeInputs));
    nvinfer1::DimsExprs const& rois = inputs[0];
    if (rois.nbDims != 2) return fail("'rois' must be [R, 5], got rank " + std::to_string(rois.nbDims));
    if (rois.d[1]->isConstant() && rois.d[1]->getConstantValue() != 5)
      return fail("'rois' must be [R, 5], got [R, " + std::to_string(rois.d[1]->getConstantValue()) + "]");
    for (int32_t i = 1; i < numInputs(); ++i)
      if (inputs[i].nbDims != 4)
        return fail("'" + inputName(i) + "' must be [B, C, H, W], got rank " + std::to_string(inputs[i].nbDims));
    if (hasExtents(nbInputs)) {
      nvinfer1::DimsExprs const& extents = inputs[numInputs()];
      std::string const problem =
          extents.nbDims != 2 ? checkExtents(extents.nbDims, -1, -1, -1)
                              : checkExtents(2, knownValue(extents.d[0]), knownValue(extents.d[1]),
                                             knownValue(inputs[1].d[0]));
      if (!problem.empty()) return fail(problem);
    }
    nvinfer1::IDimensionExpr const* height = exprBuilder.constant(mAttributes.outputHeight);
    nvinfer1::IDimensionExpr const* width = exprBuilder.constant(mAttributes.outputWidth);
    if (height == nullptr || width == nullptr) return fail("the expression builder returned no constant");
    outputs[0].nbDims = 4;
    outputs[0].d[0] = rois.d[0];       // R
    outputs[0].d[1] = inputs[1].d[1];  // C
    outputs[0].d[2] = height;
    outputs[0].d[3] = width;
    return 0;
  } catch (std::exception const& e) {
    return fail(e.what());
  }
}

// Every tensor linear; rois and extents float32 always (a weakly typed float16 build must not round box
// corners or image sizes to float16); the feature maps float32 or float16, all of one type, and pooled
// (position nbInputs) of that type.
bool MultiLevelRoIAlignPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                                         int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (inOut == nullptr || !checkCounts(nbInputs, nbOutputs).empty() || pos < 0 || pos >= nbInputs + nbOutputs)
    return false;
  PluginTensorDesc const& desc = inOut[pos].desc;
  if (desc.format != TensorFormat::kLINEAR) return false;
  if (pos == 0 || (hasExtents(nbInputs) && pos == numInputs())) return desc.type == DataType::kFLOAT;
  if (pos == 1) return isFloatType(desc.type);
  return desc.type == inOut[1].desc.type;  // the other maps and pooled
}

std::string MultiLevelRoIAlignPlugin::checkInputDims(Dims const* dims, int32_t nbInputs, int32_t nbOutputs) const {
  std::string const counts = checkCounts(nbInputs, nbOutputs);
  if (!counts.empty()) return counts;
  if (dims[0].nbDims != 2 || differs(dims[0].d[1], 5)) return "'rois' must be [R, 5]";
  int64_t const batch = dims[1].nbDims == 4 ? dims[1].d[0] : -1;
  int64_t const channels = dims[1].nbDims == 4 ? dims[1].d[1] : -1;
  if (hasExtents(nbInputs)) {
    Dims const& e = dims[numInputs()];
    std::string const problem = checkExtents(e.nbDims, e.nbDims == 2 ? e.d[0] : -1, e.nbDims == 2 ? e.d[1] : -1, batch);
    if (!problem.empty()) return problem;
  }
  for (int32_t i = 1; i < numInputs(); ++i) {
    Dims const& d = dims[i];
    if (d.nbDims != 4) return "'" + inputName(i) + "' must be [B, C, H, W], got rank " + std::to_string(d.nbDims);
    if (differs(d.d[0], batch))
      return "feature maps must share the batch size: '" + inputName(i) + "' has " + std::to_string(d.d[0]) + ", '" +
             inputName(1) + "' has " + std::to_string(batch);
    if (differs(d.d[1], channels))
      return "feature maps must share the channel count: '" + inputName(i) + "' has " + std::to_string(d.d[1]) + ", '" +
             inputName(1) + "' has " + std::to_string(channels);
    for (int32_t k = 0; k < 4; ++k)
      if (d.d[k] > std::numeric_limits<int32_t>::max())
        return "'" + inputName(i) + "' dimension " + std::to_string(k) + " exceeds the kernels' int32 range";
  }
  return {};
}

int32_t MultiLevelRoIAlignPlugin::acceptInputDims(Dims const* dims, int32_t nbInputs, int32_t nbOutputs) {
  std::string const problem = checkInputDims(dims, nbInputs, nbOutputs);
  if (!problem.empty()) return fail(problem);
  mHasExtents = hasExtents(nbInputs);  // enqueue is not told the input count
  return 0;
}

int32_t MultiLevelRoIAlignPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                                  DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
  try {
    std::string const counts = checkCounts(nbInputs, nbOutputs);  // before dims[] is filled: nbInputs is bounded
    if (!counts.empty()) return fail(counts);
    Dims dims[2 + MRD_MAX_LEVELS];  // rois, the maps, extents
    for (int32_t i = 0; i < nbInputs; ++i) dims[i] = in[i].desc.dims;
    return acceptInputDims(dims, nbInputs, nbOutputs);
  } catch (std::exception const& e) {
    return fail(e.what());
  }
}

size_t MultiLevelRoIAlignPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
                                                  DynamicPluginTensorDesc const* /*outputs*/,
                                                  int32_t /*nbOutputs*/) const noexcept {
  return 0;  // the kernels take the level pointers by value and need no scratch memory
}

int32_t MultiLevelRoIAlignPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                                PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
  try {
    std::string const counts = checkCounts(nbInputs, nbOutputs);  // before dims[] is filled: nbInputs is bounded
    if (!counts.empty()) return fail(counts);
    Dims dims[2 + MRD_MAX_LEVELS];  // rois, the maps, extents
    for (int32_t i = 0; i < nbInputs; ++i) dims[i] = in[i].dims;
    return acceptInputDims(dims, nbInputs, nbOutputs);
  } catch (std::exception const& e) {
    return fail(e.what());
  }
}

int32_t MultiLevelRoIAlignPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
                                          void const* const* inputs, void* const* outputs, void* /*workspace*/,
                                          cudaStream_t stream) noexcept {
  try {
    DataType const type = inputDesc[1].type;  // the feature maps'; rois are float32
    if (inputDesc[0].type != DataType::kFLOAT || !isFloatType(type))
      return fail(std::string("cannot run on ") + dataTypeName(inputDesc[0].type) + " rois and " + dataTypeName(type) +
                  " feature maps");
    int32_t const levels = mAttributes.numLevels();
    if (mHasExtents && inputDesc[levels + 1].type != DataType::kFLOAT)
      return fail(std::string("cannot run on ") + dataTypeName(inputDesc[levels + 1].type) + " extents");
    Dims const& first = inputDesc[1].dims;  // [B, C, H, W]
    MrdLevels lv{};
    lv.num_levels = levels;
    lv.batch = static_cast<int32_t>(first.d[0]);
    lv.channels = static_cast<int32_t>(first.d[1]);
    void const* features[MRD_MAX_LEVELS] = {};
    for (int32_t l = 0; l < levels; ++l) {
      lv.height[l] = static_cast<int32_t>(inputDesc[1 + l].dims.d[2]);
      lv.width[l] = static_cast<int32_t>(inputDesc[1 + l].dims.d[3]);
      lv.spatial_scale[l] = mAttributes.spatialScales[l];
      features[l] = inputs[1 + l];
    }
    lv.canonical_scale = mAttributes.canonicalScale;
    lv.canonical_level = mAttributes.canonicalLevel;
    lv.eps = mAttributes.levelEps;
    lv.extents = mHasExtents ? static_cast<float const*>(inputs[levels + 1]) : nullptr;  // [B, 2] device memory
    MrdPoolParams const params{mAttributes.outputHeight, mAttributes.outputWidth, mAttributes.samplingRatio,
                               mAttributes.aligned, mAttributes.poolMode()};
    int64_t const numRois = inputDesc[0].dims.d[0];
    int const status = mrd_roi_align_forward_cuda(type == DataType::kHALF ? MRD_FLOAT16 : MRD_FLOAT32, &lv, features,
                                                  inputs[0], numRois, &params, outputs[0], stream);
    if (status != MRD_OK) return fail(std::string("RoIAlign core: ") + mrd_status_message(status));
    return 0;
  } catch (std::exception const& e) {
    return fail(e.what());
  }
}

nvinfer1::IPluginV3* MultiLevelRoIAlignPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept {
  return clone();  // no per-context resources
}

nvinfer1::PluginFieldCollection const* MultiLevelRoIAlignPlugin::getFieldsToSerialize() noexcept {
  try {
    mSerialFields = attributeFields(mAttributes);
    mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
    mSerialCollection.fields = mSerialFields.data();
    return &mSerialCollection;
  } catch (std::exception const& e) {
    fail(std::string("serialization failed: ") + e.what());
  }
  return nullptr;
}

}  // namespace trt
}  // namespace mrd
