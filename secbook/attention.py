"""Attention implementations compared: the textbook ``eager`` path vs PyTorch's fused SDPA.

``eager`` computes ``softmax(QKᵀ/√d + mask) V`` as separate operations and materialises the full
T×T score matrix; ``sdpa`` (``torch.nn.functional.scaled_dot_product_attention``) dispatches to a fused
kernel — FlashAttention (Dao et al., 2022) on recent GPUs, a tiled flash-style kernel on CPU — that never
stores the score matrix. The model computes the same function either way (up to rounding); the speed
difference grows with the context length, where the T² scores dominate.
"""
from __future__ import annotations

import statistics
import time

import torch

IMPLEMENTATIONS = ("eager", "sdpa")


def available_implementations() -> list[str]:
    """``eager`` and ``sdpa`` everywhere; ``flash_attention_2`` only if the package and a CUDA GPU exist."""
    impls = list(IMPLEMENTATIONS)
    try:
        import flash_attn  # noqa: F401

        if torch.cuda.is_available():
            impls.append("flash_attention_2")
    except ImportError:
        pass
    return impls


def set_attention(model, impl: str):
    """Switch ``model``'s attention implementation in place (and return it)."""
    if impl not in available_implementations():
        raise ValueError(f"attention implementation {impl!r} is not available here; choose from "
                         f"{available_implementations()}")
    model.set_attn_implementation(impl)
    return model


@torch.no_grad()
def time_prefill(model, context: int, repeats: int = 3, vocab: int | None = None) -> float:
    """Median seconds of one forward pass over ``context`` tokens (the prefill, where attention is T²)."""
    dev = next(model.parameters()).device
    vocab = vocab or min(model.config.vocab_size, 4096)
    ids = torch.randint(0, vocab, (1, context), generator=torch.Generator().manual_seed(0)).to(dev)
    model(input_ids=ids, use_cache=False)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(model, contexts=(128, 512, 1024), impls=None, repeats: int = 3):
    """Prefill time per implementation and context length, and the max |logit| difference vs ``eager``."""
    import pandas as pd

    impls = list(impls or IMPLEMENTATIONS)
    rows = []
    for n in contexts:
        if n > model.config.max_position_embeddings:
            raise ValueError(f"context {n} exceeds the model's max_position_embeddings "
                             f"({model.config.max_position_embeddings})")
        ids = torch.randint(0, min(model.config.vocab_size, 4096), (1, min(n, 64)),
                            generator=torch.Generator().manual_seed(1))
        ref = None
        for impl in impls:
            set_attention(model, impl)
            with torch.no_grad():
                logits = model(input_ids=ids).logits
            ref = logits if ref is None else ref
            rows.append({"attention": impl, "context": n, "ms": time_prefill(model, n, repeats) * 1e3,
                         "max_abs_diff_vs_first": float((logits - ref).abs().max())})
    set_attention(model, "sdpa")
    return pd.DataFrame(rows)
