// Error messages of the plugin library, through TensorRT's logger.
//
// TensorRT gives a plugin library its logger by calling the exported setLoggerFinder() when it loads the
// library (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins). ILoggerFinder::findLogger() must be
// called on the thread of the plugin call that logs, so the finder is kept and asked each time.
// Without a finder (the library used outside TensorRT), messages go to stderr.
#pragma once

#include <NvInferRuntime.h>

#include <string>

namespace mrd {
namespace trt {

// Keeps the first non-null finder, as TensorRT's own plugin libraries do.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

// Logs "MultiLevelRoIAlign: <message>" with severity kERROR.
void logError(std::string const& message) noexcept;

}  // namespace trt
}  // namespace mrd
