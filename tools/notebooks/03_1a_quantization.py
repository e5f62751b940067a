"""Chapter 3.1.1 — Quantization: round-to-nearest from scratch, GPTQ, AWQ, a real model's Q4_1 file read by hand,
the question set on quantized variants of that model, and the libraries timed in turn."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

NAME = "03_1a_quantization"

SETUP = r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import copy, warnings
import numpy as np, torch, pandas as pd, matplotlib.pyplot as plt
from secbook import quantize as Q, tasks, pretrained
from secbook import ggml_blocks as G
from secbook.claims import say, guard, compare, times
from secbook.compress import eval_ids, evaluate, forward_speed_in_turn, model_size
from secbook.measure import (describe_machine, load_results, perplexity_protocol, PPL_TOKENS, hf_generate_fn,
                             tok_s_in_turn, model_bytes)
pd.set_option("display.width", 140); pd.set_option("display.precision", 3)
print("measured on:", machine)
"""

CELLS = [
    md(r"""
# Quantization

A weight stored in 32-bit floating point costs 4 bytes; the same weight as an 8-bit integer costs 1, as a
4-bit integer half a byte. Decoding reads every weight once per token, so fewer bytes means less memory
traffic — and, when the kernels are right, more tokens per second. The price is rounding error. This
section builds weight quantization from scratch on the book's tiny model (5.8 M parameters, trained here in full
precision on the Python standard library), measures what each choice costs in held-out perplexity, then turns to a
real model: it reads the 4-bit file that SmolLM2-135M-Instruct comes in, block by block, asks quantized variants
of it the book's 30 questions, and times the production libraries — `torch.ao`, bitsandbytes and torchao — on it.

The integer-plus-scale scheme used everywhere below is the affine quantization of {cite}`jacob2018quantization`:
a weight $w$ is stored as an integer $q$ and recovered as $\hat w = (q - z)\,s$ with a scale $s$ and a
zero point $z$.
"""),
    opening(["quantize a weight matrix symmetrically or asymmetrically, per tensor, per channel or per group, and "
             "count the bytes it really takes",
             "explain how GPTQ and AWQ improve on rounding each weight to the nearest level",
             "read llama.cpp's Q4_1 blocks (scale, minimum, 4-bit codes) from a real GGUF file and decode them by hand",
             "judge a quantized model by its answers as well as by its perplexity, and say when a difference is noise",
             "compare quantization libraries by size and by speed timed in turn"],
            ["chapter 1 (tokens/s, how timing is done) and chapter 2 (the pipeline)",
             "what perplexity is (glossary); a little linear algebra (matrix times vector)"], 45),
    code(SETUP),
    md(r"""
## Round-to-nearest, one layer at a time

*Symmetric* quantization puts $z$ in the middle of the integer range and sets $s = \max|w| / q_{max}$;
*asymmetric* quantization maps $[\min w, \max w]$ onto the whole range, so a lopsided layer wastes no
levels. The scale can be shared by the whole tensor, by one output channel (a row of the weight matrix),
or by a *group* of $g$ consecutive inputs of a row. `Q.quantize_tensor` returns the integers, scales and
zero points; the table shows the relative error $\lVert \hat W - W\rVert / \lVert W\rVert$ of the first
attention projection of the tiny model.
"""),
    code(r"""
model, tok = secbook.load("tiny")
w = model.model.layers[0].self_attn.q_proj.weight.detach()
rows = []
for bits in Q.SUPPORTED_BITS:
    for scheme in Q.SCHEMES:
        err = {g if g else "channel": float((Q.fake_quantize(w, bits, g, scheme) - w).norm() / w.norm())
               for g in ("tensor", None, 128, 64, 32)}
        rows.append({"bits": bits, "scheme": scheme, **err})
errors = pd.DataFrame(rows); errors
"""),
    code(r"""
e = errors.set_index(["bits", "scheme"])
step = [e.loc[(b, "sym"), "channel"] / e.loc[(b + 1, "sym"), "channel"] for b in (2, 3)]
finer = bool((e[["channel", 128, 64, 32]].diff(axis=1).iloc[:, 1:] <= 0).all().all())
asym = bool((e.xs("asym", level="scheme")["channel"] <= e.xs("sym", level="scheme")["channel"]).all())
say(f"Going from 4 to 3 bits multiplied this layer's error by {step[1]:.1f}, from 3 to 2 bits by {step[0]:.1f} "
    f"(one bit fewer halves the number of levels, so about doubles the step). "
    + ("Finer groups lowered the error at every bit width" if finer else "Finer groups mostly lowered the error")
    + (", and the asymmetric scheme was better than the symmetric one in every row." if asym else
       "; the asymmetric scheme was not better in every row."),
    zh=f"从 4 位降到 3 位，这一层的误差变为原来的 {step[1]:.1f} 倍；从 3 位降到 2 位，变为原来的 {step[0]:.1f} 倍"
       f"（少一位，级别数减半，步长大约加倍）。"
       + ("在每一种位宽下，更细的分组都降低了误差" if finer else "更细的分组大多降低了误差")
       + ("，而且在每一行中非对称方案都优于对称方案。" if asym else "；非对称方案并非在每一行中都更好。"));
""", tags=("remove-input",)),
    md(r"""
The histogram shows why so few bits hurt: the weights are bell-shaped, and at 3 bits only eight levels (vertical
lines, one row's symmetric grid) cover them.
"""),
    code(r"""
row = w[0]
s = row.abs().max() / 3          # symmetric 3-bit: levels -4..3 times s
fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(w.flatten().numpy(), bins=120, color="tab:blue", alpha=0.7)
for k in range(-4, 4):
    ax.axvline(float(k * s), color="tab:red", lw=0.8)
ax.set(xlabel="weight value", ylabel="count", title="q_proj of layer 0, with the 3-bit levels of row 0")
plt.show()
"""),
    md(r"""
## Real storage: packing and `QuantLinear`

A quantized model is only smaller if the integers are *stored* small. `Q.pack` puts two 4-bit values in a
byte (four 2-bit values; eight 3-bit values in three bytes), and `Q.QuantLinear` keeps the packed bytes
plus fp16 scales (and one byte of zero point per group in the asymmetric scheme), dequantizes in `forward` and
calls `F.linear`. Its `storage_bytes()` reports what it really holds, and `secbook.measure.model_bytes` uses it.
The output below is checked by the book's tests on every build.
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
print(Q.pack(torch.tensor([1, 2, 3, 15]), 4).tolist(), Q.unpack(Q.pack(torch.tensor([1, 2, 3, 15]), 4), 4, 4).tolist())
lin = model.model.layers[0].mlp.down_proj
for bits in (8, 4, 3, 2):
    ql = Q.QuantLinear.from_linear(lin, bits, 64)
    print(f"int{bits} g64: {ql.storage_bytes():>7,} bytes vs fp32 {lin.weight.numel() * 4:>7,}"
          f"  ({ql.storage_bytes() / (lin.weight.numel() * 4):.3f}x)")
"""),
    md(r"""
## The whole model

`Q.quantize(model, bits, group_size, scheme)` swaps every decoder `nn.Linear` (not the tied embedding /
`lm_head`) for a `QuantLinear` and returns a report. Each variant is scored with the book's perplexity protocol
(printed below) and, in the same pass, by its *top-1 match*: the fraction of held-out positions where its most
likely next token is the fp32 model's (each position seeing the true text before it).
"""),
    code(r"""
ids = eval_ids(tok, PPL_TOKENS)
ppl0, _, ref = evaluate(model, ids)
results = [{"variant": "fp32", "perplexity": ppl0, "top-1 match": 1.0, "MB": model_size(model) / 1e6}]
for bits, g in [(8, None), (4, 64), (3, 64), (3, None), (2, 64)]:
    qm, rep = Q.quantize(secbook.load("tiny")[0], bits, g)
    ppl, match, _ = evaluate(qm, ids, ref)
    results.append({"variant": f"rtn int{bits} {'pc' if g is None else f'g{g}'}", "perplexity": ppl,
                    "top-1 match": match, "MB": model_size(qm) / 1e6, "layers_vs_fp32": rep.ratio})
live = pd.DataFrame(results).assign(increase_pct=lambda d: 100 * (d.perplexity / ppl0 - 1))
print(perplexity_protocol(len(ids)))
live
"""),
    code(r"""
inc = live.set_index("variant").increase_pct
lay = live.set_index("variant").layers_vs_fp32
say(f"Relative to fp32, held-out perplexity changed by {inc['rtn int8 pc']:+.3f} % at int8 per channel, "
    f"{inc['rtn int4 g64']:+.1f} % at int4 g64, {inc['rtn int3 g64']:+.1f} % at int3 g64 and {inc['rtn int2 g64']:+.0f} % "
    f"at int2 g64: " + ("plain rounding to 2 bits breaks the model. " if inc["rtn int2 g64"] > 25 else "")
    + f"The quantized layers shrank to {lay['rtn int4 g64']:.3f}x their fp32 bytes at int4 g64 (scales included), "
      f"the whole model only to {live.set_index('variant').MB['rtn int4 g64'] / live.MB[0]:.2f}x, because the "
      f"{model.config.vocab_size} × {model.config.hidden_size} embedding stays in fp32.",
    zh=f"与 fp32 相比，留出文本上的困惑度在 int8 逐通道时变化了 {inc['rtn int8 pc']:+.3f} %，int4 g64 时为 "
       f"{inc['rtn int4 g64']:+.1f} %，int3 g64 时为 {inc['rtn int3 g64']:+.1f} %，int2 g64 时为 {inc['rtn int2 g64']:+.0f} %："
       + ("直接舍入到 2 位会把模型弄坏。" if inc["rtn int2 g64"] > 25 else "")
       + f"在 int4 g64 下，量化后的各层缩小到其 fp32 字节数的 {lay['rtn int4 g64']:.3f} 倍（含缩放因子），整个模型却只缩小到 "
         f"{live.set_index('variant').MB['rtn int4 g64'] / live.MB[0]:.2f} 倍，因为 "
         f"{model.config.vocab_size} × {model.config.hidden_size} 的嵌入层仍保留为 fp32。");
""", tags=("remove-input",)),
    md(r"""
## Where the error comes from

The report keeps each layer's relative weight error; `Q.activation_stats` records the largest |input| of every
input channel. A few channels with inputs far above the rest — *outlier features* {cite}`dettmers2022llmint8` —
are what make *activation* quantization hard, and what AWQ exploits below. They are a property of trained
transformers that grows with scale, so the real model is measured beside the tiny one: the count is of channels
whose largest input exceeds 6 times the layer's median channel.
"""),
    code(r"""
qm, rep = Q.quantize(secbook.load("tiny")[0], 3, 64)
calib = Q.calibration_ids(tok, 8, 256)
amax = Q.activation_stats(model, calib)
real, rtok = secbook.load("smollm2-135m-instruct")
ramax = Q.activation_stats(real, Q.calibration_ids(rtok, 4, 128))
fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.2))
rep.frame().plot.bar(x="layer", y="rel_error", ax=a, legend=False, xticks=[])
a.set(title="tiny, int3 g64: relative error per layer", xlabel=f"{len(rep.layers)} layers, in model order")
name = "model.layers.0.mlp.down_proj"
b.plot(amax[name].numpy()); b.set(title=f"tiny: max |input| per channel\n{name}", xlabel="channel")
rname = "model.layers.0.self_attn.q_proj"
c.plot(ramax[rname].numpy(), color="tab:orange")
c.set(title=f"smollm2-135m-instruct: max |input| per channel\n{rname}", xlabel="channel")
plt.tight_layout(); plt.show()
count = lambda stats: sum(len(Q.outlier_channels(v)) for v in stats.values())
outliers = pd.DataFrame([{"model": "tiny", "layers": len(amax), "outlier channels": count(amax)},
                         {"model": "smollm2-135m-instruct", "layers": len(ramax), "outlier channels": count(ramax)}])
outliers
"""),
    code(r"""
o = outliers.set_index("model")["outlier channels"]
say(f"Outlier channels (largest input above 6x the layer's median channel): {o['tiny']} in the tiny model, "
    f"{o['smollm2-135m-instruct']} in the real one"
    + (" — the real model has many; LLM.int8() found that such outliers emerge as trained transformers grow."
       if o["smollm2-135m-instruct"] > 2 * max(o["tiny"], 1) else "."),
    zh=f"离群通道（最大输入超过该层中位通道的 6 倍）：小模型中有 {o['tiny']} 个，真实模型中有 "
       f"{o['smollm2-135m-instruct']} 个"
       + ("——真实模型中有很多；LLM.int8() 发现，这样的离群值会随着训练好的 Transformer 规模增大而出现。"
          if o["smollm2-135m-instruct"] > 2 * max(o["tiny"], 1) else "。"));
""", tags=("remove-input",)),
    md(r"""
## GPTQ: rounding with error feedback

Rounding each weight on its own ignores that the layer's *output* is what matters. GPTQ
{cite}`frantar2023gptq` quantizes the columns of $W$ one at a time and, after each, updates the columns
not yet quantized to compensate for the error just made — the Optimal Brain Surgeon update
{cite}`hassibi1993obs` with the Hessian $H = 2XX^\top$ of the layer's inputs $X$ on a little calibration
text. Our version (`Q.gptq_quantize_weight`, about 40 lines) processes blocks of 128 columns, visits
columns by decreasing $H_{jj}$ ("act-order") and runs block after block of the model so that each block
sees the inputs produced by the already-quantized ones. Calibration: 32 windows of 256 tokens of the
*training* text.
"""),
    code(r"""
calib = Q.calibration_ids(tok, 32, 256)
gq, grep = Q.quantize(secbook.load("tiny")[0], 3, 64, method="gptq", calib=calib)
ppl_g, match_g, _ = evaluate(gq, ids, ref)
rtn3 = live.set_index("variant").loc["rtn int3 g64"]
gptq_vs = pd.DataFrame([{"variant": "rtn int3 g64", "perplexity": rtn3.perplexity, "top-1 match": rtn3["top-1 match"]},
                        {"variant": "gptq int3 g64", "perplexity": ppl_g, "top-1 match": match_g}]
                       ).assign(increase_pct=lambda d: 100 * (d.perplexity / ppl0 - 1)); gptq_vs
"""),
    code(r"""
better = ppl_g < rtn3.perplexity
say(f"At 3 bits, GPTQ's perplexity increase was {100 * (ppl_g / ppl0 - 1):.1f} % against round-to-nearest's "
    f"{100 * (rtn3.perplexity / ppl0 - 1):.1f} %" + (": error feedback recovered most of what rounding lost."
    if better and (ppl_g - ppl0) < 0.5 * (rtn3.perplexity - ppl0) else
    ": better, but not by half." if better else ": no better here."),
    zh=f"在 3 位下，GPTQ 使困惑度上升了 {100 * (ppl_g / ppl0 - 1):.1f} %，而就近舍入上升了 "
       f"{100 * (rtn3.perplexity / ppl0 - 1):.1f} %" + ("：误差反馈挽回了舍入损失的大部分。"
       if better and (ppl_g - ppl0) < 0.5 * (rtn3.perplexity - ppl0) else
       "：更好，但上升幅度没有减半。" if better else "：这里并没有更好。"));
""", tags=("remove-input",)),
    md(r"""
## AWQ: protect the salient channels

AWQ {cite}`lin2024awq` observes that the weights multiplying large activations matter most. It scales
input channel $j$ of $W$ up by $s_j = \overline{|x_j|}^{\,\alpha}$ before quantizing (so those weights get
relatively finer steps) and divides the input by $s_j$, choosing $\alpha \in [0, 1]$ per layer to minimise
the output error on calibration data. `Q.awq_search` does that search; `QuantLinear` keeps $1/s$ as a
per-channel input scale. The recorded sweep below compares it with RTN and GPTQ at every bit width.

## The recorded sweep: every bit width, every method

`python -m secbook compress-sweep` runs the whole grid offline and writes `data/results/compress_sweep.csv`
(machine columns and the number of held-out tokens scored included). Its perplexities can be compared with the
live rows above only if both used the same protocol; the cell below checks. (The CSV's speed columns were timed
one variant after another, not in turn, so they are not compared across rows; the speeds this chapter quotes are
timed in turn.)
"""),
    code(r"""
sweep = load_results("compress_sweep")
rec_tokens = int(sweep.eval_tokens.iloc[0])
rec_fp = sweep[sweep.family == "fp32"].perplexity.iloc[0]
print("recorded on:", sweep.cpu.iloc[0], "|", sweep.timestamp.iloc[0][:10], "| torch", sweep.torch.iloc[0],
      "|", perplexity_protocol(rec_tokens))
qcols = ["variant", "perplexity", "ppl_increase_pct", "agreement", "size_vs_fp32"]
quant = sweep[sweep.family.isin(["fp32", "rtn", "gptq", "awq"])]
quant[qcols].rename(columns={"agreement": "top-1 match"})
"""),
    code(r"""
def perplexity_protocol_zh(n):  # the words of secbook.measure.perplexity_protocol, in Chinese
    return ("全部" if n is None else f"前 {n:,} 个") + "留出词元的困惑度（窗口为 256，步长为 128）"
if rec_tokens == len(ids):
    say(f"Same protocol as the live rows: the recorded fp32 perplexity is {rec_fp:.2f}, the live one {ppl0:.2f}.",
        zh=f"与上面实时测得的各行评测方案相同：记录的 fp32 困惑度为 {rec_fp:.2f}，实时测得的为 {ppl0:.2f}。")
else:
    say(f"The sweep was recorded with a different protocol ({perplexity_protocol(rec_tokens)}) from the live rows "
        f"({perplexity_protocol(len(ids))}): its fp32 perplexity is {rec_fp:.2f}, the live one {ppl0:.2f}. Compare "
        f"perplexities within one table only; the increases in % are comparable in trend.",
        zh=f"这次扫描记录时所用的评测方案（{perplexity_protocol_zh(rec_tokens)}）与上面实时测得的各行"
           f"（{perplexity_protocol_zh(len(ids))}）不同：它的 fp32 困惑度为 {rec_fp:.2f}，实时测得的为 {ppl0:.2f}。"
           f"困惑度只在同一张表内比较；以 % 计的增幅在趋势上可以比较。")
""", tags=("remove-input",)),
    code(r"""
fig, ax = plt.subplots(figsize=(7, 3.5))
for fam, mk in (("rtn", "o"), ("gptq", "s"), ("awq", "^")):
    d = quant[(quant.family == fam) & (quant.group_size == 64) & (quant.scheme == "sym")].sort_values("bits")
    ax.plot(d.bits, d.perplexity, marker=mk, label=f"{fam} g64")
ax.axhline(rec_fp, color="k", ls="--", label="fp32")
ax.set(xlabel="bits per weight", ylabel="held-out perplexity (log)", yscale="log", xticks=[2, 3, 4],
       title=f"recorded sweep, tiny model ({sweep.cpu.iloc[0]})")
ax.legend(); plt.show()
"""),
    md(r"""
## A real 4-bit file: llama.cpp's Q4_1, block by block

The real model of this book reaches us as llama.cpp's GGUF file, quantized to **Q4_1** ({cite}`llamacpp`).
Its weights are cut into *blocks* of 32 consecutive inputs of one row, and each block is stored in 20 bytes: an
fp16 scale $d$, an fp16 minimum $m$, and 32 unsigned 4-bit codes $q \in \{0, \dots, 15\}$, two per byte (byte
$j$ holds code $j$ in its low four bits and code $j + 16$ in its high four bits). A weight is
$$\hat w = d\,q + m,$$
the asymmetric scheme above, with a *float* minimum in place of an integer zero point. The set-up
(`python -m secbook fetch`) turned these blocks into the fp32 weights that `secbook.load` returns. The `gguf`
package reads the file; `secbook.ggml_blocks` splits its bytes by hand. First, what the file holds:
"""),
    code(r"""
gguf_file = pretrained.gguf_path()
formats = G.tensor_formats(gguf_file)
print(gguf_file.name, f"({gguf_file.stat().st_size:,} bytes)")
formats
"""),
    code(r"""
f = formats.set_index("format")
say(f"{f.loc['Q4_1', 'tensors']} matrices are stored as Q4_1 at {f.loc['Q4_1', 'bits_per_weight']:.2f} bits per weight. "
    + (f"The token embedding (tied to the output layer) is the one Q8_0 tensor: 8-bit codes with one fp16 scale per "
       f"block of 32, {f.loc['Q8_0', 'bits_per_weight']:.2f} bits per weight. " if "Q8_0" in f.index else "")
    + (f"The {f.loc['F32', 'tensors']} normalisation vectors stay in fp32." if "F32" in f.index else ""),
    zh=f"有 {f.loc['Q4_1', 'tensors']} 个矩阵以 Q4_1 存储，每个权重 {f.loc['Q4_1', 'bits_per_weight']:.2f} 比特。"
       + (f"词元嵌入（与输出层共享）是唯一的 Q8_0 张量：8 位编码，每 32 个一块、每块一个 fp16 缩放因子，"
          f"每个权重 {f.loc['Q8_0', 'bits_per_weight']:.2f} 比特。" if "Q8_0" in f.index else "")
       + (f"{f.loc['F32', 'tensors']} 个归一化向量仍为 fp32。" if "F32" in f.index else ""));
""", tags=("remove-input",)),
    md(r"""
Now one block: the first 32 weights of row 0 of layer 0's `down_proj` (`blk.0.ffn_down.weight` in llama.cpp's
names). The attention query and key rows are permuted by the conversion (llama.cpp orders them for its rotary
embedding), so a projection that is not permuted is the one to compare.
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
fmt, raw = G.read_tensor(gguf_file, "blk.0.ffn_down.weight")
print(fmt, "rows x bytes per row:", raw.shape, "=", raw.shape[1] // 20, "blocks of 20 bytes per row")
block = raw[0, :20]
print("the 20 bytes:", " ".join(f"{b:02x}" for b in block))
d, m, q = G.q4_1_split(block)
print(f"scale d = {d.item():.6f} (bytes {block[0]:02x} {block[1]:02x}), minimum m = {m.item():.6f} "
      f"(bytes {block[2]:02x} {block[3]:02x})")
print("codes q:", q[0].tolist())
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
by_hand = d * q[0].float() + m                         # w = d * q + m
held = real.model.layers[0].mlp.down_proj.weight[0, :32].detach()
print("by hand:", [round(v, 4) for v in by_hand[:8].tolist()], "...")
print("model:  ", [round(v, 4) for v in held[:8].tolist()], "...")
print("identical:", torch.equal(by_hand, held))
"""),
    code(r"""
all_q41 = G.q4_1_dequantize(*G.q4_1_split(raw))
guard(torch.equal(all_q41, real.model.layers[0].mlp.down_proj.weight.detach()),
      "the converted model holds exactly the weights the Q4_1 blocks decode to")
say(f"Decoded by hand, all {all_q41.numel():,} weights of this matrix equal the converted model's fp32 weights "
    f"exactly. Every one of them lies on its block's grid of 16 levels m, m + d, …, m + 15·d.",
    zh=f"手工解码后，这个矩阵的全部 {all_q41.numel():,} 个权重与转换后模型的 fp32 权重完全相等。"
       f"每一个都落在所在块的 16 级网格 m, m + d, …, m + 15·d 上。");
""", tags=("remove-input",)),
    md(r"""
### Our asymmetric int4 with groups of 32, on the same weights

Our `rtn int4 g32 asym` has the same grouping, but stores an fp16 scale and a one-byte *integer* zero point per
group (19 bytes per 32 weights), and it stretches each group's range to include 0. Quantizing the converted fp32
weights with it shows two things at once: how close it comes to Q4_1's own values, and what re-quantizing an
already-4-bit model can show. As a control, the Q4_1 quantizer itself (`G.q4_1_quantize`: minimum and
(maximum − minimum)/15 per block, rounded to fp16) is applied to the same weights.
"""),
    code(r"""
rows = []
for name, lin in Q.linear_layers(real).items():
    wt = lin.weight.detach()
    ours = Q.fake_quantize(wt, 4, 32, "asym")
    again = G.q4_1_dequantize(*G.q4_1_quantize(wt))
    rows.append({"layer": name, "weights": wt.numel(), "ours_same": int((ours == wt).sum()),
                 "q4_1_same": int((again == wt).sum()), "err2": float((ours - wt).pow(2).sum()),
                 "norm2": float(wt.pow(2).sum())})
rq = pd.DataFrame(rows)
lin0 = real.model.layers[0].mlp.down_proj
bpw = {"Q4_1 (llama.cpp)": 8 * 20 / 32, "ours: rtn int4 g32 asym": 8 * Q.QuantLinear.from_linear(lin0, 4, 32, "asym").storage_bytes() / lin0.weight.numel()}
requant = pd.DataFrame([
    {"quantizer": "Q4_1 again (control)", "bits per weight": bpw["Q4_1 (llama.cpp)"],
     "weights unchanged": rq.q4_1_same.sum() / rq.weights.sum(), "relative error": 0.0},
    {"quantizer": "ours: rtn int4 g32 asym", "bits per weight": bpw["ours: rtn int4 g32 asym"],
     "weights unchanged": rq.ours_same.sum() / rq.weights.sum(), "relative error": (rq.err2.sum() / rq.norm2.sum()) ** 0.5}])
requant
"""),
    code(r"""
fixed = requant.set_index("quantizer").loc["Q4_1 again (control)", "weights unchanged"]
ours = requant.set_index("quantizer").loc["ours: rtn int4 g32 asym"]
tiny_err = errors.set_index(["bits", "scheme"]).loc[(4, "asym"), 32]
guard(fixed > 0.999, "re-quantizing Q4_1 weights with Q4_1 leaves them (almost) all unchanged", f"{fixed:.4%}")
say(f"Q4_1 applied again left {fixed:.2%} of the weights unchanged: a 4-bit grid re-quantized onto itself is a "
    f"fixed point, so it says nothing about what 4 bits cost this model. Our int4 g32 changed "
    f"{1 - ours['weights unchanged']:.0%} of them, with a relative error of {ours['relative error']:.3f} — of the "
    f"same order as its error on the tiny model's full-precision weights ({tiny_err:.3f} in the first table): its "
    f"integer zero point puts the 16 levels at multiples of the scale, where Q4_1's float minimum put them "
    f"anywhere, so most weights fall between two of our levels. It stores "
    f"{ours['bits per weight']:.2f} bits per weight against Q4_1's {bpw['Q4_1 (llama.cpp)']:.2f}.",
    zh=f"再次应用 Q4_1 后，{fixed:.2%} 的权重保持不变：把一个 4 位网格重新量化到它自身上，得到的是一个不动点，"
       f"所以这说明不了 4 位量化让这个模型付出了什么代价。我们的 int4 g32 改变了其中 "
       f"{1 - ours['weights unchanged']:.0%} 的权重，相对误差为 {ours['relative error']:.3f}——与它在小模型的全精度权重上的"
       f"误差同一量级（第一张表中为 {tiny_err:.3f}）：它的整数零点把 16 个级别放在缩放因子的整数倍上，而 Q4_1 的浮点"
       f"最小值可以把它们放在任何位置，所以大多数权重落在我们的两个级别之间。它每个权重存储 "
       f"{ours['bits per weight']:.2f} 比特，而 Q4_1 为 {bpw['Q4_1 (llama.cpp)']:.2f} 比特。");
""", tags=("remove-input",)),
    md(r"""
What this can and cannot show. The original bf16 weights are not in the file, so the cost of Q4_1 itself — how
much the model lost when llama.cpp quantized it — cannot be measured here; everything measured on this model
starts from the Q4_1 values. Re-quantizing them measures only the *extra* error of a second quantizer on top of the
first. That is why the experiments on methods (bits, groups, GPTQ, AWQ) stay on the tiny model, trained here in
full precision. What the real model can show is whether a quantized variant still *answers* — next.

## Does it still answer? The question set

`secbook.tasks` holds 30 questions written for this book — facts, small arithmetic, Python — each with the
strings that count as a correct answer. Each variant of the real model answers all 30 greedily (at most 24 new
tokens, in one batch), and a reply is correct if it contains an expected string. The variants:

* **fp32** — the converted model as loaded; **bf16** — weights and arithmetic in bfloat16;
* **int8 rtn** — our int8 per-channel weights (symmetric), arithmetic in fp32;
* **int8 torch.ao** — dynamic int8: int8 weights *and* activations quantized on the fly, int8 matrix products;
* **int4 rtn g32** — our asymmetric int4 with groups of 32 (the comparison with Q4_1 above);
* **int4 rtn per-channel** — int4 with one scale per row, a much coarser grid.

The rtn variants are built with `Q.rtn_weights`, which keeps the dequantized values unpacked so that the 30
replies take seconds: a `QuantLinear` model computes exactly the same (checked below on one layer).
"""),
    code(r"""
lq = Q.QuantLinear.from_linear(lin0, 4, 32, "asym")
guard(torch.equal(lq.dequantize(), Q.fake_quantize(lin0.weight.detach(), 4, 32, "asym")),
      "rtn_weights' values are exactly what QuantLinear computes with")
variants = {"fp32": lambda: real, "bf16": lambda: copy.deepcopy(real).to(torch.bfloat16),
            "int8 rtn": lambda: Q.rtn_weights(real, 8, None, "sym"), "int8 torch.ao": lambda: Q.dynamic_int8(real),
            "int4 rtn g32": lambda: Q.rtn_weights(real, 4, 32, "asym"),
            "int4 rtn per-channel": lambda: Q.rtn_weights(real, 4, None, "sym")}
scores = {}
for name, build in variants.items():
    m = build()
    scores[name] = tasks.score(m, rtok, max_new_tokens=24, batch_size=30)
    del m
acc = pd.DataFrame([{"variant": k, **{r.kind: f"{r.correct}/{r.total}" for r in tasks.summary(v).itertuples()},
                     "accuracy": v.correct.mean()} for k, v in scores.items()]); acc
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(6.5, 3.2))
d = acc.sort_values("accuracy")
ax.barh(d.variant, 100 * d.accuracy, color=["tab:gray" if v == "fp32" else "tab:blue" for v in d.variant])
ax.axvline(100 * acc.set_index("variant").accuracy["fp32"], color="k", lw=0.8, ls="--")
for y, v in enumerate(d.accuracy):
    ax.text(100 * v + 0.5, y, f"{round(30 * v)}/30", va="center", fontsize=8)
ax.set(xlabel="questions answered correctly (%)", xlim=(0, 100),
       title="smollm2-135m-instruct (from Q4_1): 30 questions, greedy")
plt.tight_layout(); plt.show()
"""),
    code(r"""
a = acc.set_index("variant").accuracy
base = round(30 * a["fp32"])
far = {k: round(30 * v) - base for k, v in a.items() if k != "fp32" and abs(round(30 * v) - base) > 2}
near = [k for k in a.index if k != "fp32" and k not in far]
changed = {k: int((scores[k].reply != scores["fp32"].reply).sum()) for k in a.index if k != "fp32"}
say(f"With 30 questions one answer is about 3 percentage points, so a difference of one or two answers is noise. "
    f"fp32 answered {base}/30. " + (f"Within two answers of it: {', '.join(near)}. " if near else "")
    + (" ".join(f"**{k}** answered {base + dv}/30 ({dv:+d}), a difference larger than that noise." for k, dv in far.items())
       if far else "No variant differed from fp32 by more than two answers.")
    + " How many of the 30 replies changed at all, right or wrong: "
    + ", ".join(f"{k} {n}" for k, n in changed.items()) + ".",
    zh=f"只有 30 个问题时，一个答案约为 3 个百分点，所以相差一两个答案只是噪声。fp32 答对了 {base}/30。"
       + (f"与它相差不超过两个答案的有：{', '.join(near)}。" if near else "")
       + ("".join(f"**{k}** 答对了 {base + dv}/30（{dv:+d}），差异大于这一噪声。" for k, dv in far.items())
          if far else "没有哪个变体与 fp32 相差超过两个答案。")
       + "30 个回复中有多少发生了变化（无论对错）："
       + "，".join(f"{k} {n} 个" for k, n in changed.items()) + "。");
""", tags=("remove-input",)),
    code(r"""
from torch.ao.quantization import default_dynamic_qconfig
wq, aq = default_dynamic_qconfig.weight(), default_dynamic_qconfig.activation()
g32, tiny4 = a["int4 rtn g32"], live.set_index("variant").increase_pct["rtn int4 g64"]
notes, notes_zh = [], []
if round(30 * g32) < base - 2:
    same = abs(ours["relative error"] / tiny_err - 1) < 0.2
    notes.append(f"The second rounding to int4 g32 cost this model {base - round(30 * g32)} answers, with a relative "
                 f"weight error of {ours['relative error']:.3f}" + (f", about the same as on the tiny model ({tiny_err:.3f}), "
                 f"where 4 bits changed perplexity by only {tiny4:+.1f} %" if same else "") + ". The error of a second "
                 f"4-bit rounding adds to that of the first, which these weights already carry, and a small model may "
                 f"have little redundancy to absorb both. It is a measured effect of quantizing twice — not a measure "
                 f"of what 4 bits cost a model trained in full precision.")
    notes_zh.append(f"第二次舍入到 int4 g32 让这个模型少答对了 {base - round(30 * g32)} 个问题，相对权重误差为 "
                    f"{ours['relative error']:.3f}" + (f"，与在小模型上的大致相同（{tiny_err:.3f}），而在小模型上 4 位量化"
                    f"只让困惑度变化了 {tiny4:+.1f} %" if same else "") + "。第二次 4 位舍入的误差叠加在第一次的误差之上"
                    "（这些权重已经带有第一次的误差），而小模型可能没有多少冗余来同时吸收两者。这是实测到的两次量化的效应"
                    "——而不是衡量 4 位量化会让一个以全精度训练的模型付出多少代价。")
if round(30 * a["int8 torch.ao"]) < base - 2 and round(30 * a["int8 rtn"]) >= base - 2:
    notes.append(f"int8 itself is not the problem — our per-channel int8 weights answered {round(30 * a['int8 rtn'])}/30. "
                 f"torch.ao's default dynamic configuration quantizes the weights per tensor ({wq.qscheme}) and each "
                 f"activation tensor with one scale ({aq.qscheme}, {aq.dtype}): with the outlier channels counted "
                 f"above, one scale per tensor leaves few levels for all the other channels.")
    notes_zh.append(f"问题不在 int8 本身——我们逐通道的 int8 权重答对了 {round(30 * a['int8 rtn'])}/30。"
                    f"torch.ao 默认的动态量化配置对权重逐张量量化（{wq.qscheme}），每个激活张量也只用一个缩放因子"
                    f"（{aq.qscheme}，{aq.dtype}）：有了上面统计的那些离群通道，每个张量一个缩放因子只给其余所有通道"
                    f"留下很少的级别。")
say(" ".join(notes) if notes else "No quantized variant lost more than two answers against fp32.",
    zh="".join(notes_zh) if notes_zh else "没有哪个量化变体比 fp32 少答对两个以上的问题。");
""", tags=("remove-input",)),
    md(r"""
A changed reply is not always a wrong one: greedy decoding follows the most likely token, and a small change in
the weights can tip a near-tie into a different wording that still contains the answer. The replies of two
variants side by side, where they differ:
"""),
    code(r"""
worst = "int4 rtn g32"
diff = pd.DataFrame({"question": scores["fp32"].prompt, "fp32": scores["fp32"].reply, worst: scores[worst].reply,
                     "correct (fp32 → " + worst + ")": [f"{x} → {y}" for x, y in zip(scores["fp32"].correct, scores[worst].correct)]})
changed_rows = diff[scores["fp32"].reply != scores[worst].reply]
if len(changed_rows):
    with pd.option_context("display.max_colwidth", 60):
        display(changed_rows.head(6))
else:
    print(f"No reply of {worst} differed from fp32's.")
"""),
    md(r"""
## The libraries, on the real model

**Dynamic int8 (`torch.ao`).** PyTorch's dynamic quantization stores int8 weights and quantizes the *activations*
on the fly, batch by batch, so the matrix multiply itself runs in int8 (FBGEMM / oneDNN on x86) — it changes the
kernel, not just the storage.

**bitsandbytes.** LLM.int8() {cite}`dettmers2022llmint8` and the 4-bit NF4 format of QLoRA
{cite}`dettmers2023qlora` load through transformers' `BitsAndBytesConfig`; bitsandbytes ≥ 0.45 runs them on a CPU
too, where its kernels are fallbacks written for correctness more than speed. NF4 uses blocks of 64 weights with
an absmax scale and 16 levels placed at the quantiles of a normal distribution.

**torchao** provides weight-only int8 (`Int8WeightOnlyConfig`) as a tensor subclass that `torch.compile` can fuse;
its int4 weight-only kernels are for CUDA.

All are applied to the real model and measured on the same chat prompt: stored bytes, and decode tokens/s (8 new
tokens, Hugging Face `generate`) timed in turn — every variant once per round, five rounds — so that the machine's
load hits them alike.
"""),
    code(r"""
libs = {"fp32": real, "bf16": copy.deepcopy(real).to(torch.bfloat16), "torch.ao dynamic int8": Q.dynamic_int8(real),
        "torchao int8 weight-only": Q.torchao_quantize(real, "int8wo")}
for mode in ("int8", "nf4"):
    try:
        libs[f"bitsandbytes {mode}"] = Q.bnb_quantize(str(pretrained.model_dir()), mode)
    except Exception as e:  # a library path that does not run here is a result too
        print(f"bitsandbytes {mode} did not load here: {type(e).__name__}: {e}")
prompt = pretrained.chat_ids(rtok, "Name three primary colours.")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    lib_speed = tok_s_in_turn({k: hf_generate_fn(m) for k, m in libs.items()}, prompt, 8, rounds=5)
lib_table = pd.DataFrame([{"variant": k, "MB": model_bytes(m) / 1e6, "size vs fp32": model_bytes(m) / model_bytes(real),
                           "decode tok/s (median)": np.median(lib_speed[k]), "min": min(lib_speed[k]), "max": max(lib_speed[k])}
                          for k, m in libs.items()]).sort_values("decode tok/s (median)", ascending=False)
print("measured on:", describe_machine()); lib_table
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(6.5, 3.2))
d = lib_table.sort_values("decode tok/s (median)")
ax.barh(d.variant, d["decode tok/s (median)"], xerr=[d["decode tok/s (median)"] - d["min"], d["max"] - d["decode tok/s (median)"]],
        color=["tab:gray" if v == "fp32" else "tab:blue" for v in d.variant])
for y, (v, mb) in enumerate(zip(d["decode tok/s (median)"], d.MB)):
    ax.text(v, y + 0.3, f" {mb:.0f} MB", fontsize=7)
ax.set(xlabel="decode tokens/s, median of 5 rounds in turn (bars: min-max)", title="smollm2-135m-instruct, batch 1")
fig.text(0.01, 0.01, describe_machine(), fontsize=6); plt.tight_layout(); plt.show()
"""),
    code(r"""
verdicts = [compare(lib_speed, k, "fp32") for k in libs if k != "fp32"]
smallest = lib_table.sort_values("MB").iloc[0]
emb = real.model.embed_tokens.weight
fastest = lib_table.iloc[0].variant
answered = {"torch.ao dynamic int8": "int8 torch.ao", "bf16": "bf16", "fp32": "fp32"}
say("Against fp32 on this machine, timed in turn: " + "; ".join(c.words() for c in verdicts) + ". "
    f"The smallest variant was {smallest.variant} at {smallest['size vs fp32']:.2f}x the fp32 bytes"
    + (f" — not the eighth that 4 bits promise, because the {emb.shape[0]:,} × {emb.shape[1]} embedding "
       f"({emb.numel() / sum(p.numel() for p in real.parameters()):.0%} of the parameters) is left in full "
       f"precision by every library here" if smallest["size vs fp32"] > 0.25 else "") + ". "
    + (f"The fastest, {fastest}, is the variant that answered {round(30 * a[answered[fastest]])}/30 questions "
       f"above: speed and size say nothing about answers." if fastest in answered and fastest != "fp32" else "")
    + " Fewer bytes become speed only where a kernel computes in the smaller type faster than it would read the "
      "larger one.",
    zh="在这台机器上与 fp32 轮流测量比较：" + "；".join(c.words_zh() for c in verdicts) + "。"
       f"最小的变体是 {smallest.variant}，为 fp32 字节数的 {smallest['size vs fp32']:.2f} 倍"
       + (f"——不是 4 位所许诺的八分之一，因为 {emb.shape[0]:,} × {emb.shape[1]} 的嵌入层"
          f"（占参数的 {emb.numel() / sum(p.numel() for p in real.parameters()):.0%}）在这里的每个库中都保留为全精度"
          if smallest["size vs fp32"] > 0.25 else "") + "。"
       + (f"最快的 {fastest} 正是上面答对了 {round(30 * a[answered[fastest]])}/30 个问题的那个变体："
          f"速度和大小说明不了回答的好坏。" if fastest in answered and fastest != "fp32" else "")
       + "只有在内核用较小的类型计算比读取较大的类型还快的地方，更少的字节才会变成速度。");
""", tags=("remove-input",)),
    md(r"""
On a GPU the same calls use the CUDA kernels of bitsandbytes and torchao (and torchao's int4). The cell below
runs only there.
"""),
    code(r"""
if not torch.cuda.is_available():
    say("No CUDA GPU here: on a GPU this cell loads the real model in nf4 on cuda and times its decoding.",
        zh="这里没有 CUDA GPU：在 GPU 上，这个单元格会在 cuda 上以 nf4 加载真实模型，并为它的解码计时。")
else:
    from secbook.measure import time_generation
    g4 = Q.bnb_quantize(str(pretrained.model_dir()), "nf4", device="cuda")
    print(time_generation(g4, rtok).as_dict())
"""),
    md(r"""
## Try it

The panel quantizes a fresh copy of the tiny model with the chosen method, bits, group size and scheme
and measures it live (perplexity with the book's protocol, real bytes, prefill speed). The line under it
is one run of the same update, so the static page shows a result too.
"""),
    code(r"""
from secbook.widgets import compression_panel
panel = compression_panel(method="rtn", bits=3, group_size=64)
display(panel)
print(panel.update()[1])
"""),
    summary(["Quantization stores each weight as a small integer and a shared scale (and zero point or minimum); "
             "fewer bits mean a coarser grid and a larger rounding error, finer groups and the asymmetric scheme a "
             "smaller one.",
             "A model is only smaller if the integers are packed; scales, zero points and layers left in full "
             "precision (the embedding) count too.",
             "GPTQ feeds each column's rounding error forward to the columns not yet quantized; AWQ protects the "
             "weights that multiply large activations. Both need a little calibration text.",
             "llama.cpp's Q4_1 stores blocks of 32 weights as an fp16 scale, an fp16 minimum and 4-bit codes (5 bits "
             "per weight); the real model of this book is those values, so its own quantization cost cannot be "
             "measured from it, and method experiments need a model trained in full precision.",
             "Judge a quantized model by its answers as well as its perplexity, and remember that with 30 questions "
             "one answer is about 3 points.",
             "Quantizing an already-quantized model adds a second rounding error to the first; per-tensor scales "
             "for activations with outlier channels waste most of their levels.",
             "Smaller storage turns into speed only with a kernel that computes in the smaller type; compare speeds "
             "timed in turn."]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
**Symmetric int8, per channel.** Write `my_quant(w)` returning `(q, scale)`: one scale per output row,
$s = \max|w_{row}| / 127$, $q = \mathrm{round}(w / s)$. Check it with
`secbook.exercises.check_int8_per_channel(my_quant)`.
"""),
    solution(r"""
from secbook.exercises import check_int8_per_channel

def my_quant(w):
    scale = w.abs().amax(dim=1) / 127
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale

check_int8_per_channel(my_quant)
"""),
    exercise(2, r"""
**Bytes of a real layer.** How many bytes does a 4096 × 4096 layer take at int4 with groups of 128 (fp16 scales,
symmetric)? And in llama.cpp's Q4_1? Check the first with `Q.QuantLinear.from_linear(torch.nn.Linear(4096, 4096,
bias=False), 4, 128).storage_bytes()`.
"""),
    solution(r"""
ours = 4096 * 4096 // 2 + 4096 * (4096 // 128) * 2          # half a byte per weight + one fp16 scale per group
print(ours, Q.QuantLinear.from_linear(torch.nn.Linear(4096, 4096, bias=False), 4, 128).storage_bytes())
q4_1 = 4096 * (4096 // 32) * 20                              # 20 bytes per block of 32
print(f"int4 g128: {ours:,} bytes ({8 * ours / 4096**2:.3f} bits/weight); Q4_1: {q4_1:,} bytes "
      f"({8 * q4_1 / 4096**2:.3f} bits/weight)")
"""),
    exercise(3, r"""
**Asymmetric at 2 bits.** Using the first table, why does the asymmetric scheme help most at 2 bits? Quantize the
tiny model with `scheme="asym"` at int2 g64 and compare its perplexity with the symmetric int2 g64 row.
"""),
    solution(r"""
qa, _ = Q.quantize(secbook.load("tiny")[0], 2, 64, "asym")
ppl_a, _, _ = evaluate(qa, ids, ref)
sym2 = live.set_index("variant").perplexity["rtn int2 g64"]
print(f"int2 g64: symmetric {sym2:.2f}, asymmetric {ppl_a:.2f} (fp32 {ppl0:.2f}; {perplexity_protocol(len(ids))})")
say("A symmetric 2-bit grid has levels -2, -1, 0, 1 times the scale, with the scale set by max|w|: one side "
    "of the range gets a single level and much of the grid can fall where a group has no weights. The "
    "asymmetric grid spans [min, max] with all four levels, which matters most when there are only four.",
    zh="对称的 2 位网格的级别是缩放因子的 -2、-1、0、1 倍，而缩放因子由 max|w| 决定：范围的一侧只分到一个级别，"
       "网格的很大一部分可能落在组内没有权重的地方。非对称网格用全部四个级别覆盖 [min, max]，"
       "而级别只有四个时，这一点最为重要。");
"""),
    exercise(4, r"""
**GPTQ without act-order.** Re-run the GPTQ section with `act_order=False` (`Q.quantize(..., method="gptq",
act_order=False)`). What changes, and why might the order of the columns matter?
"""),
    solution(r"""
gn, _ = Q.quantize(secbook.load("tiny")[0], 3, 64, method="gptq", calib=calib, act_order=False)
ppl_n, match_n, _ = evaluate(gn, ids, ref)
print(f"int3 g64 GPTQ: act-order {ppl_g:.2f}, in order {ppl_n:.2f}; round-to-nearest {rtn3.perplexity:.2f} "
      f"(fp32 {ppl0:.2f})")
say("GPTQ can only push a column's error onto the columns after it. Visiting the columns with the largest "
    "Hessian diagonal (the inputs with the most energy) first quantizes the most important ones while the "
    "most columns are left to absorb their error; in plain order they may come last, with little left to "
    "compensate. How much it matters depends on how uneven the input energies are.",
    zh="GPTQ 只能把一列的误差推给它后面的列。先访问 Hessian 对角元最大的列（能量最大的输入），就能趁剩下的列最多、"
       "最能吸收误差时量化最重要的列；按原来的顺序，它们可能排在最后，几乎没有剩下的列来补偿。"
       "这有多重要，取决于各个输入的能量有多不均匀。");
"""),
    exercise(5, r"""
**Another block.** Decode block 5 of row 100 of `blk.3.ffn_up.weight` by hand and compare it with the converted
model's `model.layers[3].mlp.up_proj.weight`. Which weights of the block sit exactly at its minimum?
"""),
    solution(r"""
fmt5, raw5 = G.read_tensor(gguf_file, "blk.3.ffn_up.weight")
d5, m5, q5 = G.q4_1_split(raw5[100, 5 * 20:6 * 20])
w5 = d5 * q5[0].float() + m5
held5 = real.model.layers[3].mlp.up_proj.weight[100, 5 * 32:6 * 32].detach()
print(fmt5, "identical:", torch.equal(w5, held5), "| at the minimum (code 0):", torch.nonzero(q5[0] == 0).flatten().tolist())
"""),
    exercise(6, r"""
**Which scale hurts torch.ao's int8?** Build the dynamic int8 model again with one weight scale per output channel
(`torch.ao.quantization.per_channel_dynamic_qconfig`) and ask it the 30 questions. Does it recover the answers
that the default (per-tensor) configuration lost? What is left quantized per tensor?
"""),
    solution(r"""
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
spec = {n: per_channel_dynamic_qconfig for n in Q.linear_layers(real)}
pc = quantize_dynamic(copy.deepcopy(real), spec, dtype=torch.qint8)
n_pc = int(tasks.score(pc, rtok, max_new_tokens=24, batch_size=30).correct.sum())
n_default, n_fp32 = int(scores["int8 torch.ao"].correct.sum()), int(scores["fp32"].correct.sum())
print(f"torch.ao dynamic int8, per-tensor weights: {n_default}/30; per-channel weights: {n_pc}/30; fp32: {n_fp32}/30")
recovered = n_pc >= n_fp32 - 2
say(("Recovered to within two answers of fp32." if recovered else
     "Still more than two answers below fp32: the weights' scale was not the whole story.")
    + " The activations are still quantized with one scale per tensor, recomputed for every batch: an outlier "
      "channel sets that scale, and the ordinary channels share the few levels left (LLM.int8() keeps outlier "
      "channels in 16 bits for that reason).",
    zh=("恢复到了与 fp32 相差不超过两个答案。" if recovered else
        "仍比 fp32 少两个以上的答案：权重的缩放因子并不是问题的全部。")
       + "激活值仍然是每个张量一个缩放因子，而且每个批次都重新计算：一个离群通道决定了这个缩放因子，"
         "普通通道只能共用剩下的少数几个级别（LLM.int8() 正是因此把离群通道保留为 16 位）。");
"""),
]
