"""Self-check functions for the chapters' exercises: each prints "Correct ..." or raises AssertionError
with a hint. Shared by every chapter: add your own ``check_<thing>(answer)`` below."""
from __future__ import annotations


def _expect(ok: bool, hint: str) -> None:
    if not ok:
        raise AssertionError(hint)


def check_simplellm_params(answer: int) -> None:
    """Chapter 5, exercise 1: parameters of SimpleLLM (vocab 10000, embedding 256, LSTM hidden 512)."""
    from .handson import build, n_params

    truth = n_params(build("buggy"))
    _expect(int(answer) == truth,
            "Not quite. Embedding: vocab x embed. nn.LSTM: 4 gates x (hidden x input + hidden x hidden + "
            "2 biases of size hidden). Linear: hidden x vocab + vocab bias.")
    print(f"Correct: SimpleLLM has {truth:,} parameters.")


# ------------------------------------------------------------------ chapter 4: the latency model
def _close(answer: float, truth: float, rel: float) -> bool:
    return abs(float(answer) - truth) <= rel * abs(truth)


def check_decode_bound(answer: float) -> None:
    """Chapter 4: upper bound on batch-1 decode tokens/s of a 7-billion-parameter model in bf16 on an
    A100 80GB SXM (ignore the KV cache)."""
    from .roofline import GPUS

    truth = GPUS["A100 80GB SXM"].bandwidth / (7e9 * 2)
    _expect(_close(answer, truth, 0.05),
            "Not quite. Each decode step reads every weight once: bytes = parameters × bytes per weight "
            "(bf16 = 2). Time per token ≥ bytes / bandwidth (2039 GB/s); tokens/s = 1 / that time.")
    print(f"Correct: at most ≈ {truth:.0f} tokens/s — no kernel can beat the memory bandwidth.")


def check_ridge_point(answer: float) -> None:
    """Chapter 4: the ridge point (FLOP per byte) of an H100 SXM for dense bf16 tensor math."""
    from .roofline import GPUS

    truth = GPUS["H100 SXM"].ridge(2.0)
    _expect(_close(answer, truth, 0.05),
            "Not quite. Ridge point = peak FLOP/s / bandwidth in bytes/s (989 TFLOPS, 3350 GB/s).")
    print(f"Correct: ≈ {truth:.0f} FLOP/byte; a kernel doing fewer FLOPs per byte moved is memory-bound.")


def check_critical_batch(answer: float) -> None:
    """Chapter 4: the smallest batch at which bf16 decoding on an A100 80GB SXM stops being memory-bound
    (ignore the KV cache and attention FLOPs)."""
    from .roofline import GPUS

    truth = GPUS["A100 80GB SXM"].ridge(2.0)  # intensity of a bf16 decode step ≈ 2·B FLOP / 2 B = batch
    _expect(_close(answer, truth, 0.10),
            "Not quite. One decode step does 2·N·batch FLOPs and reads 2·N bytes (bf16), so its intensity is "
            "≈ batch FLOP/byte. It becomes compute-bound when that reaches the ridge point (peak / bandwidth).")
    print(f"Correct: about {truth:.0f} sequences; below that, batching more is almost free per token.")


def check_onnx_bytes(answer: int, model=None, onnx_bytes: int | None = None) -> None:
    """Chapter 7: predicted size of the tiny model's fp32 ONNX export (parameters x 4 bytes, tied weights
    stored once), within 1 %; the exported file itself is a little larger (graph and constant tables)."""
    if model is None:
        from .models import load

        model, _ = load("tiny")
    truth = 4 * sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    _expect(abs(int(answer) - truth) <= 0.01 * truth,
            "Count every parameter once (the output layer shares the embedding matrix) and multiply by the "
            "bytes of one fp32 number.")
    msg = f"Correct: {truth:,} bytes of fp32 weights"
    if onnx_bytes is not None:
        msg += f"; the exported file takes {onnx_bytes:,} bytes ({onnx_bytes / truth:.3f}x)"
    print(msg + ".")


# ------------------------------------------------------------------ chapter 3.3: hardware
def check_kv_cache_8k(answer: float) -> None:
    """Chapter 3.3: bytes of the KV cache of Llama-3.1-8B (32 layers, 8 KV heads of size 128) for one
    sequence of 8192 tokens in bf16."""
    from .memory import kv_cache_bytes

    truth = kv_cache_bytes("Llama-3.1-8B", batch=1, context=8192, dtype="bf16")
    _expect(float(answer) == truth, "Not quite. 2 (K and V) × layers × KV heads × head size × tokens × bytes "
            "per value. Did you use the 8 KV heads (not the 32 query heads), and 2 bytes for bf16?")
    print(f"Correct: {truth:,} bytes = {truth / 2**30:g} GiB per 8k-token sequence.")


