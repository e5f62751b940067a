"""One forward pass over a batch of sequences of different lengths, through the paged KV cache.

The engine hands a runner, for every sequence of the step, the new tokens to feed (a whole or partial prompt
for prefill, one token for decode) and the position of the first one; the runner returns the logits of each
row's last token. Rows are *left*-padded to the widest, so every row's last token sits in the last column
(only that column goes through the LM head); ``pos[b, t]`` carries every token's own position (``-1`` for
padding), so the rotary embedding and the causal mask are right for each sequence whatever else is in the batch.

Two runners, the same contract:

* :class:`DecoderRunner` — secbook's own decoder (:class:`secbook.decoder.Decoder`: one description of each
  architecture family, the maths written once) with the paged cache plugged into its cache interface
  (``write`` / ``mask``, sliding windows included). The default for every family it knows.
* :class:`HFRunner` — the model's own transformers forward with the paged cache as its cache object and the
  paged mask as its attention mask: any causal LM whose attention layers call ``cache.update`` (windows are
  not applied: full-attention models only). The fallback for architectures the decoder does not describe.
"""
from __future__ import annotations

import inspect

import torch

from .blocks import CacheShape, PagedKVCache


class _Runner:
    def __init__(self, model, cache: PagedKVCache):
        self.model, self.cache = model, cache
        self.device = next(model.parameters()).device

    @classmethod
    def build(cls, model, num_blocks: int, block_size: int = 16):
        """A runner with a fresh paged cache of ``num_blocks`` blocks shaped for ``model``."""
        dtype = next(model.parameters()).dtype
        shape = CacheShape.from_config(model.config, dtype if dtype.is_floating_point else torch.float32)
        return cls(model, PagedKVCache(shape, num_blocks, block_size, device=next(model.parameters()).device))

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def _inputs(self, seqs: list[int], tokens: list[list[int]], starts: list[int]):
        if not (len(seqs) == len(tokens) == len(starts)) or not seqs or not all(tokens):
            raise ValueError("seqs, tokens and starts must be equally long and not empty")
        width = max(len(t) for t in tokens)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        pos = torch.full((len(seqs), width), -1, dtype=torch.long)
        for b, (t, s) in enumerate(zip(tokens, starts)):
            ids[b, width - len(t):] = torch.tensor(t, dtype=torch.long)
            pos[b, width - len(t):] = torch.arange(s, s + len(t))
        return ids.to(self.device), pos, self.cache.batch(seqs, pos)

    @torch.inference_mode()
    def forward(self, seqs: list[int], tokens: list[list[int]], starts: list[int]) -> torch.Tensor:
        """Feed ``tokens[b]`` at positions ``starts[b], starts[b]+1, ...`` for sequence ``seqs[b]`` (its blocks
        must be reserved); return the logits of each row's last token, ``[B, vocab]`` in fp32."""
        ids, pos, batch = self._inputs(seqs, tokens, starts)
        return self._last_logits(ids, pos.clamp(min=0).to(self.device), batch).float()


class DecoderRunner(_Runner):
    """Batched forward of :class:`secbook.decoder.Decoder` over a :class:`PagedKVCache` (see the module
    docstring). The decoder receives the positions with padding clamped to 0 (for its rotary or learned
    position tables); the paged batch keeps the real ones and skips the padding when it writes and masks."""

    def __init__(self, model, cache: PagedKVCache):
        from ..decoder import Decoder

        super().__init__(model, cache)
        self.decoder = Decoder(model)
        spec, shape = self.decoder.spec, cache.shape
        if (spec.n_layers, spec.n_kv, spec.head_dim) != (shape.layers, shape.kv_heads, shape.head_dim):
            raise ValueError(f"the cache is shaped for {shape.layers} layers x {shape.kv_heads} KV heads x "
                             f"{shape.head_dim}, the decoder needs {spec.n_layers} x {spec.n_kv} x {spec.head_dim}")

    def _last_logits(self, ids, pos, batch):
        return self.decoder(ids, pos, batch, last_only=True)[:, -1]


class HFRunner(_Runner):
    """Batched forward of a transformers causal LM over a :class:`PagedKVCache` (see the module docstring)."""

    def __init__(self, model, cache: PagedKVCache):
        super().__init__(model, cache)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def _last_logits(self, ids, pos, batch):
        out = self.model(input_ids=ids, position_ids=pos, attention_mask=batch.mask(), use_cache=True,
                         **{self._cache_kw: batch}, **self._extra)
        return out.logits[:, -1]


def make_runner(model, num_blocks: int, block_size: int = 16, kind: str = "auto"):
    """``kind`` ``"decoder"``, ``"hf"``, or ``"auto"``: our decoder where it describes the model's family, the
    transformers forward otherwise."""
    if kind not in ("auto", "decoder", "hf"):
        raise ValueError(f"runner must be 'auto', 'decoder' or 'hf', got {kind!r}")
    if kind == "auto":
        from ..decoder import unsupported_reason

        kind = "hf" if unsupported_reason(model) else "decoder"
    return (DecoderRunner if kind == "decoder" else HFRunner).build(model, num_blocks, block_size)
