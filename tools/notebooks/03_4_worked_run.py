"""Chapter 3.4 — the source's recipe as one worked, measured run on the real model, step by step, in turn."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

NAME = "03_4_worked_run"

CELLS = [
    md(r"""
# A worked run: choose, optimize, accelerate, compress, evaluate

The source closes its core-algorithms part with a recipe in five steps: **choose a model**, **compress** it,
**optimize** the inference algorithm, **accelerate** it on the hardware, and **evaluate** the result. This section
follows the recipe once, end to end, on the real model — SmolLM2-135M-Instruct answering a chat question — on the
CPU of the machine that builds the page. Every step is timed against the step before it, and every sentence about
its effect is printed from that measurement.

We take the steps in a different order from the source's list: the two that cannot change the output first, the
one that does last. A lossless step can be checked exactly — the same greedy tokens, token for token — so when the
lossy step comes, every change in the answers is its own. Compression also turns into speed only on a loop and a
kernel that read the smaller weights fast; exercise 2 measures it without them.
"""),
    opening(["follow an optimization recipe from a baseline to a faster model, one measured step at a time",
             "check each lossless step token for token, and price the lossy one in changed tokens and in answers",
             "read a speed-up from rounds timed in turn, not from two runs made minutes apart",
             "decide from the measurements which steps earned their place on a given machine"],
            ["chapter 1 (tokens/s, greedy decoding) and chapter 3.1 (int8 weights, the question set)",
             "chapter 3.2 (our decode loop) and section 3.2.1 (the whole step in C++)",
             "chapter 3.3 helps for the GPU remarks"], 20),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import copy
import torch, pandas as pd
import matplotlib, matplotlib.pyplot as plt
from secbook import kernels, tasks
from secbook.claims import say, guard, times, times_zh, VERDICT_ZH
from secbook.generate import FastGenerator, hf_generate
from secbook.ladder import apply_transform, ladder_prompt
from secbook.measure import decode_read_bytes
from secbook.pipeline import StepByStep
from secbook.pretrained import PROVENANCE, chat_ids
print("measured on:", machine)
"""),
    md(r"""
The whole run is on the CPU: the C++ step of section 3.2.1 is CPU code, and a computer without a GPU is where a
model of this size is most often run. On a GPU the hardware step would be a different one (CUDA graphs, chapter
3.3), and so would the fastest low-precision format.

## Step 1 — choose the model

The choice sets the floor: every later step divides what this one costs. A decode step at batch size one reads
every weight once, so the model's bytes are the first number to look at. We take the real model in fp32 and decode
with Hugging Face `generate`, greedy, the way most code calls a model.
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
model, tok = secbook.load("smollm2-135m-instruct")
cfg = model.config
print(f"{cfg.model_type}: {cfg.num_hidden_layers} layers, hidden size {cfg.hidden_size}, vocabulary {cfg.vocab_size:,}, "
      f"{sum(p.numel() for p in model.parameters()):,} parameters")
print(f"weights a decode step reads in fp32: {decode_read_bytes(model) / 1e6:,.0f} MB")
print(PROVENANCE)
"""),
    md(r"""
The prompt is one chat turn; every step generates exactly the same number of new tokens from it (none stops
early). `secbook.pipeline.StepByStep` keeps the run: the first way of decoding is the baseline and its greedy
tokens are the reference; each later one is checked against that reference and timed *in turn* with the step
before it — A, B, A, B, … — so that other work on the machine slows both alike, and a step counts as faster only
if it was faster in every round.
"""),
    code(r"""
ids, what = ladder_prompt(tok)
N, ROUNDS = 32, 3
longest = max(chat_ids(tok, q.prompt).shape[1] for q in tasks.QUESTIONS)
MAX_LEN = max(ids.shape[1], longest) + max(N, 24)   # room for the prompt and for every question of step 5
run = StepByStep(ids, N, rounds=ROUNDS)
run.add("1. HF generate, fp32", lambda x, n: hf_generate(model, x, n), "the baseline", decode_read_bytes(model))
print("prompt:", what)
print(f"baseline reply, first {N} tokens:", repr(tok.decode(run.reference[0], skip_special_tokens=True)))
"""),
    md(r"""
## Step 2 — optimize the algorithm

Hugging Face `generate` is general: for every token it runs logits processors and stopping criteria, grows the
cache and rebuilds masks — hundreds of small operations around the model. Our loop from chapter 3.2
pre-allocates the KV cache (a static cache), multiplies q, k and v as one matrix and gate and up as another, and
runs a bare single-token step. It computes the same thing, so it must produce the same greedy tokens; the check
below stops the build if it does not.
"""),
    code(r"""
ours = FastGenerator(model, max_len=ids.shape[1] + N)
c2 = run.add("2. our loop, fp32", ours.generate, "static KV cache, fused projections (ch. 3.2)", decode_read_bytes(model))
guard(run.table().identical_tokens.iloc[-1], "our loop produces HF generate's greedy tokens")
from dataclasses import replace
STEP_ZH = {"1. HF generate, fp32": "1. HF generate，fp32", "2. our loop, fp32": "2. 我们的循环，fp32",
           "3. whole step in C++, fp32": "3. C++ 整步解码，fp32", "4. int8 weights, C++ step": "4. int8 权重，C++ 解码步"}


def in_zh(c):  # the same comparison, its two steps named in Chinese (for the sentences' zh=)
    name = lambda step: "第 {} 步（{}）".format(*STEP_ZH.get(step, step).split(". ", 1))  # noqa: E731
    return replace(c, a=name(c.a), b=name(c.b))


c2_zh = in_zh(c2)
say(f"Our loop produced the baseline's {N} tokens exactly. Timed in turn: {c2.words()}.",
    zh=f"我们的循环生成的 {N} 个词元与基线的完全相同。轮流计时：{c2_zh.words_zh()}。");
""", tags=("remove-input",)),
    md(r"""
## Step 3 — accelerate on the hardware

On a CPU, accelerating on the hardware means using what the processor offers — its vector instructions, its
memory system, all its cores — which general-purpose operators called one at a time leave partly unused. Our loop
still calls a few hundred PyTorch operators per token, and each costs microseconds of dispatch before it does any
work (chapter 3.3 counts them). The C++ step of section 3.2.1 (`secbook.kernels.CppDecoder`) runs the whole decode
step as one call, compiled for this CPU's instruction set, with the weights packed so that each core reads one
sequential stream and the cores start once per step — what llama.cpp does. The weights stay fp32, so the tokens
must again be identical.
"""),
    code(r"""
cpp_ok = kernels.available()
if cpp_ok:
    cpp32 = FastGenerator(model, max_len=MAX_LEN, cpp=True)
    c3 = run.add("3. whole step in C++, fp32", cpp32.generate, "one C++ call per token, weights packed per core",
                 decode_read_bytes(model))
    guard(run.table().identical_tokens.iloc[-1], "the C++ step on fp32 weights produces HF generate's greedy tokens")
    c3_zh = in_zh(c3)
    say(f"The C++ step produced the baseline's {N} tokens exactly. Timed in turn: {c3.words()}.",
        zh=f"C++ 解码步生成的 {N} 个词元与基线的完全相同。轮流计时：{c3_zh.words_zh()}。")
else:
    say(f"**This step does nothing here**: the C++ step cannot be built on this machine "
        f"({kernels.unavailable_reason()}); the run continues without steps 3 and 4.",
        zh=f"**这一步在这里什么也不做**：C++ 解码步无法在这台机器上构建（{kernels.unavailable_reason()}）；"
           f"运行跳过第 3 步和第 4 步继续进行。");
""", tags=("remove-input",)),
    md(r"""
## Step 4 — compress

Now the one step that changes the numbers. Every weight matrix — the attention and MLP projections and the LM
head — is stored as int8 with one fp32 scale per output row (round-to-nearest, chapter 3.1): about a quarter of
the fp32 bytes. The same C++ step multiplies them: it rounds each input vector to int16 (one scale per 256 values)
and uses the CPU's integer multiply-add instructions. The embedding table stays fp32, but a step only looks up one
of its rows. Since the step mostly reads weights, fewer bytes should mean a faster step; the tokens it changes are
the price.
"""),
    code(r"""
if cpp_ok:
    model8 = apply_transform(copy.deepcopy(model), "int8k")
    cpp8 = FastGenerator(model8, max_len=MAX_LEN, cpp=True)
    c4 = run.add("4. int8 weights, C++ step", cpp8.generate, "int8 weights, one scale per row (ch. 3.1)",
                 decode_read_bytes(model8))
    t = run.table()
    fp32_mb, int8_mb, agree = t.read_MB_per_token.iloc[-2], t.read_MB_per_token.iloc[-1], t.token_agreement.iloc[-1]
    new8 = cpp8.generate(ids, N)[0, ids.shape[1]:].cpu()
    diff = (new8 != run.reference[0]).nonzero()
    where = ("all of them" if len(diff) == 0 else
             f"the first difference is token {int(diff[0]) + 1}, after which the two replies go their own ways")
    where_zh = ("全部相同" if len(diff) == 0 else f"第一处不同在第 {int(diff[0]) + 1} 个词元，此后两个回复各走各的路")
    simd = "AVX-512 VNNI instructions" if kernels.has_vnni() else "the portable loops (no AVX-512 VNNI on this CPU)"
    simd_zh = "AVX-512 VNNI 指令" if kernels.has_vnni() else "可移植的普通循环（这个 CPU 没有 AVX-512 VNNI）"
    c4_zh = in_zh(c4)
    say(f"The int8 step reads {int8_mb:,.0f} MB of weights per token instead of {fp32_mb:,.0f} MB "
        f"({times(fp32_mb / int8_mb)} fewer bytes). Timed in turn: {c4.words()}. Of its {N} greedy tokens, "
        f"{round(agree * N)} equal the baseline's at the same position (token agreement {agree:.3f}): {where}. "
        f"Its int8 products used {simd}.",
        zh=f"int8 这一步每个词元读取 {int8_mb:,.0f} MB 权重，而不是 {fp32_mb:,.0f} MB（原来的字节数是现在的 "
           f"{times_zh(fp32_mb / int8_mb)}）。轮流计时：{c4_zh.words_zh()}。在它的 {N} 个贪心词元中，有 "
           f"{round(agree * N)} 个与基线同一位置上的词元相同（词元一致率 {agree:.3f}）：{where_zh}。"
           f"它的 int8 乘积运算用的是{simd_zh}。")
else:
    say("Step 4 in this form needs the C++ int8 kernel, which is not available here: it is left out.",
        zh="这种形式的第 4 步需要 C++ int8 内核，而这里没有：这一步略去不做。");
""", tags=("remove-input",)),
    code(r"""
if cpp_ok:
    print("fp32:", repr(tok.decode(run.reference[0], skip_special_tokens=True)))
    print("int8:", repr(tok.decode(new8, skip_special_tokens=True)))
"""),
    md(r"""
## Step 5 — evaluate

### Speed

Each step was timed in turn with the one before it, so each row's two speeds come from the same rounds; a row's
speed and the next row's "previous" speed come from different rounds, and a shared machine's load can differ
between them. Multiplying the per-step ratios gives the chained speed-up over the baseline — a product of
separate measurements — and the last step is then timed in turn against the baseline once more, one measurement
of the whole run. A speed here is the new tokens ÷ the time of the whole call, the prompt's prefill included.
"""),
    code(r"""
table = run.table()
whole = run.overall()
table[["step", "previous_tokens_per_s", "tokens_per_s", "vs_previous", "verdict_vs_previous", "chained_vs_first",
       "read_MB_per_token", "token_agreement", "identical_tokens"]].round(
    {"previous_tokens_per_s": 1, "tokens_per_s": 1, "vs_previous": 2, "chained_vs_first": 2, "read_MB_per_token": 0,
     "token_agreement": 3})
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(7.5, 3.6))
ax.bar(range(len(table)), table.chained_vs_first, width=0.6, color=["0.6"] + ["tab:blue"] * (len(table) - 1))
for i, r in table.iterrows():
    label = "baseline" if i == 0 else f"{times(r.vs_previous)} prev.\n{times(r.chained_vs_first)} chained"
    ax.text(i, r.chained_vs_first, label, ha="center", va="bottom", fontsize=8)
last = len(table) - 1
ax.errorbar(last + 0.4, whole.median, yerr=[[whole.median - whole.low], [whole.high - whole.median]], fmt="D",
            color="tab:red", capsize=3, label=f"last vs baseline, timed in turn: {times(whole.median)}")
ax.set_yscale("log"); ax.set_ylim(0.5, max(table.chained_vs_first.max(), whole.high) * 4)
ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
ax.set_xticks(range(len(table)), [s.split(". ", 1)[1] for s in table.step], fontsize=8)
ax.set(ylabel="speed ÷ the baseline's (log scale)",
       title=f"smollm2-135m-instruct, {N} new tokens, medians of {ROUNDS} rounds in turn")
ax.legend(fontsize=8, loc="upper left"); fig.text(0.01, 0.01, secbook.describe_machine(), fontsize=6)
plt.tight_layout(); plt.show()
"""),
    code(r"""
if cpp_ok:
    guard(whole.median >= 2, "the run ends at least twice as fast as it started", whole.words())
chain = table.chained_vs_first.iloc[-1]
whole_zh = in_zh(whole)
say(f"Per step, timed in turn with the step before: "
    + "; ".join(f"step {r.step.split('.')[0]} {times(r.vs_previous)} ({r.verdict_vs_previous})"
                for r in table.iloc[1:].itertuples())
    + f" — {times(chain)} chained. The whole run, timed in turn in one measurement: {whole.words()}. "
    + ("The chain and the direct measurement agree within a factor of 1.5." if 1 / 1.5 < chain / whole.median < 1.5 else
       "The chain and the direct measurement differ by more than a factor of 1.5: the machine's load changed between "
       "the rounds of different steps; the direct measurement is the one to quote."),
    zh="逐步来看（每一步都与前一步轮流计时）："
       + "；".join(f"第 {r.step.split('.')[0]} 步 {times_zh(r.vs_previous)}（{r.verdict_vs_previous}）"
                  for r in table.iloc[1:].assign(verdict_vs_previous=lambda t: t.verdict_vs_previous.map(VERDICT_ZH))
                  .itertuples())
       + f"——连乘为 {times_zh(chain)}。整个运行在一次测量中轮流计时：{whole_zh.words_zh()}。"
       + ("连乘结果与直接测量的结果相差不到 1.5 倍。" if 1 / 1.5 < chain / whole.median < 1.5 else
          "连乘结果与直接测量的结果相差超过 1.5 倍：机器的负载在不同步骤的各轮之间发生了变化；应当引用直接测量的结果。"));
""", tags=("remove-input",)),
    md(r"""
### Answers

Speed is only half of the evaluation. Token agreement falls fast — one changed token usually changes the rest of
the reply — so it says *that* the int8 model writes differently, not whether it still answers. The question set of
chapter 3.1 (`secbook.tasks`: 30 questions with expected answers, facts, arithmetic and Python) asks both models,
each decoded by its own loop from this run, one question at a time, at most 24 new tokens. The fp32 answers come
from the fastest lossless step: steps 1 to 3 give the same tokens.
"""),
    code(r"""
lossless = cpp32 if cpp_ok else FastGenerator(model, max_len=MAX_LEN)
scores = {"fp32 (steps 1-3)": tasks.score(None, tok, max_new_tokens=24, generate=lossless.generate)}
if cpp_ok:
    scores["int8 (step 4)"] = tasks.score(None, tok, max_new_tokens=24, generate=cpp8.generate)
acc = pd.DataFrame({k: {r.kind: f"{r.correct}/{r.total}" for r in tasks.summary(v).itertuples()} for k, v in scores.items()})
acc
"""),
    code(r"""
right = {k: int(v.correct.sum()) for k, v in scores.items()}
if cpp_ok:
    a, b = scores["fp32 (steps 1-3)"], scores["int8 (step 4)"]
    changed = int((a.reply != b.reply).sum())
    flips = int((a.correct != b.correct).sum())
    d = right["int8 (step 4)"] - right["fp32 (steps 1-3)"]
    verdict = ("within the question set's noise (one answer is about 3 percentage points; a difference of one or "
               "two answers says nothing)" if abs(d) <= 2 else "more than the question set's noise of one or two answers")
    verdict_zh = ("在问题集的噪声范围之内（一道题约占 3 个百分点；相差一两道题说明不了什么）" if abs(d) <= 2 else
                  "超出了问题集一两道题的噪声")
    say(f"fp32 answered {right['fp32 (steps 1-3)']}/30 and int8 {right['int8 (step 4)']}/30 ({d:+d}), {verdict}. "
        f"{changed} of the 30 replies changed at all, and {flips} of them changed between right and wrong.",
        zh=f"fp32 答对了 {right['fp32 (steps 1-3)']}/30，int8 答对了 {right['int8 (step 4)']}/30（{d:+d}），{verdict_zh}。"
           f"30 个回复中有 {changed} 个有所改变，其中 {flips} 个在答对与答错之间发生了变化。")
else:
    say(f"fp32 answered {right['fp32 (steps 1-3)']}/30; with no lossy step in this run, there is nothing to compare.",
        zh=f"fp32 答对了 {right['fp32 (steps 1-3)']}/30；这次运行中没有有损的步骤，因此没有可比较的。");
""", tags=("remove-input",)),
    code(r"""
if cpp_ok:
    side = pd.DataFrame({"question": a.prompt.str.slice(0, 45), "fp32": a.reply.str.slice(0, 60),
                         "int8": b.reply.str.slice(0, 60), "fp32 ok": a.correct, "int8 ok": b.correct})
    display(side[a.correct != b.correct].head(6) if (a.correct != b.correct).any() else side[a.reply != b.reply].head(4))
"""),
    code(r"""
last = table.iloc[-1]
last_zh = last.copy()
last_zh["step"] = STEP_ZH.get(last.step, last.step)
sp = {k: pd.Series(v).median() for k, v in run.overall_speeds.items()}
say(f"**The run in one line:** from {sp[table.step.iloc[0]]:.1f} tokens/s with `generate` to "
    f"{sp[last.step]:.1f} tokens/s with {last.step.split('. ', 1)[1]} ({times(whole.median)} the baseline's "
    f"speed, timed in turn), reading {last.read_MB_per_token:,.0f} MB of weights per token instead of "
    f"{table.read_MB_per_token.iloc[0]:,.0f} MB, answering {right[list(right)[-1]]} of the 30 questions "
    f"(fp32: {right['fp32 (steps 1-3)']}).",
    zh=f"**一句话概括这次运行**：从用 `generate` 时的 {sp[table.step.iloc[0]]:.1f} 词元/秒，提高到"
       f"「{last_zh.step.split('. ', 1)[1]}」的 {sp[last.step]:.1f} 词元/秒（轮流计时，是基线速度的 "
       f"{times_zh(whole.median)}），每个词元读取 {last.read_MB_per_token:,.0f} MB 权重而不是 "
       f"{table.read_MB_per_token.iloc[0]:,.0f} MB，30 个问题答对了 {right[list(right)[-1]]} 个"
       f"（fp32：{right['fp32 (steps 1-3)']}）。");
""", tags=("remove-input",)),
    md(r"""
## What the run shows

The three speed steps attack different parts of a decode step. The loop and the C++ step removed work *around*
the weights — Python, dispatch, allocation, threads started and joined — and changed no number the model
computes, so they needed only a token-for-token check. The int8 step removed bytes of weights, which is the part
that remains once everything around it is gone; it changed the numbers, so it needed the question set. How large
each effect is depends on the machine: a CPU without AVX-512 runs the C++ step's portable loops, a faster memory
moves the balance between reading weights and the rest, and on a GPU the hardware step is a CUDA graph (chapter
3.3) while int8 competes with bf16 and int4 kernels. That is why the recipe ends with *evaluate*: the order of the
steps and the choice among them are decided by measurements on the machine that will run the model.
"""),
    summary(["The source's recipe — choose, compress, optimize, accelerate, evaluate — was run here as choose, "
             "optimize, accelerate, compress, evaluate: lossless steps first, each checked token for token, the "
             "lossy step last, priced in tokens and in answers.",
             "Each step is timed in turn with the step before it, and the whole run once more against the baseline: "
             "comparisons made minutes apart on a shared machine can be swayed by its load.",
             "The loop and the whole-step C++ decoder remove work around the weights without changing the output; "
             "int8 weights remove bytes, which is what a decode step mostly reads, and change some tokens.",
             "Token agreement says that a lossy model writes differently; a question set says whether it still "
             "answers. Both belong in the evaluation."]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
**Bytes.** Predict, from the model's shapes alone, the ratio of weight bytes a decode step reads in fp32 and in
int8 (one byte per weight plus one fp32 scale per output row; the norms stay fp32; the LM head shares the
embedding table in fp32 but gets its own int8 copy). Compare it with the measured `decode_read_bytes` of both
models, and with step 4's speed ratio. Is the speed ratio larger or smaller than the bytes ratio, and what does
that say about the step?
"""),
    solution(r"""
lins = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]   # projections and the LM head
norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n) * 4
fp32_pred = sum(m.weight.numel() for m in lins) * 4 + norms
int8_pred = sum(m.weight.numel() + 4 * m.out_features for m in lins) + norms
print(f"predicted: fp32 {fp32_pred / 1e6:.1f} MB, int8 {int8_pred / 1e6:.1f} MB, ratio {fp32_pred / int8_pred:.2f}")
if cpp_ok:
    m_fp32, m_int8 = decode_read_bytes(model), decode_read_bytes(model8)
    print(f"measured:  fp32 {m_fp32 / 1e6:.1f} MB, int8 {m_int8 / 1e6:.1f} MB, ratio {m_fp32 / m_int8:.2f}")
    speed = table.vs_previous.iloc[-1]
    say(f"step 4's speed ratio: {speed:.2f} — " + ("smaller than the bytes ratio: the step does more than read weights "
        "(attention over the cache, norms, quantizing each input vector, waiting at barriers), and that part did "
        "not shrink." if speed < m_fp32 / m_int8 else "at least the bytes ratio: the int8 products also read their "
        "weights at a higher rate than the fp32 ones (integer multiply-add does more per instruction)."),
        zh=f"第 4 步的速度之比：{speed:.2f}——" + ("小于字节数之比：这一步做的不只是读权重（还有对缓存的注意力计算、归一化、"
           "量化每个输入向量、在屏障处等待），而这部分并没有缩小。" if speed < m_fp32 / m_int8 else
           "至少达到字节数之比：int8 乘积读取权重的速率也比 fp32 的更高（整数乘加每条指令做的工作更多）。"))
