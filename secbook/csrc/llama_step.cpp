// secbook::llama_step — the whole forward of a Llama-layout decoder (Llama, SmolLM, Qwen2, Qwen3, Mistral) over T
// new tokens at positions pos .. pos+T-1, in ONE call. The weights are int8 with one fp32 scale per row,
// multiplied with the int8 x int16 arithmetic of int8_gemv.h, or fp32 (scales of 1), multiplied in fp32;
// everything else (RMSNorm, RoPE, the KV-cache writes, attention, SiLU) runs as fp32 loops, written with the
// vector operations of simd.h (16 numbers at a time with AVX-512, 8 with AVX2, plain loops elsewhere). Two
// variations of the layer are options: Qwen3's RMSNorm of each query and key head before RoPE (`qk_norms`), and
// Mistral's sliding-window attention (`windows`: per layer, how many of the latest positions a query sees; 0 =
// all of them).
//
// Why: a compiled PyTorch decode step for a 135M-parameter model makes ~120 matrix products and hundreds of
// small operations per token, and between them runs Python (the compiled graph's wrapper, its guards). For one
// token each small operation takes microseconds of real work, so the time around them adds up to a third of the
// step. Here the only thing left between two weight matrices is a few loops over a vector of ~1000 numbers, and
// the cores spend the step reading weights. llama.cpp (Gerganov et al., 2023) runs whole models this way.
//
// Two choices make the cores read memory at full speed (measured on a 2-core Zen 4: the products of a
// SmolLM2-135M step ~1.2x faster than with the far-apart rows of int8_matmul and one parallel region per product):
// - the weights are packed per core (secbook::llama_pack, once): core p's share of every matrix of the step,
//   in the order the step uses them, is one contiguous buffer, so each core reads one long sequential stream
//   that the hardware prefetcher follows from one matrix into the next. Within a core's share the rows go in
//   blocks of 8 (8 independent sums in flight) stored as [K/32][8 rows][32 int8] or [K/16][8 rows][16 fp32],
//   so the block is one sequential run of bytes too. Gate and up rows are paired in each block (4 + 4), so the
//   core that computes gate row j also has up row j and applies SiLU(gate) * up itself.
// - the cores start once per step (one OpenMP parallel region) and meet at a barrier after each phase that needs
//   the others' results; norms and quantizing a product's input are done by every core on its own copy
//   (a few microseconds) instead of by one core while the other waits.
//
// Inputs (prepared by secbook.kernels.CppDecoder): `packed` from llama_pack; fp32 row scales sqkv [L, (H +
// 2 KV) hd] (q, k, v rows), so [L, D], sgu [L, 2F] (gate, up rows), sd [L, D], shead [V], optional fp32 biases of
// the same shapes; norms [2L + 1, D] (input and post-attention norm of each layer, then the final norm); cos, sin
// [max_len, hd] (the model's own RoPE tables); the KV cache kc, vc [L, KV, max_len, hd], written in place;
// optional qk_norms [L, 2, hd] (the q and k head norms of each layer) and windows [L] (or empty: no windows).
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

#ifndef SECBOOK_NS
#define SECBOOK_NS secbook
#endif

