// Checks how the plugin library registers its creator, one loading scenario per process (a library,
// once opened, stays in the process):
//
//   mrd_trt_registration_check no-tensorrt    <plugin library> <fake libnvinfer.so.N>
//       the library is opened before any TensorRT: it registers nothing and loads cleanly.
//   mrd_trt_registration_check ctypes         <plugin library> <fake libnvinfer.so.N>
//       `import tensorrt` (libnvinfer opened RTLD_LOCAL), then ctypes.CDLL / polygraphy --plugins (dlopen
//       RTLD_LOCAL): registered once at load, pinned in memory; a later loadLibrary of it still succeeds.
//   mrd_trt_registration_check load-library   <plugin library> <fake libnvinfer.so.N>
//       trtexec --dynamicPlugins (libnvinfer linked, so global): loadLibrary succeeds, registered once, and
//       getCreators (called inside loadLibrary) makes no registry call.
//   mrd_trt_registration_check load-library-only <plugin library> <fake libnvinfer.so.N>
//       as load-library with MASKRCNN_DEPLOY_TRT_REGISTER_AT_LOAD=0 (what load_plugin_library sets):
//       nothing registered at load, getCreators hands out the creator, loadLibrary registers it once.
//   mrd_trt_registration_check other-major-python  <plugin library> <fake libnvinfer.so.N>
//   mrd_trt_registration_check other-major-trtexec <plugin library> <fake libnvinfer.so.N>
//       the fake reports another major ($MRD_FAKE_TENSORRT_VERSION, e.g. 110100): no registry call, no
//       creator handed out, one line on stderr naming the fix.
//
// The registry is fake_nvinfer.cpp, which behaves as NvInferRuntimeCommon.h documents.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstring>
#include <string>

#include "harness_util.h"

namespace {

using FakeRegistryCounts = void (*)(char const*, int*, int*, int*);
using FakeFindLoggerCalls = int (*)();
using GetPluginRegistry = nvinfer1::IPluginRegistry* (*)();
using GetCreators = nvinfer1::IPluginCreatorInterface* const* (*)(int32_t&);

struct FakeTensorRT {
  nvinfer1::IPluginRegistry* registry = nullptr;
  FakeRegistryCounts counts = nullptr;
  FakeFindLoggerCalls findLoggerCalls = nullptr;

