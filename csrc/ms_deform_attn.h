// Multi-scale deformable attention: the input check and sampling arithmetic shared by the CPU and
// CUDA kernels. The op schema is defined in Python (dino_demo/ops/registration.py); the kernel
// files only register implementations for it (TORCH_LIBRARY_IMPL).
//
// Layouts (the official ones):
//   value               [N, S, M, D]   S = sum of H*W over levels, each level flattened row-major
//   spatial_shapes      [L, 2] int64   (H, W) of each level
//   level_start_index   [L] int64      offset of each level in S
//   sampling_locations  [N, Lq, M, L, P, 2]  (x, y), 0 and 1 are the outer edges of the map; in value's
//                       dtype, or float32 for float16 / bfloat16 values (mixed precision)
//   attention_weights   [N, Lq, M, L, P]
//   output              [N, Lq, M * D]
//
// Sampling is bilinear with zero padding and the align_corners=False pixel convention of
// F.grid_sample: pixel (i, j) covers [j, j + 1) x [i, i + 1) in units of pixels and is sampled at
// its center, so a location x in [0, 1] maps to the pixel coordinate x * W - 0.5.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

namespace dino_demo {

struct MsDeformAttnSizes {
  int64_t batch;
  int64_t num_values;
  int64_t heads;
  int64_t channels;
  int64_t queries;
  int64_t levels;
  int64_t points;
};

// (H, W) and start offset of every level, read on the host.
struct LevelTable {
  std::vector<int64_t> heights;
  std::vector<int64_t> widths;
  std::vector<int64_t> starts;
};

struct MsDeformAttnProblem {
  MsDeformAttnSizes sizes;
  LevelTable levels;
};

// Whether a dtype is one of the 16-bit floating types, whose values may be sampled at float32
// locations: a bfloat16 location (8-bit mantissa) can be a pixel off on a 128-wide map.
inline bool is_half(at::ScalarType dtype) {
  return dtype == at::kHalf || dtype == at::kBFloat16;
}

// The input check of every C++ entry point (CPU and CUDA, forward and backward). Raises
// ValueError (c10::ValueError) on any mismatch of rank, size, dtype or device, and unless the
// levels are non-empty, start where the previous one ends and fill S exactly, so that no kernel
// reads outside value. `grad_output` is the backward's incoming gradient, nullptr in the forward.
// The level table is read on the host: a device-to-host copy for CUDA tensors.
// dino_demo/ops/validation.py makes the same checks, with the same messages, for the Python paths.
inline MsDeformAttnProblem check_ms_deform_attn(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor* grad_output = nullptr) {
  TORCH_CHECK_VALUE(value.dim() == 4, "ms_deform_attn: value must be [N, S, M, D], got shape ", value.sizes());
  TORCH_CHECK_VALUE(
      spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
      "ms_deform_attn: spatial_shapes must be [L, 2], got shape ", spatial_shapes.sizes());
  const int64_t levels = spatial_shapes.size(0);
  TORCH_CHECK_VALUE(levels >= 1, "ms_deform_attn: need at least one level");
  TORCH_CHECK_VALUE(
      level_start_index.dim() == 1 && level_start_index.size(0) == levels,
      "ms_deform_attn: level_start_index must be [L] = [", levels, "], got shape ", level_start_index.sizes());
  TORCH_CHECK_VALUE(
      sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
      "ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2], got shape ", sampling_locations.sizes());
  const MsDeformAttnSizes sizes{
      value.size(0), value.size(1), value.size(2), value.size(3),
      sampling_locations.size(1), levels, sampling_locations.size(4)};
  TORCH_CHECK_VALUE(
      sampling_locations.size(0) == sizes.batch && sampling_locations.size(2) == sizes.heads &&
          sampling_locations.size(3) == levels,
      "ms_deform_attn: sampling_locations ", sampling_locations.sizes(), " does not match N=", sizes.batch,
      ", M=", sizes.heads, ", L=", levels, " from value ", value.sizes(), " and spatial_shapes ",
      spatial_shapes.sizes());
  TORCH_CHECK_VALUE(
      attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
      "ms_deform_attn: attention_weights must be [N, Lq, M, L, P] = ", sampling_locations.sizes().slice(0, 5),
      ", got shape ", attention_weights.sizes());

  TORCH_CHECK_VALUE(
      at::isFloatingType(value.scalar_type()),
      "ms_deform_attn: value must be a floating point tensor, got ", value.scalar_type());
  TORCH_CHECK_VALUE(
      attention_weights.scalar_type() == value.scalar_type() &&
          (sampling_locations.scalar_type() == value.scalar_type() ||
           (is_half(value.scalar_type()) && sampling_locations.scalar_type() == at::kFloat)),
      "ms_deform_attn: value, sampling_locations and attention_weights must share one dtype (or, for float16 and "
      "bfloat16 values, float32 sampling_locations), got ",
      value.scalar_type(), ", ", sampling_locations.scalar_type(), ", ", attention_weights.scalar_type());
  TORCH_CHECK_VALUE(
      spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
      "ms_deform_attn: spatial_shapes and level_start_index must be int64, got ", spatial_shapes.scalar_type(),
      " and ", level_start_index.scalar_type());

  const auto device = value.device();
  TORCH_CHECK_VALUE(
      spatial_shapes.device() == device && level_start_index.device() == device &&
          sampling_locations.device() == device && attention_weights.device() == device,
      "ms_deform_attn: all inputs must be on one device, value is on ", device);

  if (grad_output != nullptr) {
    TORCH_CHECK_VALUE(
        grad_output->dim() == 3 && grad_output->size(0) == sizes.batch && grad_output->size(1) == sizes.queries &&
            grad_output->size(2) == sizes.heads * sizes.channels,
        "ms_deform_attn_backward: grad_output must be [N, Lq, M * D] = [", sizes.batch, ", ", sizes.queries, ", ",
        sizes.heads * sizes.channels, "], got shape ", grad_output->sizes());
    TORCH_CHECK_VALUE(
        grad_output->scalar_type() == value.scalar_type() && grad_output->device() == device,
        "ms_deform_attn_backward: grad_output must have the dtype and device of value, got ",
        grad_output->scalar_type(), " on ", grad_output->device(), " and ", value.scalar_type(), " on ", device);
  }

  const auto shapes = spatial_shapes.cpu().contiguous();
  const auto starts = level_start_index.cpu().contiguous();
  const int64_t* shape_data = shapes.const_data_ptr<int64_t>();
  const int64_t* start_data = starts.const_data_ptr<int64_t>();
  LevelTable table;
  int64_t expected_start = 0;
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t height = shape_data[2 * l];
    const int64_t width = shape_data[2 * l + 1];
    TORCH_CHECK_VALUE(
        height >= 1 && width >= 1, "ms_deform_attn: level ", l, " has empty spatial shape (", height, ", ", width, ")");
    TORCH_CHECK_VALUE(
        start_data[l] == expected_start, "ms_deform_attn: level_start_index[", l, "] is ", start_data[l],
        " but the spatial shapes before it hold ", expected_start, " values");
    table.heights.push_back(height);
    table.widths.push_back(width);
    table.starts.push_back(start_data[l]);
    expected_start += height * width;
  }
  TORCH_CHECK_VALUE(
      expected_start == sizes.num_values, "ms_deform_attn: spatial_shapes hold ", expected_start,
      " values in all but value has S = ", sizes.num_values);
  return {sizes, std::move(table)};
}

