// CPU drivers of the Vendi ops.
//
// gram_accumulate: rows are prepared (scaled, checked, and for the float32 path centred) a chunk
// at a time with at::parallel_for, then the lower-triangle output tiles are shared out over the
// threads. Two ways to multiply a tile:
//   * AVX-512 (gram_avx512.cpp, where the CPU has it): own register-blocked kernels read the
//     prepared rows in a tile-major layout, sum float32 products over one 128-row sub-block in
//     registers and add them straight into the float64 accumulator tile (accumulate_avx512);
//   * BLAS (at::mm / at::addmm, MKL underneath) everywhere else (accumulate_impl):
//       fast:  float32 products of kFastRows-row centred sub-blocks (vendi.h center_block), each added
//              into a float64 accumulator tile (add_f32_tile, AVX-512 / AVX2 / scalar chosen at run
//              time) that stays in L2 across the chunk's sub-blocks;
//       exact: float64 rows, float64 products accumulated straight into the float64 accumulator.
// In "fast", the mean terms of all the chunk's centred sub-blocks follow as one float64 product per
// output tile (mean_term_factors, the same in both ways).
// The accumulator is a private float64 buffer: `gram` only receives it once the whole block is
// known to be valid, so a bad row leaves `gram` unchanged.
//
// grouped_gram: one group per task, vendi.h small_gram, one AVX-512 tile product, or one BLAS product
// (by size and CPU) on float64 rows;
// grouped_frobenius_sq: the same Grams, reduced to ||Gram_g||_F^2 at once (grouped_vendi at q = 2,
// no padded [G, k, k] output and no eigendecomposition).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "../ops/ops.h"
#include "gram_tiles.h"
#include "prism/vendi.h"

namespace prism {

namespace {

// Output tile edge: a float32 tile product (256 KiB) and its float64 accumulator tile stay in L2.
constexpr int64_t kTile = 256;
// Rows per float32 sub-block. The float32 sum of r products of centred rows has a rounding error
// of about sqrt(r) * 2^-24 relative to the centred part for random signs, growing to ~r * 2^-24 / 2
// when the centred products are all equal (alternating two-cluster rows). Measured worst case of
// the whole Gram, Frobenius-relative: 1.35e-6 at r = 256, 6.8e-7 at r = 128, hence 128
// (tests/test_vendi.py::test_fast_error_bound checks the 1e-6 bound).
constexpr int64_t kFastRows = 128;
// Rows per float64 sub-block: float64 errors (2^-53) are far below the 1e-12 bound at any size.
constexpr int64_t kExactRows = 512;
// Groups with at least this many multiply-adds (n_g * d * min(n_g, d)) use BLAS for their Gram.
constexpr int64_t kBlasGroupWork = 1 << 14;
// Rows prepared at once: a multiple of both sub-block sizes.
constexpr int64_t kChunkRows = 4096;

struct TileItem {
  int64_t i0, ti, j0, tj;  // output rows [i0, i0 + ti), columns [j0, j0 + tj), j0 <= i0
};

// Lower-triangle output tiles; a diagonal tile is cut in two (its top-left quarter, then its bottom
// half), so it multiplies 3/4 of a full tile instead of all of it.
std::vector<TileItem> lower_tiles(int64_t d) {
  std::vector<TileItem> items;
  constexpr int64_t half = kTile / 2;
  for (int64_t i0 = 0; i0 < d; i0 += kTile) {
    for (int64_t j0 = 0; j0 < i0; j0 += kTile) items.push_back({i0, std::min(kTile, d - i0), j0, kTile});
    const int64_t t = std::min(kTile, d - i0);
    if (t > half) {
      items.push_back({i0, half, i0, half});
      items.push_back({i0 + half, t - half, i0, t});
    } else {
      items.push_back({i0, t, i0, t});
    }
  }
  return items;
}

// Fetches `bytes` bytes at p into L1: the next row of a loop whose rows the hardware prefetcher
// cannot see coming (a new page every row, or gathered rows).
inline void prefetch_row(const void* p, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(static_cast<const char*>(p) + b, 0, 3);
}

struct BadRow {
  int64_t row = std::numeric_limits<int64_t>::max();
  int32_t status = vendi::kOk;
};

// Scales rows [r0, r1) of x into buf rows [0, r1 - r0) (type Y, row stride ld); returns the first
// bad row, if any.
template <typename T, typename Y>
[[gnu::always_inline]] inline BadRow scale_rows(const T* x, int64_t row_stride, int64_t d, int64_t ld, const double* weights, bool normalize,
                  int64_t r0, int64_t r1, Y* buf) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = x + r * row_stride;
    double s = 1.0;
    const int32_t st = vendi::row_scale<T>(row, d, weights ? weights[r] : 1.0, normalize, &s);
    if (st != vendi::kOk) return BadRow{r, st};
    Y* out = buf + (r - r0) * ld;
    for (int64_t k = 0; k < d; ++k) out[k] = static_cast<Y>(s * static_cast<double>(row[k]));
  }
  return BadRow{};
}

