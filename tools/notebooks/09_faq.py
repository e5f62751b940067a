"""Chapter 9 — FAQ: which technique should I pick? Answered by secbook.recommend and our measurements."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

NAME = "09_faq"

CELLS = [
    md(r"""
# FAQ

The source ends with three questions. We add the one every reader asks first, and answer all four with
measurements made when this page is built, on the book's tiny model and on a real chat model,
SmolLM2-135M-Instruct {cite}`allal2025smollm2`.
"""),
    opening(["choose a configuration from measurements and budgets instead of from a rule of thumb",
             "read a speed-quality table: budgets first, then the fastest configuration within them",
             "tell which speed-ups help small models and which help large ones",
             "compare a hardware bound with a measurement only for the same model on the same machine"],
            ["chapters 3 (compression, algorithms, hardware) and 4 (the latency model)"], 20),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import copy
import pandas as pd
import torch
import matplotlib.pyplot as plt
from secbook import roofline
from secbook.claims import compare, guard, say, times, times_zh
from secbook.measure import hf_generate_fn, perplexity_protocol, prompt_ids, tok_s_in_turn
from secbook.pipeline import Dtype, DynamicInt8, FastDecode, Quantize, apply_steps, generate_fn_for
print("measured on:", machine)
"""),
    md(r"""
## Which technique should I pick?

It depends on three things: your hardware, how long a reply may take, and how much quality you may lose.
`secbook.recommend(model, hardware, latency_budget, quality_budget)` turns that into a measurement: it
builds a handful of configurations with the pipeline steps of chapter 2, measures each on this machine
(reply latency, decode tokens/s, stored bytes, held-out perplexity) and returns the fastest one that meets
both budgets, with the whole table as evidence. First the tiny model: a reply of 8 tokens within 2 seconds, at
most +2 % perplexity (scored on the first 1,024 held-out tokens to keep this page quick; the protocol is printed
with the table, and perplexities are compared only within it).
"""),
    code(r"""
model, tok = secbook.load("tiny")
configs = {"fp32": [], "bf16": [Dtype("bf16")], "dynamic int8": [DynamicInt8()],
           "int4 g64": [Quantize(4, 64)], "fp32 + fast loop": [FastDecode()]}
FAST = dict(prompt_len=16, new_tokens=8, repeats=2)
TINY_PPL = 1024
rec = secbook.recommend((model, tok), "this machine", latency_budget=2.0, quality_budget=0.02, configs=configs,
                        ppl_tokens=TINY_PPL, **FAST)
say(rec.message, zh=rec.message_zh);
"""),
    code(r"""
cols = ["config", "latency_s", "tokens_per_s", "model_bytes", "perplexity", "ppl_change_pct", "meets_latency", "meets_quality"]
print(f"tiny model; {perplexity_protocol(TINY_PPL)}; measured on {secbook.describe_machine()}")
rec.table[cols].round(3)
"""),
    md(r"""
Now the real model, in the configurations that fit it on a CPU. bf16 enters the sweep only where this CPU has a
fast bf16 path (its bf16 matrix product measured faster than fp32, chapter 4): elsewhere PyTorch emulates bf16
and a bf16 model would be far slower than the fp32 one, for no gain. Budget: an 8-token reply within 2 seconds,
at most +2 % perplexity, on a shorter protocol still (printed with the table).
Beside perplexity, fp32 and dynamic int8 answer the book's 30-question set (`secbook.tasks`: facts, arithmetic,
Python; greedy, checked by substring) — does the model still *answer*? (Scoring is the slowest measurement on
this page, so it is done for these two only: the reference and the one that rounds its weights hardest.)
"""),
    code(r"""
real, rtok = secbook.load("smollm2-135m-instruct")
print("real model:", secbook.pretrained.PROVENANCE)
cpu = roofline.measure_machine(device="cpu")
real_configs = {"fp32": [], "dynamic int8": [DynamicInt8()]}  # the fast loop is timed in turn further down
if cpu.fp16_flops > cpu.fp32_flops:
    real_configs["bf16"] = [Dtype("bf16")]
REAL_PPL = 512
real_rec = secbook.recommend((real, rtok), "this machine", latency_budget=2.0, quality_budget=0.02,
                             configs=real_configs, prompt_len=16, new_tokens=8, repeats=2, ppl_tokens=REAL_PPL)
say(real_rec.message, zh=real_rec.message_zh);
"""),
    code(r"""
acc = {}
for name in ("fp32", "dynamic int8"):  # a question set costs as much as the rest of this section: two configurations
    m = apply_steps(copy.deepcopy(real), rtok, real_configs[name]) if real_configs[name] else real
    acc[name] = secbook.tasks.accuracy(m, rtok)
    del m
real_table = real_rec.table.assign(task_accuracy=real_rec.table["config"].map(acc))
print(f"smollm2-135m-instruct; {perplexity_protocol(REAL_PPL)}; task accuracy on {len(secbook.tasks.QUESTIONS)} questions; "
      f"measured on {secbook.describe_machine()}")
real_table[cols + ["task_accuracy"]].round(3)
"""),
    code(r"""
def verdict(r, label):
    return (f"for the {label} the answer was **{r.best['config']}**" if r.best is not None
            else f"for the {label} no configuration met both budgets")
def verdict_zh(r, label):
    label = {"tiny model": "小模型", "real model": "真实模型"}[label]
    return (f"{label}的答案是 **{r.best['config']}**" if r.best is not None
            else f"{label}没有哪个配置能同时满足两项预算")
n = len(secbook.tasks.QUESTIONS)
fp = acc["fp32"]
say(f"On this machine, {verdict(rec, 'tiny model')}; {verdict(real_rec, 'real model')}. "
    f"The real model answered {round(fp * n)} of {n} questions in fp32; "
    + ", ".join(f"{k} {round(v * n)}" for k, v in acc.items() if k != "fp32")
    + " (one question is 3 percentage points: a difference of one or two answers is noise).",
    zh=f"在这台机器上，{verdict_zh(rec, 'tiny model')}；{verdict_zh(real_rec, 'real model')}。"
       f"真实模型在 fp32 下答对了 {n} 个问题中的 {round(fp * n)} 个；"
       + "，".join(f"{k} {round(v * n)}" for k, v in acc.items() if k != "fp32")
       + "（一个问题约合 3 个百分点：相差一两个问题属于噪声）。");
""", tags=("remove-input",)),
    md(r"""
Change the budgets and the answer changes; that is the point — there is no best technique, only a best one for a
budget, a model and a machine.

## How do I balance accuracy and speed?

Fix the quality you can accept first, then take the fastest configuration within it. The chart plots every
configuration above, one panel per model (their perplexities are on different protocols and different models, so
they are never put on one axis): the ones left of the dashed line (the quality budget) are admissible, and the
recommendation is the fastest of them.
"""),
    code(r"""
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, (label, table) in zip(axes, (("tiny model", rec.table), ("smollm2-135m-instruct", real_table))):
    ax.scatter(table["ppl_change_pct"], table["tokens_per_s"])
    for _, r in table.iterrows():
        ax.annotate(r["config"], (r["ppl_change_pct"], r["tokens_per_s"]), fontsize=8)
    ax.axvline(2.0, ls="--", color="0.5")
    ax.set(xlabel="perplexity change vs its own fp32 (%)", ylabel="decode tokens/s", title=label)
fig.suptitle("measured on: " + secbook.describe_machine(), fontsize=8)
plt.tight_layout(); plt.show()
"""),
    code(r"""
t = rec.table.set_index("config")
wb = "int4 g64"
fewest_bits_lost_most = t.loc[wb, 'ppl_change_pct'] > max(t.loc['bf16', 'ppl_change_pct'],
                                                          t.loc['dynamic int8', 'ppl_change_pct'])
say(f"On the tiny model, bf16 changed perplexity by {t.loc['bf16', 'ppl_change_pct']:+.2f} %, dynamic int8 by "
    f"{t.loc['dynamic int8', 'ppl_change_pct']:+.2f} % and 4-bit weights by {t.loc[wb, 'ppl_change_pct']:+.2f} %"
    + (": the fewer bits, the more quality lost." if fewest_bits_lost_most else "."),
    zh=f"在小模型上，bf16 使困惑度变化了 {t.loc['bf16', 'ppl_change_pct']:+.2f} %，动态 int8 为 "
       f"{t.loc['dynamic int8', 'ppl_change_pct']:+.2f} %，4 位权重为 {t.loc[wb, 'ppl_change_pct']:+.2f} %"
       + ("：比特越少，质量损失越多。" if fewest_bits_lost_most else "。"));
""", tags=("remove-input",)),
    md(r"""
## Is latency optimization only for large models?

No — but different speed-ups help different sizes. A small model is not limited by reading its weights but by
the fixed work around each token (Python, the generation loop, kernel launches); a large one by the bytes of its
weights (chapter 4). Two speed-ups that attack one each: the fast decode loop (the same model and the same greedy
tokens, less work per token) and dynamic int8 (a quarter of the weight bytes, more arithmetic per byte). Each model
is timed with Hugging Face `generate` in fp32, with `generate` on dynamic int8, and with the fast loop, in turn
(8 new tokens, rounds A, B, C, A, B, C, …), and the fast loop's tokens must equal `generate`'s:
"""),
    code(r"""
def variants(m, t):
    m8 = apply_steps(copy.deepcopy(m), t, [DynamicInt8()])
    fast = apply_steps(copy.deepcopy(m), t, [FastDecode()])
    return {"HF generate fp32": hf_generate_fn(m), "HF generate dynamic int8": hf_generate_fn(m8),
            "fast loop fp32": generate_fn_for(fast, 16 + N)}
N = 8  # new tokens per call
in_turn = {}
for label, (m, t) in {"tiny": (model, tok), "smollm2-135m-instruct": (real, rtok)}.items():
    fns = variants(m, t)
    ids = prompt_ids(t, 16)
    ref = fns["HF generate fp32"](ids, N)
    guard(torch.equal(fns["fast loop fp32"](ids, N)[:, -N:], ref[:, -N:]),
          f"the fast loop gives the same greedy tokens as generate ({label})")
    in_turn[label] = tok_s_in_turn(fns, ids, N, rounds=3)
rows = [{"model": label, "variant": v, "median tokens/s": pd.Series(s).median(), "rounds": len(s)}
        for label, speeds in in_turn.items() for v, s in speeds.items()]
print("measured on:", secbook.describe_machine())
pd.DataFrame(rows).pivot(index="variant", columns="model", values="median tokens/s").round(1)
"""),
    code(r"""
lines, lines_zh = [], []
for label, speeds in in_turn.items():
    fast = compare(speeds, "fast loop fp32", "HF generate fp32")
    q = compare(speeds, "HF generate dynamic int8", "HF generate fp32")
    lines.append(f"**{label}**: the fast loop {times(fast.median)} ({fast.verdict}), dynamic int8 "
                 f"{times(q.median)} ({q.verdict}) against `generate` in fp32")
    lines_zh.append(f"**{label}**：与 fp32 的 `generate` 相比，快速循环为 {times_zh(fast.median)}（{fast.verdict_zh}），"
                    f"动态 int8 为 {times_zh(q.median)}（{q.verdict_zh}）")
head = {label: compare(s, "fast loop fp32", "HF generate dynamic int8") for label, s in in_turn.items()}
say("; ".join(lines) + ". Head to head, in the same rounds: "
    + "; ".join(f"on the {label} model the fast loop was {c.verdict} than dynamic int8 ({times(c.median)})"
                if c.verdict not in ("about as fast",) else f"on the {label} model the two were about as fast"
                for label, c in head.items())
    + ". Where the rounds disagree, this machine's noise is larger than the difference; the mechanism says which "
      "should win as a model grows.",
    zh="；".join(lines_zh) + "。在同样的轮次中直接对比："
       + "；".join(f"在 {label} 模型上，快速循环与动态 int8 相比{c.verdict_zh}（{times_zh(c.median)}）"
                  if c.verdict not in ("about as fast",) else f"在 {label} 模型上，两者速度相当"
                  for label, c in head.items())
       + "。各轮结果不一致之处，说明这台机器的噪声比差异还大；随着模型变大哪一个应当胜出，要由背后的机制来判断。");
""", tags=("remove-input",)),
    md(r"""
Both kinds of model need latency work; what kind depends on where their time goes.

## What hardware should I choose?

A roofline bound (chapter 4) says what a GPU's datasheet allows a model at batch 1: its weight bytes over the
memory bandwidth. Here are those bounds for the two models, on three GPUs — predictions, not measurements, for
these two models only:
"""),
    code(r"""
shapes = {"tiny": roofline.to_shape(model), "smollm2-135m-instruct": roofline.to_shape(real)}
bounds = pd.DataFrame({gpu: {f"{name} {fmt}": predict_tok_s for name, s in shapes.items() for fmt in ("fp32", "bf16")
                             for predict_tok_s in [roofline.predict(s, gpu, prompt_len=32, new_tokens=64, bytes_per_weight=fmt).tokens_per_s]}
                       for gpu in ("T4", "H100 SXM", "H200")})
print("predicted decode bound, tokens/s at batch 1 (datasheet bandwidth; an upper bound on speed)")
bounds.round(0)
"""),
    md(r"""
A bound is only worth comparing with a measurement of the same model on the same machine. The GPU measurements of
this book were recorded on one GPU (named in the table) for the tiny model and for a random-weight replica with the
real model's exact shape (speed does not depend on the weights' values): eager PyTorch, and the same step replayed
as a CUDA graph or compiled (chapter 3.3). Beside them, the same two models measured now on this machine, against
this machine's measured bandwidth:
"""),
    code(r"""
g = secbook.load_results("hardware_cuda_graphs_cuda")
g["model"] = g["model"].replace({"replica:smollm2-135m": "smollm2-135m-instruct"})
gpu = g["gpu"].iloc[0]
sheet = roofline.GPUS[gpu.replace("NVIDIA ", "")]
g["fmt"] = g["dtype"].map({"float32": "fp32", "bfloat16": "bf16"})
g["bound_tok_s"] = [roofline.predict(shapes[m], sheet, prompt_len=32, new_tokens=64, bytes_per_weight=f).tokens_per_s
                    for m, f in zip(g["model"], g["fmt"])]
g["of_bound"] = g["tokens_per_s"] / g["bound_tok_s"]
g["us_per_op"] = (1e3 * g["ms_per_token"] / g["ops_per_step"]).where(g["variant"].str.contains("eager"))  # eager op count
g["machine"] = f"{gpu} (recorded {g['timestamp'].iloc[0][:10]})"
here = []
for label, table in (("tiny", rec.table), ("smollm2-135m-instruct", real_table)):
    r = table.set_index("config").loc["fp32"]
    bound = roofline.predict(shapes[label], cpu, prompt_len=32, new_tokens=64, bytes_per_weight="fp32").tokens_per_s
    here.append({"machine": "this CPU (measured now)", "model": label, "variant": "HF generate, fp32", "fmt": "fp32",
                 "tokens_per_s": r["tokens_per_s"], "bound_tok_s": bound, "of_bound": r["tokens_per_s"] / bound})
like = pd.concat([g[["machine", "model", "variant", "fmt", "tokens_per_s", "bound_tok_s", "of_bound", "us_per_op"]],
                  pd.DataFrame(here)], ignore_index=True)
like.round(4)
"""),
    code(r"""
def best(model_name, fmt="bf16"):
    d = g[(g.model == model_name) & (g.fmt == fmt)]
    return d.loc[d.tokens_per_s.idxmax()], d[d.variant.str.contains("eager")].iloc[0]
parts, parts_zh = [], []
for name in ("tiny", "smollm2-135m-instruct"):
    top, eager = best(name)
    parts.append(f"the {name} model's bf16 bound there is {top.bound_tok_s:,.0f} tokens/s; eager PyTorch reached "
                 f"{eager.tokens_per_s:,.0f} ({eager.of_bound:.1%} of it), the best recorded step, *{top.variant}*, "
                 f"{top.tokens_per_s:,.0f} ({top.of_bound:.1%})")
    parts_zh.append(f"{name} 模型的 bf16 上限是 {top.bound_tok_s:,.0f} 词元/秒；PyTorch 即时执行模式达到 "
                    f"{eager.tokens_per_s:,.0f}（上限的 {eager.of_bound:.1%}），记录中最好的步 *{top.variant}* 达到 "
                    f"{top.tokens_per_s:,.0f}（{top.of_bound:.1%}）")
t_eager = best("tiny")[1]
guard(g[g.model == "tiny"].of_bound.max() < 0.5, "on the recorded GPU the tiny model stays far below its bound",
      f"best {g[g.model == 'tiny'].of_bound.max():.1%} of the bound")
say(f"On the {gpu}, " + "; ".join(parts) + f". Eager, the tiny model's step was {t_eager.ops_per_step} operations in "
    f"{t_eager.ms_per_token:.2f} ms, {t_eager.us_per_op:.1f} µs each, while reading its weights at the datasheet's "
    f"bandwidth takes {1e6 / t_eager.bound_tok_s:.1f} µs in all: the time goes to the number of operations, not to "
    "the bytes. On this CPU, the fp32 models reached "
    + " and ".join(f"{h['of_bound']:.0%} of their bound ({h['model']})" for h in here) + ".",
    zh=f"在 {gpu} 上，" + "；".join(parts_zh) + f"。在即时执行模式下，小模型的一步有 {t_eager.ops_per_step} 个运算，"
       f"用时 {t_eager.ms_per_token:.2f} ms，每个 {t_eager.us_per_op:.1f} µs；而按规格表上的带宽读取它的权重总共只需 "
       f"{1e6 / t_eager.bound_tok_s:.1f} µs：时间花在运算的数量上，而不是字节上。在这块 CPU 上，fp32 模型分别达到了"
       + "和".join(f"其上限的 {h['of_bound']:.0%}（{h['model']}）" for h in here) + "。");
""", tags=("remove-input",)),
    md(r"""
So for small models the choice of hardware matters less than the software around it: a faster GPU raises a bound
that the per-operation overhead never lets them approach, while graphs and compilation (fewer, fused launches)
move them most. For a billion-parameter model the bound is what a good loop gets close to (chapter 4 shows the
recorded 1B ladder against its bound), and memory bandwidth decides: choose the GPU with the most GB/s your budget
allows, with enough memory to hold the weights in the format you picked.

The configuration names are fixed by this page, so this cell's output is deterministic:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
print(sorted(rec.table["config"]))
print(sorted(set(real_table["config"]) - {"bf16"}))  # bf16 joins only on a CPU with a fast bf16 path
"""),
    summary([
        "There is no best technique, only a best configuration for a model, a machine and a budget: measure the "
        "candidates and take the fastest within the budget.",
        "Fix the quality you can accept first (perplexity within one protocol, and whether the model still answers "
        "its questions), then maximise speed.",
        "Small models are bound by per-token overhead and gain most from a leaner loop, graphs and compilation; "
        "large models are bound by weight bytes and gain from fewer bytes per weight.",
        "Compare a roofline bound only with a measurement of the same model on the same machine; for a small "
        "model, a faster GPU raises a bound it never approaches.",
    ]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
*Budget arithmetic.* A voice assistant must speak its 64-token answer within 1 second, and the first token takes
0.2 s. What decode speed (tokens/s) does it need? Check with `secbook.exercises.check_needed_speed(answer)`.
"""),
    solution(r"""
from secbook import exercises
exercises.check_needed_speed(63 / 0.8)  # the remaining 63 tokens share the 0.8 s after the first
"""),
    exercise(2, r"""
*Tighter quality.* Which of the tiny model's configurations remain with `quality_budget=0.0` (no perplexity
increase at all)? Use `choose` from the module `secbook.recommend` (`from secbook.recommend import choose`) on the
measured table instead of measuring again.
"""),
    solution(r"""
