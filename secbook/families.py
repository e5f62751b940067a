"""Which models work: every architecture family of :mod:`secbook.decoder`, checked end to end on a tiny model.

A tiny random-weight model per family (:func:`tiny_model`: two layers, a few dozen dimensions, built from
transformers' own config classes, so seconds per check) is run through our decoder and compared with
transformers: the logits of a prompt and of decode steps against HF's forward, the greedy tokens of our loop
(``FastGenerator``) against HF ``generate``, the same compiled with ``torch.compile``, the whole-step C++
decoder, and our loop after quantization (RTN int8) and pruning (2:4) against HF ``generate`` on the same
compressed model. :func:`support_table` returns one row per family — the table chapter 3.2 prints.
"""
from __future__ import annotations

import copy

import torch

# Small shapes that still exercise what each family has: grouped-query attention (4 query heads, 2 KV heads),
# a head size of 16, sliding windows shorter than the test sequences, soft-caps that bite. initializer_range
# 0.1 (HF's default is 0.02) makes the logits large enough for the soft-caps and windows to change them.
_COMMON = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=256, max_position_embeddings=128, initializer_range=0.1,
               pad_token_id=0, bos_token_id=1, eos_token_id=2)
TINY_CONFIGS: dict[str, tuple[str, dict]] = {  # family -> (transformers config class, fields)
    "llama": ("LlamaConfig", dict(rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0,
                                                      low_freq_factor=1.0, high_freq_factor=4.0,
                                                      original_max_position_embeddings=16))),
    "qwen2": ("Qwen2Config", dict(use_sliding_window=True, sliding_window=6, max_window_layers=1)),
    "qwen3": ("Qwen3Config", dict(head_dim=16)),
    "mistral": ("MistralConfig", dict(sliding_window=6)),
    "gemma2": ("Gemma2Config", dict(head_dim=16, sliding_window=6, query_pre_attn_scalar=24,
                                    attn_logit_softcapping=2.0, final_logit_softcapping=3.0)),
    "gemma3_text": ("Gemma3TextConfig", dict(head_dim=16, sliding_window=6, query_pre_attn_scalar=24,
                                             layer_types=["sliding_attention", "full_attention"])),
    "phi3": ("Phi3Config", dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                                     partial_rotary_factor=0.5))),
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_inner=96, vocab_size=256, n_positions=128,
                                initializer_range=0.1, bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    "gpt_neox": ("GPTNeoXConfig", dict(use_parallel_residual=True, num_key_value_heads=None)),  # no GQA
}


def tiny_config(family: str, **overrides):
    """The transformers config of :data:`TINY_CONFIGS` for ``family`` (``overrides`` change fields)."""
    import transformers

    if family not in TINY_CONFIGS:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(TINY_CONFIGS)}")
    cls, fields = TINY_CONFIGS[family]
    base = {} if family == "gpt2" else dict(_COMMON)
    return getattr(transformers, cls)(**{**base, **fields, **overrides})


def tiny_model(family: str, seed: int = 0, **overrides):
    """A tiny random-weight causal LM of ``family`` (fp32, CPU, eval mode), seeded."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # random weights: never stop early
    model.generation_config.pad_token_id = 0
    return model


def prompt(vocab: int = 256, length: int = 12, batch: int = 1, seed: int = 1) -> torch.Tensor:
    """Random token ids ``[batch, length]`` (seeded), avoiding the special ids 0-2."""
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logit_error(model, ids: torch.Tensor, steps: int = 4) -> float:
    """Largest |our logits - HF forward's| over a prefill of ``ids[:, :-steps]`` and ``steps`` single-token
    decode steps through our static cache (each checked against HF's forward of the whole prefix)."""
    from .decoder import Decoder

    ref = model(ids).logits
    dec = Decoder(model)
    cache = dec.new_cache(ids.shape[0], ids.shape[1])
    T = ids.shape[1] - steps
    err = (dec(ids[:, :T], torch.arange(T), cache) - ref[:, :T]).abs().max()
    for t in range(T, ids.shape[1]):
        err = torch.maximum(err, (dec(ids[:, t:t + 1], torch.tensor([t]), cache)[:, 0] - ref[:, t]).abs().max())
    return float(err)


def _same_tokens(model, ids, new_tokens: int, **kw) -> bool:
    from .generate import FastGenerator, hf_generate

    gen = FastGenerator(model, max_len=ids.shape[1] + new_tokens, **kw)
    return torch.equal(gen.generate(ids, new_tokens), hf_generate(model, ids, new_tokens))


def _check(fn) -> str:
    """Run one check: "yes", "no" (ran, tokens differ) or "no: <the error, one line>"."""
    try:
        return "yes" if fn() else "no"
    except Exception as e:  # a family that a step refuses: say why, keep the table going
        return f"no: {str(e).splitlines()[0][:120] if str(e) else e.__class__.__name__}"


def family_row(family: str, new_tokens: int = 16, compile: bool = True) -> dict:
    """The checks of one family (see the module docstring); ``compile=False`` skips the compiled loop."""
    from . import kernels
    from .prune import prune
    from .quantize import quantize

    model = tiny_model(family)
    ids = prompt(model.config.vocab_size)
    row = {"family": family, "model_type": model.config.model_type,
           "max_logit_error": logit_error(model, torch.cat([ids, prompt(length=8, seed=2)], 1)),
           "tokens_equal_hf": _check(lambda: _same_tokens(model, ids, new_tokens))}
    if compile:
        row["compiled_equal_hf"] = _check(lambda: _same_tokens(model, ids, new_tokens, compile=True))
        torch._dynamo.reset()
    row["cpp_step"] = _check(lambda: _same_tokens(model, ids, new_tokens, cpp=True)) if kernels.available() \
        else f"no: {kernels.unavailable_reason()}"
    row["int8_rtn_equal_hf"] = _check(
        lambda: _same_tokens(quantize(copy.deepcopy(model), bits=8, group_size=None)[0], ids, new_tokens))
    row["pruned_2_4_equal_hf"] = _check(
        lambda: _same_tokens(prune(copy.deepcopy(model), pattern="2:4")[0], ids, new_tokens))
    return row


def support_table(families=None, new_tokens: int = 16, compile: bool = True):
    """One row per family (all of :data:`TINY_CONFIGS` by default): the largest logit difference from HF's
    forward, and whether our loop (eager, compiled), the C++ step, and our loop on int8 (RTN) and 2:4-pruned
    weights give HF ``generate``'s greedy tokens ("yes"; "no" with the reason when a step refuses the family).
    Each family takes seconds eagerly; ``compile=True`` adds a ``torch.compile`` per family."""
    import pandas as pd

    rows = [family_row(f, new_tokens, compile) for f in (families or TINY_CONFIGS)]
    return pd.DataFrame(rows).set_index("family")


if __name__ == "__main__":  # python -m secbook.families [family ...]: the whole table, compiled loop included
    import sys

    table = support_table(sys.argv[1:] or None, compile=True)
    print(table.to_string(max_colwidth=60))
