"""Chapter 6 — Applications: real-time budgets made measurable."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

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
| voice assistant | the first spoken sentence after the user stops talking | ~1 s in total for recognition + LLM + speech |

This chapter turns each row into a measurement. Code completion runs on the book's tiny model, trained on Python's
standard library, so code is its home ground; chat and voice run on a real chat model, SmolLM2-135M-Instruct
{cite}`allal2025smollm2`, with its real replies. Every number printed is measured in this run, on the machine named
below. The two timing notions come from chapter 1: **TTFT**, time to first token, and **TPOT**, time per output
token.
"""),
    opening(["turn an application's latency budget into the phase of generation it falls on (TTFT, TPOT, first sentence)",
             "measure code completion against a keystroke budget, and see how the prefix length moves it",
             "stream a real chat reply with timestamps, and time a voice assistant's first sentence",
             "compare a model's decode speed with human reading speed, in the model's own tokens per word"],
            ["chapter 1 (TTFT, TPOT, streaming)", "chapter 4 helps: why prefill grows with the prompt"], 25),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import torch, pandas as pd
import matplotlib.pyplot as plt
from secbook import apps, widgets
from secbook.claims import compare, guard, say, times, times_zh
from secbook.measure import time_generation
from secbook.corpus import heldout_text
model, tok = secbook.load("tiny")
real, rtok = secbook.load("smollm2-135m-instruct")
print("measured on:", machine)
print("real model:", secbook.pretrained.PROVENANCE)
"""),
    md(r"""
## Code completion and the keystroke budget

An editor asks for a completion after each keystroke. A suggestion that arrives after the next keystroke is
useless, so the first token has to come back in roughly the time between two keystrokes — about 100 ms for a
fast typist. `apps.complete` continues a prefix greedily to the end of the line and records when each token
arrived. First, what the tiny model proposes (greedy decoding of an fp32 model is deterministic):
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
for prefix in ["import os\nimport ", "def fibonacci(n):\n    ", "class Stack:\n    def __init__(self"]:
    print(repr(prefix), "->", repr(apps.complete(model, tok, prefix, max_new_tokens=12).text))
"""),
    md(r"""
Now the budget: median time to the first token (after a warm-up) for prefixes of growing length, cut from
held-out Python code, against 100 ms. Longer prefixes cost more prefill work before the first token can appear.
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
"""),
    code(r"""
ok = budget[budget.within_100_ms]
say(f"{len(ok)} of {len(budget)} prefix lengths met the 100 ms budget"
    + (f", up to {ok.prefix_tokens.max()} tokens of context." if len(ok) else "."),
    zh=f"{len(budget)} 种前缀长度中有 {len(ok)} 种满足 100 ms 的预算"
       + (f"，上下文最长 {ok.prefix_tokens.max()} 个词元。" if len(ok) else "。"));
""", tags=("remove-input",)),
    md(r"""
Why the tiny model and not the real one? The real model is a general chat model twenty-three times larger, and a
completion's first token needs a full prefill of the prefix. The same measurement on the two shortest prefixes:
"""),
    code(r"""
real_budget = apps.keystroke_budget(real, rtok, prefixes[:2], budget_ms=100, repeats=2)
both = budget.iloc[:2][["prefix_tokens", "first_token_ms"]].assign(model="tiny")
both = pd.concat([both, real_budget[["prefix_tokens", "first_token_ms"]].assign(model="smollm2-135m-instruct")])
both.pivot(index="prefix_tokens", columns="model", values="first_token_ms").round(1)
"""),
    code(r"""
slow = real_budget.first_token_ms.to_numpy() / budget.first_token_ms.iloc[:2].to_numpy()
say(f"The real model's first token took {times(slow.min())}–{times(slow.max())} the tiny model's on the same "
    f"prefixes (its prefix tokens are its own tokenizer's), and it met the 100 ms budget on "
    f"{int(real_budget.within_100_ms.sum())} of 2. Its completions: "
    + "; ".join(repr(c) for c in real_budget.completion) + ". "
    + ("On this machine the keystroke budget stays with the small model trained on code."
       if (slow > 1).all() else "Here it was not slower: measure on your own machine before choosing."),
    zh=f"在相同的前缀上，真实模型的第一个词元所用的时间是小模型的 {times_zh(slow.min())}–{times_zh(slow.max())}"
       f"（它的前缀词元数按它自己的分词器计算），在 2 个前缀中有 {int(real_budget.within_100_ms.sum())} 个满足 "
       f"100 ms 的预算。它给出的补全："
       + "；".join(repr(c) for c in real_budget.completion) + "。"
       + ("在这台机器上，按键预算仍然只能交给在代码上训练的小模型。"
          if (slow > 1).all() else "这里它并不更慢：做选择之前，请在你自己的机器上测量。"));
