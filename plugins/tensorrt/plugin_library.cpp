// Entry points of the plugin library and its registration, for every way TensorRT users load a plugin:
//
//   IPluginRegistry::loadLibrary, trtexec --dynamicPlugins  -> dlopen, then setLoggerFinder + getCreators
//   ctypes.CDLL, polygraphy --plugins, trtexec --staticPlugins -> dlopen only: the load-time registration below
//
// One TensorRT major only. The library is compiled against one TensorRT major's headers, and the
// registry's and logger's vtables differ between majors (11.x drops four deprecated IPluginRegistry
// virtuals; ILogger and ILoggerFinder derive from IVersionedInterface), so a call through them into
// another major's libnvinfer lands in the wrong method. The library therefore asks the libnvinfer in the
// process for its version first (`getInferLibVersion`, extern "C" and the same in every major,
// NvInferRuntimeBase.h of 10.14 and 11.1) and registers, logs or hands out creators only when its major
// is kTensorRTMajor; otherwise it prints one line to stderr saying which TensorRT to build against.
//
// Load-time registration. When the library is opened into a process that already holds libnvinfer of its
// major, a constructor registers the creator with that TensorRT's global registry (what
// REGISTER_TENSORRT_PLUGIN does, but found with dlsym/dlopen(RTLD_NOLOAD) instead of a link dependency, so
// the library references no TensorRT symbol). libnvinfer is found in the global scope (trtexec and C++
// applications link it) or by this major's soname in a local one (Python's tensorrt module loads it
// RTLD_LOCAL). Where no TensorRT is loaded yet, nothing is registered: load the library after
// `import tensorrt`, or use loadLibrary.
//
// loadLibrary "will fail and return nullptr if any of the plugins are already registered"
// (NvInferRuntimeCommon.h), and its own dlopen runs the constructor first. So getCreators hands out only
// the creators not registered at load: none when the constructor registered it. getCreators calls no
// registry method (a registry that holds its lock during loadLibrary would deadlock on one). A loader
// that will call getCreators can set MASKRCNN_DEPLOY_TRT_REGISTER_AT_LOAD=0 first (this package's
// load_plugin_library does): the constructor then registers nothing and getCreators hands out the
// creator. That loadLibrary accepts a library handing out no creators (the case without it) is
// verified only against the stand-in registry (harness/fake_nvinfer.cpp); docs/tensorrt.md lists what
// is verified where.
//
// Once registered, the library pins itself (RTLD_NODELETE): the registry holds a pointer into it, and
// an unload (e.g. ctypes handle closed) must not leave that pointer dangling.
#include <NvInferRuntime.h>
#include <NvInferVersion.h>
#include <dlfcn.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "multilevel_roi_align_creator.h"
#include "plugin_logging.h"

// TENSORRTAPI is empty outside TensorRT's own build (NvInferRuntimeBase.h), so the library says it itself.
#define MRD_TRT_EXPORT __attribute__((visibility("default")))
#define MRD_STRINGIFY_(x) #x
#define MRD_STRINGIFY(x) MRD_STRINGIFY_(x)

namespace {

constexpr int32_t kTensorRTMajor = NV_TENSORRT_MAJOR;  // the headers this library is compiled against
constexpr char const* kSoname = "libnvinfer.so." MRD_STRINGIFY(NV_TENSORRT_MAJOR);
// Other majors' sonames, opened RTLD_NOLOAD only to read their version for the mismatch message.
constexpr char const* kOtherSonames[] = {"libnvinfer.so.10", "libnvinfer.so.11", "libnvinfer.so.12"};

// Read from the file, without loading it, by maskrcnn_deploy.plugins.tensorrt.build_library.plugin_tensorrt_major.
__attribute__((used)) char const kBuiltForMarker[] =
    "maskrcnn_deploy TensorRT plugin built for TensorRT major " MRD_STRINGIFY(NV_TENSORRT_MAJOR) ";";

using GetPluginRegistryFn = nvinfer1::IPluginRegistry* (*)();
using GetInferLibVersionFn = int32_t (*)();

mrd::trt::MultiLevelRoIAlignCreator& multiLevelRoIAlignCreator() {
  static mrd::trt::MultiLevelRoIAlignCreator creator;
  return creator;
}

std::mutex gRegistrationMutex;
bool gRegisteredAtLoad = false;  // the constructor registered the creator: getCreators hands out none

// The libnvinfer already in this process (nothing is opened that is not loaded already).
struct LoadedTensorRT {
  int32_t version = 0;                              // getInferLibVersion(); 0: no TensorRT in the process
  GetPluginRegistryFn getPluginRegistry = nullptr;  // only when version's major is kTensorRTMajor

