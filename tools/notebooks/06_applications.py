"""Chapter 6 — Applications: real-time budgets made measurable."""
import sys

sys.path.insert(0, "tools")
from nb import code, md, solution  # noqa: E402

NAME = "06_applications"

CELLS = [
    md(r"""
# Applications: real-time budgets, measured

The source motivates fast inference with applications that feel broken when they are slow: code completion,
chat, voice assistants. Each comes with a **latency budget** — a time the answer must arrive within — and each
budget falls on a different part of the generation:

| application | what the user waits for | budget (order of magnitude) |
|---|---|---|
| code completion while typing | the first token (then a short line) | ~100 ms, between keystrokes |
| chat | the first token, then a pace at least as fast as reading | ~1 s to start, then reading speed |
| voice assistant | the first spoken phrase after the user stops talking | ~1 s in total for recognition + LLM + speech |

This chapter turns each row into a measurement on the book's tiny model — trained on Python's standard library,
so code completion is its home ground — and on a random-weight replica of SmolLM2-135M for a model 23× larger.
Every number printed is measured in this run, on the machine named below. The two timing notions come from
chapter 1: **TTFT**, time to first token, and **TPOT**, time per output token.
"""),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import torch, pandas as pd
import matplotlib.pyplot as plt
from secbook import apps, widgets
from secbook.measure import time_generation
from secbook.corpus import heldout_text
model, tok = secbook.load("tiny")
print("measured on:", machine)
"""),
    md(r"""
## Code completion and the keystroke budget

An editor asks for a completion after each keystroke. A suggestion that arrives after the next keystroke is
useless, so the first token has to come back in roughly the time between two keystrokes — about 100 ms for a
fast typist. `apps.complete` continues a prefix greedily to the end of the line and records when each token
arrived. First, what the model proposes (greedy decoding of an fp32 model is deterministic):
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
for prefix in ["import os\nimport ", "def fibonacci(n):\n    ", "class Stack:\n    def __init__(self"]:
    print(repr(prefix), "->", repr(apps.complete(model, tok, prefix, max_new_tokens=12).text))
"""),
    md(r"""
Now the budget: median time to the first token (after a warm-up) for prefixes of growing length, against 100 ms.
Longer prefixes cost more prefill work before the first token can appear.
"""),
    code(r"""
text = heldout_text(max_chars=6000)
prefixes = [text[:n] for n in (20, 200, 1000, 3000)]
budget = apps.keystroke_budget(model, tok, prefixes, budget_ms=100, repeats=3)
print("measured on:", secbook.describe_machine())
budget[["prefix_tokens", "first_token_ms", "within_100_ms"]].round(1)
"""),
    code(r"""
ax = budget.plot.bar(x="prefix_tokens", y="first_token_ms", legend=False, figsize=(6, 3.2), rot=0)
ax.axhline(100, color="red", ls="--", label="100 ms keystroke budget"); ax.legend()
ax.set(xlabel="prefix length (tokens)", ylabel="time to first token (ms)", title="tiny model, code completion")
plt.tight_layout(); plt.show()
print(f"{budget.within_100_ms.sum()} of {len(budget)} prefix lengths meet the 100 ms budget on this machine.")
"""),
    md(r"""
## Chat: streaming, with the clock running

A chat interface shows tokens as they are produced. `apps.stream` uses transformers' `TextStreamer`, which
`generate` calls with each new token; our subclass notes the time of arrival. The bracketed numbers are the
milliseconds since the request, printed as the text arrives:
"""),
    code(r"""
r = apps.stream(model, tok, "def read_config(path):\n", new_tokens=48, on_text=apps.live_printer(8), stop_at_eos=False)
print(f"\n\nTTFT {r.ttft_s * 1e3:.1f} ms, TPOT {r.tpot_s * 1e3:.1f} ms (median gap), "
      f"{r.tokens_per_s:.1f} tokens/s, {len(r.tokens)} tokens in {r.total_s * 1e3:.0f} ms")
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.step([0] + [1e3 * t for t in r.token_times], range(len(r.token_times) + 1), where="post")
ax.set(xlabel="time since the request (ms)", ylabel="tokens on screen", title="what the user sees")
plt.tight_layout(); plt.show()
"""),
    md(r"""
## A voice assistant's second

In spoken conversation, people answer each other within a few hundred milliseconds; a voice assistant that takes
much more than a second after you stop talking feels slow. The second is shared by three stages: speech
recognition must finalise the text, the LLM must produce the first phrase, and text-to-speech must start
speaking it. We **measure** the LLM's share — TTFT plus the time to produce a first phrase of about 12 tokens —
and take the other two as *stated assumptions* (they are not measured here: plug in your own components).
"""),
    code(r"""
timings = {}
for name in ("tiny", "replica:smollm2-135m"):
    m, t = (model, tok) if name == "tiny" else secbook.load(name)
    timings[name] = time_generation(m, t, prompt_len=64, new_tokens=16, repeats=3)
pd.DataFrame({k: v.as_dict() for k, v in timings.items()}).T[["ttft_s", "tpot_s", "tokens_per_s"]].round(4)
"""),
    code(r"""
phrase = 12
voice = {name: apps.voice_budget(t.ttft_s, t.tpot_s, first_phrase_tokens=phrase) for name, t in timings.items()}
print("measured on:", secbook.describe_machine())
pd.concat(voice, names=["model"]).round(1)
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(7, 2.6))
for i, (name, df) in enumerate(voice.items()):
    left = 0
    for stage, ms, color in zip(df.stage[:3], df.ms[:3], ["tab:gray", "tab:orange", "tab:blue"]):
        ax.barh(i, ms, left=left, color=color, label=stage if i == 0 else None); left += ms