""", tags=("remove-input",)),
    md(r"""
## Chat: a real reply, streamed, with the clock running

A chat interface shows tokens as they are produced. `apps.stream` uses transformers' `TextStreamer`, which
`generate` calls with each new token; our subclass notes the time of arrival. With `chat=True` the question goes
in as one user turn of the model's chat template, and the reply stops at the model's end-of-turn token. The
bracketed numbers are the milliseconds since the request, printed as the text arrives:
"""),
    code(r"""
question = "Explain in three sentences why the sky is blue."
r = apps.stream(real, rtok, question, new_tokens=80, on_text=apps.live_printer(8), chat=True)
print(f"\n\nTTFT {r.ttft_s * 1e3:.0f} ms, first text on screen after {r.first_text_s * 1e3:.0f} ms, "
      f"TPOT {r.tpot_s * 1e3:.1f} ms (median gap), {r.tokens_per_s:.1f} tokens/s, {len(r.tokens)} tokens in "
      f"{r.total_s * 1e3:.0f} ms")
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.step([0] + [1e3 * t for t in r.token_times], range(len(r.token_times) + 1), where="post")
ax.set(xlabel="time since the request (ms)", ylabel="tokens on screen", title="what the user sees (real model)")
plt.tight_layout(); plt.show()
"""),
    md(r"""
## A voice assistant's second

In spoken conversation, people answer each other within a few hundred milliseconds; a voice assistant that takes
much more than a second after you stop talking feels slow. The second is shared by three stages: speech
recognition must finalise the text, the LLM must produce the first sentence, and text-to-speech must start
speaking it. Text-to-speech needs a whole sentence to pronounce it naturally, so the LLM's share is not TTFT but
the **time to the first complete sentence**: `apps.first_sentence` finds the moment a `.`, `!` or `?` was
followed by a space in the streamed reply. We **measure** that on the real model's replies to three spoken
questions, and take the other two stages as *stated assumptions* (they are not measured here: plug in your own
components).
"""),
    code(r"""
spoken = ["What is the capital of Japan?", "Give me one tip for sleeping better.", "What should I pack for a day at the beach?"]
voice_rows = []
for q in spoken:
    v = apps.stream(real, rtok, q, new_tokens=40, on_text=lambda t, s: None, chat=True)
    f = apps.first_sentence(v, rtok)
    voice_rows.append({"question": q, "first sentence": f["sentence"], "tokens": f["tokens"],
                       "ttft_ms": 1e3 * v.ttft_s, "first_sentence_ms": 1e3 * f["seconds"], "reply": v.text})
voice = pd.DataFrame(voice_rows)
pd.set_option("display.max_colwidth", 120)
print("measured on:", secbook.describe_machine())
voice[["question", "first sentence", "tokens", "ttft_ms", "first_sentence_ms"]].round(0)
"""),
    code(r"""
worst = voice.loc[voice.first_sentence_ms.idxmax()]
vb = apps.voice_budget(worst.ttft_ms / 1e3, 0.0, int(worst.tokens), first_phrase_s=worst.first_sentence_ms / 1e3)
vb.round(1)
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(7, 2.2))
left = 0
for stage, ms, color in zip(vb.stage[:3], vb.ms[:3], ["tab:gray", "tab:orange", "tab:blue"]):
    ax.barh(0, ms, left=left, color=color, label=stage); left += ms
ax.axvline(1000, color="red", ls="--"); ax.set_yticks([0], ["slowest first sentence"])
ax.set(xlabel="ms from end of speech to first audio"); ax.legend(fontsize=7, loc="lower right")
plt.tight_layout(); plt.show()
"""),
    code(r"""
left_ms = vb.ms.iloc[-1]
say(f"The first sentences took {voice.first_sentence_ms.min():,.0f}–{voice.first_sentence_ms.max():,.0f} ms "
    f"({voice.tokens.min()}–{voice.tokens.max()} tokens). With the assumed recognition and speech stages the slowest "
    f"one " + (f"left {left_ms:,.0f} ms of the second." if left_ms >= 0 else
               f"overran the second by {-left_ms:,.0f} ms: on this machine the model, not the other stages, "
               f"breaks the budget.")
    + f" A first sentence cost {times(voice.first_sentence_ms.mean() / voice.ttft_ms.mean())} the TTFT on average: "
    + ("a voice budget falls on the decode speed as much as on the prefill."
       if voice.first_sentence_ms.mean() >= 2 * voice.ttft_ms.mean() else
       "here the prefill took most of the LLM's share."),
    zh=f"第一句话用了 {voice.first_sentence_ms.min():,.0f}–{voice.first_sentence_ms.max():,.0f} ms"
       f"（{voice.tokens.min()}–{voice.tokens.max()} 个词元）。算上假定的语音识别和语音合成阶段，最慢的那一次"
       + (f"为这一秒留下了 {left_ms:,.0f} ms。" if left_ms >= 0 else
          f"超出这一秒 {-left_ms:,.0f} ms：在这台机器上，打破预算的是模型，而不是其他阶段。")
       + f"平均而言，第一句话所用的时间是 TTFT 的 {times_zh(voice.first_sentence_ms.mean() / voice.ttft_ms.mean())}："
       + ("语音预算既落在预填充上，也同样落在解码速度上。"
          if voice.first_sentence_ms.mean() >= 2 * voice.ttft_ms.mean() else
          "这里预填充占了 LLM 份额的大部分。"));
