"""The source's hands-on project: a tiny "LLM" made of an embedding, an LSTM and a linear layer — and its bug.

``SimpleLLM`` is written in the spirit of the source's listing: ``nn.Embedding`` → ``nn.LSTM`` →
``nn.Linear``, predicting the next token from ``out[:, -1, :]``. ``nn.LSTM`` defaults to
``batch_first=False`` (its input is ``[seq, batch, feature]``), so a ``(1, 10)`` batch of one 10-token
sequence is read as *10 sequences of length 1*, and ``out[:, -1, :]`` picks the 10th of those one-token
"sequences": the prediction ignores every earlier token. ``FixedSimpleLLM`` sets ``batch_first=True``.
``transformer_like`` builds a Llama-architecture transformer (Touvron et al., 2023) of about the same
parameter count, and ``time_call`` is the one timing harness used for all three (median after warm-up).
The LSTM itself is Hochreiter & Schmidhuber (1997). ``reply`` is the same project with a real chat model: the
inference loop of a chatbot written by hand (chat template, prefill, one token at a time with the KV cache).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

VOCAB, EMBED, HIDDEN = 10000, 256, 512


class SimpleLLM(nn.Module):
    """Embedding → LSTM → Linear, as in the source: ``nn.LSTM`` left at its default ``batch_first=False``."""

    batch_first = False

    def __init__(self, vocab_size: int = VOCAB, embed_dim: int = EMBED, hidden_dim: int = HIDDEN):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=self.batch_first)
        self.fc = nn.Linear(hidden_dim, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(x))
        return self.fc(out[:, -1, :])  # "the last token" — only true when out is [batch, seq, hidden]


class FixedSimpleLLM(SimpleLLM):
    """The same model with ``batch_first=True``: ``out[:, -1, :]`` really is the state after the last token.

    ``step`` carries the LSTM state ``(h, c)`` so generation costs one LSTM step per new token.
    """

    batch_first = True

    def step(self, x: torch.Tensor, state=None):
        out, state = self.lstm(self.embedding(x), state)
        return self.fc(out[:, -1, :]), state


def build(kind: str = "buggy", seed: int = 0) -> nn.Module:
    """``"buggy"`` (the source's model), ``"fixed"`` or ``"transformer"``, with seeded weights, eval mode."""
    torch.manual_seed(seed)
    makers = {"buggy": SimpleLLM, "fixed": FixedSimpleLLM, "transformer": transformer_like}
    if kind not in makers:
        raise ValueError(f"unknown kind {kind!r}; use one of {sorted(makers)}")
    return makers[kind]().eval()


def transformer_like(vocab_size: int = VOCAB, hidden: int = EMBED, layers: int = 5, seed: int | None = None):
    """A Llama-architecture causal LM with about as many parameters as ``SimpleLLM`` (≈ 9.3 M).

    Untied embeddings and output layer (like ``SimpleLLM``), hidden 256, MLP 768, 4 heads.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if seed is not None:
        torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=3 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=4096, tie_word_embeddings=False,
                      bos_token_id=0, eos_token_id=None, pad_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def last_token_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Next-token logits ``[batch, vocab]`` for any of the three kinds."""
    out = model(ids)
    return out.logits[:, -1, :] if hasattr(out, "logits") else out


@torch.no_grad()
def context_sensitivity(model: nn.Module, seq_len: int = 10, seed: int = 0) -> float:
    """Largest change of the next-token logits when every token *except the last* is replaced.

    0.0 means the prediction ignores all earlier tokens — the symptom of the source's bug.
    """
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size if hasattr(model, "config") else model.embedding.num_embeddings
    a = torch.randint(0, vocab, (1, seq_len), generator=g)
    b = torch.randint(0, vocab, (1, seq_len), generator=g)
    b[:, -1] = a[:, -1]
    return (last_token_logits(model, a) - last_token_logits(model, b)).abs().max().item()


@torch.no_grad()
def lstm_shapes(model: SimpleLLM, ids: torch.Tensor) -> dict[str, tuple]:
    """The shapes inside the forward pass: what the LSTM believes are sequence and batch."""
    emb = model.embedding(ids)
    out, (h, _) = model.lstm(emb)
    seq_axis, batch_axis = (1, 0) if model.lstm.batch_first else (0, 1)
    return {"input ids": tuple(ids.shape), "embedding": tuple(emb.shape), "lstm out": tuple(out.shape),
            "lstm sees sequences": emb.shape[batch_axis], "lstm sees length": emb.shape[seq_axis],
            "out[:, -1, :]": tuple(out[:, -1, :].shape), "final h": tuple(h.shape)}


def time_call(fn: Callable[[], object], warmup: int = 2, repeats: int = 10) -> dict[str, float]:
    """Time ``fn()``: ``warmup`` untimed calls, then the median, min and max of ``repeats`` timed calls (s).

    The same harness for every model in the chapter, so their numbers compare. Synchronises CUDA when present.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


@torch.no_grad()
def generate(model: nn.Module, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy generation of exactly ``new_tokens`` tokens.

    ``FixedSimpleLLM`` carries its LSTM state (one step per token); a transformers model uses
    ``generate`` with its KV cache; the buggy ``SimpleLLM`` has no state to carry, so — like the source —
    it re-runs its forward on the whole sequence each time.
    """
    if new_tokens < 1:
        raise ValueError("new_tokens must be >= 1")
    if hasattr(model, "generation_config"):
        return model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              attention_mask=torch.ones_like(ids))
    if isinstance(model, FixedSimpleLLM):
        logits, state = model.step(ids)
        out = [ids]
        for i in range(new_tokens):
            nxt = logits.argmax(-1, keepdim=True)
            out.append(nxt)
            if i + 1 < new_tokens:
                logits, state = model.step(nxt, state)
        return torch.cat(out, dim=1)
    seq = ids
    for _ in range(new_tokens):
        seq = torch.cat([seq, model(seq).argmax(-1, keepdim=True)], dim=1)
    return seq


