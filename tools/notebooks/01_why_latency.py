"""Chapter 1 — Why latency matters: inference, streaming, TTFT / TPOT / tokens/s, latency vs length."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

NAME = "01_why_latency"

CELLS = [
    md(r"""
# Why latency matters

**Inference** (推理) is running a trained model to get an answer, as opposed to training it. For a large
language model the answer is produced one token at a time: the model reads the whole prompt once (the
**prefill**), predicts one token, appends it, and repeats — each new token needs another pass through the
whole network (the **decode** steps). A 500-token answer is 500 sequential passes.

**Latency** (延迟) is how long the user waits. It has two parts that feel different:

* **time to first token (TTFT)** — prompt processing plus the first step: how long until *something* appears;
* **time per output token (TPOT)** — the pace after that. Its inverse is **tokens per second**.

End-to-end latency for $n$ new tokens is about $\text{TTFT} + (n-1)\cdot\text{TPOT}$. Real-time uses have budgets
on one or both: a code completion must appear between two keystrokes, a voice assistant must start speaking within
about a second, a chat must stream at least as fast as people read (chapter 6 measures each). Training can take
weeks; inference happens every time anyone uses the model, which is why this book is about making it fast — the
source's 秒推, *second-scale inference*.

This chapter measures all of it on two models that need no model hub: a real pretrained chat model,
**SmolLM2-135M-Instruct** {cite}`allal2025smollm2`, and the book's **tiny** model (a 5.8 M-parameter Llama trained
on Python's standard library, fast enough to measure anything in seconds). The real model comes from the Python
package index as the file llama.cpp made of it, quantized to *Q4_1* (4-bit weights in blocks of 32, each block
with a scale and a minimum; chapter 3.1 reads that format), and the set-up (`make`, or `python -m secbook fetch`)
converts it back to ordinary fp32 weights: a real model that answers questions, though not bit for bit the
original bf16 weights.
"""),
    opening(["tell inference from training, and prefill from decode",
             "measure time to first token (TTFT), time per output token (TPOT) and tokens/s without fooling yourself "
             "(warm-up, medians, the first call apart)",
             "predict end-to-end latency from TTFT and TPOT, and check the prediction against a measurement",
             "stream a real chat model's reply and see when each token arrives"],
            ["Python and a first idea of what a neural network is",
             "no GPU: everything runs on a laptop CPU"], 25),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import torch, pandas as pd
import matplotlib.pyplot as plt
from transformers import TextStreamer
from secbook import widgets
from secbook.measure import time_generation, prompt_ids
from secbook.claims import say, guard, times, times_zh
print("measured on:", machine)
"""),
    md(r"""
## The two models

Parameter counts, and what the tiny model writes after `def fibonacci(n):` with greedy decoding (always the most
likely next token, so the output is reproducible).
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
tiny, tok = secbook.load("tiny")
real, rtok = secbook.load("smollm2-135m-instruct")
for name, m in (("tiny", tiny), ("smollm2-135m-instruct", real)):
    print(f"{name:>22}: {sum(p.numel() for p in m.parameters()):>12,} parameters, {m.config.num_hidden_layers} layers")
ids = tok("def fibonacci(n):", return_tensors="pt").input_ids
out = tiny.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False)
print(tok.decode(out[0]))
"""),
    md(r"""
## A real question, a real answer

The real model is a chat model: a question goes in as one *user turn* of its chat template (the special tokens
that mark who speaks), and greedy decoding makes its reply reproducible. This cell's output is checked every
time the book is built: the reply must contain "Paris".
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
from secbook.pretrained import chat_ids
question = "What is the capital of France? Answer in one sentence."
q_ids = chat_ids(rtok, question)
reply_ids = real.generate(q_ids, max_new_tokens=24, do_sample=False)[0, q_ids.shape[1]:]
reply = rtok.decode(reply_ids, skip_special_tokens=True)
print(reply)
print("contains 'Paris':", "Paris" in reply)
"""),
    md(r"""
## Watching tokens arrive

transformers' `TextStreamer` prints each token as soon as `generate` produces it. Run the cell and watch: the
first token takes a moment (prefill), the rest arrive at a steady pace.
"""),
    code(r"""
ids = tok("class Queue:\n    def put(self, item):\n", return_tensors="pt").input_ids
_ = tiny.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=48, do_sample=False,
                  streamer=TextStreamer(tok, skip_prompt=True))
"""),
    md(r"""
`secbook.apps.stream` is the same streamer with a clock: it records when each token arrived and when each piece of
text reached the screen. Here it streams the real model's answer to a question that needs a longer reply; the
numbers in brackets are milliseconds since the request, stamped when that text was printed.
"""),
    code(r"""
from secbook import apps
r = apps.stream(real, rtok, "Why do large language models generate text one token at a time? Two sentences.",
                new_tokens=48, on_text=apps.live_printer(6), chat=True)
print()
"""),
    md(r"""
A streamer prints whole words, and a word may take several tokens, so the first text can reach the screen a
little after the first token. The first bracket above is the moment the first text was printed; the sentence
below is computed from the same run.
"""),
    code(r"""
lag_ms = 1e3 * (r.first_text_s - r.ttft_s)
guard(abs(lag_ms) < 1e-6 or lag_ms > 0, "the first text is printed no earlier than the first token",
      f"first token {1e3 * r.ttft_s:.0f} ms, first text {1e3 * r.first_text_s:.0f} ms")
when = ("at the same moment" if lag_ms < 0.5 else f"{lag_ms:.0f} ms later, when the first whole word was complete")
when_zh = "同时出现在屏幕上" if lag_ms < 0.5 else f"晚 {lag_ms:.0f} ms，在第一个完整的词凑齐时才出现在屏幕上"
say(f"The first token arrived after **{r.ttft_s * 1e3:.0f} ms** (the TTFT of this reply) and the first text reached "
    f"the screen {when} (the first stamp, [{r.first_text_s * 1e3:.0f} ms]). After that one token arrived every "
    f"**{r.tpot_s * 1e3:.0f} ms** (the median gap, {r.tokens_per_s:.1f} tokens/s) for {len(r.tokens)} tokens.",
    zh=f"第一个词元在 **{r.ttft_s * 1e3:.0f} ms** 后到达（这次回答的首字延迟），第一段文字{when_zh}"
       f"（第一个时间戳 [{r.first_text_s * 1e3:.0f} ms]）。此后每 **{r.tpot_s * 1e3:.0f} ms** 到达一个词元"
       f"（间隔的中位数，{r.tokens_per_s:.1f} 词元/秒），共 {len(r.tokens)} 个词元。");
""", tags=("remove-input",)),
    md(r"""
## Measuring TTFT, TPOT and tokens/s honestly

`secbook.measure.time_generation` times greedy generation of a prompt cut from the held-out text, forced to produce
exactly the asked number of tokens. TTFT is the time of a one-token generation; TPOT is (end-to-end − TTFT) / (n − 1);
both are medians over repeats after a warm-up, and the very first call (which allocates memory and warms caches) is
reported separately, never mixed in.
"""),
    code(r"""
models = {"tiny": (tiny, tok), "smollm2-135m-instruct": (real, rtok)}
rows = []
for name, (m, t) in models.items():
    timing = time_generation(m, t, prompt_len=32, new_tokens=32, repeats=3)
    rows.append({"model": name, **timing.as_dict()})
table = secbook.measure.results_frame(rows)
print("measured on:", secbook.describe_machine())
table[["model", "ttft_s", "tpot_s", "tokens_per_s", "latency_s", "first_call_s"]].round(4)
"""),
    code(r"""
speed = table.set_index("model").tokens_per_s
size = sum(p.numel() for p in real.parameters()) / sum(p.numel() for p in tiny.parameters())
ratio = speed["tiny"] / speed["smollm2-135m-instruct"]
say(f"The tiny model decoded at {times(ratio)} the speed of the real model, which has {size:.0f}x as many "
    f"parameters" + (" — less than the ratio of sizes: a small model's step is dominated by fixed costs per "
                     "layer and per call, not by its arithmetic (chapter 4 separates the two)." if ratio < size / 2
                     else "."),
    zh=f"小模型的解码速度是真实模型的 {times_zh(ratio)}，而真实模型的参数量是它的 {size:.0f} 倍"
       + ("——速度之比小于参数量之比：小模型每一步的时间主要花在每层、每次调用的固定开销上，而不是算术运算上"
          "（第 4 章把两者分开）。" if ratio < size / 2 else "。"));
""", tags=("remove-input",)),
    md(r"""
## Latency grows with the answer

If latency is TTFT + (n − 1)·TPOT, it should grow in a straight line with the number of generated tokens, with the
intercept at TTFT. Measured for both models:
"""),
    code(r"""
lengths = (2, 8, 16, 32)
curve = []
for name, (m, t) in models.items():
    for n in lengths:
        tg = time_generation(m, t, prompt_len=32, new_tokens=n, repeats=2)
        curve.append({"model": name, "new_tokens": n, "latency_ms": 1e3 * tg.latency_s, "ttft_ms": 1e3 * tg.ttft_s,
                      "tpot_ms": 1e3 * tg.tpot_s})
curve = pd.DataFrame(curve)
curve.pivot(index="new_tokens", columns="model", values="latency_ms").round(1)
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for (name, grp), color in zip(curve.groupby("model", sort=False), ["tab:blue", "tab:orange"]):
    ax.plot(grp.new_tokens, grp.latency_ms, "o", color=color, label=f"{name}, measured")
    ttft, tpot = grp.ttft_ms.median(), grp.tpot_ms.median()
    ax.plot(grp.new_tokens, ttft + (grp.new_tokens - 1) * tpot, "--", color=color, label=f"{name}, TTFT + (n-1)·TPOT")
ax.set(xlabel="generated tokens n", ylabel="end-to-end latency (ms)", title="latency vs generated length")
ax.legend(fontsize=8); fig.text(0.01, 0.01, secbook.describe_machine(), fontsize=6)
plt.tight_layout(); plt.show()
"""),
    code(r"""
fit = []
for name, grp in curve.groupby("model", sort=False):
    pred = grp.ttft_ms.median() + (grp.new_tokens - 1) * grp.tpot_ms.median()
    fit.append((name, float((abs(grp.latency_ms - pred) / grp.latency_ms).max())))
worst = max(w for _, w in fit)
say("The largest gap between the formula TTFT + (n − 1)·TPOT and a measured point was "
    + " and ".join(f"{100 * w:.0f}% ({n})" for n, w in fit) + ". "
    + ("The points fall on the dashed lines: after the first token, each further token costs about the same."
       if worst < 0.1 else "Some points fall off the dashed lines: the timings scattered in this run (other work "
       "on the machine; medians over repeats reduce such noise but cannot remove it). Run the cell again, on a "
       "quieter machine if you can, to check the straight line."),
    zh="公式 TTFT + (n − 1)·TPOT 与测量点之间的最大差距为 "
       + "，".join(f"{100 * w:.0f}%（{n}）" for n, w in fit) + "。"
       + ("各点都落在虚线上：第一个词元之后，每多一个词元的代价大致相同。" if worst < 0.1 else
          "有些点偏离了虚线：这次运行的计时有波动（机器上还有其他工作；对多次重复取中位数能减小这种噪声，但无法"
          "消除）。请再运行一次这个单元格，最好在更空闲的机器上，来检验这条直线。"));
""", tags=("remove-input",)),
    md(r"""
That is why the later chapters attack the two terms separately — the prefill (TTFT) and, above all, the
per-token decode cost (TPOT). For a model large enough, a decode step at batch size one is limited by how fast
its weights can be read from memory; chapter 4 measures where that starts.

## Try it

The panel re-runs the measurement whenever you move a control: prompt length, number of new tokens, model.
(In the static book the panel is inert; the line under it is the measurement made when the page was built.)
"""),
    code(r"""
panel = widgets.latency_panel(model="tiny", prompt_len=32, new_tokens=32)
display(panel)
timing, text = widgets.latency_update("tiny", 64, 16)
print(text)
"""),
    summary(["Inference produces a reply one token at a time: one prefill over the prompt, then one decode step per "
             "new token.",
             "TTFT (the prefill plus the first step) and TPOT (the pace after it) are the two numbers a user feels; "
             "end-to-end latency ≈ TTFT + (n − 1)·TPOT, and tokens/s is 1 / TPOT at batch size one.",
             "Measure honestly: warm up, take medians over repeats, report the first call apart and name the "
             "machine; every number in this book is measured when the page is built.",
             "A real 135M-parameter chat model answers a question correctly on a CPU, streaming its reply; the book's "
             "tiny model is there when speed of experimentation matters."]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
From the timing table above, predict the end-to-end latency of generating **100** tokens with the tiny model,
then check your formula with `secbook.exercises.check_latency_prediction(answer_s, ttft_s, tpot_s, 100)`.
"""),
    solution(r"""
from secbook.exercises import check_latency_prediction
row = table.set_index("model").loc["tiny"]
answer_s = row.ttft_s + 99 * row.tpot_s          # TTFT + (n - 1) x TPOT
check_latency_prediction(answer_s, row.ttft_s, row.tpot_s, 100)
"""),
    exercise(2, r"""
Which of TTFT and TPOT grows when the *prompt* gets longer? Measure the tiny model with prompts of 8 and 256 tokens
(16 new tokens) and explain.
"""),
    solution(r"""
t = {p: time_generation(tiny, tok, prompt_len=p, new_tokens=16, repeats=3) for p in (8, 256)}
for p, tg in t.items():
    print(f"prompt {p:>3}: TTFT {tg.ttft_s * 1e3:6.1f} ms, TPOT {tg.tpot_s * 1e3:5.1f} ms")
g_ttft, g_tpot = t[256].ttft_s / t[8].ttft_s, t[256].tpot_s / t[8].tpot_s
print(f"32x the prompt: TTFT x{g_ttft:.2f}, TPOT x{g_tpot:.2f}.")
if g_tpot >= g_ttft:
    say("In this run TPOT grew as much as TTFT: the timings were disturbed by other work on the machine; run the "
        "cell again.", zh="这次运行中 TPOT 与 TTFT 增长得一样多：计时受到了机器上其他工作的干扰，请再运行一次这个单元格。")
"""),
    answer(r"""
TTFT carries the prefill, which processes every prompt token, so it grows with the prompt. A decode step handles
one new token, and only its attention over the cached prompt grows, so TPOT should grow far less.
"""),
    exercise(3, r"""
The table reports `first_call_s` apart from the median latency. Why should the first call never be mixed into the
median? Measure it again for a freshly loaded replica with 2 layers (`secbook.load("replica:smollm2-135m",
num_hidden_layers=2)`) and compare with its median.
"""),
    solution(r"""
small, stok = secbook.load("replica:smollm2-135m", num_hidden_layers=2)
tg = time_generation(small, stok, prompt_len=32, new_tokens=16, repeats=3)
ratio = tg.first_call_s / tg.latency_s
print(f"first call {tg.first_call_s * 1e3:.1f} ms vs median {tg.latency_s * 1e3:.1f} ms: {ratio:.2f}x the median.")
if ratio <= 1.05:
    say("Here the first call was not slower: eager PyTorch on a CPU has few one-off costs for a model this small.",
        zh="这里第一次调用并不更慢：对这么小的模型，CPU 上以即时执行 (eager) 模式运行的 PyTorch 几乎没有一次性开销。")
"""),
    answer(r"""
The first call can pay one-off costs: memory allocation, lazy initialisation, kernel selection, and compilation
with `torch.compile`, which takes seconds to minutes. A user pays them once; mixing them into the median would
misreport the steady state, and a median over repeats hides a one-off cost whichever way it falls.
"""),
    exercise(4, r"""
Ask the real model a question of your own with `apps.stream(real, rtok, question, new_tokens=48,
on_text=apps.live_printer(6), chat=True)`. Is its TTFT longer for a longer question? Try a one-line question and
one of about five lines.
"""),
    solution(r"""
short = "What is a tokenizer?"
long = ("I am reading a book about running language models fast. It says that a model first reads the whole prompt "
        "and then writes one token at a time, and that the first part is called prefill. It also says that a long "
        "prompt makes the first token come later, but not the later tokens. Is that right, and why? Please answer "
        "in two sentences.")
res = {}
for name, q in (("short", short), ("long", long)):
    res[name] = apps.stream(real, rtok, q, new_tokens=16, on_text=lambda t, s: None, chat=True)
    n = chat_ids(rtok, q).shape[1]
    print(f"{name:>5} question ({n} prompt tokens): TTFT {res[name].ttft_s * 1e3:.0f} ms, TPOT {res[name].tpot_s * 1e3:.0f} ms")
g = res["long"].ttft_s / res["short"].ttft_s
if g > 1.05:
    say(f"The long question's TTFT was {times(g)} the short one's, as expected.",
        zh=f"长问题的首字延迟是短问题的 {times_zh(g)}，与预期相符。")
else:
    say(f"The long question's TTFT was {times(g)} the short one's: not clearly longer in this run (one reply each is "
        f"a noisy measurement; repeat it).",
        zh=f"长问题的首字延迟是短问题的 {times_zh(g)}：这次运行中并不明显更长（每个问题只回答一次，测量噪声大；"
           f"请重复几次）。")
"""),
    answer(r"""
The prefill reads every prompt token, so a longer question delays the first token. The later tokens each cost one
decode step whatever the prompt's length (only the attention over the cache grows, slowly).
"""),
]
