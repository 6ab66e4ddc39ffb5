// CPU drivers of the grid-density ops: split the work with at::parallel_for (so torch's thread
// count is honoured and no second thread pool competes with torch's) and run the tile loops of
// csrc/include/prism/grid.h and histogram_blocks.h on each part.
#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "../ops/ops.h"
#include "histogram_blocks.h"
#include "prism/grid.h"
#include "prism/thresholds.h"

namespace prism {

namespace {

using grid::Axis;

// Per-task uint32 histograms are used while one stays cache resident (about an L2); beyond that
// the cells are bucketed first (histogram_bucketed).
constexpr int64_t kPrivateHistogramBytes = int64_t{2} << 20;
constexpr int64_t kMinPointsPerTask = 1 << 16;
// Work (elements touched) below which a loop runs on the calling thread: waking the pool costs
// more than it saves, and a pool thread that another process keeps off its core stalls the call.
constexpr int64_t kSerialWork = int64_t{1} << 20;

// Grain that keeps a loop over `range` items serial when the whole loop touches little memory.
int64_t grain_for(int64_t range, int64_t work, int64_t grain) {
  return work < kSerialWork ? std::max<int64_t>(range, 1) : grain;
}
// A private uint32 counter cannot overflow if its task has fewer points than this.
constexpr int64_t kMaxPointsPerTask = int64_t{1} << 31;

struct GridArgs {
  int64_t num_points;
  int32_t dims;
  int64_t num_groups;
  int64_t num_cells;
  int64_t points_per_group;
  const int64_t* group_ids;  // nullptr: point i is in group i / points_per_group
};

GridArgs check_grid_args(const at::Tensor& points, const std::optional<at::Tensor>& group_ids,
                         const at::Tensor& edges, at::IntArrayRef bins, int64_t points_per_group) {
  TORCH_CHECK(points.dim() == 2 && points.is_contiguous(), "points must be a contiguous [N, D] tensor");
  TORCH_CHECK(points.scalar_type() == at::kFloat || points.scalar_type() == at::kDouble,
              "points must be float32 or float64");
  const int64_t dims = points.size(1);
  TORCH_CHECK(dims >= 1 && dims <= 3, "points must have D in 1..3");
  TORCH_CHECK(static_cast<int64_t>(bins.size()) == dims, "bins must have one entry per axis");
  TORCH_CHECK(edges.dim() == 3 && edges.scalar_type() == at::kDouble && edges.is_contiguous() &&
                  edges.size(1) == dims,
              "edges must be a contiguous float64 [G, D, M + 1] tensor");
  GridArgs args{points.size(0), static_cast<int32_t>(dims), edges.size(0), 1, points_per_group, nullptr};
  for (int64_t d = 0; d < dims; ++d) {
    TORCH_CHECK(bins[d] >= 1 && bins[d] + 1 <= edges.size(2) && bins[d] < (int64_t{1} << 31),
                "bins[", d, "] out of range");
    args.num_cells *= bins[d];
  }
  TORCH_CHECK(args.num_groups * args.num_cells < (int64_t{1} << 32) - 1, "more than 2^32 - 2 cells in all groups");
  {
    const double* e = edges.data_ptr<double>();
    for (int64_t gd = 0; gd < args.num_groups * dims; ++gd)
      TORCH_CHECK(grid::edges_valid(e + gd * edges.size(2), bins[gd % dims]), "edges[", gd / dims, ", ",
                  gd % dims, "] must be finite and non-decreasing");
  }
  if (group_ids.has_value()) {
    const at::Tensor& g = *group_ids;
    TORCH_CHECK(g.dim() == 1 && g.size(0) == args.num_points && g.scalar_type() == at::kLong &&
                    g.is_contiguous(),
                "group_ids must be a contiguous int64 [N] tensor");
    args.group_ids = g.data_ptr<int64_t>();
  } else {
    TORCH_CHECK(points_per_group >= 1 || args.num_points == 0, "points_per_group must be >= 1");
    TORCH_CHECK(args.num_points <= args.num_groups * std::max<int64_t>(points_per_group, 0),
                "more points than groups * points_per_group");
  }
  return args;
}

// Binning tables of every (group, axis): thresholds in the points' precision plus first-guess
// parameters. Group g, axis d is axes[g * D + d].
template <typename T>
struct AxisTables {
  std::vector<T> thresholds;
  std::vector<Axis<T>> axes;
  std::vector<float> margins;  // float32 fast-path margins (cpu::guess_margin), float points only

