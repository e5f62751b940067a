"""The KV cache: why decoding without it is quadratic, how much memory it takes, and what GQA saves.

Each new token attends to the keys and values of every earlier token. Without a cache the model recomputes
them all — the whole prefix runs through the network again at every step, so step ``t`` costs O(t) and a
whole generation O(n²). With the cache (Pope et al., 2022, "Efficiently Scaling Transformer Inference")
every step runs one token and appends one key and one value per layer: the step cost is flat (up to the
attention read, which grows slowly). The price is memory,

    bytes = layers × 2 (K and V) × kv_heads × head_dim × positions × batch × bytes_per_element,

and grouped-query attention (Ainslie et al., 2023) shrinks it by ``heads / kv_heads`` by sharing each
key/value head among several query heads.
"""
from __future__ import annotations

import time

import torch


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def kv_cache_bytes(config, positions: int, batch: int = 1, dtype: torch.dtype = torch.float32,
                   kv_heads: int | None = None) -> int:
    """The formula: layers × 2 × kv_heads × head_dim × positions × batch × bytes per element.

    ``kv_heads`` overrides the config (``config.num_attention_heads`` gives the no-GQA, multi-head size).
    """
    if positions < 0 or batch < 1:
        raise ValueError(f"positions must be >= 0 and batch >= 1, got {positions}, {batch}")
    kvh = kv_heads or getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    elem = torch.empty((), dtype=dtype).element_size()
    return config.num_hidden_layers * 2 * kvh * _head_dim(config) * positions * batch * elem


def gqa_saving(config) -> dict:
    """Query heads, KV heads and how many times smaller the cache is than with one KV head per query head."""
    h = config.num_attention_heads
    kvh = getattr(config, "num_key_value_heads", None) or h
    return {"heads": h, "kv_heads": kvh, "saving": h / kvh,
            "bytes_per_token_gqa": kv_cache_bytes(config, 1, kv_heads=kvh),
            "bytes_per_token_mha": kv_cache_bytes(config, 1, kv_heads=h)}


@torch.no_grad()
def measured_kv_bytes(model, input_ids: torch.Tensor) -> int:
    """Run ``input_ids`` with ``use_cache=True`` and add up the bytes of the real key/value tensors HF keeps."""
    out = model(input_ids=input_ids.to(next(model.parameters()).device), use_cache=True)
    cache = out.past_key_values
    total = 0
    for layer in cache.layers:
        for t in (layer.keys, layer.values):
            total += t.numel() * t.element_size()
    return total


@torch.no_grad()
def step_times(model, input_ids: torch.Tensor, new_tokens: int = 64, use_cache: bool = True) -> list[float]:
    """Seconds of each greedy decode step, with the KV cache or recomputing the whole prefix every step."""
    dev = next(model.parameters()).device
    ids = input_ids.to(dev)
    times, past = [], None
    out = model(input_ids=ids, use_cache=use_cache)
    nxt = out.logits[:, -1:].argmax(-1)
    past = out.past_key_values if use_cache else None
    for _ in range(new_tokens):
        ids = torch.cat([ids, nxt], dim=1)
        t0 = time.perf_counter()
        if use_cache:
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
        else:
            out = model(input_ids=ids, use_cache=False)
        nxt = out.logits[:, -1:].argmax(-1)
        times.append(time.perf_counter() - t0)
    return times


def cache_on_off(model, input_ids: torch.Tensor, new_tokens: int = 64):
    """Per-position step time with and without the cache (a DataFrame: position, with_cache_ms, no_cache_ms)."""
    import pandas as pd

    on = step_times(model, input_ids, new_tokens, True)
    off = step_times(model, input_ids, new_tokens, False)
    start = input_ids.shape[1]
    return pd.DataFrame({"position": range(start, start + new_tokens),
                         "with_cache_ms": [t * 1e3 for t in on], "no_cache_ms": [t * 1e3 for t in off]})


def cache_table(configs: dict, positions: int = 4096, batch: int = 1, dtype=torch.bfloat16):
    """KV-cache size at ``positions`` for several configs, with and without GQA (a DataFrame)."""
    import pandas as pd

    rows = []
    for name, cfg in configs.items():
        g = gqa_saving(cfg)
        rows.append({"model": name, "layers": cfg.num_hidden_layers, "heads": g["heads"], "kv_heads": g["kv_heads"],
                     "head_dim": _head_dim(cfg), "positions": positions,
                     "kv_MB": kv_cache_bytes(cfg, positions, batch, dtype) / 1e6,
                     "kv_MB_without_gqa": kv_cache_bytes(cfg, positions, batch, dtype, kv_heads=g["heads"]) / 1e6,
                     "gqa_saving": g["saving"]})
    return pd.DataFrame(rows)
