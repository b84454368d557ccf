// Entry points of the plugin library and its registration, for every way TensorRT users load a plugin:
//
//   IPluginRegistry::loadLibrary, trtexec --dynamicPlugins  -> dlopen, then getCreators + setLoggerFinder
//   ctypes.CDLL, polygraphy --plugins, plain dlopen           -> dlopen only: the load-time registration below
//
// Load-time registration. When the library is opened into a process that already holds libnvinfer, a
// constructor registers the creator with that TensorRT's global registry (what REGISTER_TENSORRT_PLUGIN
// does, but found with dlsym/dlopen(RTLD_NOLOAD) instead of a link dependency, so the library references
// no TensorRT symbol and loads into any TensorRT 10.x or 11.x process). libnvinfer is found in the global
// scope (trtexec and C++ applications link it) or, by soname, in a local one (Python's tensorrt module
// loads it RTLD_LOCAL). Where no TensorRT is loaded yet, nothing is registered: load the library after
// `import tensorrt`, or use loadLibrary.
//
// loadLibrary "will fail and return nullptr if any of the plugins are already registered"
// (NvInferRuntimeCommon.h), and its own dlopen runs the constructor first. So getCreators withdraws the
// load-time registration before handing out the creators, and the caller registers them instead: the
// creator is registered exactly once whichever way the library came in.
//
// Once registered, the library pins itself (RTLD_NODELETE): the registry holds a pointer into it, and
// an unload (e.g. ctypes handle closed) must not leave that pointer dangling.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <mutex>
#include <string>

#include "multilevel_roi_align_creator.h"
#include "plugin_logging.h"

// TENSORRTAPI is empty outside TensorRT's own build (NvInferRuntimeBase.h), so the library says it itself.
#define MRD_TRT_EXPORT __attribute__((visibility("default")))

namespace {

using GetPluginRegistryFn = nvinfer1::IPluginRegistry* (*)();

mrd::trt::MultiLevelRoIAlignCreator& multiLevelRoIAlignCreator() {
  static mrd::trt::MultiLevelRoIAlignCreator creator;
  return creator;
}

std::mutex gRegistrationMutex;
nvinfer1::IPluginRegistry* gLoadTimeRegistry = nullptr;  // the registry the constructor registered with

// getPluginRegistry of the libnvinfer already in this process, or nullptr when there is none.
GetPluginRegistryFn findLoadedGetPluginRegistry() {
  if (void* symbol = dlsym(RTLD_DEFAULT, "getPluginRegistry")) return reinterpret_cast<GetPluginRegistryFn>(symbol);
  for (char const* soname : {"libnvinfer.so.11", "libnvinfer.so.10", "libnvinfer.so"}) {
    void* library = dlopen(soname, RTLD_LAZY | RTLD_NOLOAD);  // a handle only if it is loaded already
    if (library == nullptr) continue;
    void* symbol = dlsym(library, "getPluginRegistry");
    dlclose(library);  // drops the reference RTLD_NOLOAD took; the process still holds libnvinfer
    if (symbol != nullptr) return reinterpret_cast<GetPluginRegistryFn>(symbol);
  }
  return nullptr;
}

// Keep this library mapped for the life of the process.
void pinThisLibrary() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&pinThisLibrary), &info) == 0 || info.dli_fname == nullptr) return;
  dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);  // handle kept on purpose
}

__attribute__((constructor)) void registerWithLoadedTensorRT() {
  GetPluginRegistryFn getPluginRegistry = findLoadedGetPluginRegistry();
  if (getPluginRegistry == nullptr) return;
  nvinfer1::IPluginRegistry* registry = getPluginRegistry();
  if (registry == nullptr) return;
  std::lock_guard<std::mutex> lock(gRegistrationMutex);
  if (registry->registerCreator(multiLevelRoIAlignCreator(), "")) {
    gLoadTimeRegistry = registry;
    pinThisLibrary();
  } else {
    mrd::trt::logError("could not register the creator at load time (is another copy of the plugin library loaded?)");
  }
}

}  // namespace

extern "C" MRD_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&multiLevelRoIAlignCreator()};
  {
    std::lock_guard<std::mutex> lock(gRegistrationMutex);
    if (gLoadTimeRegistry != nullptr) {  // the caller registers the creators now: withdraw ours first
      gLoadTimeRegistry->deregisterCreator(multiLevelRoIAlignCreator());
      gLoadTimeRegistry = nullptr;
    }
  }
  nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
  return creators;
}

extern "C" MRD_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) { mrd::trt::setLoggerFinder(finder); }
