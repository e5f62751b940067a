"""Chapter 3.1.1 — Quantization: round-to-nearest from scratch, GPTQ, AWQ, and the libraries that prove it."""
import sys

sys.path.insert(0, "tools")
from nb import code, md, solution  # noqa: E402

NAME = "03_1a_quantization"

SETUP = r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import torch, pandas as pd, matplotlib.pyplot as plt
from secbook import quantize as Q
from secbook.compress import eval_ids, evaluate, forward_speed, model_size, EVAL_TOKENS
from secbook.measure import describe_machine, load_results
pd.set_option("display.width", 140); pd.set_option("display.precision", 3)
print("measured on:", machine)
"""

CELLS = [
    md(r"""
# Quantization

A weight stored in 32-bit floating point costs 4 bytes; the same weight as an 8-bit integer costs 1, as a
4-bit integer half a byte. Decoding reads every weight once per token, so fewer bytes means less memory
traffic — and, when the kernels are right, more tokens per second. The price is rounding error. This
section builds weight quantization from scratch on the book's tiny model (5.8 M parameters, trained on
the Python standard library), measures what each choice costs in held-out perplexity, then checks the
results against the libraries that do it for production: `torch.ao`, bitsandbytes and torchao.

The integer-plus-scale scheme used everywhere below is the affine quantization of {cite}`jacob2018quantization`:
a weight $w$ is stored as an integer $q$ and recovered as $\hat w = (q - z)\,s$ with a scale $s$ and a
zero point $z$.
"""),
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
pd.DataFrame(rows)
"""),
    md(r"""
Each bit removed roughly doubles the error; finer groups and the asymmetric scheme each buy back part
of it. The histogram shows why: the weights are bell-shaped, and at 3 bits only eight levels (vertical
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
plus fp16 scales, dequantizes in `forward` and calls `F.linear`. Its `storage_bytes()` reports what it
really holds, and `secbook.measure.model_bytes` uses it. The output below is checked by the book's tests
on every build.
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
`lm_head`) for a `QuantLinear` and returns a report. Each variant is scored on the first
{glue}`n_eval` tokens of the held-out text: perplexity, *agreement* (the fraction of positions where the
greedy next token is the fp32 model's) and real bytes.
"""),
    code(r"""
from myst_nb import glue
ids = eval_ids(tok, EVAL_TOKENS); glue("n_eval", len(ids), display=False)
ppl0, _, ref = evaluate(model, ids)
results = [{"variant": "fp32", "perplexity": ppl0, "agreement": 1.0, "MB": model_size(model) / 1e6}]
for bits, g in [(8, None), (4, 64), (3, 64), (3, None), (2, 64)]:
    qm, rep = Q.quantize(secbook.load("tiny")[0], bits, g)
    ppl, agree, _ = evaluate(qm, ids, ref)
    results.append({"variant": f"rtn int{bits} {'pc' if g is None else f'g{g}'}", "perplexity": ppl,
                    "agreement": agree, "MB": model_size(qm) / 1e6, "layers_vs_fp32": rep.ratio})
live = pd.DataFrame(results).assign(increase_pct=lambda d: 100 * (d.perplexity / ppl0 - 1)); live
"""),
    md(r"""
Eight bits are free; 4 bits with groups of 64 cost little; 3 bits start to hurt, and 2 bits with plain
rounding break the model. The quantized layers shrink to about an eighth at 4 bits (scales included);
the whole model shrinks less, because the 4096 × 256 embedding stays in fp32.

## Where the error comes from

The report keeps each layer's relative weight error; `Q.activation_stats` records the largest |input| of
every input channel. A few channels with inputs far above the rest — *outlier features*
{cite}`dettmers2022llmint8` — are what make activation quantization hard, and what AWQ exploits below.
"""),
    code(r"""
qm, rep = Q.quantize(secbook.load("tiny")[0], 3, 64)
calib = Q.calibration_ids(tok, 8, 256)
amax = Q.activation_stats(model, calib)
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.2))
rep.frame().plot.bar(x="layer", y="rel_error", ax=a, legend=False, xticks=[]); a.set(title="int3 g64: relative error per layer", xlabel="42 layers, in model order")
name = "model.layers.0.mlp.down_proj"
b.plot(amax[name].numpy()); b.set(title=f"max |input| per channel: {name}", xlabel="channel")
plt.show()
print({n: Q.outlier_channels(v)[:8] for n, v in amax.items() if "layers.0." in n})
"""),
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
ppl_g, agree_g, _ = evaluate(gq, ids, ref)
rtn3 = live.set_index("variant").loc["rtn int3 g64"]
pd.DataFrame([{"variant": "rtn int3 g64", "perplexity": rtn3.perplexity, "agreement": rtn3.agreement},
              {"variant": "gptq int3 g64", "perplexity": ppl_g, "agreement": agree_g}]
             ).assign(increase_pct=lambda d: 100 * (d.perplexity / ppl0 - 1))
