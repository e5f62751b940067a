"""Chapter 8 — Summary: one Pareto frontier of the book's variants, and the source's claims checked."""
import sys

sys.path.insert(0, "tools")
from nb import code, md, solution  # noqa: E402

NAME = "08_summary"

CELLS = [
    md(r"""
# Summary: the balance of accuracy and efficiency, measured

The source ends by saying that fast inference is a balance between accuracy and efficiency. A balance can
be drawn: every variant this book measured is a point with a speed (decode tokens/s), a quality cost
(held-out perplexity change against its own fp32 baseline) and a size (stored bytes). The variants no
other variant beats on all three at once form the **Pareto frontier** — the only ones worth choosing
between. Then we check the source's claims one by one against the numbers.
"""),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import pandas as pd
import torch
import matplotlib.pyplot as plt
from myst_nb import glue
from secbook.recommend import collect_results, pareto_front, sweep
from secbook.pipeline import Dtype, DynamicInt8, Quantize, FastDecode
print("measured on:", machine)
"""),
    md(r"""
## What the other chapters recorded

The benchmark scripts of chapters 3–7 write `data/results/*.csv`, each row with the machine it ran on.
`collect_results` reads whatever is there and puts the columns on one footing; each point keeps its
source file and machine as a label.
"""),
    code(r"""
recorded = collect_results()
print(f"{len(recorded)} recorded variants from {recorded['source'].nunique()} CSV file(s):",
      ", ".join(sorted(recorded["source"].unique())) or "none")
recorded.groupby(["source", "machine"]).size().rename("variants").to_frame()
"""),
    md(r"""
## A few points measured live

So that this page stands on its own, four variants of the tiny model are measured now (a small sweep
with `secbook.recommend.sweep`: fp32, bf16, dynamic int8, 4-bit weights).
"""),
    code(r"""
model, tok = secbook.load("tiny")
configs = {"fp32": [], "bf16": [Dtype("bf16")], "dynamic int8": [DynamicInt8()], "int4 g64": [Quantize(4, 64)]}
live = sweep(model, tok, configs, prompt_len=16, new_tokens=16, repeats=2, ppl_tokens=512)
live[["config", "model_bytes", "tokens_per_s", "tpot_ms", "perplexity", "ppl_change_pct", "agreement"]].round(3)
"""),
    code(r"""
points = pd.concat([recorded, live.assign(source="live (this page)", model="tiny", variant=live["config"],
                                          machine=live["cpu"])[recorded.columns]], ignore_index=True)
points["pareto"] = pareto_front(points)
points.sort_values("tokens_per_s", ascending=False).round(3).head(20)
"""),
    md(r"""
## The frontier

Speed against quality cost; the marker area is proportional to the stored bytes; Pareto-optimal points
are outlined in black. Points from different machines and models are on one chart for the overview only:
compare speeds within one source.
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(8, 4.5))
for (src, mach), g in points.groupby(["source", "machine"]):
    ax.scatter(g["tokens_per_s"], g["ppl_change_pct"].fillna(0), s=20 + 200 * g["model_bytes"].fillna(0) / points["model_bytes"].max(),
               alpha=0.7, label=f"{src} ({mach[:25]})", edgecolors=["k" if p else "none" for p in g["pareto"]])
ax.set_xscale("log"); ax.set_xlabel("decode tokens/s (log)"); ax.set_ylabel("perplexity change vs fp32 (%)")
ax.axhline(0, color="0.6", lw=0.5); ax.legend(fontsize=7, loc="best")
plt.show()
"""),
    md(r"""
## The source's claims, checked

Each row: what the source says, what we measured or computed in this run, and a verdict derived from those
numbers (the verdicts are computed, not typed).
"""),
    code(r"""
