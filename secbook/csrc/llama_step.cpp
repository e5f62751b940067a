// secbook::llama_int8_step — the whole forward of a Llama-layout decoder (Llama, SmolLM, Qwen2, Mistral) over
// T new tokens at positions pos .. pos+T-1, in ONE call: int8 weights multiplied with the int8 x int16 arithmetic
// of int8_gemv.h, everything else (RMSNorm, RoPE, the KV-cache writes, attention, SiLU) as fp32 loops (16 numbers
// at a time with AVX-512 where the CPU has it, plain loops elsewhere).
//
// Why: a compiled PyTorch decode step for a 135M-parameter model makes ~120 matrix products and hundreds of
// small operations per token, and between them runs Python (the compiled graph's wrapper, its guards). For one
// token each small operation takes microseconds of real work, so the time around them adds up to a third of the
// step. Here the only thing left between two weight matrices is a few loops over a vector of ~1000 numbers, and
// the cores spend the step reading weights. llama.cpp (Gerganov et al., 2023) runs whole models this way.
//
// Two choices make the cores read memory at full speed (measured on a 2-core Zen 4: the products of a
// SmolLM2-135M step ~1.2x faster than with the far-apart rows of int8_matmul and one parallel region per product):
// - the weights are packed per core (secbook::llama_int8_pack, once): core p's share of every matrix of the step,
//   in the order the step uses them, is one contiguous buffer, so each core reads one long sequential stream
//   that the hardware prefetcher follows from one matrix into the next. Within a core's share the rows go in
//   blocks of 8 (8 independent sums in flight) stored as [K/32][8 rows][32 bytes], so the block is one
//   sequential run of bytes too. Gate and up rows are paired in each block (4 + 4), so the core that computes
//   gate row j also has up row j and applies SiLU(gate) * up itself.
// - the cores start once per step (one OpenMP parallel region) and meet at a barrier after each phase that needs
//   the others' results; norms and quantizing a product's input are done by every core on its own copy
//   (a few microseconds) instead of by one core while the other waits.
//
// Inputs (prepared by secbook.kernels.CppDecoder): `packed` from llama_int8_pack; fp32 row scales sqkv [L, (H +
// 2 KV) hd] (q, k, v rows), so [L, D], sgu [L, 2F] (gate, up rows), sd [L, D], shead [V], optional fp32 biases of
// the same shapes; norms [2L + 1, D] (input and post-attention norm of each layer, then the final norm); cos, sin
// [max_len, hd] (the model's own RoPE tables); the KV cache kc, vc [L, KV, max_len, hd], written in place.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "int8_gemv.h"

namespace {

using secbook::kChunk;

// sum_j a[j] b[j] with 16 separate partial sums: the compiler turns them into one vector register (one
// running sum would be a chain of dependent additions, which it may not reorder: ~2.5x slower here).
inline float dot(const float* a, const float* b, int64_t n) {
  float part[16] = {0.f};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int u = 0; u < 16; u++) part[u] += a[j + u] * b[j + u];
  float d = 0.f;
  for (; j < n; j++) d += a[j] * b[j];
  for (int u = 0; u < 16; u++) d += part[u];
  return d;
}

void rms_norm(const float* x, const float* w, int64_t D, double eps, float* y) {
  const float r = float(1.0 / std::sqrt(double(dot(x, x, D)) / D + eps));
  for (int64_t k = 0; k < D; k++) y[k] = w[k] * (x[k] * r);
}

// Rotary embedding of one head in place, Hugging Face's convention: the two halves of the head form the pairs.
void rope(float* v, const float* cos, const float* sin, int64_t hd) {
  const int64_t half = hd / 2;
  for (int64_t j = 0; j < half; j++) {
    const float a = v[j], b = v[j + half];
    v[j] = a * cos[j] - b * sin[j];
    v[j + half] = b * cos[j + half] + a * sin[j + half];
  }
}

// One weight matrix of the step: N rows of K inputs, stored in blocks of 8 rows of Kp = K rounded up to 32.
// `paired` (gate/up, N = 2F): block b holds gate rows 4b..4b+3, then up rows F+4b..F+4b+3.
struct Mat {
  int64_t N, K;
  bool paired;
  int64_t Kp() const { return (K + 31) / 32 * 32; }
  int64_t blocks() const { return paired ? (N / 2 + 3) / 4 : (N + 7) / 8; }
  // the matrix row in slot r of block b, or -1 for a slot of zeros past the end
  int64_t row(int64_t b, int r) const {
    if (!paired) return b * 8 + r < N ? b * 8 + r : -1;
    const int64_t F = N / 2, j = b * 4 + (r & 3);
    return j < F ? (r < 4 ? j : F + j) : -1;
  }
  // part p of P gets blocks [first(p), first(p + 1))
  int64_t first(int64_t p, int64_t P) const { return blocks() * p / P; }
};

