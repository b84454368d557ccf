// Shared pieces of the plugin harness: check reporting, a logger that records the plugin's messages,
// plugin fields with owned storage, and typed access to a plugin's capability interfaces.
#pragma once

#include <NvInferRuntime.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace harness {

// One line per check ("PASS name", "FAIL name: detail", "SKIP name: reason") and a summary.
// `detail` is printed on failure, and on success too when `always`.
class Checks {
 public:
  bool check(std::string const& name, bool ok, std::string const& detail = "", bool always = false) {
    bool const show = (!ok || always) && !detail.empty();
    std::printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name.c_str(), show ? ": " : "", show ? detail.c_str() : "");
    std::fflush(stdout);
    (ok ? mPassed : mFailed) += 1;
    return ok;
  }
  void skip(std::string const& name, std::string const& reason) {
    std::printf("SKIP %s: %s\n", name.c_str(), reason.c_str());
    ++mSkipped;
  }
  int summary() const {  // the process exit code
    std::printf("SUMMARY: %d passed, %d failed, %d skipped\n", mPassed, mFailed, mSkipped);
    return mFailed == 0 ? 0 : 1;
  }

 private:
  int mPassed = 0, mFailed = 0, mSkipped = 0;
};

// Records every message the plugin logs; handed to the library through its setLoggerFinder().
class RecordingLogger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
    if (severity <= Severity::kERROR) errors.emplace_back(msg);
  }
  std::string lastError() const { return errors.empty() ? "" : errors.back(); }
  std::vector<std::string> errors;
};

class RecordingLoggerFinder : public nvinfer1::ILoggerFinder {
 public:
  nvinfer1::ILogger* findLogger() override { return &logger; }
  RecordingLogger logger;
};

// Plugin fields whose names and data this object owns. collection() stays valid until the next change.
class Fields {
 public:
  Fields& ints(std::string const& name, std::vector<int32_t> const& v) {
    return set(name, nvinfer1::PluginFieldType::kINT32, v.data(), v.size() * 4, static_cast<int32_t>(v.size()));
  }
  Fields& floats(std::string const& name, std::vector<float> const& v) {
    return set(name, nvinfer1::PluginFieldType::kFLOAT32, v.data(), v.size() * 4, static_cast<int32_t>(v.size()));
  }
  // withNul: length counts a terminating NUL (as the ONNX parser may pass). Without it (as Python passes
  // strings) the bytes after the text are junk, so a reader that ignores `length` fails.
  Fields& text(std::string const& name, std::string const& s, bool withNul = true) {
    std::string const bytes = withNul ? s + '\0' : s + "~junk";
    return set(name, nvinfer1::PluginFieldType::kCHAR, bytes.data(), bytes.size(),
               static_cast<int32_t>(s.size() + (withNul ? 1 : 0)));
  }
  Fields& set(std::string const& name, nvinfer1::PluginFieldType type, void const* data, size_t bytes, int32_t length,
              bool append = false) {
    Entry e{name, type, std::vector<char>(static_cast<char const*>(data), static_cast<char const*>(data) + bytes),
            length};
    for (Entry& existing : mEntries)
      if (!append && existing.name == name) {
        existing = e;
        return *this;
      }
    mEntries.push_back(e);
    return *this;
  }
  Fields& erase(std::string const& name) {
    for (size_t i = 0; i < mEntries.size(); ++i)
      if (mEntries[i].name == name) mEntries.erase(mEntries.begin() + static_cast<long>(i--));
    return *this;
  }
  nvinfer1::PluginFieldCollection const* collection() {
    mFields.clear();
    for (Entry const& e : mEntries) mFields.emplace_back(e.name.c_str(), e.bytes.data(), e.type, e.length);
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
    return &mCollection;
  }

 private:
  struct Entry {
    std::string name;
    nvinfer1::PluginFieldType type;
    std::vector<char> bytes;
    int32_t length;
  };
  std::vector<Entry> mEntries;
  std::vector<nvinfer1::PluginField> mFields;
  nvinfer1::PluginFieldCollection mCollection{};
};

// docs/ops.md's Mask R-CNN box-head values (torchvision).
inline Fields maskRcnnFields() {
  Fields f;
  f.ints("output_height", {7}).ints("output_width", {7}).ints("sampling_ratio", {2}).ints("aligned", {0});
  f.floats("spatial_scales", {0.25f, 0.125f, 0.0625f, 0.03125f}).floats("canonical_scale", {224.f});
  f.ints("canonical_level", {4}).floats("level_eps", {1e-6f}).text("mode", "avg");
  return f;
}

// A plugin seen through its capability interfaces, as TensorRT sees it.
struct PluginView {
  std::unique_ptr<nvinfer1::IPluginV3> plugin;
  nvinfer1::IPluginV3OneCore* core = nullptr;
  nvinfer1::IPluginV3OneBuild* build = nullptr;
  nvinfer1::IPluginV3OneRuntime* runtime = nullptr;
  explicit operator bool() const { return plugin && core && build && runtime; }
};

inline PluginView viewOf(nvinfer1::IPluginV3* plugin) {
  PluginView v;
  v.plugin.reset(plugin);
  if (plugin == nullptr) return v;
  v.core =
      static_cast<nvinfer1::IPluginV3OneCore*>(plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
  v.build =
      static_cast<nvinfer1::IPluginV3OneBuild*>(plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
  v.runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  return v;
}

// Canonical text of a field collection ("name:type:length:hex bytes;..."): equal text = equal fields.
inline std::string fieldsText(nvinfer1::PluginFieldCollection const* fc) {
  if (fc == nullptr) return "<null>";
  std::string out;
  for (int32_t i = 0; i < fc->nbFields; ++i) {
    nvinfer1::PluginField const& f = fc->fields[i];
    size_t const item = f.type == nvinfer1::PluginFieldType::kCHAR ? 1 : 4;
    out += std::string(f.name) + ":" + std::to_string(static_cast<int>(f.type)) + ":" + std::to_string(f.length) + ":";
    auto const* bytes = static_cast<unsigned char const*>(f.data);
    char hex[3];
    for (size_t b = 0; b < item * static_cast<size_t>(f.length); ++b) {
      std::snprintf(hex, sizeof(hex), "%02x", bytes[b]);
      out += hex;
    }
    out += ";";
  }
  return out;
}

// Descriptor of a linear tensor of the given type and dims.
inline nvinfer1::PluginTensorDesc tensorDesc(nvinfer1::DataType type, std::vector<int64_t> const& dims,
                                             nvinfer1::TensorFormat format = nvinfer1::TensorFormat::kLINEAR) {
  nvinfer1::PluginTensorDesc d{};
  d.dims.nbDims = static_cast<int32_t>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) d.dims.d[i] = dims[i];
  d.type = type;
  d.format = format;
  d.scale = -1.f;
  return d;
}

}  // namespace harness
