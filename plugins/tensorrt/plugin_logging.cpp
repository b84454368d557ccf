// See plugin_logging.h.
#include "plugin_logging.h"

#include <cstdio>
#include <mutex>

namespace mrd {
namespace trt {
namespace {

std::mutex gMutex;
nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;

}  // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept {
  std::lock_guard<std::mutex> lock(gMutex);
  if (gLoggerFinder == nullptr) gLoggerFinder = finder;
}

void logError(std::string const& message) noexcept {
  try {
    std::string const line = "MultiLevelRoIAlign: " + message;
    nvinfer1::ILogger* logger = nullptr;
    {
      std::lock_guard<std::mutex> lock(gMutex);
      if (gLoggerFinder != nullptr) logger = gLoggerFinder->findLogger();
    }
    if (logger != nullptr)
      logger->log(nvinfer1::ILogger::Severity::kERROR, line.c_str());
    else
      std::fprintf(stderr, "[E] %s\n", line.c_str());
  } catch (...) {
    std::fputs("[E] MultiLevelRoIAlign: an error occurred (and its message could not be built)\n", stderr);
  }
}

}  // namespace trt
}  // namespace mrd
