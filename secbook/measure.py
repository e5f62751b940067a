"""Measuring what the book claims: perplexity (more helpers are added by the measurement chapter)."""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def perplexity(model, tokenizer, text: str, window: int = 256, stride: int = 128,
               max_tokens: int | None = 32768) -> float:
    """Sliding-window perplexity: exp(mean negative log-likelihood) of ``text``.

    Each window of ``window`` tokens is scored, but only the tokens not already scored by the previous
    window count, so every token is predicted with at least ``window - stride`` tokens of context
    (the standard recipe from the Hugging Face perplexity guide). ``max_tokens`` caps the work.
    """
    if stride <= 0 or stride > window:
        raise ValueError(f"stride must be in 1..window ({window}), got {stride}")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise ValueError("text is too short to measure perplexity")
    device = next(model.parameters()).device
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids) - 1, stride):
        end = min(begin + window, len(ids))
        chunk = ids[begin:end].to(device)[None]
        labels = chunk.clone()
        new = end - prev_end  # tokens not scored yet
        labels[:, :-new] = -100
        logits = model(input_ids=chunk).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100,
                                                 reduction="sum")
        nll += loss.item()
        count += int((labels[0, 1:] != -100).sum())
        prev_end = end
        if end == len(ids):
            break
    return math.exp(nll / count)
