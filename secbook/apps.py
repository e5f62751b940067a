"""Applications: real-time budgets made measurable — streaming with timings, code completion against a
keystroke budget, a voice-assistant budget, and reading speed versus tokens/s.

Streaming uses transformers' ``TextStreamer``: ``generate`` hands it each new token as soon as it exists,
and ``TimedTextStreamer`` notes the clock then, so time to first token (TTFT) and the gaps between tokens
(time per output token, TPOT) are those a user would see. Reading speed comes from Brysbaert's (2019)
meta-analysis of 190 studies: silent reading of English averages about 238 words per minute for
non-fiction and 260 for fiction.
"""
from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import TextStreamer

# Brysbaert (2019), silent reading rate of adults in English (words per minute).
READING_WPM = {"non-fiction": 238, "fiction": 260}


class TimedTextStreamer(TextStreamer):
    """A ``TextStreamer`` that records when every new token arrives and hands printable text to ``on_text``
    (default: print it). ``start()`` sets time zero; call it right before ``generate``."""

    def __init__(self, tokenizer, on_text: Callable[[str, float], None] | None = None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt=True, **decode_kwargs)
        self.on_text = on_text
        self.t0 = time.perf_counter()
        self.token_times: list[float] = []
        self.tokens: list[int] = []
        self.text_times: list[float] = []

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.token_times, self.tokens, self.text_times = [], [], []

    def put(self, value) -> None:
        if not self.next_tokens_are_prompt:  # the first put() is the prompt
            now = time.perf_counter() - self.t0
            ids = value.reshape(-1).tolist()
            self.tokens.extend(ids)
            self.token_times.extend([now] * len(ids))
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        now = time.perf_counter() - self.t0
        if text:
            self.text_times.append(now)
        if self.on_text is None:
            print(text, flush=True, end="" if not stream_end else None)
        elif text:
            self.on_text(text, now)


@dataclass
class StreamResult:
    """What the user saw: the text, when each token arrived (s after the request), TTFT and TPOT.

    ``text_times`` are the moments text reached the screen: a streamer prints whole words, so the first text
    can appear a few tokens after the first token (``first_text_s`` ≥ ``ttft_s``)."""
    prompt: str
    text: str
    tokens: list[int]
    token_times: list[float] = field(repr=False)
    text_times: list[float] = field(default_factory=list, repr=False)

    @property
    def ttft_s(self) -> float:
        return self.token_times[0]

    @property
    def first_text_s(self) -> float:
        """When the first text was printed (NaN if nothing was)."""
        return self.text_times[0] if self.text_times else float("nan")

    @property
    def tpot_s(self) -> float:
        """Median gap between consecutive tokens (NaN with fewer than two tokens)."""
        gaps = [b - a for a, b in zip(self.token_times, self.token_times[1:])]
        return statistics.median(gaps) if gaps else float("nan")

    @property
    def total_s(self) -> float:
        return self.token_times[-1]

    @property
    def tokens_per_s(self) -> float:
        return 1.0 / self.tpot_s if self.tpot_s == self.tpot_s and self.tpot_s > 0 else float("nan")


def _check_new_tokens(new_tokens: int, lo: int = 1, hi: int = 512) -> int:
    if not lo <= int(new_tokens) <= hi:
        raise ValueError(f"new_tokens must be in [{lo}, {hi}], got {new_tokens}")
    return int(new_tokens)


