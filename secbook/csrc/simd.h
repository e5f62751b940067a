// simd.h — the few vector operations secbook's C++ kernels are written with, one small set per instruction set.
//
// The kernels (int8_gemv.h, llama_step.cpp) are written once, in terms of a float vector VF of kW lanes and an
// int32 accumulator VI for int8 x int16 products; this file maps them onto the widest instructions the compiler
// was told it may use, chosen at build time from its macros:
//   avx512-vnni / avx512  __AVX512F__ + BW + VL: 16 floats per vector; 32 int8 x int16 products per instruction
//                         with VNNI (vpdpwssd), or per vpmaddwd + vpaddd without it
//   avx2                  __AVX2__ + __FMA__ (most x86 laptops and cloud CPUs): 8 floats per vector; 16 int8 x
//                         int16 products per vpmaddwd (the int8 weights widened to int16 first, vpmovsxbw)
//   neon                  64-bit ARM (__aarch64__: Apple silicon, Graviton, Raspberry Pi 4/5): 4 floats per vector;
//                         4 int8 x int16 products per smlal (weights widened to int16 first, sxtl)
//   scalar                anything else, or -DSECBOOK_PORTABLE: plain loops over arrays of 8 lanes, which the
//                         compiler vectorizes for whatever the target has (SSE2 on any x86-64)
// The int8 products are exact integer sums on every path (int8 x int16 pairs summed in int32; see
// int8_gemv.h), so they give the same integers everywhere; float sums differ between paths only in the order of
// the additions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(SECBOOK_PORTABLE)
// the plain loops, whatever the compiler may use
#elif defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define SECBOOK_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SECBOOK_AVX2 1
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define SECBOOK_NEON 1
#endif

