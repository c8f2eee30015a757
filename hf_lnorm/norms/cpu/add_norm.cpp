// hf_lnorm CPU kernels: residual add + LayerNorm / RMSNorm (Llama convention) in one pass per row,
// writing into blocks recycled from a bounded cache.
//
// Why: on CPU, eager `x + r` then `layer_norm` makes two passes over memory and two fresh
// activation-sized allocations; PyTorch's CPU allocator returns large blocks to the OS, so each
// fresh block is paid again in page faults, which cost more than the arithmetic. Here each row is
// read once (x, r), its sum kept in L1 for the statistics, and written once (s, y); the outputs
// can come from a cache of freed blocks of the same byte size (set_cache_limit caps the bytes the
// cache may hold while nobody uses them; it starts at 0, off, and the Python side sets it on load).
//
// fp32 only, rows contiguous; the Python side sends everything else to aten.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

// ----------------------------------------------------------------------------- block cache

struct BlockCache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> idle;  // byte size -> idle blocks of that size
  size_t idle_bytes = 0;
  size_t limit_bytes = 0;
  int64_t hits = 0;
  int64_t misses = 0;
};

BlockCache& cache() {
  static BlockCache* c = new BlockCache();  // never destroyed: blocks may be released during interpreter exit
  return *c;
}

constexpr size_t kAlign = 64;

size_t rounded(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// A freed block is kept when it fits under the limit, evicting idle blocks of other sizes to make room:
// when shapes change (another sequence length, another model), blocks of the sizes in use now are the
// ones worth keeping, and stale sizes must not hold the budget.
void give_back(void* ptr, size_t bytes) {
  BlockCache& c = cache();
  std::vector<void*> evicted;
  bool kept = false;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (bytes <= c.limit_bytes) {
      for (auto it = c.idle.begin(); it != c.idle.end() && c.idle_bytes + bytes > c.limit_bytes; ++it) {
        if (it->first == bytes) continue;
        while (!it->second.empty() && c.idle_bytes + bytes > c.limit_bytes) {
          evicted.push_back(it->second.back());
          it->second.pop_back();
          c.idle_bytes -= it->first;
        }
      }
      if (c.idle_bytes + bytes <= c.limit_bytes) {
        c.idle[bytes].push_back(ptr);
        c.idle_bytes += bytes;
        kept = true;
      }
    }
  }
  for (void* p : evicted) std::free(p);
  if (!kept) std::free(ptr);
}

at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (int64_t d : sizes) numel *= d;
  size_t bytes = rounded(static_cast<size_t>(std::max<int64_t>(numel, 1)) * sizeof(float));
  BlockCache& c = cache();
  void* ptr = nullptr;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.idle.find(bytes);
    if (it != c.idle.end() && !it->second.empty()) {
      ptr = it->second.back();
      it->second.pop_back();
      c.idle_bytes -= bytes;
      ++c.hits;
    } else {
      ++c.misses;
    }
  }
  if (ptr == nullptr) {
    ptr = std::aligned_alloc(kAlign, bytes);
    TORCH_CHECK(ptr != nullptr, "hf_lnorm_cpu: out of memory allocating ", bytes, " bytes");
  }
  return at::from_blob(ptr, sizes, [bytes](void* p) { give_back(p, bytes); }, options);
}

// ----------------------------------------------------------------------------- row kernels
//
// One row at a time: pass 1 reads x (and r), writes s and sums it; passes 2 and 3 (variance,
// normalize) read the row again from L1 (the `scratch` copy of s, or x itself without residual).
// With `stream`, s and y are written with non-temporal stores: for outputs larger than the caches,
// that skips reading every output line before writing it (about a third of the memory traffic).

#if defined(__AVX512F__)
#include <immintrin.h>

constexpr bool kVectorPath = true;
using V = __m512;

inline __mmask16 tail_mask(int64_t k) { return static_cast<__mmask16>((1u << k) - 1u); }

template <bool kStream>
inline void put(float* p, V v) {
  if constexpr (kStream) {
    _mm512_stream_ps(p, v);
  } else {
    _mm512_storeu_ps(p, v);
  }
}

