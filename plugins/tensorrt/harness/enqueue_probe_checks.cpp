// enqueue() through the probe build of the plugin library (core_probe.cpp): the plugin's own sources with a
// recording stand-in for mrd_roi_align_forward_cuda that runs the CPU kernel on host buffers. Needs no GPU.
// Checks that enqueue hands the kernel the extents pointer after a 6-input onShapeChange and NULL after a
// 5-input one, the level pointers, sizes, rois, output and stream, and that the float32 result equals the
// CPU kernel's with (and differs from the one without) the extents.
#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core_probe.h"
#include "harness_util.h"
#include "roi_align_api.h"

using namespace nvinfer1;

namespace harness {
namespace {

constexpr int kBatch = 2, kChannels = 3, kImageH = 64, kImageW = 96, kLevels = 4, kRois = 24;
float const kScales[kLevels] = {0.25f, 0.125f, 0.0625f, 0.03125f};

// A small 4-level problem in host memory; image 0 covers 40x50 input pixels of the 64x96 canvas, image 1 all.
struct HostProblem {
  std::vector<float> rois;                   // [kRois, 5], every roi on the whole canvas
  std::vector<std::vector<float>> features;  // per level [kBatch, kChannels, H_l, W_l]
  std::vector<float> extents = {40.f, 50.f, 64.f, 96.f};  // [kBatch, 2]
  MrdLevels levels{};
};

HostProblem makeHostProblem() {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  HostProblem p;
  p.levels.num_levels = kLevels;
  p.levels.batch = kBatch;
  p.levels.channels = kChannels;
  p.levels.canonical_scale = 224.f;
  p.levels.canonical_level = 4;
  p.levels.eps = 1e-6f;
  for (int l = 0; l < kLevels; ++l) {
    p.levels.height[l] = int(kImageH * kScales[l]);
    p.levels.width[l] = int(kImageW * kScales[l]);
    p.levels.spatial_scale[l] = kScales[l];
    std::vector<float> map(size_t(kBatch) * kChannels * p.levels.height[l] * p.levels.width[l]);
    for (float& v : map) v = 2.f * unit(rng) - 1.f;
    p.features.push_back(map);
  }
  for (int r = 0; r < kRois; ++r) {
    float const x1 = unit(rng) * kImageW * 0.8f, y1 = unit(rng) * kImageH * 0.8f;
    float const roi[5] = {float(r % kBatch), x1, y1, x1 + 4.f + unit(rng) * (kImageW - x1),
                          y1 + 4.f + unit(rng) * (kImageH - y1)};
    for (float v : roi) p.rois.push_back(v);
  }
  return p;
}

// mrd_roi_align_forward_cpu on the problem with the Mask R-CNN fields' parameters (7x7, ratio 2, avg).
std::vector<float> cpuReference(HostProblem const& p, bool withExtents) {
  MrdLevels lv = p.levels;
  lv.extents = withExtents ? p.extents.data() : nullptr;
  void const* maps[kLevels];
  for (int l = 0; l < kLevels; ++l) maps[l] = p.features[l].data();
  MrdPoolParams const params{7, 7, 2, 0, 0};
  std::vector<float> out(size_t(kRois) * kChannels * 7 * 7, NAN);
  mrd_roi_align_forward_cpu(MRD_FLOAT32, &lv, maps, p.rois.data(), kRois, &params, out.data(), 1);
  return out;
}

struct Probe {
  IPluginCreatorV3One* creator = nullptr;
  MrdProbeLastCallFn lastCall = nullptr;
};

Probe openProbe(Checks& checks, char const* path, RecordingLoggerFinder& finder) {
  void* library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!checks.check("probe library (the plugin with a recording core) loads", library != nullptr,
                    std::string(path) + ": " + (library ? "" : dlerror())))
    return {};
  auto getCreators = reinterpret_cast<IPluginCreatorInterface* const* (*)(int32_t&)>(dlsym(library, "getCreators"));
  auto setLoggerFinder = reinterpret_cast<void (*)(ILoggerFinder*)>(dlsym(library, "setLoggerFinder"));
  Probe probe;
  probe.lastCall = reinterpret_cast<MrdProbeLastCallFn>(dlsym(library, "mrdProbeLastCall"));
  int32_t count = -1;
  IPluginCreatorInterface* const* creators = getCreators ? getCreators(count) : nullptr;
  if (setLoggerFinder) setLoggerFinder(&finder);
  probe.creator = count == 1 && creators ? static_cast<IPluginCreatorV3One*>(creators[0]) : nullptr;
  if (!checks.check("probe library hands out its creator and its call record",
                    probe.creator != nullptr && probe.lastCall != nullptr))
    return {};
  return probe;
}

// Runs onShapeChange then enqueue on host buffers; returns their first non-zero code.
int32_t run(IPluginV3OneRuntime& plugin, HostProblem& p, DataType mapType, bool withExtents, std::vector<float>& out,
            cudaStream_t stream) {
  std::vector<PluginTensorDesc> in = {tensorDesc(DataType::kFLOAT, {kRois, 5})};
  std::vector<void const*> pointers = {p.rois.data()};
  for (int l = 0; l < kLevels; ++l) {
    in.push_back(tensorDesc(mapType, {kBatch, kChannels, p.levels.height[l], p.levels.width[l]}));
    pointers.push_back(p.features[l].data());
  }
  if (withExtents) {
    in.push_back(tensorDesc(DataType::kFLOAT, {kBatch, 2}));
    pointers.push_back(p.extents.data());
  }
  PluginTensorDesc const outDesc = tensorDesc(mapType, {kRois, kChannels, 7, 7});
  out.assign(size_t(kRois) * kChannels * 7 * 7, NAN);
  void* outputs[1] = {out.data()};
  int32_t const rc = plugin.onShapeChange(in.data(), static_cast<int32_t>(in.size()), &outDesc, 1);
  return rc != 0 ? rc : plugin.enqueue(in.data(), &outDesc, pointers.data(), outputs, nullptr, stream);
}

// "" when the record is the call enqueue should have made for `p` (extents: its pointer or NULL).
std::string recordProblem(MrdProbeCall const& c, int32_t callsBefore, HostProblem const& p, void const* extents,
                          int dtype, void const* output, cudaStream_t stream) {
  if (c.calls != callsBefore + 1) return "the core was called " + std::to_string(c.calls - callsBefore) + " times";
  auto name = [&p](void const* q) {
    return q == nullptr ? "NULL" : q == p.extents.data() ? "the extents input" : "another pointer";
  };
  if (c.levels.extents != extents)
    return std::string("levels.extents is ") + name(c.levels.extents) + ", expected " + name(extents);
  if (c.dtype != dtype) return "dtype " + std::to_string(c.dtype);
  if (c.rois != p.rois.data() || c.numRois != kRois || c.output != output || c.stream != stream)
    return "rois, roi count, output or stream differ";
  if (c.levels.num_levels != kLevels || c.levels.batch != kBatch || c.levels.channels != kChannels)
    return "level count, batch or channels differ";
  for (int l = 0; l < kLevels; ++l)
    if (c.features[l] != p.features[l].data() || c.levels.height[l] != p.levels.height[l] ||
        c.levels.width[l] != p.levels.width[l] || c.levels.spatial_scale[l] != kScales[l])
      return "level " + std::to_string(l) + " differs";
  return "";
}

}  // namespace