// The step's matrices in the order it uses them: per layer q/k/v, o, gate/up, down; then the LM head.
std::vector<Mat> step_mats(int64_t L, int64_t Nqkv, int64_t D, int64_t HD, int64_t F, int64_t V) {
  std::vector<Mat> mats;
  for (int64_t l = 0; l < L; l++)
    mats.insert(mats.end(), {{Nqkv, D, false}, {D, HD, false}, {2 * F, D, true}, {D, F, false}});
  mats.push_back({V, D, false});
  return mats;
}

// Byte offset of each matrix's share in part p's buffer; the last entry is the buffer's size.
std::vector<int64_t> part_offsets(const std::vector<Mat>& mats, int64_t p, int64_t P) {
  std::vector<int64_t> off{0};
  for (const Mat& m : mats) off.push_back(off.back() + (m.first(p + 1, P) - m.first(p, P)) * 8 * m.Kp());
  return off;
}

// The 8 dot products of one packed block with one int16 activation row (padded with zeros to Kp): piece g of
// row r (inputs 32g .. 32g+31) is at blk + 256 g + 32 r.
#if SECBOOK_VNNI
inline void dot_block(const int8_t* blk, int64_t Kp, const int16_t* xq, const float* sx, float* out) {
  __m512 facc[8];
  for (int r = 0; r < 8; r++) facc[r] = _mm512_setzero_ps();
  for (int64_t c = 0; c < Kp; c += kChunk) {
    const int64_t e = std::min(Kp, c + kChunk);
    __m512i acc[8];
    for (int r = 0; r < 8; r++) acc[r] = _mm512_setzero_si512();
    for (int64_t k = c; k < e; k += 32) {
      const __m512i xv = _mm512_loadu_si512(xq + k);
      const int8_t* piece = blk + k * 8;
      for (int r = 0; r < 8; r++)
        acc[r] = _mm512_dpwssd_epi32(acc[r], _mm512_cvtepi8_epi16(_mm256_loadu_si256(
                                                 reinterpret_cast<const __m256i*>(piece + 32 * r))), xv);
    }
    const __m512 s = _mm512_set1_ps(sx[c / kChunk]);
    for (int r = 0; r < 8; r++) facc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]), s, facc[r]);
  }
  for (int r = 0; r < 8; r++) out[r] = _mm512_reduce_add_ps(facc[r]);
}
#else
inline void dot_block(const int8_t* blk, int64_t Kp, const int16_t* xq, const float* sx, float* out) {
  for (int r = 0; r < 8; r++) {
    float acc = 0.f;
    for (int64_t c = 0; c < Kp; c += kChunk) {
      int32_t part = 0;
      for (int64_t k = c; k < std::min(Kp, c + kChunk); k++)
        part += int32_t(blk[k / 32 * 256 + 32 * r + k % 32]) * xq[k];
      acc += float(part) * sx[c / kChunk];
    }
    out[r] = acc;
  }
}
#endif

// One core's share of a product: y[m, row] = scale[row] * sum_k x[m, k] w[row, k] + bias[row] for the blocks
// [b0, b1) stored from w on, for the M rows of x already quantized (xq: M rows of Kp, sx: M rows of chunk scales).
void product(const Mat& mat, const int8_t* w, int64_t b0, int64_t b1, const int16_t* xq, const float* sx, int64_t M,
             const float* scale, const float* bias, float* y) {
  const int64_t Kp = mat.Kp(), C = (Kp + kChunk - 1) / kChunk;
  float out[8];
  for (int64_t b = b0; b < b1; b++, w += 8 * Kp)
    for (int64_t m = 0; m < M; m++) {  // the block stays in L1 for every row of x
      dot_block(w, Kp, xq + m * Kp, sx + m * C, out);
      for (int r = 0; r < 8; r++) {
        const int64_t n = mat.row(b, r);
        if (n >= 0) y[m * mat.N + n] = out[r] * scale[n] + (bias ? bias[n] : 0.f);
      }
    }
}

