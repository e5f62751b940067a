"""Chapter 3.1.3 — Knowledge distillation, and the chapter's comparison: Pareto fronts and pros/cons measured."""
import sys

sys.path.insert(0, "tools")
from nb import code, md, solution  # noqa: E402

NAME = "03_1c_distillation"

CELLS = [
    md(r"""
# Knowledge distillation

Quantization and pruning shrink a trained model after the fact. Distillation trains a *new*, smaller
model — the student — to imitate the large one — the teacher {cite}`hinton2015distilling`. The trick is
the target: instead of the single correct next token, the student learns the teacher's whole predicted
distribution, softened by a temperature $T$:

$$\mathcal L = \alpha\,T^2\,\mathrm{KL}\!\left(\mathrm{softmax}(z_t/T)\,\Vert\,\mathrm{softmax}(z_s/T)\right)
+ (1-\alpha)\,\mathrm{CE}(z_s, y).$$

The soft targets say which wrong tokens are *nearly* right (after `def __init__(self` a teacher spreads
probability over `,` and `)`), which is more information per example than the label alone. The factor
$T^2$ keeps the gradient of the soft term on the scale of the hard one. Our student keeps the teacher's
tokenizer and width but has 2 blocks instead of 6, initialised from teacher blocks as in DistilBERT
{cite}`sanh2019distilbert`; because it shares the vocabulary it can also serve as the *draft model* of
speculative decoding later in the book.
"""),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import json
import torch, pandas as pd, matplotlib.pyplot as plt
from secbook import distill as D
from secbook.compress import eval_ids, evaluate, forward_speed, model_size, EVAL_TOKENS
from secbook.measure import describe_machine, load_results, time_generation
from secbook.paths import MODELS_DIR, RESULTS_DIR
pd.set_option("display.width", 140); pd.set_option("display.precision", 3)
print("measured on:", machine)
"""),
    md(r"""
## The loss, on a toy example

When student and teacher agree, the KL term vanishes and only $(1-\alpha)\,\mathrm{CE}$ is left; the
further the student's softened distribution from the teacher's, the larger the loss.
"""),
    code(r"""
teacher_logits = torch.tensor([[[4.0, 3.5, 0.0, -2.0]]])
label = torch.tensor([[0]])
for name, s in {"same as teacher": teacher_logits, "one-hot-ish": torch.tensor([[[6.0, -3, -3, -3]]]),
                "uniform": torch.zeros(1, 1, 4)}.items():
    print(f"{name:16s} loss = {D.distill_loss(s, teacher_logits, label, temperature=2.0, alpha=0.5):.3f}")
"""),
    md(r"""
## A short live run

Twenty steps of each — with the teacher's soft targets, and on the labels alone — from the same
initialisation, on the same batches. (Tiny on purpose; the real run is below.)
"""),
    code(r"""
teacher, tok = secbook.load("tiny")
stream = D.training_stream(tok, max_files=200)
cfg = D.DistillConfig(steps=20, batch_size=4, seq_len=128, warmup=5)
_, h_kd = D.train_student(teacher, stream, cfg, use_teacher=True, progress=False)
_, h_ce = D.train_student(teacher, stream, cfg, use_teacher=False, progress=False)
pd.DataFrame({"step": [h["step"] for h in h_kd], "distillation loss": [h["loss"] for h in h_kd],
              "label-only loss": [h["loss"] for h in h_ce]}).set_index("step").iloc[::4]
"""),
    md(r"""
The two losses are on different scales (the distillation loss includes the KL term), so they are not
compared with each other: what matters is held-out perplexity after the same number of steps.

## The recorded run

`python -m secbook distill` trained the student for the steps in its config with the teacher, then the
same student (same initialisation, batches and steps) on labels only, measured all three, and saved the
distilled student in Hugging Face format in `data/models/student` with a model card. Its record:
"""),
    code(r"""
rec = json.loads((MODELS_DIR / "student" / "distill_results.json").read_text())
m = rec["machine"]
print(f"recorded on: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; config: {rec['config']}")
cols = ["parameters", "heldout_perplexity", "train_minutes", "decode_tokens_per_s"]
pd.DataFrame({k: rec[k] for k in ("teacher", "student", "baseline_student")}).T.reindex(columns=cols)
"""),
    md(r"""
Now live, side by side: the saved student against the teacher — perplexity on the same
{glue}`n_eval_d` held-out tokens as the other sections, agreement of greedy next tokens, real bytes, and
decode speed (batch 1, greedy, medians after warm-up).
"""),
    code(r"""
from myst_nb import glue
student, stok = secbook.load("student")
assert stok.get_vocab() == tok.get_vocab()          # same tokenizer: usable as a speculative draft
ids = eval_ids(tok, EVAL_TOKENS); glue("n_eval_d", len(ids), display=False)
ppl_t, _, ref = evaluate(teacher, ids)
ppl_s, agree_s, _ = evaluate(student, ids, ref)
speed = {n: time_generation(mm, tok, prompt_len=32, new_tokens=32, repeats=3).tokens_per_s for n, mm in (("teacher", teacher), ("student", student))}
live = pd.DataFrame([{"model": "teacher", "MB": model_size(teacher) / 1e6, "perplexity": ppl_t, "agreement": 1.0, "decode_tokens_per_s": speed["teacher"]},
                     {"model": "student", "MB": model_size(student) / 1e6, "perplexity": ppl_s, "agreement": agree_s, "decode_tokens_per_s": speed["student"]}]); live
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
print("teacher:", teacher.config.num_hidden_layers, "layers,", sum(p.numel() for p in teacher.parameters()), "parameters")
print("student:", student.config.num_hidden_layers, "layers,", sum(p.numel() for p in student.parameters()), "parameters")
"""),
    md(r"""
## Everything on one page: the Pareto fronts

Every compressed variant of this chapter — quantized, pruned, distilled — as recorded by the sweep and
the distillation run: held-out perplexity against real size. A variant is on the *Pareto front* if no
other variant is both smaller and better.
"""),
    code(r"""
sweep = load_results("compress_sweep").dropna(subset=["perplexity"])
dist = json.loads((RESULTS_DIR / "distill.json").read_text())
print("recorded on:", sweep.cpu.iloc[0])
fp = sweep[sweep.family == "fp32"].iloc[0]
ok = sweep[sweep.perplexity < 3 * fp.perplexity]      # leave the broken variants off the plot
fams = {"fp32": "k", "rtn": "tab:blue", "gptq": "tab:green", "awq": "tab:olive", "dynamic_int8": "tab:purple",
        "bnb": "tab:pink", "torchao": "tab:cyan", "prune": "tab:orange", "structured": "tab:red"}
s_ppl = dist["student"]["heldout_perplexity"] * fp.perplexity / dist["teacher"]["heldout_perplexity"]
"""),
    md(r"""
Speed cannot be read from the sweep (its rows were timed one after another on a shared machine), so the
second plot measures one representative of each family *side by side, now*: prefill tokens/s of 2 × 256
tokens, as a ratio to fp32, against the recorded perplexity of the same variant.
"""),
    code(r"""
from secbook import quantize as Q, prune as P
calib = Q.calibration_ids(tok, 8, 256)
reps = {"fp32": teacher, "rtn int4 g64 sym": Q.quantize(secbook.load("tiny")[0], 4, 64)[0],
        "dynamic_int8": Q.dynamic_int8(teacher), "magnitude unstructured 50%": P.prune(secbook.load("tiny")[0], 0.5)[0],
        "structured mlp-50% heads-0%": P.prune_structured(teacher, 0.5, calib=calib)[0], "student": student}
spd = {k: forward_speed(m) for k, m in reps.items()}
pd.DataFrame({"prefill_tokens_per_s": spd}).assign(vs_fp32=lambda d: d.prefill_tokens_per_s / spd["fp32"])
"""),
    code(r"""
fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
for f, c in fams.items():
    d = ok[ok.family == f]
    a.scatter(d.size_vs_fp32, d.perplexity, c=c, label=f, s=25)
a.scatter(dist["student"]["parameters"] / dist["teacher"]["parameters"], s_ppl, marker="*", s=200, c="gold", label="distilled student")
a.set(xlabel="size / fp32", ylabel="held-out perplexity", title="perplexity vs size (recorded)"); a.legend(fontsize=7)
for k, v in spd.items():
    ppl = s_ppl if k == "student" else sweep.set_index("variant").perplexity.get(k, sweep[sweep.family == k].perplexity.min())
    b.scatter(v / spd["fp32"], ppl, s=60); b.annotate(k, (v / spd["fp32"], ppl), fontsize=7)
b.set(xlabel="prefill speed / fp32 (measured now, side by side)", title="perplexity vs speed"); plt.show()
"""),
    md(r"""
The student's point is placed on the sweep's perplexity scale by its ratio to the teacher in the
distillation record (both measured on the same held-out tokens); its size is its parameter ratio.

## Pros and cons, measured

The source summarises the three families in a table of pros and cons. Here is the same table rebuilt from
the measurements above: for each family, the smallest size reached while staying within +5 % of the fp32
perplexity (recorded sweep), the speed of its representative measured side by side, and what it needs.
"""),
    code(r"""
def smallest(mask):
    d = sweep[mask & (sweep.perplexity <= 1.05 * fp.perplexity)].sort_values("size_vs_fp32")
    return f"{d.size_vs_fp32.iloc[0]:.2f}x ({d.variant.iloc[0]})" if len(d) else "none"
fam = sweep.family
st, tt = dist["student"], dist["teacher"]
rows = [("quantization", smallest(fam.isin(["rtn", "gptq", "awq", "bnb", "torchao", "dynamic_int8"])), "rtn int4 g64 sym", "no training; a little calibration text for GPTQ/AWQ"),
        ("quantization, int8 kernel", smallest(fam == "dynamic_int8"), "dynamic_int8", "CPU int8 GEMM (torch.ao); activations quantized at run time"),
        ("unstructured / 2:4 pruning", smallest(fam == "prune"), "magnitude unstructured 50%", "calibration text for Wanda; sparse kernels or hardware to be faster"),
        ("structured pruning", smallest(fam == "structured"), "structured mlp-50% heads-0%", "large quality loss without recovery training"),
        ("distillation", f"{st['parameters'] / tt['parameters']:.2f}x params at +{100 * (st['heldout_perplexity'] / tt['heldout_perplexity'] - 1):.0f}% ppl", "student", f"training: {st['train_minutes']} min here, and the teacher")]
pd.DataFrame([{"family": f, "smallest size within +5% ppl": s, "prefill speed vs fp32": f"{spd[r] / spd['fp32']:.2f}x ({r})", "needs": n} for f, s, r, n in rows])
"""),
    md(r"""
The measurements reproduce the source's qualitative table and sharpen it. Quantization is nearly free
in quality down to 4 bits and needs no training, but on this CPU a smaller *storage* only becomes speed
where a kernel computes in the smaller type (dynamic int8) — the dequantize-then-multiply of our
`QuantLinear` saves memory and, in eager mode, costs time (chapter 4 and the fast-generation chapter show
when fewer bytes do turn into speed: memory-bound decoding with fused kernels). Unstructured pruning saves neither bytes nor time on dense kernels.
Structured pruning and distillation both give real speed on any hardware; pruning without retraining
pays for it in quality, while distillation pays in training time.

## Exercises

1. **Temperature.** In section 2, train with `temperature=1.0` and `temperature=4.0` (same steps). Which
   gives the lower held-out perplexity after 20 steps? Why might $T$ matter less for a 4096-token
   vocabulary than for a 50 000-token one?
2. **Pure imitation.** Set `alpha=1.0` (no label term). Does the student still learn? What does that say
   about how much the labels add once the teacher is good?
3. **Parameters.** Count the student's parameters by hand from its config (embeddings are tied) and
   compare with `sum(p.numel() for p in student.parameters())`.
4. **Draft quality.** Speculative decoding accepts a draft token when the teacher would have produced it.
   Use the `agreement` of section 3 to estimate how many draft tokens out of 4 the teacher would accept
   on average, assuming independence.
"""),
    solution(r"""
c = student.config
emb = c.vocab_size * c.hidden_size
attn = c.hidden_size * (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim + c.num_attention_heads * c.head_dim * c.hidden_size
mlp = 3 * c.hidden_size * c.intermediate_size
norms = 2 * c.hidden_size
print(emb + c.num_hidden_layers * (attn + mlp + norms) + c.hidden_size, sum(p.numel() for p in student.parameters()))
"""),
    solution(r"""
a = agree_s
print(f"expected accepted tokens of 4: {sum(a ** k for k in range(1, 5)):.2f}")
"""),
]
