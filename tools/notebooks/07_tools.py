"""Chapter 7 — Tools and resources: what each tool does, ONNX Runtime live, TensorRT on GPU, a checked reading list."""
import sys

sys.path.insert(0, "tools")
sys.path.insert(0, ".")
from nb import code, md, solution  # noqa: E402

from secbook.toolkit import BOOK_READING  # noqa: E402

NAME = "07_tools"

_reading = "\n".join(f"| {ch} | {{cite}}`{key}` | {why} |" for ch, key, why in BOOK_READING)

CELLS = [
    md(r"""
# Tools and resources

The source ends with a list of tools — PyTorch, TensorFlow, TensorRT, ONNX Runtime, NVIDIA GPUs, Google
TPUs — and a reading list. This chapter turns the list into something you can act on: a table of what each
tool does and when to reach for it (with the LLM-specific tools the source leaves out), one of them —
ONNX Runtime — run live on the model of this book and checked against PyTorch, TensorRT where a GPU exists,
and the reading list checked paper by paper and replaced by the papers this book actually uses.
"""),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import time, torch, pandas as pd
import matplotlib.pyplot as plt
from secbook import toolkit
from secbook.measure import prompt_ids
print("measured on:", machine)
"""),
    md(r"""
## What each tool does

The first six rows are the source's; the last four are the tools an LLM practitioner reaches for today.
The last column says what this machine has (an installed version, or *not installed*).
"""),
    code(r"""
pd.set_option("display.max_colwidth", 120)
toolkit.tools_table()
"""),
    md(r"""
Note that the source's list mixes three kinds of thing: **frameworks** that define and run models (PyTorch,
TensorFlow), **inference engines and compilers** that take a finished model and run it faster (ONNX Runtime,
TensorRT, and the LLM-specific vLLM and llama.cpp), and **hardware** (GPUs, TPUs). The libraries torchao and
bitsandbytes sit inside PyTorch and make the weights smaller (chapter 3.1).

**When to use which**, as a rule of thumb for LLM inference:

* *Exploring, teaching, measuring*: PyTorch + transformers — everything in this book. Add `torch.compile` and a
  static KV cache before anything else (chapter 3.2).
* *One user, a laptop or phone, no GPU*: llama.cpp with a 4-bit GGUF file.
* *Many users on GPUs*: a serving engine — vLLM {cite}`kwon2023vllm` (or TensorRT-LLM on NVIDIA hardware) — for
  continuous batching and paged KV-cache memory; hand-written loops do not compete there.
* *Squeeze an NVIDIA deployment to the last millisecond*: TensorRT (through TensorRT-LLM or ONNX Runtime's
  TensorRT execution provider).
