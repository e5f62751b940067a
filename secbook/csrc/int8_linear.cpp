// secbook::int8_linear — y = (x @ w.T) * scale for int8 weights w [N, K] with one fp32 scale per row.
//
// Written for decoding (x has one or a few rows): the cost is reading w, so every weight byte is read once
// and used for all rows of x while it sits in the L1 cache. The activations are rounded to int16 with one
// scale per chunk of 256 inputs (relative error ~1e-5 of the chunk's largest value), so that the inner loop
// is integer multiply-adds: on CPUs with AVX-512 VNNI one `vpdpwssd` instruction does 32 of them, with AVX2 one
// `vpmaddwd` does 16 (simd.h). Each int32 running sum covers at most 256 inputs (|sum| <= 256 * 128 * 32767 <
// 2^31: no overflow), then it is turned into a float and times the chunk's scale. Eight weight rows, far apart
// in the matrix, are processed together: eight independent sums are in flight (one sum alone waits on its own
// previous addition), and the core reads eight separate streams of weights, which keeps more memory requests
// going than eight neighbouring rows do.
//
// Every vector path (AVX-512, AVX2, plain loops: simd.h) computes the same integers and combines them in the same
// order, so all give the same outputs to the bit.
//
// The operators are registered in the namespace SECBOOK_NS (secbook unless the build says otherwise), so that a
// second build with other instructions (secbook.kernels' `simd` argument) can be loaded beside the first.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstring>
#include <string>
#include <vector>

#include "int8_gemv.h"

#ifndef SECBOOK_NS
#define SECBOOK_NS secbook
#endif

namespace {

using namespace secbook;

constexpr int64_t kRows = 8;  // weight rows processed together

// y[m, n] = scale[n] * sum_k x[m, k] w[n, k] for int8 w [N, K] (row-major), fp32 x [M, K] and y [M, N].
inline void int8_matmul(const float* x, int64_t M, int64_t K, const int8_t* wp, const float* sp, int64_t N,
                        float* yp) {
  const int64_t Kp = (K + 31) / 32 * 32, Kfull = K / 32 * 32, C = (K + kChunk - 1) / kChunk;
  std::vector<int16_t> xq(M * Kp, 0);
  std::vector<float> sx(M * C);
  for (int64_t m = 0; m < M; m++) quantize_row(x + m * K, K, xq.data() + m * Kp, sx.data() + m * C);
  // Step i works on rows i, i+Q, i+2Q, ..., i+7Q (Q = N/8): each core reads eight separate streams of weights
  // at once, which keeps more memory requests in flight than neighbouring rows do (measured here: ~1.6x over
  // the 121 products of a SmolLM2-135M decode step).
  const int64_t Q = (N + kRows - 1) / kRows;
  at::parallel_for(0, Q, 64, [&](int64_t i0, int64_t i1) {
    float out[kRows];
    const int8_t* rows[kRows];
    int8_t tails[kRows][32] = {};  // each row's last, partial piece, zero-padded (the rows are not)
    for (int64_t i = i0; i < i1; i++) {
      int nr = 0;
      for (int r = 0; r < kRows && i + r * Q < N; r++, nr++) rows[r] = wp + (i + r * Q) * K;
      for (int r = nr; r < kRows; r++) rows[r] = rows[0];  // fewer than 8 rows left: repeat one, drop its sums
      if (Kfull < K)
        for (int r = 0; r < kRows; r++) std::memcpy(tails[r], rows[r] + Kfull, K - Kfull);
      for (int64_t m = 0; m < M; m++) {  // the rows stay in L1 for every row of x
        dot8_int8([&](int r, int64_t k) { return rows[r] + k; }, [&](int r) { return tails[r]; }, Kfull, K,
                  xq.data() + m * Kp, sx.data() + m * C, out);
        for (int r = 0; r < nr; r++) yp[m * N + i + r * Q] = out[r];
      }
    }
  });
  // the row scales afterwards, in order: read inside the loop they were eight more scattered streams of memory
  // requests per core, and the loop ran ~10% slower (measured on a 256 MB matrix)
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) yp[m * N + n] *= sp[n];
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kChar, "int8_linear: w must be int8 [N, K]");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "int8_linear: x must be float32");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.numel() == w.size(0),
              "int8_linear: scale must be float32 with one value per row of w");
  const int64_t N = w.size(0), K = w.size(1);
  TORCH_CHECK(x.size(-1) == K, "int8_linear: x has ", x.size(-1), " inputs, w has ", K);
  const at::Tensor xc = x.contiguous(), wc = w.contiguous(), sc = scale.contiguous();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  at::Tensor y = at::empty(shape, x.options());
  int8_matmul(xc.data_ptr<float>(), xc.numel() / K, K, wc.data_ptr<int8_t>(), sc.data_ptr<float>(), N,
                       y.data_ptr<float>());
  return y;
}

std::string simd_path() { return secbook::kSimdPath; }

}  // namespace

TORCH_LIBRARY_FRAGMENT(SECBOOK_NS, m) {
  m.def("int8_linear(Tensor x, Tensor w, Tensor scale) -> Tensor");
  m.def("simd_path() -> str", &simd_path);  // which vector instructions this build uses (simd.h)
}

TORCH_LIBRARY_IMPL(SECBOOK_NS, CPU, m) { m.impl("int8_linear", int8_linear); }
