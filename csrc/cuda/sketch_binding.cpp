// Torch glue of the CUDA sketch kernels: argument checks, the output and the stream. The kernels
// are torch-free (sketch_kernels.h / sketch_kernels.cu); semantics: prism_kernels/reference/sketch.py.
#ifdef PRISM_WITH_CUDA

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <limits>
#include <string_view>

#include "../ops/ops.h"
#include "prism/sketch.h"
#include "sketch_kernels.h"

namespace prism {

at::Tensor sketch_cuda(const at::Tensor& rows, int64_t k, c10::string_view kind_name, int64_t seed, int64_t block,
                       int64_t offset, int64_t s, double scale) {
  TORCH_CHECK(rows.is_cuda(), "sketch: rows must be a CUDA tensor, got ", rows.device());
  TORCH_CHECK(rows.dim() == 2, "sketch: rows must be [B, P], got ", rows.sizes());
  TORCH_CHECK(rows.is_contiguous(), "sketch: rows must be contiguous");
  TORCH_CHECK(k >= 1 && k <= std::numeric_limits<int32_t>::max(), "sketch: k must be in [1, 2^31), got ", k);
  TORCH_CHECK(block >= 0 && block <= std::numeric_limits<uint32_t>::max(), "sketch: block must be in [0, 2^32)");
  TORCH_CHECK(offset >= 0 && offset <= std::numeric_limits<int64_t>::max() - rows.size(1),
              "sketch: offset must be >= 0 and offset + P < 2^63");
  const std::string_view kind(kind_name.data(), kind_name.size());
  gpu::SketchArgs args{};
  if (kind == "rademacher") {
    args.kind = static_cast<int32_t>(sketch::Kind::kRademacher);
  } else if (kind == "gaussian") {
    args.kind = static_cast<int32_t>(sketch::Kind::kGaussian);
  } else if (kind == "sparse") {
    args.kind = static_cast<int32_t>(sketch::Kind::kSparse);
    TORCH_CHECK(s >= 1 && s <= 1024, "sketch: s must be in [1, 1024], got ", s);
  } else {
    TORCH_CHECK(false, "sketch: kind must be 'rademacher', 'gaussian' or 'sparse', got '", kind, "'");
  }
  switch (rows.scalar_type()) {
    case at::kFloat: args.row_type = gpu::RowType::kFloat32; break;
    case at::kHalf: args.row_type = gpu::RowType::kFloat16; break;
    case at::kBFloat16: args.row_type = gpu::RowType::kBFloat16; break;
    default: TORCH_CHECK(false, "sketch: rows must be float32, bfloat16 or float16, got ", rows.scalar_type());
  }
  const c10::cuda::CUDAGuard guard(rows.device());
  at::Tensor out = at::zeros({rows.size(0), k}, rows.options().dtype(at::kFloat));
  args.rows = rows.const_data_ptr();
  args.batch = rows.size(0);
  args.width = rows.size(1);
  args.k = k;
  args.s = static_cast<int32_t>(s);
  args.seed = static_cast<uint64_t>(seed);
  args.block = static_cast<uint32_t>(block);
  args.offset = static_cast<uint64_t>(offset);
  args.scale = static_cast<float>(scale);
  C10_CUDA_CHECK(gpu::launch_sketch(args, out.data_ptr<float>(), c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace prism

#endif  // PRISM_WITH_CUDA
