// CPU kernels of multi-scale deformable attention.
//
// Forward: one task per (batch, query, head) row of the output. Each row accumulates its D
// channels in a small buffer, so no [N, D, Lq, L * P] intermediate is ever built.
// Backward: parallel over (batch, head) pairs. All queries of a head scatter into the same slice
// grad_value[n, :, m, :], so giving that slice to a single thread keeps the accumulation free of
// races and deterministic without atomics or per-thread copies.
//
// Half-precision values (float16, bfloat16) are read as they are and accumulated in float32; their
// sampling locations may be float32 (loc_t), as a 16-bit location can be a pixel off.
//
// The channel loops are written as plain `omp simd` loops over contiguous memory (value, output
// and gradients all have channels innermost), which GCC and Clang vectorize at -O3.
#include "ms_deform_attn.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace dino_demo {
namespace {

// Asks for the cache line holding `address` (a hint; nothing on compilers without the builtin).
inline void prefetch(const void* address) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(address);
#else
  (void)address;
#endif
}

// acc[c] += sum_k weight[k] * corner[k][c]
template <typename scalar_t, typename acc_t>
inline void accumulate_corners(
    acc_t* __restrict__ acc, const scalar_t* const corner[4], const acc_t* weight, int64_t channels) {
  const scalar_t* __restrict__ v0 = corner[0];
  const scalar_t* __restrict__ v1 = corner[1];
  const scalar_t* __restrict__ v2 = corner[2];
  const scalar_t* __restrict__ v3 = corner[3];
  const acc_t w0 = weight[0], w1 = weight[1], w2 = weight[2], w3 = weight[3];
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    acc[c] += w0 * static_cast<acc_t>(v0[c]) + w1 * static_cast<acc_t>(v1[c]) + w2 * static_cast<acc_t>(v2[c]) +
        w3 * static_cast<acc_t>(v3[c]);
  }
}

// dot[k] = sum_c grad[c] * corner[k][c]
template <typename scalar_t, typename acc_t>
inline void corner_dots(
    const acc_t* __restrict__ grad, const scalar_t* const corner[4], acc_t dot[4], int64_t channels) {
  const scalar_t* __restrict__ v0 = corner[0];
  const scalar_t* __restrict__ v1 = corner[1];
  const scalar_t* __restrict__ v2 = corner[2];
  const scalar_t* __restrict__ v3 = corner[3];
  acc_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
  for (int64_t c = 0; c < channels; ++c) {
    const acc_t g = grad[c];
    d0 += g * static_cast<acc_t>(v0[c]);
    d1 += g * static_cast<acc_t>(v1[c]);
    d2 += g * static_cast<acc_t>(v2[c]);
    d3 += g * static_cast<acc_t>(v3[c]);
  }
  dot[0] = d0;
  dot[1] = d1;
  dot[2] = d2;
  dot[3] = d3;
}

// dst[c] += scale * src[c]
template <typename acc_t>
inline void axpy(acc_t* __restrict__ dst, acc_t scale, const acc_t* __restrict__ src, int64_t channels) {
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    dst[c] += scale * src[c];
  }
}

