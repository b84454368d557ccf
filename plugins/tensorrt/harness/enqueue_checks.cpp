// enqueue() checks: two that need no GPU (no rois; an error from the core), then, on a machine with a
// CUDA device, the plugin's float32 and float16 output against the CPU kernel of the same core
// (mrd_roi_align_forward_cpu) on 4 FPN levels with rois that land on every level, without and with the
// optional extents input (image 0 covers part of the canvas).
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "harness_util.h"
#include "roi_align_api.h"

using namespace nvinfer1;

namespace harness {
namespace {

constexpr int kBatch = 2, kChannels = 4, kImageH = 256, kImageW = 384, kLevels = 4, kRois = 64;
float const kScales[kLevels] = {0.25f, 0.125f, 0.0625f, 0.03125f};

struct Problem {
  std::vector<float> rois;                   // [kRois, 5]
  std::vector<std::vector<float>> features;  // per level [kBatch, kChannels, H_l, W_l]
  int badBatchRoi = 0;                       // roi whose batch index is out of range (GPU writes zeros)
  std::vector<float> extents = {160.f, 250.f, float(kImageH), float(kImageW)};  // [kBatch, 2] (height, width)
};

// Random maps in [-1, 1); rois of sizes 4..700 px (every FPN level) plus a negative-area roi and one whose
// batch index is out of range. Map values are rounded to float16 when `half`, so both runs see the same inputs;
// rois stay float32 (the plugin takes float32 rois with float16 maps, so their corners are not rounded).
Problem makeProblem(bool half) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  auto round = [half](float v) { return half ? __half2float(__float2half_rn(v)) : v; };
  Problem p;
  for (int l = 0; l < kLevels; ++l) {
    std::vector<float> map(static_cast<size_t>(kBatch) * kChannels * int(kImageH * kScales[l]) *
                           int(kImageW * kScales[l]));
    for (float& v : map) v = round(2.f * unit(rng) - 1.f);
    p.features.push_back(map);
  }
  for (int r = 0; r < kRois; ++r) {
    float const size = std::exp(std::log(4.f) + unit(rng) * (std::log(700.f) - std::log(4.f)));
    float const cx = unit(rng) * kImageW, cy = unit(rng) * kImageH, aspect = 0.5f + unit(rng);
    float const roi[5] = {float(r % kBatch), cx - size * aspect / 2, cy - size / aspect / 2, cx + size * aspect / 2,
                          cy + size / aspect / 2};
    for (float v : roi) p.rois.push_back(v);
  }
  std::swap(p.rois[5 * 1 + 1], p.rois[5 * 1 + 3]);  // roi 1: x2 < x1, negative area -> undefined level, zeros
  p.badBatchRoi = 2;
  p.rois[5 * p.badBatchRoi] = 5.f;  // roi 2: image 5 of 2
  return p;
}

MrdLevels levelsOf(Problem const&) {  // the maps' sizes follow from the image size and the scales
  MrdLevels lv{};
  lv.num_levels = kLevels;
  lv.batch = kBatch;
  lv.channels = kChannels;
  for (int l = 0; l < kLevels; ++l) {
    lv.height[l] = int(kImageH * kScales[l]);
    lv.width[l] = int(kImageW * kScales[l]);
    lv.spatial_scale[l] = kScales[l];
  }
  lv.canonical_scale = 224.f;
  lv.canonical_level = 4;
  lv.eps = 1e-6f;
  return lv;
}

struct Config {
  bool half;
  char const* mode;
  int aligned, samplingRatio, outH, outW;
  bool extents;  // pass the extents input (6 inputs) and give the CPU kernel the same extents
};

// Runs the plugin on the GPU and the CPU kernel on the host; returns "" when they agree, else the first mismatch.
std::string compare(IPluginCreatorV3One& creator, Config const& c) {
  Problem p = makeProblem(c.half);
  MrdLevels lv = levelsOf(p);
  if (c.extents) lv.extents = p.extents.data();  // host memory for the CPU kernel
  Fields f = maskRcnnFields();
  f.ints("output_height", {c.outH}).ints("output_width", {c.outW}).ints("aligned", {c.aligned});
  f.ints("sampling_ratio", {c.samplingRatio}).text("mode", c.mode);
  PluginView plugin = viewOf(creator.createPlugin("roi_pool", f.collection(), TensorRTPhase::kRUNTIME));
  if (!plugin) return "the creator made no plugin";

  // reference: the CPU kernel; the bad-batch roi gets a valid index there and zeros expected afterwards
  std::vector<float> cpuRois = p.rois;
  cpuRois[5 * p.badBatchRoi] = 0.f;
  size_t const perRoi = size_t(kChannels) * c.outH * c.outW;
  std::vector<float> expected(perRoi * kRois);
  void const* hostMaps[kLevels];
  for (int l = 0; l < kLevels; ++l) hostMaps[l] = p.features[l].data();
  MrdPoolParams const params{c.outH, c.outW, c.samplingRatio, c.aligned, std::strcmp(c.mode, "max") == 0 ? 1 : 0};
  if (int st =
          mrd_roi_align_forward_cpu(MRD_FLOAT32, &lv, hostMaps, cpuRois.data(), kRois, &params, expected.data(), 2))
    return std::string("CPU kernel: ") + mrd_status_message(st);
  std::fill(expected.begin() + perRoi * p.badBatchRoi, expected.begin() + perRoi * (p.badBatchRoi + 1), 0.f);

  // device buffers in the plugin's type
  size_t const item = c.half ? 2 : 4;
  auto upload = [&](std::vector<float> const& v, bool half) {
    std::vector<char> bytes(v.size() * (half ? 2 : 4));
    for (size_t i = 0; i < v.size(); ++i) {
      if (half) {
        __half const h = __float2half_rn(v[i]);
        std::memcpy(&bytes[i * 2], &h, 2);
      } else {
        std::memcpy(&bytes[i * 4], &v[i], 4);
      }
    }
    void* device = nullptr;
    cudaMalloc(&device, bytes.size());
    cudaMemcpy(device, bytes.data(), bytes.size(), cudaMemcpyHostToDevice);
    return device;
  };
  DataType const type = c.half ? DataType::kHALF : DataType::kFLOAT;
  std::vector<void*> buffers = {upload(p.rois, false)};
  std::vector<PluginTensorDesc> in = {tensorDesc(DataType::kFLOAT, {kRois, 5})};
  for (int l = 0; l < kLevels; ++l) {
    buffers.push_back(upload(p.features[l], c.half));
    in.push_back(tensorDesc(type, {kBatch, kChannels, lv.height[l], lv.width[l]}));
  }
  if (c.extents) {
    buffers.push_back(upload(p.extents, false));
    in.push_back(tensorDesc(DataType::kFLOAT, {kBatch, 2}));
  }
  PluginTensorDesc const out = tensorDesc(type, {kRois, kChannels, c.outH, c.outW});
  void* output = nullptr;
  cudaMalloc(&output, expected.size() * item);
  cudaMemset(output, 0xFF, expected.size() * item);  // NaN everywhere: an unwritten element fails
  cudaStream_t stream = nullptr;
  cudaStreamCreate(&stream);
  int32_t rc = plugin.runtime->onShapeChange(in.data(), static_cast<int32_t>(in.size()), &out, 1);
  if (rc == 0) rc = plugin.runtime->enqueue(in.data(), &out, buffers.data(), &output, nullptr, stream);
  cudaError_t const err = cudaStreamSynchronize(stream);
  std::vector<char> result(expected.size() * item);
  cudaMemcpy(result.data(), output, result.size(), cudaMemcpyDeviceToHost);
  for (void* b : buffers) cudaFree(b);
  cudaFree(output);
  cudaStreamDestroy(stream);
  if (rc != 0) return "onShapeChange/enqueue returned " + std::to_string(rc);
  if (err != cudaSuccess) return std::string("CUDA: ") + cudaGetErrorString(err);

  double const atol = c.half ? 2e-3 : 2e-5, rtol = c.half ? 2e-3 : 1e-5;
  double worst = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    float got;
    if (c.half) {
      __half h;
      std::memcpy(&h, &result[i * 2], 2);
      got = __half2float(h);
    } else {
      std::memcpy(&got, &result[i * 4], 4);
    }
    double const diff = std::fabs(double(got) - expected[i]);
    worst = std::max(worst, diff);
    if (!(diff <= atol + rtol * std::fabs(expected[i])))  // NaN fails too
      return "element " + std::to_string(i) + " (roi " + std::to_string(i / perRoi) + "): got " + std::to_string(got) +
             ", CPU kernel " + std::to_string(expected[i]);
  }
  std::printf("  max |GPU - CPU| = %.3g\n", worst);
  return "";
}

}  // namespace

