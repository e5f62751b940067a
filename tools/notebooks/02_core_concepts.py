"""Chapter 2 — Core concepts: the source's diagram, rendered and executed with secbook.pipeline."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

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
    opening(["name the three families of inference optimization and what each one changes (bytes, work, hardware)",
             "compose optimization steps into a pipeline with `secbook.pipeline` and measure the model after each",
             "read a per-stage table and waterfall: which step bought speed, which cost quality",
             "tell a speed comparison that the machine's noise can flip from one it cannot (timing in turn)"],
            ["chapter 1 (TTFT, TPOT, tokens/s, how they are measured)",
             "what perplexity is, roughly (the glossary defines it)"], 20),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import torch
import matplotlib.pyplot as plt
from secbook.claims import say, guard, compare, times
from secbook.measure import perplexity_protocol, tok_s_in_turn, hf_generate_fn, prompt_ids, PPL_TOKENS
from secbook.pipeline import (Pipeline, Quantize, DynamicInt8, Prune, FastDecode, Compile, Dtype, Device,
                              plot_diagram, plot_waterfalls, summary, mermaid,
                              generate_fn_for)
import pandas as pd
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
text the model never saw, with the book's protocol printed below) and the *token agreement*: the fraction of
the greedy tokens generated from the same prompt that equal the input model's. The numbers are this machine's,
measured now.
"""),
    code(r"""
pipe = Pipeline(steps, prompt_len=16, new_tokens=16, repeats=3, ppl_tokens=PPL_TOKENS)
fast = pipe.apply(model, tok)
table = pipe.table
print("perplexity:", perplexity_protocol(PPL_TOKENS), "| measured on:", secbook.describe_machine())
summary(table)
"""),
    md(r"""
The waterfall charts show which stage did what: grey is the input model, each floating bar one step (green when
it moved the number the good way, red otherwise), blue the result.
"""),
    code(r"""
plot_waterfalls(table, title=f"tiny model, {secbook.describe_machine()[:60]}")
plt.show()
"""),
    md(r"""
The table times each stage once, one after another. On a machine that other programs share, the load can change
between two stages, and a difference of a few tens of percent can come from that alone. So before reading a
verdict from it, the three versions of the model are timed again *in turn* — input model, int8 model, int8 model
with the fast loop, then again, five rounds — and each step is worded from the rounds: it counts as faster only if
it was faster in every round.
"""),
    code(r"""
import copy
int8 = DynamicInt8().apply(copy.deepcopy(model))
ids = prompt_ids(tok, 16)
gens = {"input model": hf_generate_fn(model), "int8 model": hf_generate_fn(int8),
        "int8 model + fast loop": generate_fn_for(fast, 16 + 16)}
rounds = tok_s_in_turn(gens, ids, 16, rounds=5)
pd.DataFrame(rounds).describe().loc[["50%", "min", "max"]].rename(index={"50%": "median"}).round(1)
"""),
    code(r"""
step1 = compare(rounds, "int8 model", "input model")
step2 = compare(rounds, "int8 model + fast loop", "int8 model")
whole = compare(rounds, "int8 model + fast loop", "input model")
say("Timed in turn, decode tokens/s: " + "; ".join(c.words() for c in (step1, step2, whole)) + ".",
    zh="轮流测量的解码每秒词元数：" + "；".join(c.words_zh() for c in (step1, step2, whole)) + "。");
""", tags=("remove-input",)),
    code(r"""
same = torch.equal(gens["int8 model"](ids, 16), gens["int8 model + fast loop"](ids, 16))
guard(same, "the fast loop produces the same greedy tokens as Hugging Face generate on the same model")
last = table.iloc[-1]
say(f"The fast loop's greedy tokens were identical to `generate`'s on the same model (checked above), so the "
    f"token agreement did not move at that step. The whole pipeline stored the model in "
    f"{last['size_vs_input']:.2f}x the bytes, changed held-out perplexity by {last['ppl_change_pct']:+.1f} % and "
    f"kept {100 * last['agreement']:.0f} % of the 16 greedy tokens of the input model.",
    zh=f"在同一个模型上，快速循环贪心生成的词元与 `generate` 的完全相同（上面已检查），所以词元一致率在这一步没有变化。"
       f"整条流水线把模型的存储字节数变为原来的 {last['size_vs_input']:.2f} 倍，使留出文本上的困惑度变化了 "
       f"{last['ppl_change_pct']:+.1f} %，并保留了输入模型 16 个贪心词元中的 {100 * last['agreement']:.0f} %。");
""", tags=("remove-input",)),
    md(r"""
Three things to notice, whatever the exact numbers on your machine:

* **Compression changes bytes and quality, not necessarily speed.** int8 weights take a quarter of the fp32
  bytes, but fewer bytes become speed only if the kernel that multiplies them is faster than the fp32 one —
  torch.ao's int8 kernel must also quantize every activation on the fly, which for small matrices can cost as
  much as it saves. The comparison in turn above says what happened on this machine; chapter 3.1 measures it on
  a real model.
* **Algorithm optimization changes speed, not output.** The fast loop computes the same thing with less
  overhead, so its greedy tokens are the same ones — checked above, token for token.
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
pipeline_update(model, tok, ["bf16", "fast_decode"], new_tokens=8)
"""),
    summary(["The source's pipeline has three boxes: model compression (fewer or smaller weights), algorithm "
             "optimization (the same result with less work) and hardware acceleration (the right hardware, used "
             "well).",
             "`secbook.pipeline` turns each box into steps and measures bytes, speed, perplexity and token "
             "agreement after each one.",
             "Compression trades quality for bytes; whether fewer bytes become speed depends on the kernel and the "
             "shapes. Algorithm steps like the fast loop keep the output token for token.",
             "A speed difference is only a result when it survives timing in turn; a single stage-after-stage "
             "table can be flipped by the machine's load."]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
**Bytes of a 4-bit layer.** A Linear layer of the tiny model's MLP has 768 outputs and 256 inputs. Quantized to
4 bits with one fp16 scale per group of 64 weights (symmetric, no zero points), how many bytes does it store?
Check with `secbook.exercises.check_int4_layer_bytes(answer)`.
"""),
    code(r"""
from secbook import exercises
answer_bytes = None  # your number of bytes here
if answer_bytes is not None:
    exercises.check_int4_layer_bytes(answer_bytes)
"""),
    solution(r"""
# 768 x 256 weights at half a byte each, plus 768 rows x (256 / 64) groups of one fp16 (2-byte) scale
answer_bytes = 768 * 256 // 2 + 768 * (256 // 64) * 2
print(answer_bytes)
exercises.check_int4_layer_bytes(answer_bytes)
"""),
    exercise(2, r"""
**The source's example.** The source's own pipeline is int4 weights, then the compiler, then the GPU:
`Pipeline([Quantize(bits=4, group_size=64), Compile(), Device("auto")])`. Predict, before running it: which stage
should be *slower* than the input model in eager PyTorch, and why? Where does the compiler's cost appear in the
table? (Running it compiles the model: allow a few minutes on a CPU.)
"""),
    answer(r"""
The **Quantize** stage: `QuantLinear` stores packed 4-bit integers and, in eager mode, unpacks and dequantizes
every weight on every call before an ordinary fp32 matrix multiply — more work per token than reading the fp32
weight, so decoding usually slows down although the model got smaller. **Compile** can fuse the unpacking,
the dequantization and the multiply into one generated kernel, so the weights are read once in their small form;
whether that wins the speed back depends on the kernels the compiler generates for this machine — the table
says. The compiler's own cost (tracing and generating code, seconds to minutes) is paid by the first call, so it
shows in `first_call_s`, not in the medians. To run it:

```python
p = Pipeline([Quantize(bits=4, group_size=64), Compile(), Device("auto")], new_tokens=16, repeats=2)
p.apply(model, tok)
summary(p.table)
```
"""),
    exercise(3, r"""
**Order matters.** Why does `[DynamicInt8(), Dtype("bf16")]` fail while `[Dtype("bf16"), Quantize(bits=8,
group_size=64)]` works?
"""),
    solution(r"""
print(Pipeline([Dtype("bf16"), Quantize(bits=8, group_size=64)], measure=False).apply(model, tok).dtype)
say("torch.ao dynamic int8 layers quantize fp32 activations on the fly and run on the CPU only, so a later cast "
    "to bf16 has nothing valid to apply to; QuantLinear dequantizes to whatever dtype its input has, so bf16 "
    "first and int8 weights after work.",
    zh="torch.ao 的动态 int8 层即时量化 fp32 激活值，并且只能在 CPU 上运行，所以之后再转换为 bf16 就没有可以有效"
       "作用的对象；QuantLinear 则按输入的 dtype 反量化，所以先转为 bf16、再量化为 int8 权重是可行的。");
"""),
]
