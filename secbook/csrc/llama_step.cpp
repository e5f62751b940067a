// secbook::llama_int8_step — the whole forward of a Llama-layout decoder (Llama, SmolLM, Qwen2, Mistral) over
// T new tokens at positions pos .. pos+T-1, in ONE call: int8 weights multiplied by the kernel of int8_gemv.h,
// everything else (RMSNorm, RoPE, the KV-cache writes, attention, SiLU) as plain fp32 loops.
//
// Why: a compiled PyTorch decode step for a 135M-parameter model makes ~120 matrix products and hundreds of
// small operations per token, and between them runs Python (the compiled graph's wrapper, its guards). For one
// token each small operation takes microseconds of real work, so the time around them adds up to a third of the
// step. Here the only thing left between two weight matrices is a few loops over a vector of ~1000 numbers, and
// the cores spend the step reading weights. llama.cpp (Gerganov et al., 2023) runs whole models this way.
//
// Layout (prepared by secbook.kernels.CppDecoder): the layers' weights stacked, one tensor per kind —
// wqkv [L, (H + 2 KV) hd, D] (q, k, v rows), wo [L, D, H hd], wgu [L, 2F, D] (gate, up rows), wd [L, D, F],
// int8 with fp32 scales [L, N] and optional fp32 biases [L, N]; norms [2L + 1, D] (input and post-attention
// norm of each layer, then the final norm); cos, sin [max_len, hd] (the model's own RoPE tables); the KV cache
// kc, vc [L, KV, max_len, hd], written in place.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <optional>

#include "int8_gemv.h"

namespace {

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

// y [M, N] = x [M, K] @ (int8 w [N, K]).T * scale [N] + bias [N] (if any), for layer l of a stacked weight.
void linear(const float* x, int64_t M, const at::Tensor& w, const at::Tensor& s, const std::optional<at::Tensor>& b,
            int64_t l, float* y) {
  const int64_t N = w.size(-2), K = w.size(-1);
  secbook::int8_matmul(x, M, K, w.data_ptr<int8_t>() + l * N * K, s.data_ptr<float>() + l * N, N, y);
  if (b.has_value()) {
    const float* bp = b->data_ptr<float>() + l * N;
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) y[m * N + n] += bp[n];
  }
}