def generation_in_turn(models: dict[str, nn.Module], prompt_len: int = 10, new_tokens: int = 16, rounds: int = 5,
                       seed: int = 0) -> dict[str, list[float]]:
    """Greedy generation speed of each model (tokens/s per round, prompt included), the models timed *in turn*
    (:func:`secbook.measure.tok_s_in_turn`) on one random prompt, so a change in the machine's load hits all of
    them alike; compare them with :func:`secbook.claims.compare`."""
    from .measure import tok_s_in_turn

    vocab = {(m.config.vocab_size if hasattr(m, "config") else m.embedding.num_embeddings) for m in models.values()}
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, min(vocab), (1, prompt_len), generator=g)
    fns = {name: (lambda x, k, m=m: generate(m, x, k)) for name, m in models.items()}
    with torch.inference_mode():
        return tok_s_in_turn(fns, ids, new_tokens, rounds=rounds)


def _forward_rows(name: str, model: nn.Module, seq_lens, repeats: int, g: torch.Generator) -> list[dict]:
    vocab = model.config.vocab_size if hasattr(model, "config") else model.embedding.num_embeddings
    rows = []
    with torch.inference_mode():
        for n in seq_lens:
            ids = torch.randint(0, vocab, (1, n), generator=g)
            t = time_call(lambda: last_token_logits(model, ids), repeats=repeats)
            rows.append({"model": name, "params": n_params(model), "task": "forward", "seq_len": n,
                         "median_ms": 1e3 * t["median_s"], "min_ms": 1e3 * t["min_s"], "max_ms": 1e3 * t["max_s"]})
    return rows


def forward_table(models: dict[str, nn.Module], seq_lens=(10, 64, 256), repeats: int = 5, seed: int = 0):
    """Forward latency of each model (next-token logits for one random sequence of each length in ``seq_lens``),
    timed with :func:`time_call`: median, fastest and slowest of ``repeats`` after warm-up (DataFrame)."""
    import pandas as pd

    g = torch.Generator().manual_seed(seed)
    return pd.DataFrame([r for name, m in models.items() for r in _forward_rows(name, m, seq_lens, repeats, g)])


