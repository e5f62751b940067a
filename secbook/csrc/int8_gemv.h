// int8_gemv.h — the int8 x int16 matrix product shared by secbook::int8_linear (int8_linear.cpp) and the
// whole-decoder step secbook::llama_step (llama_step.cpp). How it works: see int8_linear.cpp's top comment.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define SECBOOK_VNNI 1
#else
#define SECBOOK_VNNI 0
#endif

namespace secbook {

constexpr int64_t kChunk = 256;  // inputs per activation scale and per int32 running sum
constexpr int64_t kRows = 8;     // weight rows processed together

// Round one row of x to int16, one scale per chunk; xq is padded with zeros to a multiple of 32.
inline void quantize_row(const float* x, int64_t K, int16_t* xq, float* sx) {
  for (int64_t c = 0; c < K; c += kChunk) {
    const int64_t e = std::min(K, c + kChunk);
    float amax = 0.f;
    int64_t k = c;
#if SECBOOK_VNNI  // the same results 16 at a time (max is exact; cvtps rounds to nearest even, like nearbyint)
    __m512 vmax = _mm512_setzero_ps();
    for (; k + 16 <= e; k += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
    amax = _mm512_reduce_max_ps(vmax);
#endif
    for (; k < e; k++) amax = std::max(amax, std::fabs(x[k]));
    const float s = amax / 32767.f;
    const float inv = amax > 0.f ? 32767.f / amax : 0.f;
    k = c;
#if SECBOOK_VNNI
    for (; k + 16 <= e; k += 16) {
      const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), _mm512_set1_ps(inv)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq + k), _mm512_cvtsepi32_epi16(q));
    }
#endif
    for (; k < e; k++) xq[k] = static_cast<int16_t>(std::nearbyint(x[k] * inv));
    sx[c / kChunk] = s;
  }
}

#if SECBOOK_VNNI
// Dot products of NR int8 rows with one int16 activation row. NR is a compile-time constant so that the
// NR running sums live in registers (with a run-time count the compiler keeps them in memory: ~3x slower).
template <int NR>
__attribute__((always_inline)) inline void dot_rows(const int8_t* const* w, int64_t K, const int16_t* xq, const float* sx, float* out) {
  __m512 facc[NR];
  for (int r = 0; r < NR; r++) facc[r] = _mm512_setzero_ps();
  const int64_t tail = K % 32;
  for (int64_t c = 0; c < K; c += kChunk) {
    const int64_t e = std::min(K, c + kChunk);
    __m512i acc[NR];
    for (int r = 0; r < NR; r++) acc[r] = _mm512_setzero_si512();
    const int64_t full = c + (e - c) / 32 * 32;
    for (int64_t k = c; k < full; k += 32) {
      const __m512i xv = _mm512_loadu_si512(xq + k);
      for (int r = 0; r < NR; r++) {
        const __m256i w8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r] + k));
        acc[r] = _mm512_dpwssd_epi32(acc[r], _mm512_cvtepi8_epi16(w8), xv);
      }
    }
    if (full < e) {  // the last, partial group of 32: masked loads never read past the row
      const __m512i xv = _mm512_loadu_si512(xq + full);  // padded with zeros: always 32 int16
      const __mmask32 m = (__mmask32(1) << tail) - 1;
      for (int r = 0; r < NR; r++) {
        const __m256i w8 = _mm256_maskz_loadu_epi8(m, w[r] + full);
        acc[r] = _mm512_dpwssd_epi32(acc[r], _mm512_cvtepi8_epi16(w8), xv);
      }
    }
    const __m512 s = _mm512_set1_ps(sx[c / kChunk]);
    for (int r = 0; r < NR; r++) facc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]), s, facc[r]);
  }
  for (int r = 0; r < NR; r++) out[r] = _mm512_reduce_add_ps(facc[r]);
}
#else
template <int NR>
__attribute__((always_inline)) inline void dot_rows(const int8_t* const* w, int64_t K, const int16_t* xq, const float* sx, float* out) {
  for (int r = 0; r < NR; r++) {
    float acc = 0.f;
    for (int64_t c = 0; c < K; c += kChunk) {
      const int64_t e = std::min(K, c + kChunk);
      int32_t part = 0;
      for (int64_t k = c; k < e; k++) part += int32_t(w[r][k]) * int32_t(xq[k]);
      acc += float(part) * sx[c / kChunk];
    }
    out[r] = acc;
  }
}
#endif

// y[m, n] = scale[n] * sum_k x[m, k] w[n, k] for int8 w [N, K] (row-major), fp32 x [M, K] and y [M, N].
inline void int8_matmul(const float* x, int64_t M, int64_t K, const int8_t* wp, const float* sp, int64_t N,
                        float* yp) {
  const int64_t Kp = (K + 31) / 32 * 32, C = (K + kChunk - 1) / kChunk;
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
    for (int64_t i = i0; i < i1; i++) {
      int nr = 0;
      for (int r = 0; r < kRows && i + r * Q < N; r++, nr++) rows[r] = wp + (i + r * Q) * K;
      for (int64_t m = 0; m < M; m++) {  // the rows stay in L1 for every row of x
        const int16_t* xm = xq.data() + m * Kp;
        const float* sm = sx.data() + m * C;
        if (nr == kRows) {
          dot_rows<kRows>(rows, K, xm, sm, out);
        } else {
          for (int r = 0; r < nr; r++) dot_rows<1>(rows + r, K, xm, sm, out + r);
        }
        for (int r = 0; r < nr; r++) yp[m * N + i + r * Q] = out[r];
      }
    }
  });
  // the row scales afterwards, in order: read inside the loop they were eight more scattered streams of memory
  // requests per core, and the loop ran ~10% slower (measured on a 256 MB matrix)
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) yp[m * N + n] *= sp[n];
}

}  // namespace secbook
