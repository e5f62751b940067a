"""A fast generation loop of our own: prefill, then a single-token decode step over a static KV cache.

Hugging Face ``generate()`` is general: logits processors, stopping criteria, a growing cache, masks rebuilt
every step — each token pays for hundreds of small Python-level operations on top of reading the weights.
For batch-1 decoding the useful work is only "read every weight once per token", so that overhead matters.
Following gpt-fast (PyTorch team, 2023, "Accelerating generative AI with PyTorch II: GPT, Fast"), we

1. pre-allocate the KV cache for ``max_len`` positions (a *static* cache: shapes never change, so the decode
   step can be compiled once and, on CUDA, captured as a CUDA graph — ``mode="reduce-overhead"``);
2. run the prompt through the model once (*prefill*), writing its keys and values into the cache;
3. loop a single-token decode step: write one new key/value per layer at ``input_pos``, attend over the
   whole cache with a mask that hides the positions not written yet, sample the next token.

The decoder forward is written here over the Hugging Face weights: the model's own norms and ``rotary_emb``
are used, and the projections are either fused (q/k/v as one matmul, gate/up as one, over transposed weight
copies, :class:`FusedLinear`; torch.ao dynamic int8 layers likewise, :class:`Int8DynamicFused`; our int8
weight-only ``QuantLinear`` layers as :class:`Int8WeightOnlyFused`, or as one :class:`secbook.kernels.Int8Linear`
once they run on our C++ kernel) or, for any other layer type (int4
``QuantLinear``, bitsandbytes, torchao), called as the model's modules. It supports
the Llama decoder layout — Llama, SmolLM, Qwen2 (q/k/v biases), Mistral — and its greedy output is
token-for-token the output of ``model.generate`` (tests check it).

``run_generate_suite`` is the chapter's "optimization ladder" benchmark (``python -m secbook bench --suite
generate``).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")


def check_supported(model) -> None:
    """Raise a ``ValueError`` naming the supported architectures if ``model`` is not a Llama-layout decoder."""
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"our fast loop supports the Llama decoder layout ({', '.join(SUPPORTED_MODEL_TYPES)}; "
                         f"SmolLM is 'llama'), not model_type={mt!r}. Use model.generate() for this model.")


def check_sliding_window(model, max_len: int) -> None:
    """Raise a ``ValueError`` if a static cache of ``max_len`` positions would need the model's sliding-window
    attention (Mistral, some Qwen2), which our loops do not implement."""
    cfg = model.config
    sw = getattr(cfg, "sliding_window", None)
    if sw is not None and getattr(cfg, "use_sliding_window", True) and max_len > sw:
        raise ValueError(f"max_len={max_len} exceeds the model's sliding window ({sw}); our loop does not "
                         "implement sliding-window attention — use a shorter max_len or model.generate().")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def stacked_bias(layers, like: torch.Tensor) -> torch.Tensor | None:
    """The biases of ``layers`` end to end, as the fused layer needs them (zeros for a layer without one), in
    ``like``'s dtype and device; None if no layer has a bias."""
    if all(m.bias is None for m in layers):
        return None
    return torch.cat([m.bias.detach().to(like) if m.bias is not None else like.new_zeros(m.out_features)
                      for m in layers])