// scale_rows + center_block for float32 input, compiled like add_f32_tile_dispatch below.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
BadRow prepare_fast_f32(const float* x, int64_t row_stride, int64_t d, int64_t ld, const double* weights,
                        bool normalize, int64_t r0, int64_t r1, float* block, double* sum, float* mean) {
  const BadRow b = scale_rows<float, float>(x, row_stride, d, ld, weights, normalize, r0, r1, block);
  if (b.status == vendi::kOk) vendi::center_block(block, r1 - r0, d, ld, sum, mean);
  return b;
}

// vendi.h add_f32_tile compiled for AVX-512 / AVX2 / baseline x86-64, chosen at load time (ifunc):
// no -march flag, and the scalar (SSE2) path stays beside the vector ones.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void add_f32_tile_dispatch(double* acc, int64_t ld_acc, const float* prod, int64_t ld_prod, int64_t ti, int64_t tj) {
  vendi::add_f32_tile(acc, ld_acc, prod, ld_prod, ti, tj);
}

// Row stride of the prepared float32 / float64 rows: d rounded up to 16 values, plus 16 when that is
// a multiple of 1024 bytes, so that the BLAS packing of a transposed sub-block (which walks down
// columns) does not hit the same cache sets on every row (4 KiB aliasing at d = 1024).
// Mean terms of a chunk's centred float32 sub-blocks (vendi.h center_block). Sub-block s has r_s
// rows x = c + m_s (c: the centred rows it multiplies in float32), float64 column sums S_s and
// float32 means m_s, so its Gram is c c^T plus
//     sum_rows x x^T - c c^T  =  m_s S_s^T + (S_s - r_s m_s) m_s^T,
// and over the chunk's subs this is P^T Q with P = [M; S - r M] and Q = [S; M] ([2 subs, d] float64
// each, row-major with row stride d). Both drivers add it to every output tile with one float64
// product. Sub-blocks have sub_rows rows except the last (chunk_rows in all).
void mean_term_factors(const double* sums, const float* means, int64_t subs, int64_t d, int64_t sub_rows,
                       int64_t chunk_rows, double* p, double* q) {
  for (int64_t s = 0; s < subs; ++s) {
    const double r = static_cast<double>(std::min(sub_rows, chunk_rows - s * sub_rows));
    for (int64_t k = 0; k < d; ++k) {
      const double m = means[s * d + k], sk = sums[s * d + k];
      p[s * d + k] = m;
      p[(subs + s) * d + k] = sk - r * m;
      q[s * d + k] = sk;
      q[(subs + s) * d + k] = m;
    }
  }
}

int64_t padded_ld(int64_t d, int64_t elem_size) {
  int64_t ld = (d + 15) / 16 * 16;
  if ((ld * elem_size) % 1024 == 0) ld += 16;
  return ld;
}