"""),
    exercise(2, r"""
**Compression first.** The source's order compresses before optimizing the loop. Run step 4's int8 model (each of
its layers on the C++ int8 kernel, but called one by one by Hugging Face `generate`) timed in turn against the
baseline, 16 new tokens, two rounds (`secbook.measure.tok_s_in_turn` and `secbook.claims.compare`). How much of
the int8 gain survives without our loop and the whole-step decoder?
"""),
    solution(r"""
from secbook.claims import compare
from secbook.measure import tok_s_in_turn
if cpp_ok:
    gens = {"fp32, HF generate": lambda x, n: hf_generate(model, x, n),
            "int8 layers, HF generate": lambda x, n: hf_generate(model8, x, n)}
    alone = compare(tok_s_in_turn(gens, ids, 16, rounds=2), "int8 layers, HF generate", "fp32, HF generate")
    print(alone.words())
    share = alone.median / whole.median  # the int8 layers' speed inside generate, as a share of the whole run's
    pct = round(100 * share)             # the printed percentage: the words below follow this same number
    say(f"The whole run reached {times(whole.median)} the baseline's speed; int8 layers alone, inside generate, "
        f"{times(alone.median)}: {pct}% of the whole run's speed (medians of rounds in turn).",
        zh=f"整个运行达到了基线速度的 {times_zh(whole.median)}；仅在 generate 内部使用 int8 层，则为 "
           f"{times_zh(alone.median)}：相当于整个运行速度的 {pct}%（均为轮流计时各轮的中位数）。")
    band = "all" if pct >= 100 else "most" if pct > 55 else "half" if pct >= 45 else "less"
    say("Inside generate every int8 layer already calls the C++ int8 kernel and reads a quarter of the bytes, but "
        "the rest of generate's work per token stays: " + {
            "all": "the int8 layers alone were as fast as the whole run here, so the loop and the whole step added "
                   "no speed of their own.",
            "most": "the int8 layers alone reached most of the whole run's speed here, and the loop and the whole "
                    "step added the rest.",
            "half": "the int8 layers alone reached about half of the whole run's speed here, and the loop and the "
                    "whole step about doubled it.",
            "less": "the int8 layers alone reached less than half of the whole run's speed here; the loop and the "
                    "whole-step decoder more than doubled it."}[band],
        zh="在 generate 内部，每个 int8 层已经调用 C++ int8 内核，只读四分之一的字节，但 generate 每个词元的其余工作"
           "依然存在：" + {
            "all": "这里仅用 int8 层就与整个运行一样快，循环和整步解码器没有带来额外的速度。",
            "most": "这里仅用 int8 层就达到了整个运行的大部分速度，循环和整步解码器补上了其余部分。",
            "half": "这里仅用 int8 层达到了整个运行速度的一半左右，循环和整步解码器又使速度提高了约一倍。",
            "less": "这里仅用 int8 层达到的速度不到整个运行的一半；循环和整步解码器使速度提高了一倍以上。"}[band])
