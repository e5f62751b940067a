"""Chapter 9 — FAQ: which technique should I pick? Answered by secbook.recommend and our measurements."""
import sys

sys.path.insert(0, "tools")
from nb import code, md, solution  # noqa: E402

NAME = "09_faq"

CELLS = [
    md(r"""
# FAQ

The source ends with three questions. We add the one every reader asks first, and answer all four with
measurements made while this page was built.
"""),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import pandas as pd
import torch
import matplotlib.pyplot as plt
from myst_nb import glue
from secbook.pipeline import Dtype, DynamicInt8, Quantize, FastDecode
print("measured on:", machine)
"""),
    md(r"""
## Which technique should I pick?

It depends on three things: your hardware, how long a reply may take, and how much quality you may lose.
`secbook.recommend(model, hardware, latency_budget, quality_budget)` turns that into a measurement: it
builds a handful of configurations with the pipeline steps of chapter 2, measures each on this machine
(reply latency, decode tokens/s, stored bytes, held-out perplexity) and returns the fastest one that meets
both budgets, with the whole table as evidence. Here: a reply of 8 tokens within 2 seconds, at most +2 %
perplexity.
"""),
    code(r"""
model, tok = secbook.load("tiny")
configs = {"fp32": [], "bf16": [Dtype("bf16")], "dynamic int8": [DynamicInt8()],
           "int4 g64": [Quantize(4, 64)], "fp32 + fast loop": [FastDecode()]}
FAST = dict(prompt_len=16, new_tokens=8, repeats=2, ppl_tokens=256)
rec = secbook.recommend((model, tok), "this machine", latency_budget=2.0, quality_budget=0.02, configs=configs, **FAST)
print(rec)
"""),
    code(r"""
cols = ["config", "latency_s", "tokens_per_s", "model_bytes", "perplexity", "ppl_change_pct", "meets_latency", "meets_quality"]
rec.table[cols].round(3)
"""),
    code(r"""
t = rec.table.set_index("config")
glue("faq_best", rec.best["config"] if rec.best else "none", display=False)
glue("faq_fast_speedup", f"{t.loc['fp32 + fast loop', 'tokens_per_s'] / t.loc['fp32', 'tokens_per_s']:.2f}", display=False)
glue("faq_bf16_ppl", f"{t.loc['bf16', 'ppl_change_pct']:+.2f}", display=False)
"""),
    md(r"""
On this machine the answer was **{glue:text}`faq_best`**. Change the budgets and the answer changes; that is
the point — there is no best technique, only a best one for a budget.

## How do I balance accuracy and speed?

Fix the quality you can accept first, then take the fastest configuration within it. The chart plots every
configuration above: the ones left of the dashed line (the quality budget) are admissible, and the
recommendation is the rightmost of them. bf16 changed perplexity by {glue:text}`faq_bf16_ppl` % here:
lowering precision of the activations is nearly free, while fewer weight bits cost more quality.
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.scatter(rec.table["ppl_change_pct"], rec.table["tokens_per_s"])
for _, r in rec.table.iterrows():
    ax.annotate(r["config"], (r["ppl_change_pct"], r["tokens_per_s"]), fontsize=8)
ax.axvline(2.0, ls="--", color="0.5"); ax.set_xlabel("perplexity change vs fp32 (%)"); ax.set_ylabel("decode tokens/s")
plt.show()
"""),
    md(r"""
## Is latency optimization only for large models?

No. A small model is not limited by reading its weights but by the fixed work around each token (Python,
the generation loop, kernel launches). Our fast decode loop changes nothing in the model, only that
overhead, and it sped the tiny model up by {glue:text}`faq_fast_speedup`× in this run. Large models gain
more from compression (their decode is bound by weight bytes, chapter 4), small ones from removing
overhead — both need latency work.

## What hardware should I choose?

The same recommendation for GPUs this machine does not have: their speed is *predicted* with the roofline
latency model of chapter 4 (an ideal lower bound from bandwidth and FLOP/s, with the configuration's real
bytes per weight), while quality is still measured here. The table says which numbers are predictions.
"""),
    code(r"""
gpu_configs = {k: configs[k] for k in ("fp32", "bf16", "int4 g64")}
rows = []
for hw in ("T4", "H100 SXM"):
    g = secbook.recommend((model, tok), hw, latency_budget=2.0, quality_budget=0.02, configs=gpu_configs, **FAST)
    rows.append(g.table.assign(hardware=hw)[["hardware", "config", "tokens_per_s", "speed_source"]])
hw_table = pd.concat(rows + [rec.table.assign(hardware="this machine")[["hardware", "config", "tokens_per_s", "speed_source"]]])
hw_table.pivot(index="config", columns="hardware", values="tokens_per_s").round(0)
"""),
    md(r"""
For the tiny model every GPU's bound is far beyond anything a framework reaches (per-token overhead takes
over long before), so for small models the choice of hardware matters less than the software around it. For
a billion-parameter model the bound is what you get close to, and memory bandwidth decides: choose the GPU
with the most GB/s your budget allows, with enough memory to hold the weights in the format you picked.

The configuration names are fixed by this page, so this cell's output is deterministic:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
print(sorted(rec.table["config"]))
print("speed sources:", sorted(set(s.split(" (")[0] for s in hw_table["speed_source"])))
"""),
    md(r"""
## Exercises

1. **Budget arithmetic.** A voice assistant must speak its 64-token answer within 1 second, and the first
   token takes 0.2 s. What decode speed (tokens/s) does it need? Check with
   `secbook.exercises.check_needed_speed(answer)`.
2. **Tighter quality.** Rerun `secbook.recommend` with `quality_budget=0.0`. Which configurations remain?
3. **Size first.** Use `objective="size"` with the budgets above: which configuration does it pick, and what
   speed does it give up?
"""),
    code(r"""
from secbook import exercises
answer = None  # tokens/s
if answer is not None:
    exercises.check_needed_speed(answer)
"""),
    solution(r"""
exercises.check_needed_speed(63 / 0.8)
# 2 and 3 reuse the measured table instead of measuring again:
t = rec.table
print("within +0 %:", list(t.loc[t["ppl_change_pct"] <= 0, "config"]))
ok = t[t["meets_both"]]
print("smallest within budget:", ok.sort_values("model_bytes")["config"].iloc[0] if len(ok) else "none")
"""),
]
