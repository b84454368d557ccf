// See multilevel_roi_align_creator.h.
#include "multilevel_roi_align_creator.h"

#include <exception>
#include <string>

#include "multilevel_roi_align_attributes.h"
#include "multilevel_roi_align_plugin.h"
#include "plugin_logging.h"

namespace mrd {
namespace trt {

MultiLevelRoIAlignCreator::MultiLevelRoIAlignCreator() : mFieldSpecs(attributeFieldSpecs()) {
  mFieldCollection.nbFields = static_cast<int32_t>(mFieldSpecs.size());
  mFieldCollection.fields = mFieldSpecs.data();
}

char const* MultiLevelRoIAlignCreator::getPluginName() const noexcept { return kPluginName; }

char const* MultiLevelRoIAlignCreator::getPluginVersion() const noexcept { return kPluginVersion; }

char const* MultiLevelRoIAlignCreator::getPluginNamespace() const noexcept { return kPluginNamespace; }

nvinfer1::PluginFieldCollection const* MultiLevelRoIAlignCreator::getFieldNames() noexcept { return &mFieldCollection; }

nvinfer1::IPluginV3* MultiLevelRoIAlignCreator::createPlugin(char const* name,
                                                             nvinfer1::PluginFieldCollection const* fc,
                                                             nvinfer1::TensorRTPhase phase) noexcept {
  std::string const layer = name != nullptr ? name : "";
  try {
    return new MultiLevelRoIAlignPlugin(layer, parseAttributes(fc));
  } catch (std::exception const& e) {
    char const* when = phase == nvinfer1::TensorRTPhase::kRUNTIME ? "deserialize" : "create";
    logError("cannot " + std::string(when) + " layer '" + layer + "': " + e.what());
  }
  return nullptr;
}

}  // namespace trt
}  // namespace mrd
