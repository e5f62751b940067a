"""One description of a decoder-only transformer per architecture family, and the decode step built from it.

Llama, Qwen, Mistral, Gemma, Phi-3, GPT-2 and GPT-NeoX are all the same machine: embed the tokens, then per
layer ``x = x + attention(norm(x))`` and ``x = x + mlp(norm(x))``, then a final norm and the LM head. They
differ in a handful of switches — which norm (RMS or Layer, Gemma's ``1 + w``), where the norms sit (Gemma
adds one after attention and one after the MLP), q/k norms (Qwen3, Gemma 3), how positions enter (rotary on
all or part of each head; GPT-2's learned table), how q/k/v come out of the projection (three layers, one
fused layer, GPT-NeoX's per-head interleaving), the MLP (gated or not, SiLU or GELU-tanh), biases, sliding
windows and local/global layer patterns (Mistral, Gemma), and soft-capping of attention and output logits
(Gemma 2). As gpt-fast does with its ``ModelArgs``, each family's switches are *data*: a :class:`Family`
(where its modules are and what it switches on) in :data:`FAMILIES`, completed by the numbers in the model's
config into a :class:`Spec` (:func:`describe`). As llama.cpp and vLLM do, one set of shared blocks — norm,
rotary (full or partial), attention (GQA, q/k norm, window, soft-cap), MLP — serves every family, so the maths
is written once. The weights are the model's own modules (the projections possibly fused,
:mod:`secbook.linears`), so quantized or pruned models keep working; positions use the model's own rotary
module, so every RoPE variant (Llama 3 scaling, Gemma 3's local and global bases) comes out right. Nothing here
copies transformers' code; it reads transformers' configs and modules.

:class:`Decoder` is the whole forward pass ``(ids, pos, cache) -> logits``. Every consumer builds on it: the
static-cache loop of :mod:`secbook.generate` (and speculative decoding on top), the CUDA-graph decoder of
:mod:`secbook.hardware`, the ONNX export of :mod:`secbook.onnx_export`, a serving engine with a paged cache.

**The KV-cache interface.** The decoder does not own its cache; it asks the one it is given two things:

``cache.write(layer, k, v, pos) -> (keys, values)``
    store the new keys and values ``k, v [B, n_kv, T, head_dim]`` of layer ``layer`` (0-based) at the positions
    ``pos`` — a ``[T]`` tensor shared by every sequence of the batch, or ``[B, T]``, one row per sequence
    (sequences of different lengths decoded together) — and return what the layer attends over:
    ``keys, values [B, n_kv, S, head_dim]`` for some ``S`` the cache chooses.
``cache.mask(pos, window) -> mask [B or 1, 1, T, S]``
    additive: 0 where query ``t`` (at position ``pos[..., t]``) may see key slot ``s``, ``-inf`` elsewhere —
    causal, and, when ``window`` is an int, only the ``window`` latest positions (the query's own included),
    as sliding-window attention defines it. The decoder calls it once per forward per distinct window, never
    per layer.

:class:`StaticCache` (pre-allocated ``[B, n_kv, max_len, head_dim]`` per layer, slot ``s`` = position ``s``,
masks cut from a precomputed causal table) is the default; a paged cache (vLLM's block tables) implements the
same two methods over blocks, gathering each sequence's blocks into ``keys``. A cache is sized from the decoder's
``spec`` (``n_layers``, ``n_kv``, ``head_dim``) and its ``dtype`` and ``device``; the mask must have that dtype.
``tests/test_decoder.py`` has a toy paged cache written against this interface alone.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .linears import fuse_linears


# ----------------------------------------------------------------------------- what a family switches on

@dataclass(frozen=True)
class Family:
    """What one architecture family switches on, and where its modules are (attribute paths inside the
    Hugging Face model, from the model for ``layers``/``final_norm``/``rotary``/``positions``, from a layer for
    the norms, from its attention and MLP modules for the projections)."""
    layers: str = "model.layers"
    final_norm: str = "model.norm"
    rotary: str | None = "model.rotary_emb"  # the model's own RoPE module; None: no rotary
    positions: str | None = None  # a learned position table added to the embeddings (GPT-2's ``wpe``)
    attn: str = "self_attn"
    qkv: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")  # one name: q, k and v come out of one layer
    o: str = "o_proj"
    mlp: str = "mlp"
    up: tuple[str, ...] = ("gate_proj", "up_proj")  # gated: [gate | up] (two layers or one); else one layer
    down: str = "down_proj"
    attn_norm: str = "input_layernorm"
    mlp_norm: str = "post_attention_layernorm"
    attn_out_norm: str | None = None  # Gemma 2/3: a norm on the attention output, before the residual add
    mlp_out_norm: str | None = None  # Gemma 2/3: the same after the MLP
    q_norm: str | None = None  # Qwen3, Gemma 3: an RMSNorm over each head of q (``k_norm``: of k)
    k_norm: str | None = None
    norm: str = "rms"  # "rms" (RMSNorm) or "layer" (LayerNorm with a bias)
    norm_plus_one: bool = False  # Gemma: the norm scales by (1 + w)
    gated: bool = True  # MLP act(gate) * up; else act(fc)
    heads_interleaved: bool = False  # GPT-NeoX: fused q/k/v rows grouped per head, [h0: q k v | h1: q k v | ...]
    windowed: bool = False  # honours config.sliding_window (per layer where config.layer_types says so)
    grouped_kv: bool = True  # grouped-query attention: config.num_key_value_heads (else one KV head per head)
    rope_per_layer_type: bool = False  # Gemma 3: local and global layers use different RoPE bases


LLAMA = Family()
_GEMMA2 = replace(LLAMA, windowed=True, norm_plus_one=True, mlp_norm="pre_feedforward_layernorm",
                  attn_out_norm="post_attention_layernorm", mlp_out_norm="post_feedforward_layernorm")
FAMILIES: dict[str, Family] = {  # by config.model_type
    "llama": LLAMA,  # also SmolLM, Llama 3.x (rope scaling comes with the model's rotary module)
    "mistral": replace(LLAMA, windowed=True),
    "qwen2": replace(LLAMA, windowed=True),  # q/k/v biases: they come with the layers
    "qwen3": replace(LLAMA, windowed=True, q_norm="q_norm", k_norm="k_norm"),
    "gemma2": _GEMMA2,  # + attention and final-logit soft-capping from the config
    "gemma3_text": replace(_GEMMA2, q_norm="q_norm", k_norm="k_norm", rope_per_layer_type=True),
    "phi3": replace(LLAMA, windowed=True, qkv=("qkv_proj",), up=("gate_up_proj",)),
    "gpt2": Family(layers="transformer.h", final_norm="transformer.ln_f", rotary=None, positions="transformer.wpe",
                   attn="attn", qkv=("c_attn",), o="c_proj", up=("c_fc",), down="c_proj", attn_norm="ln_1",
                   mlp_norm="ln_2", norm="layer", gated=False, grouped_kv=False),
    "gpt_neox": Family(layers="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm",
                       rotary="gpt_neox.rotary_emb", attn="attention", qkv=("query_key_value",), o="dense",
                       up=("dense_h_to_4h",), down="dense_4h_to_h", norm="layer", gated=False,
                       heads_interleaved=True, grouped_kv=False),
}

ACTIVATIONS = {  # the config's activation name -> the function (GELU-tanh: Hendrycks & Gimpel 2016's approximation)
    "silu": F.silu, "swish": F.silu, "gelu": F.gelu,
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"), "gelu_new": partial(F.gelu, approximate="tanh"),
}


@dataclass(frozen=True)
class Spec:
    """One model's decoder: its :class:`Family` plus the numbers from its config. ``windows`` and
    ``layer_types`` have one entry per layer (the sliding window or None; the RoPE kind a Gemma 3 layer uses,
    else None); ``rotary_dim`` is how many dimensions of each head RoPE turns (0: no rotary)."""
    model_type: str
    family: Family
    n_layers: int
    n_heads: int
    n_kv: int
    head_dim: int
    hidden: int
    vocab: int
    act: str
    rotary_dim: int
    parallel_residual: bool = False  # GPT-NeoX: x + attn(norm1(x)) + mlp(norm2(x))
    windows: tuple = ()
    layer_types: tuple = ()
    attn_softcap: float | None = None  # Gemma 2: scores -> c * tanh(scores / c)
    final_softcap: float | None = None  # Gemma 2: logits -> c * tanh(logits / c)
    embed_scale: float = 1.0  # Gemma: sqrt(hidden), applied by the model's own embedding module


class UnsupportedModel(ValueError):
    """The model is not a decoder family :func:`describe` knows (or uses a feature it does not implement)."""


def module_at(obj, path: str):
    """``obj.a.b.c`` for ``path="a.b.c"``: where a :class:`Family` says a module is."""
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def config_windows(config, n_layers: int | None = None) -> tuple:
    """The sliding window of each layer (None: full attention) as a config of a known family says: every layer
    of a windowed family when it has a ``sliding_window`` and no ``layer_types``, else the layers typed
    ``sliding_attention``. Families without windows (Llama, GPT-2, GPT-NeoX) give all None."""
    n = n_layers if n_layers is not None else config.num_hidden_layers
    fam = FAMILIES.get(getattr(config, "model_type", None))
    window = getattr(config, "sliding_window", None) if fam is not None and fam.windowed else None
    types = tuple(getattr(config, "layer_types", None) or ())[:n]
    return tuple(window if window and (not types or types[i] == "sliding_attention") else None for i in range(n))


def describe(model) -> Spec:
    """The :class:`Spec` of a Hugging Face causal LM, read from its config (and the family table); raises
    :class:`UnsupportedModel` saying why when the model is not one of :data:`FAMILIES` or uses something the
    shared blocks do not implement."""
    cfg = getattr(model, "config", None)
    mt = getattr(cfg, "model_type", None)
    if mt not in FAMILIES:
        raise UnsupportedModel(f"our decoder knows the families {', '.join(FAMILIES)} (SmolLM is 'llama'), not "
                               f"model_type={mt!r}")
    fam = FAMILIES[mt]
    if getattr(cfg, "use_bidirectional_attention", False) or getattr(cfg, "add_cross_attention", False):
        raise UnsupportedModel(f"{mt} with bidirectional or cross attention is not a causal decoder")
    act = getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", None) or \
        getattr(cfg, "activation_function", None)
    if act not in ACTIVATIONS:
        raise UnsupportedModel(f"activation {act!r} is not one of {', '.join(ACTIVATIONS)}")
    try:
        layers = module_at(model, fam.layers)
    except AttributeError:
        raise UnsupportedModel(f"a {mt} model without {fam.layers} (a base model without its LM head?)") from None
    H = cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    n_kv = (getattr(cfg, "num_key_value_heads", None) if fam.grouped_kv else None) or H
    rope = getattr(cfg, "rope_parameters", None) or {}
    if fam.rope_per_layer_type:
        rope = next(iter(rope.values()), {}) if rope else {}
    rotary_dim = int(hd * rope.get("partial_rotary_factor", 1.0)) if fam.rotary else 0
    n = len(layers)
    types = tuple(getattr(cfg, "layer_types", None) or ())[:n]
    windows = config_windows(cfg, n)
    embed = model.get_input_embeddings()
    return Spec(mt, fam, n_layers=n, n_heads=H, n_kv=n_kv, head_dim=hd, hidden=cfg.hidden_size,
                vocab=cfg.vocab_size, act=act, rotary_dim=rotary_dim,
                parallel_residual=bool(getattr(cfg, "use_parallel_residual", False)), windows=windows,
                layer_types=types if fam.rope_per_layer_type else (None,) * n,
                attn_softcap=getattr(cfg, "attn_logit_softcapping", None),
                final_softcap=getattr(cfg, "final_logit_softcapping", None),
                embed_scale=float(getattr(embed, "scalar_embed_scale", 1.0)))


def unsupported_reason(model) -> str:
    """Empty if :class:`Decoder` runs ``model``, else one sentence saying why not."""
    try:
        describe(model)
    except UnsupportedModel as e:
        return str(e)
    return ""


def check_supported(model) -> None:
    """Raise a ``ValueError`` that names the supported families if :class:`Decoder` cannot run ``model``."""
    why = unsupported_reason(model)
    if why:
        raise UnsupportedModel(f"{why}. Use model.generate() for this model.")


def check_sliding_window(model, max_len: int) -> None:
    """Raise a ``ValueError`` if a cache of ``max_len`` positions would reach past one of the model's sliding
    windows — for a consumer that does not implement sliding-window attention (the C++ step); :class:`Decoder`
    implements it."""
    windows = [w for w in describe(model).windows if w is not None]
    if windows and max_len > min(windows):
        raise ValueError(f"max_len={max_len} exceeds the model's sliding window ({min(windows)}), which the C++ "
                         "decode step does not implement; use a shorter max_len or the Python loop "
                         "(FastGenerator(model, max_len)), which does.")


# ----------------------------------------------------------------------------- the shared blocks

class Norm(nn.Module):
    """The model's norm ``module`` (RMSNorm or LayerNorm over the last axis, with its own weights; Gemma's
    scales by ``1 + w``). In fp32 it runs as one fused ``F.rms_norm`` / ``F.layer_norm`` call (same formula,
    fewer operations); in other dtypes it calls the module, so the rounding is the model's own."""

    def __init__(self, module: nn.Module, kind: str = "rms", plus_one: bool = False):
        super().__init__()
        self.module, self.kind = module, kind
        w = module.weight.detach()
        # buffers, not plain attributes: a compiled step then treats them as fixed (CUDA graphs copy plain inputs in)
        self.register_buffer("weight", w + 1 if plus_one else w, persistent=False)
        b = getattr(module, "bias", None)
        self.register_buffer("bias", None if b is None else b.detach(), persistent=False)
        self.eps = float(next(getattr(module, a) for a in ("variance_epsilon", "eps") if hasattr(module, a)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or self.weight.dtype != torch.float32:
            return self.module(x)
        if self.kind == "rms":
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE (Su et al. 2021) on the first ``cos.shape[-1]`` dimensions of each head of ``x [B, heads, T, D]``:
    all of them, or a part (GPT-NeoX, partial-rotary Phi-3), the rest passing unchanged."""
    d = cos.shape[-1]
    if d == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    r = x[..., :d]
    return torch.cat([r * cos + _rotate_half(r) * sin, x[..., d:]], dim=-1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float,
           softcap: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) v, the scores soft-capped to ``softcap · tanh(s / softcap)`` when given
    (Gemma 2). Eagerly one fused SDPA call is cheapest; inside a graph compiled for the CPU the explicit maths
    is faster, because the compiler fuses the scale, mask and softmax with their neighbours instead of calling
    out to a separate kernel for each layer."""
    if softcap is None and not (q.device.type == "cpu" and torch.compiler.is_compiling()):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    s = (q @ k.transpose(-1, -2)) * scale
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    return torch.softmax(s + mask, dim=-1) @ v


class Layer(nn.Module):
    """One decoder layer over the model's modules: attention (fused q/k/v, optional q/k norms, RoPE, the
    cache, GQA, window and soft-cap from the spec) and MLP (gated or not), with the family's norms and
    residuals. ``fuse=False`` calls the model's projection modules one by one instead of fused copies."""

    def __init__(self, spec: Spec, layer: nn.Module, index: int, fuse: bool = True):
        super().__init__()
        f = spec.family
        attn, mlp = getattr(layer, f.attn), getattr(layer, f.mlp)
        norm = partial(Norm, kind=f.norm, plus_one=f.norm_plus_one)
        self.attn_norm, self.mlp_norm = norm(module_at(layer, f.attn_norm)), norm(module_at(layer, f.mlp_norm))
        self.attn_out_norm = norm(module_at(layer, f.attn_out_norm)) if f.attn_out_norm else nn.Identity()
        self.mlp_out_norm = norm(module_at(layer, f.mlp_out_norm)) if f.mlp_out_norm else nn.Identity()
        self.q_norm = norm(getattr(attn, f.q_norm)) if f.q_norm else None
        self.k_norm = norm(getattr(attn, f.k_norm)) if f.k_norm else None
        self.qkv = fuse_linears([getattr(attn, n) for n in f.qkv], fuse)
        self.o = fuse_linears([getattr(attn, f.o)], fuse)
        self.up = fuse_linears([getattr(mlp, n) for n in f.up], fuse)
        self.down = fuse_linears([getattr(mlp, f.down)], fuse)
        self.act, self.gated = ACTIVATIONS[spec.act], f.gated
        self.index, self.interleaved, self.parallel = index, f.heads_interleaved, spec.parallel_residual
        self.H, self.KV, self.D = spec.n_heads, spec.n_kv, spec.head_dim
        self.scale, self.softcap = float(attn.scaling), spec.attn_softcap
        self.window, self.rope_kind = spec.windows[index], spec.layer_types[index]

    def attention(self, x, rope, mask, cache, pos):
        B, T, _ = x.shape
        H, KV, D = self.H, self.KV, self.D
        qkv = self.qkv(x)
        if self.interleaved:  # [h: q k v] per head -> [q heads | k heads | v heads]
            qkv = qkv.view(B, T, H, 3, D).transpose(2, 3)
        qk, v = qkv.reshape(B, T, H + 2 * KV, D).transpose(1, 2).split([H + KV, KV], dim=1)
        if self.q_norm is not None:
            q, k = qk.split([H, KV], dim=1)
            qk = torch.cat([self.q_norm(q), self.k_norm(k)], dim=1)
        if rope is not None:
            qk = rotate(qk, *rope)  # RoPE on queries and keys at once
        q, k = qk.split([H, KV], dim=1)
        keys, values = cache.write(self.index, k, v, pos)
        # grouped-query attention without copying K/V: the H // KV query heads that share a KV head are
        # folded into the query-length axis, [B, KV, (H // KV) * T, D] (the mask's rows were repeated to match)
        o = attend(q.reshape(B, KV, -1, D), keys, values, mask, self.scale, self.softcap)
        return self.o(o.reshape(B, H, T, D).transpose(1, 2).reshape(B, T, H * D))

    def mlp(self, x):
        h = self.up(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            return self.down(self.act(gate) * up)
        return self.down(self.act(h))

    def forward(self, x, rope, mask, cache, pos):
        h = self.attention(self.attn_norm(x), rope, mask, cache, pos)
        if self.parallel:  # GPT-NeoX: attention and MLP both read x
            return self.mlp(self.mlp_norm(x)) + h + x
        x = x + self.attn_out_norm(h)
        return x + self.mlp_out_norm(self.mlp(self.mlp_norm(x)))


class Decoder(nn.Module):
    """The whole decoder of a Hugging Face causal LM as ``forward(ids [B, T], pos, cache) -> logits [B, T, V]``:
    ``pos`` is ``[T]`` (shared by the batch) or ``[B, T]`` (one row per sequence); ``cache`` implements the
    interface in the module docstring (:class:`StaticCache` by default: :meth:`new_cache`); ``last_only``
    returns the last position's logits only (a prefill needs no others). Built from :func:`describe` and the
    model's modules; ``fuse=True`` fuses q/k/v and gate/up (:func:`secbook.linears.fuse_linears`)."""

    def __init__(self, model, fuse: bool = True):
        super().__init__()
        self.spec = spec = describe(model)
        f = spec.family
        self.embed = model.get_input_embeddings()  # the model's own (Gemma's multiplies by sqrt(hidden))
        self.positions = module_at(model, f.positions) if f.positions else None
        self.rotary = module_at(model, f.rotary) if f.rotary else None
        self.layers = nn.ModuleList(Layer(spec, layer, i, fuse) for i, layer in enumerate(module_at(model, f.layers)))
        self.norm = Norm(module_at(model, f.final_norm), f.norm, f.norm_plus_one)
        self.head = fuse_linears([model.get_output_embeddings()], fuse)
        self.windows = tuple(dict.fromkeys(spec.windows))
        self.rope_kinds = tuple(dict.fromkeys(spec.layer_types))
        self.rep = spec.n_heads // spec.n_kv

    def rope(self, x: torch.Tensor, pos: torch.Tensor) -> dict:
        """cos and sin ``[B or 1, 1, T, rotary_dim]`` per RoPE kind, from the model's own rotary module."""
        if self.rotary is None:
            return {k: None for k in self.rope_kinds}
        p = pos if pos.dim() == 2 else pos[None]
        out = {}
        for kind in self.rope_kinds:
            cos, sin = self.rotary(x, p) if kind is None else self.rotary(x, p, kind)
            out[kind] = cos[:, None], sin[:, None]
        return out

    def masks(self, cache, pos: torch.Tensor) -> dict:
        """The cache's mask per distinct window, its rows repeated for the query heads folded by GQA."""
        out = {}
        for w in self.windows:
            m = cache.mask(pos, w)
            b, _, T, S = m.shape
            out[w] = m[:, :, None].expand(b, 1, self.rep, T, S).reshape(b, 1, self.rep * T, S)
        return out

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, cache, last_only: bool = False) -> torch.Tensor:
        x = self.embed(ids)
        if self.positions is not None:  # GPT-2: learned positions
            x = x + self.positions(pos)
        rope, masks = self.rope(x, pos), self.masks(cache, pos)
        for layer in self.layers:
            x = layer(x, rope[layer.rope_kind], masks[layer.window], cache, pos)
        if last_only:
            x = x[:, -1:]
        logits = self.head(self.norm(x))
        if self.spec.final_softcap is not None:
            c = self.spec.final_softcap
            logits = torch.tanh(logits / c) * c
        return logits

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the activations (and so a cache's keys and values) have: the embeddings'."""
        w = self.embed.weight
        return w.dtype if w.dtype.is_floating_point else torch.float32

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def new_cache(self, batch: int, max_len: int) -> "StaticCache":
        """A :class:`StaticCache` for this model: ``batch`` sequences of up to ``max_len`` positions, in the
        dtype and on the device of the embeddings."""
        if self.positions is not None and max_len > self.positions.num_embeddings:
            raise ValueError(f"max_len={max_len} exceeds the model's {self.positions.num_embeddings} learned "
                             "positions; use a shorter max_len.")
        s = self.spec
        return StaticCache(s.n_layers, batch, s.n_kv, max_len, s.head_dim, self.dtype, self.device)


class StaticCache:
    """The default KV cache: ``[B, n_kv, max_len, head_dim]`` keys and values per layer, allocated once, slot
    ``s`` holding position ``s`` (gpt-fast's static cache: fixed shapes and addresses, so a step compiles once
    and can be captured as a CUDA graph). Masks are rows of a precomputed additive causal table (a float mask
    keeps SDPA on its fast path on the CPU; a bool one is ~10x slower), plus the window when one is asked for.
    Stale entries past a sequence's position are never seen, so rewinding (speculative decoding) is free."""

    def __init__(self, n_layers: int, batch: int, n_kv: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (batch, n_kv, max_len, head_dim)
        self.batch, self.max_len = batch, max_len
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        tril = torch.tril(torch.ones(max_len, max_len, dtype=torch.bool, device=device))
        self.causal = torch.zeros(tril.shape, dtype=dtype, device=device).masked_fill(~tril, float("-inf"))
        self.slots = torch.arange(max_len, device=device)
        if torch.device(device).type == "cuda":  # fixed addresses: a CUDA graph keeps them instead of copying them in
            for t in self.k + self.v + [self.causal, self.slots]:
                torch._dynamo.mark_static_address(t, guard=False)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor):
        kc, vc = self.k[layer], self.v[layer]
        if pos.dim() == 1:  # one set of positions for the whole batch
            kc.index_copy_(2, pos, k.to(kc.dtype))
            vc.index_copy_(2, pos, v.to(vc.dtype))
        else:  # [B, T]: each sequence at its own positions
            idx = pos[:, None, :, None].expand(k.shape)
            kc.scatter_(2, idx, k.to(kc.dtype))
            vc.scatter_(2, idx, v.to(vc.dtype))
        return kc, vc

    def mask(self, pos: torch.Tensor, window: int | None = None) -> torch.Tensor:
        m = self.causal[pos]  # [T, S] or [B, T, S]
        if window is not None:  # keys that fell out of the window: position <= query position - window
            m = m.masked_fill(self.slots <= pos[..., None] - window, float("-inf"))
        return m[None, None] if pos.dim() == 1 else m[:, None]

    def nbytes(self) -> int:
        """Bytes of the pre-allocated keys and values (compare with ``kvcache.kv_cache_bytes``)."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)