@torch.inference_mode()
def stream(model, tokenizer, prompt: str, new_tokens: int = 32, on_text: Callable[[str, float], None] | None = None,
           greedy: bool = True, stop_at_eos: bool = True, seed: int = 0, chat: bool = False) -> StreamResult:
    """Generate from ``prompt`` token by token, calling ``on_text(text, seconds)`` as text becomes printable
    (``None`` prints it), and return what arrived when. Greedy unless ``greedy=False`` (then seeded sampling).
    ``chat=True`` sends ``prompt`` as one user turn of the model's chat template (a chat model's reply)."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string")
    new_tokens = _check_new_tokens(new_tokens)
    device = next(model.parameters()).device
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat=True needs a tokenizer with a chat template (e.g. 'smollm2-135m-instruct'); "
                             "the tiny model and the replicas complete raw text: use chat=False")
        from .pretrained import chat_ids

        ids = chat_ids(tokenizer, prompt).to(device)
    else:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
    streamer = TimedTextStreamer(tokenizer, on_text=on_text, skip_special_tokens=chat)  # no end-of-turn marker shown
    kw = dict(max_new_tokens=new_tokens, do_sample=not greedy, streamer=streamer,
              attention_mask=torch.ones_like(ids))
    if not stop_at_eos:
        kw["min_new_tokens"] = new_tokens
    if not greedy:
        torch.manual_seed(seed)
    streamer.start()
    out = model.generate(ids, **kw)
    new = out[0, ids.shape[1]:].tolist()
    return StreamResult(prompt=prompt, text=tokenizer.decode(new, skip_special_tokens=chat), tokens=new,
                        token_times=streamer.token_times, text_times=streamer.text_times)


def live_printer(every: int = 8) -> Callable[[str, float], None]:
    """An ``on_text`` callback for chat-style output: prints text as it arrives and, every ``every`` chunks
    and at the first one, the elapsed time in brackets — TTFT and the pace are visible as they happen."""
    state = {"n": 0}

    def on_text(text: str, seconds: float) -> None:
        state["n"] += 1
        stamp = f" [{1e3 * seconds:.0f} ms]" if state["n"] == 1 or state["n"] % every == 0 else ""
        print(text + stamp, end="", flush=True)

    return on_text


def complete(model, tokenizer, prefix: str, max_new_tokens: int = 16) -> StreamResult:
    """Code completion: greedy continuation of ``prefix`` up to the end of the current line (or
    ``max_new_tokens``), with the time at which each token arrived."""
    result = stream(model, tokenizer, prefix, new_tokens=max_new_tokens, on_text=lambda t, s: None)
    lines, kept = result.text.split("\n"), []
    for ln in lines:  # up to and including the first line with content
        kept.append(ln)
        if ln.strip():
            break
    line = "\n".join(kept)
    return StreamResult(prefix, line, result.tokens, result.token_times, result.text_times)


def keystroke_budget(model, tokenizer, prefixes: list[str], budget_ms: float = 100.0, repeats: int = 3,
                     max_new_tokens: int = 8):
    """For each code prefix: the median time to the first completion token over ``repeats`` (after one
    warm-up), whether it fits ``budget_ms``, and the completed line. One row per prefix (DataFrame)."""
    import pandas as pd

    if budget_ms <= 0:
        raise ValueError("budget_ms must be positive")
    complete(model, tokenizer, prefixes[0], max_new_tokens=2)  # warm-up
    rows = []
    for p in prefixes:
        runs = [complete(model, tokenizer, p, max_new_tokens=max_new_tokens) for _ in range(repeats)]
        ttft = statistics.median(r.ttft_s for r in runs) * 1e3
        rows.append({"prefix": p.splitlines()[-1] if p.strip() else p, "prefix_tokens":
                     len(tokenizer(p, add_special_tokens=False).input_ids), "first_token_ms": ttft,
                     f"within_{budget_ms:g}_ms": ttft <= budget_ms, "completion": runs[0].text})
    return pd.DataFrame(rows)


_SENTENCE_END = re.compile(r"[.!?]['\")\]]*\s")


def first_sentence(result: StreamResult, tokenizer) -> dict:
    """When the first sentence of a streamed reply was complete: what a voice assistant's text-to-speech needs
    before it can start speaking. A sentence is complete once a ``.``, ``!`` or ``?`` is followed by white space
    (the token that brings the space is the first moment a streamer can know), or when the reply ends. Returns
    the sentence, the number of tokens it took and the seconds after the request (``result.token_times``)."""
    if not result.tokens:
        raise ValueError("the reply has no tokens")
    for k in range(1, len(result.tokens) + 1):
        text = tokenizer.decode(result.tokens[:k], skip_special_tokens=True)
        m = _SENTENCE_END.search(text.lstrip())
        if m:
            return {"sentence": text.lstrip()[:m.end()].strip(), "tokens": k, "seconds": result.token_times[k - 1],
                    "complete": True}
    return {"sentence": result.text.strip(), "tokens": len(result.tokens), "seconds": result.token_times[-1],
            "complete": bool(result.text.strip())}


def tokens_per_word(tokenizer, text: str) -> dict:
    """Tokens per word of ``text`` with ``tokenizer``. A word is a run of letters/digits/underscores
    (``\\w+``), which for code counts identifiers and keywords; whitespace-separated chunks are given too."""
    n_tokens = len(tokenizer(text, add_special_tokens=False, verbose=False).input_ids)
    words = len(re.findall(r"\w+", text))
    chunks = len(text.split())
    if words == 0:
        raise ValueError("text has no words")
    return {"tokens": n_tokens, "words": words, "tokens_per_word": n_tokens / words,
            "whitespace_chunks": chunks, "tokens_per_chunk": n_tokens / max(chunks, 1)}


def reading_speed_table(tokens_per_word_: float, measured_tokens_per_s: dict[str, float],
                        wpm: dict[str, float] | None = None):
    """Tokens/s a reader consumes (words/min ÷ 60 × tokens/word) next to each model's measured decode speed."""
    import pandas as pd

    wpm = wpm or READING_WPM
    rows = []
    for kind, w in wpm.items():
        need = w / 60 * tokens_per_word_
        for name, tps in measured_tokens_per_s.items():
            rows.append({"reading": f"{kind} ({w} words/min)", "reader needs tokens/s": need, "model": name,
                         "model tokens/s": tps, "model / reader": tps / need})
    return pd.DataFrame(rows)


