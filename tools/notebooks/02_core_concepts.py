"""Chapter 2 — Core concepts: the source's diagram, rendered and executed with secbook.pipeline."""
import sys

sys.path.insert(0, "tools")
from nb import code, md, solution  # noqa: E402

NAME = "02_core_concepts"

CELLS = [
    md(r"""
# Core concepts: the optimization pipeline

The source summarises second-scale inference in one picture: the **input** passes through **model
compression** (模型压缩), **algorithm optimization** (算法优化) and **hardware acceleration** (硬件加速) on its
way to the **output**. Here is that picture:

```{mermaid}
flowchart LR
    A[input] --> B[model compression]
    B --> C[algorithm optimization]
    C --> D[hardware acceleration]
    D --> E[output]
```

A picture does not say by how much each box helps, or what it costs. This chapter turns the diagram into
code: `secbook.pipeline` composes small steps, one per box, and measures the model after each of them —
stored bytes, decode speed and held-out perplexity — so every arrow gets a number.
"""),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import torch
import matplotlib.pyplot as plt
from myst_nb import glue
from secbook.pipeline import (Pipeline, Quantize, DynamicInt8, Prune, FastDecode, Compile, Dtype, Device,
                              plot_diagram, plot_waterfalls, summary, mermaid)
print("measured on:", machine)
"""),
    md(r"""
## The boxes as steps

Each step is a small class with a `name`, the box it belongs to (`stage`) and `apply(model) -> model`:

| box | steps in `secbook.pipeline` | what it changes |
|---|---|---|
| model compression | `Quantize(bits, group_size)`, `DynamicInt8()`, `TorchAO("int8wo")`, `Prune(sparsity)` | the weights: fewer bits, or zeros |
| algorithm optimization | `FastDecode()` | how tokens are produced: a static KV cache and a lean decode loop |
| hardware acceleration | `Compile()`, `Dtype("bf16")`, `Device("auto")` | how and where the arithmetic runs |

The same diagram, drawn with matplotlib (so it shows in Colab too) and filled with the steps we are about to
run:
"""),
    code(r"""
steps = [DynamicInt8(), FastDecode(), Device("auto")]
plot_diagram(steps)
plt.show()
"""),
    md(r"""
The pipeline for this chapter is printed below, with the model it works on: the book's tiny model, trained
on Python source code (chapter 1). Its parameter count and its stored bytes are exact numbers.
"""),
    code(r"""
model, tok = secbook.load("tiny")
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
n_params = sum(p.numel() for p in model.parameters())
print(f"tiny model: {n_params:,} parameters, {secbook.model_bytes(model):,} bytes in fp32")
for s in steps:
    print(f"{s.stage:>24}: {s.name}")
"""),
    md(r"""
## Run it, measuring after every stage

`Pipeline(steps).apply(model, tokenizer)` works on a copy of the model. Before the first step and after each
step it measures: stored bytes (`secbook.model_bytes`), time to first token and decode tokens/s
(`secbook.time_generation`: greedy, medians after a warm-up), held-out perplexity (`secbook.perplexity`, on
text the model never saw) and the fraction of greedy output tokens equal to the input model's. The
settings are small so the page builds in seconds; the numbers are this machine's, measured now.
"""),
    code(r"""
pipe = Pipeline(steps, prompt_len=16, new_tokens=16, repeats=3, ppl_tokens=512)
fast = pipe.apply(model, tok)
table = pipe.table
summary(table)
"""),
    code(r"""
last = table.iloc[-1]
glue("ch2_size", f"{last['size_vs_input']:.2f}", display=False)
glue("ch2_speed", f"{last['speedup_vs_input']:.2f}", display=False)
glue("ch2_ppl", f"{last['ppl_change_pct']:+.1f}", display=False)
glue("ch2_agree", f"{100 * last['agreement']:.0f}", display=False)
print(f"whole pipeline: {last['size_vs_input']:.2f}x the bytes, {last['speedup_vs_input']:.2f}x the decode speed, "
      f"perplexity {last['ppl_change_pct']:+.1f} %, {100 * last['agreement']:.0f} % of greedy tokens unchanged")
"""),
    md(r"""
On this run the whole pipeline stores the model in {glue:text}`ch2_size`× the bytes, decodes at
{glue:text}`ch2_speed`× the speed, changes held-out perplexity by {glue:text}`ch2_ppl` % and keeps
{glue:text}`ch2_agree` % of the greedy tokens. The waterfall charts show which stage did what: grey is the
input model, each floating bar one step (green when it moved the number the good way, red otherwise), blue
the result.
"""),
    code(r"""
plot_waterfalls(table, title=f"tiny model, {secbook.describe_machine()[:60]}")
plt.show()
"""),
    md(r"""
Three things to notice, whatever the exact numbers on your machine:

* **Compression changes bytes and quality, not necessarily speed.** int8 weights are a quarter of the fp32
  bytes, but whether they decode faster depends on the kernel: on a busy 2-core CPU the int8 matrix
  product for such small matrices may not beat fp32. Chapter 3.1 measures this on bigger shapes.
* **Algorithm optimization changes speed, not output.** The fast loop produces the same tokens (the
  agreement column does not move at that step), because it computes the same thing with less overhead.
* **Hardware steps depend on the hardware.** `Device("auto")` is a no-op on a CPU-only machine; on a GPU it
  moves the model — and then `DynamicInt8` would refuse, because torch.ao's int8 kernels are CPU-only.

Bad combinations fail early with a message that says what to do:
"""),
    code(r"""
try:
    Pipeline([DynamicInt8(), Dtype("bf16")], measure=False).apply(model, tok)
except ValueError as e:
    print("ValueError:", e)
try:
    Pipeline(["quantise"])
except ValueError as e:
    print("ValueError:", e)
"""),
    md(r"""
## The same pipeline as mermaid text

`secbook.pipeline.mermaid(steps)` writes the diagram with the steps inside the boxes, ready to paste into a
MyST page inside a `{mermaid}` block:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
print(mermaid([Quantize(bits=4, group_size=64), Compile(), Device("cpu")]))
"""),
    md(r"""
## Try your own pipeline

Pick steps (they run in the listed order) and press *Run pipeline*. The panel calls
`secbook.widgets.pipeline_update`, which is printed once below so the static book shows a result.
"""),
    code(r"""
from secbook.widgets import pipeline_widget, pipeline_update
panel = pipeline_widget(model, tok, steps=("bf16", "fast_decode"))
display(panel)
pipeline_update(model, tok, ["bf16", "fast_decode"], new_tokens=8, ppl_tokens=256)
"""),
    md(r"""
## Exercises

1. **Bytes of a 4-bit layer.** A Linear layer of the tiny model's MLP has 768 outputs and 256 inputs.
   Quantized to 4 bits with one fp16 scale per group of 64 weights (symmetric, no zero points), how many
   bytes does it store? Check with `secbook.exercises.check_int4_layer_bytes(answer)`.
2. **The source's example.** Run `Pipeline([Quantize(bits=4, group_size=64), Compile(), Device("auto")])` on
   the tiny model. Which stage is slower than the input model, and why does `Compile` win it back? (Look at
   `first_call_s`: where does the compile time go?)
3. **Order matters.** Why does `[DynamicInt8(), Dtype("bf16")]` fail while `[Dtype("bf16"),
   Quantize(bits=8, group_size=64)]` works?
"""),
    code(r"""
from secbook import exercises
answer = None  # your number of bytes here
if answer is not None:
    exercises.check_int4_layer_bytes(answer)
"""),
    solution(r"""
# 1: 768*256/2 bytes of packed weights + 768 * (256/64) fp16 scales * 2 bytes
exercises.check_int4_layer_bytes(768 * 256 // 2 + 768 * (256 // 64) * 2)
# 2: the Quantize stage dequantizes every weight on every call (no fused kernel), so eager decoding slows
#    down; Compile fuses dequantize + matmul into one kernel, paid for once in first_call_s. Uncomment to run
#    (it compiles for a minute on a 2-core CPU):
# p = Pipeline([Quantize(bits=4, group_size=64), Compile(), Device("auto")], new_tokens=16, repeats=2)
# p.apply(model, tok); summary(p.table)
# 3: torch.ao dynamic int8 layers quantize fp32 activations on the fly and run on the CPU only, so a later
#    cast to bf16 has nothing valid to apply to; QuantLinear dequantizes to whatever dtype its input has.
print(Pipeline([Dtype("bf16"), Quantize(bits=8, group_size=64)], measure=False).apply(model, tok).dtype)
"""),
]