def timing_table(models: dict[str, nn.Module], seq_lens=(10, 64, 256), prompt_len: int = 10,
                 new_tokens: int = 16, repeats: int = 5, seed: int = 0):
    """One DataFrame per model and task, every number from the same two harnesses.

    Forward latency (next-token logits for one sequence of each length in ``seq_lens``) with
    :func:`time_call`; greedy generation of ``new_tokens`` from a ``prompt_len``-token random prompt with
    :func:`secbook.measure.time_generation` (TTFT, TPOT, tokens/s — the book's standard harness).
    """
    import pandas as pd

    from .measure import time_generation

    g = torch.Generator().manual_seed(seed)
    rows = []
    for name, model in models.items():
        vocab = model.config.vocab_size if hasattr(model, "config") else model.embedding.num_embeddings
        rows += _forward_rows(name, model, seq_lens, repeats, g)
        ids = torch.randint(0, vocab, (1, prompt_len), generator=g)
        t = time_generation(None, None, generate_fn=lambda x, k, m=model: generate(m, x, k), input_ids=ids,
                            new_tokens=new_tokens, repeats=max(1, repeats // 2 + 1))
        rows.append({"model": name, "params": n_params(model), "task": "generate",
                     "seq_len": prompt_len + new_tokens, "median_ms": 1e3 * t.latency_s,
                     "ttft_ms": 1e3 * t.ttft_s, "tpot_ms": 1e3 * t.tpot_s, "tokens_per_s": t.tokens_per_s})
    return pd.DataFrame(rows)

def environment() -> "pd.DataFrame":  # noqa: F821
    """What a hands-on inference project needs, and what this machine has (versions, or "absent")."""
    import importlib.metadata as md
    import platform

    import pandas as pd

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "absent"

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "absent (CPU only)"
    rows = [("Python", "the language", platform.python_version()),
            ("PyTorch", "tensors, nn.LSTM, autograd", torch.__version__),
            ("CUDA GPU", "hardware acceleration", gpu),
            ("transformers", "the transformer we contrast with", version("transformers")),
            ("numpy / pandas", "tables", f"{version('numpy')} / {version('pandas')}"),
            ("matplotlib", "figures", version("matplotlib")),
            ("onnxruntime", "another inference engine (chapter on tools)", version("onnxruntime"))]
    return pd.DataFrame(rows, columns=["component", "used for", "found here"])


# ----------------------------------------------------------------------------------------- a real chatbot
@dataclass
class Reply:
    """A chatbot's reply: its text, its token ids, the prompt's length and when each token was ready (seconds
    after the call began)."""
    text: str
    tokens: list[int]
    prompt_tokens: int
    token_times: list[float] = field(repr=False)

    @property
    def ttft_s(self) -> float:
        return self.token_times[0]

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first over the time they took (NaN with fewer than two tokens)."""
        if len(self.token_times) < 2:
            return float("nan")
        return (len(self.token_times) - 1) / (self.token_times[-1] - self.token_times[0])


def _stop_ids(model, tokenizer) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _chat_prompt(model, tokenizer, messages: list[dict], max_new_tokens: int):
    """The prompt's ids in the chat template, the end-of-turn ids, and the name of the KV-cache argument."""
    from .hardware import cache_kwarg

    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("reply needs a tokenizer with a chat template (e.g. 'smollm2-135m-instruct')")
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("messages must end with a user turn: [..., {'role': 'user', 'content': '...'}]")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"].to(next(model.parameters()).device)
    return ids, _stop_ids(model, tokenizer), cache_kwarg(model)  # the cache argument's name differs by version


@torch.inference_mode()
def reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 64) -> Reply:
    """The inference loop of a chatbot, by hand: render ``messages`` (``[{"role": "user", "content": ...}, ...]``)
    with the model's chat template, run the prompt through the model once (prefill), then feed back one greedy
    token at a time with the KV cache until an end-of-turn token or ``max_new_tokens``. The same tokens as
    transformers' ``generate`` with greedy decoding, in a dozen lines."""
    from .hardware import output_cache

    ids, stop, cache = _chat_prompt(model, tokenizer, messages, max_new_tokens)
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True)                         # prefill: the whole prompt at once
    tokens, times = [], []
    while True:
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)               # greedy: the most likely next token
        tokens.append(int(nxt))
        times.append(time.perf_counter() - t0)
        if tokens[-1] in stop or len(tokens) == max_new_tokens:        # end of turn, or long enough
            break
        out = model(input_ids=nxt, use_cache=True, **{cache: output_cache(out)})  # one token + the KV cache
    text = tokenizer.decode([t for t in tokens if t not in stop], skip_special_tokens=True)
    return Reply(text=text, tokens=tokens, prompt_tokens=ids.shape[1], token_times=times)
