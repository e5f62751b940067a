"""Chapter 7 — Tools and resources: what each tool does, GGUF's formats, the CPU engines side by side with ours (live
where installed, else the recorded comparison), ONNX Runtime live, TensorRT on GPU, a checked reading list."""
import sys

sys.path.insert(0, "tools")
sys.path.insert(0, ".")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

from secbook.toolkit import BOOK_READING  # noqa: E402

NAME = "07_tools"

_reading = "\n".join(f"| {ch} | {{cite}}`{key}` | {why} |" for ch, key, why in BOOK_READING)

CELLS = [
    md(r"""
# Tools and resources

The source ends with a list of tools — PyTorch, TensorFlow, TensorRT, ONNX Runtime, NVIDIA GPUs, Google
TPUs — and a reading list. This chapter turns the list into something you can act on: a table of what each
tool does and when to reach for it (with the LLM-specific tools the source leaves out); the engines readers
actually run a small model with on a laptop — llama.cpp {cite}`llamacpp`, CTranslate2 {cite}`ctranslate2` and
ONNX Runtime GenAI {cite}`onnxruntimegenai` — run side by side with this book's own C++ decode step on the same
real model; ONNX Runtime {cite}`onnxruntime` run on an exported graph and checked against PyTorch; TensorRT where a
GPU exists; and the reading list checked paper by paper and replaced by the papers this book actually uses.
"""),
    opening(["choose a tool or engine for a deployment (one user on a laptop, many users on GPUs, a non-Python app)",
             "read GGUF's block formats (Q8_0, Q4_0, Q4_1, Q4_K) as the quantization schemes of chapter 3.1 and "
             "compute their bits per weight",
             "compare engines fairly: same weights, same prompt, same threads, timed in turn, tokens checked",
             "explain a speed difference between two engines as bytes per token × bytes per second"],
            ["chapter 3.1 (quantization: scales, zero points, groups) and chapter 3.2 (our C++ decode step)",
             "chapter 4 (the roofline: decode reads every weight once per token)",
             "optional: `make engines` installs llama.cpp, CTranslate2 and ONNX Runtime GenAI to run the comparison "
             "live; without them the chapter shows the recorded one"], 35),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import time, torch, pandas as pd
import matplotlib.pyplot as plt
from secbook import toolkit, pretrained
from secbook.engines import formats, report, suite
from secbook.measure import prompt_ids
from secbook.claims import say, guard, times
print("measured on:", machine)
"""),
    md(r"""
## What each tool does

The first six rows are the source's; the others are the tools an LLM practitioner reaches for today.
The last column says what the machine running this page has (an installed version, or *not installed*).
"""),
    code(r"""
pd.set_option("display.max_colwidth", 120)
toolkit.tools_table()
"""),
    md(r"""
Note that the source's list mixes three kinds of thing: **frameworks** that define and run models (PyTorch,
TensorFlow), **inference engines and compilers** that take a finished model and run it faster (ONNX Runtime,
TensorRT, and the LLM-specific vLLM, llama.cpp, CTranslate2 and ONNX Runtime GenAI), and **hardware** (GPUs, TPUs).
The libraries torchao and bitsandbytes sit inside PyTorch and make the weights smaller (chapter 3.1).

**When to use which**, as a rule of thumb for LLM inference:

* *Exploring, teaching, measuring*: PyTorch + transformers — everything in this book. Add `torch.compile` and a
  static KV cache before anything else (chapter 3.2).
* *One user, a laptop or phone, no GPU*: llama.cpp with a 4-bit GGUF file — directly, or through the apps built on
  it (Ollama, LM Studio), which download GGUF files and run llama.cpp underneath.
