// RoIAlign sampling math: the one source of truth shared by the CPU kernels, the CUDA kernels
// and the TensorRT plugin. Everything that decides *where* RoIAlign samples and *how* a sample is
// interpolated lives here; the kernels only loop and accumulate.
//
// Semantics follow torchvision.ops.roi_align / ONNX RoiAlign-16 exactly:
//   * a roi is (batch_index, x1, y1, x2, y2) in input pixels; spatial_scale maps it to feature cells;
//   * aligned=true shifts by -0.5 cell (half-pixel centres, Detectron2's ROIAlignV2); aligned=false
//     keeps the legacy behaviour and clamps the roi to at least 1x1 cell;
//   * each output bin averages grid_h x grid_w bilinear samples at the sub-bin centres, where the grid
//     is sampling_ratio per axis, or ceil(roi_size / pooled_size) when sampling_ratio == 0 (adaptive);
//   * a sample further than one cell outside the map contributes 0 (it still counts in the average);
//     samples inside the outer one-cell border are clamped to the edge;
//   * with per-image extents, "the map" is the part an image covers (covered_cells): a padded canvas then
//     samples as the image's own map of that size would (its rows beyond are never read).
// The FPN level rule is torchvision's LevelMapper bit for bit (see fpn_level_index).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define MRD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MRD_HOST_DEVICE inline
#endif

namespace mrd {

// float overloads on the host (the CUDA headers provide them on the device)
using std::ceil;
using std::floor;
using std::log2;
using std::sqrt;

constexpr int kMaxLevels = 8;  // P2..P9 at most; Mask R-CNN uses 4 (P2..P5)

enum PoolMode : int { kPoolAvg = 0, kPoolMax = 1 };

// Where one roi samples, in feature cells. A is the accumulation type (float, or double for tests).
template <typename A>
struct RoiGeometry {
  int batch;            // image index in the batch
  A y_start, x_start;   // top-left corner of the roi, feature cells
  A bin_h, bin_w;       // size of one output bin, feature cells
  int grid_h, grid_w;   // bilinear samples per bin along y and x
  A count;              // divisor of the average: max(grid_h * grid_w, 1)
};

template <typename A>
MRD_HOST_DEVICE RoiGeometry<A> roi_geometry(A batch_index, A x1, A y1, A x2, A y2, A spatial_scale,
                                            int pooled_h, int pooled_w, int sampling_ratio, bool aligned) {
  RoiGeometry<A> g;
  const A offset = aligned ? A(0.5) : A(0);
  g.batch = static_cast<int>(batch_index);
  g.x_start = x1 * spatial_scale - offset;
  g.y_start = y1 * spatial_scale - offset;
  A roi_w = x2 * spatial_scale - offset - g.x_start;
  A roi_h = y2 * spatial_scale - offset - g.y_start;
  if (!aligned) {  // legacy mode: force malformed rois to be at least 1x1
    roi_w = roi_w > A(1) ? roi_w : A(1);
    roi_h = roi_h > A(1) ? roi_h : A(1);
  }
  g.bin_h = roi_h / static_cast<A>(pooled_h);
  g.bin_w = roi_w / static_cast<A>(pooled_w);
  g.grid_h = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceil(roi_h / static_cast<A>(pooled_h)));
  g.grid_w = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceil(roi_w / static_cast<A>(pooled_w)));
  // Aligned mode keeps a roi's size as given, so an inverted roi (x2 < x1 or y2 < y1) has a negative
  // adaptive grid: torchvision's sample loops then run zero times and the bin is 0. Clamping the grid
  // to 0 samples gives the same 0 (and no sample is read or written past the roi's samples).
  g.grid_h = g.grid_h > 0 ? g.grid_h : 0;
  g.grid_w = g.grid_w > 0 ? g.grid_w : 0;
  const int n = g.grid_h * g.grid_w;
  g.count = static_cast<A>(n > 1 ? n : 1);
  return g;
}