class FusedLinear(torch.nn.Module):
    """Several ``nn.Linear`` layers that read the same input, run as ONE matmul over their weights stored
    transposed and concatenated: ``weight_t`` is ``[in, out_1 + out_2 + ...]``, contiguous.

    Each output is still the dot product of the same weight row with the same input, so the tokens do not
    change. Two things get faster at batch 1: one call instead of three (q, k, v) or two (gate, up), and the
    layout — a CPU BLAS matrix-vector product streams an ``[in, out]`` matrix about twice as fast as
    ``nn.Linear``'s ``[out, in]`` one (chapter 3.2 measures both). gpt-fast fuses ``wqkv`` the same way. The
    fused copy is the decoder's own: the Hugging Face model keeps its weights, so they are held twice.
    """

    def __init__(self, linears):
        super().__init__()
        w = torch.cat([lin.weight.detach() for lin in linears])
        self.register_buffer("weight_t", w.t().contiguous())
        self.bias = stacked_bias(linears, like=w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight_t
        return y if self.bias is None else y + self.bias


def gemv_layouts(out_features: int = 16384, in_features: int = 1024, repeats: int = 20,
                 dtype: torch.dtype = torch.float32) -> dict:
    """Batch-1 matrix-vector product over the same weights stored two ways: ``nn.Linear``'s ``[out, in]``
    (``F.linear(x, W)``) and transposed ``[in, out]`` (``x @ W_t``, what :class:`FusedLinear` keeps).

    The default matrix (64 MiB in fp32) is larger than a server CPU's last-level cache, so the weights stream
    from memory as they do in decoding. Returns the median seconds and weight GB/s of each layout and their
    ratio; the two results are checked to agree.
    """
    from .hardware import median_seconds

    if out_features < 1 or in_features < 1 or repeats < 1:
        raise ValueError("out_features, in_features and repeats must be >= 1")
    w = torch.randn(out_features, in_features, dtype=dtype)
    w_t = w.t().contiguous()
    x = torch.randn(1, in_features, dtype=dtype)
    torch.testing.assert_close(x @ w_t, F.linear(x, w), rtol=1e-3, atol=1e-3)
    out = {}
    for name, fn in (("[out, in]  F.linear(x, W)", lambda: F.linear(x, w)), ("[in, out]  x @ W_t", lambda: x @ w_t)):
        med = median_seconds(fn, warmup=3, repeats=repeats)
        out[name] = {"seconds": med, "GB/s": w.numel() * w.element_size() / med / 1e9}
    a, b = out.values()
    return {"layouts": out, "speedup_transposed": a["seconds"] / b["seconds"],
            "matrix_MiB": w.numel() * w.element_size() / 2**20}


_INT8_PACKED: dict[int, object] = {}  # key -> fbgemm packed weights; entries die with their Int8DynamicFused


# A low-level operator definition (``torch.library.Library``) rather than ``torch.library.custom_op``: the
# latter adds ~10 µs of Python per call, which at ~120 calls per token is a tenth of an int8 decode step.
_LIB = torch.library.Library("secbook", "DEF")
_LIB.define("int8_dynamic_linear(Tensor x, int key, int out_features) -> Tensor")


def _int8_dynamic_linear(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    return torch.ops.quantized.linear_dynamic(x, _INT8_PACKED[key], reduce_range=True)


_LIB.impl("int8_dynamic_linear", _int8_dynamic_linear, "CPU")


@torch.library.register_fake("secbook::int8_dynamic_linear")
def _(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], out_features)


class Int8DynamicFused(torch.nn.Module):
    """torch.ao dynamically quantized int8 Linear layers that read the same input, fused into one int8 weight
    with a scale per output row (each row keeps the scale it had, so the arithmetic is the layers' own).

    ``torch.compile`` cannot trace the packed weights (a TorchScript object), so the matmul is hidden behind a
    custom operator (``secbook::int8_dynamic_linear``) that the compiler treats as a black box with a known
    output shape; everything around it (norms, RoPE, attention, residuals) is compiled.
    """

    def __init__(self, qlinears):
        super().__init__()
        rows, scales, zps, biases = [], [], [], []
        for m in qlinears:
            w, b = m._packed_params._packed_params.unpack()
            n = w.shape[0]
            if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                s, z = torch.full((n,), w.q_scale(), dtype=torch.double), torch.full((n,), w.q_zero_point())
            else:
                s, z = w.q_per_channel_scales(), w.q_per_channel_zero_points()
            rows.append(w.int_repr())
            scales.append(s.double())
            zps.append(z.long())
            biases.append(b)
        w = torch._make_per_channel_quantized_tensor(torch.cat(rows), torch.cat(scales), torch.cat(zps), 0)
        bias = None
        if any(b is not None for b in biases):
            bias = torch.cat([b if b is not None else torch.zeros(r.shape[0]) for b, r in zip(biases, rows)])
        self.out_features = w.shape[0]
        self._register(torch.ops.quantized.linear_prepack(w, bias))

    def _register(self, packed) -> None:
        """File the packed weights under this module's own key, dropped when the module is collected."""
        self.key = id(self)
        _INT8_PACKED[self.key] = packed
        weakref.finalize(self, _INT8_PACKED.pop, self.key, None)

    def __deepcopy__(self, memo):
        # a plain deepcopy would copy the key and share the original's entry, which vanishes with the original;
        # the copy files the same (read-only) packed weights under a key of its own
        new = type(self).__new__(type(self))
        torch.nn.Module.__init__(new)
        new.training, new.out_features = self.training, self.out_features
        new._register(_INT8_PACKED[self.key])
        memo[id(self)] = new
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.secbook.int8_dynamic_linear(x, self.key, self.out_features)


class Int8WeightOnlyFused(torch.nn.Module):
    """Our int8 weight-only ``QuantLinear`` layers (symmetric, one scale per output row or per group of
    inputs) that read the same input, fused: signed int8 ``weight [N, K]`` and fp32 ``scale [N, G]``.

    Weight-only quantization halves (vs bf16) or quarters (vs fp32) the bytes a decode step reads, but only
    if the int8 weights are turned into products *on the fly*. Dequantizing into a float matrix and calling a
    matmul writes and re-reads a full-size float copy: slower than not quantizing at all. So for one token
    inside a compiled graph the product is written as a reduction, ``y[n] = sum_g scale[n, g] * sum_k
    x[g, k] * w[n, g, k]``: the compiler turns it into one loop that reads each int8 weight once, converts it
    in registers and multiplies (the "fused dequantize-matmul" of gpt-fast's int8 path). The rows are cut into
    ``blocks`` contiguous blocks written as separate sums: the compiler fuses them into one loop that keeps a
    running sum per block, so the CPU has independent additions to overlap instead of waiting on one chain
    (measured on a 2-core EPYC: ~1.4x on the 49152-row LM head with 4 blocks). Otherwise (eager, prefill) it
    dequantizes and calls ``F.linear``, which is correct but slow — chapter 3.2 shows both.
    """

    blocks = 4

    def __init__(self, qlinears):
        super().__init__()
        gs = qlinears[0].group_size or qlinears[0].in_features
        w = torch.cat([m.signed_int8() for m in qlinears])
        self.register_buffer("weight", w.contiguous())
        self.register_buffer("scale", torch.cat([m.scale.float().reshape(m.out_features, -1) for m in qlinears]))
        self.out_features, self.in_features, self.group = w.shape[0], w.shape[1], gs
        self.bias = stacked_bias(qlinears, like=self.scale)

    @staticmethod
    def accepts(linears) -> bool:
        from .quantize import QuantLinear

        return all(type(m) is QuantLinear and m.bits == 8 and m.scheme == "sym" and m.in_scale is None
                   and (m.group_size or m.in_features) == (linears[0].group_size or linears[0].in_features)
                   for m in linears)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, K, g = self.out_features, self.in_features, self.group
        w = self.weight.view(N, K // g, g)
        if torch.compiler.is_compiling() and x.shape[:-1].numel() == 1:
            xg = x.reshape(*x.shape[:-1], 1, K // g, g)
            rows = -(-N // self.blocks)
            y = torch.cat([((xg * wb.to(x.dtype)).sum(-1) * sb.to(x.dtype)).sum(-1)
                           for wb, sb in zip(w.split(rows), self.scale.split(rows))], dim=-1)
        else:
            y = F.linear(x, (w.to(x.dtype) * self.scale.to(x.dtype)[..., None]).view(N, K))
        return y if self.bias is None else y + self.bias.to(x.dtype)


def int8_gemv_rates(rows: int = 8192, in_features: int = 576, n_weights: int = 16, repeats: int = 5) -> dict:
    """Is the int8 weight-only product limited by memory or by arithmetic? Time it, as compiled for decoding
    (:class:`Int8WeightOnlyFused`), over ONE ``[rows, in_features]`` int8 matrix again and again (it stays in
    the CPU's cache) and over ``n_weights`` different ones in turn (together larger than the cache, so they
    stream from memory); the same for fp32 ``x @ W_t`` (:class:`FusedLinear`) and, where it builds, our C++
    int8 kernel (:class:`secbook.kernels.Int8Linear`). Returns weight GB/s per (kind, source). A memory-bound
    product is much faster from cache; a compute-bound one is not.
    """
    from . import kernels
    from .hardware import median_seconds
    from .quantize import QuantLinear

    if min(rows, in_features, n_weights, repeats) < 1:
        raise ValueError("rows, in_features, n_weights and repeats must be >= 1")
    lin = torch.nn.Linear(in_features, rows, bias=False)
    q = QuantLinear.from_linear(lin, 8, None)
    int8 = Int8WeightOnlyFused([q])
    fp32 = FusedLinear([lin])
    layers = {"int8 weight-only (compiled)": (int8, "weight", torch.compile(int8)),  # (layer, weight, call)
              "fp32 x @ W_t": (fp32, "weight_t", fp32)}
    if kernels.available():
        k = kernels.Int8Linear.from_quant_linear(q)
        layers["int8 C++ kernel"] = (k, "weight", k)
    x = torch.randn(1, 1, in_features)
    out = {}
    for kind, (layer, name, step) in layers.items():
        w0 = getattr(layer, name)
        many = [w0.clone() for _ in range(n_weights)]
        for source, ws in (("from cache (one matrix)", [w0] * n_weights), ("from memory (many)", many)):
            def one_round(ws=ws):
                for w in ws:
                    setattr(layer, name, w)
                    step(x)

            seconds = median_seconds(one_round, warmup=1, repeats=repeats) / len(ws)  # the warm-up compiles
            out[(kind, source)] = w0.numel() * w0.element_size() / seconds / 1e9
        setattr(layer, name, w0)
    torch._dynamo.reset()
    return out


class SeparateLinears(torch.nn.Module):
    """The unfused fallback: call each layer (any module: our ``QuantLinear``, bitsandbytes, ...) and
    concatenate the outputs, so the decoder's code is the same either way."""

    def __init__(self, linears):
        super().__init__()
        self.linears = torch.nn.ModuleList(linears)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.linears) == 1:
            return self.linears[0](x)
        return torch.cat([lin(x) for lin in self.linears], dim=-1)


def fuse_linears(linears, fuse: bool = True) -> torch.nn.Module:
    """One module computing ``cat([lin(x) for lin in linears], -1)``: :class:`FusedLinear` for plain float
    ``nn.Linear`` layers, :class:`Int8DynamicFused` for torch.ao dynamic int8 ones, :class:`Int8WeightOnlyFused`
    for our int8 ``QuantLinear`` ones, else (or ``fuse=False``) :class:`SeparateLinears`."""
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    from .kernels import Int8Linear

    if fuse and all(type(lin) is Int8Linear for lin in linears):
        return Int8Linear.fuse(linears)
    if fuse and all(type(lin) is torch.nn.Linear and type(lin.weight.detach()) is torch.Tensor  # not torchao's
                    and lin.weight.dtype.is_floating_point for lin in linears):
        return FusedLinear(linears)
    if fuse and all(type(lin) is DynLinear and lin._packed_params.dtype == torch.qint8 for lin in linears):
        return Int8DynamicFused(linears)
    if fuse and Int8WeightOnlyFused.accepts(linears):
        return Int8WeightOnlyFused(linears)
    return SeparateLinears(linears)


def _rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's RMSNorm; in fp32 as one fused ``F.rms_norm`` call (same formula, fewer operations)."""
    if x.dtype == torch.float32 and hasattr(norm, "variance_epsilon") and getattr(norm, "weight", None) is not None:
        return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)
    return norm(x)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) v. Eagerly one fused SDPA call is cheapest; inside a graph compiled for the
    CPU the explicit maths is faster, because the compiler fuses the scale, mask and softmax with their
    neighbours instead of calling out to a separate kernel for each of the 30-odd layers."""
    if q.device.type == "cpu" and torch.compiler.is_compiling():
        return torch.softmax((q @ k.transpose(-1, -2)) * scale + mask, dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


class StaticDecoder(torch.nn.Module):
    """The decoder forward over a pre-allocated KV cache of ``max_len`` positions for ``batch`` sequences.

    ``forward(ids [B, T], input_pos [T]) -> logits`` writes the T new keys/values at ``input_pos`` and attends
    over the whole cache with a causal mask; positions beyond ``input_pos`` are hidden, so stale entries
    (e.g. draft tokens rejected by speculative decoding) never matter — rewinding is free.

    ``fuse=True`` (the default) runs q/k/v as one matmul and gate/up as one (:func:`fuse_linears`), over
    transposed weight copies; ``fuse=False`` calls the model's own projection modules one by one.
    """

    def __init__(self, model, max_len: int, batch: int = 1, fuse: bool = True):
        super().__init__()
        check_supported(model)
        check_sliding_window(model, max_len)
        cfg = model.config
        self.model = model
        self.max_len, self.batch = int(max_len), int(batch)
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        p = next(model.parameters())
        dtype = p.dtype if p.dtype.is_floating_point else torch.float32
        dtype = getattr(model, "dtype", dtype)
        self.qkv, self.o, self.gate_up, self.down = (torch.nn.ModuleList() for _ in range(4))
        for layer in model.model.layers:
            a, mlp = layer.self_attn, layer.mlp
            self.qkv.append(fuse_linears([a.q_proj, a.k_proj, a.v_proj], fuse))
            self.o.append(fuse_linears([a.o_proj], fuse))
            self.gate_up.append(fuse_linears([mlp.gate_proj, mlp.up_proj], fuse))
            self.down.append(fuse_linears([mlp.down_proj], fuse))
        self.head = fuse_linears([model.lm_head], fuse)
        shape = (self.batch, self.n_kv, self.max_len, self.head_dim)
        self.k_cache = [torch.zeros(shape, dtype=dtype, device=p.device) for _ in range(self.n_layers)]
        self.v_cache = [torch.zeros(shape, dtype=dtype, device=p.device) for _ in range(self.n_layers)]
        if p.device.type == "cuda":  # written in place by the step: fixed addresses let a CUDA graph keep them
            for t in self.k_cache + self.v_cache:
                torch._dynamo.mark_static_address(t, guard=False)
        # additive mask (0 / -inf): on CPU a float mask keeps SDPA on its fast path (a bool mask is ~10x slower)
        tril = torch.tril(torch.ones(self.max_len, self.max_len, dtype=torch.bool, device=p.device))
        self.register_buffer("causal", torch.zeros(tril.shape, dtype=dtype, device=p.device).masked_fill(
            ~tril, float("-inf")), persistent=False)

    def cache_bytes(self) -> int:
        """Bytes of the pre-allocated cache (compare with ``kvcache.kv_cache_bytes``)."""
        return sum(t.numel() * t.element_size() for t in self.k_cache + self.v_cache)

    def forward(self, ids: torch.Tensor, input_pos: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        m = self.model.model
        B, T = ids.shape
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        x = m.embed_tokens(ids)
        cos, sin = m.rotary_emb(x, input_pos[None])  # [1, T, head_dim], the model's own RoPE (any rope type)
        cos, sin = cos[:, None], sin[:, None]
        rep = H // KV
        # grouped-query attention without copying K/V: fold the `rep` query heads that share a KV head into
        # the query-length axis, [B, n_kv, rep*T, D], and repeat the mask rows to match
        mask = self.causal[input_pos][None, None, None].expand(1, 1, rep, T, self.max_len)
        mask = mask.reshape(1, 1, rep * T, self.max_len)
        for i, layer in enumerate(m.layers):
            qkv = self.qkv[i](_rms_norm(layer.input_layernorm, x)).view(B, T, H + 2 * KV, D).transpose(1, 2)
            qk, v = qkv.split([H + KV, KV], dim=1)
            qk = qk * cos + _rotate_half(qk) * sin  # RoPE on queries and keys at once
            q, k = qk.split([H, KV], dim=1)
            kc, vc = self.k_cache[i], self.v_cache[i]
            kc.index_copy_(2, input_pos, k.to(kc.dtype))
            vc.index_copy_(2, input_pos, v.to(vc.dtype))
            qg = q.reshape(B, KV, rep * T, D)
            o = _attend(qg, kc, vc, mask, layer.self_attn.scaling)
            x = x + self.o[i](o.reshape(B, H, T, D).transpose(1, 2).reshape(B, T, H * D))
            gate, up = self.gate_up[i](_rms_norm(layer.post_attention_layernorm, x)).chunk(2, dim=-1)
            x = x + self.down[i](layer.mlp.act_fn(gate) * up)
        if last_only:
            x = x[:, -1:]
        return self.head(_rms_norm(m.norm, x))


def sample(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token from the last position's logits [B, V]: argmax if ``temperature == 0`` else a sample from
    softmax(logits / temperature), optionally restricted to the ``top_k`` largest."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(int(top_k), logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)


class FastGenerator:
    """gpt-fast-style generation for one model: ``FastGenerator(model, max_len).generate(ids, n)``.

    ``compile=True`` compiles the single-token decode step with ``torch.compile`` — ``mode="reduce-overhead"``
    (CUDA graphs) on a GPU, the default mode on CPU — once; later calls reuse it. The first call pays the
    compile time (``self.compile_s`` records it). ``cpp=True`` (CPU; fp32 models, or int8 ones from
    ``apply_transform(model, "int8k")``) runs each step as one call of our C++ decoder instead
    (:class:`secbook.kernels.CppDecoder`).
    """

    def __init__(self, model, max_len: int = 256, batch: int = 1, compile: bool = False, mode: str | None = None,
                 fuse: bool = True, cpp: bool = False):
        self.model = model.eval()
        if cpp:
            if compile:
                raise ValueError("cpp=True runs the whole decode step as compiled C++ already; use compile=False")
            from .kernels import CppDecoder

            self.decoder = CppDecoder(model, max_len, batch)
        else:
            self.decoder = StaticDecoder(model, max_len, batch, fuse=fuse)
        self.device = next(model.parameters()).device
        self.compiled = bool(compile)
        self.compile_s: float | None = None
        step = self._decode
        if compile:
            if mode is None:
                mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            step = torch.compile(self._decode, mode=mode, fullgraph=True, dynamic=False)
        self.step = step

    def _decode(self, token: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return self.decoder(token, input_pos)[:, -1]

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run the prompt, fill the cache; return the last position's logits [B, V]."""
        B, T = input_ids.shape
        if B != self.decoder.batch:
            raise ValueError(f"this generator was built for batch={self.decoder.batch}, got batch={B}")
        if T >= self.decoder.max_len:
            raise ValueError(f"prompt of {T} tokens does not fit the static cache of max_len="
                             f"{self.decoder.max_len} positions (need prompt + new tokens <= max_len); "
                             "build the generator with a larger max_len.")
        pos = torch.arange(T, device=self.device)
        return self.decoder(input_ids.to(self.device), pos, last_only=True)[:, -1]

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None) -> torch.Tensor:
        """Prompt + ``max_new_tokens`` new tokens [B, T + n] (greedy when ``temperature == 0``)."""
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        T = input_ids.shape[1]
        if T + max_new_tokens > self.decoder.max_len:
            raise ValueError(f"prompt ({T}) + max_new_tokens ({max_new_tokens}) = {T + max_new_tokens} exceeds "
                             f"the static cache's max_len={self.decoder.max_len}; build the generator with a "
                             "larger max_len.")
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(seed)
        t0 = time.perf_counter()
        tok = sample(self.prefill(input_ids), temperature, top_k, gen)
        out = [input_ids.to(self.device), tok]
        for i in range(max_new_tokens - 1):
            pos = torch.tensor([T + i], device=self.device)
            logits = self.step(tok, pos)
            if self.compiled and self.compile_s is None:
                self.compile_s = time.perf_counter() - t0
            tok = sample(logits, temperature, top_k, gen).clone()
            out.append(tok)
        return torch.cat(out, dim=1)

    __call__ = generate