""", tags=("remove-input",)),
    md(r"""
## Reading speed versus tokens per second

Once text streams, it only needs to arrive faster than the user reads. A meta-analysis of 190 studies
{cite}`brysbaert2019reading` puts adult silent reading of English at about 238 words per minute for non-fiction and
260 for fiction. To compare with tokens/s we need **tokens per word** for the model's tokenizer on the text a user
reads: here, the real model's own English replies above (a word is a run of letters, digits and underscores). The
decode speed is the book's standard measurement (`time_generation`: TPOT as a median after warm-up).
"""),
    code(r"""
replies = " ".join([r.text] + list(voice.reply))
tpw = apps.tokens_per_word(rtok, replies)
timing = time_generation(real, rtok, prompt_len=32, new_tokens=16, repeats=3)
print(f"the model's replies: {tpw['tokens']:,} tokens, {tpw['words']:,} words -> {tpw['tokens_per_word']:.2f} tokens per word")
print(f"decode: TPOT {timing.tpot_s * 1e3:.1f} ms -> {timing.tokens_per_s:.1f} tokens/s (measured on {secbook.describe_machine()})")
reading = apps.reading_speed_table(tpw["tokens_per_word"], {"smollm2-135m-instruct": timing.tokens_per_s})
reading.round(2)
"""),
    code(r"""
need = reading.groupby("reading")["reader needs tokens/s"].first()
fig, ax = plt.subplots(figsize=(6, 2.2))
ax.barh(["smollm2-135m-instruct"], [timing.tokens_per_s], color="tab:green")
for label, v in need.items():
    ax.axvline(v, ls="--", color="gray"); ax.text(v, -0.45, " " + label.split(" (")[0], fontsize=7)
ax.set(xlabel="tokens/s (decode, measured) vs what a reader consumes (dashed)")
plt.tight_layout(); plt.show()
"""),
    code(r"""
k = reading["model / reader"].min()
say(f"The real model decoded {times(k)} as fast as the faster reader consumes its text "
    + ("(the fiction rate): the stream outruns a reader, and more decoding speed would be invisible to a single "
       "user — it matters through TTFT, and through serving many users from one machine." if k >= 1 else
       "(the fiction rate): on this machine the stream falls behind a reader, so decode speed is the budget that "
       "breaks."),
    zh=f"真实模型的解码速度是较快的读者（按小说的阅读速度）消耗其文本速度的 {times_zh(k)}"
       + ("：流式输出跑在读者前面，再提高解码速度，单个用户也感觉不到——它的作用体现在 TTFT 上，以及体现在用一台机器为"
          "许多用户服务上。" if k >= 1 else
          "：在这台机器上，流式输出跟不上读者，所以被打破的是解码速度这项预算。"));
""", tags=("remove-input",)),
    md(r"""
Code completion and voice are the demanding cases: their budgets fall on the *first* tokens (or the first
sentence), so prefill time and per-call overhead decide. Chat is the forgiving one once it streams faster than
people read.

## Try it: timed streaming

Type a question, choose the number of new tokens and press *Generate*: the real model's reply streams with the
elapsed time, then TTFT and TPOT. (In the static book the panel is inert; the output below it is one run of the
same callback.)
"""),
    code(r"""