ax.axvline(1000, color="red", ls="--"); ax.set_yticks(range(len(voice)), list(voice))
ax.set(xlabel="ms from end of speech to first audio"); ax.legend(fontsize=7, loc="lower right")
plt.tight_layout(); plt.show()
"""),
    md(r"""
## Reading speed versus tokens per second

Once text streams, it only needs to arrive faster than the user reads. A meta-analysis of 190 studies
{cite}`brysbaert2019reading` puts adult silent reading of English at about 238 words per minute for non-fiction and
260 for fiction. To compare with tokens/s we need **tokens per word** for *our* tokenizer, measured on the
held-out text (a word here is a run of letters, digits and underscores — for code, identifiers and keywords; a
tokenizer trained on code splits English prose differently, so treat the ratio as this tokenizer's, not a constant).
"""),
    code(r"""
tpw = apps.tokens_per_word(tok, heldout_text(max_chars=50_000))
print(f"held-out text: {tpw['tokens']:,} tokens, {tpw['words']:,} words -> {tpw['tokens_per_word']:.2f} tokens per word")
reading = apps.reading_speed_table(tpw["tokens_per_word"], {k: v.tokens_per_s for k, v in timings.items()})
reading.round(1)
"""),
    code(r"""
need = reading.groupby("reading")["reader needs tokens/s"].first()
ax = pd.Series({k: v.tokens_per_s for k, v in timings.items()}).plot.barh(figsize=(6, 2.6), color="tab:green")
for label, v in need.items():
    ax.axvline(v, ls="--", color="gray"); ax.text(v, -0.45, " " + label.split(" (")[0], fontsize=7)
ax.set(xlabel="tokens/s (decode, measured) vs what a reader consumes (dashed)")
plt.tight_layout(); plt.show()
"""),
    md(r"""
Whether a model keeps up with a reader is the last column of the table: above 1, the stream outruns the reader
and more decoding speed is invisible to a single user — it then matters through TTFT, and through serving many
users from one machine (throughput, chapter 3.2). Code completion and voice are the demanding cases: their
budgets fall on the *first* tokens, so prefill time and per-call overhead decide.

## Try it: timed streaming

Type a prompt, choose the number of new tokens and press *Generate*: the text streams with the elapsed time,
then TTFT and TPOT. (In the static book the panel is inert; the output below it is one run of the same callback.)
"""),
    code(r"""
panel = widgets.streaming_panel(model, tok, prompt="def parse_args(argv):\n", new_tokens=32)
display(panel)
_ = widgets.streaming_update(model, tok, "def parse_args(argv):\n", 32)
"""),
    md(r"""
## Exercises

**Exercise 1.** With the tokens-per-word ratio measured above, how many tokens per second does a fast reader at
**300 words per minute** consume? Check with `secbook.exercises.check_reading_rate(answer, tpw["tokens_per_word"])`.
"""),
    solution(r"""
from secbook.exercises import check_reading_rate
check_reading_rate(300 / 60 * tpw["tokens_per_word"], tpw["tokens_per_word"])
"""),
    md(r"""
**Exercise 2.** In the voice budget, how many tokens could the tiny model produce in the time *left* of the second
(after recognition, its own first phrase and speech synthesis)? Use the measured TPOT.
"""),
    solution(r"""
left_ms = voice["tiny"].set_index("stage").ms.iloc[-1]
extra = int(max(left_ms, 0) / (1e3 * timings["tiny"].tpot_s))
print(f"{left_ms:.0f} ms left -> about {extra} more tokens at {1e3 * timings['tiny'].tpot_s:.1f} ms/token")
"""),
    md(r"""
**Exercise 3.** The keystroke budget is about the *first* token. What happens to it if the editor sends the whole
file (900 tokens, close to the model's 1 024-position limit) as context? Measure with `apps.keystroke_budget` and explain which phase of generation grows.
"""),
    solution(r"""
long_prefix = heldout_text(max_chars=12_000)
ids = tok(long_prefix, add_special_tokens=False).input_ids[:900]
res = apps.keystroke_budget(model, tok, [tok.decode(ids)], repeats=2)
print(res[["prefix_tokens", "first_token_ms", "within_100_ms"]])
print("The prefill (processing the whole prompt before the first token) grows with the context length.")
"""),
    md(r"""
**Exercise 4.** Streaming changes *perceived* latency, not the work. Compare `r.total_s` with the end-to-end
latency reported by `time_generation` for the same number of tokens: is the streamer adding overhead?
"""),
    solution(r"""
t48 = time_generation(model, tok, prompt_len=8, new_tokens=48, repeats=3)
print(f"streamed: {r.total_s * 1e3:.0f} ms for {len(r.tokens)} tokens; "
      f"generate without streamer: {t48.latency_s * 1e3:.0f} ms for 48 tokens")
"""),
]
