// CPU driver of rbf_matvec: out = K v with K[i, j] = exp(-gamma ||x_i - x_j||^2), the n x n kernel
// matrix never stored. Row tiles of K are shared out over the threads (at::parallel_for); each thread
// walks the column tiles: a BLAS tile of dot products (at::mm), kernel_tiles.h's exponent, a
// vectorised exp, and a BLAS multiply-add into its rows of `out`. Memory: one kRowTile x kColTile
// tile per thread. Reference: prism_kernels/reference/kernel_vendi.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

#include "../ops/ops.h"
#include "prism/kernel_tiles.h"

namespace prism {

namespace {
constexpr int64_t kRowTile = 128;  // rows of K per task
constexpr int64_t kColTile = 512;  // columns of K per tile: 128 x 512 float64 = 512 KiB, in L2
}  // namespace

at::Tensor rbf_matvec_cpu(const at::Tensor& x, const at::Tensor& v, double gamma) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kDouble, "rbf_matvec: x must be float64 [n, d], got ",
              x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(v.dim() == 2 && v.scalar_type() == at::kDouble && v.size(0) == x.size(0),
              "rbf_matvec: v must be float64 [n, m] with n = ", x.size(0), ", got ", v.scalar_type(), " ",
              v.sizes());
  TORCH_CHECK(gamma >= 0.0, "rbf_matvec: gamma must be >= 0");
  const int64_t n = x.size(0), m = v.size(1);
  at::Tensor xs = x.contiguous(), vs = v.contiguous();
  at::Tensor out = at::zeros({n, m}, vs.options());
  if (n == 0 || m == 0) return out;
  const at::Tensor sq = (xs * xs).sum(1).contiguous();  // [n]
  const double* sqp = sq.data_ptr<double>();
  const int64_t tiles = (n + kRowTile - 1) / kRowTile;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    at::Tensor g = at::empty({kRowTile, kColTile}, xs.options());
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t * kRowTile, ti = std::min(kRowTile, n - i0);
      const at::Tensor xi = xs.narrow(0, i0, ti);
      at::Tensor oi = out.narrow(0, i0, ti);
      for (int64_t j0 = 0; j0 < n; j0 += kColTile) {
        const int64_t tj = std::min(kColTile, n - j0);
        at::Tensor gt = g.narrow(0, 0, ti).narrow(1, 0, tj);  // [ti, tj], row stride kColTile
        at::mm_out(gt, xi, xs.narrow(0, j0, tj).t());
        kernel::rbf_exponent_tile(gt.data_ptr<double>(), kColTile, ti, tj, sqp + i0, sqp + j0, gamma);
        gt.exp_();
        at::addmm_out(oi, oi, gt, vs.narrow(0, j0, tj));
      }
    }
  });
  return out;
}

}  // namespace prism
