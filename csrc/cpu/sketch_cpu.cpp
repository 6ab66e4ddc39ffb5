// CPU driver of the sketch op: out [B, k] = scale * X [B, P] M[:, offset : offset + P]^T with the
// matrix M generated tile by tile from the Philox stream (prism/sketch.h), never stored whole.
//
// Dense kinds: the input range is split into one chunk per thread (at::parallel_for); each chunk
// generates [kTileRows, <= kTileCols] tiles of M^T and multiplies them into its own fp32 [B, k]
// accumulator with a BLAS GEMM (at::addmm_, single-threaded inside the parallel region); the
// accumulators are summed at the end. Sparse JL: each chunk scatters +-x[:, j] into its own [k, B]
// accumulator (contiguous over the batch) for every nonzero of every coordinate j.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <c10/util/ParallelGuard.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

#include "../ops/ops.h"
#include "prism/sketch.h"
#include "sketch_tiles.h"

namespace prism {

namespace {

using sketch::Kind;

constexpr int64_t kTileRows = 256;    // input coordinates per generated tile
constexpr int64_t kTileCols = 1024;   // output columns per generated tile (a multiple of 128)
// Fewest matrix entries (coordinates x columns) worth a task of their own. Waking the pool costs
// tens of microseconds on a quiet machine and whole scheduler ticks (milliseconds) on a busy one,
// so small calls (e.g. one embedding row of a gradient sketch) run inline on the calling thread.
constexpr int64_t kMinTaskEntries = int64_t{1} << 23;
constexpr int64_t kMinReduceEntries = int64_t{1} << 18;  // outputs worth a parallel reduction

Kind parse_kind(std::string_view kind) {
  if (kind == "rademacher") return Kind::kRademacher;
  if (kind == "gaussian") return Kind::kGaussian;
  if (kind == "sparse") return Kind::kSparse;
  TORCH_CHECK(false, "sketch: kind must be 'rademacher', 'gaussian' or 'sparse', got '", kind, "'");
}

// x[b, p0 : p0 + n] as float32 into dst[b * ld + c] (row layout) or dst[c * B + b] (transposed).
template <typename T>
void load_rows(const T* rows, int64_t batch, int64_t width, int64_t p0, int64_t n, float* dst, bool transposed) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* src = rows + b * width + p0;
    if (transposed) {
      for (int64_t c = 0; c < n; ++c) dst[c * batch + b] = static_cast<float>(src[c]);
    } else {
      for (int64_t c = 0; c < n; ++c) dst[b * n + c] = static_cast<float>(src[c]);
    }
  }
}

void load_any(const at::Tensor& rows, int64_t p0, int64_t n, float* dst, bool transposed) {
  const int64_t batch = rows.size(0), width = rows.size(1);
  switch (rows.scalar_type()) {
    case at::kFloat:
      load_rows(rows.const_data_ptr<float>(), batch, width, p0, n, dst, transposed);
      break;
    case at::kBFloat16:
      load_rows(rows.const_data_ptr<c10::BFloat16>(), batch, width, p0, n, dst, transposed);
      break;
    default:
      load_rows(rows.const_data_ptr<c10::Half>(), batch, width, p0, n, dst, transposed);
      break;
  }
}

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Contiguous input ranges, one per task: at most one per thread, each worth kMinTaskEntries.
int64_t chunk_count(int64_t width, int64_t columns) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t entries = width > std::numeric_limits<int64_t>::max() / columns
                              ? std::numeric_limits<int64_t>::max() : width * columns;
  return std::max<int64_t>(1, std::min<int64_t>({threads, entries / kMinTaskEntries, width / kTileRows}));
}

}  // namespace
}  // namespace prism

// MKL's thread-local thread count, when torch's BLAS is MKL (a weak reference: absent otherwise).
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));  // C entry of mkl_set_num_threads_local

