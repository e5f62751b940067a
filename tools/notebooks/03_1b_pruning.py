"""Chapter 3.1.2 — Pruning: magnitude, Wanda, 2:4, and structured pruning that really shrinks the model."""
import sys

sys.path.insert(0, "tools")
from nb import code, md, solution  # noqa: E402

NAME = "03_1b_pruning"

CELLS = [
    md(r"""
# Pruning

Pruning removes parts of a trained network. *Unstructured* pruning zeroes individual weights anywhere;
*semi-structured* (2:4) pruning zeroes two weights out of every four consecutive ones; *structured*
pruning deletes whole attention heads or MLP channels, so the matrices themselves get smaller. This
section measures, on the tiny model, what each costs in held-out perplexity — and what each buys in
speed on this CPU. The second question has a surprising answer for the first kind.
"""),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import tempfile
import torch, pandas as pd, matplotlib.pyplot as plt
from secbook import prune as P
from secbook.quantize import calibration_ids
from secbook.compress import eval_ids, evaluate, forward_speed, model_size, EVAL_TOKENS
from secbook.measure import describe_machine, load_results
pd.set_option("display.width", 140); pd.set_option("display.precision", 3)
print("measured on:", machine)
"""),
    md(r"""
## Which weights to remove

**Magnitude pruning** {cite}`han2015learning` removes the weights with the smallest $|w|$ in each layer.
**Wanda** {cite}`sun2024wanda` ("pruning by weights and activations") scores weight $w_{ij}$ by
$|w_{ij}|\cdot\lVert x_j\rVert_2$ — its size times the norm of the input it multiplies, measured on a few
calibration sequences — and removes the lowest scores *within each output row*. No retraining, no weight
update. **2:4** keeps the 2 best of every 4 consecutive weights, the pattern NVIDIA's sparse tensor cores
run at up to twice the dense speed {cite}`mishra2021accelerating`. The toy example: a 2 × 8 weight whose
last input channel carries large activations.
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
w = torch.tensor([[4., -1, 2, 3, -8, 1, 5, 1], [2, 6, -1, 1, 3, -2, 1, -1]])
x_norm = torch.tensor([1., 1, 1, 1, 1, 1, 1, 20])   # input channel 7 is an outlier feature
print("magnitude 50%:\n", P.magnitude_mask(w, 0.5).int())
print("wanda 50%:\n", P.row_mask(P.wanda_score(w, x_norm), 0.5).int())
print("wanda 2:4:\n", P.n_m_mask(P.wanda_score(w, x_norm)).int())
"""),
    md(r"""
Magnitude pruning drops both weights of channel 7 (they are small); Wanda keeps them, because they
multiply the largest inputs.

## Pruning the tiny model

`P.prune(model, sparsity, method, pattern)` zeroes every decoder `nn.Linear`; Wanda collects the input
norms block by block on 16 calibration windows of the *training* text. Scores: perplexity and greedy
agreement with the dense model on the first {glue}`n_eval_p` held-out tokens.
"""),
    code(r"""
from myst_nb import glue
model, tok = secbook.load("tiny")
ids = eval_ids(tok, EVAL_TOKENS); glue("n_eval_p", len(ids), display=False)
calib = calibration_ids(tok, 16, 256)
ppl0, _, ref = evaluate(model, ids)
rows = [{"variant": "dense", "sparsity": 0.0, "perplexity": ppl0, "agreement": 1.0}]
for method, pattern in [("magnitude", "unstructured"), ("wanda", "unstructured"), ("magnitude", "2:4"), ("wanda", "2:4")]:
    pm, rep = P.prune(secbook.load("tiny")[0], 0.5, method, pattern, calib=calib)
    ppl, agree, _ = evaluate(pm, ids, ref)
    rows.append({"variant": f"{method} {pattern}", "sparsity": rep["sparsity"], "perplexity": ppl, "agreement": agree})
live = pd.DataFrame(rows).assign(increase_pct=lambda d: 100 * (d.perplexity / ppl0 - 1)); live
"""),
    md(r"""
## Zeros are not speed

A dense matrix multiply does the same work whatever the values are: a zero is multiplied like any other
number. The timing below multiplies 64 tokens by a 1024 × 1024 weight with 0 – 99 % of its entries zero,
once as a dense tensor and once in PyTorch's compressed sparse row (CSR) format.
"""),
    code(r"""
sp = P.sparse_speed_table(sparsities=(0.0, 0.5, 0.9, 0.99))
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(sp.sparsity, sp.dense_ms, "o-", label="dense kernel, zeros inside")
ax.plot(sp.sparsity, sp.csr_ms, "s-", label="sparse CSR kernel")
ax.set(xlabel="fraction of zero weights", ylabel="ms per matmul", title="64 × 1024 @ 1024 × 1024, this CPU"); ax.legend()
plt.show(); sp
"""),
    md(r"""
The dense time does not move. The sparse format pays only at very high sparsity — far beyond the 50 %
where the model still works — because it trades regular, vectorised memory access for index chasing.
The same holds for the whole model: a 50 %-zero model runs exactly as fast as the dense one.
"""),
    code(r"""
pm50, _ = P.prune(secbook.load("tiny")[0], 0.5, "magnitude")
pd.DataFrame([{"model": "dense", "prefill_tokens_per_s": forward_speed(model)},
              {"model": "50% zeros (unstructured)", "prefill_tokens_per_s": forward_speed(pm50)}])
"""),
    md(r"""
## Structured pruning: smaller matrices, real speed

Speed on dense hardware comes from *smaller* matrices. `P.prune_structured` removes whole MLP channels
(a row of `gate_proj` and `up_proj` and the matching column of `down_proj`) and whole query heads (with
grouped-query attention, the same number in each key/value group), scoring them Wanda-style: channel
$j$ by $\lVert W_{down}[:, j]\rVert\cdot\lVert h_j\rVert$, a head by its `o_proj` columns times its output
norm. This is the idea of head pruning {cite}`michel2019sixteen` and of LLM-Pruner
{cite}`ma2023llmpruner`, without their recovery training. It returns a new, smaller model of the same
class with an updated config, so it saves and loads like any Hugging Face model.
"""),
    code(r"""
small, rep = P.prune_structured(model, mlp_fraction=0.5, head_fraction=0.5, calib=calib)
from transformers import AutoModelForCausalLM
with tempfile.TemporaryDirectory() as d:
    small.save_pretrained(d); reloaded = AutoModelForCausalLM.from_pretrained(d)
ppl_s, agree_s, _ = evaluate(small, ids, ref)
speeds = {"dense": forward_speed(model), "structured": forward_speed(small)}
print(rep)
pd.DataFrame([{"model": "dense", "MB": model_size(model) / 1e6, "perplexity": ppl0, "prefill_tokens_per_s": speeds["dense"]},
              {"model": "structured -50% MLP, -50% heads", "MB": model_size(reloaded) / 1e6, "perplexity": ppl_s,
               "prefill_tokens_per_s": speeds["structured"]}]).assign(speedup=lambda d: d.prefill_tokens_per_s / speeds["dense"])
"""),
    md(r"""
The speed-up is real and measured side by side; so is the perplexity cost, which is large without
retraining. Structured pruning is usually followed by some training to recover — or replaced by
distillation into a smaller model (next section).

## The recorded curves

`python -m secbook compress-sweep` recorded every method from 30 % to 90 % sparsity (and three structured
sizes) on the same held-out tokens:
"""),
    code(r"""
sweep = load_results("compress_sweep")
print("recorded on:", sweep.cpu.iloc[0])
pr = sweep[sweep.family == "prune"]
fig, ax = plt.subplots(figsize=(7, 3.5))
fp = sweep[sweep.family == "fp32"].perplexity.iloc[0]
for m, mk in (("magnitude", "o"), ("wanda", "s")):
    d = pr[(pr.method == m) & (pr.pattern == "unstructured")].sort_values("sparsity")
    ax.plot([0] + d.sparsity.tolist(), [fp] + d.perplexity.tolist(), marker=mk, label=m)
    ax.scatter([0.5], pr[(pr.method == m) & (pr.pattern == "2:4")].perplexity, marker="*", s=120, label=f"{m} 2:4")
ax.axhline(2 * fp, color="gray", ls=":", label="2 × dense")
ax.set(xlabel="sparsity", ylabel="held-out perplexity (log)", yscale="log", title="recorded: sparsity vs perplexity")
ax.legend(); plt.show()
"""),
    code(r"""
cols = ["variant", "perplexity", "ppl_increase_pct", "agreement", "size_vs_fp32"]
sweep[sweep.family.isin(["fp32", "prune", "structured"])][cols]
"""),
    md(r"""
## Try it

Pick a pruning method and a sparsity; the panel prunes a fresh copy and measures it live (perplexity on
1024 held-out tokens). The line under it is one run of the update for the static page.
"""),
    code(r"""
from secbook.widgets import compression_panel
panel = compression_panel(method="wanda", sparsity=0.6)
display(panel)
print(panel.update()[1])
"""),
    md(r"""
## Exercises

1. **When does perplexity double?** From the recorded magnitude curve, estimate the sparsity at which the
   held-out perplexity reaches twice the dense value; check it with
   `secbook.exercises.check_sparsity_doubling(answer, "magnitude")`, then do the same for Wanda.
2. **Why per row?** Wanda compares scores within each output row, magnitude pruning across the whole
   layer. Prune with Wanda scores but a layer-wide threshold (`P.magnitude_mask(P.wanda_score(w, norm), s)`)
   for one layer and compare its output error with the per-row version.
3. **How sparse must CSR be?** Extend `P.sparse_speed_table` to find the sparsity at which the CSR kernel
   beats the dense one on this machine for 1 token (decode) and for 256 tokens (prefill).
4. **Heads only.** Run `P.prune_structured(model, 0.0, 0.5, calib=calib)`: how much speed and how much
   perplexity do the heads alone account for?
"""),
    solution(r"""
from secbook.exercises import check_sparsity_doubling
import numpy as np
d = pr[(pr.method == "magnitude") & (pr.pattern == "unstructured")].sort_values("sparsity")
guess = float(np.interp(np.log(2 * fp), np.log([fp] + d.perplexity.tolist()), [0] + d.sparsity.tolist()))
print(f"estimate: {guess:.2f}")
check_sparsity_doubling(guess, "magnitude")
"""),
]