void runEnqueueProbeChecks(Checks& checks, char const* probePath, RecordingLoggerFinder& finder) {
  Probe const probe = openProbe(checks, probePath, finder);
  if (probe.creator == nullptr) return;
  Fields f = maskRcnnFields();
  // as an engine runs it: made from serialized fields (kRUNTIME), then attached to a context (a clone)
  PluginView made = viewOf(probe.creator->createPlugin("roi_pool", f.collection(), TensorRTPhase::kRUNTIME));
  PluginView plugin = made ? viewOf(made.runtime->attachToContext(nullptr)) : PluginView{};
  if (!checks.check("probe plugin created (kRUNTIME) and attached to a context", bool(plugin))) return;

  HostProblem p = makeHostProblem();
  std::vector<float> const withExtents = cpuReference(p, true), withoutExtents = cpuReference(p, false);
  checks.check("the probe problem's result depends on the extents (CPU kernel)", withExtents != withoutExtents);
  auto* const stream = reinterpret_cast<cudaStream_t>(uintptr_t{0x5eed});
  std::vector<float> out;

  int32_t calls = probe.lastCall()->calls;
  int32_t rc = run(*plugin.runtime, p, DataType::kFLOAT, true, out, stream);
  std::string problem = rc != 0 ? "rc " + std::to_string(rc)
                                : recordProblem(*probe.lastCall(), calls, p, p.extents.data(), MRD_FLOAT32, out.data(),
                                                stream);
  checks.check("enqueue after a 6-input onShapeChange hands the kernel the extents pointer", problem.empty(), problem);
  checks.check("enqueue with extents (float32) equals the CPU kernel with the extents", rc == 0 && out == withExtents);

  PluginView copy = viewOf(plugin.plugin->clone());
  calls = probe.lastCall()->calls;
  void* outputs[1] = {out.data()};
  std::vector<PluginTensorDesc> in = {tensorDesc(DataType::kFLOAT, {kRois, 5})};
  std::vector<void const*> pointers = {p.rois.data()};
  for (int l = 0; l < kLevels; ++l) {
    in.push_back(tensorDesc(DataType::kFLOAT, {kBatch, kChannels, p.levels.height[l], p.levels.width[l]}));
    pointers.push_back(p.features[l].data());
  }
  in.push_back(tensorDesc(DataType::kFLOAT, {kBatch, 2}));
  pointers.push_back(p.extents.data());
  PluginTensorDesc const outDesc = tensorDesc(DataType::kFLOAT, {kRois, kChannels, 7, 7});
  rc = copy ? copy.runtime->enqueue(in.data(), &outDesc, pointers.data(), outputs, nullptr, stream) : -1;
  problem = rc != 0 ? "rc " + std::to_string(rc)
                    : recordProblem(*probe.lastCall(), calls, p, p.extents.data(), MRD_FLOAT32, out.data(), stream);
  checks.check("a clone made after a 6-input onShapeChange still hands the kernel the extents", problem.empty(),
               problem);

  calls = probe.lastCall()->calls;
  rc = run(*plugin.runtime, p, DataType::kFLOAT, false, out, stream);
  problem = rc != 0 ? "rc " + std::to_string(rc)
                    : recordProblem(*probe.lastCall(), calls, p, nullptr, MRD_FLOAT32, out.data(), stream);
  checks.check("enqueue after a 5-input onShapeChange hands the kernel NULL extents", problem.empty(), problem);
  checks.check("enqueue without extents (float32) equals the CPU kernel without extents",
               rc == 0 && out == withoutExtents);

  calls = probe.lastCall()->calls;
  rc = run(*plugin.runtime, p, DataType::kHALF, true, out, stream);  // the probe records float16 calls only
  problem = rc != 0 ? "rc " + std::to_string(rc)
                    : recordProblem(*probe.lastCall(), calls, p, p.extents.data(), MRD_FLOAT16, out.data(), stream);
  checks.check("enqueue with float16 maps and float32 extents hands the kernel the extents pointer", problem.empty(),
               problem);
}

}  // namespace harness