int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

int team_size() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

#if SECBOOK_VNNI
// e^x for 16 floats at once: x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2 (ln2 in two parts, so
// that n ln2 is exact enough), e^r from its Taylor series up to r^6 (relative error < 2e-7 for such r), then
// times 2^n with vscalefps. std::exp, one number at a time, made SiLU and softmax ~10% of a decode step.
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.f)), _mm512_set1_ps(88.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682e-6f), r);
  __m512 e = _mm512_set1_ps(1.f / 720);
  for (float c : {1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(e, n);
}
#endif

// out[j] = silu(g[j]) * u[j] = g[j] / (1 + e^-g[j]) * u[j] for j < n
void silu_mul(const float* g, const float* u, int64_t n, float* out) {
  int64_t j = 0;
#if SECBOOK_VNNI
  for (; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + j), uv = _mm512_maskz_loadu_ps(m, u + j);
    const __m512 den = _mm512_add_ps(_mm512_set1_ps(1.f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv)));
    _mm512_mask_storeu_ps(out + j, m, _mm512_div_ps(_mm512_mul_ps(gv, uv), den));
  }
#endif
  for (; j < n; j++) out[j] = g[j] / (1.f + std::exp(-g[j])) * u[j];
}

// softmax(q . k_s * scaling, s = 0 .. p) weighted sum of v_s, for one query head; k, v: [max_len, hd].
void attend(const float* q, const float* k, const float* v, int64_t p, int64_t hd, float scaling, float* scores,
            float* out) {
#if SECBOOK_VNNI
  if (hd % 16 == 0) {  // 16 lanes at a time: each score one vector sum, each output lane a sum kept in a register
    const int64_t nv = hd / 16;
    __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (int64_t s = 0; s <= p; s++) {
      __m512 acc = _mm512_setzero_ps();
      for (int64_t c = 0; c < nv; c++)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * c), _mm512_loadu_ps(k + s * hd + 16 * c), acc);
      scores[s] = _mm512_reduce_add_ps(acc) * scaling;
    }
    for (int64_t s = 0; s <= p; s += 16) {
      const __mmask16 m = p + 1 - s >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (p + 1 - s)) - 1);
      mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, scores + s));
    }
    const __m512 mxv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t s = 0; s <= p; s += 16) {
      const __mmask16 m = p + 1 - s >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (p + 1 - s)) - 1);
      const __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + s), mxv)));
      _mm512_mask_storeu_ps(scores + s, m, e);
      sum = _mm512_add_ps(sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(sum));
    for (int64_t c = 0; c < nv; c++) {
      __m512 acc = _mm512_setzero_ps();
      for (int64_t s = 0; s <= p; s++)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(scores[s]), _mm512_loadu_ps(v + s * hd + 16 * c), acc);
      _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc, inv));
    }
    return;
  }
#endif
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t s = 0; s <= p; s++) {
    scores[s] = dot(q, k + s * hd, hd) * scaling;
    mx = std::max(mx, scores[s]);
  }
  float sum = 0.f;
  for (int64_t s = 0; s <= p; s++) sum += (scores[s] = std::exp(scores[s] - mx));
  for (int64_t j = 0; j < hd; j++) out[j] = 0.f;
  for (int64_t s = 0; s <= p; s++) {
    const float a = scores[s] / sum;
    for (int64_t j = 0; j < hd; j++) out[j] += a * v[s * hd + j];
  }
}

void check(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.scalar_type() == dtype && t.is_contiguous() && t.device().is_cpu(), "llama_int8_step: ", name,
              " must be a contiguous CPU tensor of ", c10::toString(dtype));
}