def fast_generate(model, input_ids: torch.Tensor, max_new_tokens: int, compile: bool = False,
                  temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
                  max_len: int | None = None) -> torch.Tensor:
    """One-shot convenience: build a ``FastGenerator`` sized for this call and generate."""
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    max_len = max_len or input_ids.shape[1] + max_new_tokens
    g = FastGenerator(model, max_len=max_len, batch=input_ids.shape[0], compile=compile)
    return g.generate(input_ids, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)


def hf_generate(model, input_ids: torch.Tensor, max_new_tokens: int, **kw) -> torch.Tensor:
    """The baseline: ``model.generate`` greedy, forced to produce exactly ``max_new_tokens`` tokens."""
    input_ids = input_ids.to(next(model.parameters()).device)
    return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                          min_new_tokens=max_new_tokens, do_sample=False,
                          pad_token_id=model.generation_config.pad_token_id or 0, **kw)


# ----------------------------------------------------------------------------- the optimization ladder
@dataclass(frozen=True)
class Rung:
    """One step of the ladder: a weight transform, a loop (``hf``, ``hf_static``, ``ours``, ``cpp`` for our loop
    with the whole step in C++, ``spec`` with the draft model, ``lookup`` for prompt lookup), compile, whether our
    loop fuses its projections (``fuse=False``: it calls the model's modules one by one), and the draft length
    ``gamma``, draft model (``draft_for``), draft loop (``"ours"``, or ``"cpp"``: int8 on the whole-step C++
    decoder) and target loop (``"ours"`` or ``"cpp"``: the target's own weights on the C++ decoder) of the
    speculative loops."""
    name: str
    transform: str = "none"
    loop: str = "ours"
    compile: bool = False
    tiny_only: bool = False
    fuse: bool = True
    gamma: int = 4
    draft: str = "student"
    draft_loop: str = "ours"
    target_loop: str = "ours"

    @property
    def cpu_only(self) -> bool:
        """Whether the rung needs the CPU: our C++ int8 kernel or C++ step, or torch.ao's dynamic int8 (whose
        quantized kernels exist for the CPU only). Skipped on a GPU."""
        return self.transform in ("int8k", "dyn8") or "cpp" in (self.loop, self.draft_loop, self.target_loop)