// s = x + r written to `s` (streamed when kStream) and to `scratch`; returns sum(s).
// Without r: returns sum(x), writes nothing.
template <bool kStream>
inline float add_pass(const float* x, const float* r, float* s, float* scratch, int64_t n) {
  V a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  if (r == nullptr) {
    for (; i + 64 <= n; i += 64) {
      a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
      a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i + 16));
      a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + i + 32));
      a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + i + 48));
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
    if (i < n) a1 = _mm512_add_ps(a1, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
  for (; i + 64 <= n; i += 64) {
    V v0 = _mm512_add_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(r + i));
    V v1 = _mm512_add_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(r + i + 16));
    V v2 = _mm512_add_ps(_mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(r + i + 32));
    V v3 = _mm512_add_ps(_mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(r + i + 48));
    _mm512_storeu_ps(scratch + i, v0);
    _mm512_storeu_ps(scratch + i + 16, v1);
    _mm512_storeu_ps(scratch + i + 32, v2);
    _mm512_storeu_ps(scratch + i + 48, v3);
    put<kStream>(s + i, v0);
    put<kStream>(s + i + 16, v1);
    put<kStream>(s + i + 32, v2);
    put<kStream>(s + i + 48, v3);
    a0 = _mm512_add_ps(a0, v0);
    a1 = _mm512_add_ps(a1, v1);
    a2 = _mm512_add_ps(a2, v2);
    a3 = _mm512_add_ps(a3, v3);
  }
  for (; i + 16 <= n; i += 16) {
    V v = _mm512_add_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(r + i));
    _mm512_storeu_ps(scratch + i, v);
    put<kStream>(s + i, v);
    a0 = _mm512_add_ps(a0, v);
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    V v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, r + i));
    _mm512_mask_storeu_ps(scratch + i, m, v);
    _mm512_mask_storeu_ps(s + i, m, v);
    a1 = _mm512_add_ps(a1, v);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// sum((row - c)^2)
inline float centered_squares(const float* row, float c, int64_t n) {
  const V vc = _mm512_set1_ps(c);
  V a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    V d0 = _mm512_sub_ps(_mm512_loadu_ps(row + i), vc);
    V d1 = _mm512_sub_ps(_mm512_loadu_ps(row + i + 16), vc);
    V d2 = _mm512_sub_ps(_mm512_loadu_ps(row + i + 32), vc);
    V d3 = _mm512_sub_ps(_mm512_loadu_ps(row + i + 48), vc);
    a0 = _mm512_fmadd_ps(d0, d0, a0);
    a1 = _mm512_fmadd_ps(d1, d1, a1);
    a2 = _mm512_fmadd_ps(d2, d2, a2);
    a3 = _mm512_fmadd_ps(d3, d3, a3);
  }
  for (; i + 16 <= n; i += 16) {
    V d = _mm512_sub_ps(_mm512_loadu_ps(row + i), vc);
    a0 = _mm512_fmadd_ps(d, d, a0);
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    V d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, row + i), vc);
    a1 = _mm512_fmadd_ps(d, d, a1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// y = (row - shift) * scale [* w] [+ b]   (LayerNorm: shift = mean; RMSNorm: shift = 0, then w * normed)
template <bool kStream>
inline void normalize_pass(const float* row, float shift, float scale, const float* w, const float* b, float* y,
                           int64_t n) {
  const V vs = _mm512_set1_ps(shift), vr = _mm512_set1_ps(scale);
  auto one = [&](V v, int64_t i, __mmask16 m, bool tail) {
    V o = _mm512_mul_ps(_mm512_sub_ps(v, vs), vr);
    if (w != nullptr) o = _mm512_mul_ps(o, tail ? _mm512_maskz_loadu_ps(m, w + i) : _mm512_loadu_ps(w + i));
    if (b != nullptr) o = _mm512_add_ps(o, tail ? _mm512_maskz_loadu_ps(m, b + i) : _mm512_loadu_ps(b + i));
    if (tail) {
      _mm512_mask_storeu_ps(y + i, m, o);
    } else {
      put<kStream>(y + i, o);
    }
  };
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) one(_mm512_loadu_ps(row + i), i, 0xFFFF, false);
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    one(_mm512_maskz_loadu_ps(m, row + i), i, m, true);
  }
}

