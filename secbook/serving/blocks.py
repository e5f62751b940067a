"""The paged KV cache: fixed-size blocks, a block table per sequence, a block allocator.

A server that gives every request one contiguous KV buffer has to size it for the longest answer the request
*might* produce (prompt + ``max_tokens``), so most of the memory it reserves is never written, and the
reservation decides how few requests fit at once. vLLM's PagedAttention (Kwon et al., SOSP'23, "Efficient
Memory Management for Large Language Model Serving with PagedAttention") borrows the operating system's answer:
cut the cache into **blocks** of ``block_size`` token slots, hand them out on demand from a free list (the
**block allocator**), and keep for every sequence a **block table** — the list of its blocks in order, like a
page table. Position ``p`` of a sequence lives in slot ``p % block_size`` of block ``table[p // block_size]``.
A sequence then wastes at most one partly filled block, and admission is decided by counting free blocks.

Attention needs the keys of a sequence in position order. PagedAttention's CUDA kernel reads them straight from
the scattered blocks inside the attention loop, in one pass. Here :class:`PagedBatch` does the same in two
plain steps that any attention implementation accepts: it *gathers* each sequence's slots into a
``[batch, kv_heads, positions, head_dim]`` tensor (one indexed copy) and builds the additive mask that hides the
padding between sequences of different lengths. It implements the decoder's cache interface,
``write(layer, k, v, pos) -> (keys, values)`` and ``mask(pos, window) -> additive mask``, and HF's
``update(k, v, layer_idx)``, so the same cache sits under our decoder and under a transformers model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


class OutOfBlocks(RuntimeError):
    """The allocator has fewer free blocks than asked for (the scheduler preempts or waits)."""


class BlockAllocator:
    """A free list of block ids ``0 .. num_blocks-1``: ``allocate(n)`` pops ``n`` ids, ``release`` pushes them
    back. Any free block is as good as any other — that is what removes external fragmentation (vLLM §4.2)."""

    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))
        self._used: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return len(self._used)

    def allocate(self, n: int) -> list[int]:
        """``n`` free block ids (all or none); :class:`OutOfBlocks` if fewer are free."""
        if n < 0:
            raise ValueError(f"cannot allocate {n} blocks")
        if n > len(self._free):
            raise OutOfBlocks(f"asked for {n} blocks, {len(self._free)} free of {self.num_blocks}")
        ids = [self._free.pop() for _ in range(n)]
        self._used.update(ids)
        return ids

    def release(self, ids: list[int]) -> None:
        """Give blocks back; releasing a block that is not in use is a bug and raises."""
        for i in ids:
            if i not in self._used:
                raise ValueError(f"block {i} is not allocated")
            self._used.remove(i)
            self._free.append(i)


@dataclass(frozen=True)
class CacheShape:
    """What one token's keys and values look like: layers × (K and V) × kv_heads × head_dim, in ``dtype``."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype = torch.float32

    @classmethod
    def from_config(cls, config, dtype: torch.dtype = torch.float32) -> "CacheShape":
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(config.num_hidden_layers, kv_heads, head_dim, dtype)

    @property
    def bytes_per_token(self) -> int:
        elem = torch.empty((), dtype=self.dtype).element_size()
        return self.layers * 2 * self.kv_heads * self.head_dim * elem