LADDER = (  # cheap and essential rungs first: results are saved after every rung
    Rung("HF generate fp32 (baseline)", "none", "hf"),
    Rung("our loop fp32, module calls", "none", "ours", fuse=False),
    Rung("our loop fp32, fused weights", "none", "ours"),
    Rung("our loop fp32 + compile", "none", "ours", True),
    Rung("speculative, student draft, gamma=1", "none", "spec", tiny_only=True, gamma=1),
    Rung("speculative, student draft, gamma=4", "none", "spec", tiny_only=True, gamma=4),
    Rung("speculative, int8 self-draft, gamma=4", "none", "spec", gamma=4, draft="int8-self"),
    Rung("prompt lookup, gamma=4", "none", "lookup", gamma=4),
    Rung("speculative, int8 student on the C++ step, gamma=2", "none", "spec", tiny_only=True, gamma=2,
         draft_loop="cpp"),
    Rung("speculative, int8 self-draft on the C++ step, gamma=8", "none", "spec", gamma=8, draft="int8-self",
         draft_loop="cpp"),
    Rung("fp32, whole decode step in C++", "none", "cpp"),
    Rung("speculative, all on the C++ step: fp32 target, int8 self-draft, gamma=8", "none", "spec", gamma=8,
         draft="int8-self", draft_loop="cpp", target_loop="cpp"),
    Rung("our loop bf16", "bf16", "ours"),
    Rung("our loop bf16 + compile", "bf16", "ours", True),
    Rung("our loop dynamic int8 (torch.ao)", "dyn8", "ours"),
    Rung("our loop dynamic int8 + compile", "dyn8", "ours", True),
    Rung("our loop int8 weight-only + compile", "int8wo", "ours", True),
    Rung("our loop int8 weight-only", "int8wo", "ours"),
    Rung("our loop int8, C++ kernel + compile", "int8k", "ours", True),
    Rung("our loop int8, C++ kernel", "int8k", "ours"),
    Rung("int8, whole decode step in C++", "int8k", "cpp"),
    Rung("HF generate fp32 static cache + compile", "none", "hf_static", True),
    Rung("our loop int4 weight-only + compile", "int4wo", "ours", True),
)
TRANSFORMS = ("none", "bf16", "int8wo", "int8k", "int4wo", "dyn8")
AB_VARIANTS = TRANSFORMS + ("int8k-cpp",)  # what interleaved_tok_s compares: a transform, or int8k on the C++ step
LADDER_QUESTION = "Explain how a bicycle works, step by step."  # the chat model's ladder prompt