// loc_t: the locations' type, scalar_t or float32 for half-precision values (mixed precision).
template <typename scalar_t, typename loc_t>
void forward_kernel(
    const MsDeformAttnSizes& sizes, const LevelTable& levels, const scalar_t* value, const loc_t* locations,
    const scalar_t* weights, scalar_t* output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = sizes.channels;
  const int64_t pixel_stride = sizes.heads * channels;
  const int64_t samples = sizes.levels * sizes.points;
  const int64_t rows = sizes.batch * sizes.queries * sizes.heads;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, samples * channels));

  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(channels);
    const std::vector<scalar_t> zeros(channels, scalar_t(0));
    std::vector<const scalar_t*> corner_values(samples * 4);
    std::vector<acc_t> corner_weights(samples * 4);
    BilinearCorners<acc_t> corners;
    for (int64_t row = begin; row < end; ++row) {  // row = (n * Lq + q) * M + m
      const int64_t head = row % sizes.heads;
      const int64_t batch = row / (sizes.queries * sizes.heads);
      const loc_t* location = locations + row * samples * 2;
      const scalar_t* weight = weights + row * samples;
      // First the row's corners, each one's cache line requested as soon as its address is known;
      // then the sums, once most of those lines are on their way (the reads are scattered over
      // the value map, so waiting for them, not arithmetic, sets the pace).
      int64_t used = 0;
      for (int64_t l = 0; l < sizes.levels; ++l) {
        const int64_t height = levels.heights[l];
        const int64_t width = levels.widths[l];
        const scalar_t* level_value = value + ((batch * sizes.num_values + levels.starts[l]) * sizes.heads + head) * channels;
        for (int64_t p = 0; p < sizes.points; ++p, location += 2, ++weight) {
          if (!bilinear_corners<acc_t>(location[0], location[1], height, width, corners)) {
            continue;
          }
          const acc_t attention = *weight;
          for (int k = 0; k < 4; ++k) {
            const scalar_t* corner =
                corners.offset[k] >= 0 ? level_value + corners.offset[k] * pixel_stride : zeros.data();
            prefetch(corner);
            prefetch(corner + channels - 1);
            corner_values[used * 4 + k] = corner;
            corner_weights[used * 4 + k] = attention * corners.weight[k];
          }
          ++used;
        }
      }
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t i = 0; i < used; ++i) {
        accumulate_corners(acc.data(), &corner_values[i * 4], &corner_weights[i * 4], channels);
      }
      scalar_t* out = output + row * channels;
      for (int64_t c = 0; c < channels; ++c) {
        out[c] = static_cast<scalar_t>(acc[c]);
      }
    }
  });
}