void runEnqueueChecks(Checks& checks, IPluginCreatorV3One& creator, RecordingLogger& logger) {
  Fields f = maskRcnnFields();
  PluginView plugin = viewOf(creator.createPlugin("roi_pool", f.collection(), TensorRTPhase::kBUILD));
  if (!plugin) return;
  // shapes of a problem the core rejects before touching the GPU: p5 has no rows
  std::vector<PluginTensorDesc> in = {tensorDesc(DataType::kFLOAT, {3, 5})};
  for (int64_t h : {64, 32, 16, 0}) in.push_back(tensorDesc(DataType::kFLOAT, {2, 8, h, h}));
  PluginTensorDesc out = tensorDesc(DataType::kFLOAT, {3, 8, 7, 7});
  void const* inputs[5] = {};
  void* outputs[1] = {};
  size_t const before = logger.errors.size();
  int32_t const rc = plugin.runtime->enqueue(in.data(), &out, inputs, outputs, nullptr, nullptr);
  checks.check("enqueue returns the core's error for an empty feature map",
               rc != 0 && logger.errors.size() == before + 1 &&
                   logger.lastError().find("RoIAlign core: bad argument") != std::string::npos,
               "rc " + std::to_string(rc) + ", logged \"" + logger.lastError() + "\"");
  in[0].dims.d[0] = 0;
  in[4].dims.d[2] = in[4].dims.d[3] = 8;
  out.dims.d[0] = 0;
  checks.check("enqueue with zero rois succeeds and launches nothing",
               plugin.runtime->enqueue(in.data(), &out, inputs, outputs, nullptr, nullptr) == 0);

  Problem const sample = makeProblem(false);
  MrdLevels const lv = levelsOf(sample);
  std::vector<int32_t> level(kRois, -2);
  mrd_fpn_levels_cpu(MRD_FLOAT32, &lv, sample.rois.data(), kRois, level.data());
  int perLevel[kLevels] = {}, undefined = 0;
  for (int32_t l : level) (l >= 0 && l < kLevels ? perLevel[l] : undefined) += 1;
  MrdLevels withExtents = lv;
  withExtents.extents = sample.extents.data();
  void const* maps[kLevels];
  for (int l = 0; l < kLevels; ++l) maps[l] = sample.features[l].data();
  MrdPoolParams const pool{7, 7, 2, 0, 0};
  std::vector<float> rois = sample.rois, plain(size_t(kRois) * kChannels * 49), covered(plain.size());
  rois[5 * sample.badBatchRoi] = 0.f;  // the CPU kernel refuses an out-of-range image index
  int const st1 = mrd_roi_align_forward_cpu(MRD_FLOAT32, &lv, maps, rois.data(), kRois, &pool, plain.data(), 2);
  int const st2 =
      mrd_roi_align_forward_cpu(MRD_FLOAT32, &withExtents, maps, rois.data(), kRois, &pool, covered.data(), 2);
  checks.check("the GPU test's result depends on its extents (CPU kernel)",
               st1 == MRD_OK && st2 == MRD_OK && plain != covered,
               std::string(mrd_status_message(st1)) + ", " + mrd_status_message(st2));
  checks.check("the GPU test's rois land on every level, one on none",
               perLevel[0] > 0 && perLevel[1] > 0 && perLevel[2] > 0 && perLevel[3] > 0 && undefined == 1,
               "per level " + std::to_string(perLevel[0]) + "/" + std::to_string(perLevel[1]) + "/" +
                   std::to_string(perLevel[2]) + "/" + std::to_string(perLevel[3]) + ", undefined " +
                   std::to_string(undefined));

  int devices = 0;
  cudaError_t const err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    std::string const why =
        err != cudaSuccess ? std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err) : "0 devices";
    checks.skip("enqueue on the GPU against the CPU kernel (float32, float16, with and without extents)",
                "no CUDA device (" + why + ")");
    return;
  }
  std::vector<Config> const configs = {
      {false, "avg", 0, 2, 7, 7, false},    // torchvision's MultiScaleRoIAlign
      {false, "max", 1, 0, 14, 14, false},  // adaptive sampling, half-pixel
      {true, "avg", 1, 0, 7, 5, false},     // non-square output catches a height/width swap
      {true, "max", 0, 2, 14, 14, false},
      {false, "avg", 0, 2, 7, 7, true},     // with extents: image 0 covers 160x250 of the 256x384 canvas
      {true, "avg", 1, 0, 7, 5, true},
  };
  for (Config const& c : configs) {
    std::string const name = std::string("enqueue ") + (c.half ? "float16" : "float32") + " " + c.mode +
                             " aligned=" + std::to_string(c.aligned) +
                             " sampling_ratio=" + std::to_string(c.samplingRatio) + " " + std::to_string(c.outH) + "x" +
                             std::to_string(c.outW) + (c.extents ? " with extents" : "") + " matches the CPU kernel";
    std::string const problem = compare(creator, c);
    checks.check(name, problem.empty(), problem);
  }
}

}  // namespace harness