def ladder_prompt(tokenizer, prompt_len: int = 32) -> tuple[torch.Tensor, str]:
    """The ladder's fixed prompt ``[1, T]`` and a line saying what it is. A chat model (its tokenizer has a chat
    template) gets one user turn asking :data:`LADDER_QUESTION`, ready for the reply (``prompt_len`` does not
    apply); any other model the first ``prompt_len`` tokens of the held-out text.

    Every rung generates exactly the requested number of tokens: HF ``generate`` is told
    ``min_new_tokens=max_new_tokens`` (it masks the end-of-sequence token) and our loops never stop early. The
    question asks for a reply longer than a ladder run (64 tokens), so the chat model's greedy reply never reaches
    its end-of-sequence token there: our lossless loops, which do not mask it, still give HF's exact tokens."""
    if getattr(tokenizer, "chat_template", None):
        from .speculative import task_ids

        ids = task_ids(tokenizer, LADDER_QUESTION)
        return ids, f"chat turn {LADDER_QUESTION!r} ({ids.shape[-1]} tokens)"
    from .measure import prompt_ids

    return prompt_ids(tokenizer, prompt_len), f"held-out text ({prompt_len} tokens)"


def own_loop(rung: Rung, rungs=LADDER) -> str | None:
    """For a speculative rung, the name of the rung that runs the same target loop without speculation (our
    fused fp32 loop, or the fp32 C++ step with ``target_loop="cpp"``): speculation's own gain is its speed ÷
    that rung's, apart from whatever the faster loop underneath brings. None for every other rung."""
    if rung.loop not in ("spec", "lookup"):
        return None
    loop = "cpp" if rung.target_loop == "cpp" else "ours"
    for r in rungs:
        if r.loop == loop and r.transform == rung.transform and not r.compile and r.fuse:
            return r.name
    return None


def with_own_loop_speedup(df, rungs=LADDER):
    """``df`` with ``own_loop`` and ``speedup_vs_own_loop`` filled in for its speculative rows: the rung's tokens/s
    ÷ the tokens/s of its :func:`own_loop` measured in the same run (same model and ``timestamp``). Values already
    there are kept; a row whose own loop was not measured in its run stays empty."""
    import pandas as pd

    df = df.copy()
    by_name = {r.name: r for r in rungs}
    if "own_loop" not in df:
        df["own_loop"] = None
    df["own_loop"] = df["own_loop"].astype(object)
    missing = df["own_loop"].isna()
    df.loc[missing, "own_loop"] = [own_loop(by_name[n], rungs) if n in by_name else None
                                   for n in df.loc[missing, "rung"]]
    if "speedup_vs_own_loop" not in df:
        df["speedup_vs_own_loop"] = float("nan")
    run = ["model", "timestamp"] if "timestamp" in df else ["model"]
    for i in df.index[df["own_loop"].notna() & df["speedup_vs_own_loop"].isna()]:
        same = (df[run] == df.loc[i, run]).all(axis=1) & (df["rung"] == df.loc[i, "own_loop"])
        base = pd.to_numeric(df.loc[same, "tok_s"], errors="coerce").dropna()
        if len(base):
            df.loc[i, "speedup_vs_own_loop"] = float(df.loc[i, "tok_s"]) / float(base.iloc[0])
    return df