from secbook.recommend import choose
table0, fits0 = choose(rec.table, latency_budget=2.0, quality_budget=0.0)
print("within +0 %:", list(fits0["config"]))
say("Only configurations that leave the weights exactly as they are (fp32, the fast loop on fp32) can promise "
    "no change at all; a lower-precision one passes only if its rounding happened to lower the perplexity.",
    zh="只有让权重保持原样的配置（fp32，以及 fp32 上的快速循环）才能保证完全不变；较低精度的配置只有在其舍入"
       "恰好降低了困惑度时才能通过。")
"""),
    exercise(3, r"""
*Size first.* Use `objective="size"` with the budgets above (again with `choose`): which configuration does it pick
for each model, and what speed does it give up against the fastest one within budget?
"""),
    solution(r"""
for label, table in (("tiny", rec.table), ("smollm2-135m-instruct", real_table)):
    _, by_size = choose(table, latency_budget=2.0, quality_budget=0.02, objective="size")
    _, by_speed = choose(table, latency_budget=2.0, quality_budget=0.02, objective="speed")
    if by_size.empty:
        print(f"{label}: nothing meets the budgets")
        continue
    s, f = by_size.iloc[0], by_speed.iloc[0]
    print(f"{label}: smallest within budget {s['config']} ({s['model_bytes'] / 1e6:.1f} MB, {s['tokens_per_s']:.1f} "
          f"tokens/s); fastest {f['config']} ({f['tokens_per_s']:.1f} tokens/s): {times(f['tokens_per_s'] / s['tokens_per_s'])} "
          "given up for the size")
"""),
    exercise(4, r"""
*A voice assistant on this machine.* Which configuration of the real model would you deploy for a voice assistant
that must produce a 12-token first sentence within 0.6 s of LLM time, losing at most 5 % perplexity? Use the
measured TTFT and TPOT of the real model's table.
"""),
    solution(r"""
rt = real_table.copy()
rt["first_sentence_s"] = (rt["ttft_ms"] + 11 * rt["tpot_ms"]) / 1e3
ok = rt[(rt["first_sentence_s"] <= 0.6) & (rt["ppl_change_pct"] <= 5)]
print(rt[["config", "ttft_ms", "tpot_ms", "first_sentence_s", "ppl_change_pct", "task_accuracy"]].round(3))
if len(ok):
    print("deploy:", ok.sort_values("first_sentence_s")["config"].iloc[0])
else:
    say("deploy: none of them on this machine — a smaller model, a shorter first sentence or faster hardware",
        zh="部署：这台机器上一个都不行——需要更小的模型、更短的第一句话，或者更快的硬件")
"""),
]