namespace secbook {
namespace {  // internal linkage: two builds of these kernels (say AVX-512 and AVX2) can live in one process

#if defined(SECBOOK_AVX512) && defined(__AVX512VNNI__)
constexpr const char* kSimdPath = "avx512-vnni";
#elif defined(SECBOOK_AVX512)
constexpr const char* kSimdPath = "avx512";
#elif defined(SECBOOK_AVX2)
constexpr const char* kSimdPath = "avx2";
#elif defined(SECBOOK_NEON)
constexpr const char* kSimdPath = "neon";
#else
constexpr const char* kSimdPath = "scalar";
#endif

// ------------------------------------------------------------------------------------------------ float vectors
// vload/vstore: kW floats; vloadn/vstoren: the first n < kW lanes only (never touching memory past them), the
// other lanes of a load set to `fill`; vfma(a, b, c) = a * b + c; vsum/vhmax: the sum/maximum of the lanes.
#if defined(SECBOOK_AVX512)
constexpr int kW = 16;
using VF = __m512;
inline __mmask16 first_lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }
inline VF vset(float a) { return _mm512_set1_ps(a); }
inline VF vload(const float* p) { return _mm512_loadu_ps(p); }
inline VF vloadn(const float* p, int64_t n, float fill) { return _mm512_mask_loadu_ps(vset(fill), first_lanes(n), p); }
inline void vstore(float* p, VF v) { _mm512_storeu_ps(p, v); }
inline void vstoren(float* p, VF v, int64_t n) { _mm512_mask_storeu_ps(p, first_lanes(n), v); }
inline VF vadd(VF a, VF b) { return _mm512_add_ps(a, b); }
inline VF vsub(VF a, VF b) { return _mm512_sub_ps(a, b); }
inline VF vmul(VF a, VF b) { return _mm512_mul_ps(a, b); }
inline VF vdiv(VF a, VF b) { return _mm512_div_ps(a, b); }
inline VF vmax(VF a, VF b) { return _mm512_max_ps(a, b); }
inline VF vmin(VF a, VF b) { return _mm512_min_ps(a, b); }
inline VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
inline VF vfnma(VF a, VF b, VF c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a * b
inline VF vabs(VF a) { return _mm512_abs_ps(a); }
inline VF vround(VF a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline VF vpow2mul(VF a, VF n) { return _mm512_scalef_ps(a, n); }  // a * 2^n for whole numbers n
inline float vsum(VF a) { return _mm512_reduce_add_ps(a); }
inline float vhmax(VF a) { return _mm512_reduce_max_ps(a); }
#elif defined(SECBOOK_AVX2)
constexpr int kW = 8;
using VF = __m256;
inline __m256i first_lanes(int64_t n) {  // all ones in lanes < n
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::min<int64_t>(n, 8))), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline VF vset(float a) { return _mm256_set1_ps(a); }
inline VF vload(const float* p) { return _mm256_loadu_ps(p); }
inline VF vloadn(const float* p, int64_t n, float fill) {
  const __m256i m = first_lanes(n);
  return _mm256_blendv_ps(vset(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
inline void vstore(float* p, VF v) { _mm256_storeu_ps(p, v); }
inline void vstoren(float* p, VF v, int64_t n) { _mm256_maskstore_ps(p, first_lanes(n), v); }
inline VF vadd(VF a, VF b) { return _mm256_add_ps(a, b); }
inline VF vsub(VF a, VF b) { return _mm256_sub_ps(a, b); }
inline VF vmul(VF a, VF b) { return _mm256_mul_ps(a, b); }
inline VF vdiv(VF a, VF b) { return _mm256_div_ps(a, b); }
inline VF vmax(VF a, VF b) { return _mm256_max_ps(a, b); }
inline VF vmin(VF a, VF b) { return _mm256_min_ps(a, b); }
inline VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
inline VF vfnma(VF a, VF b, VF c) { return _mm256_fnmadd_ps(a, b, c); }
inline VF vabs(VF a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }  // clear the sign bit
inline VF vround(VF a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline VF vpow2mul(VF a, VF n) {  // 2^n built in the exponent bits (n within the normal range: see vexp)
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(a, _mm256_castsi256_ps(e));
}
inline float vsum(VF a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
inline float vhmax(VF a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps(s, s, 1)));
}
#elif defined(SECBOOK_NEON)
constexpr int kW = 4;
using VF = float32x4_t;
inline VF vset(float a) { return vdupq_n_f32(a); }
inline VF vload(const float* p) { return vld1q_f32(p); }
inline VF vloadn(const float* p, int64_t n, float fill) {
  if (n >= 4) return vld1q_f32(p);
  float t[4] = {fill, fill, fill, fill};
  std::memcpy(t, p, sizeof(float) * n);
  return vld1q_f32(t);
}
inline void vstore(float* p, VF v) { vst1q_f32(p, v); }
inline void vstoren(float* p, VF v, int64_t n) {
  if (n >= 4) return vst1q_f32(p, v);
  float t[4];
  vst1q_f32(t, v);
  std::memcpy(p, t, sizeof(float) * n);
}
inline VF vadd(VF a, VF b) { return vaddq_f32(a, b); }
inline VF vsub(VF a, VF b) { return vsubq_f32(a, b); }
inline VF vmul(VF a, VF b) { return vmulq_f32(a, b); }
inline VF vdiv(VF a, VF b) { return vdivq_f32(a, b); }
inline VF vmax(VF a, VF b) { return vmaxq_f32(a, b); }
inline VF vmin(VF a, VF b) { return vminq_f32(a, b); }
inline VF vfma(VF a, VF b, VF c) { return vfmaq_f32(c, a, b); }   // NEON puts the addend first
inline VF vfnma(VF a, VF b, VF c) { return vfmsq_f32(c, a, b); }  // c - a * b
inline VF vabs(VF a) { return vabsq_f32(a); }
inline VF vround(VF a) { return vrndnq_f32(a); }  // to nearest, ties to even
inline VF vpow2mul(VF a, VF n) {  // 2^n built in the exponent bits (n within the normal range: see vexp)
  return vmulq_f32(a, vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23)));
}
inline float vsum(VF a) { return vaddvq_f32(a); }
inline float vhmax(VF a) { return vmaxvq_f32(a); }
#else
constexpr int kW = 8;
struct VF {
  float v[kW];
};
#define SECBOOK_LANES(expr) \
  VF r;                     \
  for (int i = 0; i < kW; i++) r.v[i] = (expr); \
  return r
inline VF vset(float a) { SECBOOK_LANES(a); }
inline VF vload(const float* p) { SECBOOK_LANES(p[i]); }
inline VF vloadn(const float* p, int64_t n, float fill) { SECBOOK_LANES(i < n ? p[i] : fill); }
inline void vstore(float* p, VF a) { std::memcpy(p, a.v, sizeof a.v); }
inline void vstoren(float* p, VF a, int64_t n) { std::memcpy(p, a.v, sizeof(float) * std::min<int64_t>(n, kW)); }
inline VF vadd(VF a, VF b) { SECBOOK_LANES(a.v[i] + b.v[i]); }
inline VF vsub(VF a, VF b) { SECBOOK_LANES(a.v[i] - b.v[i]); }
inline VF vmul(VF a, VF b) { SECBOOK_LANES(a.v[i] * b.v[i]); }
inline VF vdiv(VF a, VF b) { SECBOOK_LANES(a.v[i] / b.v[i]); }
inline VF vmax(VF a, VF b) { SECBOOK_LANES(std::max(a.v[i], b.v[i])); }
inline VF vfma(VF a, VF b, VF c) { SECBOOK_LANES(a.v[i] * b.v[i] + c.v[i]); }
inline VF vexp(VF a) { SECBOOK_LANES(std::exp(a.v[i])); }  // the library's exp, one lane at a time
#undef SECBOOK_LANES
inline float vsum(VF a) {
  float s = 0.f;
  for (int i = 0; i < kW; i++) s += a.v[i];
  return s;
}
inline float vhmax(VF a) {
  float m = a.v[0];
  for (int i = 1; i < kW; i++) m = std::max(m, a.v[i]);
  return m;
}
#endif

inline VF vzero() { return vset(0.f); }

#if defined(SECBOOK_AVX512) || defined(SECBOOK_AVX2) || defined(SECBOOK_NEON)
// e^x for kW floats at once: x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2 (ln2 in two parts, so that
// n ln2 is exact enough), e^r from its Taylor series up to r^6 (relative error < 2e-7 for such r), times 2^n.
// x is first clamped to [-87, 88], where e^x and 2^n are normal floats. The library's exp, one number at a time,
// made SiLU and softmax ~10% of a decode step.
inline VF vexp(VF x) {
  x = vmin(vmax(x, vset(-87.f)), vset(88.f));
  const VF n = vround(vmul(x, vset(1.44269504f)));
  VF r = vfnma(n, vset(0.693145751953125f), x);
  r = vfnma(n, vset(1.42860682e-6f), r);
  VF e = vset(1.f / 720);
  for (float c : {1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) e = vfma(e, r, vset(c));
  return vpow2mul(e, n);
}
#endif

// sum_j a[j] b[j] (two running vector sums: one alone would wait on its own previous addition)
inline float dot(const float* a, const float* b, int64_t n) {
  VF s0 = vzero(), s1 = vzero();
  int64_t j = 0;
  for (; j + 2 * kW <= n; j += 2 * kW) {
    s0 = vfma(vload(a + j), vload(b + j), s0);
    s1 = vfma(vload(a + j + kW), vload(b + j + kW), s1);
  }
  for (; j < n; j += kW) s0 = vfma(vloadn(a + j, n - j, 0.f), vloadn(b + j, n - j, 0.f), s0);
  return vsum(vadd(s0, s1));
}

// ------------------------------------------------------------------------------------ int8 x int16 products
// One "piece" is 32 consecutive inputs: 32 int8 weights of a row times 32 int16 activations. VX holds the 32
// activations (loaded once, used for 8 rows); madd32 adds the 32 products of one row into the int32 lanes of its
// accumulator VI (which lane holds which products differs between paths; only their total, hsum8, matters).
// No lane can overflow: see the chunk bound in int8_linear.cpp.
#if defined(SECBOOK_AVX512)
using VI = __m512i;
using VX = __m512i;
inline VI vizero() { return _mm512_setzero_si512(); }
inline VX xload(const int16_t* x) { return _mm512_loadu_si512(x); }
inline VI madd32(VI acc, const int8_t* w, VX x) {
  const __m512i w16 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
#if defined(__AVX512VNNI__)
  return _mm512_dpwssd_epi32(acc, w16, x);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(w16, x));
#endif
}
#elif defined(SECBOOK_AVX2)
using VI = __m256i;
struct VX {
  __m256i lo, hi;
};
inline VI vizero() { return _mm256_setzero_si256(); }
inline VX xload(const int16_t* x) {
  return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16))};
}
inline VI madd32(VI acc, const int8_t* w, VX x) {  // 16 weights widened to int16, times 16 activations, pairs summed
  const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
  const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16)));
  return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(w0, x.lo), _mm256_madd_epi16(w1, x.hi)));
}
#elif defined(SECBOOK_NEON)
using VI = int32x4_t;
struct VX {
  int16x8_t x[4];
};
inline VI vizero() { return vdupq_n_s32(0); }
inline VX xload(const int16_t* x) { return {{vld1q_s16(x), vld1q_s16(x + 8), vld1q_s16(x + 16), vld1q_s16(x + 24)}}; }
inline VI madd32(VI acc, const int8_t* w, VX x) {  // 8 weights at a time widened to int16, multiply-added in int32
  const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
  const int16x8_t w16[4] = {vmovl_s8(vget_low_s8(w0)), vmovl_high_s8(w0), vmovl_s8(vget_low_s8(w1)), vmovl_high_s8(w1)};
  for (int j = 0; j < 4; j++) {
    acc = vmlal_s16(acc, vget_low_s16(w16[j]), vget_low_s16(x.x[j]));
    acc = vmlal_high_s16(acc, w16[j], x.x[j]);
  }
  return acc;
}
#else
using VI = int32_t;
using VX = const int16_t*;
inline VI vizero() { return 0; }
inline VX xload(const int16_t* x) { return x; }
inline VI madd32(VI acc, const int8_t* w, VX x) {  // one sum per piece: the form compilers vectorize best (~12x)
  int32_t s = 0;
  for (int i = 0; i < 32; i++) s += int32_t(w[i]) * int32_t(x[i]);
  return acc + s;
}
#endif