from secbook.roofline import predict
fp = live.set_index("config")
tpot_ms = fp["tpot_ms"].min()
p1b = predict(1.24e9, "H100 SXM", bytes_per_weight="bf16")        # Llama-3.2-1B size, ideal bound
n_w = sum(p.numel() for p in model.parameters())
q4 = Quantize(4, 64).apply(__import__("copy").deepcopy(model))
n_q = sum(p.numel() for p in q4.parameters()) + sum(m.in_features * m.out_features for m in q4.modules() if hasattr(m, "qweight"))
speed_int4 = fp.loc["int4 g64", "tokens_per_s"] / fp.loc["fp32", "tokens_per_s"]
pred_tiny = predict(model, "A100 80GB SXM", bytes_per_weight="fp32")
"""),
    code(r"""
claims = pd.DataFrame([
    ("Inference in milliseconds or even microseconds",
     f"best TPOT here {tpot_ms:.1f} ms/token (tiny); ideal H100 bound for a 1 B bf16 model {p1b.tpot_s*1e3:.2f} ms/token",
     "milliseconds: yes; microseconds per token: no (not even the ideal bound)" if p1b.tpot_s > 1e-4 else "microseconds reachable"),
    ("Quantization compresses 1 B parameters to 100 M",
     f"int4 keeps all {n_q:,} of {n_w:,} weights; bytes ×{fp.loc['int4 g64', 'size_vs_fp32']:.2f}",
     "false as stated: quantization shrinks bytes, not the parameter count" if n_q == n_w else "parameter count changed"),
    ("Model compression reduces latency",
     f"int4 g64 decodes at ×{speed_int4:.2f} the fp32 speed here (eager, no fused kernel)",
     "not by itself: it needs a fast kernel" if speed_int4 < 1.1 else "yes, here"),
    ("Hardware acceleration (GPU) speeds inference up",
     f"tiny fp32 here {fp.loc['fp32', 'tokens_per_s']:.0f} tok/s; A100 roofline bound {pred_tiny.tokens_per_s:,.0f} tok/s",
     "yes for the memory-bound decode; small models hit overhead first" if pred_tiny.tokens_per_s > fp.loc['fp32', 'tokens_per_s'] else "no"),
], columns=["claim", "measured in this run", "verdict"])
claims.style.hide(axis="index")
"""),
    code(r"""
glue("ch8_tpot", f"{tpot_ms:.1f}", display=False)
glue("ch8_h100", f"{p1b.tpot_s * 1e3:.2f}", display=False)
glue("ch8_int4_size", f"{fp.loc['int4 g64', 'size_vs_fp32']:.2f}", display=False)
glue("ch8_n_pareto", int(points["pareto"].sum()), display=False)
"""),
    md(r"""
In this run the best time per output token of the tiny model was {glue:text}`ch8_tpot` ms, and even the
ideal roofline bound for a 1-billion-parameter bf16 model on an H100 is {glue:text}`ch8_h100` ms per token:
"microsecond inference" is true of single kernels, not of generating text. Quantization stored the tiny
model in {glue:text}`ch8_int4_size`× its fp32 bytes without removing a single parameter, and
{glue:text}`ch8_n_pareto` of the points above are Pareto-optimal.

The exact parameter counts behind the second claim:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
print(f"fp32 model weights: {n_w:,}; after int4 quantization: {n_q:,} (same count, {secbook.model_bytes(q4):,} bytes)")
"""),
    md(r"""
## Exercises

1. **The 1 B → 100 M claim, charitably.** How many bits per weight would let 1 billion parameters fit in
   the bytes of 100 million fp16 parameters? Check with `secbook.exercises.check_bits_for_claim(answer)`.
2. **Read the frontier.** Which live variant is *not* Pareto-optimal, and which variant dominates it?
3. **Add a point.** Add `"fast loop": [FastDecode()]` to `configs` and rerun: where does it land, and why is
   its perplexity change exactly zero?
"""),
    code(r"""
from secbook import exercises
answer = None  # bits per weight
if answer is not None:
    exercises.check_bits_for_claim(answer)
"""),
    solution(r"""
exercises.check_bits_for_claim(100e6 * 16 / 1e9)
live_pts = points[points["source"] == "live (this page)"]
print(live_pts[["variant", "tokens_per_s", "ppl_change_pct", "model_bytes", "pareto"]].round(2).to_string(index=False))
# 3: FastDecode changes how tokens are produced, not the weights: same logits, same perplexity.
"""),
]