template <typename T>
BadRow accumulate_impl(const at::Tensor& x, const double* weights, bool normalize, bool exact,
                       at::Tensor& acc) {
  const int64_t n = x.size(0), d = x.size(1), row_stride = x.stride(0);
  const T* xp = x.data_ptr<T>();
  const std::vector<TileItem> items = lower_tiles(d);
  const int64_t sub_rows = exact ? kExactRows : kFastRows;
  const auto buf_type = exact ? at::kDouble : at::kFloat;
  const int64_t ld = padded_ld(d, exact ? 8 : 4);
  at::Tensor buf_storage = at::empty({std::min(kChunkRows, n), ld}, x.options().dtype(buf_type));
  at::Tensor buf = buf_storage.narrow(1, 0, d);  // [rows, d], row stride ld
  const int64_t max_subs = (std::min(kChunkRows, n) + sub_rows - 1) / sub_rows;
  at::Tensor sums = at::empty({max_subs, d}, x.options().dtype(at::kDouble));
  at::Tensor means = at::empty({max_subs, d}, x.options().dtype(at::kFloat));
  at::Tensor pq = at::empty({2, 2 * max_subs, d}, x.options().dtype(at::kDouble));  // mean_term_factors
  double* accp = acc.data_ptr<double>();

  for (int64_t c0 = 0; c0 < n; c0 += kChunkRows) {
    const int64_t c1 = std::min(n, c0 + kChunkRows);
    const int64_t subs = (c1 - c0 + sub_rows - 1) / sub_rows;
    std::vector<BadRow> bad(subs);
    at::parallel_for(0, subs, 1, [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t r0 = c0 + s * sub_rows, r1 = std::min(c1, r0 + sub_rows);
        if (exact) {
          bad[s] = scale_rows<T, double>(xp, row_stride, d, ld, weights, normalize, r0, r1,
                                         buf_storage.data_ptr<double>() + (r0 - c0) * ld);
        } else {
          float* block = buf_storage.data_ptr<float>() + (r0 - c0) * ld;
          double* sum = sums.data_ptr<double>() + s * d;
          float* mean = means.data_ptr<float>() + s * d;
          if constexpr (std::is_same_v<T, float>) {
            bad[s] = prepare_fast_f32(xp, row_stride, d, ld, weights, normalize, r0, r1, block, sum, mean);
          } else {
            bad[s] = scale_rows<T, float>(xp, row_stride, d, ld, weights, normalize, r0, r1, block);
            if (bad[s].status == vendi::kOk) vendi::center_block(block, r1 - r0, d, ld, sum, mean);
          }
        }
      }
    });
    for (const BadRow& b : bad)
      if (b.status != vendi::kOk) return b;  // sub-blocks are in row order: the first is the first bad row

    // Mean terms of the chunk's sub-blocks (fast path): P^T Q, see mean_term_factors.
    at::Tensor P, Q;
    if (!exact) {
      P = pq[0].narrow(0, 0, 2 * subs);
      Q = pq[1].narrow(0, 0, 2 * subs);
      mean_term_factors(sums.data_ptr<double>(), means.data_ptr<float>(), subs, d, sub_rows, c1 - c0,
                        P.data_ptr<double>(), Q.data_ptr<double>());
    }

    at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const TileItem& it = items[t];
        at::Tensor prod;
        if (!exact) prod = at::empty({it.ti, it.tj}, x.options().dtype(at::kFloat));
        at::Tensor acc_tile = acc.narrow(0, it.i0, it.ti).narrow(1, it.j0, it.tj);
        for (int64_t s = 0; s < subs; ++s) {
          const int64_t r0 = s * sub_rows, rows = std::min(c1 - c0 - r0, sub_rows);
          at::Tensor block = buf.narrow(0, r0, rows);
          at::Tensor a = block.narrow(1, it.i0, it.ti).t();  // [ti, rows]
          at::Tensor b = block.narrow(1, it.j0, it.tj);      // [rows, tj]
          if (exact) {
            at::addmm_out(acc_tile, acc_tile, a, b);
          } else {
            at::mm_out(prod, a, b);
            add_f32_tile_dispatch(accp + it.i0 * d + it.j0, d, prod.data_ptr<float>(), it.tj, it.ti, it.tj);
          }
        }
        if (!exact) at::addmm_out(acc_tile, acc_tile, P.narrow(1, it.i0, it.ti).t(), Q.narrow(1, it.j0, it.tj));
      }
    });
  }
  return BadRow{};
}

// ---- AVX-512 path (cpu::gram_avx512_enabled): own register-blocked tile products, no BLAS ----
//
// A chunk's prepared rows are stored tile-major: sub-block s, column tile t is one contiguous
// [kSubRows, panel_ld] block, so a tile's operands are two compact blocks that the prefetcher (and
// gram_tile's explicit prefetch of the next ones) can stream from L3, and panel_ld puts successive
// rows in different cache sets. Every thread owns a list of output tiles (balanced by their cost)
// and walks all sub-blocks of the chunk for each, so its float64 accumulator tile stays in L2.
constexpr int64_t kSubRows = kFastRows;  // float32 products summed over at most 128 rows (see above)