  int registered() const {
    int n = 0, registerCalls = 0, deregisterCalls = 0;
    counts("MultiLevelRoIAlign", &n, &registerCalls, &deregisterCalls);
    return n;
  }
  int deregisterCalls() const {
    int n = 0, registerCalls = 0, deregisterCalls = 0;
    counts("MultiLevelRoIAlign", &n, &registerCalls, &deregisterCalls);
    return deregisterCalls;
  }
  int registerCalls() const {
    int n = 0, registerCalls = 0, deregisterCalls = 0;
    counts("MultiLevelRoIAlign", &n, &registerCalls, &deregisterCalls);
    return registerCalls;
  }
};

bool openFakeTensorRT(char const* path, int scope, FakeTensorRT& trt) {
  void* library = dlopen(path, RTLD_NOW | scope);
  if (library == nullptr) return false;
  auto getRegistry = reinterpret_cast<GetPluginRegistry>(dlsym(library, "getPluginRegistry"));
  trt.counts = reinterpret_cast<FakeRegistryCounts>(dlsym(library, "fakeRegistryCounts"));
  trt.findLoggerCalls = reinterpret_cast<FakeFindLoggerCalls>(dlsym(library, "fakeFindLoggerCalls"));
  trt.registry = getRegistry == nullptr ? nullptr : getRegistry();
  return trt.registry != nullptr && trt.counts != nullptr && trt.findLoggerCalls != nullptr;
}

std::string dlError() {
  char const* message = dlerror();
  return message == nullptr ? "" : message;
}

bool isLoaded(char const* path) {
  void* handle = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
  if (handle != nullptr) dlclose(handle);
  return handle != nullptr;
}

std::string count(int n) { return "registered " + std::to_string(n) + " time(s)"; }

void noTensorRT(harness::Checks& checks, char const* pluginPath, char const* fakePath) {
  checks.check("no-tensorrt: libnvinfer is not in the process", !isLoaded(fakePath));
  void* plugin = dlopen(pluginPath, RTLD_NOW | RTLD_LOCAL);
  checks.check("no-tensorrt: the library loads", plugin != nullptr, plugin ? "" : dlError());
  if (plugin == nullptr) return;
  FakeTensorRT trt;
  if (!checks.check("no-tensorrt: fake TensorRT opens afterwards", openFakeTensorRT(fakePath, RTLD_LOCAL, trt))) return;
  checks.check("no-tensorrt: nothing was registered at load", trt.registered() == 0, count(trt.registered()));
  auto getCreators = reinterpret_cast<GetCreators>(dlsym(plugin, "getCreators"));
  int32_t n = 0;
  checks.check("no-tensorrt: getCreators still hands out the creator", getCreators && getCreators(n) && n == 1);
  checks.check("no-tensorrt: ... and withdraws nothing", trt.deregisterCalls() == 0);
}

void ctypesAfterImportTensorRT(harness::Checks& checks, char const* pluginPath, char const* fakePath) {
  FakeTensorRT trt;
  if (!checks.check("ctypes: fake TensorRT opens RTLD_LOCAL", openFakeTensorRT(fakePath, RTLD_LOCAL, trt), dlError()))
    return;
  checks.check("ctypes: getPluginRegistry is not in the global scope", dlsym(RTLD_DEFAULT, "getPluginRegistry") == nullptr);
  void* plugin = dlopen(pluginPath, RTLD_NOW | RTLD_LOCAL);
  if (!checks.check("ctypes: the library loads", plugin != nullptr, plugin ? "" : dlError())) return;
  checks.check("ctypes: the creator is registered at load", trt.registered() == 1, count(trt.registered()));
  nvinfer1::IPluginCreatorInterface* creator = trt.registry->getCreator("MultiLevelRoIAlign", "1", "");
  checks.check("ctypes: the registry finds MultiLevelRoIAlign version 1 in namespace \"\"", creator != nullptr);
  dlclose(plugin);
  checks.check("ctypes: the library stays loaded after dlclose (the registry points into it)", isLoaded(pluginPath));
  checks.check("ctypes: loadLibrary of the same library then succeeds", trt.registry->loadLibrary(pluginPath) != nullptr);
  checks.check("ctypes: ... and the creator is registered once", trt.registered() == 1, count(trt.registered()));
}

void loadLibraryWithLinkedTensorRT(harness::Checks& checks, char const* pluginPath, char const* fakePath) {
  FakeTensorRT trt;
  if (!checks.check("load-library: fake TensorRT opens RTLD_GLOBAL", openFakeTensorRT(fakePath, RTLD_GLOBAL, trt),
                    dlError()))
    return;
  checks.check("load-library: loadLibrary succeeds", trt.registry->loadLibrary(pluginPath) != nullptr);
  checks.check("load-library: the creator is registered once", trt.registered() == 1, count(trt.registered()));
  checks.check("load-library: getCreators withdrew nothing (no registry call inside loadLibrary)",
               trt.deregisterCalls() == 0, std::to_string(trt.deregisterCalls()) + " deregistrations");
  checks.check("load-library: ... and registerCreator was called once (at load)", trt.registerCalls() == 1,
               std::to_string(trt.registerCalls()) + " registerCreator calls");
}

void loadLibraryOnly(harness::Checks& checks, char const* pluginPath, char const* fakePath) {
  setenv("MASKRCNN_DEPLOY_TRT_REGISTER_AT_LOAD", "0", 1);
  FakeTensorRT trt;
  if (!checks.check("load-library-only: fake TensorRT opens RTLD_GLOBAL", openFakeTensorRT(fakePath, RTLD_GLOBAL, trt),
                    dlError()))
    return;
  checks.check("load-library-only: loadLibrary succeeds", trt.registry->loadLibrary(pluginPath) != nullptr);
  checks.check("load-library-only: registered once, by loadLibrary from getCreators' creator",
               trt.registered() == 1 && trt.registerCalls() == 1 && trt.deregisterCalls() == 0,
               std::to_string(trt.registerCalls()) + " register, " + std::to_string(trt.deregisterCalls()) +
                   " deregister calls");
}

// The fake reports another TensorRT major than the library's headers: the library must not call into it.
void otherMajor(harness::Checks& checks, char const* pluginPath, char const* fakePath, int scope, char const* name) {
  std::string const tag = std::string(name) + ": ";
  FakeTensorRT trt;
  if (!checks.check(tag + "fake TensorRT opens", openFakeTensorRT(fakePath, scope, trt), dlError())) return;
  void* plugin = dlopen(pluginPath, RTLD_NOW | RTLD_LOCAL);  // ctypes.CDLL / polygraphy --plugins
  if (!checks.check(tag + "the library loads", plugin != nullptr, plugin ? "" : dlError())) return;
  checks.check(tag + "no registerCreator call at load", trt.registerCalls() == 0,
               std::to_string(trt.registerCalls()) + " calls");
  checks.check(tag + "loadLibrary hands TensorRT no creator", trt.registry->loadLibrary(pluginPath) != nullptr &&
                                                                   trt.registered() == 0,
               count(trt.registered()));
  checks.check(tag + "no registry call at all", trt.registerCalls() == 0 && trt.deregisterCalls() == 0,
               std::to_string(trt.registerCalls()) + " register, " + std::to_string(trt.deregisterCalls()) +
                   " deregister");
  auto getCreators = reinterpret_cast<GetCreators>(dlsym(plugin, "getCreators"));
  int32_t n = -1;
  if (getCreators != nullptr) getCreators(n);
  checks.check(tag + "getCreators returns no creator", n == 0, std::to_string(n) + " creators");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s no-tensorrt|ctypes|load-library|load-library-only|other-major-python|other-major-trtexec <plugin library> <fake libnvinfer.so.N>\n", argv[0]);
    return 2;
  }
  std::string const scenario = argv[1];
  harness::Checks checks;
  if (scenario == "no-tensorrt")
    noTensorRT(checks, argv[2], argv[3]);
  else if (scenario == "ctypes")
    ctypesAfterImportTensorRT(checks, argv[2], argv[3]);
  else if (scenario == "load-library")
    loadLibraryWithLinkedTensorRT(checks, argv[2], argv[3]);
  else if (scenario == "load-library-only")
    loadLibraryOnly(checks, argv[2], argv[3]);
  else if (scenario == "other-major-python")
    otherMajor(checks, argv[2], argv[3], RTLD_LOCAL, "other-major-python");
  else if (scenario == "other-major-trtexec")
    otherMajor(checks, argv[2], argv[3], RTLD_GLOBAL, "other-major-trtexec");
  else {
    std::fprintf(stderr, "unknown scenario '%s'\n", scenario.c_str());
    return 2;
  }
  return checks.summary();
}