# Typical budgets for the other two stages of a voice assistant. They are ASSUMPTIONS for illustration
# (not measured here): a streaming recogniser finalising after end of speech, and a TTS engine's time to
# first audio. Replace them with your own components' measurements.
VOICE_ASSUMPTIONS_MS = {"speech recognition (end of speech → final text)": 300.0,
                        "text-to-speech (text → first audio)": 150.0}


def voice_budget(ttft_s: float, tpot_s: float, first_phrase_tokens: int, total_ms: float = 1000.0,
                 assumptions_ms: dict[str, float] | None = None, first_phrase_s: float | None = None):
    """A voice assistant's ~1 s from end of speech to first audio: speech recognition and TTS (assumed
    budgets) plus the LLM's share: the time to produce the first phrase TTS needs (``first_phrase_tokens``
    tokens). Given ``first_phrase_s`` — the time a real reply's first sentence was complete
    (:func:`first_sentence`) — that measurement is the LLM's share; otherwise it is computed from measured TTFT
    and TPOT as TTFT + (n − 1) × TPOT. Returns a DataFrame."""
    import pandas as pd

    if first_phrase_tokens < 1:
        raise ValueError("first_phrase_tokens must be >= 1")
    if ttft_s < 0 or tpot_s < 0 or (first_phrase_s is not None and first_phrase_s < 0):
        raise ValueError("ttft_s, tpot_s and first_phrase_s must be >= 0")
    assumed = assumptions_ms or VOICE_ASSUMPTIONS_MS
    if first_phrase_s is None:
        llm_ms, source = 1e3 * (ttft_s + (first_phrase_tokens - 1) * tpot_s), "measured TTFT + TPOT"
    else:
        llm_ms, source = 1e3 * first_phrase_s, "measured: first sentence complete"
    rows = [{"stage": k, "ms": v, "source": "assumed"} for k, v in assumed.items()]
    rows.insert(1, {"stage": f"LLM (first {first_phrase_tokens} tokens)", "ms": llm_ms, "source": source})
    used = sum(r["ms"] for r in rows)
    rows.append({"stage": "total", "ms": used, "source": ""})
    rows.append({"stage": f"left of the {total_ms:g} ms budget", "ms": total_ms - used, "source": ""})
    return pd.DataFrame(rows)
