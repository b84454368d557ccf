// Checks of the op's optional last input, extents [B, 2] float32 (docs/ops.md): output types, output
// shapes, format combinations and shape checks of the 6-input form (rois, p2..p5, extents); the 5-input
// form's are in plugin_harness.cpp, and what enqueue hands the kernel in enqueue_probe_checks.cpp.
// Rejections print the message the plugin logged.
#include <functional>
#include <string>
#include <vector>

#include "harness_util.h"
#include "test_expr_builder.h"

using namespace nvinfer1;

namespace harness {
namespace {

DataType const F = DataType::kFLOAT, H = DataType::kHALF;

bool contains(std::string const& text, std::string const& part) { return text.find(part) != std::string::npos; }

// Checks that `failed` (a plugin call) reports failure and logs a line containing `expected`; prints the line.
void rejects(Checks& checks, RecordingLogger& logger, std::string const& name, std::function<bool()> const& failed,
             std::string const& expected) {
  size_t const before = logger.errors.size();
  bool const ok = failed();
  std::string const logged = logger.errors.size() > before ? logger.lastError() : "nothing logged";
  checks.check(name, ok && contains(logged, expected), logged, true);
}

PluginView makePlugin(IPluginCreatorV3One& creator) {
  Fields f = maskRcnnFields();  // 4 levels, 7x7
  return viewOf(creator.createPlugin("roi_pool", f.collection(), TensorRTPhase::kBUILD));
}

void checkTypes(Checks& checks, IPluginV3OneBuild& build, RecordingLogger& logger) {
  auto outType = [&](std::vector<DataType> in, DataType* out) {
    return build.getOutputDataTypes(out, 1, in.data(), static_cast<int32_t>(in.size()));
  };
  DataType out = DataType::kINT32;
  checks.check("extents: getOutputDataTypes float32 maps and extents -> float32",
               outType({F, F, F, F, F, F}, &out) == 0 && out == F);
  out = DataType::kINT32;
  checks.check("extents: getOutputDataTypes float16 maps, float32 extents -> float16 (the maps' type)",
               outType({F, H, H, H, H, F}, &out) == 0 && out == H);
  rejects(checks, logger, "extents: getOutputDataTypes rejects float16 extents",
          [&] { return outType({F, H, H, H, H, H}, &out) != 0; }, "'extents' must be float32, got float16");
  rejects(checks, logger, "extents: getOutputDataTypes rejects int32 extents",
          [&] { return outType({F, F, F, F, F, DataType::kINT32}, &out) != 0; },
          "'extents' must be float32, got int32");
  rejects(checks, logger, "getOutputDataTypes rejects 7 inputs for 4 levels with the two accepted counts",
          [&] { return outType({F, F, F, F, F, F, F}, &out) != 0; },
          "expects 5 inputs (rois and 4 feature maps) or 6 (then extents) and 1 output, got 7 and 1");
}

void checkShapes(Checks& checks, IPluginV3OneBuild& build, RecordingLogger& logger) {
  TestExprBuilder eb;
  IDimensionExpr const* R = eb.symbol("R");
  IDimensionExpr const* B = eb.symbol("B");
  auto dims = [](std::vector<IDimensionExpr const*> d) { return dimsOf(d); };
  // rois [R,5], p2..p5 [batch,256,s,s], then `extents`
  auto shapes = [&](IDimensionExpr const* batch, DimsExprs extents, DimsExprs* o) {
    std::vector<DimsExprs> in = {dims({R, eb.constant(5)})};
    for (int64_t size : {200, 100, 50, 25})
      in.push_back(dims({batch, eb.constant(256), eb.constant(size), eb.constant(size)}));
    in.push_back(extents);
    return build.getOutputShapes(in.data(), 6, nullptr, 0, o, 1, eb);
  };
  DimsExprs o{};
  int32_t const rc = shapes(B, dims({B, eb.constant(2)}), &o);
  std::string shape = "rank " + std::to_string(o.nbDims);
  if (o.nbDims == 4)
    shape = "[" + TestExprBuilder::text(o.d[0]) + "," + TestExprBuilder::text(o.d[1]) + "," +
            TestExprBuilder::text(o.d[2]) + "," + TestExprBuilder::text(o.d[3]) + "]";
  checks.check("extents: getOutputShapes rois [R,5], p* [B,256,H,W], extents [B,2] -> [R,256,7,7]",
               rc == 0 && shape == "[R,256,7,7]", "rc " + std::to_string(rc) + ", shape " + shape);
  rejects(checks, logger, "extents: getOutputShapes rejects extents [B,3]",
          [&] { return shapes(B, dims({B, eb.constant(3)}), &o) != 0; }, "'extents' must be [B, 2], got [B, 3]");
  rejects(checks, logger, "extents: getOutputShapes rejects rank-1 extents",
          [&] { return shapes(B, dims({B}), &o) != 0; }, "'extents' must be [B, 2], got rank 1");
  rejects(checks, logger, "extents: getOutputShapes rejects extents [3,2] with maps of batch 2",
          [&] { return shapes(eb.constant(2), dims({eb.constant(3), eb.constant(2)}), &o) != 0; },
          "'extents' has batch 3, the feature maps have 2");
  checks.check("extents: getOutputShapes accepts extents [B,2] with maps of static batch 2",
               shapes(eb.constant(2), dims({B, eb.constant(2)}), &o) == 0);
}

// TensorRT's way of asking: position by position, each answer depending on the earlier positions only
// (later ones hold a poison value). Collects every accepted assignment of {float32, float16, int8, int32,
// bfloat16} x {linear, CHW4} (digit = 2 * type + format) as a string of digits, one per position.
void acceptedCombinations(IPluginV3OneBuild& build, DynamicPluginTensorDesc* io, int32_t nbInputs, int32_t pos,
                          std::string const& prefix, std::vector<std::string>& accepted) {
  DataType const types[] = {F, H, DataType::kINT8, DataType::kINT32, DataType::kBF16};
  TensorFormat const formats[] = {TensorFormat::kLINEAR, TensorFormat::kCHW4};
  if (pos == nbInputs + 1) {
    accepted.push_back(prefix);
    return;
  }
  for (int choice = 0; choice < 10; ++choice) {
    for (int32_t later = pos + 1; later <= nbInputs; ++later) {
      io[later].desc.type = DataType::kINT8;
      io[later].desc.format = TensorFormat::kCHW4;
    }
    io[pos].desc.type = types[choice / 2];
    io[pos].desc.format = formats[choice % 2];
    if (build.supportsFormatCombination(pos, io, nbInputs, 1))
      acceptedCombinations(build, io, nbInputs, pos + 1, prefix + std::to_string(choice), accepted);
  }
}

void checkFormats(Checks& checks, IPluginV3OneBuild& build) {
  DynamicPluginTensorDesc io[7]{};
  std::vector<std::string> accepted;
  acceptedCombinations(build, io, 6, 0, "", accepted);
  checks.check("extents: supportsFormatCombination accepts exactly float32 rois and extents with all-float32 or "
               "all-float16 maps and output, linear",
               accepted == std::vector<std::string>{"0000000", "0222202"},
               std::to_string(accepted.size()) + " combinations accepted");
  for (int pos = 0; pos < 7; ++pos) {
    io[pos].desc.type = pos == 0 || pos == 5 ? F : H;
    io[pos].desc.format = TensorFormat::kLINEAR;
  }
  bool const float32Extents = build.supportsFormatCombination(5, io, 6, 1);
  bool const float16Output = build.supportsFormatCombination(6, io, 6, 1);
  io[5].desc.type = H;
  bool const float16Extents = build.supportsFormatCombination(5, io, 6, 1);
  io[6].desc.type = F;
  bool const float32Output = build.supportsFormatCombination(6, io, 6, 1);
  checks.check("extents: float16 maps: extents (position 5) float32 accepted, float16 refused; the output "
               "(position 6) float16 accepted, float32 refused",
               float32Extents && !float16Extents && float16Output && !float32Output);
  checks.check("extents: supportsFormatCombination rejects position 7 and 7 inputs",
               !build.supportsFormatCombination(7, io, 6, 1) && !build.supportsFormatCombination(0, io, 7, 1));
}

void checkConfigure(Checks& checks, PluginView& plugin, RecordingLogger& logger) {
  auto configure = [&](int64_t batchOfMaps, std::vector<int64_t> const& extents) {
    std::vector<DynamicPluginTensorDesc> in(6);
    in[0].desc = tensorDesc(F, {-1, 5});
    for (int l = 0; l < 4; ++l) in[1 + l].desc = tensorDesc(F, {batchOfMaps, 256, -1, -1});
    in[5].desc = tensorDesc(F, extents);
    DynamicPluginTensorDesc out{};
    out.desc = tensorDesc(F, {-1, 256, 7, 7});
    return plugin.build->configurePlugin(in.data(), 6, &out, 1);
  };
  checks.check("extents: configurePlugin accepts dynamic extents [-1,2]", configure(-1, {-1, 2}) == 0);
  rejects(checks, logger, "extents: configurePlugin rejects extents [2,3]", [&] { return configure(2, {2, 3}) != 0; },
          "'extents' must be [B, 2], got [B, 3]");
  rejects(checks, logger, "extents: configurePlugin rejects extents [3,2] with maps of batch 2",
          [&] { return configure(2, {3, 2}) != 0; }, "'extents' has batch 3, the feature maps have 2");
  rejects(checks, logger, "extents: configurePlugin rejects rank-3 extents",
          [&] { return configure(2, {2, 2, 1}) != 0; }, "'extents' must be [B, 2], got rank 3");

  std::vector<PluginTensorDesc> shaped = {tensorDesc(F, {1000, 5})};
  for (int64_t h : {200, 100, 50, 25}) shaped.push_back(tensorDesc(H, {2, 256, h, h * 3 / 2}));
  shaped.push_back(tensorDesc(F, {2, 2}));
  PluginTensorDesc const out = tensorDesc(H, {1000, 256, 7, 7});
  auto shapeChange = [&] { return plugin.runtime->onShapeChange(shaped.data(), 6, &out, 1); };
  checks.check("extents: onShapeChange accepts Mask R-CNN shapes with extents [2,2]", shapeChange() == 0);
  shaped[5].dims.d[1] = 3;
  rejects(checks, logger, "extents: onShapeChange rejects extents [2,3]", [&] { return shapeChange() != 0; },
          "'extents' must be [B, 2], got [B, 3]");
  shaped[5].dims.d[0] = 1;
  shaped[5].dims.d[1] = 2;
  rejects(checks, logger, "extents: onShapeChange rejects extents [1,2] with maps of batch 2",
          [&] { return shapeChange() != 0; }, "'extents' has batch 1, the feature maps have 2");
}

}  // namespace

void runExtentsInterfaceChecks(Checks& checks, IPluginCreatorV3One& creator, RecordingLogger& logger) {
  PluginView plugin = makePlugin(creator);
  if (!checks.check("extents: Mask R-CNN fields create a plugin", bool(plugin))) return;
  checkTypes(checks, *plugin.build, logger);
  checkShapes(checks, *plugin.build, logger);
  checkFormats(checks, *plugin.build);
  checkConfigure(checks, plugin, logger);
}

}  // namespace harness
