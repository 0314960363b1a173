// CUDA kernels of multi-scale deformable attention (float32, float64, float16, bfloat16; all
// arithmetic in float32, or float64 for float64 inputs; half-precision values may come with float32
// sampling locations).
//
// Forward: one thread per output element (batch, query, head, channel); consecutive threads read
// consecutive channels of the same pixel, so value reads are coalesced for any D.
// Backward: one warp per (batch, query, head). Lanes stride over the channels, scatter into
// grad_value with atomics (into a float32/float64 buffer, also for half inputs), and reduce their
// partial dot products with warp shuffles to get the location and attention-weight gradients,
// which lane 0 writes. This works for any D, powers of two or not.
#include "ms_deform_attn.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

namespace dino_demo {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

// Enough blocks to fill the current device; kernels loop over the rest.
int64_t grid_size(int64_t work_items) {
  int multiprocessors = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  const int64_t blocks = (work_items + kThreads - 1) / kThreads;
  return std::max<int64_t>(1, std::min(blocks, int64_t(multiprocessors) * 32));
}

// loc_t: the locations' type, scalar_t or float32 for half-precision values (mixed precision).
template <typename scalar_t, typename loc_t>
__global__ void forward_kernel(
    MsDeformAttnSizes sizes, const scalar_t* __restrict__ value, const int64_t* __restrict__ spatial_shapes,
    const int64_t* __restrict__ level_start_index, const loc_t* __restrict__ locations,
    const scalar_t* __restrict__ weights, scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = sizes.channels;
  const int64_t pixel_stride = sizes.heads * channels;
  const int64_t samples = sizes.levels * sizes.points;
  const int64_t total = sizes.batch * sizes.queries * sizes.heads * channels;
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(gridDim.x) * blockDim.x) {
    const int64_t channel = index % channels;
    const int64_t row = index / channels;  // (n * Lq + q) * M + m
    const int64_t head = row % sizes.heads;
    const int64_t batch = row / (sizes.queries * sizes.heads);
    const loc_t* location = locations + row * samples * 2;
    const scalar_t* weight = weights + row * samples;
    acc_t acc = 0;
    BilinearCorners<acc_t> corners;
    for (int64_t l = 0; l < sizes.levels; ++l) {
      const int64_t height = spatial_shapes[2 * l];
      const int64_t width = spatial_shapes[2 * l + 1];
      const scalar_t* level_value =
          value + ((batch * sizes.num_values + level_start_index[l]) * sizes.heads + head) * channels + channel;
      for (int64_t p = 0; p < sizes.points; ++p, location += 2, ++weight) {
        if (!bilinear_corners<acc_t>(static_cast<acc_t>(location[0]), static_cast<acc_t>(location[1]), height, width,
                                     corners)) {
          continue;
        }
        acc_t sample = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (corners.offset[k] >= 0) {
            sample += corners.weight[k] * static_cast<acc_t>(level_value[corners.offset[k] * pixel_stride]);
          }
        }
        acc += static_cast<acc_t>(*weight) * sample;
      }
    }
    output[index] = static_cast<scalar_t>(acc);
  }
}

template <typename acc_t>
__device__ inline acc_t warp_sum(acc_t x) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    x += __shfl_xor_sync(0xffffffffu, x, offset);
  }
  return x;
}

template <typename scalar_t, typename loc_t>
__global__ void backward_kernel(
    MsDeformAttnSizes sizes, const scalar_t* __restrict__ grad_output, const scalar_t* __restrict__ value,
    const int64_t* __restrict__ spatial_shapes, const int64_t* __restrict__ level_start_index,
    const loc_t* __restrict__ locations, const scalar_t* __restrict__ weights,
    at::opmath_type<scalar_t>* __restrict__ grad_value, loc_t* __restrict__ grad_locations,
    scalar_t* __restrict__ grad_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = sizes.channels;
  const int64_t pixel_stride = sizes.heads * channels;
  const int64_t samples = sizes.levels * sizes.points;
  const int64_t rows = sizes.batch * sizes.queries * sizes.heads;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  // The row loop is uniform across a warp, so every lane reaches every shuffle.
  for (int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp; row < rows; row += warps) {
    const int64_t head = row % sizes.heads;
    const int64_t batch = row / (sizes.queries * sizes.heads);
    const scalar_t* grad_row = grad_output + row * channels;
    const loc_t* location = locations + row * samples * 2;
    const scalar_t* weight = weights + row * samples;
    loc_t* grad_location = grad_locations + row * samples * 2;
    scalar_t* grad_weight = grad_weights + row * samples;
    BilinearCorners<acc_t> corners;
    for (int64_t l = 0; l < sizes.levels; ++l) {
      const int64_t height = spatial_shapes[2 * l];
      const int64_t width = spatial_shapes[2 * l + 1];
      const int64_t level_offset = ((batch * sizes.num_values + level_start_index[l]) * sizes.heads + head) * channels;
      for (int64_t p = 0; p < sizes.points; ++p, location += 2, grad_location += 2, ++weight, ++grad_weight) {
        if (!bilinear_corners<acc_t>(static_cast<acc_t>(location[0]), static_cast<acc_t>(location[1]), height, width,
                                     corners)) {
          if (lane == 0) {
            grad_location[0] = grad_location[1] = loc_t(0);
            *grad_weight = scalar_t(0);
          }
          continue;
        }
        const acc_t attention = static_cast<acc_t>(*weight);
        acc_t dot[4] = {0, 0, 0, 0};
        for (int64_t channel = lane; channel < channels; channel += kWarp) {
          const acc_t grad = static_cast<acc_t>(grad_row[channel]);
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (corners.offset[k] >= 0) {
              const int64_t element = level_offset + corners.offset[k] * pixel_stride + channel;
              dot[k] += grad * static_cast<acc_t>(value[element]);
              atomicAdd(grad_value + element, attention * corners.weight[k] * grad);
            }
          }
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          dot[k] = warp_sum(dot[k]);
        }
        if (lane == 0) {
          acc_t grad_x, grad_y;
          bilinear_location_grad(corners, dot, height, width, grad_x, grad_y);
          grad_location[0] = static_cast<loc_t>(attention * grad_x);
          grad_location[1] = static_cast<loc_t>(attention * grad_y);
          *grad_weight = static_cast<scalar_t>(
              corners.weight[0] * dot[0] + corners.weight[1] * dot[1] + corners.weight[2] * dot[2] +
              corners.weight[3] * dot[3]);
        }
      }
    }
  }
}

}  // namespace

