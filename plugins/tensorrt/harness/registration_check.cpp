// Checks how the plugin library registers its creator, one loading scenario per process (a library,
// once opened, stays in the process):
//
//   mrd_trt_registration_check no-tensorrt    <plugin library> <fake libnvinfer.so.10>
//       the library is opened before any TensorRT: it registers nothing and loads cleanly.
//   mrd_trt_registration_check ctypes         <plugin library> <fake libnvinfer.so.10>
//       `import tensorrt` (libnvinfer opened RTLD_LOCAL), then ctypes.CDLL / polygraphy --plugins (dlopen
//       RTLD_LOCAL): registered once at load, pinned in memory; a later loadLibrary of it still succeeds.
//   mrd_trt_registration_check load-library   <plugin library> <fake libnvinfer.so.10>
//       trtexec --dynamicPlugins (libnvinfer linked, so global): loadLibrary succeeds, registered once.
//
// The registry is fake_nvinfer.cpp, which behaves as NvInferRuntimeCommon.h documents.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstring>
#include <string>

#include "harness_util.h"

namespace {

using FakeRegistryCounts = void (*)(char const*, int*, int*, int*);
using GetPluginRegistry = nvinfer1::IPluginRegistry* (*)();
using GetCreators = nvinfer1::IPluginCreatorInterface* const* (*)(int32_t&);

struct FakeTensorRT {
  nvinfer1::IPluginRegistry* registry = nullptr;
  FakeRegistryCounts counts = nullptr;

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
};

bool openFakeTensorRT(char const* path, int scope, FakeTensorRT& trt) {
  void* library = dlopen(path, RTLD_NOW | scope);
  if (library == nullptr) return false;
  auto getRegistry = reinterpret_cast<GetPluginRegistry>(dlsym(library, "getPluginRegistry"));
  trt.counts = reinterpret_cast<FakeRegistryCounts>(dlsym(library, "fakeRegistryCounts"));
  trt.registry = getRegistry == nullptr ? nullptr : getRegistry();
  return trt.registry != nullptr && trt.counts != nullptr;
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
  checks.check("no-tensorrt: libnvinfer is not in the process", !isLoaded("libnvinfer.so.10"));
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
  checks.check("load-library: the load-time registration was withdrawn for it", trt.deregisterCalls() == 1,
               std::to_string(trt.deregisterCalls()) + " deregistrations");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s no-tensorrt|ctypes|load-library <plugin library> <fake libnvinfer.so.10>\n", argv[0]);
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
  else {
    std::fprintf(stderr, "unknown scenario '%s'\n", scenario.c_str());
    return 2;
  }
  return checks.summary();
}