// out[r] = the total of accumulator r's lanes, for 8 accumulators
inline void hsum8(const VI* acc, int32_t* out) {
#if defined(SECBOOK_AVX512) || defined(SECBOOK_AVX2)
  __m256i a[8];
  for (int r = 0; r < 8; r++)
#if defined(SECBOOK_AVX512)
    a[r] = _mm256_add_epi32(_mm512_castsi512_si256(acc[r]), _mm512_extracti64x4_epi64(acc[r], 1));
#else
    a[r] = acc[r];
#endif
  // pairwise sums within 128-bit halves: q0 = [sums of rows 0-3 over lanes 0-3 | rows 0-3 over lanes 4-7], q1 rows 4-7
  const __m256i q0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
  const __m256i q1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[4], a[5]), _mm256_hadd_epi32(a[6], a[7]));
  const __m256i s = _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20), _mm256_permute2x128_si256(q0, q1, 0x31));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), s);
#elif defined(SECBOOK_NEON)
  for (int r = 0; r < 8; r++) out[r] = vaddvq_s32(acc[r]);
#else
  for (int r = 0; r < 8; r++) out[r] = acc[r];
#endif
}

// xq[k] = round(x[k] * inv) for k < n, as int16 (|x[k] * inv| <= 32767 + rounding: never saturates), ties to even
// on every path (the vector conversions use the default rounding mode, as std::nearbyint does)
inline void round_to_int16(const float* x, int64_t n, float inv, int16_t* xq) {
  int64_t k = 0;
#if defined(SECBOOK_AVX512)
  for (; k + 16 <= n; k += 16) {
    const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), _mm512_set1_ps(inv)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq + k), _mm512_cvtsepi32_epi16(q));
  }
