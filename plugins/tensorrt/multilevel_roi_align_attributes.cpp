// Field parsing and validation for MultiLevelRoIAlign (see multilevel_roi_align_attributes.h).
#include "multilevel_roi_align_attributes.h"

#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>

#include "roi_align_api.h"   // MRD_MAX_LEVELS
#include "roi_align_math.h"  // kPoolAvg / kPoolMax, level_from_scale: the core's own rules

namespace mrd {
namespace trt {
namespace {

using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

enum class Shape { kScalar, kList, kString };

struct FieldSpec {
  char const* name;
  PluginFieldType type;
  Shape shape;
};

// docs/ops.md, in order.
constexpr FieldSpec kFieldSpecs[] = {
    {"output_height", PluginFieldType::kINT32, Shape::kScalar},
    {"output_width", PluginFieldType::kINT32, Shape::kScalar},
    {"sampling_ratio", PluginFieldType::kINT32, Shape::kScalar},
    {"aligned", PluginFieldType::kINT32, Shape::kScalar},
    {"spatial_scales", PluginFieldType::kFLOAT32, Shape::kList},
    {"canonical_scale", PluginFieldType::kFLOAT32, Shape::kScalar},
    {"canonical_level", PluginFieldType::kINT32, Shape::kScalar},
    {"level_eps", PluginFieldType::kFLOAT32, Shape::kScalar},
    {"mode", PluginFieldType::kCHAR, Shape::kString},
};
constexpr int kNumFields = static_cast<int>(sizeof(kFieldSpecs) / sizeof(kFieldSpecs[0]));

char const* typeName(PluginFieldType type) {
  switch (type) {
    case PluginFieldType::kFLOAT16: return "kFLOAT16";
    case PluginFieldType::kFLOAT32: return "kFLOAT32";
    case PluginFieldType::kFLOAT64: return "kFLOAT64";
    case PluginFieldType::kINT8: return "kINT8";
    case PluginFieldType::kINT16: return "kINT16";
    case PluginFieldType::kINT32: return "kINT32";
    case PluginFieldType::kCHAR: return "kCHAR";
    case PluginFieldType::kDIMS: return "kDIMS";
    case PluginFieldType::kUNKNOWN: return "kUNKNOWN";
    case PluginFieldType::kBF16: return "kBF16";
    case PluginFieldType::kINT64: return "kINT64";
    default: return "an unsupported type";
  }
}

[[noreturn]] void reject(std::string const& message) { throw std::invalid_argument(message); }

std::string formatFloat(float value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

// Checks one field against its spec and returns its index in kFieldSpecs.
int checkField(PluginField const& field) {
  if (field.name == nullptr) reject("a field has no name");
  int index = 0;
  while (index < kNumFields && std::strcmp(field.name, kFieldSpecs[index].name) != 0) ++index;
  if (index == kNumFields) {
    std::string known;
    for (FieldSpec const& spec : kFieldSpecs) known += std::string(known.empty() ? "" : ", ") + spec.name;
    reject("unknown field '" + std::string(field.name) + "' (the op's attributes are: " + known + ")");
  }
  FieldSpec const& spec = kFieldSpecs[index];
  std::string const name = spec.name;
  if (field.type != spec.type)
    reject("field '" + name + "' must be " + typeName(spec.type) + ", got " + typeName(field.type));
  if (field.length < 0) reject("field '" + name + "' has a negative length");
  if (field.length > 0 && field.data == nullptr) reject("field '" + name + "' has no data");
  if (spec.shape == Shape::kScalar && field.length != 1)
    reject("field '" + name + "' must hold one value, got " + std::to_string(field.length));
  if (spec.shape == Shape::kList && (field.length < 1 || field.length > MRD_MAX_LEVELS))
    reject("field '" + name + "' must hold 1 to " + std::to_string(MRD_MAX_LEVELS) + " values (one per level), got " +
           std::to_string(field.length));
  return index;
}

void store(RoIAlignAttributes& a, int index, PluginField const& field) {
  auto const* ints = static_cast<int32_t const*>(field.data);
  auto const* floats = static_cast<float const*>(field.data);
  switch (index) {
    case 0: a.outputHeight = ints[0]; break;
    case 1: a.outputWidth = ints[0]; break;
    case 2: a.samplingRatio = ints[0]; break;
    case 3: a.aligned = ints[0]; break;
    case 4: a.spatialScales.assign(floats, floats + field.length); break;
    case 5: a.canonicalScale = floats[0]; break;
    case 6: a.canonicalLevel = ints[0]; break;
    case 7: a.levelEps = floats[0]; break;
    case 8: {  // up to `length` chars; a terminating NUL (as the ONNX parser may add) ends it early
      auto const* chars = static_cast<char const*>(field.data);
      a.mode.assign(chars, field.length > 0 ? strnlen(chars, static_cast<size_t>(field.length)) : 0);
      break;
    }
    default: reject("internal error: no storage for field " + std::to_string(index));
  }
}

}  // namespace

int32_t RoIAlignAttributes::poolMode() const { return mode == "max" ? kPoolMax : kPoolAvg; }

int32_t RoIAlignAttributes::firstLevel() const {
  return spatialScales.empty() ? 0 : level_from_scale(spatialScales[0]);
}

std::vector<PluginField> attributeFieldSpecs() {
  std::vector<PluginField> fields;
  for (FieldSpec const& spec : kFieldSpecs)
    fields.emplace_back(spec.name, nullptr, spec.type, spec.shape == Shape::kScalar ? 1 : 0);
  return fields;
}

RoIAlignAttributes parseAttributes(nvinfer1::PluginFieldCollection const* fields) {
  if (fields == nullptr) reject("no fields were given (a null PluginFieldCollection)");
  if (fields->nbFields > 0 && fields->fields == nullptr) reject("the PluginFieldCollection has no field array");
  RoIAlignAttributes a;
  bool seen[kNumFields] = {};
  for (int32_t i = 0; i < fields->nbFields; ++i) {
    int const index = checkField(fields->fields[i]);
    if (seen[index]) reject("field '" + std::string(kFieldSpecs[index].name) + "' is given twice");
    seen[index] = true;
    store(a, index, fields->fields[i]);
  }
  std::string missing;
  for (int index = 0; index < kNumFields; ++index)
    if (!seen[index]) missing += std::string(missing.empty() ? "" : ", ") + kFieldSpecs[index].name;
  if (!missing.empty())
    reject("missing field(s): " + missing + " (every attribute of docs/ops.md is required; the exporter writes all)");
  validateAttributes(a);
  return a;
}

void validateAttributes(RoIAlignAttributes const& a) {
  if (a.outputHeight < 1) reject("output_height must be at least 1, got " + std::to_string(a.outputHeight));
  if (a.outputWidth < 1) reject("output_width must be at least 1, got " + std::to_string(a.outputWidth));
  if (a.samplingRatio < 0)
    reject("sampling_ratio must be 0 (adaptive) or positive, got " + std::to_string(a.samplingRatio));
  if (a.aligned != 0 && a.aligned != 1) reject("aligned must be 0 or 1, got " + std::to_string(a.aligned));
  if (a.spatialScales.empty() || a.numLevels() > MRD_MAX_LEVELS)
    reject("spatial_scales must hold 1 to " + std::to_string(MRD_MAX_LEVELS) + " values, got " +
           std::to_string(a.numLevels()));
  for (int32_t l = 0; l < a.numLevels(); ++l) {
    float const s = a.spatialScales[l];
    std::string const where = "spatial_scales[" + std::to_string(l) + "] = " + formatFloat(s);
    // the core's rule: the nearest power of two 2^-k must equal s to 1e-6 relative
    if (!(s > 0.f) || !std::isfinite(s) || std::fabs(std::ldexp(1.0, -level_from_scale(s)) - s) > 1e-6 * s)
      reject(where + " is not a positive power of two (1/4 for P2, 1/8 for P3, ...)");
    if (l > 0 && level_from_scale(s) != level_from_scale(a.spatialScales[0]) + l)
      reject(where + ": levels must be consecutive, each scale half the previous one");
  }
  if (!(a.canonicalScale > 0.f) || !std::isfinite(a.canonicalScale))
    reject("canonical_scale must be positive and finite, got " + formatFloat(a.canonicalScale));
  if (!std::isfinite(a.levelEps)) reject("level_eps must be finite, got " + formatFloat(a.levelEps));
  if (a.mode != "avg" && a.mode != "max") reject("mode must be \"avg\" or \"max\", got \"" + a.mode + "\"");
}

std::vector<PluginField> attributeFields(RoIAlignAttributes const& a) {
  return {
      {"output_height", &a.outputHeight, PluginFieldType::kINT32, 1},
      {"output_width", &a.outputWidth, PluginFieldType::kINT32, 1},
      {"sampling_ratio", &a.samplingRatio, PluginFieldType::kINT32, 1},
      {"aligned", &a.aligned, PluginFieldType::kINT32, 1},
      {"spatial_scales", a.spatialScales.data(), PluginFieldType::kFLOAT32, a.numLevels()},
      {"canonical_scale", &a.canonicalScale, PluginFieldType::kFLOAT32, 1},
      {"canonical_level", &a.canonicalLevel, PluginFieldType::kINT32, 1},
      {"level_eps", &a.levelEps, PluginFieldType::kFLOAT32, 1},
      {"mode", a.mode.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(a.mode.size() + 1)},  // with its NUL
  };
}

std::string describeAttributes(RoIAlignAttributes const& a) {
  std::ostringstream out;
  out << a.outputHeight << "x" << a.outputWidth << " sampling_ratio=" << a.samplingRatio << " aligned=" << a.aligned
      << " mode=" << a.mode << " spatial_scales=[";
  for (int32_t l = 0; l < a.numLevels(); ++l) out << (l ? "," : "") << a.spatialScales[l];
  out << "] canonical_scale=" << a.canonicalScale << " canonical_level=" << a.canonicalLevel
      << " level_eps=" << a.levelEps;
  return out.str();
}

}  // namespace trt
}  // namespace mrd