template <typename Y>
constexpr int64_t panel_ld() {
  return kTile + 64 / sizeof(Y);  // one cache line of padding: 17 / 33 lines per row
}

// Output tiles of the lower triangle, shared out over `threads` lists by longest-processing-time
// first (a diagonal tile costs about half of a full one).
std::vector<std::vector<TileItem>> balanced_tiles(int64_t d, int64_t threads) {
  std::vector<std::pair<double, TileItem>> items;
  for (int64_t i0 = 0; i0 < d; i0 += kTile)
    for (int64_t j0 = 0; j0 <= i0; j0 += kTile) {
      const int64_t ti = std::min(kTile, d - i0), tj = std::min(kTile, d - j0);
      items.push_back({j0 == i0 ? 0.5 * ti * (tj + 64) : double(ti) * tj, TileItem{i0, ti, j0, tj}});
    }
  std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::vector<TileItem>> lists(std::max<int64_t>(1, std::min<int64_t>(threads, items.size())));
  std::vector<double> load(lists.size(), 0.0);
  for (const auto& [cost, item] : items) {
    const size_t k = std::min_element(load.begin(), load.end()) - load.begin();
    lists[k].push_back(item);
    load[k] += cost;
  }
  return lists;
}

// Rows [r0, r1) scaled into the tile-major sub-block `block` (nt column tiles of [kSubRows, ld]),
// then, for the float32 path, centred per column (vendi.h center_block). Returns the first bad row.
template <typename T, typename Y>
[[gnu::always_inline]] inline BadRow prepare_tiled_impl(const T* x, int64_t row_stride, int64_t d, const double* weights,
                                                        bool normalize, int64_t r0, int64_t r1, Y* block, double* sum,
                                                        float* mean) {
  constexpr int64_t ld = panel_ld<Y>();
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = x + r * row_stride;
    // the hardware prefetcher stops at page ends, i.e. at every row for d = 1024 float32: fetch the
    // next row while this one is scaled
    if (r + 1 < r1) prefetch_row(row + row_stride, d * static_cast<int64_t>(sizeof(T)));
    double s = 1.0;
    const int32_t st = vendi::row_scale<T>(row, d, weights ? weights[r] : 1.0, normalize, &s);
    if (st != vendi::kOk) return BadRow{r, st};
    for (int64_t c0 = 0, t = 0; c0 < d; c0 += kTile, ++t) {
      Y* out = block + (t * kSubRows + (r - r0)) * ld;
      const T* src = row + c0;
      const int64_t w = std::min(kTile, d - c0);
      for (int64_t k = 0; k < w; ++k) out[k] = static_cast<Y>(s * static_cast<double>(src[k]));
    }
  }
  if constexpr (std::is_same_v<Y, float>)
    for (int64_t c0 = 0, t = 0; c0 < d; c0 += kTile, ++t)
      vendi::center_block(block + t * kSubRows * ld, r1 - r0, std::min(kTile, d - c0), ld, sum + c0, mean + c0);
  return BadRow{};
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PRISM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PRISM_CLONES
#endif

template <typename T, typename Y>
PRISM_CLONES BadRow prepare_tiled(const T* x, int64_t row_stride, int64_t d, const double* weights, bool normalize,
                                  int64_t r0, int64_t r1, Y* block, double* sum, float* mean) {
  return prepare_tiled_impl<T, Y>(x, row_stride, d, weights, normalize, r0, r1, block, sum, mean);
}

