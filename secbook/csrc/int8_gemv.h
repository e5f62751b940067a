// int8_gemv.h — the int8 x int16 dot products shared by secbook::int8_linear (int8_linear.cpp) and the
// whole-decoder step secbook::llama_step (llama_step.cpp). How it works: see int8_linear.cpp's top comment; the
// vector instructions it runs on: simd.h. Plain C++ (no PyTorch headers), so that tests/csrc/simd_check.cpp can
// check it on its own for every path, also under an emulator for another CPU.
#pragma once

#include <algorithm>
#include <cstdint>

#include "simd.h"

namespace secbook {
namespace {

constexpr int64_t kChunk = 256;  // inputs per activation scale and per int32 running sum

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

}  // namespace
}  // namespace secbook