* *A small model inside a Python or C++ service on CPUs*: CTranslate2 (int8 weights from a transformers model in one
  conversion) or ONNX Runtime GenAI (an ONNX graph with its KV cache, int4 weights, and bindings for C#, Java and C).
* *Many users on GPUs*: a serving engine — vLLM {cite}`kwon2023vllm` or TensorRT-LLM {cite}`tensorrtllm` — for
  continuous batching and paged KV-cache memory; their gains come from batching many requests, which a one-user CPU
  comparison like the one below does not exercise.
* *Squeeze an NVIDIA deployment to the last millisecond*: TensorRT (through TensorRT-LLM or ONNX Runtime's
  TensorRT execution provider).
* *The model does not fit in memory*: bitsandbytes 8/4-bit {cite}`dettmers2022llmint8` or torchao int4
  weight-only; for speed on GPU, torchao with `torch.compile`.

## GGUF's block formats are chapter 3.1's schemes

A GGUF file (llama.cpp's format) stores each weight matrix in one *type*. The quantized types are the group-wise
schemes of chapter 3.1 with a group of 32 weights along a row — llama.cpp calls a group a *block* — and fp16
parameters per block: **Q8_0** is symmetric 8-bit (one scale $d$ per block, $w = d\,q$), **Q4_0** symmetric 4-bit
($w = d\,(q - 8)$), **Q4_1** asymmetric 4-bit (a scale and a *minimum* $m$, $w = d\,q + m$: chapter 3.1's zero point,
stored as a float instead of an integer). **Q4_K**, one of the "K-quants", goes one step further: blocks of 32 are
grouped into super-blocks of 256 whose per-block scales and minimums are themselves quantized to 6 bits against one
fp16 super-scale — quantizing the quantization parameters, as QLoRA's double quantization does
{cite}`dettmers2023qlora`. The bits per weight follow from each block's size in bytes, which the `gguf` package
records:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
from torch import nn
from secbook.quantize import QuantLinear
fmts = formats.quant_formats()
ours = {"Q8_0": (8, "sym"), "Q4_0": (4, "sym"), "Q4_1": (4, "asym")}  # chapter 3.1: quantize(bits, group_size=32, scheme)
layer = nn.Linear(576, 64, bias=False)
def our_bits(bits, scheme):
    q = QuantLinear.from_linear(layer, bits=bits, group_size=32, scheme=scheme)
    return 8 * q.storage_bytes() / layer.weight.numel()
fmts["chapter 3.1 scheme (group 32)"] = [f"{ours[f][0]}-bit {ours[f][1]}" if f in ours else "" for f in fmts["format"]]
fmts["its bits per weight"] = [our_bits(*ours[f]) if f in ours else float("nan") for f in fmts["format"]]
fmts.round(3)
"""),
    md(r"""
The symmetric formats cost the same in both: 4 or 8 bits plus an fp16 scale per 32 weights. The asymmetric ones
differ only in how they store the offset: chapter 3.1 keeps an 8-bit integer zero point, Q4_1 an fp16 minimum (so a
block's offset need not be a whole step). The book's real model is such a file:
"""),
    code(r"""
say(pretrained.PROVENANCE + ".", zh=pretrained.PROVENANCE_ZH + "。")
original = pretrained.gguf_path()
types = formats.gguf_tensor_types(original)
say(f"Its GGUF file holds {sum(types.values())} tensors: " + ", ".join(f"{n} in {t}" for t, n in types.items())
    + " — the 1-D norm weights stay F32, the token embedding (which is also the output layer) is Q8_0, and every "
      "other matrix is Q4_1.",
    zh=f"它的 GGUF 文件含有 {sum(types.values())} 个张量：" + "，".join(f"{n} 个为 {t}" for t, n in types.items())
       + "——1-D 的归一化层权重保持 F32，词元嵌入（它同时也是输出层）为 Q8_0，其余每个矩阵都是 Q4_1。");
""", tags=("remove-input",)),
    md(r"""
Because the fp32 weights every chapter loads were dequantized from this file, each block of 32 already holds at most
16 distinct values, evenly spaced. Quantizing those weights to Q4_1 again finds the same minimum and step in (almost)
every block and gives them back, while Q4_0 — symmetric, with no minimum — has to round them a second time. One
matrix shows it:
"""),
    code(r"""
import gguf, numpy as np
from gguf.quants import quantize, dequantize
w = secbook.load(pretrained.NAME)[0].model.layers[0].mlp.down_proj.weight.detach().numpy()
change = {}
for fmt in ("Q4_1", "Q4_0", "Q8_0"):
    t = gguf.GGMLQuantizationType[fmt]
    change[fmt] = np.abs(dequantize(quantize(w, t), t) - w)
    print(f"{fmt}: largest change {change[fmt].max():.2e}, mean change {change[fmt].mean():.2e} "
          f"(the weights' mean |w|: {np.abs(w).mean():.2e})")
guard(change["Q4_1"].max() < 0.01 * change["Q4_0"].max(), "requantizing to Q4_1 gives the weights back",
      f"largest changes: Q4_1 {change['Q4_1'].max():.1e}, Q4_0 {change['Q4_0'].max():.1e}")
"""),
    md(r"""
The largest changes are what the formats imply: Q4_1 returns the weights up to fp16 rounding of its parameters,
Q8_0 changes them by at most half of its (small) step, and Q4_0 changes them by up to half of a 4-bit step — a
second, lossy quantization. So on this model **llama.cpp's Q4_1 and our fp32 weights are the same model**, and the
F32, Q8_0 and Q4_0 files below are written from that one file (`secbook.engines.formats`).

## The engines side by side

Four ways to run the same real model, each with its own format:

* **llama.cpp** (through `llama-cpp-python`) reads the GGUF files: the original Q4_1, and F32, Q8_0 and Q4_0 files
  written from it. Its CPU kernels multiply quantized blocks by activations rounded to 8-bit blocks too (int8 × int8
  dot products), with the vector instructions it was compiled for.
* **CTranslate2** converts the fp32 Hugging Face folder into its own `model.bin`, float32 or int8 (one scale per
  output row), and runs a C++ decoder.
* **ONNX Runtime GenAI** builds one ONNX graph of the decoder with its KV cache (its *model builder*), fp32 or int4
  (4-bit blocks of 32 multiplied by `MatMulNBits`), and runs the generation loop in C++.
* **Ours**: HF `generate` (PyTorch eager), and the book's whole decode step in C++ (`secbook.kernels.CppDecoder`,
  chapter 3.2) on fp32 weights or on its int8 weights (one scale per output row, activations rounded to int16).

The harness, `python -m secbook bench --suite engines`, gives every engine the same prompt ids (no tokenizer of
theirs takes part), greedy decoding, batch 1 and the same number of threads, converts each format once, and times
all entries *in turn*: each round runs every entry once — a one-token call (the prefill, TTFT) and a full call —
so that a change in the machine's load hits all of them alike. It checks every entry's tokens against HF
`generate` on the fp32 weights. The next cell runs it live, shortened, when the engines are installed, and
otherwise reads the last recorded run; the sentence under it says which.
"""),
    code(r"""
df, source = report.comparison()
say(source, zh=report.about_zh(df))
NOTES_ZH = {"llama.cpp's extra weight buffers (AMX, repacked layouts) are off: decoding with them crashed on this CPU "
            "(ggml-org/llama.cpp#20824)": "llama.cpp 的额外权重缓冲区（AMX、重排的布局）已关闭：在这块 CPU 上用它们解码会崩溃"
                                          "（ggml-org/llama.cpp#20824）"}
if df is not None and df["notes"].fillna("").str.len().gt(0).any():
    for label, note in df.loc[df["notes"].fillna("").str.len() > 0, ["label", "notes"]].values:
        note_zh = NOTES_ZH.get(note, note)
        say(f"{label}: {note}.", zh=f"{label}：{note_zh}。")
""", tags=("remove-input",)),
    md(r"""
The table: decode speed (median of the rounds, and the slowest and fastest round), time to first token, the weight
bytes one decode step reads, the bandwidth that implies and its share of the machine's read bandwidth measured at the
start of the run (MBU; above 100 % means that not every byte came from memory — a model small enough stays partly in
the CPU's caches — or that the load on the machine changed between the two measurements), the memory the entry
added while loading (our C++ step quantizes and packs its weights at that point, so it briefly holds several
copies), and whether its greedy tokens equal HF `generate`'s on the fp32 weights — with
token agreement for the rest. Quantized entries are expected to drift: one different token
changes the rest of the text (chapter 3.1).
"""),
    code(r"""
model = pretrained.NAME
if df is None:
    print("no comparison to show: install the engines (make engines) or record one "
          "(python -m secbook bench --suite engines)")
else:
    pd.set_option("display.max_colwidth", 60)
    display(suite.table(df[df["model"] == model]))
"""),
    code(r"""
if df is not None:
    report.plot(df, model)
    plt.show()
"""),
    md(r"""
The right panel is chapter 4's roofline for decoding: a step reads every weight once, so no entry can beat the
dashed line, *read bandwidth ÷ bytes per token*. Formats with fewer bits per weight move the bound up; how close an
entry gets to it is its kernels' and its threading's doing.
"""),
    code(r"""
def listed(items):  # names or numbers in a sentence, and the same list in a Chinese one
    return ", ".join(items) or "no entry"
def listed_zh(items):
    return "、".join(items) or "没有哪个条目"
if df is not None:
    sub = df[df["model"] == model]
    fp32 = sub[sub["bits"] == 32]
    same = list(fp32.loc[fp32["tokens_match_hf"].astype(bool), "label"])
    other = list(fp32.loc[~fp32["tokens_match_hf"].astype(bool), "label"])
    apart = [f"{a:.2f}" for a in fp32.loc[~fp32["tokens_match_hf"].astype(bool), "token_agreement"]]
    say(f"On the fp32 weights, {listed(same)} reproduced HF generate's greedy tokens exactly"
        + (f"; {listed(other)} did not (token agreement {listed(apart)})" if other else "") + ".",
        zh=f"在 fp32 权重上，{listed_zh(same)} 与 HF generate 的贪心词元完全相同"
           + (f"；{listed_zh(other)} 则不同（词元一致率 {listed_zh(apart)}）" if other else "") + "。")
    q = sub[sub["bits"] < 32].sort_values("token_agreement", ascending=False)
    say("Token agreement with HF generate's fp32 tokens, quantized entries: "
        + ", ".join(f"{l} {a:.2f}" for l, a in zip(q["label"], q["token_agreement"])) + ".",
        zh="各量化条目与 HF generate 的 fp32 词元的词元一致率："
           + "，".join(f"{l} {a:.2f}" for l, a in zip(q["label"], q["token_agreement"])) + "。")
    rec = report.recorded()
    if rec is not None and rec["task_accuracy"].notna().any():
        acc = rec[(rec["model"] == model) & rec["task_accuracy"].notna()].sort_values("task_accuracy", ascending=False)
        say(f"On the book's question set (secbook.tasks, {int(acc['task_total'].iloc[0])} questions; recorded run, "
            f"{report.provenance(rec)}): " + ", ".join(f"{l} {int(c)}/{int(t)}" for l, c, t in
                                                       zip(acc["label"], acc["task_correct"], acc["task_total"])) + ".",
            zh=f"在本书的问题集上（secbook.tasks，{int(acc['task_total'].iloc[0])} 个问题；记录的运行，"
               f"{report.provenance_zh(rec)}）：" + "，".join(f"{l} {int(c)}/{int(t)}" for l, c, t in
                                                          zip(acc["label"], acc["task_correct"], acc["task_total"]))
               + "。")
""", tags=("remove-input",)),
    md(r"""
## Our C++ step against llama.cpp

The question a reader of chapter 3.2 asks: how does the book's own decode step compare with llama.cpp, at the same
precision? The two matched pairs are our fp32 step against llama.cpp's F32 file (both read 4 bytes per weight), and
our int8 step against Q8_0 (both about one byte per weight). The verdict below is worded from the rounds measured
in turn, and the difference is split exactly into two factors, since tokens/s = (bytes read per second) ÷ (bytes
per token): how many bytes each reads per token, and how fast each reads them.
"""),
    code(r"""
if df is not None:
    for sentence, sentence_zh in zip(report.verdict(df, model), report.verdict_zh(df, model)):
        say(sentence, zh=sentence_zh)
    paths = df[df["model"] == model].drop_duplicates("engine").set_index("engine")["vector_path"]
    say(f"Vector paths in this comparison (the CPU offers {df['cpu_isa'].iloc[0]}): "
        + "; ".join(f"{e}: {p}" for e, p in paths.items()) + ".",
        zh=f"本次比较中各引擎的向量指令路径（这块 CPU 支持 {df['cpu_isa'].iloc[0]}）："
           + "；".join(f"{e}：{p}" for e, p in paths.items()) + "。")
""", tags=("remove-input",)),
    md(r"""
Why the two can differ at the same nominal precision, besides the bytes:

* **Block formats and the integer product.** Q8_0 keeps one fp16 scale per 32 weights (8.5 bits per weight) and
  llama.cpp rounds each activation vector to Q8_0 blocks too, so a dot product is a run of int8 × int8 products
  summed in int32 per block of 32 — one `vpdpbusd` (AVX-512 VNNI) or a `maddubs`/`madd` pair (AVX2) per 32 or 64
  products — then scaled once per block. Our int8 step keeps one fp32 scale per output row and rounds activations
  to int16 per 256 inputs (more accurate); its products are int16 pairs (`vpdpwssd` on VNNI), and where that
  instruction is missing its other paths must do more work per weight.
* **Threading.** llama.cpp splits every matrix product among its threads and meets at a barrier after each
  operation; our step gives each thread one contiguous stream of its share of every matrix and meets only between
  the phases of a step. With few cores and few weights per token, the time spent waiting at barriers and waking
  threads is a visible part of a step.
* **What else is read per token.** Both read the whole tied embedding as the output layer every token — for this
  model that is about a fifth of all weights, stored in Q8_0 even in the Q4 files — plus the KV cache, which at
  these lengths is small.

## ONNX Runtime on an exported graph

ONNX is a file format for computation graphs; ONNX Runtime runs such a graph, after rewriting it (constant
folding, operator fusion), on an *execution provider* — the CPU here. ONNX Runtime GenAI above is its generation
loop; here we export the tiny model's forward pass ourselves, `input_ids → logits`, with PyTorch's exporter
(`torch.onnx.export(..., dynamo=True)`), keeping batch and sequence length dynamic. `toolkit.export_forward` does it
in a few lines.
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
tiny, tok = secbook.load("tiny")
n = sum(p.numel() for p in tiny.parameters())
print(f"tiny model: {n:,} parameters = {4 * n:,} bytes in fp32")
"""),
    code(r"""
t0 = time.perf_counter()
onnx_path = toolkit.export_forward(tiny)
export_s = time.perf_counter() - t0
onnx_bytes = toolkit.onnx_file_bytes(onnx_path)
print(f"exported in {export_s:.1f} s; the ONNX files take {onnx_bytes:,} bytes")
session = toolkit.ort_session(onnx_path)
"""),
    md(r"""
Same input, both engines: the largest difference between the logits (floating-point reordering makes them differ
in the last digits, nothing more), whether the greedy next token agrees at every position, and the median forward
time of each, measured in alternation after warm-up. One token is the shape of a decoding step without a KV cache;
128 tokens is a prefill.
"""),
    code(r"""
rows = [toolkit.compare_with_onnx(tiny, session, prompt_ids(tok, L), repeats=7) for L in (1, 32, 128)]
onnx_table = pd.DataFrame(rows)
print("measured on:", secbook.describe_machine())
onnx_table.round({"pytorch_ms": 2, "onnxruntime_ms": 2, "speedup": 2})
"""),
    code(r"""
ax = onnx_table.plot.bar(x="tokens", y=["pytorch_ms", "onnxruntime_ms"], figsize=(6, 3.5), rot=0)
ax.set(xlabel="tokens in the forward pass", ylabel="median forward time (ms)",
       title="tiny model: PyTorch eager vs ONNX Runtime (CPU)")
plt.tight_layout(); plt.show()
"""),
    code(r"""
worst = onnx_table["max_abs_logit_diff"].max()
agree = (onnx_table["argmax_agreement"] == 1).all()
def tokens(n):
    return f"{n} token{'s' if n > 1 else ''}"
def tokens_zh(n):
    return f"{n} 个词元"
say(f"The largest logit difference was {worst:.1e}; the greedy next token "
    + ("agreed at every position of every input." if agree else
       f"agreed at {onnx_table['argmax_agreement'].min():.1%} of the positions of one input (a near tie).")
    + " ONNX Runtime's forward took " + ", ".join(f"{r.onnxruntime_ms / r.pytorch_ms:.2f}x PyTorch's time at "
                                                  f"{tokens(r.tokens)}"
                                                  for r in onnx_table.itertuples()) + " (medians, in alternation).",
    zh=f"logits 的最大差异为 {worst:.1e}；贪心的下一个词元"
       + ("在每个输入的每个位置上都一致。" if agree else
          f"在某个输入 {onnx_table['argmax_agreement'].min():.1%} 的位置上一致（两个候选几乎并列）。")
       + "ONNX Runtime 的前向计算时间" + "，".join(f"在 {tokens_zh(r.tokens)}时是 PyTorch 的 "
                                                   f"{r.onnxruntime_ms / r.pytorch_ms:.2f} 倍"
                                                   for r in onnx_table.itertuples()) + "（中位数，交替测量）。");
""", tags=("remove-input",)),
    md(r"""
The shape matters for the speed ratio: for one token the arithmetic is tiny and PyTorch's per-operator overhead in
eager mode is a large share of the time, which a whole-graph runtime removes; as the input grows, the matrix
multiplications take a larger share in both. This is the lesson of `torch.compile` in chapter 3.2: at this size,
overhead sets the speed as much as arithmetic does.

Greedy generation with this graph must give PyTorch's tokens. Without a KV cache it re-runs the whole sequence
for each new token — correct, but quadratic; a graph with past key/values as inputs and outputs fixes that
(chapter 3.2 exports one with `secbook.onnx_export`, and ONNX Runtime GenAI's model builder makes one too).
"""),
    code(r"""
ids = prompt_ids(tok, 16)
with torch.no_grad():
    ref = tiny.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, min_new_tokens=16,
                        do_sample=False)
ort_ids = toolkit.greedy_onnx(session, ids, 16)
print("ONNX Runtime greedy tokens == PyTorch greedy tokens:", torch.equal(ort_ids, ref))
print(repr(tok.decode(ort_ids[0, 16:])))
"""),
    md(r"""
## TensorRT (NVIDIA GPUs only)

TensorRT compiles a graph for one NVIDIA GPU. The simplest way in from here is ONNX Runtime's TensorRT
execution provider on the same exported file (`onnxruntime-gpu` built with TensorRT). The next cell does that when a
CUDA GPU and the provider are present, and otherwise says so in one line.
"""),
    code(r"""
if not torch.cuda.is_available():
    say("No CUDA GPU here: this cell would run the exported graph with ONNX Runtime's TensorRT/CUDA provider.",
        zh="这里没有 CUDA GPU：这个单元格本会用 ONNX Runtime 的 TensorRT/CUDA 提供程序运行导出的计算图。")
elif not toolkit.tensorrt_providers():
    say("CUDA GPU found, but this onnxruntime has no TensorRT/CUDA provider: pip install onnxruntime-gpu.",
        zh="找到了 CUDA GPU，但这个 onnxruntime 没有 TensorRT/CUDA 提供程序：请 pip install onnxruntime-gpu。")
else:
    gpu_session = toolkit.ort_session(onnx_path, device="cuda")
    print("providers:", gpu_session.get_providers())
    print(pd.DataFrame([toolkit.compare_with_onnx(tiny, gpu_session, prompt_ids(tok, L)) for L in (1, 128)]))
"""),
    md(r"""
## The reading list, checked

The source recommends three papers. All three are landmark papers; only one is about efficiency, and none is
about making LLM inference fast:
"""),
    code(r"""
source_list, book_list = toolkit.reading_tables()
source_list
"""),
    md(r"""
BERT {cite}`devlin2019bert` and GPT-3 {cite}`brown2020gpt3` explain what large language models are and why
they are expensive; EfficientNet {cite}`tan2019efficientnet` is about accuracy per FLOP for image CNNs. The papers
the chapters of this book actually rely on are these:

| chapter | paper | why |
|---|---|---|
""" + _reading + r"""
"""),
    summary([
        "Frameworks (PyTorch, TensorFlow) define and run models; engines (llama.cpp, CTranslate2, ONNX Runtime "
        "GenAI, vLLM, TensorRT-LLM) take a finished model and run it fast; pick by deployment: one user on a CPU, "
        "many users on GPUs, or an app in another language.",
        "GGUF's Q8_0, Q4_0 and Q4_1 are chapter 3.1's symmetric and asymmetric schemes with groups of 32 and fp16 "
        "parameters (8.5, 4.5 and 5 bits per weight); the K-quants also quantize the scales.",
        "A fair engine comparison gives every engine the same weights, prompt ids, threads and greedy decoding, times "
        "them in turn, and checks their tokens against a reference.",
        "At batch 1 a decode step reads every weight once: tokens/s = bytes read per second ÷ bytes per token, so any "
        "speed difference splits into a format factor and a kernel-and-threading factor.",
        "ONNX Runtime runs an exported graph with PyTorch's results; its GenAI loop adds the KV cache and int4.",
    ]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
Before looking at the file: how many bytes should the fp32 ONNX export of the tiny model take, counting weights
only? (Remember that the output layer shares the embedding matrix.) Check with
`secbook.exercises.check_onnx_bytes(answer, tiny, onnx_bytes)`.
"""),
    solution(r"""
from secbook.exercises import check_onnx_bytes
cfg = tiny.config
h, L, V, m = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.intermediate_size
kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
per_layer = h * h * 2 + h * kv * 2 + 3 * h * m + 2 * h      # q, o; k, v; MLP; two RMSNorm weights
check_onnx_bytes(4 * (V * h + L * per_layer + h), tiny, onnx_bytes)
"""),
    exercise(2, r"""
Compute, from the real model's shapes alone, the weight bytes one decode step reads in each GGUF file — F32, Q8_0,
Q4_0 and the original Q4_1 (the token embedding, which is also the output layer, stays Q8_0 in the Q4 files; norms
stay F32) — and check your numbers with `formats.gguf_read_bytes`. Which bound on decode tokens/s does each imply at
a read bandwidth of 20 GB/s?
"""),
    solution(r"""
import gguf
cfg = secbook.load(pretrained.NAME)[0].config
h, L, V, m = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.intermediate_size
kv = cfg.num_key_value_heads * cfg.head_dim
matrices = L * (2 * h * h + 2 * h * kv + 3 * h * m)        # q, o; k, v; gate, up, down
norms = (2 * L + 1) * h
bpw = {f: 8 * gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[f]][1] / gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[f]][0]
       for f in ("F32", "Q8_0", "Q4_0", "Q4_1")}
for kind in ("F32", "Q8_0", "Q4_0", "Q4_1"):
    emb = "F32" if kind == "F32" else "Q8_0"
    mine = matrices * bpw[kind] / 8 + V * h * bpw[emb] / 8 + 4 * norms
    path = formats.gguf_file(pretrained.NAME, kind)
    print(f"{kind}: {mine / 1e6:7.2f} MB by hand, {formats.gguf_read_bytes(path) / 1e6:7.2f} MB in the file; "
          f"bound at 20 GB/s: {20e9 / mine:5.0f} tokens/s")
"""),
    exercise(3, r"""
Pick a tool from the table for each case and say why: (a) a coding assistant running offline on a student's 8 GB
laptop; (b) a chatbot for 500 concurrent users on four A100s; (c) a 7 B model that must fit a 16 GB T4 for a class
on Colab; (d) the same model served from a Java backend on CPUs.
"""),
    answer(r"""
(a) llama.cpp (or Ollama/LM Studio on top of it) with a 4-bit GGUF file: no Python, quantized CPU kernels, little
memory. (b) vLLM or TensorRT-LLM: continuous batching and paged KV-cache memory, tensor parallelism over the four
GPUs. (c) transformers with bitsandbytes 4-bit NF4 and fp16 compute (a T4 has no bf16). (d) ONNX Runtime GenAI, which
has a Java API and a built-in generation loop (or an exported graph on plain ONNX Runtime's Java API).
"""),
    exercise(4, r"""
Run a few entries of the engine comparison on the tiny model with one thread and then with all cores:
`suite.run(models=("tiny",), entries=..., threads=1, rounds=2, new_tokens=16, questions=False)` (it skips engines
that are not installed). Which entries gain most from going from one thread to all cores, and why would the smallest
model gain least?
"""),
    solution(r"""
from secbook.engines import missing
from secbook.engines.runners import default_threads
if default_threads() < 2:
    say("this machine has one core to give: nothing to compare", zh="这台机器只能提供一个核心：没有什么可比较的")
else:
    from secbook.engines.runners import parse_entries
    entries = parse_entries(["hf", "cpp:fp32", "llama:F32", "llama:Q8_0", "ct2:float32"])
    runs = {t: suite.run(models=("tiny",), entries=entries, threads=t, rounds=2, new_tokens=16, questions=False,
                         progress=False).set_index("label")["decode_tok_s"] for t in (1, default_threads())}
    gain = (runs[default_threads()] / runs[1]).sort_values(ascending=False)
    print(f"decode tokens/s with {default_threads()} threads ÷ with 1 thread (not installed: {missing() or 'none'}):")
    print(gain.round(2).to_string())
"""),
    answer(r"""
Splitting a step among threads pays only when each thread gets enough work to hide the cost of handing it out and
waiting for the slowest one. The tiny model reads a few MB per token, so a step lasts a few milliseconds or less and
the fixed cost of waking threads and meeting at barriers — once per operation in most engines — is a large share of
it; entries with heavier steps (fp32, the real model) gain more. Compare the printed ratios with that expectation.
"""),
    exercise(5, r"""
ONNX Runtime decides its own thread count. Build a session with `onnxruntime.SessionOptions().intra_op_num_threads
= 1` (start from `toolkit.ort_session`'s code) and compare it with the default at 128 tokens.
"""),
    solution(r"""
import onnxruntime as ort
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.log_severity_level = 3
one = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
r1 = toolkit.compare_with_onnx(tiny, one, prompt_ids(tok, 128), repeats=5)
rn = toolkit.compare_with_onnx(tiny, session, prompt_ids(tok, 128), repeats=5)
print(f"1 thread: {r1['onnxruntime_ms']:.2f} ms; default threads: {rn['onnxruntime_ms']:.2f} ms "
      f"({rn['onnxruntime_ms'] / r1['onnxruntime_ms']:.2f}x the one-thread time, on {secbook.describe_machine()})")
"""),
]
