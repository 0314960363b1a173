// Schema of the dino_demo ops. Kernels are registered per device in ms_deform_attn_cpu.cpp and
// ms_deform_attn_cuda.cu; the fake kernels and autograd live in dino_demo/ops/registration.py.
#include <torch/library.h>

TORCH_LIBRARY(dino_demo, m) {
  m.set_python_module("dino_demo.ops.registration");
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor grad_value, Tensor grad_sampling_locations, Tensor grad_attention_weights)");
}
