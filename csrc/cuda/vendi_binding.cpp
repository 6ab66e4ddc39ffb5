// Torch glue of the CUDA Vendi kernels (vendi_kernels.h / .cu): checks, scratch, the stream and
// the one host synchronisation that decides whether the block is valid before `gram` is touched.
#ifdef PRISM_WITH_CUDA

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <limits>
#include <optional>

#include "../ops/ops.h"
#include "vendi_kernels.h"

namespace prism {

at::Tensor gram_accumulate_cuda(at::Tensor& gram, const at::Tensor& x, const std::optional<at::Tensor>& weights,
                                bool normalize, bool exact) {
  TORCH_CHECK(x.is_cuda(), "gram_accumulate: x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 2, "gram_accumulate: x must be [n, d], got ", x.sizes());
  const int64_t n = x.size(0), d = x.size(1);
  TORCH_CHECK(gram.device() == x.device() && gram.dim() == 2 && gram.size(0) == d && gram.size(1) == d &&
                  gram.scalar_type() == at::kDouble && gram.is_contiguous(),
              "gram_accumulate: gram must be a contiguous float64 [d, d] tensor on x's device, d = ", d);
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "gram_accumulate: x must be float16, bfloat16, float32 or float64, got ", dtype);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor status = at::empty({2}, x.options().dtype(at::kLong).device(at::kCPU));
  status[0] = -1;
  status[1] = 0;
  if (n == 0 || d == 0) return status.to(x.device());
  // Half precisions widen to float32 exactly; columns must be unit-stride.
  at::Tensor xs = dtype == at::kDouble ? x : x.to(at::kFloat);
  if (xs.stride(1) != 1 || xs.stride(0) < d) xs = xs.contiguous();
  at::Tensor w;
  const double* wp = nullptr;
  if (weights.has_value()) {
    w = weights->to(x.device(), at::kDouble).contiguous();
    TORCH_CHECK(w.dim() == 1 && w.size(0) == n, "gram_accumulate: weights must be [n] with n = ", n);
    // a negative or NaN weight would turn its row's square root into NaN entries of the Gram
    TORCH_CHECK(n == 0 || (at::isfinite(w) & w.ge(0)).all().item<bool>(),
                "gram_accumulate: weights must be finite and >= 0");
    wp = w.data_ptr<double>();
  }
  at::Tensor scale = at::empty({n}, x.options().dtype(at::kDouble));
  at::Tensor row_status = at::empty({n}, x.options().dtype(at::kInt));
  at::Tensor first_bad = at::full({1}, -1, x.options().dtype(at::kLong));  // all bits set = UINT64_MAX
  auto* bad_ptr = reinterpret_cast<unsigned long long*>(first_bad.data_ptr<int64_t>());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (xs.scalar_type() == at::kDouble) {
    const gpu::RowBlock<double> rows{xs.data_ptr<double>(), n, d, xs.stride(0)};
    C10_CUDA_CHECK(gpu::launch_vendi_row_scale(rows, wp, normalize, scale.data_ptr<double>(),
                                               row_status.data_ptr<int32_t>(), bad_ptr, stream));
  } else {
    const gpu::RowBlock<float> rows{xs.data_ptr<float>(), n, d, xs.stride(0)};
    C10_CUDA_CHECK(gpu::launch_vendi_row_scale(rows, wp, normalize, scale.data_ptr<double>(),
                                               row_status.data_ptr<int32_t>(), bad_ptr, stream));
  }
  const int64_t bad = first_bad.item<int64_t>();  // synchronises; -1 = none
  if (bad >= 0) {
    status[0] = bad;
    status[1] = static_cast<int64_t>(row_status[bad].item<int32_t>());
    return status.to(x.device());
  }
  if (xs.scalar_type() == at::kDouble) {
    const gpu::RowBlock<double> rows{xs.data_ptr<double>(), n, d, xs.stride(0)};
    C10_CUDA_CHECK(gpu::launch_vendi_gram(rows, scale.data_ptr<double>(), exact, gram.data_ptr<double>(), stream));
  } else {
    const gpu::RowBlock<float> rows{xs.data_ptr<float>(), n, d, xs.stride(0)};
    C10_CUDA_CHECK(gpu::launch_vendi_gram(rows, scale.data_ptr<double>(), exact, gram.data_ptr<double>(), stream));
  }
  return status.to(x.device());
}

}  // namespace prism

#endif  // PRISM_WITH_CUDA
