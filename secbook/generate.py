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

The decoder forward is :class:`secbook.decoder.Decoder`: one description per architecture family (Llama,
SmolLM, Qwen2/2.5, Qwen3, Mistral, Gemma 2/3, Phi-3, GPT-2, GPT-NeoX) over the model's own weights, with the
projections fused (q/k/v as one matmul, gate/up as one: :mod:`secbook.linears`; quantized layers too) or
called as the model's modules. Its greedy output is token-for-token the output of ``model.generate`` (tests
check it per family). A model of another architecture is handed to ``model.generate`` with a one-line note.
The optimization ladder that measures this loop against HF ``generate`` is :mod:`secbook.ladder`.
"""
from __future__ import annotations

import sys
import time

import torch

from .decoder import Decoder, StaticCache, check_supported, describe, unsupported_reason  # noqa: F401
from .linears import (FusedLinear, Int8DynamicFused, Int8WeightOnlyFused, SeparateLinears,  # noqa: F401
                      fuse_linears, stacked_bias)


class StaticDecoder(torch.nn.Module):
    """The decoder forward over a pre-allocated KV cache of ``max_len`` positions for ``batch`` sequences.

    ``forward(ids [B, T], input_pos [T]) -> logits`` writes the T new keys/values at ``input_pos`` and attends
    over the whole cache with a causal mask (and each layer's sliding window, if it has one); positions beyond
    ``input_pos`` are hidden, so stale entries (e.g. draft tokens rejected by speculative decoding) never
    matter — rewinding is free. ``input_pos`` may also be ``[B, T]``, one row per sequence.

    It is :class:`secbook.decoder.Decoder` bound to its own :class:`secbook.decoder.StaticCache` (``cache``).
    ``fuse=True`` (the default) runs q/k/v as one matmul and gate/up as one (:func:`fuse_linears`), over
    transposed weight copies; ``fuse=False`` calls the model's own projection modules one by one.
    """

    def __init__(self, model, max_len: int, batch: int = 1, fuse: bool = True):
        super().__init__()
        self.decoder = Decoder(model, fuse=fuse)
        self.max_len, self.batch = int(max_len), int(batch)
        self.cache = self.decoder.new_cache(self.batch, self.max_len)

    @property
    def k_cache(self) -> list[torch.Tensor]:
        return self.cache.k

    @property
    def v_cache(self) -> list[torch.Tensor]:
        return self.cache.v

    def cache_bytes(self) -> int:
        """Bytes of the pre-allocated cache (compare with ``kvcache.kv_cache_bytes``)."""
        return self.cache.nbytes()

    def forward(self, ids: torch.Tensor, input_pos: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        return self.decoder(ids, input_pos, self.cache, last_only)


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
    (:class:`secbook.kernels.CppDecoder`). A model whose architecture our decoder does not know is decoded by
    ``model.generate`` instead (``self.decoder`` is None), after a one-line note saying so.
    """

    def __init__(self, model, max_len: int = 256, batch: int = 1, compile: bool = False, mode: str | None = None,
                 fuse: bool = True, cpp: bool = False):
        self.model = model.eval()
        self.max_len, self.batch = int(max_len), int(batch)
        self.device = next(model.parameters()).device
        self.compiled = bool(compile)
        self.compile_s: float | None = None
        why = "" if cpp else unsupported_reason(model)
        if why:  # not a family of ours: HF generate does the work, and says so in one line
            print(f"secbook: {why}; FastGenerator falls back to model.generate().", file=sys.stderr, flush=True)
            self.decoder, self.compiled, self.step = None, False, None
            return
        if cpp:
            if compile:
                raise ValueError("cpp=True runs the whole decode step as compiled C++ already; use compile=False")
            from .kernels import CppDecoder

            self.decoder = CppDecoder(model, max_len, batch)
        else:
            self.decoder = StaticDecoder(model, max_len, batch, fuse=fuse)
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
        if self.decoder is None:
            raise ValueError("this model runs on model.generate() (our decoder does not know its architecture): "
                             "there is no cache to prefill; call generate()")
        if B != self.batch:
            raise ValueError(f"this generator was built for batch={self.batch}, got batch={B}")
        if T >= self.max_len:
            raise ValueError(f"prompt of {T} tokens does not fit the static cache of max_len="
                             f"{self.max_len} positions (need prompt + new tokens <= max_len); "
                             "build the generator with a larger max_len.")
        pos = torch.arange(T, device=self.device)
        return self.decoder(input_ids.to(self.device), pos, last_only=True)[:, -1]

    def _hf(self, input_ids, max_new_tokens, temperature, top_k, seed) -> torch.Tensor:
        """The fallback: ``model.generate``, greedy or sampled, exactly ``max_new_tokens`` new tokens."""
        if temperature == 0:
            return hf_generate(self.model, input_ids, max_new_tokens)
        if seed is not None:
            torch.manual_seed(seed)
        ids = input_ids.to(self.device)
        return self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                   min_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                   top_k=top_k or 0, pad_token_id=self.model.generation_config.pad_token_id or 0)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None) -> torch.Tensor:
        """Prompt + ``max_new_tokens`` new tokens [B, T + n] (greedy when ``temperature == 0``)."""
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        T = input_ids.shape[1]
        if T + max_new_tokens > self.max_len:
            raise ValueError(f"prompt ({T}) + max_new_tokens ({max_new_tokens}) = {T + max_new_tokens} exceeds "
                             f"the static cache's max_len={self.max_len}; build the generator with a "
                             "larger max_len.")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if self.decoder is None:
            return self._hf(input_ids, max_new_tokens, temperature, top_k, seed)
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


