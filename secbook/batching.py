"""Batching: more sequences per step buys throughput at the price of per-request latency.

At batch 1 a decode step reads every weight to produce one token; with B sequences the same weight read
produces B tokens, so throughput (tokens/s) grows almost linearly until the step turns compute-bound,
while each request waits a little longer per step. Prompts of different lengths are *left*-padded (the new
tokens of every row then land in the same column) and the attention mask hides the pads — get either wrong
and the batched output differs from running each prompt alone (``check_left_padding`` tests exactly that).

Static batching waits for the longest request of a batch before admitting new ones; continuous (in-flight)
batching (Yu et al., 2022, "Orca") refills a slot as soon as its request finishes. ``simulate`` compares
the two on the same random workload.
"""
from __future__ import annotations

import statistics
import time

import torch


def left_padded(tokenizer, prompts: list[str]) -> dict:
    """Tokenize ``prompts`` into one left-padded batch with its attention mask."""
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = old


@torch.no_grad()
def _greedy(model, batch: dict, n: int) -> torch.Tensor:
    out = model.generate(**batch, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         pad_token_id=model.generation_config.pad_token_id or 0)
    return out[:, batch["input_ids"].shape[1]:]


def check_left_padding(model, tokenizer, prompts: list[str], new_tokens: int = 16) -> list[bool]:
    """For each prompt: are its greedy tokens in the padded batch the same as when it runs alone?"""
    together = _greedy(model, left_padded(tokenizer, prompts), new_tokens)
    alone = [_greedy(model, left_padded(tokenizer, [p]), new_tokens)[0] for p in prompts]
    return [bool(torch.equal(together[i], alone[i])) for i in range(len(prompts))]


def batch_sweep(model, tokenizer, batch_sizes=(1, 2, 4, 8), prompt_len: int = 32, new_tokens: int = 32,
                repeats: int = 2):
    """Throughput and per-request latency of HF ``generate`` as the batch grows (a DataFrame)."""
    import pandas as pd

    from .measure import prompt_ids

    rows = []
    for b in batch_sizes:
        if b < 1:
            raise ValueError(f"batch sizes must be >= 1, got {b}")
        ids = prompt_ids(tokenizer, prompt_len, b)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        _greedy(model, batch, 2)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _greedy(model, batch, new_tokens)
            times.append(time.perf_counter() - t0)
        lat = statistics.median(times)
        rows.append({"batch": b, "latency_s": lat, "tokens_per_s": b * new_tokens / lat,
                     "ms_per_token_per_request": lat / new_tokens * 1e3})
    return pd.DataFrame(rows)


def workload(n_requests: int = 64, mean_gap: float = 2.0, min_tokens: int = 8, max_tokens: int = 128,
             seed: int = 0) -> list[tuple[float, int]]:
    """Random requests ``(arrival_step, output_tokens)``: exponential gaps, uniform output lengths."""
    g = torch.Generator().manual_seed(seed)
    gaps = torch.empty(n_requests).exponential_(1 / mean_gap, generator=g)
    arrivals = torch.cumsum(gaps, 0).tolist()
    lengths = torch.randint(min_tokens, max_tokens + 1, (n_requests,), generator=g).tolist()
    return list(zip(arrivals, lengths))


def simulate(requests: list[tuple[float, int]], policy: str = "continuous", max_batch: int = 8,
             step_ms: float = 40.0, per_seq_ms: float = 2.0) -> dict:
    """Discrete-time serving simulation. Each decode step takes ``step_ms + per_seq_ms × running`` ms and
    gives one token to every running request. ``static``: a batch is admitted only when the previous one
    has completely finished; ``continuous``: free slots are refilled at every step."""
    if policy not in ("static", "continuous"):
        raise ValueError(f"policy must be 'static' or 'continuous', got {policy!r}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    pending = sorted(requests)
    waiting: list[tuple[float, int]] = []
    running: list[list] = []  # [arrival, remaining]
    step, clock_ms, done, busy_slots, steps = 0, 0.0, [], 0, 0
    i = 0
    while i < len(pending) or waiting or running:
        while i < len(pending) and pending[i][0] <= step:
            waiting.append(pending[i])
            i += 1
        if policy == "continuous" or not running:
            while waiting and len(running) < max_batch:
                a, n = waiting.pop(0)
                running.append([a, n, clock_ms, step])
        if running:
            clock_ms += step_ms + per_seq_ms * len(running)
            busy_slots += sum(1 for r in running if r[1] > 0)
            steps += 1
            for r in running:
                r[1] -= 1
            finished = [r for r in running if r[1] <= 0]
            if policy == "continuous":
                running = [r for r in running if r[1] > 0]
                done += [(r[3], step + 1, r[0]) for r in finished]
            elif all(r[1] <= 0 for r in running):
                done += [(r[3], step + 1, r[0]) for r in running]
                running = []
        else:
            clock_ms += step_ms  # idle step: nothing to run
        step += 1
    tokens = sum(n for _, n in requests)
    lat_steps = [end - arr for _, end, arr in done]
    return {"policy": policy, "max_batch": max_batch, "requests": len(requests),
            "throughput_tok_s": tokens / (clock_ms / 1e3),
            "mean_latency_steps": statistics.mean(lat_steps),
            "p90_latency_steps": sorted(lat_steps)[int(0.9 * (len(lat_steps) - 1))],
            "slot_utilisation": busy_slots / max(steps * max_batch, 1), "total_steps": step}