inline void store_fence() { _mm_sfence(); }

#else  // portable path: plain loops the compiler vectorizes; no streaming stores

constexpr bool kVectorPath = false;

template <bool kStream>
inline float add_pass(const float* x, const float* r, float* s, float* scratch, int64_t n) {
  float sum = 0.f;
  if (r == nullptr) {
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += x[i];
    return sum;
  }
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] + r[i];
    s[i] = v;
    scratch[i] = v;
    sum += v;
  }
  return sum;
}

inline float centered_squares(const float* row, float c, int64_t n) {
  float sq = 0.f;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < n; ++i) {
    float d = row[i] - c;
    sq += d * d;
  }
  return sq;
}

template <bool kStream>
inline void normalize_pass(const float* row, float shift, float scale, const float* w, const float* b, float* y,
                           int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float o = (row[i] - shift) * scale;
    if (w != nullptr) o = o * w[i];
    if (b != nullptr) o = o + b[i];
    y[i] = o;
  }
}

inline void store_fence() {}

#endif

// Outputs at least this large are written with streaming stores (HF_LNORM_CPU_STREAM_MB overrides).
int64_t stream_min_bytes() {
  static const int64_t bytes = [] {
    const char* env = std::getenv("HF_LNORM_CPU_STREAM_MB");
    return static_cast<int64_t>((env ? std::atof(env) : 8.0) * (1 << 20));
  }();
  return bytes;
}

template <bool kStream>
void norm_rows(const float* xp, const float* rp, const float* wp, const float* bp, float* yp, float* sp, float* mp,
               float* rsp, int64_t rows, int64_t n, float eps, bool rms) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1));  // ~64 KiB of input per task
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(rp != nullptr ? n : 0);
    for (int64_t i = begin; i < end; ++i) {
      const float* xi = xp + i * n;
      const float* ri = rp != nullptr ? rp + i * n : nullptr;
      const float sum = add_pass<kStream>(xi, ri, sp != nullptr ? sp + i * n : nullptr, scratch.data(), n);
      const float* row = ri != nullptr ? scratch.data() : xi;
      if (rms) {
        const float rstd = 1.f / std::sqrt(centered_squares(row, 0.f, n) / static_cast<float>(n) + eps);
        normalize_pass<kStream>(row, 0.f, rstd, wp, nullptr, yp + i * n, n);  // (s * rstd) * w: Llama's order
        rsp[i] = rstd;
      } else {
        const float mean = sum / static_cast<float>(n);
        const float rstd = 1.f / std::sqrt(centered_squares(row, mean, n) / static_cast<float>(n) + eps);
        normalize_pass<kStream>(row, mean, rstd, wp, bp, yp + i * n, n);
        mp[i] = mean;
        rsp[i] = rstd;
      }
    }
    if (kStream) store_fence();
  });
}

// ----------------------------------------------------------------------------- the op

void check_f32(const at::Tensor& t, const char* name, int64_t n) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), "hf_lnorm_cpu.add_norm: ",
              name, " must be a contiguous float32 CPU tensor, got ", t.scalar_type(), " on ", t.device(),
              t.is_contiguous() ? "" : " (not contiguous)");
  if (n >= 0) TORCH_CHECK(t.numel() == n, "hf_lnorm_cpu.add_norm: ", name, " has ", t.numel(), " elements, expected ", n);
}

