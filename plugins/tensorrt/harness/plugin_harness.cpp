// Test harness for the MultiLevelRoIAlign TensorRT plugin, run without TensorRT's libraries.
//
//   mrd_trt_plugin_harness [path/to/libmaskrcnn_deploy_trt_plugin.so [path/to/libmrd_trt_plugin_probe.so]]
//
// Opens the plugin library with dlopen (as IPluginRegistry::loadLibrary does), gives it a recording
// logger through setLoggerFinder(), takes the creator from getCreators() and drives creator and plugin
// only through the TensorRT interfaces: fields and their validation, clone, serialization round trip,
// output types and shapes, format combinations, workspace, shape checks and enqueue (enqueue_checks.cpp;
// its comparisons with the CPU kernel need a CUDA device and print SKIP without one), the same for the
// optional extents input (extents_checks.cpp), and what enqueue hands the kernel, through the probe build
// of the library (enqueue_probe_checks.cpp, core_probe.cpp; second argument, default the build's).
// One PASS/FAIL/SKIP line per check, then a summary; the exit code is 1 if any check failed.
#include <dlfcn.h>

#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "harness_util.h"
#include "test_expr_builder.h"

#ifndef MRD_DEFAULT_PLUGIN_LIBRARY
#define MRD_DEFAULT_PLUGIN_LIBRARY "libmaskrcnn_deploy_trt_plugin.so"
#endif
#ifndef MRD_DEFAULT_PROBE_LIBRARY
#define MRD_DEFAULT_PROBE_LIBRARY "libmrd_trt_plugin_probe.so"
#endif

using namespace nvinfer1;
using namespace harness;

namespace harness {
void runEnqueueChecks(Checks& checks, IPluginCreatorV3One& creator, RecordingLogger& logger);  // enqueue_checks.cpp
void runExtentsInterfaceChecks(Checks& checks, IPluginCreatorV3One& creator, RecordingLogger& logger);  // extents_checks.cpp
void runEnqueueProbeChecks(Checks& checks, char const* probePath, RecordingLoggerFinder& finder);  // enqueue_probe_checks.cpp
}

