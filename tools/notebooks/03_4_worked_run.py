"""Chapter 3.4 — the source's step list as one worked, measured run on the tiny model."""
import sys

sys.path.insert(0, "tools")
from nb import code, md, solution  # noqa: E402

NAME = "03_4_worked_run"

CELLS = [
    md(r"""
# A worked run: choose, compress, optimize, accelerate, evaluate

The source closes its core-algorithms part with a recipe in five steps: **choose a model**, **compress**
it, **optimize** the inference algorithm, **accelerate** it on the hardware, and **evaluate** the result.
This section follows the recipe once, on the book's tiny model, with every step measured on the machine
that builds the page — so each step's effect is a number, not a promise. Chapters 3.1–3.3 explain each
technique; here we only chain them.
"""),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import copy
import pandas as pd
import torch
import matplotlib.pyplot as plt
from myst_nb import glue
from secbook.pipeline import Quantize, FastDecode, Dtype, Device, measure_model, stage_table, summary, plot_waterfalls
SETTINGS = dict(prompt_len=16, new_tokens=8, repeats=2, ppl_tokens=256)
print("measured on:", machine)
"""),
    md(r"""
## Step 1 — choose the model

The choice sets the floor: every later step divides what this one costs. We take the tiny model (a
6-layer Llama-architecture model trained on Python code) and measure it as it is: the baseline row.
"""),
    code(r"""
model, tok = secbook.load("tiny")
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
cfg = model.config
print(f"{cfg.model_type}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size}, "
      f"{sum(p.numel() for p in model.parameters()):,} parameters")
"""),
    code(r"""
rows = []
row, reference = measure_model(model, tok, **SETTINGS)
rows.append({"stage": 0, "step": "1. choose: tiny fp32", "box": "input", **row})
pd.DataFrame(rows)[["step", "model_bytes", "tokens_per_s", "ttft_ms", "perplexity"]].round(2)
"""),
    md(r"""
## Step 2 — compress

Weight-only quantization to 4 bits with one scale per group of 64 weights (round-to-nearest, chapter 3.1),
applied to a copy. The bytes shrink; the held-out perplexity and the greedy agreement say what it cost.
"""),
    code(r"""
m = Quantize(bits=4, group_size=64).apply(copy.deepcopy(model))
row, _ = measure_model(m, tok, reference=reference, **SETTINGS)
rows.append({"stage": 1, "step": "2. compress: int4 g64", "box": "model compression", **row})
pd.DataFrame(rows)[["step", "model_bytes", "tokens_per_s", "perplexity", "agreement"]].round(3)
"""),
    md(r"""
## Step 3 — optimize the algorithm

Replace Hugging Face `generate` by the static-KV-cache decode loop of chapter 3.2: the same greedy tokens
with less work per token.
"""),
    code(r"""
m = FastDecode().apply(m)
row, _ = measure_model(m, tok, reference=reference, **SETTINGS)
rows.append({"stage": 2, "step": "3. optimize: fast decode loop", "box": "algorithm optimization", **row})
pd.DataFrame(rows)[["step", "tokens_per_s", "ttft_ms", "agreement"]].round(3)
"""),
    md(r"""
## Step 4 — accelerate on the hardware

Run the non-quantized parts (embeddings, norms, activations) in bf16 when the processor has fast bf16
(`secbook.hardware.pick_dtype`), and put the model on the best device present.
"""),
    code(r"""
from secbook.hardware import pick_dtype
dt = pick_dtype("auto")
m = Device("auto").apply(Dtype(dt).apply(m))
row, _ = measure_model(m, tok, reference=reference, **SETTINGS)
rows.append({"stage": 3, "step": f"4. accelerate: {str(dt)[6:]} on {row['device']}", "box": "hardware acceleration", **row})
print("dtype chosen for this machine:", dt)
"""),
    md(r"""
## Step 5 — evaluate

All four rows together, with ratios to the baseline and the machine columns (`stage_table`), then the
waterfalls.
"""),
    code(r"""
table = stage_table(rows)
summary(table)
"""),
    code(r"""
plot_waterfalls(table)
plt.show()
end = table.iloc[-1]
glue("ch34_size", f"{end['size_vs_input']:.2f}", display=False)
glue("ch34_speed", f"{end['speedup_vs_input']:.2f}", display=False)
glue("ch34_ppl", f"{end['ppl_change_pct']:+.1f}", display=False)
glue("ch34_agree", f"{100 * end['agreement']:.0f}", display=False)
"""),
    md(r"""
After the five steps the tiny model is stored in {glue:text}`ch34_size`× its fp32 bytes and decodes at
{glue:text}`ch34_speed`× the baseline speed on this machine; held-out perplexity changed by
{glue:text}`ch34_ppl` % and {glue:text}`ch34_agree` % of the greedy tokens are unchanged. Read the waterfall
bar by bar: the evaluation step is what tells you whether a step earned its place. A step that makes the
model smaller but slower (as eager 4-bit dequantization can be on a CPU) is a memory win, not a latency
win — chapter 3.3 shows how compilation fuses it back.

The same run in one line is `Pipeline([Quantize(4, 64), FastDecode(), Dtype(dt), Device("auto")])` —
chapter 2's API; here we wrote it step by step to see each measurement.
"""),
    md(r"""
## Exercises

1. **Ideal ratio.** Ignoring the group scales, by what factor does 4-bit storage shrink fp32 weights? Check
   with `secbook.exercises.check_weight_ratio(answer)`. Why is the measured `size_vs_input` larger than
   1/your answer? (Two reasons: scales, and a part of the model that is not quantized.)
2. **Swap step 2.** Replace `Quantize(bits=4, group_size=64)` by `Quantize(bits=8, group_size=64)`. What
   happens to perplexity and agreement?
3. **Reorder.** Put step 4 before step 2. Does the result change? Which order would you use on a GPU?
"""),
    code(r"""
from secbook import exercises
answer = None  # your ratio here
if answer is not None:
    exercises.check_weight_ratio(answer)
"""),
    solution(r"""
exercises.check_weight_ratio(32 / 4)
# The embedding table (tied with the LM head) stays in fp32 and each group of 64 weights carries a 2-byte scale.
emb = model.model.embed_tokens.weight
print(f"unquantized embedding: {emb.numel() * 4 / secbook.model_bytes(model):.0%} of the fp32 bytes")
# 2: int8 g64 keeps nearly all greedy tokens and changes perplexity by a fraction of a percent.
m8 = Quantize(bits=8, group_size=64).apply(copy.deepcopy(model))
r8, _ = measure_model(m8, tok, reference=reference, prompt_len=16, new_tokens=8, repeats=1, ppl_tokens=256)
print(f"int8 g64: perplexity {r8['perplexity']:.2f} vs {rows[0]['perplexity']:.2f}, agreement {r8['agreement']:.2f}")
# 3: quantization works from whatever dtype the weights have (bf16 weights round to a coarser grid first);
#    on a GPU move first (Device), then quantize on the device, so the packing runs there.
"""),
]