// The four pixels around one sampling location and their bilinear weights. Corners are ordered
// (top-left, top-right, bottom-left, bottom-right); a corner outside the map has offset -1 and
// contributes zero (zero padding).
template <typename acc_t>
struct BilinearCorners {
  int64_t offset[4];  // y * W + x of each corner within its level, or -1
  acc_t weight[4];
  acc_t fx;  // fractional position between the left and right columns
  acc_t fy;  // fractional position between the top and bottom rows
};

// Returns false when no corner lies inside the H x W map: the sample and all its gradients are
// zero. NaN locations count as outside. x == -1 (or y == -1) stays inside, as in F.grid_sample:
// the sample is zero there but its gradient towards the map is not.
template <typename acc_t>
C10_HOST_DEVICE inline bool bilinear_corners(
    acc_t loc_x, acc_t loc_y, int64_t height, int64_t width, BilinearCorners<acc_t>& corners) {
  const acc_t x = loc_x * static_cast<acc_t>(width) - acc_t(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(height) - acc_t(0.5);
  if (!(x >= acc_t(-1) && y >= acc_t(-1) && x < static_cast<acc_t>(width) && y < static_cast<acc_t>(height))) {
    return false;
  }
  const acc_t x_floor = ::floor(x);
  const acc_t y_floor = ::floor(y);
  const int64_t x0 = static_cast<int64_t>(x_floor);
  const int64_t y0 = static_cast<int64_t>(y_floor);
  const int64_t x1 = x0 + 1;
  const int64_t y1 = y0 + 1;
  corners.fx = x - x_floor;
  corners.fy = y - y_floor;
  const acc_t gx = acc_t(1) - corners.fx;
  const acc_t gy = acc_t(1) - corners.fy;
  const bool left = x0 >= 0;
  const bool right = x1 < width;
  const bool top = y0 >= 0;
  const bool bottom = y1 < height;
  corners.offset[0] = (top && left) ? y0 * width + x0 : -1;
  corners.offset[1] = (top && right) ? y0 * width + x1 : -1;
  corners.offset[2] = (bottom && left) ? y1 * width + x0 : -1;
  corners.offset[3] = (bottom && right) ? y1 * width + x1 : -1;
  corners.weight[0] = gy * gx;
  corners.weight[1] = gy * corners.fx;
  corners.weight[2] = corners.fy * gx;
  corners.weight[3] = corners.fy * corners.fx;
  return true;
}

// Gradient of a bilinear sample with respect to its location (x, y) in [0, 1] units, given the
// dot products of the incoming gradient with the four corner values (zero for outside corners).
template <typename acc_t>
C10_HOST_DEVICE inline void bilinear_location_grad(
    const BilinearCorners<acc_t>& corners, const acc_t dot[4], int64_t height, int64_t width,
    acc_t& grad_x, acc_t& grad_y) {
  const acc_t gx = acc_t(1) - corners.fx;
  const acc_t gy = acc_t(1) - corners.fy;
  grad_x = (gy * (dot[1] - dot[0]) + corners.fy * (dot[3] - dot[2])) * static_cast<acc_t>(width);
  grad_y = (gx * (dot[2] - dot[0]) + corners.fx * (dot[3] - dot[1])) * static_cast<acc_t>(height);
}

// The inputs in the contiguous layouts the kernels index (copies only where a tensor is not).
struct ContiguousInputs {
  at::Tensor value;
  at::Tensor spatial_shapes;
  at::Tensor level_start_index;
  at::Tensor sampling_locations;
  at::Tensor attention_weights;
};

inline ContiguousInputs contiguous_inputs(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  return {value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
          sampling_locations.contiguous(), attention_weights.contiguous()};
}

// The forward's output [N, Lq, M * D], uninitialised.
inline at::Tensor empty_output(const MsDeformAttnSizes& sizes, const at::Tensor& value) {
  return at::empty({sizes.batch, sizes.queries, sizes.heads * sizes.channels}, value.options());
}

// The backward's outputs: grad_value zeroed in the op-math type (float32 for half-precision
// inputs, since it accumulates), the other two uninitialised in their inputs' dtypes.
struct Gradients {
  at::Tensor value;
  at::Tensor sampling_locations;
  at::Tensor attention_weights;
};

inline Gradients empty_gradients(const at::Tensor& value, const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights) {
  return {at::zeros(value.sizes(), value.options().dtype(at::toOpMathType(value.scalar_type()))),
          at::empty(sampling_locations.sizes(), sampling_locations.options()),
          at::empty(attention_weights.sizes(), value.options())};
}

}  // namespace dino_demo