// softmax(q . k_s * scaling, s = 0 .. p) weighted sum of v_s, for one query head; k, v: [max_len, hd].
void attend(const float* q, const float* k, const float* v, int64_t p, int64_t hd, float scaling, float* scores,
            float* out) {
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

at::Tensor llama_int8_step(const at::Tensor& ids, int64_t pos, const at::Tensor& embed, const at::Tensor& norms,
                           const at::Tensor& wqkv, const at::Tensor& sqkv, const std::optional<at::Tensor>& bqkv,
                           const at::Tensor& wo, const at::Tensor& so, const std::optional<at::Tensor>& bo,
                           const at::Tensor& wgu, const at::Tensor& sgu, const std::optional<at::Tensor>& bgu,
                           const at::Tensor& wd, const at::Tensor& sd, const std::optional<at::Tensor>& bd,
                           const at::Tensor& whead, const at::Tensor& shead, const at::Tensor& cos,
                           const at::Tensor& sin, at::Tensor kc, at::Tensor vc, int64_t n_heads, double eps,
                           double scaling, bool last_only) {
  check(ids, at::kLong, "ids");
  for (auto [t, name] : {std::pair{&embed, "embed"}, {&norms, "norms"}, {&sqkv, "sqkv"}, {&so, "so"},
                         {&sgu, "sgu"}, {&sd, "sd"}, {&shead, "shead"}, {&cos, "cos"}, {&sin, "sin"},
                         {&kc, "kc"}, {&vc, "vc"}})
    check(*t, at::kFloat, name);
  for (auto [t, name] : {std::pair{&wqkv, "wqkv"}, {&wo, "wo"}, {&wgu, "wgu"}, {&wd, "wd"}, {&whead, "whead"}})
    check(*t, at::kChar, name);
  const int64_t T = ids.numel(), V = embed.size(0), D = embed.size(1), L = wqkv.size(0);
  const int64_t KV = kc.size(1), S = kc.size(2), hd = kc.size(3), H = n_heads, F = wd.size(2);
  const int64_t Nqkv = (H + 2 * KV) * hd;
  // one scale (and bias, if any) per output row of every layer: a wrong count would read past the end
  for (auto [w, sc, b, name] : {std::tuple{&wqkv, &sqkv, &bqkv, "qkv"}, {&wo, &so, &bo, "o"}, {&wgu, &sgu, &bgu, "gu"},
                                {&wd, &sd, &bd, "d"}}) {
    TORCH_CHECK(w->dim() == 3 && sc->numel() == w->size(0) * w->size(1), "llama_int8_step: w", name,
                " must be [layers, out, in] with one scale per output row of every layer in s", name);
    if (b->has_value()) {
      check(**b, at::kFloat, name);
      TORCH_CHECK((*b)->numel() == sc->numel(), "llama_int8_step: b", name, " needs one bias per output row");
    }
  }
  TORCH_CHECK(whead.dim() == 2 && shead.numel() == whead.size(0) && embed.dim() == 2 && norms.dim() == 2 &&
                  kc.dim() == 4 && cos.dim() == 2 && norms.size(1) == D,
              "llama_int8_step: whead [V, D] with one scale per row, embed [V, D], norms [2L+1, D], kc [L, KV, S, hd], "
              "cos [S, hd] expected");
  TORCH_CHECK(T >= 1 && pos >= 0 && pos + T <= S, "llama_int8_step: positions ", pos, "..", pos + T - 1,
              " do not fit the cache of ", S, " positions");
  TORCH_CHECK(H % KV == 0 && wqkv.size(1) == Nqkv && wqkv.size(2) == D && wo.size(1) == D && wo.size(2) == H * hd &&
                  wgu.size(1) == 2 * F && wgu.size(2) == D && wd.size(1) == D && norms.size(0) == 2 * L + 1 &&
                  whead.size(1) == D && wo.size(0) == L && wgu.size(0) == L && wd.size(0) == L && kc.size(0) == L && vc.sizes() == kc.sizes() && cos.size(0) >= S &&
                  cos.size(1) == hd && sin.sizes() == cos.sizes(),
              "llama_int8_step: the weight, cache and RoPE shapes do not fit together");
  const int64_t* idp = ids.data_ptr<int64_t>();
  const float *emb = embed.data_ptr<float>(), *nw = norms.data_ptr<float>();
  const float *cp = cos.data_ptr<float>(), *sp = sin.data_ptr<float>();
  float *kp = kc.data_ptr<float>(), *vp = vc.data_ptr<float>();
  const int64_t rep = H / KV;

  std::vector<float> x(T * D), h(T * D), tmp(T * D), qkv(T * Nqkv), att(T * H * hd), gu(T * 2 * F), act(T * F);
  for (int64_t t = 0; t < T; t++) {
    TORCH_CHECK(idp[t] >= 0 && idp[t] < V, "llama_int8_step: token id ", idp[t], " outside the vocabulary of ", V);
    std::copy(emb + idp[t] * D, emb + (idp[t] + 1) * D, x.begin() + t * D);
  }
  for (int64_t l = 0; l < L; l++) {
    // attention block: x += o(attention(rope(q), rope(k), v)) of the normed x
    for (int64_t t = 0; t < T; t++) rms_norm(&x[t * D], nw + 2 * l * D, D, eps, &h[t * D]);
    linear(h.data(), T, wqkv, sqkv, bqkv, l, qkv.data());
    for (int64_t t = 0; t < T; t++) {
      const int64_t p = pos + t;
      float* row = &qkv[t * Nqkv];  // H query heads, KV key heads, KV value heads
      for (int64_t i = 0; i < H + KV; i++) rope(row + i * hd, cp + p * hd, sp + p * hd, hd);
      for (int64_t g = 0; g < KV; g++) {
        const int64_t off = ((l * KV + g) * S + p) * hd;
        std::copy(row + (H + g) * hd, row + (H + g + 1) * hd, kp + off);
        std::copy(row + (H + KV + g) * hd, row + (H + KV + g + 1) * hd, vp + off);
      }
    }
    at::parallel_for(0, T * H, 1, [&](int64_t b, int64_t e) {  // (token, head) pairs split over the cores
      std::vector<float> scores(S);
      for (int64_t th = b; th < e; th++) {
        const int64_t t = th / H, i = th % H;  // query head i reads key/value head i / rep (grouped-query)
        const int64_t base = (l * KV + i / rep) * S * hd;
        attend(&qkv[t * Nqkv + i * hd], kp + base, vp + base, pos + t, hd, float(scaling), scores.data(),
               &att[th * hd]);
      }
    });
    linear(att.data(), T, wo, so, bo, l, tmp.data());
    for (int64_t k = 0; k < T * D; k++) x[k] += tmp[k];
    // MLP block: x += down(silu(gate) * up) of the normed x
    for (int64_t t = 0; t < T; t++) rms_norm(&x[t * D], nw + (2 * l + 1) * D, D, eps, &h[t * D]);
    linear(h.data(), T, wgu, sgu, bgu, l, gu.data());
    at::parallel_for(0, T * F, 256, [&](int64_t b, int64_t e) {
      for (int64_t tj = b; tj < e; tj++) {
        const int64_t t = tj / F, j = tj % F;
        const float g = gu[t * 2 * F + j], u = gu[t * 2 * F + F + j];
        act[tj] = g / (1.f + std::exp(-g)) * u;  // silu(gate) * up
      }
    });
    linear(act.data(), T, wd, sd, bd, l, tmp.data());
    for (int64_t k = 0; k < T * D; k++) x[k] += tmp[k];
  }
  const int64_t first = last_only ? T - 1 : 0, n_out = T - first;
  for (int64_t t = first; t < T; t++) rms_norm(&x[t * D], nw + 2 * L * D, D, eps, &h[(t - first) * D]);
  at::Tensor logits = at::empty({n_out, whead.size(0)}, embed.options());
  linear(h.data(), n_out, whead, shead, std::nullopt, 0, logits.data_ptr<float>());
  return logits;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(secbook, m) {
  m.def("llama_int8_step(Tensor ids, int pos, Tensor embed, Tensor norms, Tensor wqkv, Tensor sqkv, Tensor? bqkv, "
        "Tensor wo, Tensor so, Tensor? bo, Tensor wgu, Tensor sgu, Tensor? bgu, Tensor wd, Tensor sd, Tensor? bd, "
        "Tensor whead, Tensor shead, Tensor cos, Tensor sin, Tensor(a!) kc, Tensor(b!) vc, int n_heads, float eps, "
        "float scaling, bool last_only) -> Tensor");
}

TORCH_LIBRARY_IMPL(secbook, CPU, m) { m.impl("llama_int8_step", llama_int8_step); }
