// A stand-in for libnvinfer's plugin registry, built as fake_tensorrt/libnvinfer.so.<major> for the
// registration check only (registration_check.cpp). It exports `getPluginRegistry` like libnvinfer and
// follows the documented behaviour the plugin library relies on:
//   - registerCreator fails for a name/version/namespace that is already registered;
//   - loadLibrary dlopens the library, passes a logger finder (setLoggerFinder), calls getCreators and registers
//     each creator, and "will fail and return nullptr if any of the plugins are already registered"
//     (NvInferRuntimeCommon.h); a library handing out no creators loads (not documented for TensorRT);
//   - getInferLibVersion() reports $MRD_FAKE_TENSORRT_VERSION (e.g. 110100 = 11.1.0), else the headers'
//     version, so a check can show the plugin another major than the one it was compiled for.
// Never put its folder on a library path: it is not TensorRT.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Entry {
  nvinfer1::IPluginCreatorInterface* creator;
  std::string name, version, pluginNamespace;
};

// Name and version of a V3One creator (the only kind this fake accepts), or false.
bool describe(nvinfer1::IPluginCreatorInterface& creator, std::string& name, std::string& version) {
  if (std::strcmp(creator.getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0) return false;
  auto& v3 = static_cast<nvinfer1::IPluginCreatorV3One&>(creator);
  name = v3.getPluginName();
  version = v3.getPluginVersion();
  return true;
}

class FakeLoggerFinder : public nvinfer1::ILoggerFinder {
 public:
  int findLoggerCalls = 0;
  nvinfer1::ILogger* findLogger() override {
    ++findLoggerCalls;
    return nullptr;  // the plugin then writes to stderr
  }
};

FakeLoggerFinder gLoggerFinder;

class FakePluginRegistry : public nvinfer1::IPluginRegistry {
 public:
  std::vector<Entry> entries;
  int registerCalls = 0, deregisterCalls = 0;

  bool registerCreator(nvinfer1::IPluginCreatorInterface& creator, nvinfer1::AsciiChar const* const ns) noexcept override {
    ++registerCalls;
    Entry entry{&creator, "", "", ns == nullptr ? "" : ns};
    if (!describe(creator, entry.name, entry.version)) return false;
    for (Entry const& e : entries)
      if (e.name == entry.name && e.version == entry.version && e.pluginNamespace == entry.pluginNamespace) return false;
    entries.push_back(entry);
    return true;
  }
  bool deregisterCreator(nvinfer1::IPluginCreatorInterface const& creator) noexcept override {
    ++deregisterCalls;
    for (auto it = entries.begin(); it != entries.end(); ++it)
      if (it->creator == &creator) {
        entries.erase(it);
        return true;
      }
    return false;
  }
  nvinfer1::IPluginCreatorInterface* getCreator(nvinfer1::AsciiChar const* const name, nvinfer1::AsciiChar const* const version,
                                                nvinfer1::AsciiChar const* const ns = "") noexcept override {
    for (Entry const& e : entries)
      if (e.name == name && e.version == version && e.pluginNamespace == (ns == nullptr ? "" : ns)) return e.creator;
    return nullptr;
  }
  PluginLibraryHandle loadLibrary(nvinfer1::AsciiChar const* pluginPath) noexcept override {
    void* library = dlopen(pluginPath, RTLD_LAZY | RTLD_LOCAL);
    if (library == nullptr) return nullptr;
    using SetLoggerFinder = void (*)(nvinfer1::ILoggerFinder*);
    if (auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(library, "setLoggerFinder")))
      setLoggerFinder(&gLoggerFinder);
    using GetCreators = nvinfer1::IPluginCreatorInterface* const* (*)(int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(library, "getCreators"));
    if (getCreators == nullptr) return nullptr;
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = getCreators(count);
    for (int32_t i = 0; i < count; ++i)
      if (!registerCreator(*creators[i], "")) return nullptr;  // "already registered" fails the whole load
    return library;
  }
  void deregisterLibrary(PluginLibraryHandle) noexcept override {}

  // The rest of the interface is not used by the plugin library (and partly deprecated: overriding is required).
  // TensorRT 11 removed the four IPluginCreator (V2) methods (NvInferRuntimeCommon.h of 11.1).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#if NV_TENSORRT_MAJOR < 11
  bool registerCreator(nvinfer1::IPluginCreator&, nvinfer1::AsciiChar const* const) noexcept override { return false; }
  nvinfer1::IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override {
    *n = 0;
    return nullptr;
  }
  nvinfer1::IPluginCreator* getPluginCreator(nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const,
                                             nvinfer1::AsciiChar const* const) noexcept override {
    return nullptr;
  }
  bool deregisterCreator(nvinfer1::IPluginCreator const&) noexcept override { return false; }
#endif
  void setErrorRecorder(nvinfer1::IErrorRecorder* const) noexcept override {}
  nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
  bool isParentSearchEnabled() const override { return false; }
  void setParentSearchEnabled(bool const) override {}
  nvinfer1::IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override {
    *n = 0;
    return nullptr;
  }
  nvinfer1::IPluginResource* acquirePluginResource(nvinfer1::AsciiChar const*, nvinfer1::IPluginResource*) noexcept override {
    return nullptr;
  }
  int32_t releasePluginResource(nvinfer1::AsciiChar const*) noexcept override { return -1; }
  nvinfer1::IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override {
    *n = 0;
    return nullptr;
  }
#pragma GCC diagnostic pop
};

FakePluginRegistry gRegistry;

}  // namespace

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginRegistry* getPluginRegistry() noexcept {
  return &gRegistry;
}

extern "C" __attribute__((visibility("default"))) int32_t getInferLibVersion() noexcept {
  char const* version = std::getenv("MRD_FAKE_TENSORRT_VERSION");
  return version != nullptr && *version != '\0' ? std::atoi(version) : NV_TENSORRT_VERSION;
}

// For the check: how often the plugin asked the logger finder for a logger.
extern "C" __attribute__((visibility("default"))) int fakeFindLoggerCalls() { return gLoggerFinder.findLoggerCalls; }

// For the check: how many creators of `name` are registered, and how often register/deregister were called.
extern "C" __attribute__((visibility("default"))) void fakeRegistryCounts(char const* name, int* registered,
                                                                           int* registerCalls, int* deregisterCalls) {
  *registered = 0;
  for (Entry const& e : gRegistry.entries) *registered += e.name == name ? 1 : 0;
  *registerCalls = gRegistry.registerCalls;
  *deregisterCalls = gRegistry.deregisterCalls;
}