template <typename T, typename Y>
BadRow accumulate_avx512(const at::Tensor& x, const double* weights, bool normalize, double* accp, int64_t lda) {
  constexpr bool fast = std::is_same_v<Y, float>;
  constexpr int64_t ld = panel_ld<Y>();
  const int64_t n = x.size(0), d = x.size(1), row_stride = x.stride(0);
  const int64_t nt = (d + kTile - 1) / kTile;
  const T* xp = x.data_ptr<T>();
  const int64_t chunk = std::min(kChunkRows, n), max_subs = (chunk + kSubRows - 1) / kSubRows;
  const int64_t sub_elems = nt * kSubRows * ld;  // one sub-block, all its column tiles
  at::Tensor buf = at::empty({max_subs * sub_elems}, x.options().dtype(fast ? at::kFloat : at::kDouble));
  Y* bufp = static_cast<Y*>(buf.data_ptr());
  // fast path: per-sub-block column sums and means; the mean terms of a chunk are P^T Q
  // (mean_term_factors).
  at::Tensor sums = at::empty({max_subs, d}, x.options().dtype(at::kDouble));
  at::Tensor means = at::empty({max_subs, d}, x.options().dtype(at::kFloat));
  at::Tensor pq = at::empty({2, 2 * max_subs, d}, x.options().dtype(at::kDouble));
  const auto lists = balanced_tiles(d, at::get_num_threads());
  const auto block_of = [&](int64_t s, int64_t col0) { return bufp + s * sub_elems + (col0 / kTile) * kSubRows * ld; };

  for (int64_t c0 = 0; c0 < n; c0 += kChunkRows) {
    const int64_t c1 = std::min(n, c0 + kChunkRows);
    const int64_t subs = (c1 - c0 + kSubRows - 1) / kSubRows;
    const auto rows_of = [&](int64_t s) { return std::min(kSubRows, c1 - c0 - s * kSubRows); };
    std::vector<BadRow> bad(subs);
    at::parallel_for(0, subs, 1, [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t r0 = c0 + s * kSubRows;
        bad[s] = prepare_tiled<T, Y>(xp, row_stride, d, weights, normalize, r0, r0 + rows_of(s), bufp + s * sub_elems,
                                     sums.data_ptr<double>() + s * d, means.data_ptr<float>() + s * d);
      }
    });
    for (const BadRow& b : bad)
      if (b.status != vendi::kOk) return b;  // sub-blocks are in row order: the first is the first bad row

    // Mean terms of the chunk's sub-blocks: P^T Q, see mean_term_factors.
    double* P = pq.data_ptr<double>();
    double* Q = P + 2 * max_subs * d;
    if constexpr (fast)
      mean_term_factors(sums.data_ptr<double>(), means.data_ptr<float>(), subs, d, kSubRows, c1 - c0, P, Q);

    at::parallel_for(0, static_cast<int64_t>(lists.size()), 1, [&](int64_t l0, int64_t l1) {
      for (int64_t l = l0; l < l1; ++l) {
        const std::vector<TileItem>& list = lists[l];
        for (size_t t = 0; t < list.size(); ++t) {
          const TileItem& it = list[t];
          double* acc_tile = accp + it.i0 * lda + it.j0;
          for (int64_t s = 0; s < subs; ++s) {
            // operands of the next product, to prefetch: next sub-block, or the next tile's first
            const TileItem* nx = s + 1 < subs ? &it : (t + 1 < list.size() ? &list[t + 1] : nullptr);
            const int64_t ns = s + 1 < subs ? s + 1 : 0;
            const Y* na = nx ? block_of(ns, nx->i0) : nullptr;
            const Y* nb = nx ? block_of(ns, nx->j0) : nullptr;
            const int64_t nbytes = nx ? rows_of(ns) * ld * static_cast<int64_t>(sizeof(Y)) : 0;
            if constexpr (fast)
              cpu::gram_tile_f32_avx512(block_of(s, it.i0), block_of(s, it.j0), ld, rows_of(s), it.ti, it.tj,
                                        it.i0 - it.j0, acc_tile, lda, na, nb, nbytes);
            else
              cpu::gram_tile_f64_avx512(block_of(s, it.i0), block_of(s, it.j0), ld, rows_of(s), it.ti, it.tj,
                                        it.i0 - it.j0, acc_tile, lda, na, nb, nbytes);
          }
          if constexpr (fast)
            cpu::gram_tile_f64_avx512(P + it.i0, Q + it.j0, d, 2 * subs, it.ti, it.tj, it.i0 - it.j0, acc_tile, lda,
                                      nullptr, nullptr, 0);
        }
      }
    });
  }
  return BadRow{};
}

}  // namespace

