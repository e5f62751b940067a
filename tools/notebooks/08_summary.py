"""Chapter 8 — Summary: Pareto frontiers of the book's variants (one model, one machine each), the recommender on the
real model, and the source's claims checked."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

NAME = "08_summary"

CELLS = [
    md(r"""
# Summary: the balance of accuracy and efficiency, measured

The source ends by saying that fast inference is a balance between accuracy and efficiency. A balance can be
drawn: every way of running a model is a point with a speed (decode tokens/s), a quality (answers, perplexity or
token agreement against the same model in full precision) and a size (the weight bytes a decode step reads). The
points no other point beats on all three at once form the **Pareto frontier** — the only ones worth choosing
between. A point beats another only if both were measured on the same model, on the same machine, in the same
way: so every frontier below is drawn for one model on one machine, never across them. Then the recommender picks
from the real model's frontier, and the source's claims are checked against the numbers.
"""),
    opening(["place ways of running a model on a speed–quality–size chart and read its Pareto frontier",
             "keep comparisons fair: one model, one machine, one protocol per frontier, recorded runs labelled",
             "pick a configuration with a rule (the fastest within a quality tolerance) and check it against the data",
             "test broad claims about inference against measurements"],
            ["chapters 3.1–3.4 (quantization, the decode loop and the C++ step, the worked run)",
             "chapter 3.1's question set; chapter 4's roofline bound helps for the last section"], 20),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import copy
import torch, pandas as pd
import matplotlib.pyplot as plt
from secbook import kernels, tasks
from secbook.claims import compare, guard, say, times, times_zh
from secbook.generate import FastGenerator, hf_generate
from secbook.ladder import apply_transform, ladder_prompt
from secbook.measure import PPL_TOKENS, decode_read_bytes, perplexity_protocol, tok_s_in_turn, token_agreement
from secbook.pipeline import Dtype, DynamicInt8, Quantize, FastDecode
from secbook.recommend import GROUP, collect_results, fastest_within, pareto_front, sweep
from secbook.pretrained import chat_ids
print("measured on:", machine)
"""),
    md(r"""
## The real model on this machine

Five ways to run SmolLM2-135M-Instruct, measured now: fp32 with Hugging Face `generate`, with our loop and with
the whole step in C++ (chapter 3.2 and section 3.2.1: the same tokens three ways), int8 weights on the C++ step
(chapter 3.4), and PyTorch's dynamic int8 (`torch.ao`, int8 weights *and* activations, chapter 3.1) on our loop.
Speed: 16 new tokens after one chat turn, new tokens ÷ the whole call, the five timed in turn, three rounds.
Quality: the 30 questions of `secbook.tasks`, each asked through the variant's own loop, one at a time (at most 24
new tokens); the three fp32 ways give the same tokens, so they are asked once.
"""),
    code(r"""
real, rtok = secbook.load("smollm2-135m-instruct")
ids, _ = ladder_prompt(rtok)
N = 16
MAX_LEN = max(ids.shape[1], max(chat_ids(rtok, q.prompt).shape[1] for q in tasks.QUESTIONS)) + 24
ways = {"fp32, HF generate": (real, lambda x, n: hf_generate(real, x, n)),
        "fp32, our loop": (real, FastGenerator(real, max_len=MAX_LEN).generate)}
if kernels.available():
    real8 = apply_transform(copy.deepcopy(real), "int8k")
    ways["fp32, C++ step"] = (real, FastGenerator(real, max_len=MAX_LEN, cpp=True).generate)
    ways["int8, C++ step"] = (real8, FastGenerator(real8, max_len=MAX_LEN, cpp=True).generate)
else:
    print("the C++ step is not available here:", kernels.unavailable_reason())
dyn8 = apply_transform(copy.deepcopy(real), "dyn8")
ways["dynamic int8, our loop"] = (dyn8, FastGenerator(dyn8, max_len=MAX_LEN).generate)
outs = {k: fn(ids, N)[:, ids.shape[1]:] for k, (_, fn) in ways.items()}   # also the warm-up
speeds = tok_s_in_turn({k: fn for k, (_, fn) in ways.items()}, ids, N, rounds=3, warmup=0)
fastest_fp32 = "fp32, C++ step" if "fp32, C++ step" in ways else "fp32, our loop"
asked = {k: tasks.score(None, rtok, max_new_tokens=24, generate=ways[k][1])
         for k in [fastest_fp32] + [k for k in ways if not k.startswith("fp32")]}
base = "fp32, HF generate"
live_real = pd.DataFrame([{
    "variant": k, "read_MB_per_token": decode_read_bytes(m) / 1e6,
    "tokens_per_s": pd.Series(speeds[k]).median(),
    "vs_hf_generate": compare(speeds, k, base).median if k != base else 1.0,
    "token_agreement": token_agreement(outs[k], outs[base]),
    "answered": int(asked[fastest_fp32 if k.startswith("fp32") else k].correct.sum())} for k, (m, _) in ways.items()])
live_real["model_bytes"] = live_real.read_MB_per_token * 1e6
live_real.drop(columns="model_bytes").round({"read_MB_per_token": 0, "tokens_per_s": 1, "vs_hf_generate": 2,
                                             "token_agreement": 3})
"""),
    code(r"""
fp32_rows = live_real[live_real.variant.str.startswith("fp32")]
guard((fp32_rows.token_agreement == 1).all(), "the fp32 ways produce the same greedy tokens",
      fp32_rows[["variant", "token_agreement"]].to_string())
lossy = live_real[~live_real.variant.str.startswith("fp32")]
ways_n = dict(enumerate(['no', 'one', 'two', 'three'])).get(len(fp32_rows), len(fp32_rows))
ways_n_zh = dict(enumerate(['零', '一', '两', '三'])).get(len(fp32_rows), len(fp32_rows))
say(f"The {ways_n} fp32 ways produced the same {N} greedy tokens, and answered {fp32_rows.answered.iloc[0]}/30. "
    + " ".join(f"{r.variant} kept {r.token_agreement:.0%} of the tokens and answered {r.answered}/30 "
               f"({r.answered - fp32_rows.answered.iloc[0]:+d}), reading {r.read_MB_per_token:,.0f} MB per token."
               for r in lossy.itertuples())
    + " One answer is about 3 percentage points; a difference of one or two answers is noise.",
    zh=f"{ways_n_zh}种 fp32 方式生成了相同的 {N} 个贪心词元，答对 {fp32_rows.answered.iloc[0]}/30。"
       + "".join(f"{r.variant} 保留了 {r.token_agreement:.0%} 的词元，答对 {r.answered}/30"
                 f"（{r.answered - fp32_rows.answered.iloc[0]:+d}），每个词元读取 {r.read_MB_per_token:,.0f} MB。"
                 for r in lossy.itertuples())
       + "答对一个问题约合 3 个百分点；相差一两个问题属于噪声。");
""", tags=("remove-input",)),
    md(r"""
## The tiny model on this machine

The tiny model was trained here in full precision, so its held-out perplexity is a sensitive quality measure
(chapter 3.1). Four variants through `secbook.recommend.sweep` — fp32, bf16, dynamic int8, 4-bit weights in groups
of 64 — decoded by Hugging Face `generate` and timed in turn, three rounds.
"""),
    code(r"""
model, tok = secbook.load("tiny")
configs = {"fp32": [], "bf16": [Dtype("bf16")], "dynamic int8": [DynamicInt8()], "int4 g64": [Quantize(4, 64)]}
live_tiny = sweep(model, tok, configs, prompt_len=16, new_tokens=16, repeats=1, ppl_tokens=PPL_TOKENS, rounds=3)
print("perplexity:", perplexity_protocol(PPL_TOKENS), "| speed: median of 3 rounds in turn")
live_tiny[["config", "model_bytes", "tokens_per_s", "perplexity", "ppl_change_pct", "agreement"]].round(3)
"""),
    md(r"""
## What the chapters recorded

The benchmark runs of chapters 3–7 write `data/results/*.csv`, each row with the machine it ran on and when.
`collect_results` reads them onto one footing. Quality is always relative to the same model on the same machine
in the same file — a perplexity change, or token agreement with the same model's fp32 output — and the tiny
model's perplexity change is never lent to another model.
"""),
    code(r"""
recorded = collect_results()
groups = (recorded.groupby(list(GROUP), sort=False)
          .agg(variants=("variant", "size"), recorded=("timestamp", lambda t: str(min(t))[:10]),
               perplexity_change=("ppl_change_pct", lambda q: int(q.notna().sum())),
               token_agreement=("token_agreement", lambda q: int(q.notna().sum()))))
groups
"""),
    md(r"""
## The frontiers

One panel per model and machine: the two measured on this page, then the recorded runs of the real model and the
tiny model that carry a quality measure (their speeds are decode tokens/s from the recorded protocol, this page's
new tokens ÷ the whole call). Speed is on a log scale; the marker's area follows the weight bytes (where recorded);
the points on the panel's Pareto frontier are blue, numbered and named in the box.
"""),
    code(r"""
live_real["pareto"] = pareto_front(live_real, quality="answered", higher_quality_is_better=True)
live_tiny["pareto"] = pareto_front(live_tiny)
recorded["pareto_ppl"] = pareto_front(recorded, by=GROUP)
recorded["pareto_agree"] = pareto_front(recorded, quality="token_agreement", by=GROUP, higher_quality_is_better=True)
here = secbook.describe_machine().split(" (")[0]
panels = [(f"smollm2-135m-instruct — {here}, this page", live_real, "variant", "answered", "questions answered (of 30)", "pareto"),
          (f"tiny — {here}, this page", live_tiny, "config", "ppl_change_pct", "perplexity change vs fp32 (%)", "pareto")]
for (src, mach, mod), g in recorded.groupby(list(GROUP), sort=False):
    if mod not in ("smollm2-135m-instruct", "tiny") or len(g) < 5:
        continue
    use_ppl = g.ppl_change_pct.notna().sum() >= 3
    if not use_ppl and g.token_agreement.notna().sum() < 3:
        continue
    panels.append((f"{mod} — {mach}, recorded {g.timestamp.min()[:10]} ({src})", g, "variant",
                   "ppl_change_pct" if use_ppl else "token_agreement",
                   "perplexity change vs fp32 (%)" if use_ppl else "token agreement with HF generate",
                   "pareto_ppl" if use_ppl else "pareto_agree"))
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
cols = 2
rows = -(-len(panels) // cols)
fig, axes = plt.subplots(rows, cols, figsize=(12, 4.6 * rows), squeeze=False)
for ax, (title, g, label, q, qlabel, front) in zip(axes.flat, panels):
    size = g["model_bytes"] if "model_bytes" in g else pd.Series(float("nan"), index=g.index)
    area = 30 + 250 * (size / size.max()).fillna(0.2)
    on = g[front].astype(bool)
    ax.scatter(g.tokens_per_s[~on], g[q][~on], s=area[~on], color="0.7", alpha=0.7, label="beaten by another point")
    ax.scatter(g.tokens_per_s[on], g[q][on], s=area[on], color="tab:blue", edgecolors="k", linewidths=1.2,
               label="on the Pareto frontier")
    names = []
    for i, (_, r) in enumerate(g[on].sort_values("tokens_per_s").iterrows(), 1):
        ax.annotate(str(i), (r.tokens_per_s, r[q]), fontsize=8, xytext=(5, 5), textcoords="offset points", weight="bold")
        names.append(f"{i}: {str(r[label])[:60]}")
    ax.text(0.02, 0.03, "\n".join(names), transform=ax.transAxes, fontsize=7, va="bottom",
            bbox=dict(facecolor="white", alpha=0.8, edgecolor="0.8"))
    ax.set_xscale("log"); ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter()); ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="tokens/s (log scale)", ylabel=qlabel); ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
plt.tight_layout(); plt.show()
"""),
    code(r"""
front_real = live_real[live_real.pareto]
off_real = live_real[~live_real.pareto]
def listed(items):  # names in a sentence, and the same list in a Chinese one
    return ", ".join(items)
def listed_zh(items):
    return "、".join(items)
say(f"On this page's real-model panel {len(front_real)} of {len(live_real)} ways are on the frontier: "
    + ", ".join(front_real.variant) + ". "
    + (f"Beaten on speed, answers and bytes at once: {listed(off_real.variant)}." if len(off_real) else
       "None is beaten on all three at once."),
    zh=f"在本页真实模型的子图上，{len(live_real)} 种方式中有 {len(front_real)} 种位于前沿上："
       + "、".join(front_real.variant) + "。"
       + (f"在速度、答对数和字节数上同时被胜过的有：{listed_zh(off_real.variant)}。" if len(off_real) else
          "没有哪一种在三项上同时被胜过。"));
""", tags=("remove-input",)),
    md(r"""
## The recommender

A frontier still leaves a choice: how much quality may a faster variant give up? `secbook.recommend` picks with a
stated rule — the fastest configuration within a quality budget (chapter 9 runs it on the tiny model's
perplexity). On the real model the budget is in answers: `fastest_within(table, "answered", 2)` keeps the ways
that answer at most two questions fewer than fp32 (the question set's noise) and sorts them fastest first.
"""),
    code(r"""
ok = fastest_within(live_real, "answered", 2)
strict = fastest_within(live_real, "answered", 0)
pick, exact = ok.iloc[0], strict.iloc[0]
say(f"**Recommendation for smollm2-135m-instruct on this machine:** {pick.variant}, {pick.tokens_per_s:.1f} "
    f"tokens/s ({times(pick.vs_hf_generate)} Hugging Face `generate`, timed in turn), {pick.answered}/30 answers, "
    f"{pick.read_MB_per_token:,.0f} MB per token. "
    + ("It is also the fastest with no answer lost." if exact.variant == pick.variant else
       f"With no answer allowed to be lost, the choice would be {exact.variant} ({exact.tokens_per_s:.1f} tokens/s, "
       f"{exact.answered}/30)."),
    zh=f"**对这台机器上的 smollm2-135m-instruct 的推荐：** {pick.variant}，{pick.tokens_per_s:.1f} 词元/秒"
       f"（是 Hugging Face `generate` 的 {times_zh(pick.vs_hf_generate)}，轮流计时），答对 {pick.answered}/30，"
       f"每个词元读取 {pick.read_MB_per_token:,.0f} MB。"
       + ("在一个问题都不许少答时，它同样是最快的。" if exact.variant == pick.variant else
          f"如果一个问题都不许少答，选择将是 {exact.variant}（{exact.tokens_per_s:.1f} 词元/秒，"
          f"{exact.answered}/30）。"));
"""),
    code(r"""
rec_real = recorded[(recorded.model == "smollm2-135m-instruct") & (recorded.source == "generate_ladder")]
same = {"int8, C++ step": "int8, whole decode step in C++", "fp32, C++ step": "fp32, whole decode step in C++",
        "fp32, our loop": "our loop fp32, fused weights"}
if len(rec_real) and pick.variant in same and (rec_real.variant == same[pick.variant]).any():
    hf = rec_real[rec_real.variant == "HF generate fp32 (baseline)"].tokens_per_s.iloc[0]
    then = rec_real[rec_real.variant == same[pick.variant]].tokens_per_s.iloc[0] / hf
    where = f"{rec_real.machine.iloc[0]}, {rec_real.timestamp.min()[:10]}"
    agree = 1 / 1.5 < then / pick.vs_hf_generate < 1.5
    same_cpu = rec_real.machine.iloc[0] == secbook.machine_info()["cpu"]
    why = ("the same kind of CPU, but another run (and a shared machine's load moves a run)" if same_cpu else
           f"another CPU ({rec_real.machine.iloc[0]} there, {secbook.machine_info()['cpu']} here: vector instructions "
           "and memory bandwidth decide how fast each way reads its weights)")
    why_zh = ("同一种 CPU，但是另一次运行（共享机器的负载会让一次运行的结果偏移）" if same_cpu else
              f"另一种 CPU（那里是 {rec_real.machine.iloc[0]}，这里是 {secbook.machine_info()['cpu']}：向量指令和"
              "内存带宽决定了每种方式读取权重的速度）")
    say(f"The recorded ladder ({where}) measured the same choice at {times(then)} `generate`; this page measured "
        f"{times(pick.vs_hf_generate)}. " + ("The two agree within a factor of 1.5." if agree else
        f"They differ by more than a factor of 1.5: {why}, and another protocol — the ladder times decode steps "
        f"after the prefill over 64 tokens, this page whole calls of {N} tokens, prefill included."),
        zh=f"记录下来的阶梯测试（{where}）测得同一个选择的速度是 `generate` 的 {times_zh(then)}；本页测得的是 "
           f"{times_zh(pick.vs_hf_generate)}。" + ("两者相差不到 1.5 倍，是一致的。" if agree else
           f"两者相差超过 1.5 倍：原因是{why_zh}，而且测量方案也不同——阶梯测试对 64 个词元的预填充之后的解码步"
           f"计时，本页则对 {N} 个词元的整个调用计时，包括预填充。"))
else:
    say("No recorded ladder row of the real model matches this choice; only this page's measurement stands.",
        zh="记录下来的阶梯测试中，没有哪一行真实模型的结果与这个选择对应；只有本页的测量结果可供参考。");
""", tags=("remove-input",)),
    md(r"""
## The source's claims, checked

Each row: what the source says, what this page measured or computed, and a verdict derived from those numbers
(the verdicts are computed, not typed). Recorded GPU numbers are labelled with their GPU and date.
"""),
    code(r"""
from secbook.roofline import predict
best = live_real.loc[live_real.tokens_per_s.idxmax()]
p1b = predict(1.24e9, "H100 SXM", bytes_per_weight="bf16")        # Llama-3.2-1B's size, ideal bound
n_w = sum(p.numel() for p in real.parameters())
q_layers = [m for m in (real8 if kernels.available() else dyn8).modules() if hasattr(m, "in_features")]
n_q_layers = sum(int(m.in_features) * int(m.out_features) for m in q_layers)   # int8 weights, from their shapes
n_fp_layers = sum(m.weight.numel() for m in real.modules() if isinstance(m, torch.nn.Linear))
c8 = compare(speeds, "int8, C++ step", "fp32, C++ step") if kernels.available() else None
cd = compare(speeds, "dynamic int8, our loop", "fp32, our loop")
gpu = secbook.hardware.recorded_gpu_results("cuda_graphs")
"""),
    code(r"""
rows = [("Inference in milliseconds or even microseconds",
         f"fastest real-model way here: {1e3 / best.tokens_per_s:.1f} ms per new token ({best.variant}); ideal H100 "
         f"bound for a 1 B-parameter bf16 model: {p1b.tpot_s * 1e3:.2f} ms per token",
         "milliseconds: yes; microseconds per token: no, not even the ideal bound" if p1b.tpot_s > 1e-4
         else "microseconds per token are within the ideal bound"),
        ("Quantization compresses 1 B parameters to 100 M",
         f"the int8 model multiplies {n_q_layers:,} weights in its int8 layers, the fp32 model {n_fp_layers:,} in "
         f"its Linear layers; the bytes per token fell to "
         f"{live_real.set_index('variant').read_MB_per_token.min() / live_real.read_MB_per_token.iloc[0]:.2f}x",
         "false as stated: quantization shrinks bytes, not the parameter count" if n_q_layers == n_fp_layers
         else "the parameter count changed"),
        ("Model compression reduces latency",
         (f"int8 on the C++ step: {c8.words()}; " if c8 else "") + f"dynamic int8 on our loop: {cd.words()}",
         "yes where a kernel reads the smaller weights faster; " + ("here: yes" if (c8 and c8.verdict == "faster")
         or cd.verdict == "faster" else "here: not clearly")),]
if gpu is not None and "replica:smollm2-135m" in set(gpu.model):
    g = gpu[(gpu.model == "replica:smollm2-135m")]
    fast = g.loc[g.tokens_per_s.idxmax()]
    from secbook.roofline import GPUS
    name = next((k for k in GPUS if k.split()[0] in fast.gpu), None)
    bound = predict(real.config, name, bytes_per_weight="bf16" if fast.dtype == "bfloat16" else "fp32") if name else None
    rows.append(("Hardware acceleration (GPU) speeds inference up",
                 f"recorded on {fast.gpu}: a model of this shape at {fast.tokens_per_s:,.0f} tokens/s ({fast.variant}, "
                 f"{fast.dtype}; recorded on {gpu.attrs.get('where', 'a GPU')})"
                 + (f"; its roofline bound there {bound.tokens_per_s:,.0f} tokens/s" if bound else "")
                 + f"; here on the CPU: {best.tokens_per_s:.0f} tokens/s ({best.variant})",
                 ("yes: " if fast.tokens_per_s > best.tokens_per_s else "not here: ")
                 + f"{times(fast.tokens_per_s / best.tokens_per_s)} this CPU's best"
                 + (f", yet {fast.tokens_per_s / bound.tokens_per_s:.0%} of the GPU's memory bound: a small model on "
                    "a GPU is limited by launches, not by memory" if bound else "")))
claims = pd.DataFrame(rows, columns=["claim", "measured", "verdict"])
claims.style.hide(axis="index").set_properties(**{"text-align": "left", "white-space": "normal"})
"""),
    md(r"""
The parameter count behind the second claim is exact (it does not depend on the machine):
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
print(f"smollm2-135m-instruct: {n_w:,} parameters; weights in its Linear layers: {n_fp_layers:,} in fp32, "
      f"{n_q_layers:,} after int8 quantization")
"""),
    code(r"""
say(f"On this page: the fastest way to run the real model took {1e3 / best.tokens_per_s:.1f} ms per new token — "
    f"milliseconds, not microseconds, as the ideal H100 bound for a 1-billion-parameter model "
    f"({p1b.tpot_s * 1e3:.2f} ms) also says. Quantization kept every one of the {n_fp_layers:,} weights and shrank "
    f"their bytes. Compression paid in speed where a kernel reads the smaller weights fast"
    + (f" (int8 on the C++ step: {c8.than} fp32 on it)" if c8 else "")
    + f"; on our loop, dynamic int8 was {cd.than} fp32 and answered "
    f"{live_real.set_index('variant').answered['dynamic int8, our loop']}/30 against "
    f"{fp32_rows.answered.iloc[0]}/30.",
    zh=f"本页的结果：运行真实模型最快的方式每个新词元用时 {1e3 / best.tokens_per_s:.1f} ms——是毫秒级，而不是微秒级，"
       f"1-billion 参数的模型在 H100 上的理想上限（{p1b.tpot_s * 1e3:.2f} ms）也是这样。量化保留了全部 "
       f"{n_fp_layers:,} 个权重，缩小的是它们的字节数。在内核能快速读取较小权重的地方，压缩换来了速度"
       + (f"（C++ 步上的 int8 与同一步上的 fp32 相比{c8.than_zh}）" if c8 else "")
       + f"；在我们的循环上，动态 int8 与 fp32 相比{cd.than_zh}，答对 "
       f"{live_real.set_index('variant').answered['dynamic int8, our loop']}/30，后者为 "
       f"{fp32_rows.answered.iloc[0]}/30。");
""", tags=("remove-input",)),
    summary(["Every way of running a model is a point of speed, quality and size; only the points on the Pareto "
             "frontier are worth choosing between.",
             "A frontier is drawn for one model on one machine with one protocol: speeds from two machines, or "
             "perplexities of two models, do not beat each other.",
             "A recommender is a rule on that frontier — the fastest within a stated quality budget — and its choice "
             "should be checked against recorded runs, with any disagreement explained.",
             "Of the source's claims checked here, milliseconds per token holds and microseconds does not; "
             "quantization shrinks the bytes, not the parameter count; compression lowers latency only where a kernel "
             "reads the smaller weights faster; and a small model on a GPU is held back by kernel launches, not by "
             "memory."]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
**The 1 B → 100 M claim, charitably.** How many bits per weight would let 1 billion parameters fit in the bytes of
100 million fp16 parameters? Check with `secbook.exercises.check_bits_for_claim(answer)`.
"""),
    code(r"""
from secbook import exercises
answer = None  # bits per weight
if answer is not None:
    exercises.check_bits_for_claim(answer)
"""),
    solution(r"""
exercises.check_bits_for_claim(100e6 * 16 / 1e9)
"""),
    exercise(2, r"""
**Read the frontier.** Which ways of running the real model on this page are *not* Pareto-optimal, and which way
dominates each of them (faster or as fast, at least as many answers, no more bytes)?
"""),
    solution(r"""
t = live_real.set_index("variant")
for v in t.index[~t.pareto]:
    by = [o for o in t.index if o != v and t.tokens_per_s[o] >= t.tokens_per_s[v] and t.answered[o] >= t.answered[v]
          and t.read_MB_per_token[o] <= t.read_MB_per_token[v]]
    print(f"{v}: dominated by {', '.join(by)}")
if t.pareto.all():
    say("every way is on the frontier in this run: each one is best at something",
        zh="这次运行中每种方式都在前沿上：每一种都在某一方面最好")
"""),
    exercise(3, r"""
**Add a point.** Add `"fast loop": [FastDecode()]` to the tiny model's `configs` (with `"fp32": []`) and run the
sweep again. Where does it land, and why is its perplexity change exactly zero?
"""),
    solution(r"""
two = sweep(model, tok, {"fp32": [], "fast loop": [FastDecode()]}, prompt_len=16, new_tokens=16, repeats=1,
            ppl_tokens=512, rounds=3)
print(two[["config", "tokens_per_s", "ppl_change_pct", "agreement"]].round(3).to_string(index=False))
c = compare(two.attrs["rounds"], "fast loop", "fp32")
say(c.words(), zh=c.words_zh())
say("Its perplexity change is exactly zero: the fast loop changes how tokens are produced, not the weights, so the "
    "model's probabilities — and its perplexity — are the same; its greedy tokens are the same too (agreement 1).",
    zh="它的困惑度变化恰好为零：快速循环改变的是词元的生成方式，而不是权重，所以模型的概率——以及它的困惑度——"
       "都不变；它的贪心词元也相同（一致率 1）。")
"""),
    exercise(4, r"""
**Your own budget.** A product team accepts losing at most one answer in 30 but needs at least 30 tokens/s. Which
way of running the real model on this machine meets both, if any? Write the rule with `fastest_within` and a
filter on speed.
"""),
    solution(r"""
fits = fastest_within(live_real, "answered", 1)
fits = fits[fits.tokens_per_s >= 30]
if len(fits):
    print(fits[["variant", "tokens_per_s", "answered"]].round(1).to_string(index=False))
else:
    say("none on this machine: relax a budget, or use faster hardware", zh="这台机器上没有：放宽某项预算，或者换用更快的硬件")
"""),
]
