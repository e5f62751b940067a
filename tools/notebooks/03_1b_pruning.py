"""Chapter 3.1.2 — Pruning: magnitude, Wanda, 2:4, and structured pruning that really shrinks the model."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

NAME = "03_1b_pruning"

CELLS = [
    md(r"""
# Pruning

Pruning removes parts of a trained network. *Unstructured* pruning zeroes individual weights anywhere;
*semi-structured* (2:4) pruning zeroes two weights out of every four consecutive ones; *structured*
pruning deletes whole attention heads or MLP channels, so the matrices themselves get smaller. This
section measures, on the tiny model (trained by this book in full precision), what each costs in held-out perplexity —
and what each buys in speed on the machine that builds the page. The second question has a surprising answer for
the first kind.
"""),
    opening(["prune a model by magnitude or by Wanda's weight-times-activation score, unstructured or 2:4",
             "explain why zeros in a dense matrix do not make it faster, and when a sparse format does",
             "remove whole MLP channels and attention heads so that the matrices really shrink",
             "compare speeds timed in turn and word the result from the measurement"],
            ["section 3.1.1 (quantization: perplexity, top-1 match, the recorded sweep)",
             "chapter 1 (how timing is done)"], 30),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import tempfile
import numpy as np, torch, pandas as pd, matplotlib.pyplot as plt
from secbook import prune as P
from secbook.quantize import calibration_ids
from dataclasses import replace
from secbook.claims import say, guard, compare, times
from secbook.compress import eval_ids, evaluate, forward_speed_in_turn, model_size
from secbook.measure import describe_machine, load_results, perplexity_protocol, perplexity_protocol_zh, PPL_TOKENS
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
norms block by block on 16 calibration windows of the *training* text. Scores: held-out perplexity (the book's
protocol, printed below) and top-1 match — the fraction of held-out positions where the pruned model's most likely
next token is the dense model's.
"""),
    code(r"""
model, tok = secbook.load("tiny")
ids = eval_ids(tok, PPL_TOKENS)
calib = calibration_ids(tok, 16, 256)
ppl0, _, ref = evaluate(model, ids)
rows = [{"variant": "dense", "sparsity": 0.0, "perplexity": ppl0, "top-1 match": 1.0}]
for method, pattern in [("magnitude", "unstructured"), ("wanda", "unstructured"), ("magnitude", "2:4"), ("wanda", "2:4")]:
    pm, rep = P.prune(secbook.load("tiny")[0], 0.5, method, pattern, calib=calib)
    ppl, match, _ = evaluate(pm, ids, ref)
    rows.append({"variant": f"{method} {pattern}", "sparsity": rep["sparsity"], "perplexity": ppl, "top-1 match": match})
live = pd.DataFrame(rows).assign(increase_pct=lambda d: 100 * (d.perplexity / ppl0 - 1))
print(perplexity_protocol(len(ids)))
live
"""),
    code(r"""
inc = live.set_index("variant").increase_pct
wanda_better = [p for p in ("unstructured", "2:4") if inc[f"wanda {p}"] < inc[f"magnitude {p}"]]
pattern_zh = {"unstructured": "非结构化剪枝", "2:4": "2:4 模式"}
say(f"At 50 % sparsity, perplexity rose by {inc['magnitude unstructured']:.1f} % (magnitude) and "
    f"{inc['wanda unstructured']:.1f} % (Wanda) unstructured, and by {inc['magnitude 2:4']:.1f} % and "
    f"{inc['wanda 2:4']:.1f} % with the 2:4 pattern, which constrains where the zeros may go. "
    + ("Wanda was the better criterion for " + " and ".join(wanda_better) + "." if wanda_better else
       "Wanda was not better than magnitude here."),
    zh=f"稀疏度为 50 % 时，非结构化剪枝使困惑度上升了 {inc['magnitude unstructured']:.1f} %（幅值）和 "
       f"{inc['wanda unstructured']:.1f} %（Wanda）；采用 2:4 模式时上升了 {inc['magnitude 2:4']:.1f} % 和 "
       f"{inc['wanda 2:4']:.1f} %，因为这种模式限制了零可以出现的位置。"
       + ("在" + "、".join(pattern_zh[p] for p in wanda_better) + "中，Wanda 是更好的剪枝标准。" if wanda_better else
          "在这里 Wanda 并不比幅值剪枝更好。"));
""", tags=("remove-input",)),
    md(r"""
## Zeros are not speed

A dense matrix multiply does the same work whatever the values are: a zero is multiplied like any other
number. The timing below multiplies 64 tokens by a 1024 × 1024 weight with 0 – 99 % of its entries zero, once as a
dense tensor and once in PyTorch's compressed sparse row (CSR) format, which stores only the non-zeros and their
column indices. Every variant is timed once per round, five rounds in turn, so that the machine's load hits them
alike; the plot shows the medians and the spread.
"""),
    code(r"""
sp = P.sparse_speed_rounds(sparsities=(0.0, 0.5, 0.9, 0.99), rounds=5)
med = sp.groupby(["kernel", "sparsity"]).ms.agg(["median", "min", "max"]).reset_index()
fig, ax = plt.subplots(figsize=(6.5, 3.2))
for kernel, mk, label in (("dense", "o-", "dense kernel, zeros inside"), ("csr", "s-", "sparse CSR kernel")):
    d = med[med.kernel == kernel]
    ax.errorbar(d.sparsity, d["median"], yerr=[d["median"] - d["min"], d["max"] - d["median"]], fmt=mk, capsize=3, label=label)
ax.set(xlabel="fraction of zero weights", ylabel="ms per matmul (median, min-max)", yscale="log",
       title="64 × 1024 @ 1024 × 1024")
ax.legend(); fig.text(0.01, 0.01, describe_machine(), fontsize=6); plt.tight_layout(); plt.show()
med.pivot(index="sparsity", columns="kernel", values="median").round(3)
"""),
    code(r"""
name = lambda k, s: ("the dense kernel" if k == "dense" else "the CSR kernel") + (f" at {100 * s:g} % zeros" if s else " without zeros")
name_zh = lambda k, s: (f"含 {100 * s:g} % 零的" if s else "不含零的") + ("稠密内核" if k == "dense" else " CSR 内核")
per_round = {name(k, s): g.sort_values("round").ms.tolist() for (k, s), g in sp.groupby(["kernel", "sparsity"])}
base = name("dense", 0)
vs = lambda k, s: compare(per_round, name(k, s), base, higher_is_better=False)
vs_zh = lambda k, s: replace(vs(k, s), a=name_zh(k, s), b=name_zh("dense", 0))
csr_wins = [s for s in (0.5, 0.9, 0.99) if vs("csr", s).verdict == "faster"]
say(f"Time per matmul, in turn: {vs('dense', 0.5).words()}; {vs('csr', 0.5).words()}. "
    + ("The CSR kernel was faster than the dense one in every round only at "
       + " and ".join(f"{100 * s:g} %" for s in csr_wins) + " zeros" if csr_wins else
       "The CSR kernel was not faster in every round at any sparsity tried")
    + " — a sparse format trades regular, vectorised memory access for index chasing, and pays only far beyond "
      "the 50 % where the model still works.",
    zh=f"轮流计时的每次矩阵乘法时间：{vs_zh('dense', 0.5).words_zh()}；{vs_zh('csr', 0.5).words_zh()}。"
       + ("只有在零占 " + " 和 ".join(f"{100 * s:g} %" for s in csr_wins) + " 时，CSR 内核才在每一轮中都快于稠密内核"
          if csr_wins else "在所试的任何稀疏度下，CSR 内核都没有在每一轮中都更快")
       + "——稀疏格式用规则的、向量化的内存访问换来了按索引跳转的访问，只有远远超过 50 %（模型在此时仍然可用）"
         "的稀疏度才划算。");
""", tags=("remove-input",)),
    md(r"""
The whole model behaves the same way. Below, the dense model and the same model with 50 % of its weights zeroed
(magnitude, unstructured) run a prefill of 2 × 256 tokens, in turn, five rounds:
"""),
    code(r"""
pm50, _ = P.prune(secbook.load("tiny")[0], 0.5, "magnitude")
zeros_speed = forward_speed_in_turn({"the dense model": model, "the model with 50 % zeros": pm50}, rounds=5)
pd.DataFrame(zeros_speed).describe().loc[["50%", "min", "max"]].rename(index={"50%": "median"}).round(0)
"""),
    code(r"""
c = compare(zeros_speed, "the model with 50 % zeros", "the dense model")
c_zh = replace(c, a="置零 50 % 的模型", b="稠密模型")
say(f"Prefill tokens/s: {c.words()}. "
    + ("Zeros bought no speed: the dense kernels multiply them like any other number."
       if c.verdict != "faster" else
       "It was faster in every round — unexpected for dense kernels; a change of load between rounds can do this, "
       "so run the cell again before believing it."),
    zh=f"预填充每秒词元数：{c_zh.words_zh()}。"
       + ("零没有换来速度：稠密内核像乘其他任何数一样乘这些零。"
          if c.verdict != "faster" else
          "它在每一轮中都更快——这对稠密内核来说出乎意料；各轮之间负载的变化可能造成这种结果，"
          "所以在相信它之前请再运行一次这个单元格。"));
""", tags=("remove-input",)),
    md(r"""
## Structured pruning: smaller matrices

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
ppl_s, match_s, _ = evaluate(small, ids, ref)
struct_speed = forward_speed_in_turn({"the dense model": model, "the structured-pruned model": reloaded}, rounds=5)
print({k: v for k, v in rep.items() if k != "seconds"})
pd.DataFrame([{"model": "dense", "MB": model_size(model) / 1e6, "perplexity": ppl0, "top-1 match": 1.0,
               "prefill tok/s (median)": np.median(struct_speed["the dense model"])},
              {"model": "structured -50% MLP, -50% heads", "MB": model_size(reloaded) / 1e6, "perplexity": ppl_s,
               "top-1 match": match_s, "prefill tok/s (median)": np.median(struct_speed["the structured-pruned model"])}])
"""),
    code(r"""
c = compare(struct_speed, "the structured-pruned model", "the dense model")
c_zh = replace(c, a="结构化剪枝后的模型", b="稠密模型")
say(f"Timed in turn (the pruned model after a save and reload, as a plain Hugging Face model): "
    f"{c.words()}, with {model_size(reloaded) / model_size(model):.2f}x the bytes. "
    f"Its perplexity rose by {100 * (ppl_s / ppl0 - 1):.0f} % without retraining"
    + (" — a large cost." if ppl_s > 1.25 * ppl0 else "."),
    zh=f"轮流计时（剪枝后的模型经过保存和重新加载，作为一个普通的 Hugging Face 模型）："
       f"{c_zh.words_zh()}，字节数是原来的 {model_size(reloaded) / model_size(model):.2f} 倍。"
       f"在不重新训练的情况下，它的困惑度上升了 {100 * (ppl_s / ppl0 - 1):.0f} %"
       + ("——代价很大。" if ppl_s > 1.25 * ppl0 else "。"));
""", tags=("remove-input",)),
    md(r"""
Structured pruning is usually followed by some training to recover the quality — or replaced by distillation into
a smaller model (next section).

## The recorded curves

`python -m secbook compress-sweep` recorded every method from 30 % to 90 % sparsity (and four structured variants);
its protocol is printed with it.
"""),
    code(r"""
sweep = load_results("compress_sweep")
rec_tokens = int(sweep.eval_tokens.iloc[0])
print("recorded on:", sweep.cpu.iloc[0], "|", sweep.timestamp.iloc[0][:10], "|", perplexity_protocol(rec_tokens))
pr = sweep[sweep.family == "prune"]
fig, ax = plt.subplots(figsize=(7, 3.5))
fp = sweep[sweep.family == "fp32"].perplexity.iloc[0]
for m, mk in (("magnitude", "o"), ("wanda", "s")):
    d = pr[(pr.method == m) & (pr.pattern == "unstructured")].sort_values("sparsity")
    ax.plot([0] + d.sparsity.tolist(), [fp] + d.perplexity.tolist(), marker=mk, label=m)
    ax.scatter([0.5], pr[(pr.method == m) & (pr.pattern == "2:4")].perplexity, marker="*", s=120, label=f"{m} 2:4")
ax.axhline(2 * fp, color="gray", ls=":", label="2 × dense")
ax.set(xlabel="sparsity", ylabel="held-out perplexity (log)", yscale="log",
       title=f"recorded sweep, tiny model ({sweep.cpu.iloc[0]})")
ax.legend(); plt.show()
"""),
    code(r"""
cols = ["variant", "perplexity", "ppl_increase_pct", "agreement", "size_vs_fp32"]
sweep[sweep.family.isin(["fp32", "prune", "structured"])][cols].rename(columns={"agreement": "top-1 match"})
"""),
    code(r"""
if rec_tokens != len(ids):
    say(f"The sweep used a different perplexity protocol ({perplexity_protocol(rec_tokens)}) from the live rows "
        f"above ({perplexity_protocol(len(ids))}): its dense perplexity is {fp:.2f}, the live one {ppl0:.2f}. "
        f"Compare perplexities within one table.",
        zh=f"参数扫描采用的困惑度评测方案（{perplexity_protocol_zh(rec_tokens)}）与上面实时测量的各行"
           f"（{perplexity_protocol_zh(len(ids))}）不同：扫描中稠密模型的困惑度为 {fp:.2f}，实时测得的为 {ppl0:.2f}。"
           f"只在同一张表之内比较困惑度。")
else:
    say(f"Same protocol as the live rows: recorded dense perplexity {fp:.2f}, live {ppl0:.2f}.",
        zh=f"评测方案与实时测量的各行相同：记录的稠密模型困惑度为 {fp:.2f}，实时测得的为 {ppl0:.2f}。")
""", tags=("remove-input",)),
    md(r"""
## Try it

Pick a pruning method and a sparsity; the panel prunes a fresh copy and measures it live (perplexity with the
book's protocol). The line under it is one run of the update for the static page.
"""),
    code(r"""
from secbook.widgets import compression_panel
panel = compression_panel(method="wanda", sparsity=0.6)
display(panel)
print(panel.update()[1])
"""),
    summary(["Unstructured pruning zeroes individual weights; Wanda scores each by its magnitude times the norm of "
             "its input and compares within each output row, which keeps the weights that multiply large "
             "activations.",
             "2:4 sparsity (two zeros in every four) is what sparse tensor cores accelerate; it constrains where the "
             "zeros go, so it costs more quality than unstructured pruning at the same 50 %.",
             "Zeros in a dense matrix cost the same time as any other value; sparse formats pay only at very high "
             "sparsity, where the model no longer works.",
             "Structured pruning removes whole channels and heads: smaller matrices, so less work for any dense kernel, but "
             "a large quality loss without recovery training.",
             "Speeds are compared only from measurements taken in turn; the words come from the rounds."]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
**When does perplexity double?** From the recorded magnitude curve, estimate the sparsity at which the held-out
perplexity reaches twice the dense value; check it with `secbook.exercises.check_sparsity_doubling(answer,
"magnitude")`, then do the same for Wanda.
"""),
    solution(r"""
from secbook.exercises import check_sparsity_doubling

def doubling(method):
    d = pr[(pr.method == method) & (pr.pattern == "unstructured")].sort_values("sparsity")
    return float(np.interp(np.log(2 * fp), np.log([fp] + d.perplexity.tolist()), [0] + d.sparsity.tolist()))

for method in ("magnitude", "wanda"):
    guess = doubling(method)
    print(f"{method}: estimate {guess:.2f}")
    check_sparsity_doubling(guess, method)
"""),
    exercise(2, r"""
**Why per row?** Wanda compares scores within each output row, magnitude pruning across the whole layer. Prune one
layer with Wanda scores but a layer-wide threshold (`P.magnitude_mask(P.wanda_score(w, norm), s)`) and compare its
output error with the per-row version.
"""),
    solution(r"""
lin = model.model.layers[2].mlp.down_proj
x = []
h = lin.register_forward_hook(lambda mod, args, out: x.append(args[0].detach().reshape(-1, lin.in_features)))
with torch.no_grad():
    model(input_ids=calib[:4])
h.remove()
X = torch.cat(x)
norm = X.norm(dim=0)
wl = lin.weight.detach()
score = P.wanda_score(wl, norm)
err = {}
for name, mask in (("per row", P.row_mask(score, 0.5)), ("layer-wide", P.magnitude_mask(score, 0.5))):
    err[name] = float((X @ (wl * mask).T - X @ wl.T).norm() / (X @ wl.T).norm())
    print(f"{name:>10}: relative output error {err[name]:.3f}, fewest weights kept in a row: "
          f"{int(mask.sum(1).min())} of {lin.in_features}")
say("A layer-wide threshold can strip the rows whose scores are all small of most of their weights; per-row "
    "pruning keeps the same number in every row, so no output loses more than half its inputs.",
    zh="整层统一的阈值可能把那些得分全都偏小的行剥去大部分权重；按行剪枝在每一行中保留同样多的权重，"
       "所以没有哪个输出会失去一半以上的输入。")
if err["per row"] < 0.95 * err["layer-wide"]:
    say("Here that protected the outputs: the per-row error is clearly lower.",
        zh="在这里，这一点保护了输出：按行剪枝的误差明显更低。")
else:
    say("In this layer it made little difference: its rows have similar scores, so a layer-wide threshold already "
        "kept nearly half of each row. The Wanda paper found the per-output comparison matters in large LLMs, whose "
        "rows differ more; try other layers (attention o_proj, gate_proj) to find one where it matters.",
        zh="在这一层中差别不大：它的各行得分相近，所以整层统一的阈值本来就在每一行中保留了将近一半的权重。"
           "Wanda 的论文发现，在各行差异更大的大型 LLM 中，按输出比较很重要；试试其他层（注意力的 o_proj、"
           "gate_proj），找一个差别明显的层。")
"""),
    exercise(3, r"""
**How sparse must CSR be?** Use `P.sparse_speed_rounds` to find the sparsity from which the CSR kernel beats the
dense one in every round, for 1 token (decode) and for 256 tokens (prefill).
"""),
    solution(r"""
levels = (0.5, 0.8, 0.9, 0.95, 0.99)
for tokens in (1, 256):
    t = P.sparse_speed_rounds(tokens=tokens, sparsities=levels, rounds=3, repeats=3)
    r = {f"{k} {s:g}": g.sort_values("round").ms.tolist() for (k, s), g in t.groupby(["kernel", "sparsity"])}
    wins = [s for s in levels if compare(r, f"csr {s:g}", "dense 0", higher_is_better=False).verdict == "faster"]
    say(f"{tokens:>3} token(s): CSR faster in every round from {wins[0]:.0%} zeros" if wins else
        f"{tokens:>3} token(s): CSR never faster in every round up to {levels[-1]:.0%}",
        zh=f"{tokens:>3} 个词元：从 {wins[0]:.0%} 的零开始，CSR 在每一轮中都更快" if wins else
           f"{tokens:>3} 个词元：直到 {levels[-1]:.0%} 的零，CSR 都没有在每一轮中都更快")
say("The crossing point depends on the two kernels, not only on the zeros: with one token the dense kernel is a "
    "matrix-vector product limited by reading the weight, and CSR must read an index per non-zero as well; with "
    "many tokens CSR reuses each index for every token, while the dense kernel still multiplies every zero. Which "
    "effect wins, and where, is specific to the libraries and the CPU: the numbers above are this machine's.",
    zh="交叉点取决于两个内核，而不只取决于零的多少：只有一个词元时，稠密内核是一次受权重读取限制的矩阵-向量乘法，"
       "而 CSR 还得为每个非零元素读一个索引；词元很多时，CSR 对每个词元重复使用每个索引，而稠密内核仍要乘每一个零。"
       "哪种效应占上风、在哪里占上风，取决于具体的库和 CPU：上面的数字是这台机器的。")
"""),
    exercise(4, r"""
**Heads only.** Run `P.prune_structured(model, 0.0, 0.5, calib=calib)`: how much speed and how much perplexity do
the heads alone account for?
"""),
    solution(r"""
heads, rep_h = P.prune_structured(model, 0.0, 0.5, calib=calib)
ppl_h, _, _ = evaluate(heads, ids, ref)
s = forward_speed_in_turn({"dense": model, "heads -50%": heads}, rounds=5)
c = compare(s, "heads -50%", "dense")
print(f"heads -50% only: perplexity {ppl_h:.2f} vs dense {ppl0:.2f} ({100 * (ppl_h / ppl0 - 1):+.0f} %), and "
      f"{ppl_s:.2f} ({100 * (ppl_s / ppl0 - 1):+.0f} %) with half the MLP removed as well.")
c_zh = replace(c, a="去掉 50% 注意力头的模型", b="稠密模型")
say(f"Speed: {c.words()}.", zh=f"速度：{c_zh.words_zh()}。")
say(f"Parameters {rep_h['parameters_before']:,} -> {rep_h['parameters_after']:,} (both halved: "
    f"{rep['parameters_after']:,}): the query and output projections of half the heads are a small part of each "
    "block next to the MLP, so the heads alone remove few weights" + (" and bought little speed here." if c.median < 1.2 else "."),
    zh=f"参数量 {rep_h['parameters_before']:,} -> {rep_h['parameters_after']:,}（两者都减半时为 "
       f"{rep['parameters_after']:,}）：与 MLP 相比，一半注意力头的查询投影和输出投影只占每个块的一小部分，"
       "所以单剪注意力头去掉的权重很少" + ("，在这里也几乎没有换来速度。" if c.median < 1.2 else "。"))
share = (ppl_h - ppl0) / (ppl_s - ppl0)
say(f"The heads account for {share:.0%} of the perplexity increase of the combined pruning: "
    + ("most of the damage." if share > 0.5 else "less than half of the damage."),
    zh=f"在两者结合的剪枝造成的困惑度上升中，注意力头占了 {share:.0%}："
       + ("大部分损害来自它们。" if share > 0.5 else "不到一半的损害来自它们。"))
"""),
]
