// A minimal IExprBuilder for calling IPluginV3OneBuild::getOutputShapes() without TensorRT.
//
// TensorRT's IDimensionExpr and IExprBuilder are thin shells that forward to implementation objects
// (apiv::VDimensionExpr, apiv::VExprBuilder in NvInferImpl.h) through their protected mImpl pointer;
// these classes supply their own. An expression is a constant or a named symbol (a dimension known only
// at run time, e.g. "R"). Operations on two constants fold to a constant; otherwise they give a symbol
// spelling the operation, e.g. "(R*256)".
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace harness {

class TestDimExpr : public nvinfer1::IDimensionExpr {
 public:
  TestDimExpr(bool constant, int64_t value, std::string text) : mState(constant, value, std::move(text)) {
    mImpl = &mState;
  }
  ~TestDimExpr() override = default;
  std::string const& text() const { return mState.text; }

 private:
  struct State : nvinfer1::apiv::VDimensionExpr {
    State(bool c, int64_t v, std::string t) : constant(c), value(v), text(std::move(t)) {}
    bool isConstant() const override { return constant; }
    int64_t getConstantValue() const override { return constant ? value : std::numeric_limits<int64_t>::min(); }
    bool isSizeTensor() const override { return false; }
    bool constant;
    int64_t value;
    std::string text;
  } mState;
};

class TestExprBuilder : public nvinfer1::IExprBuilder {
 public:
  TestExprBuilder() : mState(*this) { mImpl = &mState; }
  ~TestExprBuilder() override = default;

  nvinfer1::IDimensionExpr const* symbol(std::string const& name) { return make(false, 0, name); }

  // Text of an expression made by this builder: "256", "R", "(R*256)".
  static std::string text(nvinfer1::IDimensionExpr const* e) {
    return e == nullptr ? "<null>" : static_cast<TestDimExpr const*>(e)->text();
  }

 private:
  nvinfer1::IDimensionExpr const* make(bool constant, int64_t value, std::string text) {
    mExprs.push_back(std::make_unique<TestDimExpr>(constant, value, std::move(text)));
    return mExprs.back().get();
  }

  struct State : nvinfer1::apiv::VExprBuilder {
    explicit State(TestExprBuilder& b) : builder(b) {}
    nvinfer1::IDimensionExpr const* constant(int64_t value) override {
      return builder.make(true, value, std::to_string(value));
    }
    nvinfer1::IDimensionExpr const* operation(nvinfer1::DimensionOperation op, nvinfer1::IDimensionExpr const& a,
                                              nvinfer1::IDimensionExpr const& b) override;
    nvinfer1::IDimensionExpr const* declareSizeTensor(int32_t, nvinfer1::IDimensionExpr const&,
                                                      nvinfer1::IDimensionExpr const&) override {
      return nullptr;  // size tensors are not modelled (the plugin has none)
    }
    TestExprBuilder& builder;
  } mState;
  std::deque<std::unique_ptr<TestDimExpr>> mExprs;
};

inline nvinfer1::IDimensionExpr const* TestExprBuilder::State::operation(nvinfer1::DimensionOperation op,
                                                                         nvinfer1::IDimensionExpr const& a,
                                                                         nvinfer1::IDimensionExpr const& b) {
  using Op = nvinfer1::DimensionOperation;
  static char const* const kSymbols[] = {"+", "*", " max ", " min ", "-", "==", "<", " floordiv ", " ceildiv "};
  int const index = static_cast<int>(op);
  if (index < 0 || index > static_cast<int>(Op::kCEIL_DIV)) return nullptr;
  if (!a.isConstant() || !b.isConstant())
    return builder.make(false, 0, "(" + text(&a) + kSymbols[index] + text(&b) + ")");
  int64_t const x = a.getConstantValue(), y = b.getConstantValue();
  int64_t r = 0;
  switch (op) {
    case Op::kSUM: r = x + y; break;
    case Op::kPROD: r = x * y; break;
    case Op::kMAX: r = x > y ? x : y; break;
    case Op::kMIN: r = x < y ? x : y; break;
    case Op::kSUB: r = x - y; break;
    case Op::kEQUAL: r = x == y; break;
    case Op::kLESS: r = x < y; break;
    case Op::kFLOOR_DIV:
    case Op::kCEIL_DIV: {
      if (y == 0) return nullptr;
      int64_t q = x / y;  // truncates toward zero
      bool const inexact = q * y != x;
      if (op == Op::kFLOOR_DIV && inexact && ((x < 0) != (y < 0))) --q;
      if (op == Op::kCEIL_DIV && inexact && ((x < 0) == (y < 0))) ++q;
      r = q;
      break;
    }
  }
  return builder.make(true, r, std::to_string(r));
}

// DimsExprs of the given expressions (at most nvinfer1::Dims::MAX_DIMS).
inline nvinfer1::DimsExprs dimsOf(std::vector<nvinfer1::IDimensionExpr const*> const& d) {
  nvinfer1::DimsExprs e{};
  e.nbDims = static_cast<int32_t>(d.size());
  for (size_t i = 0; i < d.size(); ++i) e.d[i] = d[i];
  return e;
}

}  // namespace harness
