"""Chapter 3.1.3 — Knowledge distillation, and the chapter's comparison: Pareto fronts and pros/cons measured."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

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
    opening(["write the distillation loss and explain what the temperature and the soft targets add",
             "train a student from a teacher and compare it with the same student trained on labels alone",
             "place quantized, pruned and distilled variants on one size-quality-speed picture (Pareto fronts)",
             "rebuild the source's table of pros and cons of the three compression families from measurements"],
            ["sections 3.1.1 and 3.1.2 (quantization, pruning, the recorded sweep)",
             "what a cross-entropy loss and a softmax are"], 30),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import json
from dataclasses import replace
import numpy as np, torch, pandas as pd, matplotlib.pyplot as plt
from secbook import distill as D
from secbook.claims import say, guard, compare, times, times_zh
from secbook.compress import eval_ids, evaluate, forward_speed_in_turn, model_size
from secbook.measure import (describe_machine, load_results, perplexity_protocol, perplexity_protocol_zh, PPL_TOKENS,
                             tok_s_in_turn, hf_generate_fn, prompt_ids)
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
# NBVAL_CHECK_OUTPUT
teacher_logits = torch.tensor([[[4.0, 3.5, 0.0, -2.0]]])
label = torch.tensor([[0]])
for name, s in {"same as teacher": teacher_logits, "one-hot-ish": torch.tensor([[[6.0, -3, -3, -3]]]),
                "uniform": torch.zeros(1, 1, 4)}.items():
    print(f"{name:16s} loss = {D.distill_loss(s, teacher_logits, label, temperature=2.0, alpha=0.5):.3f}")
"""),
    md(r"""
## A short live run

Twenty steps of each — with the teacher's soft targets, and on the labels alone — from the same
initialisation, on the same batches. (Tiny on purpose; the recorded run is below.)
"""),
    code(r"""
teacher, tok = secbook.load("tiny")
stream = D.training_stream(tok, max_files=200)
cfg = D.DistillConfig(steps=20, batch_size=4, seq_len=128, warmup=5)
s_kd, h_kd = D.train_student(teacher, stream, cfg, use_teacher=True, progress=False)
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
distilled student in Hugging Face format in `data/models/student` with a model card. Its record, with the machine
it ran on and its perplexity protocol:
"""),
    code(r"""
rec = json.loads((MODELS_DIR / "student" / "distill_results.json").read_text())
m = rec["machine"]
print(f"recorded on: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; "
      f"{perplexity_protocol(rec['perplexity_tokens'])}; config: {rec['config']}")
cols = ["parameters", "heldout_perplexity", "train_minutes", "decode_tokens_per_s"]
recorded = pd.DataFrame({k: rec[k] for k in ("teacher", "student", "baseline_student")}).T.reindex(columns=cols)
recorded
"""),
    code(r"""
st, bs, tt = rec["student"], rec["baseline_student"], rec["teacher"]
better = "better" if st["heldout_perplexity"] < bs["heldout_perplexity"] else "not better"
better_zh = "更好" if st["heldout_perplexity"] < bs["heldout_perplexity"] else "并不更好"
say(f"In the recorded run the distilled student reached a held-out perplexity of {st['heldout_perplexity']:.1f} "
    f"against {bs['heldout_perplexity']:.1f} for the same student trained on labels only "
    f"({better}) and "
    f"{tt['heldout_perplexity']:.1f} for the teacher, with {st['parameters'] / tt['parameters']:.2f}x the "
    f"teacher's parameters. Training took {st['train_minutes']:.0f} minutes on the recording machine ({m['cpu']}).",
    zh=f"在记录下来的训练中，蒸馏得到的学生在留出文本上的困惑度为 {st['heldout_perplexity']:.1f}，"
       f"只用标签训练的同一个学生为 {bs['heldout_perplexity']:.1f}（蒸馏{better_zh}），"
       f"教师为 {tt['heldout_perplexity']:.1f}；学生的参数量是教师的 {st['parameters'] / tt['parameters']:.2f} 倍。"
       f"训练在记录所用的机器（{m['cpu']}）上花了 {st['train_minutes']:.0f} 分钟。");
""", tags=("remove-input",)),
    md(r"""
Now live, side by side: the saved student against the teacher — held-out perplexity with the book's protocol,
top-1 match (the fraction of held-out positions where the student's most likely next token is the teacher's),
real bytes, and decode speed (batch 1, greedy, 32 tokens) timed in turn, five rounds.
"""),
    code(r"""
student, stok = secbook.load("student")
guard(stok.get_vocab() == tok.get_vocab(), "student and teacher share the tokenizer (so it can be a draft model)")
ids = eval_ids(tok, PPL_TOKENS)
ppl_t, _, ref = evaluate(teacher, ids)
ppl_s, match_s, _ = evaluate(student, ids, ref)
p = prompt_ids(tok, 32)
decode = tok_s_in_turn({"the teacher": hf_generate_fn(teacher), "the student": hf_generate_fn(student)}, p, 32, rounds=5)
live = pd.DataFrame([{"model": "teacher", "MB": model_size(teacher) / 1e6, "perplexity": ppl_t, "top-1 match": 1.0,
                      "decode tok/s (median)": np.median(decode["the teacher"])},
                     {"model": "student", "MB": model_size(student) / 1e6, "perplexity": ppl_s, "top-1 match": match_s,
                      "decode tok/s (median)": np.median(decode["the student"])}])
print(perplexity_protocol(len(ids)), "| measured on:", describe_machine())
live
"""),
    code(r"""
c = compare(decode, "the student", "the teacher")
c_zh = replace(c, a="学生", b="教师")
say(f"Live, {c.words()}, at {model_size(student) / model_size(teacher):.2f}x the "
    f"bytes, with a perplexity {100 * (ppl_s / ppl_t - 1):+.0f} % from the teacher's and a top-1 match of "
    f"{match_s:.2f}.",
    zh=f"实时测量：{c_zh.words_zh()}；字节数是教师的 {model_size(student) / model_size(teacher):.2f} 倍，"
       f"困惑度相对教师的变化为 {100 * (ppl_s / ppl_t - 1):+.0f} %，top-1 匹配率为 {match_s:.2f}。");
""", tags=("remove-input",)),
    code(r"""
# NBVAL_CHECK_OUTPUT
print("teacher:", teacher.config.num_hidden_layers, "layers,", sum(p.numel() for p in teacher.parameters()), "parameters")
print("student:", student.config.num_hidden_layers, "layers,", sum(p.numel() for p in student.parameters()), "parameters")
"""),
    md(r"""
## Everything on one page: the Pareto fronts

Every compressed variant of this chapter — quantized, pruned, distilled — as recorded by the sweep and
the distillation run: held-out perplexity against real size. A variant is on the *Pareto front* if no
other variant is both smaller and better; a dashed line marks the front on each panel of the figure below (on the
right, *faster* takes the place of smaller). Both records are of the tiny model; their machines and protocols are
printed, and the student's point is placed on the sweep's scale by its perplexity *ratio* to the teacher in its own
record (both measured there on the same held-out tokens).
"""),
    code(r"""
sweep = load_results("compress_sweep").dropna(subset=["perplexity"])
dist = json.loads((RESULTS_DIR / "distill.json").read_text())
print("sweep recorded on:", sweep.cpu.iloc[0], "|", perplexity_protocol(int(sweep.eval_tokens.iloc[0])))
print("distillation recorded on:", dist["machine"]["cpu"], "|", perplexity_protocol(dist["perplexity_tokens"]))
fp = sweep[sweep.family == "fp32"].iloc[0]
ok = sweep[sweep.perplexity < 3 * fp.perplexity]      # leave the broken variants off the plot
fams = {"fp32": "k", "rtn": "tab:blue", "gptq": "tab:green", "awq": "tab:olive", "dynamic_int8": "tab:purple",
        "bnb": "tab:pink", "torchao": "tab:cyan", "prune": "tab:orange", "structured": "tab:red"}
s_ppl = dist["student"]["heldout_perplexity"] * fp.perplexity / dist["teacher"]["heldout_perplexity"]
"""),
    md(r"""
Speed cannot be read from the sweep (its rows were timed one after another, not in turn), so one representative of
each family is timed *now, in turn*: prefill tokens/s of 2 × 256 tokens, five rounds, as a ratio to fp32, against
the recorded perplexity of the same variant.
"""),
    code(r"""
from secbook import quantize as Q, prune as P
calib = Q.calibration_ids(tok, 8, 256)
reps = {"fp32": teacher, "rtn int4 g64 sym": Q.quantize(secbook.load("tiny")[0], 4, 64)[0],
        "dynamic_int8": Q.dynamic_int8(teacher), "magnitude unstructured 50%": P.prune(secbook.load("tiny")[0], 0.5)[0],
        "structured mlp-50% heads-0%": P.prune_structured(teacher, 0.5, calib=calib)[0], "student": student}
rounds = forward_speed_in_turn(reps, rounds=5)
verdict = {k: compare(rounds, k, "fp32") for k in reps if k != "fp32"}
spd = pd.DataFrame({"prefill tok/s (median)": {k: np.median(v) for k, v in rounds.items()}})
spd["vs fp32 (median of rounds)"] = [1.0] + [verdict[k].median for k in reps if k != "fp32"]
spd["verdict"] = ["—"] + [verdict[k].verdict for k in reps if k != "fp32"]
spd
"""),
    code(r"""
from secbook.recommend import pareto_front
def front(x, ppl, faster=False):  # the points no other beats on both axes (smaller, or faster, and lower perplexity)
    pts = pd.DataFrame({"speed": x if faster else 0.0, "size": 0.0 if faster else x, "ppl": ppl})
    return pts[pareto_front(pts, speed="speed", quality="ppl", size="size")].sort_values("speed" if faster else "size")
fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
for f, c in fams.items():
    d = ok[ok.family == f]
    a.scatter(d.size_vs_fp32, d.perplexity, c=c, label=f, s=25)
s_size = dist["student"]["parameters"] / dist["teacher"]["parameters"]
a.scatter(s_size, s_ppl, marker="*", s=200, c="gold", label="distilled student")
fa = front(list(ok.size_vs_fp32) + [s_size], list(ok.perplexity) + [s_ppl])
a.step(fa["size"], fa["ppl"], where="post", color="gray", lw=1, ls="--", label="Pareto front")
a.set(xlabel="size / fp32", ylabel="held-out perplexity", title=f"perplexity vs size (recorded, {sweep.cpu.iloc[0]})")
a.legend(fontsize=7)
xs, ppls = [], []
for k in reps:
    ppl = s_ppl if k == "student" else sweep.set_index("variant").perplexity.get(k, sweep[sweep.family == k].perplexity.min())
    x = spd.loc[k, "vs fp32 (median of rounds)"]
    b.scatter(x, ppl, s=60); b.annotate(k, (x, ppl), fontsize=7)
    xs.append(x); ppls.append(ppl)
fb = front(xs, ppls, faster=True)
b.step(fb["speed"], fb["ppl"], where="pre", color="gray", lw=1, ls="--", label="Pareto front")
b.legend(fontsize=7)
b.axvline(1, color="gray", lw=0.8, ls=":")
b.set(xlabel="prefill speed / fp32 (measured now, in turn)", title="perplexity vs speed")
fig.text(0.5, 0.01, "speed: " + describe_machine(), fontsize=6); plt.tight_layout(); plt.show()
"""),
    md(r"""
## Pros and cons, measured

The source summarises the three families in a table of pros and cons. Here is the same table rebuilt from
the measurements above: for each family, the smallest size reached while staying within +5 % of the fp32
perplexity (recorded sweep), the speed of its representative timed in turn now, and what it needs.
"""),
    code(r"""
def smallest(mask):
    d = sweep[mask & (sweep.perplexity <= 1.05 * fp.perplexity)].sort_values("size_vs_fp32")
    return f"{d.size_vs_fp32.iloc[0]:.2f}x ({d.variant.iloc[0]})" if len(d) else "none"
def speed(r):
    return f"{times(verdict[r].median)}, {verdict[r].verdict} ({r})"
fam = sweep.family
dst, dtt = dist["student"], dist["teacher"]
rows = [("quantization", smallest(fam.isin(["rtn", "gptq", "awq", "bnb", "torchao", "dynamic_int8"])), "rtn int4 g64 sym", "no training; a little calibration text for GPTQ/AWQ"),
        ("quantization, int8 kernel", smallest(fam == "dynamic_int8"), "dynamic_int8", "CPU int8 GEMM (torch.ao); activations quantized at run time"),
        ("unstructured / 2:4 pruning", smallest(fam == "prune"), "magnitude unstructured 50%", "calibration text for Wanda; sparse kernels or hardware to be faster"),
        ("structured pruning", smallest(fam == "structured"), "structured mlp-50% heads-0%", "recovery training, or a large quality loss"),
        ("distillation", f"{dst['parameters'] / dtt['parameters']:.2f}x params at +{100 * (dst['heldout_perplexity'] / dtt['heldout_perplexity'] - 1):.0f}% ppl", "student",
         f"training ({dst['train_minutes']:.0f} min on the recording machine) and the teacher")]
pros = pd.DataFrame([{"family": f, "smallest size within +5% ppl": s, "prefill speed vs fp32, in turn": speed(r), "needs": n}
                     for f, s, r, n in rows])
with pd.option_context("display.max_colwidth", 70):
    display(pros)
"""),
    code(r"""
v = {k: c.verdict for k, c in verdict.items()}
def moved(k):
    return {"faster": "made it faster", "slower": "made it slower"}.get(v[k], f"did not change its speed clearly ({v[k]})")
def moved_zh(k):
    words = {"faster": "更快", "slower": "更慢", "about as fast": "速度相当", "not clearly faster": "并不明显更快",
             "not clearly slower": "并不明显更慢"}
    return {"faster": "使它变快了", "slower": "使它变慢了"}.get(v[k], f"没有明显改变它的速度（{words[v[k]]}）")
say("What the measurements say about speed on this machine, timed in turn: "
    f"our 4-bit `QuantLinear` (dequantize, then multiply in fp32) {moved('rtn int4 g64 sym')}; "
    f"torch.ao's int8 kernel {moved('dynamic_int8')}; zeroing half the weights {moved('magnitude unstructured 50%')}; "
    f"removing half the MLP channels {moved('structured mlp-50% heads-0%')}; the 2-layer student "
    f"{moved('student')}. Smaller storage becomes speed only where a kernel computes in the smaller type or the "
    f"matrices themselves shrink; chapter 4 and the fast-generation chapter show when fewer bytes pay off in "
    f"memory-bound decoding.",
    zh="在这台机器上轮流计时，测量结果对速度的结论是："
       f"我们的 4 位 `QuantLinear`（先反量化，再以 fp32 相乘）{moved_zh('rtn int4 g64 sym')}；"
       f"torch.ao 的 int8 内核{moved_zh('dynamic_int8')}；把一半权重置零{moved_zh('magnitude unstructured 50%')}；"
       f"去掉一半 MLP 通道{moved_zh('structured mlp-50% heads-0%')}；2 层的学生"
       f"{moved_zh('student')}。只有当内核以更小的类型计算，或者矩阵本身变小时，更小的存储才会变成速度；"
       f"第 4 章和讲快速生成循环的那一章会说明，在受内存带宽限制的解码中，字节更少何时能带来回报。");
""", tags=("remove-input",)),
    code(r"""
sv = sweep.set_index("variant").ppl_increase_pct
say(f"In quality (recorded sweep, {sweep.cpu.iloc[0]}): rounding to int4 g64 cost {sv['rtn int4 g64 sym']:+.1f} % "
    f"perplexity with no training; zeroing 30 % and 50 % of the weights cost {sv['magnitude unstructured 30%']:+.1f} % "
    f"and {sv['magnitude unstructured 50%']:+.1f} % but saved no bytes (the zeros are still stored); removing half "
    f"the MLP channels cost {sv['structured mlp-50% heads-0%']:+.1f} % without recovery training; the distilled "
    f"student cost {100 * (dst['heldout_perplexity'] / dtt['heldout_perplexity'] - 1):+.0f} % and "
    f"{dst['train_minutes']:.0f} minutes of training.",
    zh=f"质量方面（记录的参数扫描，{sweep.cpu.iloc[0]}）：舍入到 int4 g64 使困惑度变化 {sv['rtn int4 g64 sym']:+.1f} %，"
       f"不需要训练；把 30 % 和 50 % 的权重置零分别使困惑度变化 {sv['magnitude unstructured 30%']:+.1f} % "
       f"和 {sv['magnitude unstructured 50%']:+.1f} %，但没有节省任何字节（零仍然要存储）；去掉一半 MLP 通道"
       f"在没有恢复训练时使困惑度变化 {sv['structured mlp-50% heads-0%']:+.1f} %；蒸馏得到的学生使困惑度变化 "
       f"{100 * (dst['heldout_perplexity'] / dtt['heldout_perplexity'] - 1):+.0f} %，并需要 "
       f"{dst['train_minutes']:.0f} 分钟的训练。");
""", tags=("remove-input",)),
    summary(["Distillation trains a smaller student on the teacher's softened output distribution (KL at temperature "
             "T, times T²) mixed with the usual label loss.",
             "Soft targets carry more information per example than labels; compared at the same steps, the "
             "distilled student is measured against the same student trained on labels alone.",
             "A student that shares the teacher's tokenizer can serve as a speculative-decoding draft model.",
             "The Pareto fronts put every compression on one size-quality picture; speed is compared only from "
             "measurements taken in turn on one machine.",
             "Quantization needs no training; structured pruning and distillation give smaller matrices and need "
             "training to keep their quality; unstructured zeros need sparse kernels to become speed."]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
**Temperature.** Train the live student with `temperature=1.0` and `temperature=4.0` (20 steps each, as above)
and compare their held-out perplexities. Why might $T$ matter less for a 4096-token vocabulary than for a
50 000-token one?
"""),
    solution(r"""
from dataclasses import replace
res = {}
for T in (1.0, 4.0):
    s_T, _ = D.train_student(teacher, stream, replace(cfg, temperature=T), use_teacher=True, progress=False)
    res[T] = evaluate(s_T, ids)[0]
    print(f"T = {T}: held-out perplexity {res[T]:.1f} after {cfg.steps} steps ({perplexity_protocol(len(ids))})")
lo, hi = min(res, key=res.get), max(res, key=res.get)
say(f"T = {lo} gave the lower perplexity in this short run" + (", but by less than 5 %: one short run per setting "
    "cannot separate them." if res[hi] < 1.05 * res[lo] else "; a longer run would show whether that lasts."),
    zh=f"在这次短训练中，T = {lo} 得到的困惑度较低" + ("，但差距不到 5 %：每种设置只跑一次短训练，无法区分两者。"
       if res[hi] < 1.05 * res[lo] else "；要看这一优势能否保持，需要更长的训练。"))
say("T spreads the teacher's probability over more tokens; with a small vocabulary most of the mass is already on "
    "a few tokens the student sees anyway, while with 50,000 tokens the soft targets carry the ranking of a long "
    "tail that labels never show, so the temperature that exposes it matters more.",
    zh="T 把教师的概率分散到更多的词元上；词表较小时，大部分概率质量本来就集中在学生反正也会看到的少数几个词元上，"
       "而词表有 50,000 个词元时，软目标携带着标签永远不会展示的长尾的排序，所以揭示这条长尾的温度就更重要。")
"""),
    exercise(2, r"""
**Pure imitation.** Set `alpha=1.0` (no label term). Does the student still learn? What does that say about how
much the labels add once the teacher is good?
"""),
    solution(r"""
s_kl, h_kl = D.train_student(teacher, stream, replace(cfg, alpha=1.0), use_teacher=True, progress=False)
ppl_kl = evaluate(s_kl, ids)[0]
ppl_mix = evaluate(s_kd, ids)[0]
print(f"alpha = 1.0 (KL only): loss {h_kl[0]['loss']:.3f} -> {h_kl[-1]['loss']:.3f}; held-out perplexity {ppl_kl:.1f} "
      f"against {ppl_mix:.1f} with alpha = {cfg.alpha} after the same {cfg.steps} steps")
say("Without labels the student " + ("still learned, and did no worse than with them:" if ppl_kl <= 1.05 * ppl_mix
    else "learned less well than with them:" if h_kl[-1]["loss"] < h_kl[0]["loss"] else "did not learn:")
    + " the soft targets carry the label's information (a good teacher ranks the true token high) and more; the "
      "labels add most where the teacher is wrong, and matter less the better the teacher is.",
    zh="没有标签时，学生" + ("仍然学会了，而且并不比有标签时差：" if ppl_kl <= 1.05 * ppl_mix
       else "学得不如有标签时好：" if h_kl[-1]["loss"] < h_kl[0]["loss"] else "没有学会：")
    + "软目标携带了标签的信息（好的教师会把真实的词元排在前面），而且不止于此；标签在教师出错的地方作用最大，"
      "教师越好，标签就越不重要。")
"""),
    exercise(3, r"""
**Parameters.** Count the student's parameters by hand from its config (embeddings are tied) and compare with
`sum(p.numel() for p in student.parameters())`.
"""),
    solution(r"""
c = student.config
emb = c.vocab_size * c.hidden_size
attn = c.hidden_size * (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim + c.num_attention_heads * c.head_dim * c.hidden_size
mlp = 3 * c.hidden_size * c.intermediate_size
norms = 2 * c.hidden_size
print(emb + c.num_hidden_layers * (attn + mlp + norms) + c.hidden_size, sum(p.numel() for p in student.parameters()))
"""),
    exercise(4, r"""
**Draft quality.** Speculative decoding accepts a draft token when the teacher would have produced it. Use the
student's top-1 match from the live table as a rough per-token acceptance rate α and estimate how many of 4 draft
tokens the teacher would accept on average, assuming each is accepted independently and drafting stops at the
first rejection.
"""),
    solution(r"""
a = match_s
expected = sum(a ** k for k in range(1, 5))   # the k-th draft counts only if the first k were all accepted
print(f"alpha ~ {a:.2f}: expected accepted drafts of 4 = {expected:.2f}")
say("Top-1 match is measured on held-out text with the true text as context, not on the model's own greedy "
    "continuation, so it only approximates the acceptance rate (chapter 3.2 measures that directly).",
    zh="top-1 匹配率是在留出文本上、以真实文本为上下文测得的，而不是在模型自己贪心生成的续写上测得的，"
       "所以它只是接受率的近似（第 3.2 节直接测量接受率）。")
"""),
]