std::vector<at::Tensor> llama_int8_pack(const at::Tensor& wqkv, const at::Tensor& wo, const at::Tensor& wgu,
                                        const at::Tensor& wd, const at::Tensor& whead, int64_t parts) {
  for (auto [t, name] : {std::pair{&wqkv, "wqkv"}, {&wo, "wo"}, {&wgu, "wgu"}, {&wd, "wd"}, {&whead, "whead"}})
    check(*t, at::kChar, name);
  TORCH_CHECK(parts >= 1, "llama_int8_pack: parts must be >= 1");
  TORCH_CHECK(wqkv.dim() == 3 && wo.dim() == 3 && wgu.dim() == 3 && wd.dim() == 3 && whead.dim() == 2,
              "llama_int8_pack: layer weights [layers, out, in] and the head [vocab, in] expected");
  const int64_t L = wqkv.size(0), D = wqkv.size(2), HD = wo.size(2), F = wd.size(2);
  TORCH_CHECK(wo.size(0) == L && wgu.size(0) == L && wd.size(0) == L && wo.size(1) == D && wgu.size(1) == 2 * F &&
                  wgu.size(2) == D && wd.size(1) == D && whead.size(1) == D,
              "llama_int8_pack: the weight shapes do not fit together");
  const std::vector<Mat> mats = step_mats(L, wqkv.size(1), D, HD, F, whead.size(0));
  std::vector<const int8_t*> src;
  for (int64_t l = 0; l < L; l++)
    for (const at::Tensor* t : {&wqkv, &wo, &wgu, &wd})
      src.push_back(t->data_ptr<int8_t>() + l * t->size(1) * t->size(2));
  src.push_back(whead.data_ptr<int8_t>());
  std::vector<at::Tensor> out;
  for (int64_t p = 0; p < parts; p++) {
    const std::vector<int64_t> off = part_offsets(mats, p, parts);
    at::Tensor buf = at::zeros({off.back()}, wqkv.options());  // zeros: the padding rows and inputs
    int8_t* dst = buf.data_ptr<int8_t>();
    for (size_t j = 0; j < mats.size(); j++) {
      const Mat& m = mats[j];
      const int64_t Kp = m.Kp(), b0 = m.first(p, parts), b1 = m.first(p + 1, parts);
      for (int64_t b = b0; b < b1; b++)
        for (int r = 0; r < 8; r++) {
          const int64_t n = m.row(b, r);
          if (n < 0) continue;
          const int8_t* from = src[j] + n * m.K;
          int8_t* block = dst + off[j] + (b - b0) * 8 * Kp;
          for (int64_t k = 0; k < m.K; k += 32)  // piece k / 32 of row r
            std::copy(from + k, from + std::min(m.K, k + 32), block + k * 8 + 32 * r);
        }
    }
    out.push_back(buf);
  }
  return out;
}