namespace {

RecordingLoggerFinder gFinder;

// A plugin made by the creator, and the error it logged if it made none.
struct Created {
  PluginView view;
  std::string error;
};

Created create(IPluginCreatorV3One& creator, Fields& fields, TensorRTPhase phase = TensorRTPhase::kBUILD) {
  size_t const before = gFinder.logger.errors.size();
  Created c{viewOf(creator.createPlugin("roi_pool", fields.collection(), phase)), ""};
  if (gFinder.logger.errors.size() > before) c.error = gFinder.logger.lastError();
  return c;
}

bool contains(std::string const& text, std::string const& part) { return text.find(part) != std::string::npos; }

void checkCreator(Checks& checks, IPluginCreatorV3One& creator) {
  checks.check("creator name/version/namespace are MultiLevelRoIAlign/1/\"\"",
               !std::strcmp(creator.getPluginName(), "MultiLevelRoIAlign") &&
                   !std::strcmp(creator.getPluginVersion(), "1") && !std::strcmp(creator.getPluginNamespace(), ""));
  char const* const names[] = {"output_height",   "output_width",    "sampling_ratio", "aligned", "spatial_scales",
                               "canonical_scale", "canonical_level", "level_eps",      "mode"};
  PluginFieldType const I = PluginFieldType::kINT32, F = PluginFieldType::kFLOAT32, C = PluginFieldType::kCHAR;
  PluginFieldType const types[] = {I, I, I, I, F, F, I, F, C};
  PluginFieldCollection const* fc = creator.getFieldNames();
  bool ok = fc != nullptr && fc->nbFields == 9;
  for (int i = 0; ok && i < 9; ++i) ok = !std::strcmp(fc->fields[i].name, names[i]) && fc->fields[i].type == types[i];
  checks.check("getFieldNames lists the 9 attributes of docs/ops.md with their types", ok);
}

void checkValidation(Checks& checks, IPluginCreatorV3One& creator) {
  Fields good = maskRcnnFields();
  Created made = create(creator, good);
  checks.check("Mask R-CNN fields create a plugin", bool(made.view) && made.error.empty(), made.error);
  if (made.view) {
    InterfaceInfo const core = made.view.core->getInterfaceInfo();
    checks.check("plugin exposes V3One core/build/runtime capabilities",
                 !std::strcmp(made.view.plugin->getInterfaceInfo().kind, "PLUGIN") &&
                     !std::strcmp(core.kind, "PLUGIN_V3ONE_CORE") &&
                     !std::strcmp(made.view.build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") &&
                     !std::strcmp(made.view.runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") &&
                     !std::strcmp(made.view.core->getPluginName(), "MultiLevelRoIAlign") &&
                     !std::strcmp(made.view.core->getPluginVersion(), "1") &&
                     !std::strcmp(made.view.core->getPluginNamespace(), ""));
  }

  struct Case {
    char const* name;
    std::function<void(Fields&)> change;
    char const* expected;  // part of the logged error
  };
  float const nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<Case> const cases = {
      {"output_height 0", [](Fields& f) { f.ints("output_height", {0}); }, "output_height must be at least 1"},
      {"output_width -3", [](Fields& f) { f.ints("output_width", {-3}); }, "output_width must be at least 1"},
      {"sampling_ratio -1", [](Fields& f) { f.ints("sampling_ratio", {-1}); }, "sampling_ratio must be 0"},
      {"aligned 2", [](Fields& f) { f.ints("aligned", {2}); }, "aligned must be 0 or 1"},
      {"mode \"sum\"", [](Fields& f) { f.text("mode", "sum"); }, "mode must be \"avg\" or \"max\", got \"sum\""},
      {"mode \"average\"", [](Fields& f) { f.text("mode", "average"); }, "got \"average\""},
      {"mode as an int", [](Fields& f) { f.ints("mode", {0}); }, "'mode' must be kCHAR, got kINT32"},
      {"output_height as a float", [](Fields& f) { f.floats("output_height", {7.f}); }, "must be kINT32, got kFLOAT32"},
      {"output_height with 2 values", [](Fields& f) { f.ints("output_height", {7, 7}); }, "must hold one value, got 2"},
      {"spatial_scales not a power of two",
       [](Fields& f) { f.floats("spatial_scales", {0.25f, 0.1f, 0.0625f, 0.03125f}); },
       "spatial_scales[1] = 0.1 is not a positive power of two"},
      {"spatial_scales negative", [](Fields& f) { f.floats("spatial_scales", {-0.25f}); },
       "not a positive power of two"},
      {"spatial_scales skip a level", [](Fields& f) { f.floats("spatial_scales", {0.25f, 0.0625f}); },
       "levels must be consecutive"},
      {"spatial_scales rising", [](Fields& f) { f.floats("spatial_scales", {0.125f, 0.25f}); },
       "levels must be consecutive"},
      {"spatial_scales with 9 levels",
       [](Fields& f) {
         f.floats("spatial_scales", {1.f, .5f, .25f, .125f, .0625f, .03125f, .015625f, .0078125f, .00390625f});
       },
       "must hold 1 to 8 values (one per level), got 9"},
      {"spatial_scales empty", [](Fields& f) { f.floats("spatial_scales", {}); }, "must hold 1 to 8 values"},
      {"canonical_scale 0", [](Fields& f) { f.floats("canonical_scale", {0.f}); },
       "canonical_scale must be positive and finite"},
      {"canonical_scale NaN", [nan](Fields& f) { f.floats("canonical_scale", {nan}); },
       "canonical_scale must be positive"},
      {"level_eps infinite", [inf](Fields& f) { f.floats("level_eps", {inf}); }, "level_eps must be finite"},
      {"unknown field", [](Fields& f) { f.ints("pooled_size", {7}); }, "unknown field 'pooled_size'"},
      {"missing field", [](Fields& f) { f.erase("mode").erase("level_eps"); }, "missing field(s): level_eps, mode"},
      {"field given twice",
       [](Fields& f) {
         int32_t const v = 7;
         f.set("output_width", PluginFieldType::kINT32, &v, 4, 1, /*append=*/true);
       },
       "'output_width' is given twice"},
  };
  for (Case const& c : cases) {
    Fields f = maskRcnnFields();
    c.change(f);
    Created bad = create(creator, f);
    checks.check(std::string("rejects ") + c.name, !bad.view.plugin && contains(bad.error, c.expected),
                 std::string(bad.view.plugin ? "a plugin was created; " : "") + "logged \"" + bad.error + "\"", true);
  }
  size_t const before = gFinder.logger.errors.size();
  IPluginV3* none = creator.createPlugin("roi_pool", nullptr, TensorRTPhase::kBUILD);
  checks.check("rejects a null field collection", none == nullptr && gFinder.logger.errors.size() == before + 1);
  delete none;

  Fields noNul = maskRcnnFields();
  noNul.text("mode", "max", /*withNul=*/false).floats("spatial_scales", {0.0625f});
  Created maxSingle = create(creator, noNul);
  checks.check(
      "accepts mode without a NUL (length 3) and a single level",
      maxSingle.view && contains(maxSingle.view.build->getMetadataString(), "mode=max spatial_scales=[0.0625]"),
      maxSingle.error);
}

void checkCloneAndSerialization(Checks& checks, IPluginCreatorV3One& creator) {
  Fields f = maskRcnnFields();  // values that differ from every default
  f.ints("output_height", {14}).ints("output_width", {5}).ints("sampling_ratio", {0}).ints("aligned", {1});
  f.floats("spatial_scales", {0.125f, 0.0625f, 0.03125f}).floats("canonical_scale", {200.f});
  f.ints("canonical_level", {3}).floats("level_eps", {0.f}).text("mode", "max");
  Created original = create(creator, f);
  if (!checks.check("plugin with non-default fields", bool(original.view), original.error)) return;

  Fields expectedFields = f;  // what serialization must reproduce, mode with its NUL
  std::string const expected = fieldsText(expectedFields.collection());
  std::string const serialized = fieldsText(original.view.runtime->getFieldsToSerialize());
  checks.check("getFieldsToSerialize gives back the creation fields", serialized == expected,
               "got " + serialized + " expected " + expected);

  PluginView copy = viewOf(original.view.plugin->clone());
  checks.check("clone is a distinct plugin with equal fields",
               copy && copy.plugin.get() != original.view.plugin.get() &&
                   fieldsText(copy.runtime->getFieldsToSerialize()) == serialized);
  copy.plugin.reset();  // the original must not depend on its clone
  checks.check("original keeps its fields after its clone is deleted",
               fieldsText(original.view.runtime->getFieldsToSerialize()) == serialized);

  PluginFieldCollection const* fc = original.view.runtime->getFieldsToSerialize();
  size_t const before = gFinder.logger.errors.size();
  PluginView restored = viewOf(creator.createPlugin("roi_pool", fc, TensorRTPhase::kRUNTIME));
  checks.check("serialization round trip (kRUNTIME) gives an equal plugin",
               restored && gFinder.logger.errors.size() == before &&
                   fieldsText(restored.runtime->getFieldsToSerialize()) == serialized &&
                   std::string(restored.build->getMetadataString()) == original.view.build->getMetadataString());

  struct NoResources : IPluginResourceContext {
    IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
  } context;
  PluginView attached = viewOf(original.view.runtime->attachToContext(&context));
  checks.check("attachToContext returns a new plugin with equal fields",
               attached && attached.plugin.get() != original.view.plugin.get() &&
                   fieldsText(attached.runtime->getFieldsToSerialize()) == serialized);
}

void checkTypesAndShapes(Checks& checks, IPluginCreatorV3One& creator) {
  Fields f = maskRcnnFields();
  f.ints("output_height", {14}).ints("output_width", {7});
  Created made = create(creator, f);
  if (!made.view) return;
  IPluginV3OneBuild& build = *made.view.build;
  checks.check("getNbOutputs is 1", build.getNbOutputs() == 1);

  DataType const F = DataType::kFLOAT, H = DataType::kHALF;
  auto outType = [&](std::vector<DataType> in, DataType* out) {
    return build.getOutputDataTypes(out, 1, in.data(), static_cast<int32_t>(in.size()));
  };
  DataType out = DataType::kINT32;
  checks.check("getOutputDataTypes float32 -> float32", outType({F, F, F, F, F}, &out) == 0 && out == F);
  checks.check("getOutputDataTypes float32 rois, float16 maps -> float16",
               outType({F, H, H, H, H}, &out) == 0 && out == H);
  size_t before = gFinder.logger.errors.size();
  checks.check("getOutputDataTypes rejects float16 rois",
               outType({H, H, H, H, H}, &out) != 0 &&
                   contains(gFinder.logger.lastError(), "'rois' must be float32, got float16") &&
                   gFinder.logger.errors.size() == before + 1);
  checks.check("getOutputDataTypes rejects mixed float32/float16 maps",
               outType({F, F, H, F, F}, &out) != 0 && contains(gFinder.logger.lastError(), "'p3' is float16"));
  checks.check(
      "getOutputDataTypes rejects int8",
      outType({F, DataType::kINT8, DataType::kINT8, DataType::kINT8, DataType::kINT8}, &out) != 0 &&
          contains(gFinder.logger.lastError(), "input 'p2' is int8"));
  checks.check("getOutputDataTypes rejects 4 inputs for 4 levels", outType({F, F, F, F}, &out) != 0);

  TestExprBuilder eb;
  IDimensionExpr const* R = eb.symbol("R");
  IDimensionExpr const* B = eb.symbol("B");
  auto dims = [](std::vector<IDimensionExpr const*> d) { return dimsOf(d); };
  std::vector<DimsExprs> in = {dims({R, eb.constant(5)})};
  for (int64_t size : {200, 100, 50, 25})
    in.push_back(dims({B, eb.constant(256), eb.constant(size), eb.constant(size * 3 / 2)}));
  DimsExprs o{};
  int32_t rc = build.getOutputShapes(in.data(), 5, nullptr, 0, &o, 1, eb);
  std::string shape = o.nbDims == 4 ? "[" + TestExprBuilder::text(o.d[0]) + "," + TestExprBuilder::text(o.d[1]) + "," +
                                          TestExprBuilder::text(o.d[2]) + "," + TestExprBuilder::text(o.d[3]) + "]"
                                    : "rank " + std::to_string(o.nbDims);
  checks.check("getOutputShapes: rois [R,5], p* [B,256,H,W] -> [R,256,14,7]",
               rc == 0 && shape == "[R,256,14,7]" && o.d[0] == R, "rc " + std::to_string(rc) + ", shape " + shape);
  in[0] = dims({eb.constant(1000), eb.constant(5)});
  rc = build.getOutputShapes(in.data(), 5, nullptr, 0, &o, 1, eb);
  checks.check("getOutputShapes with 1000 static rois -> [1000,256,14,7]",
               rc == 0 && o.d[0]->isConstant() && o.d[0]->getConstantValue() == 1000 &&
                   o.d[2]->getConstantValue() == 14 && o.d[3]->getConstantValue() == 7);
  in[0] = dims({R, eb.constant(4)});
  checks.check("getOutputShapes rejects rois [R,4]",
               build.getOutputShapes(in.data(), 5, nullptr, 0, &o, 1, eb) != 0 &&
                   contains(gFinder.logger.lastError(), "must be [R, 5], got [R, 4]"));
  in[0] = dims({R, eb.constant(5)});
  in[2] = dims({B, eb.constant(256), eb.constant(100)});
  checks.check("getOutputShapes rejects a rank-3 feature map",
               build.getOutputShapes(in.data(), 5, nullptr, 0, &o, 1, eb) != 0 &&
                   contains(gFinder.logger.lastError(), "'p3' must be"));
  checks.check("getOutputShapes rejects 3 inputs", build.getOutputShapes(in.data(), 3, nullptr, 0, &o, 1, eb) != 0);
  IDimensionExpr const* folded = eb.operation(DimensionOperation::kCEIL_DIV, *eb.constant(7), *eb.constant(2));
  IDimensionExpr const* symbolic = eb.operation(DimensionOperation::kPROD, *R, *eb.constant(256));
  checks.check("test expression builder folds constants and keeps symbols",
               folded->isConstant() && folded->getConstantValue() == 4 && !symbolic->isConstant() &&
                   TestExprBuilder::text(symbolic) == "(R*256)");
}

void checkFormatsAndConfigure(Checks& checks, IPluginCreatorV3One& creator) {
  Fields f = maskRcnnFields();
  Created made = create(creator, f);
  if (!made.view) return;
  IPluginV3OneBuild& build = *made.view.build;

  // Every assignment of {float32, float16, int8, int32, bfloat16} x {linear, CHW4} to the 6 tensors, accepted
  // the way TensorRT asks: position by position, each answer depending on the earlier positions only.
  DataType const types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kINT32, DataType::kBF16};
  TensorFormat const formats[] = {TensorFormat::kLINEAR, TensorFormat::kCHW4};
  std::vector<std::string> accepted;
  DynamicPluginTensorDesc io[6]{};
  int choice[6] = {};
  while (true) {
    bool ok = true;
    for (int pos = 0; pos < 6 && ok; ++pos) {
      io[pos].desc.type = types[choice[pos] / 2];
      io[pos].desc.format = formats[choice[pos] % 2];
      ok = build.supportsFormatCombination(pos, io, 5, 1);
    }
    if (ok) {
      std::string combo;
      for (int pos = 0; pos < 6; ++pos) combo += std::to_string(choice[pos]);
      accepted.push_back(combo);
    }
    int pos = 5;
    while (pos >= 0 && ++choice[pos] == 10) choice[pos--] = 0;
    if (pos < 0) break;
  }
  checks.check("supportsFormatCombination accepts exactly float32 rois with all-float32 or all-float16 maps and "
               "output, linear (of 10^6)",
               accepted == std::vector<std::string>{"000000", "022222"},
               std::to_string(accepted.size()) + " combinations accepted");
  io[0].desc.type = DataType::kFLOAT;
  io[0].desc.format = TensorFormat::kLINEAR;
  checks.check("supportsFormatCombination rejects out-of-range positions and wrong input counts",
               !build.supportsFormatCombination(6, io, 5, 1) && !build.supportsFormatCombination(-1, io, 5, 1) &&
                   !build.supportsFormatCombination(0, io, 4, 1) && !build.supportsFormatCombination(0, io, 5, 2));

  auto configure = [&](std::vector<std::vector<int64_t>> const& shapes) {
    std::vector<DynamicPluginTensorDesc> in(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i) in[i].desc = tensorDesc(DataType::kFLOAT, shapes[i]);
    DynamicPluginTensorDesc out{};
    out.desc = tensorDesc(DataType::kFLOAT, {-1, 256, 7, 7});
    int32_t const rc = build.configurePlugin(in.data(), static_cast<int32_t>(in.size()), &out, 1);
    size_t const workspace = build.getWorkspaceSize(in.data(), static_cast<int32_t>(in.size()), &out, 1);
    return std::make_pair(rc, workspace);
  };
  auto good = configure({{-1, 5}, {-1, 256, -1, -1}, {-1, 256, -1, -1}, {-1, 256, -1, -1}, {-1, 256, -1, -1}});
  checks.check("configurePlugin accepts dynamic R, B, H, W", good.first == 0);
  checks.check("getWorkspaceSize is 0", good.second == 0);
  auto channels = configure({{-1, 5}, {2, 256, 200, 304}, {2, 256, 100, 152}, {2, 128, 50, 76}, {2, 256, 25, 38}});
  checks.check("configurePlugin rejects maps with different channel counts",
               channels.first != 0 && contains(gFinder.logger.lastError(), "share the channel count: 'p4' has 128"));
  auto batch = configure({{-1, 5}, {2, 256, 200, 304}, {3, 256, 100, 152}, {2, 256, 50, 76}, {2, 256, 25, 38}});
  checks.check("configurePlugin rejects maps with different batch sizes",
               batch.first != 0 && contains(gFinder.logger.lastError(), "share the batch size: 'p3' has 3"));
  auto rois = configure({{-1, 4}, {2, 256, 200, 304}, {2, 256, 100, 152}, {2, 256, 50, 76}, {2, 256, 25, 38}});
  checks.check("configurePlugin rejects rois [R,4]",
               rois.first != 0 && contains(gFinder.logger.lastError(), "'rois' must be [R, 5]"));

  std::vector<PluginTensorDesc> shaped = {tensorDesc(DataType::kFLOAT, {1000, 5})};
  for (int64_t h : {200, 100, 50, 25}) shaped.push_back(tensorDesc(DataType::kHALF, {2, 256, h, h * 3 / 2}));
  PluginTensorDesc out = tensorDesc(DataType::kHALF, {1000, 256, 7, 7});
  checks.check("onShapeChange accepts Mask R-CNN shapes",
               made.view.runtime->onShapeChange(shaped.data(), 5, &out, 1) == 0);
  shaped[4].dims.d[1] = 255;
  checks.check("onShapeChange rejects maps with different channel counts",
               made.view.runtime->onShapeChange(shaped.data(), 5, &out, 1) != 0 &&
                   contains(gFinder.logger.lastError(), "'p5' has 255"));
}

}  // namespace

int main(int argc, char** argv) {
  char const* path = argc > 1 ? argv[1] : MRD_DEFAULT_PLUGIN_LIBRARY;
  char const* probePath = argc > 2 ? argv[2] : MRD_DEFAULT_PROBE_LIBRARY;
  std::printf("plugin library: %s\nprobe library: %s\n", path, probePath);
  Checks checks;
  // RTLD_NOW: every symbol must resolve now, in a process without libnvinfer.
  void* library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!checks.check("library loads without TensorRT's libraries", library != nullptr, library ? "" : dlerror()))
    return checks.summary();
  auto getCreators = reinterpret_cast<IPluginCreatorInterface* const* (*)(int32_t&)>(dlsym(library, "getCreators"));
  auto setLoggerFinder = reinterpret_cast<void (*)(ILoggerFinder*)>(dlsym(library, "setLoggerFinder"));
  bool const hidden = dlsym(library, "mrd_roi_align_forward_cuda") == nullptr;
  checks.check("exports getCreators and setLoggerFinder, hides the core's C functions",
               getCreators != nullptr && setLoggerFinder != nullptr && hidden);
  if (getCreators == nullptr || setLoggerFinder == nullptr) return checks.summary();
  setLoggerFinder(&gFinder);

  int32_t count = -1;
  IPluginCreatorInterface* const* creators = getCreators(count);
  IPluginCreatorInterface* found = count == 1 && creators != nullptr ? creators[0] : nullptr;
  InterfaceInfo const info = found ? found->getInterfaceInfo() : InterfaceInfo{"", 0, 0};
  if (!checks.check("getCreators returns one IPluginCreatorV3One",
                    found != nullptr && !std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") && info.major == 1,
                    "count " + std::to_string(count)))
    return checks.summary();
  auto& creator = *static_cast<IPluginCreatorV3One*>(found);

  checkCreator(checks, creator);
  checkValidation(checks, creator);
  checkCloneAndSerialization(checks, creator);
  checkTypesAndShapes(checks, creator);
  checkFormatsAndConfigure(checks, creator);
  runEnqueueChecks(checks, creator, gFinder.logger);
  runExtentsInterfaceChecks(checks, creator, gFinder.logger);
  runEnqueueProbeChecks(checks, probePath, gFinder);
  return checks.summary();
}
