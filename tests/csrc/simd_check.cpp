// simd_check.cpp — checks the vector operations of secbook/csrc/simd.h and the int8 dot products of int8_gemv.h
// on whichever path this file is compiled for (tests/test_simd.py compiles it once per path this machine can run,
// and for 64-bit ARM where a cross compiler and an emulator are installed). Plain C++, no PyTorch.
// Prints the path, then "ok", or one line per failed check (and exits with 1).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "../../secbook/csrc/int8_gemv.h"

using namespace secbook;

static int failures = 0;

#define CHECK(cond, ...)                   \
  do {                                     \
    if (!(cond)) {                         \
      std::printf("FAIL %s: ", #cond);     \
      std::printf(__VA_ARGS__);            \
      std::printf("\n");                   \
      failures++;                          \
    }                                      \
  } while (0)

// e^x within 4e-7 (relative) of the exact value over the range the kernels use; partial loads and stores touch
// nothing past their n lanes
static void check_exp_and_partial_vectors() {
  for (double x0 = -87.0; x0 <= 88.0; x0 += 0.0173) {
    float in[kW], out[kW];
    for (int i = 0; i < kW; i++) in[i] = float(x0 + 0.001 * i);
    vstore(out, vexp(vload(in)));
    for (int i = 0; i < kW && in[i] <= 88.f; i++) {  // above 88 the kernels clamp (e^88.7 is the largest float)
      const double want = std::exp(double(in[i]));
      CHECK(std::fabs(out[i] - want) <= 4e-7 * want, "exp(%g) = %g, want %g", in[i], out[i], want);
    }
  }
  float big[kW];
  for (int i = 0; i < kW; i++) big[i] = -200.f;  // far below the clamp: tiny, never NaN or negative
  vstore(big, vexp(vload(big)));
  CHECK(big[0] >= 0.f && big[0] < 1e-37f, "exp(-200) = %g", big[0]);
  for (int n = 0; n < kW; n++) {
    float buf[2 * kW], out[2 * kW];
    for (int i = 0; i < 2 * kW; i++) buf[i] = float(i + 1), out[i] = -1.f;
    VF v = vloadn(buf, n, 7.f);
    float lanes[kW];
    vstore(lanes, v);
    for (int i = 0; i < kW; i++) CHECK(lanes[i] == (i < n ? buf[i] : 7.f), "vloadn n=%d lane %d", n, i);
    vstoren(out, v, n);
    for (int i = 0; i < 2 * kW; i++) CHECK(out[i] == (i < n ? buf[i] : -1.f), "vstoren n=%d wrote lane %d", n, i);
  }
  float m[kW];
  for (int i = 0; i < kW; i++) m[i] = float((i * 7) % kW) - 3.f;
  CHECK(vhmax(vload(m)) == float(kW - 1) - 3.f, "vhmax = %g", vhmax(vload(m)));
}

// dot(a, b, n) close to the exact sum for every length (whole vectors, partial tails)
static void check_dot(std::mt19937& rng) {
  std::normal_distribution<float> g;
  for (int n : {1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 70, 576}) {
    std::vector<float> a(n), b(n);
    double want = 0., mag = 0.;
    for (int i = 0; i < n; i++) {
      a[i] = g(rng), b[i] = g(rng);
      want += double(a[i]) * b[i], mag += std::fabs(double(a[i]) * b[i]);
    }
    const float got = dot(a.data(), b.data(), n);
    CHECK(std::fabs(got - want) <= 1e-6 * mag, "dot n=%d: %g, want %g", n, got, want);
  }
}

// the activation rounding: exact maxima; ties to even like std::nearbyint; the scale that maps the maximum to 32767
static void check_rounding(std::mt19937& rng) {
  std::normal_distribution<float> g;
  std::vector<float> x(70);
  for (int i = 0; i < 70; i++) x[i] = i % 5 == 0 ? float(i / 5) - 6.5f : g(rng) * 100.f;  // -6.5, -5.5, ...: ties
  std::vector<int16_t> q(70);
  round_to_int16(x.data(), 70, 1.f, q.data());
  for (int i = 0; i < 70; i++) CHECK(q[i] == int16_t(std::nearbyint(x[i])), "round(%g) = %d", x[i], q[i]);
  float want = 0.f;
  for (int n = 1; n <= 70; n++) {
    want = std::max(want, std::fabs(x[n - 1]));
    CHECK(abs_max(x.data(), n) == want, "abs_max n=%d", n);
  }
  std::vector<float> sx(1);
  quantize_row(x.data(), 70, q.data(), sx.data());
  int top = 0;
  for (int i = 0; i < 70; i++) top = std::max(top, std::abs(int(q[i])));
  CHECK(top == 32767 && sx[0] == want / 32767.f, "quantize_row: largest %d, scale %g", top, sx[0]);
}

// dot8_int8 against the same arithmetic written out plainly: exact integer sums per chunk, each rounded to float,
// times the chunk's scale and summed in double; equal to the bit. Rows are unpadded (partial last piece through
// tail()), as in int8_linear.
static void check_int8_dots(std::mt19937& rng) {
  std::uniform_int_distribution<int> w8(-128, 127);
  std::normal_distribution<float> g;
  for (int64_t K : {31, 32, 70, 256, 300, 576, 600, 1536}) {
    const int64_t Kp = (K + 31) / 32 * 32, Kfull = K / 32 * 32, C = (K + kChunk - 1) / kChunk;
    std::vector<int8_t> w(8 * K);
    for (auto& v : w) v = int8_t(w8(rng));
    for (int64_t k = 0; k < K; k++) w[k] = k % 2 ? 127 : -128;  // row 0: the extreme weights
    std::vector<float> x(K);
    for (auto& v : x) v = g(rng) * 3.f;
    x[K / 2] = 40.f;  // an outlier: it sets its chunk's scale
    std::vector<int16_t> xq(Kp, 0);
    std::vector<float> sx(C);
    quantize_row(x.data(), K, xq.data(), sx.data());
    int8_t tails[8][32] = {};
    for (int r = 0; r < 8; r++)
      for (int64_t k = Kfull; k < K; k++) tails[r][k - Kfull] = w[r * K + k];
    float out[8];
    dot8_int8([&](int r, int64_t k) { return w.data() + r * K + k; }, [&](int r) { return tails[r]; }, Kfull, K,
              xq.data(), sx.data(), out);
    for (int r = 0; r < 8; r++) {
      double want = 0.;
      for (int64_t c = 0; c < K; c += kChunk) {
        int64_t part = 0;
        for (int64_t k = c; k < std::min(K, c + kChunk); k++) part += int64_t(w[r * K + k]) * xq[k];
        want += double(float(part)) * double(sx[c / kChunk]);
      }
      CHECK(out[r] == float(want), "dot8_int8 K=%lld row %d: %.9g, want %.9g", (long long)K, r, out[r], want);
    }
  }
}

int main() {
  std::printf("%s\n", kSimdPath);
  std::mt19937 rng(0);
  check_exp_and_partial_vectors();
  check_dot(rng);
  check_rounding(rng);
  check_int8_dots(rng);
  if (failures == 0) std::printf("ok\n");
  return failures ? 1 : 0;
}