at::Tensor ms_deform_attn_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  const auto sizes =
      check_ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights).sizes;
  const c10::cuda::CUDAGuard guard(value.device());
  const auto in = contiguous_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  auto output = empty_output(sizes, value);
  const int64_t total = output.numel();
  if (total == 0) {
    return output;
  }
  const bool float_locations = sampling_locations.scalar_type() != value.scalar_type();  // half values only
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda", [&] {
    const auto stream = c10::cuda::getCurrentCUDAStream();
    if (float_locations) {
      forward_kernel<scalar_t, float><<<grid_size(total), kThreads, 0, stream>>>(
          sizes, in.value.const_data_ptr<scalar_t>(), in.spatial_shapes.const_data_ptr<int64_t>(),
          in.level_start_index.const_data_ptr<int64_t>(), in.sampling_locations.const_data_ptr<float>(),
          in.attention_weights.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>());
    } else {
      forward_kernel<scalar_t, scalar_t><<<grid_size(total), kThreads, 0, stream>>>(
          sizes, in.value.const_data_ptr<scalar_t>(), in.spatial_shapes.const_data_ptr<int64_t>(),
          in.level_start_index.const_data_ptr<int64_t>(), in.sampling_locations.const_data_ptr<scalar_t>(),
          in.attention_weights.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  const auto sizes = check_ms_deform_attn(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights, &grad_output).sizes;
  const c10::cuda::CUDAGuard guard(value.device());
  const auto grad_c = grad_output.contiguous();
  const auto in = contiguous_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  auto grad = empty_gradients(value, sampling_locations, attention_weights);
  const int64_t rows = sizes.batch * sizes.queries * sizes.heads;
  if (rows > 0 && sizes.levels * sizes.points > 0) {
    const bool float_locations = sampling_locations.scalar_type() != value.scalar_type();  // half values only
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      const auto stream = c10::cuda::getCurrentCUDAStream();
      if (float_locations) {
        backward_kernel<scalar_t, float><<<grid_size(rows * kWarp), kThreads, 0, stream>>>(
            sizes, grad_c.const_data_ptr<scalar_t>(), in.value.const_data_ptr<scalar_t>(),
            in.spatial_shapes.const_data_ptr<int64_t>(), in.level_start_index.const_data_ptr<int64_t>(),
            in.sampling_locations.const_data_ptr<float>(), in.attention_weights.const_data_ptr<scalar_t>(),
            grad.value.mutable_data_ptr<at::opmath_type<scalar_t>>(),
            grad.sampling_locations.mutable_data_ptr<float>(), grad.attention_weights.mutable_data_ptr<scalar_t>());
      } else {
        backward_kernel<scalar_t, scalar_t><<<grid_size(rows * kWarp), kThreads, 0, stream>>>(
            sizes, grad_c.const_data_ptr<scalar_t>(), in.value.const_data_ptr<scalar_t>(),
            in.spatial_shapes.const_data_ptr<int64_t>(), in.level_start_index.const_data_ptr<int64_t>(),
            in.sampling_locations.const_data_ptr<scalar_t>(), in.attention_weights.const_data_ptr<scalar_t>(),
            grad.value.mutable_data_ptr<at::opmath_type<scalar_t>>(),
            grad.sampling_locations.mutable_data_ptr<scalar_t>(), grad.attention_weights.mutable_data_ptr<scalar_t>());
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad.value.to(value.scalar_type()), grad.sampling_locations, grad.attention_weights};
}

TORCH_LIBRARY_IMPL(dino_demo, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace dino_demo