namespace {

using namespace secbook;

// y = w * x / rms(x); y may be x itself
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

// One weight matrix of the step: N rows of K inputs, stored in blocks of 8 rows; a row is cut into pieces of
// `piece` inputs (32 int8 weights or 16 fp32 ones: 32 or 64 bytes) and K is padded with zeros to Kp, a multiple
// of the piece. `paired` (gate/up, N = 2F): block b holds gate rows 4b..4b+3, then up rows F+4b..F+4b+3.
struct Mat {
  int64_t N, K;
  bool paired;
  int64_t piece;
  int64_t Kp() const { return (K + piece - 1) / piece * piece; }
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
std::vector<Mat> step_mats(int64_t L, int64_t Nqkv, int64_t D, int64_t HD, int64_t F, int64_t V, int64_t piece) {
  std::vector<Mat> mats;
  for (int64_t l = 0; l < L; l++)
    mats.insert(mats.end(), {{Nqkv, D, false, piece}, {D, HD, false, piece}, {2 * F, D, true, piece},
                             {D, F, false, piece}});
  mats.push_back({V, D, false, piece});
  return mats;
}

// Offset (in weights) of each matrix's share in part p's buffer; the last entry is the buffer's length.
std::vector<int64_t> part_offsets(const std::vector<Mat>& mats, int64_t p, int64_t P) {
  std::vector<int64_t> off{0};
  for (const Mat& m : mats) off.push_back(off.back() + (m.first(p + 1, P) - m.first(p, P)) * 8 * m.Kp());
  return off;
}

template <typename W>
constexpr int64_t kPiece = sizeof(W) == 1 ? 32 : 16;  // inputs per piece: 32 bytes of int8, 64 bytes of fp32

// A product's input rows, in the form the weights need: int16 with chunk scales (int8 weights) or fp32 (fp32
// weights), each row padded with zeros to Kp.
struct Input {
  const int16_t* xq;
  const float* sx;
  const float* xf;
};

// The 8 dot products of one packed block with input row m: piece g of row r (inputs 32g .. 32g+31) is at
// blk + 256 g + 32 r; Kp is a multiple of 32, so there is no partial piece.
inline void dot_block(const int8_t* blk, int64_t Kp, const Input& in, int64_t m, float* out) {
  dot8_int8([&](int r, int64_t k) { return blk + k * 8 + 32 * r; }, [&](int r) { return blk; }, Kp, Kp,
            in.xq + m * Kp, in.sx + m * ((Kp + kChunk - 1) / kChunk), out);
}

// The same for fp32 weights and fp32 inputs: piece g of row r (inputs 16g .. 16g+15) is at blk + 128 g + 16 r.
inline void dot_block(const float* blk, int64_t Kp, const Input& in, int64_t m, float* out) {
  static_assert(16 % kW == 0, "a piece of 16 inputs must be whole vectors");
  const float* x = in.xf + m * Kp;
  VF acc[8];
  for (int r = 0; r < 8; r++) acc[r] = vzero();
  for (int64_t k = 0; k < Kp; k += 16)
    for (int h = 0; h < 16; h += kW) {
      const VF xv = vload(x + k + h);
      for (int r = 0; r < 8; r++) acc[r] = vfma(vload(blk + k * 8 + 16 * r + h), xv, acc[r]);
    }
  for (int r = 0; r < 8; r++) out[r] = vsum(acc[r]);
}

// One core's share of a product: y[m, row] = scale[row] * sum_k x[m, k] w[row, k] + bias[row] for the blocks
// [b0, b1) stored from w on, for the M input rows `in`.
template <typename W>
void product(const Mat& mat, const W* w, int64_t b0, int64_t b1, const Input& in, int64_t M, const float* scale,
             const float* bias, float* y) {
  const int64_t Kp = mat.Kp();
  float out[8];
  for (int64_t b = b0; b < b1; b++, w += 8 * Kp)
    for (int64_t m = 0; m < M; m++) {  // the block stays in L1 for every row of x
      dot_block(w, Kp, in, m, out);
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

// out[j] = silu(g[j]) * u[j] = g[j] / (1 + e^-g[j]) * u[j] for j < n
void silu_mul(const float* g, const float* u, int64_t n, float* out) {
  for (int64_t j = 0; j < n; j += kW) {
    const VF gv = vloadn(g + j, n - j, 0.f), uv = vloadn(u + j, n - j, 0.f);
    vstoren(out + j, vdiv(vmul(gv, uv), vadd(vset(1.f), vexp(vsub(vzero(), gv)))), n - j);
  }
}

// a[s] <- e^(a[s] - max a) for s < n; returns their sum
float exp_shifted(float* a, int64_t n) {
  VF mx = vset(-std::numeric_limits<float>::infinity());
  for (int64_t s = 0; s < n; s += kW) mx = vmax(mx, vloadn(a + s, n - s, -std::numeric_limits<float>::infinity()));
  const VF m = vset(vhmax(mx));
  VF sum = vzero();
  for (int64_t s = 0; s < n; s += kW) {
    vstoren(a + s, vexp(vsub(vloadn(a + s, n - s, 0.f), m)), n - s);
    sum = vadd(sum, vloadn(a + s, n - s, 0.f));  // the lanes past n count as 0
  }
  return vsum(sum);
}

// out[c .. c + NV kW) = inv * sum_s a[s] v[s, c ..] for s < n; v: rows of hd; the NV sums stay in registers
template <int NV>
void weighted_rows(const float* a, const float* v, int64_t n, int64_t hd, float inv, float* out) {
  VF acc[NV];
  for (int u = 0; u < NV; u++) acc[u] = vzero();
  for (int64_t s = 0; s < n; s++) {
    const VF as = vset(a[s]);
    for (int u = 0; u < NV; u++) acc[u] = vfma(as, vload(v + s * hd + u * kW), acc[u]);
  }
  for (int u = 0; u < NV; u++) vstore(out + u * kW, vmul(acc[u], vset(inv)));
}

// softmax(q . k_s * scaling, s = s0 .. p) weighted sum of v_s, for one query head; k, v: [max_len, hd]. The
// positions before s0 are outside the sliding window (or s0 = 0).
void attend(const float* q, const float* k, const float* v, int64_t s0, int64_t p, int64_t hd, float scaling,
            float* scores, float* out) {
  const int64_t n = p + 1 - s0;
  k += s0 * hd, v += s0 * hd;
  for (int64_t s = 0; s < n; s++) scores[s] = dot(q, k + s * hd, hd) * scaling;
  const float inv = 1.f / exp_shifted(scores, n);
  if (hd % kW == 0) {  // up to 8 vectors of the output at a time, their sums in registers
    for (int64_t c = 0; c < hd; c += 8 * kW) {
      const float *vc = v + c;
      float* oc = out + c;
      switch (std::min<int64_t>(8, (hd - c) / kW)) {
        case 1: weighted_rows<1>(scores, vc, n, hd, inv, oc); break;
        case 2: weighted_rows<2>(scores, vc, n, hd, inv, oc); break;
        case 3: weighted_rows<3>(scores, vc, n, hd, inv, oc); break;
        case 4: weighted_rows<4>(scores, vc, n, hd, inv, oc); break;
        case 5: weighted_rows<5>(scores, vc, n, hd, inv, oc); break;
        case 6: weighted_rows<6>(scores, vc, n, hd, inv, oc); break;
        case 7: weighted_rows<7>(scores, vc, n, hd, inv, oc); break;
        default: weighted_rows<8>(scores, vc, n, hd, inv, oc); break;
      }
    }
    return;
  }
  for (int64_t j = 0; j < hd; j++) out[j] = 0.f;
  for (int64_t s = 0; s < n; s++)
    for (int64_t j = 0; j < hd; j++) out[j] += scores[s] * v[s * hd + j];
  for (int64_t j = 0; j < hd; j++) out[j] *= inv;
}

void check(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.scalar_type() == dtype && t.is_contiguous() && t.device().is_cpu(), "secbook::llama_step/pack: ",
              name, " must be a contiguous CPU tensor of ", c10::toString(dtype));
}

template <typename W>
std::vector<at::Tensor> pack(const std::vector<Mat>& mats, const std::vector<const W*>& src, int64_t parts,
                             const at::TensorOptions& options) {
  std::vector<at::Tensor> out;
  for (int64_t p = 0; p < parts; p++) {
    const std::vector<int64_t> off = part_offsets(mats, p, parts);
    at::Tensor buf = at::zeros({off.back()}, options);  // zeros: the padding rows and inputs
    W* dst = buf.data_ptr<W>();
    for (size_t j = 0; j < mats.size(); j++) {
      const Mat& m = mats[j];
      const int64_t Kp = m.Kp(), b0 = m.first(p, parts), b1 = m.first(p + 1, parts);
      for (int64_t b = b0; b < b1; b++)
        for (int r = 0; r < 8; r++) {
          const int64_t n = m.row(b, r);
          if (n < 0) continue;
          const W* from = src[j] + n * m.K;
          W* block = dst + off[j] + (b - b0) * 8 * Kp;
          for (int64_t k = 0; k < m.K; k += m.piece)  // piece k / piece of row r
            std::copy(from + k, from + std::min(m.K, k + m.piece), block + k * 8 + m.piece * r);
        }
    }
    out.push_back(buf);
  }
  return out;
}

std::vector<at::Tensor> llama_pack(const at::Tensor& wqkv, const at::Tensor& wo, const at::Tensor& wgu,
                                   const at::Tensor& wd, const at::Tensor& whead, int64_t parts) {
  const at::ScalarType dt = wqkv.scalar_type();
  TORCH_CHECK(dt == at::kChar || dt == at::kFloat, "secbook::llama_pack: int8 or float32 weights expected");
  for (auto [t, name] : {std::pair{&wqkv, "wqkv"}, {&wo, "wo"}, {&wgu, "wgu"}, {&wd, "wd"}, {&whead, "whead"}})
    check(*t, dt, name);
  TORCH_CHECK(parts >= 1, "secbook::llama_pack: parts must be >= 1");
  TORCH_CHECK(wqkv.dim() == 3 && wo.dim() == 3 && wgu.dim() == 3 && wd.dim() == 3 && whead.dim() == 2,
              "secbook::llama_pack: layer weights [layers, out, in] and the head [vocab, in] expected");
  const int64_t L = wqkv.size(0), D = wqkv.size(2), HD = wo.size(2), F = wd.size(2);
  TORCH_CHECK(wo.size(0) == L && wgu.size(0) == L && wd.size(0) == L && wo.size(1) == D && wgu.size(1) == 2 * F &&
                  wgu.size(2) == D && wd.size(1) == D && whead.size(1) == D,
              "secbook::llama_pack: the weight shapes do not fit together");
  auto go = [&](auto zero) {
    using W = decltype(zero);
    const std::vector<Mat> mats = step_mats(L, wqkv.size(1), D, HD, F, whead.size(0), kPiece<W>);
    std::vector<const W*> src;
    for (int64_t l = 0; l < L; l++)
      for (const at::Tensor* t : {&wqkv, &wo, &wgu, &wd}) src.push_back(t->data_ptr<W>() + l * t->size(1) * t->size(2));
    src.push_back(whead.data_ptr<W>());
    return pack<W>(mats, src, parts, wqkv.options());
  };
  return dt == at::kChar ? go(int8_t(0)) : go(0.f);
}

// Everything the step needs besides the weights, read from the tensors once.
struct Model {
  int64_t T, V, D, L, F, KV, S, hd, H, HD, Nqkv, Vh, pos, first, n_out;
  const int64_t* ids;
  const float *embed, *norms, *cos, *sin, *sqkv, *so, *sgu, *sd, *shead, *bqkv, *bo, *bgu, *bd;
  const float* qk_norms;  // [L, 2, hd] or null
  const int64_t* windows;  // [L] or null
  float *kc, *vc;
  double eps;
  float scaling;
};

// The decode step with weights of type W (int8 with row scales, or fp32 with scales of 1): see the top of the file.
template <typename W>
void run_step(const Model& md, const std::vector<Mat>& mats, at::TensorList packed,
              const std::vector<std::vector<int64_t>>& offs, float* lp) {
  const int64_t T = md.T, D = md.D, L = md.L, F = md.F, KV = md.KV, S = md.S, hd = md.hd, H = md.H, HD = md.HD;
  const int64_t Nqkv = md.Nqkv, pos = md.pos, P = packed.size(), rep = H / KV;
  const float *nw = md.norms, *cp = md.cos, *sp = md.sin;
  float *kp = md.kc, *vp = md.vc;
  auto at_layer = [](const float* b, int64_t off) { return b ? b + off : nullptr; };
  // shared between the cores: products' outputs (each core writes its own rows), attention's output
  std::vector<float> qkv(T * Nqkv), att(T * HD), tmp(T * D), gu(T * 2 * F), act(T * F);
  const int64_t Kmax = std::max({D, HD, F}) + 32;

#pragma omp parallel num_threads(std::min<int64_t>(P, at::get_num_threads()))
  {
    const int tid = thread_id(), nth = team_size();
    // this core's own copies: the residual stream x, a normed row h, a product's input in the weights' form
    std::vector<float> x(T * D), h(T * D), sx(T * ((Kmax + kChunk - 1) / kChunk)), xf, scores(S);
    std::vector<int16_t> xq;
    if constexpr (sizeof(W) == 1) xq.assign(T * Kmax, 0); else xf.assign(T * Kmax, 0.f);
    const Input in{xq.data(), sx.data(), xf.data()};
    auto prepare = [&](const float* src, int64_t M, int64_t K) {  // M rows of K as the product's input
      const int64_t Kp = (K + kPiece<W> - 1) / kPiece<W> * kPiece<W>;
      for (int64_t m = 0; m < M; m++)
        if constexpr (sizeof(W) == 1) {
          quantize_row(src + m * K, K, xq.data() + m * Kp, sx.data() + m * ((Kp + kChunk - 1) / kChunk));
        } else {
          std::copy(src + m * K, src + (m + 1) * K, xf.data() + m * Kp);
          std::fill(xf.data() + m * Kp + K, xf.data() + (m + 1) * Kp, 0.f);  // padding: zero weights x zero
        }
    };
    // this core's parts of matrix j (the caller then waits at a barrier for the other cores' rows)
    auto run = [&](int64_t j, int64_t M, const float* scale, const float* bias, float* y) {
      for (int64_t p = tid; p < P; p += nth)
        product(mats[j], packed[p].data_ptr<W>() + offs[p][j], mats[j].first(p, P), mats[j].first(p + 1, P), in, M,
                scale, bias, y);
    };
    auto split = [&](int64_t n) { return std::pair{n * tid / nth, n * (tid + 1) / nth}; };
    for (int64_t t = 0; t < T; t++)
      std::copy(md.embed + md.ids[t] * D, md.embed + (md.ids[t] + 1) * D, x.begin() + t * D);
    for (int64_t l = 0; l < L; l++) {
      // attention block: x += o(attention(rope(q), rope(k), v)) of the normed x
      for (int64_t t = 0; t < T; t++) rms_norm(&x[t * D], nw + 2 * l * D, D, md.eps, &h[t * D]);
      prepare(h.data(), T, D);
      run(4 * l, T, md.sqkv + l * Nqkv, at_layer(md.bqkv, l * Nqkv), qkv.data());
#pragma omp barrier
      {  // (Qwen3: RMSNorm of each head, then) RoPE on every query and key head, the keys and values into the cache
        auto [b, e] = split(T * (H + KV));
        for (int64_t ti = b; ti < e; ti++) {
          const int64_t t = ti / (H + KV), i = ti % (H + KV), p = pos + t;
          float* row = &qkv[t * Nqkv];  // H query heads, KV key heads, KV value heads
          if (md.qk_norms) rms_norm(row + i * hd, md.qk_norms + (2 * l + (i >= H)) * hd, hd, md.eps, row + i * hd);
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
        const int64_t window = md.windows ? md.windows[l] : 0;
        for (int64_t th = b; th < e; th++) {
          const int64_t t = th / H, i = th % H, base = (l * KV + i / rep) * S * hd, p = pos + t;
          // a window of w positions: the query at p sees p - w + 1 .. p (Mistral; Hugging Face's mask is the same)
          const int64_t s0 = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
          attend(&qkv[t * Nqkv + i * hd], kp + base, vp + base, s0, p, hd, md.scaling, scores.data(),
                 &att[th * hd]);
        }
      }
#pragma omp barrier
      prepare(att.data(), T, HD);
      run(4 * l + 1, T, md.so + l * D, at_layer(md.bo, l * D), tmp.data());
#pragma omp barrier
      for (int64_t k = 0; k < T * D; k++) x[k] += tmp[k];
      // MLP block: x += down(silu(gate) * up) of the normed x; each core has the gate and up rows of its blocks
      for (int64_t t = 0; t < T; t++) rms_norm(&x[t * D], nw + (2 * l + 1) * D, D, md.eps, &h[t * D]);
      prepare(h.data(), T, D);
      run(4 * l + 2, T, md.sgu + l * 2 * F, at_layer(md.bgu, l * 2 * F), gu.data());
      for (int64_t p = tid; p < P; p += nth) {
        const int64_t j0 = 4 * mats[4 * l + 2].first(p, P), j1 = std::min(F, 4 * mats[4 * l + 2].first(p + 1, P));
        for (int64_t t = 0; t < T; t++)
          if (j1 > j0) silu_mul(&gu[t * 2 * F + j0], &gu[t * 2 * F + F + j0], j1 - j0, &act[t * F + j0]);
      }
#pragma omp barrier
      prepare(act.data(), T, F);
      run(4 * l + 3, T, md.sd + l * D, at_layer(md.bd, l * D), tmp.data());
#pragma omp barrier
      for (int64_t k = 0; k < T * D; k++) x[k] += tmp[k];
    }
    for (int64_t t = md.first; t < T; t++) rms_norm(&x[t * D], nw + 2 * L * D, D, md.eps, &h[(t - md.first) * D]);
    prepare(h.data(), md.n_out, D);
    run(4 * L, md.n_out, md.shead, nullptr, lp);
  }
}

at::Tensor llama_step(const at::Tensor& ids, int64_t pos, const at::Tensor& embed, const at::Tensor& norms,
                      at::TensorList packed, const at::Tensor& sqkv, const std::optional<at::Tensor>& bqkv,
                      const at::Tensor& so, const std::optional<at::Tensor>& bo, const at::Tensor& sgu,
                      const std::optional<at::Tensor>& bgu, const at::Tensor& sd, const std::optional<at::Tensor>& bd,
                      const at::Tensor& shead, const at::Tensor& cos, const at::Tensor& sin, at::Tensor kc,
                      at::Tensor vc, int64_t n_heads, double eps, double scaling, bool last_only,
                      const std::optional<at::Tensor>& qk_norms, at::IntArrayRef windows) {
  check(ids, at::kLong, "ids");
  for (auto [t, name] : {std::pair{&embed, "embed"}, {&norms, "norms"}, {&sqkv, "sqkv"}, {&so, "so"},
                         {&sgu, "sgu"}, {&sd, "sd"}, {&shead, "shead"}, {&cos, "cos"}, {&sin, "sin"},
                         {&kc, "kc"}, {&vc, "vc"}})
    check(*t, at::kFloat, name);
  TORCH_CHECK(embed.dim() == 2 && norms.dim() == 2 && kc.dim() == 4 && cos.dim() == 2 && sqkv.dim() == 2 &&
                  so.dim() == 2 && sgu.dim() == 2 && sd.dim() == 2 && shead.dim() == 1,
              "secbook::llama_step: embed [V, D], norms [2L+1, D], kc [L, KV, S, hd], cos [S, hd], scales [L, out] "
              "and shead [V] expected");
  Model md{};
  md.T = ids.numel(), md.V = embed.size(0), md.D = embed.size(1), md.L = sqkv.size(0), md.F = sgu.size(1) / 2;
  md.KV = kc.size(1), md.S = kc.size(2), md.hd = kc.size(3), md.H = n_heads, md.HD = md.H * md.hd;
  md.Nqkv = (md.H + 2 * md.KV) * md.hd, md.Vh = shead.numel(), md.pos = pos;
  const int64_t L = md.L, D = md.D, F = md.F, T = md.T, S = md.S;
  // one scale (and bias, if any) per output row of every layer: a wrong count would read past the end
  for (auto [sc, b, n, name] : {std::tuple{&sqkv, &bqkv, md.Nqkv, "qkv"}, {&so, &bo, D, "o"},
                                {&sgu, &bgu, 2 * F, "gu"}, {&sd, &bd, D, "d"}}) {
    TORCH_CHECK(sc->size(0) == L && sc->size(1) == n, "secbook::llama_step: s", name,
                " must hold one scale per output row (", n, ") of every layer (", L, ")");
    if (b->has_value()) {
      check(**b, at::kFloat, name);
      TORCH_CHECK((*b)->numel() == sc->numel(), "secbook::llama_step: b", name, " needs one bias per output row");
    }
  }
  TORCH_CHECK(T >= 1 && pos >= 0 && pos + T <= S, "secbook::llama_step: positions ", pos, "..", pos + T - 1,
              " do not fit the cache of ", S, " positions");
  TORCH_CHECK(md.H >= 1 && md.H % md.KV == 0 && norms.size(0) == 2 * L + 1 && norms.size(1) == D &&
                  kc.size(0) == L && vc.sizes() == kc.sizes() && cos.size(0) >= S && cos.size(1) == md.hd &&
                  sin.sizes() == cos.sizes() && sgu.size(1) % 2 == 0,
              "secbook::llama_step: the scale, norm, cache and RoPE shapes do not fit together");
  if (qk_norms.has_value()) {
    check(*qk_norms, at::kFloat, "qk_norms");
    TORCH_CHECK(qk_norms->dim() == 3 && qk_norms->size(0) == L && qk_norms->size(1) == 2 &&
                    qk_norms->size(2) == md.hd, "secbook::llama_step: qk_norms must be [layers, 2, head_dim]");
  }
  TORCH_CHECK(windows.empty() || int64_t(windows.size()) == L,
              "secbook::llama_step: windows must hold one sliding-window length per layer (0: none), or none");
  for (int64_t w : windows) TORCH_CHECK(w >= 0, "secbook::llama_step: a sliding window cannot be negative");
  const int64_t P = packed.size();
  TORCH_CHECK(P >= 1 && (packed[0].scalar_type() == at::kChar || packed[0].scalar_type() == at::kFloat),
              "secbook::llama_step: packed int8 or float32 weights from secbook::llama_pack expected");
  const at::ScalarType dt = packed[0].scalar_type();
  const std::vector<Mat> mats =
      step_mats(L, md.Nqkv, D, md.HD, F, md.Vh, dt == at::kChar ? kPiece<int8_t> : kPiece<float>);
  std::vector<std::vector<int64_t>> offs;
  for (int64_t p = 0; p < P; p++) {
    offs.push_back(part_offsets(mats, p, P));
    TORCH_CHECK(packed[p].scalar_type() == dt && packed[p].is_contiguous() && packed[p].device().is_cpu() &&
                    packed[p].numel() == offs.back().back(),
                "secbook::llama_step: packed part ", p, " of ", P, " does not hold the weights of these shapes; pack "
                "them with secbook::llama_pack for this model");
  }
  md.ids = ids.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; t++)
    TORCH_CHECK(md.ids[t] >= 0 && md.ids[t] < md.V, "secbook::llama_step: token id ", md.ids[t],
                " outside the vocabulary of ", md.V);
  auto ptr = [](const std::optional<at::Tensor>& b) { return b.has_value() ? b->data_ptr<float>() : nullptr; };
  md.embed = embed.data_ptr<float>(), md.norms = norms.data_ptr<float>(), md.cos = cos.data_ptr<float>();
  md.sin = sin.data_ptr<float>(), md.sqkv = sqkv.data_ptr<float>(), md.so = so.data_ptr<float>();
  md.sgu = sgu.data_ptr<float>(), md.sd = sd.data_ptr<float>(), md.shead = shead.data_ptr<float>();
  md.bqkv = ptr(bqkv), md.bo = ptr(bo), md.bgu = ptr(bgu), md.bd = ptr(bd);
  md.kc = kc.data_ptr<float>(), md.vc = vc.data_ptr<float>(), md.eps = eps, md.scaling = float(scaling);
  md.qk_norms = ptr(qk_norms), md.windows = windows.empty() ? nullptr : windows.data();
  md.first = last_only ? T - 1 : 0, md.n_out = T - md.first;
  at::Tensor logits = at::empty({md.n_out, md.Vh}, embed.options());
  if (dt == at::kChar)
    run_step<int8_t>(md, mats, packed, offs, logits.data_ptr<float>());
  else
    run_step<float>(md, mats, packed, offs, logits.data_ptr<float>());
  return logits;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(SECBOOK_NS, m) {
  m.def("llama_pack(Tensor wqkv, Tensor wo, Tensor wgu, Tensor wd, Tensor whead, int parts) -> Tensor[]");
  m.def("llama_step(Tensor ids, int pos, Tensor embed, Tensor norms, Tensor[] packed, Tensor sqkv, "
        "Tensor? bqkv, Tensor so, Tensor? bo, Tensor sgu, Tensor? bgu, Tensor sd, Tensor? bd, Tensor shead, "
        "Tensor cos, Tensor sin, Tensor(a!) kc, Tensor(b!) vc, int n_heads, float eps, float scaling, "
        "bool last_only, Tensor? qk_norms=None, int[] windows=[]) -> Tensor");
}

TORCH_LIBRARY_IMPL(SECBOOK_NS, CPU, m) {
  m.impl("llama_pack", llama_pack);
  m.impl("llama_step", llama_step);
}