"""),
    exercise(3, r"""
**Exact and fast.** Speculative decoding keeps the target model's greedy tokens exactly (chapter 3.2). Let step 4's
int8 model draft 8 tokens at a time for the fp32 model, both on the C++ step
(`secbook.speculative.SpeculativeDecoder(model, model8, gamma=8, max_len=..., cpp_draft=True, cpp_target=True)`),
check its tokens against the baseline's, and time it in turn with steps 3 and 4. Which would you deploy, and why?
"""),
    solution(r"""
from secbook.claims import compare
from secbook.measure import tok_s_in_turn
from secbook.speculative import SpeculativeDecoder
if cpp_ok:
    spec = SpeculativeDecoder(model, model8, gamma=8, max_len=ids.shape[1] + N, cpp_draft=True, cpp_target=True)
    res = spec.generate(ids, N)
    exact = torch.equal(res.ids[:, ids.shape[1]:].cpu(), run.reference)
    print(f"speculative: tokens identical to the fp32 baseline: {exact}; acceptance rate {res.acceptance_rate:.2f}")
    gens = {"speculative": lambda x, n: spec.generate(x, n).ids, "C++ fp32": cpp32.generate, "C++ int8": cpp8.generate}
    speeds = tok_s_in_turn(gens, ids, N, rounds=3)
    vs32, vs8 = compare(speeds, "speculative", "C++ fp32"), compare(speeds, "speculative", "C++ int8")
    print(vs32.words()); print(vs8.words())
    say(f"Speculation kept fp32's exact tokens and was {vs32.than} fp32 on the C++ step and {vs8.than} "
        "int8 on it. If it is faster than fp32, it buys speed at no cost in answers; whether int8's extra speed "
        "is worth its changed tokens is what the question set (or your own evaluation) decides.",
        zh=f"推测解码保持了 fp32 的词元，一个不差；在 C++ 解码步上，它与 fp32 相比{vs32.than_zh}，与 int8 相比"
           f"{vs8.than_zh}。如果它比 fp32 快，它就是在不损失回答的前提下换来了速度；int8 额外的速度是否值得它改变的"
           "那些词元，要由问题集（或你自己的评估）来决定。")
"""),
    exercise(4, r"""
**On a GPU.** Rewrite the recipe of this section for a machine with an NVIDIA GPU. Which step changes, which stays,
and what must the evaluation check again?
"""),
    answer(r"""
Choosing stays (the model's bytes set the floor on any device). The loop stays too: our static-cache loop runs on
a GPU and gives the same tokens. The hardware step becomes CUDA graphs (`torch.compile(mode="reduce-overhead")` or
`FastGenerator(..., compile=True)`, chapter 3.3): on a GPU the time around the weights is kernel launches, which a
graph replays in one. The C++ step does not apply (it is CPU code). Compression changes its form: bf16 weights on
a GPU with bf16 tensor cores (compute capability 8.0 or later), or int8/int4 weight-only kernels (torchao), each
with its own speed and error. The evaluation must check the lossless steps token for token again — a GPU's kernels
add numbers in a different order, so near-ties can flip — and the lossy step on the question set again, because a
different kernel rounds differently.
"""),
]
