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
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <string>

#include "int8_gemv.h"

#ifndef SECBOOK_NS
#define SECBOOK_NS secbook
#endif

namespace {

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
  secbook::int8_matmul(xc.data_ptr<float>(), xc.numel() / K, K, wc.data_ptr<int8_t>(), sc.data_ptr<float>(), N,
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