// Returns [y, s, mean, rstd]: y = norm(s), s = x + residual (x itself without residual; the residual
// tensor itself when in_place). mean/rstd are float32 shaped x.shape[:-1] (mean is empty for RMSNorm).
std::vector<at::Tensor> add_norm(const at::Tensor& x, const c10::optional<at::Tensor>& residual,
                                 const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
                                 double eps, bool rms, bool in_place) {
  TORCH_CHECK(x.dim() >= 1, "hf_lnorm_cpu.add_norm: x must have at least one dimension");
  const int64_t n = x.size(-1);
  check_f32(x, "x", -1);
  const bool has_res = residual.has_value() && residual->defined();
  if (has_res) {
    check_f32(*residual, "residual", x.numel());
    TORCH_CHECK(residual->sizes() == x.sizes(), "hf_lnorm_cpu.add_norm: residual shape ", residual->sizes(),
                " differs from x shape ", x.sizes());
  }
  TORCH_CHECK(!in_place || has_res, "hf_lnorm_cpu.add_norm: in_place needs a residual");
  const bool has_w = weight.has_value() && weight->defined();
  const bool has_b = bias.has_value() && bias->defined();
  if (has_w) check_f32(*weight, "weight", n);
  if (has_b) check_f32(*bias, "bias", n);
  TORCH_CHECK(!(rms && has_b), "hf_lnorm_cpu.add_norm: RMSNorm takes no bias");

  const auto opts = x.options();
  const int64_t rows = n == 0 ? 0 : x.numel() / n;
  std::vector<int64_t> row_shape(x.sizes().begin(), x.sizes().end() - 1);
  at::Tensor y = cached_empty(x.sizes(), opts);
  at::Tensor s = !has_res ? x : (in_place ? *residual : cached_empty(x.sizes(), opts));
  at::Tensor mean = rms ? at::empty({0}, opts) : at::empty(row_shape, opts);
  at::Tensor rstd = at::empty(row_shape, opts);
  if (rows == 0 || n == 0) return {y, s, mean, rstd};

  const float* xp = x.data_ptr<float>();
  const float* rp = has_res ? residual->data_ptr<float>() : nullptr;
  const float* wp = has_w ? weight->data_ptr<float>() : nullptr;
  const float* bp = has_b ? bias->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  float* sp = has_res ? s.data_ptr<float>() : nullptr;
  float* mp = rms ? nullptr : mean.data_ptr<float>();
  float* rsp = rstd.data_ptr<float>();
  const float e = static_cast<float>(eps);
  const auto aligned = [](const float* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % kAlign == 0; };
  const bool stream = kVectorPath && n % 16 == 0 && aligned(yp) && aligned(sp) &&
                      static_cast<int64_t>(y.numel() * sizeof(float)) >= stream_min_bytes();
  if (stream) {
    norm_rows<true>(xp, rp, wp, bp, yp, sp, mp, rsp, rows, n, e, rms);
  } else {
    norm_rows<false>(xp, rp, wp, bp, yp, sp, mp, rsp, rows, n, e, rms);
  }
  return {y, s, mean, rstd};
}

// [idle bytes, idle-byte limit, hits, misses]
std::vector<int64_t> cache_info() {
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return {static_cast<int64_t>(c.idle_bytes), static_cast<int64_t>(c.limit_bytes), c.hits, c.misses};
}

// Frees every idle block; returns the bytes freed. The limit stays.
int64_t empty_cache() {
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  int64_t freed = static_cast<int64_t>(c.idle_bytes);
  for (auto& kv : c.idle)
    for (void* p : kv.second) std::free(p);
  c.idle.clear();
  c.idle_bytes = 0;
  return freed;
}

// Sets the idle-byte limit (freeing idle blocks above it); returns the previous limit.
int64_t set_cache_limit(int64_t limit_bytes) {
  TORCH_CHECK(limit_bytes >= 0, "hf_lnorm_cpu.set_cache_limit: limit must be >= 0 bytes, got ", limit_bytes);
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  int64_t old = static_cast<int64_t>(c.limit_bytes);
  c.limit_bytes = static_cast<size_t>(limit_bytes);
  for (auto& kv : c.idle) {
    while (c.idle_bytes > c.limit_bytes && !kv.second.empty()) {
      std::free(kv.second.back());
      kv.second.pop_back();
      c.idle_bytes -= kv.first;
    }
  }
  return old;
}

}  // namespace

TORCH_LIBRARY(hf_lnorm_cpu, m) {
  m.def("add_norm(Tensor x, Tensor? residual, Tensor? weight, Tensor? bias, float eps, bool rms, bool in_place) -> Tensor[]");
  m.impl("add_norm", c10::DispatchKey::CPU, TORCH_FN(add_norm));
  m.def("cache_info() -> int[]", &cache_info);
  m.def("empty_cache() -> int", &empty_cache);
  m.def("set_cache_limit(int limit_bytes) -> int", &set_cache_limit);
}