class PagedKVCache:
    """Key and value pools of ``num_blocks × block_size`` token slots per layer, a block table and a length per
    sequence. ``reserve(seq, n)`` grows a sequence's table to cover ``n`` positions (allocating only the blocks
    it lacks), ``free(seq)`` returns all its blocks, ``batch(seqs, pos)`` is the view a forward pass uses.

    ``planned`` lengths (prompt + max_tokens) are kept only to report what a contiguous cache, reserving the
    worst case up front, would have needed next to what the blocks hold (:meth:`stats`)."""

    def __init__(self, shape: CacheShape, num_blocks: int, block_size: int = 16, device: str | torch.device = "cpu"):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.shape, self.block_size, self.device = shape, block_size, torch.device(device)
        self.allocator = BlockAllocator(num_blocks)
        slots = num_blocks * block_size
        self.k = [torch.zeros(slots, shape.kv_heads, shape.head_dim, dtype=shape.dtype, device=self.device)
                  for _ in range(shape.layers)]
        self.v = [torch.zeros_like(t) for t in self.k]
        self.tables: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}  # positions written so far
        self.planned: dict[int, int] = {}

    @property
    def num_blocks(self) -> int:
        return self.allocator.num_blocks

    @property
    def block_bytes(self) -> int:
        return self.block_size * self.shape.bytes_per_token

    def blocks_for(self, tokens: int) -> int:
        """Blocks needed to hold ``tokens`` positions (a ceiling division)."""
        return -(-tokens // self.block_size)

    def missing_blocks(self, seq: int, tokens: int) -> int:
        """How many more blocks ``seq`` needs to cover ``tokens`` positions."""
        return max(0, self.blocks_for(tokens) - len(self.tables.get(seq, ())))

    def can_reserve(self, seq: int, tokens: int) -> bool:
        return self.missing_blocks(seq, tokens) <= self.allocator.num_free

    def reserve(self, seq: int, tokens: int, planned: int | None = None) -> None:
        """Make sure ``seq`` has blocks for positions ``0 .. tokens-1``; :class:`OutOfBlocks` if not enough free."""
        table = self.tables.setdefault(seq, [])
        self.lengths.setdefault(seq, 0)
        if planned is not None:
            self.planned[seq] = planned
        table += self.allocator.allocate(self.missing_blocks(seq, tokens))

    def free(self, seq: int) -> None:
        """Return every block of ``seq`` to the allocator (a finished, cancelled or preempted sequence)."""
        self.allocator.release(self.tables.pop(seq, []))
        self.lengths.pop(seq, None)
        self.planned.pop(seq, None)

    def batch(self, seqs: list[int], pos: torch.Tensor) -> "PagedBatch":
        """The view of ``seqs`` for one forward pass; ``pos[b, t]`` is the position of row ``b``'s ``t``-th new
        token (``-1`` for padding)."""
        return PagedBatch(self, seqs, pos)

    def stats(self) -> dict:
        """Blocks in use, and bytes: reserved by blocks, actually written, and what reserving every sequence's
        planned length contiguously would take. ``reserved - used`` is the paged cache's internal
        fragmentation (at most one partial block per sequence)."""
        bpt = self.shape.bytes_per_token
        used_tokens = sum(self.lengths.values())
        return {"blocks_total": self.num_blocks, "blocks_used": self.allocator.num_used,
                "block_size": self.block_size, "sequences": len(self.tables), "bytes_per_token": bpt,
                "bytes_total": self.num_blocks * self.block_bytes,
                "bytes_reserved": self.allocator.num_used * self.block_bytes,
                "bytes_used": used_tokens * bpt,
                "bytes_contiguous": sum(self.planned.get(s, self.lengths[s]) for s in self.lengths) * bpt}


class PagedBatch:
    """``B`` sequences of one forward pass over a :class:`PagedKVCache`.

    ``write`` scatters the new keys/values into their slots and returns every sequence's keys and values
    gathered in position order, padded to the longest sequence; ``mask`` hides the padding and the future.
    Row ``b`` may carry fewer new tokens than the widest row: its extra columns have ``pos = -1``, are not
    written, and see only key 0 (so their softmax stays finite; their outputs are thrown away)."""

    def __init__(self, cache: PagedKVCache, seqs: list[int], pos: torch.Tensor):
        if pos.dim() != 2 or pos.shape[0] != len(seqs):
            raise ValueError(f"pos must be [batch, tokens] with batch = {len(seqs)}, got {tuple(pos.shape)}")
        self.cache, self.seqs = cache, list(seqs)
        self.pos = pos.to(cache.device, torch.long)
        bs = cache.block_size
        width = max(len(cache.tables[s]) for s in self.seqs)
        table = torch.zeros(len(seqs), width, dtype=torch.long)
        for b, s in enumerate(self.seqs):
            table[b, :len(cache.tables[s])] = torch.tensor(cache.tables[s], dtype=torch.long)
            top = int(self.pos[b].max()) + 1
            if top > len(cache.tables[s]) * bs:
                raise ValueError(f"sequence {s}: position {top - 1} has no block; reserve it first")
        table = table.to(cache.device)
        valid = self.pos >= 0
        p = self.pos.clamp(min=0)
        self.write_slots = (table.gather(1, p // bs) * bs + p % bs)[valid]
        self.valid = valid
        self.kv_len = int(self.pos.max()) + 1
        j = torch.arange(self.kv_len, device=cache.device)
        self.read_slots = table[:, j // bs] * bs + j % bs  # [B, kv_len]

    def _check(self, pos: torch.Tensor | None) -> None:
        if pos is not None and tuple(pos.shape) != tuple(self.pos.shape):
            raise ValueError(f"pos {tuple(pos.shape)} is not this batch's {tuple(self.pos.shape)}")

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor | None = None):
        """Store ``k, v`` (``[B, kv_heads, T, head_dim]``) at this batch's positions; return the gathered
        ``(keys, values)``, each ``[B, kv_heads, kv_len, head_dim]``. ``pos`` is only checked for its shape:
        the batch keeps the real positions (its caller may pass them with the padding clamped)."""
        self._check(pos)
        kp, vp = self.cache.k[layer], self.cache.v[layer]
        kp[self.write_slots] = k.transpose(1, 2)[self.valid].to(kp.dtype)
        vp[self.write_slots] = v.transpose(1, 2)[self.valid].to(vp.dtype)
        if layer == self.cache.shape.layers - 1:
            for b, s in enumerate(self.seqs):
                self.cache.lengths[s] = max(self.cache.lengths[s], int(self.pos[b].max()) + 1)
        return kp[self.read_slots].transpose(1, 2), vp[self.read_slots].transpose(1, 2)

    def mask(self, pos: torch.Tensor | None = None, window: int | None = None,
             dtype: torch.dtype | None = None) -> torch.Tensor:
        """Additive mask ``[B, 1, T, kv_len]``: 0 where query ``(b, t)`` may see key ``j`` (``j <= pos``, and
        ``pos - j < window`` for sliding-window attention), the dtype's most negative value elsewhere (finite,
        so a padding row's softmax stays finite too). ``dtype`` defaults to the cache's."""
        self._check(pos)
        dtype = dtype or self.cache.shape.dtype
        j = torch.arange(self.kv_len, device=self.cache.device)
        q = self.pos.unsqueeze(-1)  # [B, T, 1]
        ok = j <= q
        if window is not None:
            ok &= (q - j) < window
        ok |= (q < 0) & (j == 0)  # padding rows see key 0 only
        out = torch.zeros(ok.shape, dtype=dtype, device=self.cache.device)
        return out.masked_fill_(~ok, torch.finfo(dtype).min).unsqueeze(1)

    # transformers' cache protocol: each attention layer calls update() with its new keys and values.
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        return self.write(layer_idx, key_states, value_states)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.kv_len