panel = widgets.streaming_panel(real, rtok, prompt="What is a good name for a cat?", new_tokens=24, chat=True)
display(panel)
_ = widgets.streaming_update(real, rtok, "What is a good name for a cat?", 24, chat=True)
"""),
    summary([
        "Each application's budget falls on a different part of generation: code completion on the first token, "
        "voice on the first complete sentence, chat on the first token and then the pace.",
        "Prefill grows with the context, so the same model can meet a keystroke budget with a short prefix and "
        "miss it with a long one.",
        "A voice assistant's LLM share is the time to the first complete sentence, several tokens after the "
        "first one: decode speed counts, not only TTFT.",
        "Decode speed beyond reading speed is invisible to one reader; compare in the model's own tokens per "
        "word, measured on the text it writes.",
        "Pick the model per budget: a small model trained for the task can meet a budget a larger general model "
        "cannot.",
    ]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
With the tokens-per-word ratio measured above, how many tokens per second does a fast reader at **300 words per
minute** consume? Check with `secbook.exercises.check_reading_rate(answer, tpw["tokens_per_word"])`.
"""),
    solution(r"""
from secbook.exercises import check_reading_rate
check_reading_rate(300 / 60 * tpw["tokens_per_word"], tpw["tokens_per_word"])
"""),
    exercise(2, r"""
In the voice budget above, how many more tokens could the real model produce in the time *left* of the second
(after recognition, its own first sentence and speech synthesis)? Use the measured TPOT. What if nothing is left?
"""),
    solution(r"""
left_ms = vb.set_index("stage").ms.iloc[-1]
tpot_ms = 1e3 * timing.tpot_s
if left_ms > 0:
    print(f"{left_ms:.0f} ms left -> about {int(left_ms / tpot_ms)} more tokens at {tpot_ms:.1f} ms/token")
else:
    print(f"nothing left: the budget is overrun by {-left_ms:.0f} ms, {(-left_ms) / tpot_ms:.0f} tokens' worth at "
          f"{tpot_ms:.1f} ms/token — shorten the first sentence (a system prompt asking for short answers), use a "
          "faster model or faster hardware")
"""),
    exercise(3, r"""
The keystroke budget is about the *first* token. What happens to it if the editor sends the whole file (900
tokens, close to the tiny model's 1 024-position limit) as context? Measure with `apps.keystroke_budget` and
explain which phase of generation grows.
"""),
    solution(r"""
long_prefix = heldout_text(max_chars=12_000)
ids = tok(long_prefix, add_special_tokens=False).input_ids[:900]
res = apps.keystroke_budget(model, tok, [tok.decode(ids)], repeats=2)
print(res[["prefix_tokens", "first_token_ms", "within_100_ms"]].round(1))
say(f"With {res.prefix_tokens.iloc[0]} tokens of context the first token took {res.first_token_ms.iloc[0]:.0f} ms, "
    f"{times(res.first_token_ms.iloc[0] / budget.first_token_ms.iloc[0])} the shortest prefix's — "
    + ("within" if res.within_100_ms.iloc[0] else "outside") + " the budget. What grows is the prefill: the "
    "whole context goes through the model before the first token, and attention over it grows with its square. "
    "Editors therefore send a window around the cursor, and servers cache the prefill of the unchanged part.",
    zh=f"上下文为 {res.prefix_tokens.iloc[0]} 个词元时，第一个词元用了 {res.first_token_ms.iloc[0]:.0f} ms，"
       f"是最短前缀的 {times_zh(res.first_token_ms.iloc[0] / budget.first_token_ms.iloc[0])}——"
       + ("在预算之内" if res.within_100_ms.iloc[0] else "超出了预算") + "。增长的是预填充：在第一个词元出现之前，"
       "整个上下文都要通过模型，而对它的注意力计算随其长度的平方增长。因此编辑器只发送光标附近的一个窗口，而服务器会"
       "缓存未改变部分的预填充结果。");
"""),
    exercise(4, r"""
Streaming changes *perceived* latency, not the work. Is the streamer adding overhead? Time the tiny model's
48-token generation with and without the streamer, in turn, and compare.
"""),
    solution(r"""
from secbook.measure import hf_generate_fn, prompt_ids
plain = hf_generate_fn(model)
def streamed(ids, n):
    return apps.stream(model, tok, tok.decode(ids[0]), new_tokens=n, on_text=lambda t, s: None, stop_at_eos=False)
ids = prompt_ids(tok, 8)
A, B = "Generation with the streamer", "without it"
speeds = secbook.measure.tok_s_in_turn({A: streamed, B: plain}, ids, 48, rounds=5)
A_zh, B_zh = "带流式输出器的生成", "不带流式输出器的生成"
speeds_zh = {A_zh: speeds[A], B_zh: speeds[B]}
say(compare(speeds, A, B).words() + ". The streamer's extra work is decoding each new "
    "token to text and handing it on; whether that shows depends on how long a step takes — it can against a step "
    "of a few milliseconds, and cannot against a large model's step.",
    zh=compare(speeds_zh, A_zh, B_zh).words_zh() + "。流式输出器额外的工作是把每个新词元解码成文本并传递出去；"
       "这笔开销是否显现，取决于一步要花多长时间——相对于只有几毫秒的一步，它可能显现出来；相对于大模型的一步，则显现不出来。");
"""),
]