at::Tensor llama_int8_step(const at::Tensor& ids, int64_t pos, const at::Tensor& embed, const at::Tensor& norms,
                           at::TensorList packed, const at::Tensor& sqkv, const std::optional<at::Tensor>& bqkv,
                           const at::Tensor& so, const std::optional<at::Tensor>& bo, const at::Tensor& sgu,
                           const std::optional<at::Tensor>& bgu, const at::Tensor& sd,
                           const std::optional<at::Tensor>& bd, const at::Tensor& shead, const at::Tensor& cos,
                           const at::Tensor& sin, at::Tensor kc, at::Tensor vc, int64_t n_heads, double eps,
                           double scaling, bool last_only) {
  check(ids, at::kLong, "ids");
  for (auto [t, name] : {std::pair{&embed, "embed"}, {&norms, "norms"}, {&sqkv, "sqkv"}, {&so, "so"},
                         {&sgu, "sgu"}, {&sd, "sd"}, {&shead, "shead"}, {&cos, "cos"}, {&sin, "sin"},
                         {&kc, "kc"}, {&vc, "vc"}})
    check(*t, at::kFloat, name);
  TORCH_CHECK(embed.dim() == 2 && norms.dim() == 2 && kc.dim() == 4 && cos.dim() == 2 && sqkv.dim() == 2 &&
                  so.dim() == 2 && sgu.dim() == 2 && sd.dim() == 2 && shead.dim() == 1,
              "llama_int8_step: embed [V, D], norms [2L+1, D], kc [L, KV, S, hd], cos [S, hd], scales [L, out] "
              "and shead [V] expected");
  const int64_t T = ids.numel(), V = embed.size(0), D = embed.size(1), L = sqkv.size(0), F = sgu.size(1) / 2;
  const int64_t KV = kc.size(1), S = kc.size(2), hd = kc.size(3), H = n_heads, HD = H * hd, Nqkv = (H + 2 * KV) * hd;
  const int64_t Vh = shead.numel();
  // one scale (and bias, if any) per output row of every layer: a wrong count would read past the end
  for (auto [sc, b, n, name] : {std::tuple{&sqkv, &bqkv, Nqkv, "qkv"}, {&so, &bo, D, "o"}, {&sgu, &bgu, 2 * F, "gu"},
                                {&sd, &bd, D, "d"}}) {
    TORCH_CHECK(sc->size(0) == L && sc->size(1) == n, "llama_int8_step: s", name,
                " must hold one scale per output row (", n, ") of every layer (", L, ")");
    if (b->has_value()) {
      check(**b, at::kFloat, name);
      TORCH_CHECK((*b)->numel() == sc->numel(), "llama_int8_step: b", name, " needs one bias per output row");
    }
  }
  TORCH_CHECK(T >= 1 && pos >= 0 && pos + T <= S, "llama_int8_step: positions ", pos, "..", pos + T - 1,
              " do not fit the cache of ", S, " positions");
  TORCH_CHECK(H >= 1 && H % KV == 0 && norms.size(0) == 2 * L + 1 && norms.size(1) == D && kc.size(0) == L &&
                  vc.sizes() == kc.sizes() && cos.size(0) >= S && cos.size(1) == hd && sin.sizes() == cos.sizes() &&
                  sgu.size(1) % 2 == 0,
              "llama_int8_step: the scale, norm, cache and RoPE shapes do not fit together");
  const std::vector<Mat> mats = step_mats(L, Nqkv, D, HD, F, Vh);
  const int64_t P = packed.size();
  TORCH_CHECK(P >= 1, "llama_int8_step: no packed weights");
  std::vector<std::vector<int64_t>> offs;
  for (int64_t p = 0; p < P; p++) {
    offs.push_back(part_offsets(mats, p, P));
    TORCH_CHECK(packed[p].scalar_type() == at::kChar && packed[p].is_contiguous() && packed[p].device().is_cpu() &&
                    packed[p].numel() == offs.back().back(),
                "llama_int8_step: packed part ", p, " of ", P, " does not hold the weights of these shapes; pack them "
                "with llama_int8_pack for this model");
  }
  const int64_t* idp = ids.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; t++)
    TORCH_CHECK(idp[t] >= 0 && idp[t] < V, "llama_int8_step: token id ", idp[t], " outside the vocabulary of ", V);
  const float *emb = embed.data_ptr<float>(), *nw = norms.data_ptr<float>();
  const float *cp = cos.data_ptr<float>(), *sp = sin.data_ptr<float>();
  float *kp = kc.data_ptr<float>(), *vp = vc.data_ptr<float>();
  auto ptr = [](const std::optional<at::Tensor>& b, int64_t off) {
    return b.has_value() ? b->data_ptr<float>() + off : nullptr;
  };
  const int64_t rep = H / KV, first = last_only ? T - 1 : 0, n_out = T - first;
  at::Tensor logits = at::empty({n_out, Vh}, embed.options());
  float* lp = logits.data_ptr<float>();
  // shared between the cores: products' outputs (each core writes its own rows), attention's output
  std::vector<float> qkv(T * Nqkv), att(T * HD), tmp(T * D), gu(T * 2 * F), act(T * F);
  const int64_t Kmax = std::max({D, HD, F}) + 32;