at::Tensor gram_accumulate_cpu(at::Tensor& gram, const at::Tensor& x, const std::optional<at::Tensor>& weights,
                               bool normalize, bool exact) {
  TORCH_CHECK(x.dim() == 2, "gram_accumulate: x must be [n, d], got ", x.sizes());
  const int64_t n = x.size(0), d = x.size(1);
  TORCH_CHECK(gram.dim() == 2 && gram.size(0) == d && gram.size(1) == d && gram.scalar_type() == at::kDouble &&
                  gram.is_contiguous() && gram.is_cpu(),
              "gram_accumulate: gram must be a contiguous float64 [d, d] CPU tensor with d = ", d);
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "gram_accumulate: x must be float16, bfloat16, float32 or float64, got ", dtype);
  at::Tensor xs = (x.stride(1) == 1 || d <= 1) && x.stride(0) >= std::max<int64_t>(d, 1) ? x : x.contiguous();
  at::Tensor w;
  const double* wp = nullptr;
  if (weights.has_value()) {
    w = weights->to(at::kDouble).contiguous();
    TORCH_CHECK(w.dim() == 1 && w.size(0) == n, "gram_accumulate: weights must be [n] with n = ", n);
    // a negative or NaN weight would turn its row's square root into NaN entries of the Gram
    TORCH_CHECK(n == 0 || (at::isfinite(w) & w.ge(0)).all().item<bool>(),
                "gram_accumulate: weights must be finite and >= 0");
    wp = w.data_ptr<double>();
  }
  at::Tensor status = at::empty({2}, x.options().dtype(at::kLong));
  status[0] = -1;
  status[1] = 0;
  if (n == 0 || d == 0) return status;
  const bool simd = cpu::gram_avx512_enabled();
  int64_t lda = d;
  if (simd) {
    // padded rows: a tile's rows of the accumulator must not share cache sets (d = 1024: 8 KiB apart)
    lda = (d + 7) / 8 * 8;
    if (lda % 512 == 0) lda += 8;
  }
  at::Tensor acc = at::zeros({d, lda}, gram.options());
  BadRow bad;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "gram_accumulate_cpu", [&] {
    if (!simd)
      bad = accumulate_impl<scalar_t>(xs, wp, normalize, exact, acc);
    else if (exact)
      bad = accumulate_avx512<scalar_t, double>(xs, wp, normalize, acc.data_ptr<double>(), lda);
    else
      bad = accumulate_avx512<scalar_t, float>(xs, wp, normalize, acc.data_ptr<double>(), lda);
  });
  if (bad.status != vendi::kOk) {
    status[0] = bad.row;
    status[1] = bad.status;
    return status;
  }
  double* g = gram.data_ptr<double>();
  const double* a = acc.data_ptr<double>();
  at::parallel_for(0, d, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j <= i; ++j) g[i * d + j] += a[i * lda + j];
  });
  return status;
}