  bool present() const { return version != 0; }
  bool sameMajor() const { return version / 10000 == kTensorRTMajor; }
};

// getInferLibVersion and getPluginRegistry of a loaded library named `soname`, or nullptrs.
void symbolsOf(char const* soname, void*& version, void*& registry) {
  void* library = dlopen(soname, RTLD_LAZY | RTLD_NOLOAD);  // a handle only if it is loaded already
  if (library == nullptr) return;
  version = dlsym(library, "getInferLibVersion");
  registry = dlsym(library, "getPluginRegistry");
  dlclose(library);  // drops the reference RTLD_NOLOAD took; the process still holds libnvinfer
}

LoadedTensorRT findLoadedTensorRT() {
  void* version = dlsym(RTLD_DEFAULT, "getInferLibVersion");  // linked (trtexec, C++ programs)
  void* registry = dlsym(RTLD_DEFAULT, "getPluginRegistry");
  if (version == nullptr) symbolsOf(kSoname, version, registry);  // Python's tensorrt: RTLD_LOCAL
  for (char const* other : kOtherSonames) {
    if (version != nullptr) break;
    void* unused = nullptr;
    symbolsOf(other, version, unused);  // another major: its version only, never its registry
    registry = nullptr;
  }
  LoadedTensorRT found;
  if (version == nullptr) return found;
  found.version = reinterpret_cast<GetInferLibVersionFn>(version)();
  if (found.sameMajor()) found.getPluginRegistry = reinterpret_cast<GetPluginRegistryFn>(registry);
  return found;
}

// One line on stderr (TensorRT's logger is not callable across majors), printed once per process.
void reportOtherMajor(int32_t version) {
  static std::atomic<bool> reported{false};
  if (reported.exchange(true)) return;
  std::fprintf(stderr,
               "[E] MultiLevelRoIAlign plugin library: built for TensorRT %d but this process runs TensorRT "
               "%d.%d.%d; nothing registered. Rebuild it against TensorRT %d headers "
               "(python -m maskrcnn_deploy.plugins.tensorrt.build_library --tensorrt-root <TensorRT %d install>)\n",
               kTensorRTMajor, version / 10000, version / 100 % 100, version % 100, version / 10000, version / 10000);
}

// Keep this library mapped for the life of the process.
void pinThisLibrary() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&pinThisLibrary), &info) == 0 || info.dli_fname == nullptr) return;
  dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);  // handle kept on purpose
}

// False when the opener will register the creators itself through getCreators (see the top of the file).
bool registerAtLoadWanted() {
  char const* value = std::getenv("MASKRCNN_DEPLOY_TRT_REGISTER_AT_LOAD");
  return value == nullptr || std::strcmp(value, "0") != 0;
}

__attribute__((constructor)) void registerWithLoadedTensorRT() {
  if (!registerAtLoadWanted()) return;
  LoadedTensorRT const trt = findLoadedTensorRT();
  if (!trt.present()) return;
  if (!trt.sameMajor()) return reportOtherMajor(trt.version);
  if (trt.getPluginRegistry == nullptr) return;
  nvinfer1::IPluginRegistry* registry = trt.getPluginRegistry();
  if (registry == nullptr) return;
  std::lock_guard<std::mutex> lock(gRegistrationMutex);
  if (registry->registerCreator(multiLevelRoIAlignCreator(), "")) {
    gRegisteredAtLoad = true;
    pinThisLibrary();
  } else {
    mrd::trt::logError("could not register the creator at load time (is another copy of the plugin library loaded?)");
  }
}

}  // namespace

// The creators the caller should register: none for another TensorRT major, none when the load-time
// registration already did it, else the MultiLevelRoIAlign creator. Calls no registry method.
extern "C" MRD_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&multiLevelRoIAlignCreator()};
  nbCreators = 0;
  LoadedTensorRT const trt = findLoadedTensorRT();
  if (trt.present() && !trt.sameMajor()) {
    reportOtherMajor(trt.version);
    return creators;
  }
  std::lock_guard<std::mutex> lock(gRegistrationMutex);
  if (!gRegisteredAtLoad) nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
  return creators;
}

// TensorRT's logger finder, kept only when it comes from this major (its vtable is this major's).
extern "C" MRD_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  LoadedTensorRT const trt = findLoadedTensorRT();
  if (trt.present() && !trt.sameMajor()) return reportOtherMajor(trt.version);
  mrd::trt::setLoggerFinder(finder);
}

// The TensorRT major this library was compiled for (for C/C++ loaders; Python reads kBuiltForMarker).
extern "C" MRD_TRT_EXPORT int32_t mrdTensorRTMajor() { return kTensorRTMajor; }