template <typename scalar_t, typename loc_t>
void backward_kernel(
    const MsDeformAttnSizes& sizes, const LevelTable& levels, const scalar_t* grad_output, const scalar_t* value,
    const loc_t* locations, const scalar_t* weights, at::opmath_type<scalar_t>* grad_value,
    loc_t* grad_locations, scalar_t* grad_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = sizes.channels;
  const int64_t pixel_stride = sizes.heads * channels;
  const int64_t samples = sizes.levels * sizes.points;

  // Each thread owns a contiguous range of (batch, head) pairs and walks it query by query, so
  // that the heads of one pixel, adjacent in memory, are visited together.
  at::parallel_for(0, sizes.batch * sizes.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> grad(channels);
    const std::vector<scalar_t> zeros(channels, scalar_t(0));
    BilinearCorners<acc_t> corners;
    const scalar_t* corner_values[4];
    acc_t dot[4];
    for (int64_t batch = begin / sizes.heads; batch * sizes.heads < end; ++batch) {
      const int64_t first_head = std::max(begin - batch * sizes.heads, int64_t(0));
      const int64_t end_head = std::min(end - batch * sizes.heads, sizes.heads);
      for (int64_t query = 0; query < sizes.queries; ++query) {
        for (int64_t head = first_head; head < end_head; ++head) {
          const int64_t row = (batch * sizes.queries + query) * sizes.heads + head;
          const scalar_t* grad_row = grad_output + row * channels;
          for (int64_t c = 0; c < channels; ++c) {
            grad[c] = static_cast<acc_t>(grad_row[c]);
          }
          const loc_t* location = locations + row * samples * 2;
          const scalar_t* weight = weights + row * samples;
          loc_t* grad_location = grad_locations + row * samples * 2;
          scalar_t* grad_weight = grad_weights + row * samples;
          for (int64_t l = 0; l < sizes.levels; ++l) {
            const int64_t height = levels.heights[l];
            const int64_t width = levels.widths[l];
            const int64_t level_offset =
                ((batch * sizes.num_values + levels.starts[l]) * sizes.heads + head) * channels;
            const scalar_t* level_value = value + level_offset;
            acc_t* level_grad = grad_value + level_offset;
            for (int64_t p = 0; p < sizes.points; ++p, location += 2, grad_location += 2, ++weight, ++grad_weight) {
              if (!bilinear_corners<acc_t>(location[0], location[1], height, width, corners)) {
                grad_location[0] = grad_location[1] = loc_t(0);
                *grad_weight = scalar_t(0);
                continue;
              }
              for (int k = 0; k < 4; ++k) {
                corner_values[k] =
                    corners.offset[k] >= 0 ? level_value + corners.offset[k] * pixel_stride : zeros.data();
              }
              corner_dots(grad.data(), corner_values, dot, channels);
              const acc_t attention = *weight;
              acc_t sampled_dot = 0;
              for (int k = 0; k < 4; ++k) {
                sampled_dot += corners.weight[k] * dot[k];
                if (corners.offset[k] >= 0) {
                  axpy(level_grad + corners.offset[k] * pixel_stride, attention * corners.weight[k], grad.data(),
                       channels);
                }
              }
              acc_t grad_x, grad_y;
              bilinear_location_grad(corners, dot, height, width, grad_x, grad_y);
              grad_location[0] = static_cast<loc_t>(attention * grad_x);
              grad_location[1] = static_cast<loc_t>(attention * grad_y);
              *grad_weight = static_cast<scalar_t>(sampled_dot);
            }
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor ms_deform_attn_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  const auto problem =
      check_ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const auto in = contiguous_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  auto output = empty_output(problem.sizes, value);
  const bool float_locations = sampling_locations.scalar_type() != value.scalar_type();  // half values only
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu", [&] {
    if (float_locations) {
      forward_kernel<scalar_t, float>(
          problem.sizes, problem.levels, in.value.const_data_ptr<scalar_t>(),
          in.sampling_locations.const_data_ptr<float>(), in.attention_weights.const_data_ptr<scalar_t>(),
          output.mutable_data_ptr<scalar_t>());
    } else {
      forward_kernel<scalar_t, scalar_t>(
          problem.sizes, problem.levels, in.value.const_data_ptr<scalar_t>(),
          in.sampling_locations.const_data_ptr<scalar_t>(), in.attention_weights.const_data_ptr<scalar_t>(),
          output.mutable_data_ptr<scalar_t>());
    }
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  const auto problem = check_ms_deform_attn(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights, &grad_output);
  const auto grad_c = grad_output.contiguous();
  const auto in = contiguous_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  auto grad = empty_gradients(value, sampling_locations, attention_weights);
  const bool float_locations = sampling_locations.scalar_type() != value.scalar_type();  // half values only
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    if (float_locations) {
      backward_kernel<scalar_t, float>(
          problem.sizes, problem.levels, grad_c.const_data_ptr<scalar_t>(), in.value.const_data_ptr<scalar_t>(),
          in.sampling_locations.const_data_ptr<float>(), in.attention_weights.const_data_ptr<scalar_t>(),
          grad.value.mutable_data_ptr<at::opmath_type<scalar_t>>(),
          grad.sampling_locations.mutable_data_ptr<float>(), grad.attention_weights.mutable_data_ptr<scalar_t>());
    } else {
      backward_kernel<scalar_t, scalar_t>(
          problem.sizes, problem.levels, grad_c.const_data_ptr<scalar_t>(), in.value.const_data_ptr<scalar_t>(),
          in.sampling_locations.const_data_ptr<scalar_t>(), in.attention_weights.const_data_ptr<scalar_t>(),
          grad.value.mutable_data_ptr<at::opmath_type<scalar_t>>(),
          grad.sampling_locations.mutable_data_ptr<scalar_t>(), grad.attention_weights.mutable_data_ptr<scalar_t>());
    }
  });
  return {grad.value.to(value.scalar_type()), grad.sampling_locations, grad.attention_weights};
}

TORCH_LIBRARY_IMPL(dino_demo, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace dino_demo