// Sample coordinate of sub-sample i (0..grid-1) in bin p, along one axis.
template <typename A>
MRD_HOST_DEVICE A sample_coordinate(A start, A bin, int p, int i, int grid) {
  return start + static_cast<A>(p) * bin + static_cast<A>(i + A(0.5)) * bin / static_cast<A>(grid);
}

// Rows (or columns) of a level's map that one image covers: its extent (input pixels: what the eager
// model pads it to) times the level's scale, rounded up, at most the map's `cells` (the map's own size
// for a NaN extent, at least 1). Without extents an image covers the whole map.
MRD_HOST_DEVICE int covered_cells(int cells, float extent, float spatial_scale) {
  const float c = ceil(extent * spatial_scale);
  if (c != c) return cells;
  if (c < 1.f) return 1;
  return c < static_cast<float>(cells) ? static_cast<int>(c) : cells;
}

// The part of a height x width level map that image `batch` covers; extents [batch, 2] (height, width) or NULL.
struct CoveredMap {
  int height, width;
};

MRD_HOST_DEVICE CoveredMap covered_map(const float* extents, int batch, int height, int width, float spatial_scale) {
  if (extents == nullptr) return {height, width};
  return {covered_cells(height, extents[2 * batch], spatial_scale),
          covered_cells(width, extents[2 * batch + 1], spatial_scale)};
}

// The four taps of one bilinear sample on a height x width map stored with `row_stride` elements per row:
// flat offsets into the plane and their weights. An out-of-range sample has all weights 0 (and offsets 0,
// so reading it is always safe).
template <typename A>
struct BilinearTaps {
  int offset[4];  // (y_low,x_low) (y_low,x_high) (y_high,x_low) (y_high,x_high)
  A weight[4];
};

template <typename A>
MRD_HOST_DEVICE BilinearTaps<A> bilinear_taps(int height, int width, int row_stride, A y, A x) {
  BilinearTaps<A> t;
  if (y < A(-1) || y > static_cast<A>(height) || x < A(-1) || x > static_cast<A>(width)) {
    for (int k = 0; k < 4; ++k) { t.offset[k] = 0; t.weight[k] = A(0); }
    return t;
  }
  if (y <= A(0)) y = A(0);
  if (x <= A(0)) x = A(0);
  int y_low = static_cast<int>(y), x_low = static_cast<int>(x), y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<A>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<A>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const A ly = y - static_cast<A>(y_low), lx = x - static_cast<A>(x_low);
  const A hy = A(1) - ly, hx = A(1) - lx;
  t.offset[0] = y_low * row_stride + x_low;   t.weight[0] = hy * hx;
  t.offset[1] = y_low * row_stride + x_high;  t.weight[1] = hy * lx;
  t.offset[2] = y_high * row_stride + x_low;  t.weight[2] = ly * hx;
  t.offset[3] = y_high * row_stride + x_high; t.weight[3] = ly * lx;
  return t;
}

// FPN level of a roi as an index into the given levels (0 = first_level), or -1 when the rule is
// undefined (negative area gives NaN; torchvision then pools nothing and leaves zeros).
//   k = clamp(floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps), first, first+n-1)
// Evaluated in the roi's precision in torchvision's operation order, so boxes on a level boundary
// land where torchvision puts them (its eps is added outside the log).
template <typename A>
MRD_HOST_DEVICE int fpn_level_index(A x1, A y1, A x2, A y2, A canonical_scale, int canonical_level, A eps,
                                    int first_level, int num_levels) {
  if (num_levels == 1) return 0;
  const A s = sqrt((x2 - x1) * (y2 - y1));
  const A k = floor((static_cast<A>(canonical_level) + log2(s / canonical_scale)) + eps);
  if (k != k) return -1;  // NaN
  const A lo = static_cast<A>(first_level), hi = static_cast<A>(first_level + num_levels - 1);
  const A clamped = k < lo ? lo : (k > hi ? hi : k);
  return static_cast<int>(clamped) - first_level;
}

// Level number (2 for P2, ...) implied by a power-of-two spatial scale (1/4 -> 2).
inline int level_from_scale(float spatial_scale) {
  return static_cast<int>(std::lround(-std::log2(static_cast<double>(spatial_scale))));
}

}  // namespace mrd