#pragma omp parallel num_threads(std::min<int64_t>(P, at::get_num_threads()))
  {
    const int tid = thread_id(), nth = team_size();
    // this core's own copies: the residual stream x, a normed row h, a product's quantized input
    std::vector<float> x(T * D), h(T * D), sx(T * ((Kmax + kChunk - 1) / kChunk)), scores(S);
    std::vector<int16_t> xq(T * Kmax, 0);
    auto quantize = [&](const float* src, int64_t M, int64_t K) {  // M rows of K into xq (rows of Kp), sx
      const int64_t Kp = (K + 31) / 32 * 32, C = (Kp + kChunk - 1) / kChunk;
      for (int64_t m = 0; m < M; m++) secbook::quantize_row(src + m * K, K, xq.data() + m * Kp, sx.data() + m * C);
    };
    // this core's parts of matrix j (the caller then waits at a barrier for the other cores' rows)
    auto run = [&](int64_t j, int64_t M, const float* scale, const float* bias, float* y) {
      for (int64_t p = tid; p < P; p += nth)
        product(mats[j], packed[p].data_ptr<int8_t>() + offs[p][j], mats[j].first(p, P), mats[j].first(p + 1, P),
                xq.data(), sx.data(), M, scale, bias, y);
    };
    auto split = [&](int64_t n) { return std::pair{n * tid / nth, n * (tid + 1) / nth}; };
    for (int64_t t = 0; t < T; t++) std::copy(emb + idp[t] * D, emb + (idp[t] + 1) * D, x.begin() + t * D);
    for (int64_t l = 0; l < L; l++) {
      // attention block: x += o(attention(rope(q), rope(k), v)) of the normed x
      for (int64_t t = 0; t < T; t++) rms_norm(&x[t * D], nw + 2 * l * D, D, eps, &h[t * D]);
      quantize(h.data(), T, D);
      run(4 * l, T, sqkv.data_ptr<float>() + l * Nqkv, ptr(bqkv, l * Nqkv), qkv.data());
#pragma omp barrier
      {  // RoPE on every query and key head, then the keys and values into the cache
        auto [b, e] = split(T * (H + KV));
        for (int64_t ti = b; ti < e; ti++) {
          const int64_t t = ti / (H + KV), i = ti % (H + KV), p = pos + t;
          float* row = &qkv[t * Nqkv];  // H query heads, KV key heads, KV value heads
          rope(row + i * hd, cp + p * hd, sp + p * hd, hd);
          if (i >= H) {
            const int64_t g = i - H, off = ((l * KV + g) * S + p) * hd;
            std::copy(row + (H + g) * hd, row + (H + g + 1) * hd, kp + off);
            std::copy(row + (H + KV + g) * hd, row + (H + KV + g + 1) * hd, vp + off);
          }
        }
      }
#pragma omp barrier
      {  // (token, head) pairs split over the cores; query head i reads key/value head i / rep (grouped-query)
        auto [b, e] = split(T * H);
        for (int64_t th = b; th < e; th++) {
          const int64_t t = th / H, i = th % H, base = (l * KV + i / rep) * S * hd;
          attend(&qkv[t * Nqkv + i * hd], kp + base, vp + base, pos + t, hd, float(scaling), scores.data(),
                 &att[th * hd]);
        }
      }
#pragma omp barrier
      quantize(att.data(), T, HD);
      run(4 * l + 1, T, so.data_ptr<float>() + l * D, ptr(bo, l * D), tmp.data());
#pragma omp barrier
      for (int64_t k = 0; k < T * D; k++) x[k] += tmp[k];
      // MLP block: x += down(silu(gate) * up) of the normed x; each core has the gate and up rows of its blocks
      for (int64_t t = 0; t < T; t++) rms_norm(&x[t * D], nw + (2 * l + 1) * D, D, eps, &h[t * D]);
      quantize(h.data(), T, D);
      run(4 * l + 2, T, sgu.data_ptr<float>() + l * 2 * F, ptr(bgu, l * 2 * F), gu.data());
      for (int64_t p = tid; p < P; p += nth) {
        const int64_t j0 = 4 * mats[4 * l + 2].first(p, P), j1 = std::min(F, 4 * mats[4 * l + 2].first(p + 1, P));
        for (int64_t t = 0; t < T; t++)
          if (j1 > j0) silu_mul(&gu[t * 2 * F + j0], &gu[t * 2 * F + F + j0], j1 - j0, &act[t * F + j0]);
      }
#pragma omp barrier
      quantize(act.data(), T, F);
      run(4 * l + 3, T, sd.data_ptr<float>() + l * D, ptr(bd, l * D), tmp.data());
#pragma omp barrier
      for (int64_t k = 0; k < T * D; k++) x[k] += tmp[k];
    }
    for (int64_t t = first; t < T; t++) rms_norm(&x[t * D], nw + 2 * L * D, D, eps, &h[(t - first) * D]);
    quantize(h.data(), n_out, D);
    run(4 * L, n_out, shead.data_ptr<float>(), nullptr, lp);
  }
  return logits;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(secbook, m) {
  m.def("llama_int8_pack(Tensor wqkv, Tensor wo, Tensor wgu, Tensor wd, Tensor whead, int parts) -> Tensor[]");
  m.def("llama_int8_step(Tensor ids, int pos, Tensor embed, Tensor norms, Tensor[] packed, Tensor sqkv, "
        "Tensor? bqkv, Tensor so, Tensor? bo, Tensor sgu, Tensor? bgu, Tensor sd, Tensor? bd, Tensor shead, "
        "Tensor cos, Tensor sin, Tensor(a!) kc, Tensor(b!) vc, int n_heads, float eps, float scaling, "
        "bool last_only) -> Tensor");
}

TORCH_LIBRARY_IMPL(secbook, CPU, m) {
  m.impl("llama_int8_pack", llama_int8_pack);
  m.impl("llama_int8_step", llama_int8_step);
}
