// int8_gemv.h — the int8 x int16 matrix product shared by secbook::int8_linear (int8_linear.cpp) and the
// whole-decoder step secbook::llama_step (llama_step.cpp). How it works: see int8_linear.cpp's top comment; the
// vector instructions it runs on: simd.h.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "simd.h"

namespace secbook {
namespace {

constexpr int64_t kChunk = 256;  // inputs per activation scale and per int32 running sum
constexpr int64_t kRows = 8;     // weight rows processed together

// Round one row of x to int16, one scale per chunk; the caller pads xq with zeros to a multiple of 32.
inline void quantize_row(const float* x, int64_t K, int16_t* xq, float* sx) {
  for (int64_t c = 0; c < K; c += kChunk) {
    const int64_t n = std::min(K, c + kChunk) - c;
    const float amax = abs_max(x + c, n);
    round_to_int16(x + c, n, amax > 0.f ? 32767.f / amax : 0.f, xq + c);
    sx[c / kChunk] = amax / 32767.f;
  }
}

// The dot products of 8 int8 weight rows with one int16 activation row xq (K inputs, padded with zeros to a
// multiple of 32): out[r] = sum over chunks c of sx[c] * (the exact integer sum of row r's products in chunk c).
// piece(r, k) points to the 32 weights of row r at inputs k .. k+31 for k < Kfull (a multiple of 32), tail(r) to
// row r's last, partial piece (inputs Kfull .. K-1, zero-padded to 32) if Kfull < K. The integer sums are the
// same on every path; each is rounded to float (exact rounding) and times its chunk's scale in double (exact:
// 24-bit x 24-bit), summed over the chunks in order in double, so the result does not depend on the path either.
template <class Piece, class Tail>
__attribute__((always_inline)) inline void dot8_int8(Piece piece, Tail tail, int64_t Kfull, int64_t K,
                                                     const int16_t* xq, const float* sx, float* out) {
  double f[8] = {0.};
  for (int64_t c = 0; c < K; c += kChunk) {
    const int64_t e = std::min(K, c + kChunk), full = std::min(e, Kfull);
    VI acc[8];
    for (int r = 0; r < 8; r++) acc[r] = vizero();
    for (int64_t k = c; k < full; k += 32) {
      const VX xv = xload(xq + k);
      for (int r = 0; r < 8; r++) acc[r] = madd32(acc[r], piece(r, k), xv);
    }
    if (full < e) {
      const VX xv = xload(xq + full);
      for (int r = 0; r < 8; r++) acc[r] = madd32(acc[r], tail(r), xv);
    }
    int32_t tot[8];
    hsum8(acc, tot);
    const double s = sx[c / kChunk];
    for (int r = 0; r < 8; r++) f[r] += double(float(tot[r])) * s;
  }
  for (int r = 0; r < 8; r++) out[r] = float(f[r]);
}

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

}  // namespace
}  // namespace secbook