  AxisTables(const at::Tensor& edges, at::IntArrayRef bins) {
    const int64_t groups = edges.size(0), dims = edges.size(1), stride = edges.size(2);
    const double* e = edges.data_ptr<double>();
    thresholds.resize(groups * dims * stride);
    axes.resize(groups * dims);
    margins.resize(groups * dims);
    for (int64_t gd = 0; gd < groups * dims; ++gd) {
      const int32_t n = static_cast<int32_t>(bins[gd % dims]);
      const double* axis_edges = e + gd * stride;
      T* thr = thresholds.data() + gd * stride;
      if constexpr (std::is_same_v<T, float>)
        grid::float32_thresholds(axis_edges, n, thr);
      else
        grid::float64_thresholds(axis_edges, n, thr);
      Axis<T>& axis = axes[gd];
      axis.thresholds = thr;
      axis.bins = n;
      grid::axis_guess<T>(axis_edges, n, thr, &axis.lower, &axis.scale);
      margins[gd] = cpu::guess_margin(axis_edges, n);
    }
  }
};

// Cell of a point whose group id is outside [0, G): it is counted nowhere (neither in a cell nor
// in a group's dropped count) and its grid_cells entry is -1, as on every backend.
constexpr int64_t kBadGroup = -2;

// Cells of points [begin, end): row-major within the point's group grid, plus `global` ? g * C : 0,
// -1 for a dropped point, or (global only) kBadGroup for a point with a group id outside [0, G).
// Batched groups go one segment at a time so each segment has fixed
// tables (and the AVX2 loop for float32); ragged groups look their tables up per point.
template <typename T>
void point_cells(const T* points, int64_t begin, int64_t end, const GridArgs& args, const AxisTables<T>& tables,
                 bool global, int64_t* cells) {
  const int32_t dims = args.dims;
  const Axis<T>* axes = tables.axes.data();
  if (args.group_ids != nullptr) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t g = args.group_ids[i];
      if (g < 0 || g >= args.num_groups) {
        cells[i - begin] = global ? kBadGroup : -1;
        continue;
      }
      const int64_t cell = grid::cell_of<T>(points + i * dims, dims, axes + g * dims);
      cells[i - begin] = cell < 0 || !global ? cell : g * args.num_cells + cell;
    }
    return;
  }
  for (int64_t start = begin; start < end;) {
    const int64_t g = start / args.points_per_group;
    const int64_t stop = std::min(end, (g + 1) * args.points_per_group);
    const Axis<T>* group_axes = axes + g * dims;
    int64_t* out = cells + (start - begin);
    bool done = false;
    if constexpr (std::is_same_v<T, float>) {
      if (cpu::avx2_cells_applicable(dims, group_axes, args.num_cells)) {
        cpu::cells_avx2(points + start * dims, stop - start, dims, group_axes, tables.margins.data() + g * dims, out);
        done = true;
      }
    }
    if (!done) cpu::cells_scalar<T>(points + start * dims, stop - start, dims, group_axes, out);
    if (global && g > 0) {
      const int64_t base = g * args.num_cells;
      for (int64_t j = 0; j < stop - start; ++j)
        if (out[j] >= 0) out[j] += base;
    }
    start = stop;
  }
}

int64_t group_of(const GridArgs& args, int64_t i) {
  return args.group_ids != nullptr ? args.group_ids[i] : i / args.points_per_group;
}

// Points per chunk whose cells are computed into a stack buffer before they are counted.
constexpr int64_t kCellChunk = 2048;

// Small grids: every task counts its share of the points into its own uint32 histogram (cache
// resident), then the histograms are summed in parallel over cells.
template <typename T>
void histogram_private(const T* pts, const GridArgs& args, const AxisTables<T>& tables, int64_t tasks,
                       int64_t* out, int64_t* lost) {
  const int64_t total_cells = args.num_groups * args.num_cells;
  const int64_t n = args.num_points;
  std::vector<std::unique_ptr<uint32_t[]>> partial(tasks);
  std::vector<std::vector<int64_t>> partial_lost(tasks, std::vector<int64_t>(args.num_groups, 0));
  at::parallel_for(0, tasks, 1, [&](int64_t first, int64_t last) {
    int64_t cells[kCellChunk];
    for (int64_t t = first; t < last; ++t) {
      uint32_t* hist = (partial[t] = std::unique_ptr<uint32_t[]>(new uint32_t[total_cells]())).get();
      const int64_t end = n * (t + 1) / tasks;
      for (int64_t start = n * t / tasks; start < end; start += kCellChunk) {
        const int64_t count = std::min(kCellChunk, end - start);
        point_cells<T>(pts, start, start + count, args, tables, /*global=*/true, cells);
        for (int64_t j = 0; j < count; ++j) {
          if (cells[j] >= 0)
            ++hist[cells[j]];
          else if (cells[j] == -1)
            ++partial_lost[t][group_of(args, start + j)];
        }
      }
    }
  });
  at::parallel_for(0, total_cells, grain_for(total_cells, total_cells * tasks, 1 << 16),
                   [&](int64_t first, int64_t last) {
    for (int64_t t = 0; t < tasks; ++t) {
      const uint32_t* part = partial[t].get();
      for (int64_t c = first; c < last; ++c) out[c] += part[c];
    }
  });
  for (int64_t t = 0; t < tasks; ++t)
    for (int64_t g = 0; g < args.num_groups; ++g) lost[g] += partial_lost[t][g];
}