#elif defined(SECBOOK_AVX2)
  for (; k + 16 <= n; k += 16) {
    const __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), _mm256_set1_ps(inv)));
    const __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8), _mm256_set1_ps(inv)));
    // packs works within 128-bit halves ([q0 0-3, q1 0-3 | q0 4-7, q1 4-7]); the permute puts them in order
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq + k),
                        _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8));
  }
#elif defined(SECBOOK_NEON)
  for (; k + 8 <= n; k += 8) {  // vcvtnq: to nearest, ties to even
    const int32x4_t q0 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + k), vdupq_n_f32(inv)));
    const int32x4_t q1 = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + k + 4), vdupq_n_f32(inv)));
    vst1q_s16(xq + k, vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1)));
  }
#endif
  for (; k < n; k++) xq[k] = static_cast<int16_t>(std::nearbyint(x[k] * inv));
}

// max_k |x[k]| for k < n (exact on every path)
inline float abs_max(const float* x, int64_t n) {
  float m = 0.f;
  int64_t k = 0;
#if defined(SECBOOK_AVX512) || defined(SECBOOK_AVX2) || defined(SECBOOK_NEON)
  VF vm = vzero();
  for (; k + kW <= n; k += kW) vm = vmax(vm, vabs(vload(x + k)));
  m = vhmax(vm);
#endif
  for (; k < n; k++) m = std::max(m, std::fabs(x[k]));
  return m;
}

}  // namespace
}  // namespace secbook