namespace prism {
namespace {

// Runs f(first, last) over [0, n): on the calling thread when `inline_only` (or the range is one
// grain), else with at::parallel_for. On the inline path the GEMMs in f are kept single-threaded
// as they are inside at::parallel_for (nested OpenMP): a multi-threaded BLAS call per small tile
// wakes the pool every time, which costs whole scheduler ticks on a busy machine.
template <typename F>
void maybe_parallel(bool inline_only, int64_t n, int64_t grain, const F& f) {
  if (n <= 0) return;
  if (inline_only || n <= grain || at::get_num_threads() == 1 || at::in_parallel_region()) {
    const int previous = MKL_Set_Num_Threads_Local != nullptr ? MKL_Set_Num_Threads_Local(1) : 0;
    {
      c10::ParallelGuard guard(true);
      f(0, n);
    }
    if (MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(previous);
    return;
  }
  at::parallel_for(0, n, grain, f);
}

void dense_chunk(const at::Tensor& rows, Kind kind, const sketch::Key& key, uint64_t offset, int64_t k,
                 int64_t begin, int64_t end, at::Tensor& acc) {
  const int64_t batch = rows.size(0), width = rows.size(1);
  const int64_t tile_cols = std::min<int64_t>(kTileCols, round_up(k, sketch::kRademacherGroup));
  std::vector<float> tile(static_cast<size_t>(kTileRows * tile_cols));
  std::vector<float> xbuf;
  const bool direct = rows.scalar_type() == at::kFloat;
  if (!direct) xbuf.resize(static_cast<size_t>(batch * kTileRows));
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  for (int64_t p0 = begin; p0 < end; p0 += kTileRows) {
    const int64_t n = std::min(kTileRows, end - p0);
    at::Tensor x;
    if (direct) {
      x = at::from_blob(const_cast<float*>(rows.const_data_ptr<float>()) + p0, {batch, n}, {width, 1}, f32);
    } else {
      load_any(rows, p0, n, xbuf.data(), false);
      x = at::from_blob(xbuf.data(), {batch, n}, {n, 1}, f32);
    }
    for (int64_t c0 = 0; c0 < k; c0 += tile_cols) {
      const int64_t cols = std::min(tile_cols, k - c0);
      const uint64_t j0 = offset + static_cast<uint64_t>(p0);
      if (kind == Kind::kRademacher)
        cpu::rademacher_tile(key, j0, n, c0, cols, tile.data(), tile_cols);
      else
        cpu::gaussian_tile(key, j0, n, c0, cols, tile.data(), tile_cols);
      at::Tensor m = at::from_blob(tile.data(), {n, cols}, {tile_cols, 1}, f32);
      at::Tensor out = acc.narrow(1, c0, cols);
      out.addmm_(x, m);
    }
  }
}

void sparse_chunk(const at::Tensor& rows, const sketch::Key& key, uint64_t offset, int64_t k, int64_t s,
                  int64_t begin, int64_t end, float* acc /* [k, B] */) {
  const int64_t batch = rows.size(0);
  std::vector<float> xt(static_cast<size_t>(kTileRows * batch));
  for (int64_t p0 = begin; p0 < end; p0 += kTileRows) {
    const int64_t n = std::min(kTileRows, end - p0);
    load_any(rows, p0, n, xt.data(), true);
    for (int64_t r = 0; r < n; ++r) {
      const uint64_t j = offset + static_cast<uint64_t>(p0 + r);
      const float* x = xt.data() + r * batch;
      philox::Words w{};
      for (int64_t t = 0; t < s; ++t) {
        if ((t & 3) == 0) w = sketch::words(key, j, static_cast<uint32_t>(t >> 2));
        const sketch::Nonzero nz = sketch::sparse_from_word(w.w[t & 3], static_cast<uint32_t>(k));
        float* dst = acc + static_cast<int64_t>(nz.row) * batch;
        if (nz.sign > 0.0f) {
          for (int64_t b = 0; b < batch; ++b) dst[b] += x[b];
        } else {
          for (int64_t b = 0; b < batch; ++b) dst[b] -= x[b];
        }
      }
    }
  }
}

}  // namespace

at::Tensor sketch_cpu(const at::Tensor& rows, int64_t k, c10::string_view kind_name, int64_t seed, int64_t block,
                      int64_t offset, int64_t s, double scale) {
  TORCH_CHECK(rows.device().is_cpu(), "sketch: rows must be a CPU tensor, got ", rows.device());
  TORCH_CHECK(rows.dim() == 2, "sketch: rows must be [B, P], got ", rows.sizes());
  TORCH_CHECK(rows.scalar_type() == at::kFloat || rows.scalar_type() == at::kBFloat16 ||
                  rows.scalar_type() == at::kHalf,
              "sketch: rows must be float32, bfloat16 or float16, got ", rows.scalar_type());
  TORCH_CHECK(rows.is_contiguous(), "sketch: rows must be contiguous");
  TORCH_CHECK(k >= 1 && k <= std::numeric_limits<int32_t>::max(), "sketch: k must be in [1, 2^31), got ", k);
  TORCH_CHECK(block >= 0 && block <= std::numeric_limits<uint32_t>::max(), "sketch: block must be in [0, 2^32)");
  TORCH_CHECK(offset >= 0 && offset <= std::numeric_limits<int64_t>::max() - rows.size(1),
              "sketch: offset must be >= 0 and offset + P < 2^63");
  const Kind kind = parse_kind(std::string_view(kind_name.data(), kind_name.size()));
  TORCH_CHECK(kind != Kind::kSparse || (s >= 1 && s <= 1024), "sketch: s must be in [1, 1024], got ", s);
  const int64_t batch = rows.size(0), width = rows.size(1);
  const sketch::Key key = sketch::make_key(static_cast<uint64_t>(seed), static_cast<uint32_t>(block));
  const float fscale = static_cast<float>(scale);
  at::Tensor out = at::zeros({batch, k}, rows.options().dtype(at::kFloat));
  if (batch == 0 || width == 0) return out;

  const int64_t chunks = chunk_count(width, kind == Kind::kSparse ? s * batch : k);
  const bool small_output = batch * k < kMinReduceEntries;
  float* dst = out.data_ptr<float>();
  if (kind == Kind::kSparse) {
    std::vector<std::vector<float>> acc(chunks);
    maybe_parallel(chunks == 1, chunks, 1, [&](int64_t first, int64_t last) {
      for (int64_t c = first; c < last; ++c) {
        acc[c].assign(static_cast<size_t>(k * batch), 0.0f);
        sparse_chunk(rows, key, static_cast<uint64_t>(offset), k, s, width * c / chunks, width * (c + 1) / chunks,
                     acc[c].data());
      }
    });
    maybe_parallel(small_output, k, 256, [&](int64_t first, int64_t last) {
      for (int64_t i = first; i < last; ++i)
        for (int64_t b = 0; b < batch; ++b) {
          float sum = 0.0f;
          for (int64_t c = 0; c < chunks; ++c) sum += acc[c][i * batch + b];
          dst[b * k + i] = sum * fscale;
        }
    });
    return out;
  }
  std::vector<at::Tensor> acc(chunks);
  maybe_parallel(chunks == 1, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      acc[c] = at::zeros({batch, k}, out.options());
      dense_chunk(rows, kind, key, static_cast<uint64_t>(offset), k, width * c / chunks, width * (c + 1) / chunks,
                  acc[c]);
    }
  });
  std::vector<const float*> parts(chunks);
  for (int64_t c = 0; c < chunks; ++c) parts[c] = acc[c].const_data_ptr<float>();
  maybe_parallel(small_output, batch * k, 4096, [&](int64_t first, int64_t last) {
    for (int64_t e = first; e < last; ++e) {
      float sum = 0.0f;
      for (int64_t c = 0; c < chunks; ++c) sum += parts[c][e];
      dst[e] = sum * fscale;
    }
  });
  return out;
}

}  // namespace prism