// Large grids (beyond the caches): random increments over the whole output would miss the caches
// on almost every point. Instead, per chunk of points, the cells are computed, radix-partitioned
// into buckets of kBucketCells consecutive cells (1 MiB of counters, cache resident), and each
// bucket is then counted by one task.
constexpr int kBucketShift = 17;
constexpr int64_t kPrefetchAhead = 32;
constexpr uint32_t kDroppedCell = 0xFFFFFFFFu;  // global cells are < 2^32 - 1 (checked on entry)

// Points per chunk: each chunk re-reads every bucket region of the output, so chunks are large;
// scratch is 8 bytes per point of a chunk (128 MiB by default). PRISM_KERNELS_BUCKET_CHUNK lowers it.
int64_t bucket_chunk() {
  const char* env = std::getenv("PRISM_KERNELS_BUCKET_CHUNK");
  const int64_t chunk = env != nullptr ? std::atoll(env) : 0;
  return chunk > 0 ? chunk : int64_t{1} << 24;
}

template <typename T>
void histogram_bucketed(const T* pts, const GridArgs& args, const AxisTables<T>& tables, int64_t tasks,
                        int64_t* out, int64_t* lost) {
  const int64_t total_cells = args.num_groups * args.num_cells;
  const int64_t buckets = (total_cells >> kBucketShift) + 1;
  const int64_t n = args.num_points;
  const int64_t chunk = std::min(n, bucket_chunk());
  std::unique_ptr<uint32_t[]> cells(new uint32_t[chunk]);  // global cell, or kDroppedCell
  std::unique_ptr<uint32_t[]> sorted(new uint32_t[chunk]);  // cell - bucket start, grouped by bucket
  std::vector<int64_t> task_bucket(tasks * buckets);  // counts, then write positions
  std::vector<int64_t> bucket_begin(buckets + 1);
  std::vector<std::vector<int64_t>> task_lost(tasks, std::vector<int64_t>(args.num_groups, 0));
  for (int64_t base = 0; base < n; base += chunk) {
    const int64_t count = std::min(chunk, n - base);
    std::fill(task_bucket.begin(), task_bucket.end(), 0);
    at::parallel_for(0, tasks, 1, [&](int64_t first, int64_t last) {
      for (int64_t t = first; t < last; ++t) {
        int64_t* histogram = task_bucket.data() + t * buckets;
        int64_t block[kCellChunk];
        const int64_t hi = count * (t + 1) / tasks;
        for (int64_t lo = count * t / tasks; lo < hi; lo += kCellChunk) {
          const int64_t m = std::min(kCellChunk, hi - lo);
          point_cells<T>(pts, base + lo, base + lo + m, args, tables, /*global=*/true, block);
          for (int64_t j = 0; j < m; ++j) {
            if (block[j] >= 0) {
              cells[lo + j] = static_cast<uint32_t>(block[j]);
              ++histogram[block[j] >> kBucketShift];
            } else {
              cells[lo + j] = kDroppedCell;
              if (block[j] == -1) ++task_lost[t][group_of(args, base + lo + j)];
            }
          }
        }
      }
    });
    int64_t position = 0;  // exclusive scan, bucket-major then task
    for (int64_t b = 0; b < buckets; ++b) {
      bucket_begin[b] = position;
      for (int64_t t = 0; t < tasks; ++t) {
        const int64_t c = task_bucket[t * buckets + b];
        task_bucket[t * buckets + b] = position;
        position += c;
      }
    }
    bucket_begin[buckets] = position;
    at::parallel_for(0, tasks, 1, [&](int64_t first, int64_t last) {
      for (int64_t t = first; t < last; ++t) {
        int64_t* write = task_bucket.data() + t * buckets;
        for (int64_t j = count * t / tasks; j < count * (t + 1) / tasks; ++j) {
          const uint32_t cell = cells[j];
          if (cell != kDroppedCell) sorted[write[cell >> kBucketShift]++] = cell & ((1u << kBucketShift) - 1);
        }
      }
    });
    at::parallel_for(0, buckets, 1, [&](int64_t first, int64_t last) {
      for (int64_t b = first; b < last; ++b) {
        int64_t* region = out + (b << kBucketShift);
        const int64_t begin = bucket_begin[b], end = bucket_begin[b + 1];
        // The region's lines are cold (one chunk's points touch each about once): fetch ahead.
        for (int64_t j = begin; j < end; ++j) {
          if (j + kPrefetchAhead < end) __builtin_prefetch(region + sorted[j + kPrefetchAhead], 1);
          ++region[sorted[j]];
        }
      }
    });
  }
  for (int64_t t = 0; t < tasks; ++t)
    for (int64_t g = 0; g < args.num_groups; ++g) lost[g] += task_lost[t][g];
}

