"""One forward pass over a batch of sequences of different lengths, through the paged KV cache.

The engine hands a runner, for every sequence of the step, the new tokens to feed (a whole or partial prompt
for prefill, one token for decode) and the position of the first one; the runner returns the logits of each
row's last token. Rows are right-padded to the widest; ``pos[b, t]`` carries every token's own position, so
the rotary embedding and the causal mask are right for each sequence whatever else is in the batch.

:class:`HFRunner` runs the model's own transformers forward with the paged cache plugged in as its cache
object and the paged mask as its attention mask: no copy of the model's maths, and it works for any causal LM
whose attention layers call ``cache.update`` (Llama, Qwen2, Mistral, ...). Sliding-window layers are not
masked specially (windows are ignored), so serve full-attention models with it.
"""
from __future__ import annotations

import inspect

import torch

from .blocks import CacheShape, PagedKVCache


class HFRunner:
    """Batched forward of a transformers causal LM over a :class:`PagedKVCache` (see the module docstring)."""

    def __init__(self, model, cache: PagedKVCache):
        self.model, self.cache = model, cache
        self.device = next(model.parameters()).device
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._mask_dtype = next(model.parameters()).dtype
        if not self._mask_dtype.is_floating_point:
            self._mask_dtype = torch.float32

    @classmethod
    def build(cls, model, num_blocks: int, block_size: int = 16) -> "HFRunner":
        """A runner with a fresh paged cache of ``num_blocks`` blocks shaped for ``model``."""
        dtype = next(model.parameters()).dtype
        shape = CacheShape.from_config(model.config, dtype if dtype.is_floating_point else torch.float32)
        return cls(model, PagedKVCache(shape, num_blocks, block_size, device=next(model.parameters()).device))

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @torch.inference_mode()
    def forward(self, seqs: list[int], tokens: list[list[int]], starts: list[int]) -> torch.Tensor:
        """Feed ``tokens[b]`` at positions ``starts[b], starts[b]+1, ...`` for sequence ``seqs[b]`` (its blocks
        must be reserved); return the logits of each row's last token, ``[B, vocab]`` in fp32."""
        if not (len(seqs) == len(tokens) == len(starts)) or not seqs:
            raise ValueError("seqs, tokens and starts must be equally long and not empty")
        width = max(len(t) for t in tokens)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        pos = torch.full((len(seqs), width), -1, dtype=torch.long)
        for b, (t, s) in enumerate(zip(tokens, starts)):
            ids[b, :len(t)] = torch.tensor(t, dtype=torch.long)
            pos[b, :len(t)] = torch.arange(s, s + len(t))
        batch = self.cache.batch(seqs, pos)
        mask = batch.mask(dtype=self._mask_dtype)
        out = self.model(input_ids=ids.to(self.device), position_ids=pos.clamp(min=0).to(self.device),
                         attention_mask=mask, use_cache=True, **{self._cache_kw: batch})
        last = torch.tensor([len(t) - 1 for t in tokens], device=out.logits.device)
        return out.logits[torch.arange(len(seqs), device=last.device), last].float()