def check_weights_fit_t4(answer: float) -> None:
    """Chapter 3.3: the largest number of parameters (in billions) whose fp16 weights alone fit a 16 GB T4
    (ignore KV cache, activations and runtime). The 2% tolerance also accepts the answer from its ~15 GiB usable."""
    truth = 16e9 / 2 / 1e9
    _expect(abs(float(answer) - truth) <= 0.02 * truth,
            "Not quite: memory in bytes (16 GB = 16 × 10**9) divided by 2 bytes per fp16 parameter, in billions.")
    print(f"Correct: about {truth:.2f} billion parameters — and that leaves no room for the KV cache.")


def check_allreduce_bytes(answer: int) -> None:
    """Chapter 3.3: bytes all-reduced per generated token by 2-way tensor parallelism of the tiny model
    (6 layers, hidden 256, fp32, batch 1): two all-reduces of one hidden vector per layer."""
    truth = 2 * 6 * 256 * 4
    _expect(int(answer) == truth, "Not quite: per layer one all-reduce after attention's o projection and one "
            "after the MLP's down projection, each of hidden_size values × 4 bytes.")
    print(f"Correct: {truth:,} bytes per token (before the all-reduce algorithm's own factor) — tiny; the cost "
          "is the latency of 12 synchronisations, not the bandwidth.")


def check_reading_rate(answer: float, tokens_per_word: float, wpm: float = 300.0) -> None:
    """Chapter 6: tokens/s consumed by a reader at ``wpm`` words per minute, given tokens per word."""
    truth = wpm / 60.0 * tokens_per_word
    _expect(abs(float(answer) - truth) <= 0.02 * truth,
            "Words per minute / 60 gives words per second; multiply by tokens per word.")
    print(f"Correct: {truth:.1f} tokens/s keeps up with a {wpm:g}-words/min reader.")


def check_latency_prediction(answer_s: float, ttft_s: float, tpot_s: float, new_tokens: int) -> None:
    """Chapter 1: end-to-end latency of ``new_tokens`` tokens from measured TTFT and TPOT."""
    truth = ttft_s + (new_tokens - 1) * tpot_s
    _expect(abs(float(answer_s) - truth) <= 0.002 * truth,
            "The first token costs TTFT; each of the remaining n - 1 tokens costs one TPOT.")
    print(f"Correct: about {truth * 1e3:.0f} ms for {new_tokens} tokens (TTFT + (n - 1) x TPOT).")


# ------------------------------------------------------------------ chapter 3.1: compression
def check_int8_per_channel(fn) -> None:
    """Chapter 3.1: ``fn(w) -> (q, scale)`` must quantize a weight ``[out, in]`` symmetrically to int8 with one
    scale per output channel (row), so that ``q * scale`` reconstructs ``w`` within half a step."""
    import torch

    g = torch.Generator().manual_seed(123)
    w = torch.randn(16, 64, generator=g) * torch.linspace(0.1, 3.0, 16)[:, None]
    q, scale = fn(w.clone())
    q, scale = torch.as_tensor(q), torch.as_tensor(scale).float()
    _expect(q.shape == w.shape, f"q must have the weight's shape {tuple(w.shape)}, got {tuple(q.shape)}")
    _expect(not q.is_floating_point() or bool((q == q.round()).all()), "q must hold integers (round!).")
    _expect(int(q.min()) >= -128 and int(q.max()) <= 127, "int8 values lie in [-128, 127] (use qmax = 127).")
    _expect(scale.numel() == w.shape[0], f"per-channel means one scale per output row: {w.shape[0]} scales, "
            f"got {scale.numel()}.")
    scale = scale.reshape(-1, 1)
    truth = w.abs().amax(1, keepdim=True) / 127
    _expect(torch.allclose(scale, truth, rtol=1e-3), "The scale of a row is max|w| over the row / 127.")
    err = (q.float() * scale - w).abs()
    _expect(bool((err <= 0.5 * scale * 1.001 + 1e-7).all()), "Round to the nearest integer: q = round(w / scale).")
    print(f"Correct: relative error {float((q.float() * scale - w).norm() / w.norm()):.4%}, 4x smaller than fp32.")


def check_sparsity_doubling(answer: float, method: str = "magnitude") -> None:
    """Chapter 3.1: the unstructured sparsity at which the tiny model's held-out perplexity doubles,
    judged against the recorded sweep (``data/results/compress_sweep.csv``), ±0.1."""
    import numpy as np

    from .measure import load_results

    df = load_results("compress_sweep")
    fp = float(df.loc[df.family == "fp32", "perplexity"].iloc[0])
    cur = df[(df.family == "prune") & (df.method == method) & (df.pattern == "unstructured")].sort_values("sparsity")
    xs = [0.0] + cur.sparsity.tolist()
    ys = [fp] + cur.perplexity.tolist()
    _expect(max(ys) >= 2 * fp, f"the recorded {method} curve never doubles; re-run the sweep")
    truth = float(np.interp(np.log(2 * fp), np.log(ys), xs)) if all(np.diff(ys) > 0) else \
        next(x for x, y in zip(xs, ys) if y >= 2 * fp)
    _expect(abs(float(answer) - truth) <= 0.1, "Read the curve where perplexity crosses 2x the fp32 value "
            f"({2 * fp:.1f}); interpolate between the measured sparsities.")
    print(f"Correct: {method} pruning doubles perplexity near {truth:.0%} sparsity (recorded sweep).")