template <typename T>
void histogram_impl(const at::Tensor& points, const GridArgs& args, const at::Tensor& edges,
                    at::IntArrayRef bins, at::Tensor& counts, at::Tensor& dropped) {
  const AxisTables<T> tables(edges, bins);
  const int64_t total_cells = args.num_groups * args.num_cells;
  const int64_t n = args.num_points;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t tasks = std::min<int64_t>(threads, std::max<int64_t>(1, n / kMinPointsPerTask));
  // A private uint32 counter cannot overflow: no task holds 2^31 points.
  tasks = std::max<int64_t>(tasks, (n + kMaxPointsPerTask - 1) / kMaxPointsPerTask);
  if (total_cells * 4 <= kPrivateHistogramBytes)
    histogram_private<T>(points.data_ptr<T>(), args, tables, tasks, counts.data_ptr<int64_t>(),
                         dropped.data_ptr<int64_t>());
  else
    histogram_bucketed<T>(points.data_ptr<T>(), args, tables, std::min(tasks, threads),
                          counts.data_ptr<int64_t>(), dropped.data_ptr<int64_t>());
}

template <typename T>
void cells_impl(const at::Tensor& points, const GridArgs& args, const at::Tensor& edges, at::IntArrayRef bins,
                at::Tensor& cells) {
  const AxisTables<T> tables(edges, bins);
  const T* pts = points.data_ptr<T>();
  int64_t* out = cells.data_ptr<int64_t>();
  at::parallel_for(0, args.num_points, kMinPointsPerTask, [&](int64_t first, int64_t last) {
    point_cells<T>(pts, first, last, args, tables, /*global=*/false, out + first);
  });
}