def apply_transform(model, transform: str):
    """The model with its weights transformed: ``bf16`` cast, weight-only ``QuantLinear`` (``secbook.quantize``,
    RTN): ``int8wo`` int8 with a scale per output row, LM head included (our decoder runs it as
    :class:`Int8WeightOnlyFused`), ``int8k`` the same int8 weights on our C++ kernel (``secbook.kernels``:
    activations rounded to int16 per 256 inputs), ``int4wo`` int4 in groups of 32, LM head kept; or torch.ao
    dynamic int8 (``dyn8``: int8 weights with a scale per output row, activations quantized per call)."""
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose from {TRANSFORMS}")
    if transform == "none":
        return model
    if transform == "bf16":
        return model.to(torch.bfloat16)
    if transform in ("int8wo", "int8k", "int4wo"):
        from .quantize import quantize

        if transform == "int8wo":  # one scale per output row, LM head included: what our decoder fuses
            return quantize(model, bits=8, group_size=None, skip=())[0]
        if transform == "int8k":  # the same int8 weights, multiplied by our C++ kernel (secbook.kernels)
            from .kernels import use_int8_kernel

            return use_int8_kernel(quantize(model, bits=8, group_size=None, skip=())[0])
        return quantize(model, bits=4, group_size=32)[0]  # 32 divides 576 (SmolLM2) and 256
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def draft_for(target, name: str = "student", loop: str = "ours"):
    """The draft model for speculative decoding, returned with a label saying which: ``"int8-self"`` is the
    target's own int8 copy (nearly always right, and cheaper where reading weights dominates); otherwise
    ``data/models/<name>`` if it exists, else a copy of the target truncated to its first two layers. With
    ``loop="cpp"`` the draft's weights are our int8 ``Int8Linear`` (``"int8k"``), ready for the whole-step C++
    decoder; otherwise the int8 self-draft is torch.ao's dynamic int8 on the CPU, our int8 weight-only layers
    (``"int8wo"``) on a GPU, and a student stays fp32."""
    import copy

    from .models import load, local_models

    if loop not in ("ours", "cpp"):
        raise ValueError(f"draft loop must be 'ours' or 'cpp', got {loop!r}")
    if name == "int8-self":
        if loop == "cpp":
            return apply_transform(copy.deepcopy(target), "int8k"), "the target's own int8 copy, C++ step"
        if next(target.parameters()).device.type != "cpu":  # torch.ao's dynamic int8 has CPU kernels only
            return apply_transform(copy.deepcopy(target), "int8wo"), "the target's own int8 weight-only copy"
        return apply_transform(copy.deepcopy(target), "dyn8"), "the target's own dynamic-int8 copy"
    if name in local_models():
        d, label = load(name)[0], name
    else:
        d, label = copy.deepcopy(target), "target truncated to 2 layers (no student yet)"
        d.model.layers = d.model.layers[:2]
        d.config.num_hidden_layers = 2
    if loop == "cpp":
        return apply_transform(d, "int8k"), f"{label}, int8 on the C++ step"
    return d, label


def tiny_perplexity_change(transform: str, max_tokens: int = 4096, _cache: dict = {}) -> float:
    """Relative held-out perplexity change of the tiny model under ``transform`` (0.01 = +1%)."""
    if transform not in _cache:
        from .corpus import heldout_text
        from .measure import perplexity
        from .models import load

        model, tok = load("tiny")
        text = heldout_text(max_chars=max_tokens * 8)
        base = perplexity(model, tok, text, max_tokens=max_tokens)
        ppl = perplexity(apply_transform(model, transform), tok, text, max_tokens=max_tokens)
        _cache[transform] = ppl / base - 1
    return _cache[transform]


def _generate_fn(rung: Rung, model, max_len: int):
    if rung.loop == "hf":
        return lambda ids, n: hf_generate(model, ids, n)
    if rung.loop == "hf_static":
        from transformers import CompileConfig

        cc = CompileConfig()
        cc._compile_all_devices = True  # transformers auto-compiles only on accelerators unless told to
        return lambda ids, n: hf_generate(model, ids, n, cache_implementation="static", compile_config=cc)
    if rung.loop in ("spec", "lookup"):
        from .speculative import SpeculativeDecoder

        draft, label = draft_for(model, rung.draft, rung.draft_loop) if rung.loop == "spec" else ("lookup", "")
        spec = SpeculativeDecoder(model, draft, gamma=rung.gamma, max_len=max_len, cpp_draft=rung.draft_loop == "cpp",
                                  cpp_target=rung.target_loop == "cpp")

        def run(ids, n):
            res = spec.generate(ids, n)
            run.info.update(acceptance_rate=res.acceptance_rate, tokens_per_call=res.tokens_per_call)
            return res.ids

        run.info = {"note": label}
        return run
    gen = FastGenerator(model, max_len=max_len, compile=rung.compile, fuse=rung.fuse, cpp=rung.loop == "cpp")
    return gen.generate