"""),
    md(r"""
## AWQ: protect the salient channels

AWQ {cite}`lin2024awq` observes that the weights multiplying large activations matter most. It scales
input channel $j$ of $W$ up by $s_j = \overline{|x_j|}^{\,\alpha}$ before quantizing (so those weights get
relatively finer steps) and divides the input by $s_j$, choosing $\alpha \in [0, 1]$ per layer to minimise
the output error on calibration data. `Q.awq_search` does that search; `QuantLinear` keeps $1/s$ as a
per-channel input scale. The recorded sweep below compares it with RTN and GPTQ at every bit width.

## The recorded sweep: every bit width, every method

`python -m secbook compress-sweep` runs the whole grid offline and writes
`data/results/compress_sweep.csv` (machine columns included). The perplexities are on the same
{glue}`n_eval` held-out tokens as above, so the live rows can be compared with the recorded ones. (The
CSV also has speed columns, but they were taken one variant after another on a machine shared with other
jobs, so they are not comparable across rows; the speeds this chapter quotes are measured side by side.)
"""),
    code(r"""
sweep = load_results("compress_sweep")
print("recorded on:", sweep.cpu.iloc[0], "|", sweep.torch.iloc[0] if "torch" in sweep else "")
qcols = ["variant", "perplexity", "ppl_increase_pct", "agreement", "size_vs_fp32"]
quant = sweep[sweep.family.isin(["fp32", "rtn", "gptq", "awq"])]
quant[qcols]
"""),
    code(r"""
fig, ax = plt.subplots(figsize=(7, 3.5))
for fam, mk in (("rtn", "o"), ("gptq", "s"), ("awq", "^")):
    d = quant[(quant.family == fam) & (quant.group_size == 64) & (quant.scheme == "sym")].sort_values("bits")
    ax.plot(d.bits, d.perplexity, marker=mk, label=f"{fam} g64")
ax.axhline(quant[quant.family == "fp32"].perplexity.iloc[0], color="k", ls="--", label="fp32")
ax.set(xlabel="bits per weight", ylabel="held-out perplexity (log)", yscale="log", xticks=[2, 3, 4],
       title="recorded: perplexity vs bits")
ax.legend(); plt.show()
"""),
    md(r"""
## The libraries

**Dynamic int8 (`torch.ao`).** PyTorch's dynamic quantization stores int8 weights and quantizes the
*activations* on the fly, batch by batch, so the matrix multiply itself runs in int8 (FBGEMM / oneDNN on
x86). It is the one path here that changes the kernel, not just the storage — so it is the one to time.
The two speeds below are measured side by side, prefill of 2 × 256 tokens.
"""),
    code(r"""
dq = Q.dynamic_int8(model)
ppl_d, agree_d, _ = evaluate(dq, ids, ref)
speed = {"fp32": forward_speed(model), "torch.ao dynamic int8": forward_speed(dq)}
pd.DataFrame([{"variant": k, "prefill_tokens_per_s": v} for k, v in speed.items()]).assign(
    perplexity=[ppl0, ppl_d], agreement=[1.0, agree_d])
"""),
    md(r"""