# ------------------------------------------------------------------ chapter 3.2: generation algorithms
def check_greedy_step(step_fn, steps: int = 12) -> None:
    """Chapter 3.2: ``step_fn(model, token_ids [1, 1], past_key_values) -> (next_token [1, 1], past)`` is one
    greedy decode step with a KV cache. Checked on the tiny model against ``model.generate``."""
    import torch

    from .generate import hf_generate
    from .measure import prompt_ids
    from .models import load

    model, tok = load("tiny")
    ids = prompt_ids(tok, 16)
    ref = hf_generate(model, ids, steps + 1)[0, 16:]
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
    past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    got = [int(token)]
    for i in range(steps):
        token, past = step_fn(model, token, past)
        _expect(isinstance(token, torch.Tensor) and tuple(token.shape) == (1, 1),
                f"step {i}: return the next token as a LongTensor of shape [1, 1], got "
                f"{getattr(token, 'shape', type(token))}")
        got.append(int(token))
    n_ok = next((i for i, (a, b) in enumerate(zip(got, ref.tolist())) if a != b), len(got))
    _expect(n_ok == len(got),
            f"tokens diverge from model.generate at new token {n_ok}. Feed only the last token, pass "
            "past_key_values=past and use_cache=True, take logits[:, -1:].argmax(-1), return out.past_key_values.")
    print(f"Correct: {len(got)} greedy tokens identical to model.generate, one token per forward pass.")


def check_kv_cache_mb(answer: float) -> None:
    """Chapter 3.2: KV cache of SmolLM2-135M (30 layers, 3 KV heads, head_dim 64) for 2048 positions in bf16, MB."""
    truth = 30 * 2 * 3 * 64 * 2048 * 2 / 1e6
    _expect(_close(answer, truth, 0.02),
            "Not quite: layers × 2 (K and V) × kv_heads × head_dim × positions × bytes per element (bf16: 2), "
            "divided by 1e6 for MB.")
    print(f"Correct: {truth:.1f} MB — without GQA (9 KV heads) it would be {truth * 3:.1f} MB.")


def check_int32_chunk(answer: int) -> None:
    """Chapter 3.2: how many int8 × int16 products one int32 running sum can add with no risk of overflow."""
    truth = (2 ** 31 - 1) // (128 * 32767)  # the largest product in size: -128 × -32767
    _expect(answer == truth,
            "Not quite: the largest product in size is 128 × 32767 (an int8 weight of -128 times an int16 "
            "activation of ±32767); how many of those fit under 2**31 - 1? Use integer division.")
    print(f"Correct: {truth}. The kernel sums at most 256 products per int32, half the limit, and with int8 "
          f"activations the limit would be {(2 ** 31 - 1) // (128 * 127):,}.")


# ------------------------------------------------------------------ chapters 2, 3.4, 8, 9 (pipeline, recommend)
def check_int4_layer_bytes(answer: int) -> None:
    """Chapter 2: stored bytes of a 768×256 Linear (out × in) quantized to 4 bits, groups of 64, symmetric."""
    import torch

    from .quantize import QuantLinear

    truth = QuantLinear.from_linear(torch.nn.Linear(256, 768, bias=False), bits=4, group_size=64).storage_bytes()
    _expect(int(answer) == truth, "Not quite: two 4-bit weights per byte (768·256/2), plus one fp16 scale "
            "(2 bytes) per group of 64 weights in each row (768 · 256/64 groups).")
    print(f"Correct: {truth:,} bytes (vs {768 * 256 * 4:,} in fp32, {768 * 256 * 4 / truth:.1f}× smaller).")


def check_weight_ratio(answer: float) -> None:
    """Chapter 3.4: ideal fp32 → int4 size ratio of the weights alone (no scales)."""
    _expect(_close(answer, 8.0, 0.01), "Bytes per weight: fp32 stores 32 bits, int4 stores 4 bits.")
    print("Correct: 32 / 4 = 8×; the group scales make the real ratio a little smaller.")


def check_bits_for_claim(answer: float) -> None:
    """Chapter 8: bits per weight that store 1 B parameters in the bytes of 100 M fp16 parameters."""
    _expect(_close(answer, 1.6, 0.02), "100 M fp16 parameters take 100e6 × 16 bits; share them among 1e9 weights.")
    print("Correct: 1.6 bits per weight — below what any method in this book keeps accurate (2-bit already hurts).")


def check_needed_speed(answer: float) -> None:
    """Chapter 9: decode tokens/s needed to reply with 64 tokens within 1 s when the first token takes 0.2 s."""
    _expect(_close(answer, 63 / 0.8, 0.01), "After the first token (0.2 s) the remaining 63 tokens share 0.8 s.")
    print(f"Correct: 63 / 0.8 = {63 / 0.8:.2f} tokens/s.")