* *One artefact for many runtimes (C#, Java, JavaScript, mobile)*: export to ONNX and run ONNX Runtime.
* *The model does not fit in memory*: bitsandbytes 8/4-bit {cite}`dettmers2022llmint8` or torchao int4
  weight-only; for speed on GPU, torchao with `torch.compile`.

## ONNX Runtime, live

ONNX is a file format for computation graphs; ONNX Runtime runs such a graph, after rewriting it (constant
folding, operator fusion), on an *execution provider* — the CPU here. We export the tiny model's forward pass,
`input_ids → logits`, with PyTorch's exporter (`torch.onnx.export(..., dynamo=True)`), keeping batch and
sequence length dynamic. `toolkit.export_forward` does it in a few lines.
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
model, tok = secbook.load("tiny")
n = sum(p.numel() for p in model.parameters())
print(f"tiny model: {n:,} parameters = {4 * n:,} bytes in fp32")
"""),
    code(r"""
t0 = time.perf_counter()
onnx_path = toolkit.export_forward(model)
export_s = time.perf_counter() - t0
onnx_bytes = toolkit.onnx_file_bytes(onnx_path)
print(f"exported in {export_s:.1f} s; the ONNX files take {onnx_bytes:,} bytes")
session = toolkit.ort_session(onnx_path)
"""),
    md(r"""
Same input, both engines: the largest difference between the logits (floating-point reordering makes them
differ in the last digits, nothing more), whether the greedy next token agrees at every position, and the median
forward time of each, measured in alternation after warm-up. One token is the shape of a decoding step without a
KV cache; 128 tokens is a prefill.
"""),
    code(r"""
rows = [toolkit.compare_with_onnx(model, session, prompt_ids(tok, L), repeats=7) for L in (1, 32, 128)]
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
    md(r"""
The exported graph computes the same function: the logit differences are at the level of float32 rounding (the
order of additions differs) and every greedy next token agrees. The speed-up column depends on the shape. For one
token the arithmetic is tiny and PyTorch's per-operator overhead in eager mode dominates, which a whole-graph runtime
removes; as the input grows, the matrix multiplications take a larger share of the time in both engines. This is the
same lesson as `torch.compile` in chapter 3.2: at this size, **overhead, not arithmetic**, sets the speed. (On a
busy, shared machine PyTorch's thread pool tends to suffer more than ONNX Runtime's, which widens the gap: compare
the two columns as measured here, side by side, rather than with numbers from another run.)

Greedy generation with this graph must give PyTorch's tokens. Without a KV cache it re-runs the whole sequence
for each new token — correct, but quadratic; a graph with past key/values as inputs and outputs fixes that
(chapter 3.2 exports one with `secbook.onnx_export` and decodes with it).
"""),
    code(r"""
ids = prompt_ids(tok, 16)
with torch.no_grad():
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, min_new_tokens=16,
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
    print("No CUDA GPU here: this cell would run the exported graph with ONNX Runtime's TensorRT/CUDA provider.")
elif not toolkit.tensorrt_providers():
    print("CUDA GPU found, but this onnxruntime has no TensorRT/CUDA provider: pip install onnxruntime-gpu.")
else:
    gpu_session = toolkit.ort_session(onnx_path, device="cuda")
    print("providers:", gpu_session.get_providers())
    print(pd.DataFrame([toolkit.compare_with_onnx(model, gpu_session, prompt_ids(tok, L)) for L in (1, 128)]))
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
    md(r"""
## Exercises

**Exercise 1.** Before looking at the file: how many bytes should the fp32 ONNX export of the tiny model take,
counting weights only? (Remember that the output layer shares the embedding matrix.) Check with
`secbook.exercises.check_onnx_bytes(answer, model, onnx_bytes)`.
"""),
    solution(r"""
from secbook.exercises import check_onnx_bytes
cfg = model.config
h, L, V, m = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.intermediate_size
kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
per_layer = h * h * 2 + h * kv * 2 + 3 * h * m + 2 * h      # q, o; k, v; MLP; two RMSNorm weights
check_onnx_bytes(4 * (V * h + L * per_layer + h), model, onnx_bytes)
"""),
    md(r"""
**Exercise 2.** How much of ONNX Runtime's advantage comes from its graph optimisations? Build a second session
with `toolkit.ort_session(onnx_path, optimize=False)` and compare both sessions at 1 and 128 tokens.
"""),
    solution(r"""
plain = toolkit.ort_session(onnx_path, optimize=False)
for L in (1, 128):
    a = toolkit.compare_with_onnx(model, session, prompt_ids(tok, L), repeats=5)
    b = toolkit.compare_with_onnx(model, plain, prompt_ids(tok, L), repeats=5)
    print(f"{L:>4} tokens: optimised {a['onnxruntime_ms']:.2f} ms, unoptimised {b['onnxruntime_ms']:.2f} ms")
"""),
    md(r"""
**Exercise 3.** Pick a tool from the table for each case and say why: (a) a coding assistant running offline on a
student's 8 GB laptop; (b) a chatbot for 500 concurrent users on four A100s; (c) a 7 B model that must fit a 16 GB
T4 for a class on Colab; (d) the same model served from a Java backend on CPUs.
"""),
    solution(r"""
answers = {
    "(a) offline laptop": "llama.cpp with a 4-bit GGUF: no Python, quantized CPU kernels, small memory",
    "(b) 500 users, 4xA100": "vLLM (or TensorRT-LLM): continuous batching + PagedAttention, tensor parallel",
    "(c) 7B on a 16 GB T4": "transformers + bitsandbytes 4-bit NF4 (fp16 compute: a T4 has no bf16)",
    "(d) Java backend, CPUs": "export to ONNX, run ONNX Runtime's Java API",
}
for k, v in answers.items():
    print(f"{k:<24} {v}")
"""),
    md(r"""
**Exercise 4.** ONNX Runtime decides its own thread count. Build a session with
`onnxruntime.SessionOptions().intra_op_num_threads = 1` (start from `toolkit.ort_session`'s code) and compare
with the default at 128 tokens. What does it tell you about the cores of this machine?
"""),
    solution(r"""
import onnxruntime as ort
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.log_severity_level = 3
one = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
r1 = toolkit.compare_with_onnx(model, one, prompt_ids(tok, 128), repeats=5)
rn = toolkit.compare_with_onnx(model, session, prompt_ids(tok, 128), repeats=5)
print(f"1 thread: {r1['onnxruntime_ms']:.2f} ms; default threads: {rn['onnxruntime_ms']:.2f} ms")
"""),
]