**bitsandbytes.** LLM.int8() {cite}`dettmers2022llmint8` and the 4-bit NF4/FP4 formats of QLoRA
{cite}`dettmers2023qlora` load through transformers' `BitsAndBytesConfig`; with bitsandbytes ≥ 0.45 they
run on CPU too (slowly: the CPU kernels are fallbacks). NF4 uses blocks of 64 weights with an absmax
scale — the same grouping as our `rtn int4 g64`, with a different set of 16 levels.
"""),
    code(r"""
bnb_rows = []
for mode in ("int8", "nf4"):
    bm = Q.bnb_quantize("tiny", mode)
    p, a, _ = evaluate(bm, ids, ref)
    bnb_rows.append({"variant": f"bitsandbytes {mode}", "perplexity": p, "agreement": a})
ours = live.set_index("variant").loc[["rtn int8 pc", "rtn int4 g64"]].reset_index()[["variant", "perplexity", "agreement"]]
cmp = pd.concat([pd.DataFrame(bnb_rows), ours]).assign(increase_pct=lambda d: 100 * (d.perplexity / ppl0 - 1)); cmp
"""),
    md(r"""
On a GPU (Colab) the same call with `device="cuda"` uses the real int8 / 4-bit CUDA kernels. The cell
below runs only there.
"""),
    code(r"""
if not torch.cuda.is_available():
    print("No CUDA GPU here: on a GPU this cell loads the tiny model in nf4 on cuda and times decoding.")
else:
    from secbook.measure import time_generation
    g4 = Q.bnb_quantize("tiny", "nf4", device="cuda")
    print(time_generation(g4, tok).as_dict())
"""),
    md(r"""
**torchao** provides weight-only int8 and int4 (`Int8WeightOnlyConfig`, `Int4WeightOnlyConfig`) for
`torch.compile`d models; `Q.torchao_quantize` applies them. The recorded sweep has its row (and an
`error` column for any library path that does not run on the recording machine):
"""),
    code(r"""
lib = sweep[sweep.family.isin(["dynamic_int8", "bnb", "torchao"])]
lib[[c for c in ("variant", "perplexity", "ppl_increase_pct", "agreement", "size_vs_fp32", "error") if c in lib]]
"""),
    md(r"""
## Try it

The panel quantizes a fresh copy of the tiny model with the chosen method, bits, group size and scheme
and measures it live (perplexity on 1024 held-out tokens, real bytes, prefill speed). The line under it
is one run of the same update, so the static page shows a result too.
"""),
    code(r"""
from secbook.widgets import compression_panel
panel = compression_panel(method="rtn", bits=3, group_size=64)
display(panel)
print(panel.update()[1])
"""),
    md(r"""
## Exercises

1. **Symmetric int8, per channel.** Write `my_quant(w)` returning `(q, scale)`: one scale per output row,
   $s = \max|w_{row}| / 127$, $q = \mathrm{round}(w / s)$. Check it with
   `secbook.exercises.check_int8_per_channel(my_quant)`.
2. **Bytes of a real layer.** How many bytes does a 4096 × 4096 layer take at int4 with groups of 128
   (fp16 scales, symmetric)? Check your number with `Q.QuantLinear.from_linear(torch.nn.Linear(4096, 4096,
   bias=False), 4, 128).storage_bytes()`.
3. **Asymmetric at 2 bits.** Using the table of section 1, why does the asymmetric scheme help most at
   2 bits? Quantize the model with `scheme="asym"` at int2 g64 and compare with the recorded rows.
4. **GPTQ without act-order.** Re-run section 5 with `act_order=False`. What changes?
"""),
    solution(r"""
from secbook.exercises import check_int8_per_channel

def my_quant(w):
    scale = w.abs().amax(dim=1) / 127
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale

check_int8_per_channel(my_quant)
"""),
    solution(r"""
# 16.8 M weights x 0.5 byte + (4096 x 32 groups) fp16 scales
print(4096 * 4096 // 2 + 4096 * (4096 // 128) * 2,
      Q.QuantLinear.from_linear(torch.nn.Linear(4096, 4096, bias=False), 4, 128).storage_bytes())
"""),
]