def run_generate_suite(args, rungs=LADDER, save: bool = True):
    """The optimization ladder for ``args.model``: one row per rung (tokens/s, speed-up over HF generate,
    token agreement with it, MBU, compile time, tiny-model perplexity change of the same technique). The read
    bandwidth is measured after every rung; MBU divides each rung's weight bytes per second by the highest of
    those measurements (the machine's ceiling in this run, so a momentary dip never flatters a rung).

    ``args`` has ``model``, ``prompt_len``, ``new_tokens``, ``repeats`` (``device`` optional). Rows are merged
    into ``data/results/generate_ladder.csv`` (rows of the same model replaced) when ``save`` — or, measured on
    a GPU, into ``generate_ladder_cuda.csv``, so a GPU's rows never mix with the CPU's. The model is built once
    and each rung transforms its own copy (a 1B replica takes seconds to build).
    """
    import copy
    import gc

    from .hardware import pick_device, read_bandwidth
    from .measure import decode_read_bytes, model_bytes, time_generation, token_agreement
    from .models import load

    device = getattr(args, "device", "cpu") or "cpu"
    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))
    only = getattr(args, "rungs", None)
    if only:  # a partial re-run still measures the baseline beside it (and a speculative rung its own loop)
        own = {own_loop(r, rungs) for r in rungs if r.name in only}
        rungs = [rungs[0]] + [r for r in rungs[1:] if r.name in only or r.name in own]
    rows, reference = [], None
    kind = pick_device(device).type
    on_cpu = kind == "cpu"
    ladder_name = "generate_ladder" if on_cpu else f"generate_ladder_{kind}"
    base, tok = load(args.model, device=device)
    ids, prompt = ladder_prompt(tok, args.prompt_len)
    prompt_len = ids.shape[-1]
    max_len = prompt_len + args.new_tokens
    print(f"{args.model:>24} | prompt: {prompt}, {args.new_tokens} new tokens", flush=True)
    for rung in rungs:
        if rung.tiny_only and args.model != "tiny":
            continue
        if rung.cpu_only and not on_cpu:
            print(f"{args.model:>24} | {rung.name:<42} skipped: CPU only (our C++ kernel or step, torch.ao int8)",
                  flush=True)
            continue
        model = copy.deepcopy(base)
        fn, last = None, {}
        try:
            model = apply_transform(model, rung.transform)
            fn = _generate_fn(rung, model, max_len)

            def timed(x, n, fn=fn, last=last):
                out = fn(x, n)
                if n == args.new_tokens:
                    last["ids"] = out
                return out

            t = time_generation(model, tok, new_tokens=args.new_tokens, repeats=args.repeats, generate_fn=timed,
                                input_ids=ids)
        except Exception as e:  # one failing rung (e.g. a compiler error) must not lose the others
            print(f"{args.model:>24} | {rung.name:<42} FAILED: {e.__class__.__name__}: {str(e)[:200]}", flush=True)
            rows.append({"model": args.model, "rung": rung.name, "transform": rung.transform, "loop": rung.loop,
                         "compiled": rung.compile, "prompt": prompt,
                         "note": f"failed: {e.__class__.__name__}: {str(e)[:200]}"})
            continue
        new = last["ids"][:, prompt_len:]
        reference = new if reference is None else reference
        nbytes, read = model_bytes(model), decode_read_bytes(model)
        # read bandwidth measured after every rung: on a shared machine it moves (28-56 GB/s within one run
        # here); MBU divides by the highest value the run saw (_frame), the machine's ceiling, never a dip
        bandwidth = read_bandwidth(device)
        rows.append({"model": args.model, "rung": rung.name, "transform": rung.transform, "loop": rung.loop,
                     "compiled": rung.compile, "tok_s": t.tokens_per_s, "tpot_s": t.tpot_s, "ttft_s": t.ttft_s,
                     "first_call_s": t.first_call_s, "weight_bytes": nbytes,
                     "read_bytes_per_token": read, "achieved_GBs": read / t.tpot_s / 1e9,
                     "bandwidth_GBs": bandwidth / 1e9,
                     "token_agreement": token_agreement(reference, new),
                     "tiny_ppl_change": tiny_perplexity_change(rung.transform),
                     "threads": torch.get_num_threads(), "prompt_len": prompt_len, "prompt": prompt,
                     "new_tokens": args.new_tokens, "repeats": args.repeats, "own_loop": own_loop(rung),
                     "note": "", **getattr(fn, "info", {})})
        if "tokens_per_call" in rows[-1]:  # speculation: the target reads its weights once per call, not per token
            rows[-1]["achieved_GBs"] /= rows[-1]["tokens_per_call"]
        print(f"{args.model:>24} | {rung.name:<42} {t.tokens_per_s:7.1f} tok/s  agree "
              f"{rows[-1]['token_agreement']:.3f}", flush=True)
        del model, fn
        if rung.compile:  # dynamo's cache keeps the compiled step and with it this rung's model alive
            torch._dynamo.reset()
        gc.collect()
        df = _frame(rows)
        if only:  # keep the full run's baseline row; this one belongs to the partial re-run
            df.loc[0, "rung"] = f"{rungs[0].name[:-1]}, re-measured beside {', '.join(only)})"
        if save:  # after every rung, so a long run that is stopped keeps what it measured
            save_ladder(df, ladder_name, whole_model=not only)
    return _frame(rows)


def interleaved_tok_s(model_name: str, transforms=("int8wo", "int8k"), rounds: int = 7, prompt_len: int = 32,
                      new_tokens: int = 64, compile: bool = True, device: str = "cpu"):
    """Decode speed of our loop under several weight ``transforms`` of one model, measured *in turn*: each round
    runs every transform once, so a change in a shared machine's load hits all of them alike (the ladder runs
    its rungs minutes apart, and two close rungs can swap places between runs). One row per transform: median
    tok/s over the rounds (new tokens ÷ the whole ``generate`` call, prompt included), ``ratio`` = the median over
    rounds of its tok/s ÷ the first transform's in the same round, and token agreement with the first transform's
    output. ``transforms`` come from :data:`AB_VARIANTS`: ``"int8k-cpp"`` is the ``int8k`` weights run by the
    whole-step C++ decoder (:class:`secbook.kernels.CppDecoder`, never compiled by torch.compile). The prompt is the
    ladder's (:func:`ladder_prompt`: a chat turn for a chat model, else ``prompt_len`` tokens of held-out text)."""
    from tqdm.auto import tqdm

    from .measure import results_frame, tok_s_in_turn, token_agreement
    from .models import load

    if rounds < 1 or not transforms:
        raise ValueError("need rounds >= 1 and at least one transform")
    _, tok = load(model_name, device=device)
    ids = ladder_prompt(tok, prompt_len)[0]
    prompt_len = ids.shape[-1]
    gens, outs = {}, {}
    for t in tqdm(transforms, desc="build + compile", leave=False):
        cpp = t == "int8k-cpp"
        model = apply_transform(load(model_name, device=device)[0], "int8k" if cpp else t)
        gens[t] = FastGenerator(model, max_len=prompt_len + new_tokens, compile=compile and not cpp, cpp=cpp)
        outs[t] = gens[t].generate(ids, new_tokens)[:, prompt_len:]  # also the warm-up (compiles)
    speed = tok_s_in_turn({t: g.generate for t, g in gens.items()}, ids, new_tokens, rounds=rounds, warmup=0)
    first = transforms[0]
    rows = [{"model": model_name, "transform": t, "compiled": gens[t].compiled,
             "tok_s": float(np.median(speed[t])),
             "ratio": float(np.median(np.array(speed[t]) / np.array(speed[first]))),
             "token_agreement": token_agreement(outs[first], outs[t]), "rounds": rounds,
             "prompt_len": prompt_len, "new_tokens": new_tokens, "threads": torch.get_num_threads()}
            for t in transforms]
    torch._dynamo.reset()
    return results_frame(rows)