namespace {

// Checks grouped_gram's arguments; calls sink(g, gram, m) from at::parallel_for for every non-empty
// group g with its m x m Gram (m = min(n_g, d), row stride m, float64), of which only the lower
// triangle (j <= i) is to be read.
template <typename Sink>
void for_each_group_gram(const at::Tensor& x, const at::Tensor& order, const at::Tensor& offsets, int64_t size,
                         bool normalize, const char* name, Sink&& sink) {
  TORCH_CHECK(x.dim() == 2, name, ": x must be [N, d], got ", x.sizes());
  TORCH_CHECK(order.dim() == 1 && order.scalar_type() == at::kLong && order.size(0) == x.size(0), name,
              ": order must be int64 [N]");
  TORCH_CHECK(offsets.dim() == 1 && offsets.scalar_type() == at::kLong && offsets.size(0) >= 1, name,
              ": offsets must be int64 [G + 1]");
  const int64_t N = x.size(0), d = x.size(1), G = offsets.size(0) - 1;
  at::Tensor xs = x.to(at::kDouble).contiguous();
  at::Tensor ord = order.contiguous(), off = offsets.contiguous();
  const int64_t* op = ord.data_ptr<int64_t>();
  const int64_t* fp = off.data_ptr<int64_t>();
  TORCH_CHECK(fp[0] == 0 && fp[G] == N, name, ": offsets must run from 0 to N");
  for (int64_t g = 0; g < G; ++g) {
    const int64_t k = fp[g + 1] - fp[g];
    TORCH_CHECK(k >= 0 && std::min(k, d) <= size, name, ": offsets must be non-decreasing and size >= ",
                "min(n_g, d) for every group");
  }
  for (int64_t i = 0; i < N; ++i) TORCH_CHECK(op[i] >= 0 && op[i] < N, name, ": order out of range");
  const double* xp = xs.data_ptr<double>();
  const bool simd = cpu::gram_avx512_enabled();
  at::parallel_for(0, G, 16, [&](int64_t g0, int64_t g1) {
    std::vector<double> rows, cols, gram;
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t k = fp[g + 1] - fp[g];
      if (k == 0) continue;
      rows.resize(k * d);
      for (int64_t a = 0; a < k; ++a) {
        const double* src = xp + op[fp[g] + a] * d;
        if (a + 1 < k) prefetch_row(xp + op[fp[g] + a + 1] * d, d * 8);  // gathered: unseen by the prefetcher
        double s = 1.0;
        if (normalize) {
          const double sq = vendi::dot(src, src, d);
          s = sq == 0.0 ? 0.0 : 1.0 / std::sqrt(sq);  // a NaN / Inf row stays non-finite
        }
        for (int64_t c = 0; c < d; ++c) rows[a * d + c] = src[c] * s;
      }
      const int64_t m = std::min(k, d);
      if (k * d * m < kBlasGroupWork) {
        gram.resize(m * m);
        vendi::small_gram(rows.data(), k, d, gram.data(), m);
        sink(g, gram.data(), m);
        continue;
      }
      if (simd && m <= kTile) {
        // One AVX-512 tile product (lower triangle). Y^T Y reads the rows as they are; Y Y^T needs
        // them as columns: [d, k], transposed here.
        const double* operand = rows.data();
        int64_t ld = d, reduce = k;
        if (k <= d) {
          cols.resize(d * k);
          for (int64_t a = 0; a < k; ++a)
            for (int64_t c = 0; c < d; ++c) cols[c * k + a] = rows[a * d + c];
          operand = cols.data();
          ld = k;
          reduce = d;
        }
        gram.assign(m * m, 0.0);
        cpu::gram_tile_f64_avx512(operand, operand, ld, reduce, m, m, 0, gram.data(), m, nullptr, nullptr, 0);
        sink(g, gram.data(), m);
        continue;
      }
      // Larger groups: one BLAS product (MKL).
      const at::Tensor y = at::from_blob(rows.data(), {k, d}, at::TensorOptions().dtype(at::kDouble));
      const at::Tensor prod = k <= d ? at::mm(y, y.t()) : at::mm(y.t(), y);
      sink(g, prod.data_ptr<double>(), m);
    }
  });
}

}  // namespace

at::Tensor grouped_gram_cpu(const at::Tensor& x, const at::Tensor& order, const at::Tensor& offsets,
                            int64_t size, bool normalize) {
  TORCH_CHECK(size >= 1, "grouped_gram: size must be >= 1");
  const int64_t G = offsets.dim() == 1 ? offsets.size(0) - 1 : 0;
  at::Tensor out = at::zeros({std::max<int64_t>(G, 0), size, size}, x.options().dtype(at::kDouble));
  double* outp = out.data_ptr<double>();
  for_each_group_gram(x, order, offsets, size, normalize, "grouped_gram",
                      [&](int64_t g, const double* gram, int64_t m) {
                        double* dst = outp + g * size * size;
                        for (int64_t a = 0; a < m; ++a)
                          for (int64_t b = 0; b <= a; ++b) dst[a * size + b] = dst[b * size + a] = gram[a * m + b];
                      });
  return out;
}

at::Tensor grouped_frobenius_sq_cpu(const at::Tensor& x, const at::Tensor& order, const at::Tensor& offsets,
                                    bool normalize) {
  const int64_t G = offsets.dim() == 1 ? offsets.size(0) - 1 : 0;
  at::Tensor out = at::zeros({std::max<int64_t>(G, 0)}, x.options().dtype(at::kDouble));
  double* outp = out.data_ptr<double>();
  for_each_group_gram(x, order, offsets, std::numeric_limits<int64_t>::max(), normalize, "grouped_frobenius_sq",
                      [&](int64_t g, const double* gram, int64_t m) {
                        double diag = 0.0, off = 0.0;  // ||G||_F^2 = sum_i G_ii^2 + 2 sum_{j<i} G_ij^2
                        for (int64_t a = 0; a < m; ++a) {
                          diag += gram[a * m + a] * gram[a * m + a];
                          off += vendi::dot(gram + a * m, gram + a * m, a);
                        }
                        outp[g] = diag + 2.0 * off;
                      });
  return out;
}

}  // namespace prism