// Zero counts [G, C]. Large ones come from calloc: fresh pages arrive zeroed from the kernel on
// first touch (in parallel, by the counting threads), so the grid is not written twice.
at::Tensor zeroed_counts(int64_t groups, int64_t cells) {
  const int64_t total = groups * cells;
  if (total * static_cast<int64_t>(sizeof(int64_t)) < (int64_t{1} << 20))
    return at::zeros({groups, cells}, at::TensorOptions().dtype(at::kLong));
  void* data = std::calloc(static_cast<size_t>(total), sizeof(int64_t));
  TORCH_CHECK(data != nullptr, "grid_histogram: cannot allocate ", total, " int64 counts");
  return at::from_blob(data, {groups, cells}, [](void* p) { std::free(p); },
                       at::TensorOptions().dtype(at::kLong));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> grid_histogram_cpu(const at::Tensor& points,
                                                      const std::optional<at::Tensor>& group_ids,
                                                      const at::Tensor& edges, at::IntArrayRef bins,
                                                      int64_t points_per_group) {
  const GridArgs args = check_grid_args(points, group_ids, edges, bins, points_per_group);
  at::Tensor counts = zeroed_counts(args.num_groups, args.num_cells);
  at::Tensor dropped = at::zeros({args.num_groups}, points.options().dtype(at::kLong));
  if (points.scalar_type() == at::kFloat)
    histogram_impl<float>(points, args, edges, bins, counts, dropped);
  else
    histogram_impl<double>(points, args, edges, bins, counts, dropped);
  return {counts, dropped};
}

at::Tensor grid_cells_cpu(const at::Tensor& points, const std::optional<at::Tensor>& group_ids,
                          const at::Tensor& edges, at::IntArrayRef bins, int64_t points_per_group) {
  const GridArgs args = check_grid_args(points, group_ids, edges, bins, points_per_group);
  at::Tensor cells = at::empty({args.num_points}, points.options().dtype(at::kLong));
  if (points.scalar_type() == at::kFloat)
    cells_impl<float>(points, args, edges, bins, cells);
  else
    cells_impl<double>(points, args, edges, bins, cells);
  return cells;
}

at::Tensor window_counts_cpu(const at::Tensor& counts, at::IntArrayRef window, at::IntArrayRef stride) {
  TORCH_CHECK(counts.dim() == 4 && counts.scalar_type() == at::kLong && counts.is_contiguous(),
              "counts must be a contiguous int64 [B, n0, n1, n2] tensor");
  TORCH_CHECK(window.size() == 3 && stride.size() == 3, "window and stride must have 3 entries");
  const int64_t batch = counts.size(0);
  int64_t n[3], out_size[3];
  for (int a = 0; a < 3; ++a) {
    n[a] = counts.size(a + 1);
    TORCH_CHECK(window[a] >= 1 && window[a] <= n[a] && stride[a] >= 1, "window/stride out of range");
    out_size[a] = (n[a] - window[a]) / stride[a] + 1;
  }
  at::Tensor out = at::empty({batch, out_size[0], out_size[1], out_size[2]}, counts.options());
  if (out.numel() == 0) return out;

  // Summed-area table [B, n0 + 1, n1 + 1, n2 + 1] with a zero first plane on each axis.
  const int64_t s1 = n[2] + 1, s0 = (n[1] + 1) * s1, sb = (n[0] + 1) * s0;
  std::unique_ptr<int64_t[]> sat(new int64_t[batch * sb]);
  const int64_t* src = counts.data_ptr<int64_t>();
  // Pass 1, per plane (b, i0): zero the borders, prefix-sum rows along axis 2, then add rows along
  // axis 1. Planes are independent.
  const int64_t work = batch * sb;
  at::parallel_for(0, batch * (n[0] + 1), grain_for(batch * (n[0] + 1), work, 16), [&](int64_t first, int64_t last) {
    for (int64_t plane = first; plane < last; ++plane) {
      const int64_t b = plane / (n[0] + 1), i0 = plane % (n[0] + 1);
      int64_t* dst = sat.get() + b * sb + i0 * s0;
      if (i0 == 0) {
        std::memset(dst, 0, sizeof(int64_t) * s0);
        continue;
      }
      std::memset(dst, 0, sizeof(int64_t) * s1);
      const int64_t* row_src = src + ((b * n[0] + (i0 - 1)) * n[1]) * n[2];
      for (int64_t i1 = 1; i1 <= n[1]; ++i1) {
        int64_t* row = dst + i1 * s1;
        const int64_t* prev = row - s1;
        const int64_t* in = row_src + (i1 - 1) * n[2];
        int64_t running = 0;
        row[0] = 0;
        for (int64_t i2 = 1; i2 <= n[2]; ++i2) {
          running += in[i2 - 1];
          row[i2] = running + prev[i2];
        }
      }
    }
  });
  // Pass 2: prefix-sum planes along axis 0, in parallel over column ranges of each batch item.
  at::parallel_for(0, batch * s0, grain_for(batch * s0, work, 4096), [&](int64_t first, int64_t last) {
    for (int64_t start = first; start < last;) {
      const int64_t b = start / s0;
      const int64_t stop = std::min(last, (b + 1) * s0);
      int64_t* base = sat.get() + b * sb;
      for (int64_t i0 = 1; i0 <= n[0]; ++i0) {
        int64_t* plane = base + i0 * s0;
        const int64_t* prev = plane - s0;
        for (int64_t c = start - b * s0; c < stop - b * s0; ++c) plane[c] += prev[c];
      }
      start = stop;
    }
  });
  int64_t* dst = out.data_ptr<int64_t>();
  const int64_t rows = batch * out_size[0] * out_size[1];
  at::parallel_for(0, rows, grain_for(rows, out.numel() * 8, 64), [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const int64_t b = r / (out_size[0] * out_size[1]);
      const int64_t o0 = (r / out_size[1]) % out_size[0], o1 = r % out_size[1];
      const int64_t a0 = o0 * stride[0], a1 = o1 * stride[1];
      const int64_t* table = sat.get() + b * sb;
      int64_t* row = dst + r * out_size[2];
      for (int64_t o2 = 0; o2 < out_size[2]; ++o2) {
        const int64_t a2 = o2 * stride[2];
        row[o2] = grid::box_sum(table, s0, s1, a0, a1, a2, a0 + window[0], a1 + window[1], a2 + window[2]);
      }
    }
  });
  return out;
}

}  // namespace prism