def _frame(rows):
    from .measure import results_frame

    df = results_frame(rows)
    df["speedup"] = df["tok_s"] / df["tok_s"].iloc[0]
    df = with_own_loop_speedup(df)
    if "achieved_GBs" in df:  # weight bytes read per second ÷ the best read bandwidth measured in this run
        df["bandwidth_max_GBs"] = df["bandwidth_GBs"].astype(float).max()
        df["mbu"] = df["achieved_GBs"].astype(float) / df["bandwidth_max_GBs"]
    return df


def save_ladder(df, name: str = "generate_ladder", whole_model: bool = False, key=("model", "rung")):
    """Merge ``df`` into ``data/results/<name>.csv``: rows with the same ``key`` (model, rung) are replaced — or,
    with ``whole_model`` (a full run), every earlier row of the same model. Each row's speed-up is against the
    baseline measured in its own run (``timestamp`` tells the runs apart)."""
    import pandas as pd

    from .measure import load_results, save_results

    try:
        old = load_results(name)
        if whole_model:
            old = old[~old["model"].isin(set(df["model"]))]
        new_keys = set(zip(*(df[k] for k in key)))
        old = old[[k not in new_keys for k in zip(*(old[k] for k in key))]]
        df = pd.concat([old, df], ignore_index=True)
    except (FileNotFoundError, OSError, KeyError):
        pass
    if {"rung", "tok_s"} <= set(df.columns):
        df = with_own_loop_speedup(df)
    return save_results(df, name)


GPU_QUICK_RUNGS = ("our loop fp32 + compile", "our loop bf16 + compile")  # chapter 3.2's GPU cell: a few minutes


def plot_ladder(ladder, title: str | None = None):
    """The optimization ladder as horizontal bars, one panel per model: decode tokens/s of each rung, labelled
    with its speed-up over the HF ``generate`` baseline and its token agreement, and a speculative rung also with
    its speed-up over its own loop without speculation (grey bars: baselines).
    ``title`` defaults to the machine the rows were recorded on (its GPU if it had one). Returns the figure."""
    import matplotlib.pyplot as plt
    import pandas as pd

    d_all = with_own_loop_speedup(ladder.dropna(subset=["tok_s"]))
    groups = list(d_all.groupby("model", sort=False))
    if not groups:
        raise ValueError("no measured rows (tok_s) to plot")
    fig, axes = plt.subplots(1, len(groups), figsize=(8.5 * len(groups), 0.4 * max(len(d) for _, d in groups) + 1.5),
                             squeeze=False)
    for ax, (name, d) in zip(axes[0], groups):
        names = d["rung"].str.replace(r"\(baseline, re-measured beside .*\)", "(baseline, re-measured)", regex=True)
        ax.barh(range(len(d)), d["tok_s"], color=["grey" if "baseline" in n else "tab:blue" for n in names])
        ax.set_yticks(range(len(d)), names)
        for y, r in enumerate(d.itertuples()):
            own = f", {r.speedup_vs_own_loop:.2f}x own loop" if pd.notna(r.speedup_vs_own_loop) else ""
            ax.text(r.tok_s, y, f" {r.speedup:.2f}x, agree {r.token_agreement:.2f}{own}", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name)
        ax.set_xlabel("decode tokens/s")
        ax.set_xlim(0, d["tok_s"].max() * 1.6)
    if title is None:
        r = d_all.iloc[0]
        gpu = str(r.get("gpu", "none"))
        title = f"recorded on {gpu}" if gpu.lower() not in ("none", "nan", "") else \
            f"recorded on {r.get('cpu', '?')}, {r.get('cores', '?')} cores"
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def ladder_summary(ladder) -> str:
    """The ladder's verdict per model, computed from its rows: HF ``generate``'s tokens/s, the best lossless
    loop of ours (fp32 weights, every token equal to the baseline's), the best rung within a 1% tiny-model
    perplexity budget, each with speed-up and MBU, and the speculative rungs with their speed-up over HF
    ``generate`` and over their own loop without speculation, and their acceptance rate."""
    import pandas as pd

    lines = []
    for name, d in with_own_loop_speedup(ladder.dropna(subset=["tok_s"])).groupby("model", sort=False):
        ours = d["loop"].isin(["ours", "cpp"])
        lossless = d[(d["token_agreement"] == 1.0) & (d["transform"] == "none") & ours]
        budget = d[(d["tiny_ppl_change"].abs() <= 0.01) & ours]
        lines.append(f"{name}: HF generate {d['tok_s'].iloc[0]:.1f} tok/s")
        if len(lossless):
            a = lossless.loc[lossless["speedup"].idxmax()]
            lines.append(f"  best lossless loop: {a['rung']} {a['speedup']:.2f}x (MBU {a['mbu']:.1%})")
        if len(budget):
            b = budget.loc[budget["speedup"].idxmax()]
            lines.append(f"  best within 1% ppl: {b['rung']} {b['speedup']:.2f}x (ppl {b['tiny_ppl_change']:+.2%}, "
                         f"agreement {b['token_agreement']:.2f}, MBU {b['mbu']:.1%} of "
                         f"{b['bandwidth_max_GBs']:.1f} GB/s)")
        for r in d[d["loop"].isin(["spec", "lookup"])].itertuples():
            own = pd.notna(r.speedup_vs_own_loop)
            own = f"{r.speedup_vs_own_loop:.2f}x its own loop ({r.own_loop}), " if own else ""
            lines.append(f"  {r.rung}: {r.speedup:.2f}x HF, {own}agreement {r.token_agreement:.2f}, "
                         f"acceptance {r.acceptance_rate:.2f}")
    return "\n".join(lines)
