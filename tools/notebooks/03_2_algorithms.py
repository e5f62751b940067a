"""Chapter 3.2 — Algorithm optimization: from HF generate() to a fast generation loop of our own."""
import sys

sys.path.insert(0, "tools")
from nb import code, md, solution  # noqa: E402

NAME = "03_2_algorithms"

CELLS = [
    md(r"""
# Algorithm optimization: from `generate()` to a fast generation loop

The source's second family of techniques is about *how* the computation runs rather than *what* it computes:
efficient matrix libraries, parallel computation, and an optimized execution flow. This chapter makes that
concrete. We start from Hugging Face `model.generate()` with its defaults and change one thing at a time, measuring
each step on this machine:

1. the **baseline** — `generate()`, fp32, eager;
2. the **KV cache** — why decoding without it is quadratic, and what it costs in memory;
3. **attention implementations** — the textbook `eager` path vs PyTorch's fused SDPA;
4. **batching** — throughput against per-request latency; static vs continuous batching;
5. a **static cache + `torch.compile`**;
6. **our own loop** in the style of gpt-fast {cite}`gptfast2023` — same tokens, less overhead, and weights laid
   out the way the matrix library reads fastest; then int8 weights, first in PyTorch, then on a small C++ kernel
   of our own, and finally the whole decode step as one C++ call, on int8 or on the untouched fp32 weights;
7. **speculative decoding** {cite}`leviathan2023fast,chen2023accelerating` and prompt lookup;
8. **ONNX Runtime** {cite}`onnxruntime`.

The chapter ends with the "optimization ladder": tokens/s for every step, each with its speed-up over the baseline
and how many of its tokens agree with the baseline's. Everything lossless must agree 100%; a technique that changes
the output must say by how much.
"""),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import os
import torch, pandas as pd, matplotlib.pyplot as plt
from secbook import attention, batching, hardware, kvcache, generate, speculative, onnx_export, widgets, exercises
import secbook.ladder  # the optimization ladder: its rungs, suite, plots (secbook/ladder.py)
from secbook.measure import time_generation, prompt_ids, token_agreement, describe_machine, load_results
print("measured on:", machine)
"""),
    md(r"""
## The baseline: `model.generate()`

Greedy decoding (always the most likely token) of 64 new tokens after a 32-token prompt cut from the held-out
text. These tokens are the reference every later step is compared with.
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
model, tok = secbook.load("tiny")
ids = prompt_ids(tok, 32)
reference = generate.hf_generate(model, ids, 64)
print(reference[0, 32:].tolist())
"""),
    code(r"""
base = time_generation(model, tok, prompt_len=32, new_tokens=64, repeats=3)
pd.DataFrame([base.as_dict()])[["ttft_s", "tpot_s", "tokens_per_s", "latency_s", "first_call_s"]].round(4)
"""),
    md(r"""
## The KV cache

To predict token $t$ the model attends to the keys and values of all earlier tokens. Without a cache it recomputes
them every step: step $t$ runs the whole prefix of length $t$ through the network, so the cost per step grows with
the position and a whole generation is quadratic. With the cache {cite}`pope2022efficiently` each step runs one
token and appends one key and one value per layer: the cost per step is flat. Below, each decode step of the tiny
model timed, with and without the cache.
"""),
    code(r"""
steps = kvcache.cache_on_off(model, prompt_ids(tok, 32), new_tokens=160)
ax = steps.plot(x="position", y=["no_cache_ms", "with_cache_ms"], figsize=(7, 3.2))
ax.set_ylabel("ms per decode step"); ax.set_title("tiny model: per-token cost by position")
print(steps[["no_cache_ms", "with_cache_ms"]].sum().round(1).rename("total ms").to_dict())
plt.show()
"""),
    md(r"""
The price is memory. Per sequence, the cache holds one key and one value vector per layer, per key/value head, per
position:

$$\text{bytes} = \text{layers} \times 2 \times \text{kv\_heads} \times \text{head\_dim} \times \text{positions}
\times \text{bytes per element}.$$

The formula, checked against the tensors Hugging Face actually keeps for a 100-token prompt:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
for name in ("tiny", "replica:qwen2.5-0.5b"):
    m = model if name == "tiny" else secbook.load(name, num_hidden_layers=2)[0]
    formula = kvcache.kv_cache_bytes(m.config, 100)
    measured = kvcache.measured_kv_bytes(m, prompt_ids(tok, 100))
    print(f"{name:>22}: formula {formula:,} bytes, measured {measured:,} bytes, equal: {formula == measured}")
"""),
    md(r"""
**Grouped-query attention** (GQA, {cite}`ainslie2023gqa`) lets several query heads share one key/value head, which
divides the cache by `heads / kv_heads` at little cost in quality. All the real architectures we replicate use it:
"""),
    code(r"""
from secbook.models import REPLICAS, replica_config
configs = {"tiny": model.config, **{r: replica_config(r) for r in REPLICAS}}
kvcache.cache_table(configs, positions=4096, dtype=torch.bfloat16).round(1)
"""),
    md(r"""
## Attention implementations

`eager` attention computes $\mathrm{softmax}(QK^\top/\sqrt d)V$ as separate operations and materialises the
$T\times T$ score matrix; `sdpa` calls `torch.nn.functional.scaled_dot_product_attention`, which dispatches to a
fused kernel — FlashAttention {cite}`dao2022flashattention` on recent GPUs, a tiled flash-style kernel on CPU — that
never stores the scores. Same function, up to rounding (last column); the gap grows with the context, where the
$T^2$ scores dominate. Timed here for one prefill of the tiny model:
"""),
    code(r"""
att = attention.compare(model, contexts=(128, 256, 512, 1024), repeats=2)
ax = att.pivot(index="context", columns="attention", values="ms").plot(marker="o", figsize=(6, 3.2))
ax.set_ylabel("prefill ms"); ax.set_title("tiny model: attention implementation vs context")
print(att.round(6).to_string(index=False))
plt.show()
"""),
    md(r"""
## Batching: throughput against latency

A decode step at batch 1 reads every weight to produce one token; at batch $B$ the same read produces $B$ tokens.
Throughput grows with the batch while each request waits a little longer per step. Prompts of different lengths
must be **left**-padded, with an attention mask hiding the pads — otherwise the batched output differs from running
each prompt alone. The check below runs three prompts of different lengths together and alone:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
prompts = ["def f(x):\n    return", "import os\nimport sys\n\nclass Reader:\n    def", "x ="]
print("same tokens batched as alone:", batching.check_left_padding(model, tok, prompts, new_tokens=12))
"""),
    code(r"""
sweep = batching.batch_sweep(model, tok, batch_sizes=(1, 2, 4, 8, 16), new_tokens=32, repeats=1)
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(sweep["ms_per_token_per_request"], sweep["tokens_per_s"], marker="o")
for _, r in sweep.iterrows():
    ax.annotate(f"B={r['batch']:.0f}", (r["ms_per_token_per_request"], r["tokens_per_s"]))
ax.set_xlabel("ms per token, per request (latency)"); ax.set_ylabel("tokens/s (throughput)")
print(sweep.round(3).to_string(index=False))
plt.show()
"""),
    md(r"""
A server does not get its requests in neat batches. **Static batching** admits a batch and waits for its longest
request before admitting the next — finished requests leave their slots idle. **Continuous** (in-flight) batching
{cite}`yu2022orca` refills a slot the moment its request finishes. A small simulation of the same random workload
(a step costs 40 ms + 2 ms per running sequence):
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
work = batching.workload(64, seed=0)
sim = pd.DataFrame([batching.simulate(work, p, max_batch=b) for b in (4, 8) for p in ("static", "continuous")])
print(sim[["policy", "max_batch", "total_steps", "slot_utilisation"]].round(2).to_string(index=False))
"""),
    code(r"""
sim.pivot(index="max_batch", columns="policy", values="mean_latency_steps").plot.bar(figsize=(5, 3), rot=0)
plt.ylabel("mean request latency (steps)"); plt.title("static vs continuous batching")
plt.show()
"""),
    md(r"""
## Static cache and `torch.compile`

`torch.compile` {cite}`ansel2024pytorch2` traces the model into a graph and generates fused kernels; on a GPU,
`mode="reduce-overhead"` also captures the whole step as a CUDA graph {cite}`nvidia_cuda_graphs`, replaying it with
a single launch. Both need **fixed shapes**: a cache that grows by one position per token would recompile at every
step, so the cache is pre-allocated for the maximum length — a *static* cache (`cache_implementation="static"` in
`generate`). On this CPU compiling costs tens of seconds (gcc compiles the generated C++), too long for this page, so
the compiled rungs come from the recorded ladder (`python -m secbook bench --suite generate`); `first_call_s` is the
cold first call, compile included:
"""),
    code(r"""
ladder = load_results("generate_ladder")
cols = ["model", "rung", "tok_s", "speedup", "token_agreement", "first_call_s"]
print("recorded on:", ladder["cpu"].iloc[0], "| torch", ladder["torch"].iloc[0])
ladder[ladder["compiled"] == True][cols].round(3)
"""),
    md(r"""
## Our own loop

`secbook.generate.FastGenerator` does what gpt-fast does: it pre-allocates the cache, runs the prompt once (the
prefill), then loops a single-token decode step that writes one key/value per layer at `input_pos` and attends over
the whole cache with a mask hiding the positions not written yet. The decoder forward (`secbook.decoder`) is a few
dozen lines over the model's own Hugging Face weights, norms and rotary embedding, with what differs between
architecture families written as data, so it works for Llama, SmolLM, Qwen2/2.5, Qwen3, Mistral, Gemma 2/3, Phi-3,
GPT-2 and GPT-NeoX, and for quantized layers that replace `nn.Linear`. No logits processors, no stopping criteria, no mask rebuilt per step. Greedy output
must be identical to `generate()`:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
fast = generate.FastGenerator(model, max_len=96)
ours = fast.generate(ids, 64)
print("identical to model.generate():", torch.equal(ours, reference), "| agreement", token_agreement(ours, reference))
"""),
    md(r"""
### Efficient matrix libraries: the weight layout

At batch 1 every projection is a matrix-*vector* product: each weight is read once and used for one multiply-add,
so the speed is the speed at which the library streams the matrix from memory. `nn.Linear` stores its weight as
`[out, in]` and computes `x @ W.T`; the BLAS kernel for that layout sums along rows. Stored transposed, `[in, out]`,
the same product becomes a sum of scaled rows, which streams memory differently. The same numbers, two layouts,
one matrix larger than the CPU's cache:
"""),
    code(r"""
lay = secbook.ladder.gemv_layouts()
lay_df = pd.DataFrame(lay["layouts"]).T
print(f"{lay['matrix_MiB']:.0f} MiB fp32 matrix; transposed layout {lay['speedup_transposed']:.2f}x the speed of nn.Linear's")
lay_df.round(5)
"""),
    code(r"""
ax = lay_df["GB/s"].plot.barh(figsize=(6, 1.8), color=["grey", "tab:blue"])
ax.set_xlabel("weight bytes streamed per second (GB/s)"); ax.set_title("batch-1 matrix-vector product, two layouts")
plt.show()
"""),
    md(r"""
So our decoder keeps its own copy of the projection weights, transposed, and **fuses** the projections that read
the same input — q, k and v into one matrix, gate and up into another (`generate.FusedLinear`, as gpt-fast's
`wqkv`): 4 matrix products per layer instead of 7. Each output is still the same dot product, so the tokens do not
change. The cost is memory: the copy doubles the weight bytes held (`fuse=False` calls the model's own modules
instead). Side by side — HF `generate`, our loop calling the modules, our loop with fused weights:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
unfused = generate.FastGenerator(model, max_len=96, fuse=False)
print("module calls identical:", torch.equal(unfused.generate(ids, 64), reference))
"""),
    code(r"""
t_unfused = time_generation(model, tok, new_tokens=64, repeats=3, generate_fn=unfused.generate)
t_ours = time_generation(model, tok, new_tokens=64, repeats=3, generate_fn=fast.generate)
t_hf = time_generation(model, tok, new_tokens=64, repeats=3)  # again, side by side under the same load
side = pd.DataFrame({"HF generate": t_hf.as_dict(), "our loop, module calls": t_unfused.as_dict(),
                     "our loop, fused weights": t_ours.as_dict()}).T
side["speedup"] = side["tokens_per_s"] / side.loc["HF generate", "tokens_per_s"]
side[["ttft_s", "tpot_s", "tokens_per_s", "speedup"]].round(4)
"""),
    md(r"""
Weight-only int8/int4 layers from the compression chapter (`secbook.quantize.QuantLinear`) drop into the same loop.
Eagerly, each layer first dequantizes its whole weight to fp32 and then multiplies: it writes and re-reads a
full-size fp32 copy, more memory traffic than fp32 itself, so eager weight-only int8 is *slower* than not
quantizing. The saving only appears when the int8 weights are turned into products on the fly. For int8 with one
scale per output row (`int8wo` in the ladder, LM head included) our loop fuses the layers
(`generate.Int8WeightOnlyFused`) and, for one token inside the compiled step, writes the product as a sum,
`y[n] = scale[n] * sum_k x[k] * w[n, k]`: the compiler turns that into one loop that reads each int8 weight once and
converts it in registers — the fused dequantize-matmul. One detail matters on a CPU: a single running sum per row
makes every addition wait for the previous one, so the rows are cut into 4 blocks, written as 4 sums that the
compiler fuses into one loop with 4 independent running sums (about 1.4x on the large LM head here). The int4 layers
(two weights per byte, groups of 32) have no such path in our loop and stay slow: a weight format needs a kernel.

PyTorch's **dynamic int8** (`torch.ao`, `dyn8` in the ladder) takes the other route: int8 weights with one scale per
output row, and the activations quantized on the fly, so the product runs on an optimised int8 kernel (FBGEMM). Our
loop fuses those layers too (`generate.Int8DynamicFused`: the int8 rows of q, k and v stacked, each keeping its
scale, so the arithmetic is unchanged). `torch.compile` cannot trace the packed int8 weights, so the product hides
behind a custom operator with a declared output shape, and everything around it (norms, RoPE, attention, residuals)
compiles. Quantizing the activations costs accuracy (compare `tiny_ppl_change`) that weight-only int8 does not pay.
From the recorded ladder:
"""),
    code(r"""
q = ladder[ladder["transform"].isin(["none", "int8wo", "int4wo", "dyn8"]) & (ladder["loop"] == "ours")]
q[["model", "rung", "tok_s", "speedup", "token_agreement", "tiny_ppl_change", "mbu"]].round(3)
"""),
    md(r"""
Even the fastest int8 rung reads its weights far below the machine's read bandwidth (its MBU). Is the CPU waiting
for memory, or for arithmetic? Run the compiled int8 product over *one* matrix again and again, so that it stays in
the CPU's cache, and over many different matrices in turn, so that they stream from memory; the same for the fp32
product. A memory-bound product runs much faster from cache than from memory. If the int8 product gains little
from the cache, and even from cache processes far fewer bytes per second than this machine's memory delivers at its
best (the highest read bandwidth the ladder run measured), then memory is not what holds it back: its arithmetic is
(converting each int8 weight to float and multiplying, on 2 cores), and a faster memory would not help it. The
cache and the memory of a shared server are shared too, so these figures move with the neighbours' load:
"""),
    code(r"""
rates = secbook.ladder.int8_gemv_rates()  # an 8192 x 576 matrix; 16 different copies for the memory case
bw_now = hardware.read_bandwidth() / 1e9
r = pd.Series({f"{k}, {s}": v for (k, s), v in rates.items()}, name="weight GB/s").round(1)
print(r.to_string(), f"\nread bandwidth measured now: {bw_now:.1f} GB/s")
for kind in dict.fromkeys(k for k, _ in rates):
    cache, memory = rates[(kind, "from cache (one matrix)")], rates[(kind, "from memory (many)")]
    print(f"{kind}: cache / memory {cache / memory:.2f}; from cache = {cache / ladder['bandwidth_max_GBs'].max():.0%}"
          f" of the ladder run's best read bandwidth ({ladder['bandwidth_max_GBs'].max():.1f} GB/s)")
"""),
    md(r"""
### A kernel of our own

The compiled int8 product spends several instructions on every weight: widen the byte to an integer, convert it
to a float, multiply-add in fp32. llama.cpp's int8 format {cite}`llamacpp` avoids the conversion by rounding the
*activations* to integers as well, so that one integer multiply-add instruction does many products at once.
`secbook/csrc/int8_linear.cpp` (about 150 lines of C++, compiled on first use in 10-30 s; `secbook.kernels`) does
that with two choices of its own:

- the activations are rounded to **int16**, with one scale per 256 inputs, not to int8: each value is off by at
  most 1/65534 of the largest value in its 256, so the output stays within ~1e-5 of the fp32 product (torch.ao's
  dynamic int8 rounds activations to 256 levels, and its `tiny_ppl_change` shows it);
- on CPUs with AVX-512 VNNI one `vpdpwssd` instruction multiplies and adds 32 int16 pairs into int32 sums; each
  sum covers at most 256 inputs, so it cannot overflow, and it is then scaled into fp32. Eight weight rows are
  read at once from eight places far apart in the matrix, which keeps more memory requests in flight than eight
  neighbouring rows (measured here: ~1.6x over the 121 products of a replica decode step), and the rows are shared
  out over the cores. Without VNNI the same
  arithmetic runs as plain loops that the compiler vectorizes.

`kernels.int8_linear_reference` is the same arithmetic in a few lines of PyTorch; first check the kernel against it
and against the fp32 product:
"""),
    code(r"""
from secbook import kernels
if kernels.available():
    torch.manual_seed(0)
    w8, s8, x8 = torch.randint(-127, 128, (3072, 576), dtype=torch.int8), torch.rand(3072) / 100, torch.randn(1, 576)
    y_k, y_ref = kernels.int8_linear(x8, w8, s8), kernels.int8_linear_reference(x8, w8, s8)
    y_fp32 = (x8.double() @ w8.double().T * s8.double()).float()
    rel = lambda a, b: ((a - b).abs().max() / b.abs().max()).item()
    print(f"AVX-512 VNNI path: {kernels.has_vnni()} | max error vs the PyTorch reference {rel(y_k, y_ref):.1e}, "
          f"vs the fp32 product {rel(y_k, y_fp32):.1e} (relative to the largest output)")
else:
    print("the C++ kernel cannot be built here:", kernels.unavailable_reason())
"""),
    md(r"""
The cache-versus-memory rates above include the kernel (`int8 C++ kernel`) where it builds: from cache it runs at
a multiple of the compiled PyTorch product, so it is no longer arithmetic that limits it, and from memory it gets
much closer to the read bandwidth. In the decode loop every int8 layer becomes one `kernels.Int8Linear` (q/k/v
stacked, gate/up stacked, LM head included: `apply_transform(model, "int8k")`), which `torch.compile` calls from the
compiled step like any built-in kernel. The recorded ladder, the pure-PyTorch int8 rungs next to the kernel's:
"""),
    code(r"""
k8 = ladder[ladder["transform"].isin(["int8wo", "int8k"])]
k8[["model", "rung", "tok_s", "speedup", "token_agreement", "tiny_ppl_change", "achieved_GBs", "mbu"]].round(3)
"""),
    md(r"""
The ladder runs its rungs one after another, minutes apart, and this shared machine's speed drifts in between
(compare the `bandwidth_GBs` column), so two rungs within ~20% of each other can swap places from one run to the
next. For a close comparison, measure *in turn*: `python -m secbook bench --suite ab --transforms int8wo int8k
int8k-cpp dyn8` builds our compiled loop under each transform (`int8k-cpp`: the C++ step of the next section) and then, round after round, runs each once
(`secbook.ladder.interleaved_tok_s`); `ratio` is the median over rounds of each one's speed ÷ the first one's in the same
round. Its `tok_s` is new tokens ÷ the time of the whole `generate` call, prompt included, so it is lower than the
ladder's decode-only `tok_s`. Recorded:
"""),
    code(r"""
ab = load_results("generate_ab")
print("recorded on:", ab["cpu"].iloc[0], f"({ab['cores'].iloc[0]} cores), torch", ab["torch"].iloc[0])
ab[["model", "transform", "tok_s", "ratio", "token_agreement", "rounds", "timestamp"]].round(3)
"""),
    md(r"""
### The whole step in C++

Even with the kernel, a compiled decode step of the replica spends about a third of its time outside the weight
products: ~120 kernel calls per token each start and stop, and between them the compiled graph's Python wrapper
and guards run and a few hundred small operations (norms, RoPE, cache writes, attention over a few dozen
positions) each take microseconds for microseconds of work. llama.cpp {cite}`llamacpp` has none of that: the
whole model runs as one C++ program. `secbook/csrc/llama_step.cpp` (about 450 lines) does the same for one decode
step of a Llama-layout model on our int8 weights — one call per token that loops over the layers: RMSNorm, the
fused q/k/v product, RoPE with the model's own tables, the KV-cache write, grouped-query attention, the output
product, the SiLU MLP, and at the end the LM head. The products use the kernel's arithmetic from above (int16
activations, `vpdpwssd`); the rest is fp32 loops, 16 numbers at a time where the CPU has AVX-512.

Two more choices are about memory, not arithmetic. First, the weights are **packed per core** once, when the
decoder is built: core $p$'s share of every matrix, in the order the step reads them, is one contiguous buffer,
and within it each block of 8 rows is stored as one run of bytes. Each core then reads a single sequential stream
from the first layer to the LM head, and the CPU's hardware prefetcher, which follows sequential streams, keeps
running from one matrix into the next instead of starting again 121 times per token. Second, the cores start
**once per step** (one OpenMP parallel region) and wait for each other only where a phase needs another core's
results (a barrier after each product, after RoPE and after attention); the small work in between (norms,
rounding a product's input to int16) each core does on its own copy. Gate and up rows are paired in the packed
blocks, so the core that computes gate row $j$ also has up row $j$ and applies SiLU right away. Both choices
came from measuring on this kind of 2-core machine: the packed layout with one parallel region streamed the step's
weights faster than the same kernel over matrices stacked layer by layer with a parallel region per product; and
once the products were fast, `exp` one number at a time (SiLU, softmax) had become a visible share of the step, so
it now runs 16 numbers at a time too. `kernels.CppDecoder` does the packing and is a drop-in for our Python decoder: `FastGenerator(model, max_len,
cpp=True)` on a model from `apply_transform(model, "int8k")`.

Check it on the tiny model: the same greedy tokens as HF `generate` on the same int8 weights, then our Python loop
on the kernel (eager) and the C++ step timed in turn:
"""),
    code(r"""
import numpy as np
from secbook.measure import tok_s_in_turn

def in_turn(loops, expect):
    # the two generate functions timed in turn, 5 rounds; every output must equal `expect` (HF generate's tokens)
    speeds = tok_s_in_turn(loops, ids, 64, expect=expect)
    (a, sa), (b, sb) = speeds.items()
    print({n: f"{np.median(v):.0f} tok/s" for n, v in speeds.items()}, f"| {b} / {a}: "
          f"{np.median(np.array(sb) / np.array(sa)):.1f}x (medians of 5 rounds; tokens identical to HF generate)")

if kernels.available():
    k_model = secbook.ladder.apply_transform(secbook.load("tiny")[0], "int8k")
    in_turn({"Python loop + kernel": generate.FastGenerator(k_model, max_len=96).generate,
             "whole step in C++": generate.FastGenerator(k_model, max_len=96, cpp=True).generate},
            expect=generate.hf_generate(k_model, ids, 64))  # HF generate on the same int8 weights
else:
    print("the C++ kernel cannot be built here:", kernels.unavailable_reason())
"""),
    md(r"""
Nothing in this step needs int8. Given the model's own fp32 weights, `CppDecoder` packs those instead (pieces of 16
floats, fp32 products, no rounding of anything), and the step is **lossless**: the same arithmetic as PyTorch's up
to the order of additions. It reads four times the bytes of the int8 step, so where memory sets the pace it runs
at about a quarter of that speed, and it still leaves our Python loop far behind. On the tiny model, against HF
`generate`'s tokens and our fp32 loop, in turn:
"""),
    code(r"""
if kernels.available():
    in_turn({"our loop fp32": fast.generate,
             "whole step in C++, fp32": generate.FastGenerator(model, max_len=96, cpp=True).generate},
            expect=reference)  # HF generate's own fp32 tokens
else:
    print("the C++ step cannot be built here:", kernels.unavailable_reason())
"""),
    md(r"""
On the replica, where reading 135 MB of int8 weights (538 MB in fp32) per token dominates, the recorded rows
(ladder rungs `int8, whole decode step in C++` and `fp32, whole decode step in C++`, and `int8k-cpp` in the
in-turn comparison above) show what is left once the overhead is gone: `achieved_GBs` is the weight bytes the step reads per second, and the MBU column divides it by
the best read bandwidth the run measured (`bandwidth_max_GBs`, torch summing a 256 MB tensor after every rung).
That bandwidth moves with the neighbours' load while the ladder runs, so the table also divides by the *median*
sample (`mbu_vs_median`). Where that is above 1 it is not a mistake: the packed step then streamed weights
faster than torch's sum usually reads memory on this machine, so the median sample is no ceiling, and the best
sample is the fair one to compare with. On the tiny model the MBU can exceed 1: its weights (~6 MB in int8, ~23 MB
in fp32) fit in this CPU's 32 MB L3 cache, so the step reads them faster than memory delivers a 256 MB tensor.
Full runs of the ladder half an hour apart have differed here by a third
for the memory-bound rungs (the C++ step most of all) and by a few percent for the overhead-bound ones, so compare
rungs within one run:
"""),
    code(r"""
cpp_rows = ladder[ladder["loop"] == "cpp"].copy()
cpp_rows["bandwidth_median_GBs"] = cpp_rows["model"].map(ladder.groupby("model")["bandwidth_GBs"].median())
cpp_rows["mbu_vs_median"] = cpp_rows["achieved_GBs"] / cpp_rows["bandwidth_median_GBs"]
cpp_rows[["model", "tok_s", "speedup", "token_agreement", "achieved_GBs", "bandwidth_max_GBs", "mbu",
          "bandwidth_median_GBs", "mbu_vs_median"]].round(3)
"""),
    md(r"""
## Speculative decoding

A decode step of the target is memory-bound: checking $\gamma+1$ positions in one pass costs about as much as one.
A small **draft** model with the same tokenizer proposes $\gamma$ tokens; the target verifies them all in one pass,
keeps the longest prefix it agrees with and adds its own next token. With greedy decoding the output is exactly the
target's; with sampling the accept/reject rule keeps the target's distribution. At acceptance rate $\alpha$ a target
call yields on average $(1-\alpha^{\gamma+1})/(1-\alpha)$ tokens. Our draft is the student distilled from the tiny
model in chapter 3.1 (if it is missing, the first two layers of the tiny model stand in).

Whether it pays depends on one more number: the cost $c$ of a draft step as a fraction of a target step. A round
costs about $\gamma c + 1$ target steps, so the predicted speed-up over the target alone is
$\frac{1-\alpha^{\gamma+1}}{(1-\alpha)(\gamma c + 1)}$ {cite}`leviathan2023fast`. First $c$, measured with our loop:
"""),
    code(r"""
draft, draft_name = secbook.ladder.draft_for(model)
print("draft:", draft_name, f"({sum(p.numel() for p in draft.parameters()):,} parameters, {draft.config.num_hidden_layers} layers)")
t_draft = time_generation(draft, tok, new_tokens=64, repeats=3, generate_fn=generate.FastGenerator(draft, max_len=96).generate)
c = t_draft.tpot_s / t_ours.tpot_s
print(f"draft step {t_draft.tpot_s * 1e3:.2f} ms, target step {t_ours.tpot_s * 1e3:.2f} ms: c = {c:.2f}")
"""),
    code(r"""
rows = []
for g in (1, 2, 4, 6):
    dec = speculative.SpeculativeDecoder(model, draft, gamma=g, max_len=96)
    r = dec.generate(ids, 64)
    t = time_generation(model, tok, new_tokens=64, repeats=2, generate_fn=lambda x, n, d=dec: d.generate(x, n).ids)
    rows.append({**r.as_dict(), "identical": torch.equal(r.ids, reference), "tok_s": t.tokens_per_s})
spec = pd.DataFrame(rows)
spec["predicted_vs_our_loop"] = [speculative.expected_tokens_per_call(a, g) / (g * c + 1)
                                 for a, g in zip(spec["acceptance_rate"], spec["gamma"])]
spec["speedup_vs_our_loop"] = spec["tok_s"] / t_ours.tokens_per_s
spec["speedup_vs_hf"] = spec["tok_s"] / t_hf.tokens_per_s
spec.round(3)
"""),
    md(r"""
Read the last three columns together. The tokens are the target's own (`identical`), and against HF `generate` the
speculative loop can be ahead — but against *our* loop on the target alone, the honest comparison, it needs a draft
that is both cheap and right most of the time. The tiny model is so small that a step is mostly fixed overhead, so
the 2-layer student still costs a good fraction of a target step, and it agrees with the teacher on well under
half of its guesses. The verification pass over $\gamma+1$ positions also costs more than one step here, which the
formula leaves out. Speculative decoding earns its keep when the target is big and memory-bound (reading its
weights dominates) and the draft is much smaller — a 1B target with a 100M draft on a GPU, not a 6M one on a CPU.

A draft does not have to be a different model. The target's own **dynamic-int8 copy** reads a quarter of the
bytes and agrees with the fp32 target almost everywhere, so its guesses are nearly always accepted — and because
the target verifies them, the output is still exactly the fp32 target's. On the tiny model the int8 copy is not
much cheaper (a step is mostly overhead); the recorded ladder below shows it on the memory-bound replica too.
"""),
    code(r"""
self_draft, label = secbook.ladder.draft_for(model, "int8-self")
sd = speculative.SpeculativeDecoder(model, self_draft, gamma=4, max_len=96)
r = sd.generate(ids, 64)
t_sd = time_generation(model, tok, new_tokens=64, repeats=3, generate_fn=lambda x, n: sd.generate(x, n).ids)
print(f"draft: {label} | identical: {torch.equal(r.ids, reference)} | acceptance {r.acceptance_rate:.2f}, "
      f"{r.tokens_per_call:.2f} tokens per target call | {t_sd.tokens_per_s / t_ours.tokens_per_s:.2f}x our loop, "
      f"{t_sd.tokens_per_s / t_hf.tokens_per_s:.2f}x HF generate")
"""),
    md(r"""
The other lever is the draft's cost $c$. Run the draft on the whole-step C++ decoder of the section before
(`cpp_draft=True`, the draft's weights on our int8 kernel) and a draft step costs a small fraction of a target
step. The student's guesses are no better than before, but they become nearly free; the target's own int8 copy
is right nearly always and now cheap as well. The target still checks every token in fp32, so the output stays
exactly the fp32 target's (`identical`). The last row puts the fp32 target on the C++ step too
(`cpp_target=True`): checking $\gamma+1$ positions there costs little more than one, since each block of weights
is read once for all of them:
"""),
    code(r"""
if kernels.available():
    rows_cpp = []
    for name, cpp_target in (("student", False), ("int8-self", False), ("int8-self", True)):
        d_cpp, label = secbook.ladder.draft_for(model, name, loop="cpp")
        dec = speculative.SpeculativeDecoder(model, d_cpp, gamma=4, max_len=96, cpp_draft=True, cpp_target=cpp_target)
        label += " + fp32 target on the C++ step" if cpp_target else ""
        r = dec.generate(ids, 64)
        t = time_generation(model, tok, new_tokens=64, repeats=3, generate_fn=lambda x, n, d=dec: d.generate(x, n).ids)
        rows_cpp.append({"draft (gamma=4)": label, "identical": torch.equal(r.ids, reference),
                         "acceptance_rate": r.acceptance_rate, "tokens_per_call": r.tokens_per_call,
                         "tok_s": t.tokens_per_s, "speedup_vs_our_loop": t.tokens_per_s / t_ours.tokens_per_s,
                         "speedup_vs_hf": t.tokens_per_s / t_hf.tokens_per_s})
    print(pd.DataFrame(rows_cpp).round(3).to_string(index=False))
else:
    print("the C++ kernel cannot be built here:", kernels.unavailable_reason())
"""),
    code(r"""
ax = spec.plot(x="gamma", y=["tokens_per_call", "expected_tokens_per_call"], marker="o", figsize=(6, 3.2))
ax.set_ylabel("tokens per target call"); ax.set_title("measured vs (1-α^(γ+1))/(1-α)")
plt.show()
"""),
    md(r"""
**Prompt-lookup decoding** {cite}`saxena2023promptlookup` needs no draft model at all: it proposes the tokens that
followed the last occurrence of the current n-gram in the context — strong whenever the output copies from its input
(code, edits). transformers implements both ideas inside `generate` (`assistant_model=`, `prompt_lookup_num_tokens=`);
all four must give the reference tokens:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
lookup = speculative.SpeculativeDecoder(model, "lookup", gamma=4, max_len=96).generate(ids, 64)
print("ours, draft model:  ", torch.equal(speculative.speculative_generate(model, draft, ids, 64).ids, reference))
print("ours, prompt lookup:", torch.equal(lookup.ids, reference))
print("HF assistant_model: ", torch.equal(speculative.hf_assisted(model, draft, ids, 64), reference))
print("HF prompt lookup:   ", torch.equal(speculative.hf_prompt_lookup(model, ids, 64), reference))
"""),
    code(r"""
print(f"prompt lookup: acceptance {lookup.acceptance_rate:.2f}, {lookup.tokens_per_call:.2f} tokens per target call")
try:  # a draft with another tokenizer is refused with a clear message
    speculative.SpeculativeDecoder(model, secbook.load("replica:smollm2-135m", num_hidden_layers=1)[0])
except ValueError as e:
    print("ValueError:", e)
"""),
    md(r"""
## ONNX Runtime

ONNX Runtime runs an exported static graph with its own optimisations and execution providers. To decode with a
cache, the graph takes the past keys/values as inputs and returns the grown cache, with the number of new tokens
and of cached positions both dynamic — one graph for the prefill and for every step
(`secbook.onnx_export.CachedLM`). Exported, checked against PyTorch's logits, then used for greedy decoding:
"""),
    code(r"""
path = onnx_export.export_with_cache(model)
ort_gen = onnx_export.OrtGenerator(path, model.config)
print({k: f"{v:.2e}" for k, v in onnx_export.compare_logits(model, ort_gen, ids).items()})
print("ONNX Runtime greedy tokens identical:", torch.equal(ort_gen.generate(ids, 64), reference))
"""),
    code(r"""
t_ort = time_generation(model, tok, new_tokens=64, repeats=3, generate_fn=ort_gen.generate)
speeds = pd.Series({"HF generate": t_hf.tokens_per_s, "our loop (eager)": t_ours.tokens_per_s,
                    "ONNX Runtime": t_ort.tokens_per_s}, name="tokens/s (tiny, decode)")
speeds.round(1).to_frame()
"""),
    md(r"""
## The optimization ladder

Every rung measured side by side in one run of `python -m secbook bench --suite generate` per model (bs 1, greedy,
32-token prompt, 64 new tokens), recorded on the machine named below. Each bar: decode tokens/s, labelled with the
speed-up over HF `generate` fp32 and the fraction of tokens equal to its output. `tiny_ppl_change` is the held-out
perplexity change of the same technique on the tiny model; MBU (model-bandwidth utilisation) is weight bytes read
per token × tokens/s ÷ the best read bandwidth measured during that run. Grey bars are HF `generate` baselines: a rung
added later by a partial run (`--rungs`) is compared with the baseline re-measured beside it, never across runs.
"""),
    code(r"""
secbook.ladder.plot_ladder(ladder)
plt.show()
"""),
    code(r"""
cols = ["model", "rung", "tok_s", "speedup", "token_agreement", "tiny_ppl_change", "mbu", "first_call_s", "note"]
ladder[cols].round(3)
"""),
    md(r"""
Reading the ladder honestly. The 135M replica is memory-bound: every rung that reads fewer bytes per token, or
reads them faster, moves it — the fused, transposed weights (same tokens), then int8. The tiny model is
overhead-bound: its weights are 23 MB, so what moves it is spending less fixed time per token (compiling) and
copying the output of the prompt (prompt lookup, on text as repetitive as a tiny model's); differences of 10-20%
between its eager rungs are within this shared machine's noise. The lossless rungs must
show agreement 1.00; bf16 and the quantized rungs may change a few tokens, and `tiny_ppl_change` says what the same
technique costs in held-out perplexity on the tiny model. The summary below is computed from the recorded rows:
best lossless rung, best rung within a 1% perplexity budget, and its MBU (weight bytes one decode step reads ×
tokens/s ÷ the read bandwidth). The bandwidth is measured after every rung; on a shared machine it moves with the
neighbours' load (the `bandwidth_GBs` column), so MBU divides by the highest value the run saw, the machine's
ceiling, and a momentary dip never flatters a rung:
"""),
    code(r"""
print(secbook.ladder.ladder_summary(ladder))
"""),
    md(r"""
Speculation is listed apart because its gain depends on the text, not only on the machine. Prompt lookup shines on
the replica because a random-weight model's greedy output soon repeats itself, and every repeat is a free draft;
a trained model on real text repeats far less. It is a fair measurement of *this* output, not a promise.
"""),
    md(r"""
On a GPU the same ideas go further — gpt-fast reports several-fold gains from the static cache and compilation
alone {cite}`gptfast2023`, because there the fixed cost per kernel launch, not the CPU's memory, is what a step
wastes.

On a GPU the same suite runs the 1B replica (Llama-3.2-1B's shapes, random weights), the compiled rungs with CUDA
graphs (`mode="reduce-overhead"`); the C++ rungs and torch.ao's dynamic int8 are CPU-only and skipped. Where this
page runs on a GPU, the cell below measures the baseline and two compiled rungs now (a few minutes, most of it
compiling); on a CPU it shows the whole ladder as recorded on a GPU (`bash tools/gpu_ladder.sh`), labelled with
that GPU — numbers from another machine, not from this one:
"""),
    code(r"""
from types import SimpleNamespace
from secbook.paths import RESULTS_DIR
if torch.cuda.is_available():
    args = SimpleNamespace(model="replica:llama-3.2-1b", device="cuda", prompt_len=32, new_tokens=64, repeats=3)
    rungs = secbook.ladder.LADDER
    quick = [rungs[0]] + [r for r in rungs if r.name in secbook.ladder.GPU_QUICK_RUNGS]
    gpu = secbook.ladder.run_generate_suite(args, rungs=quick, save=False)
    title = f"measured now on {torch.cuda.get_device_name(0)}"
elif (RESULTS_DIR / "generate_ladder_cuda.csv").exists():
    print("No CUDA GPU here: the 1B replica's ladder as recorded on a GPU.")
    gpu = load_results("generate_ladder_cuda")
    title = f"recorded on {gpu['gpu'].iloc[0]} ({gpu['timestamp'].iloc[0]}), torch {gpu['torch'].iloc[0]}"
else:
    gpu = None
    print("No CUDA GPU here, and no GPU ladder recorded yet (bash tools/gpu_ladder.sh on a GPU machine makes one).")
if gpu is not None:
    secbook.ladder.plot_ladder(gpu, title); plt.show()
    print(secbook.ladder.ladder_summary(gpu))
    display(gpu[["rung", "tok_s", "speedup", "token_agreement", "tiny_ppl_change", "mbu", "first_call_s"]].round(3))
"""),
    md(r"""
Reading a GPU ladder. Eager decoding (HF `generate`, our loop uncompiled) launches hundreds of small kernels per token
and the GPU waits for Python between them, so it reads the weights at a small fraction of the memory's speed (the
`mbu` column). Compiled with `mode="reduce-overhead"`, the whole step is one CUDA-graph replay: the fp32 step then
streams the weights at a large share of the bandwidth, with every token equal to HF `generate`'s, and bf16, half the
bytes, goes further. bf16 agrees with fp32 on few tokens of the *random-weight* replica because its logits over 128k
tokens are nearly tied, so any rounding changes the argmax; on a trained model (the tiny model's `tiny_ppl_change`)
the same cast costs almost nothing. Our int8 weight-only product compiles to a generated reduction that reads int8
below the bandwidth (compare its `mbu` with bf16's): a quarter of fp32's bytes does not make it four times faster
without a hand-tuned int8 kernel. A self-draft costs a GPU as many launches per token as the target, so eager
speculation does not pay there.
"""),
    md(r"""
## Try it

Batch size, context length, draft length γ (with an assumed acceptance rate α) and the attention implementation:
the tiny model's KV-cache size, one timed prefill, the speculative speed-up the formula predicts, and the batching
simulation at that many slots.
"""),
    code(r"""
panel = widgets.generation_widget(batch=4, context=256, gamma=4, attention="sdpa")
display(panel)
print(widgets.generation_update(8, 512, 4, "eager", alpha=0.7, model=model))
"""),
    md(r"""
## Exercises

1. **One greedy decode step with a KV cache.** Write `step(model, token, past)` that runs the model on the single
   `token` ([1, 1]) with the cache `past`, and returns the next greedy token ([1, 1]) and the updated cache. The
   self-check runs it for 12 steps against `model.generate`.
2. **Cache size.** SmolLM2-135M has 30 layers, 9 query heads, 3 key/value heads and head_dim 64. How many MB
   (10⁶ bytes) does its KV cache take for 2048 positions in bf16? How much would it be without GQA?
3. **When does speculation pay?** A draft step costs a fraction $c$ of a target step. With $\gamma$ drafts per round
   a round costs $\gamma c + 1$ target steps and yields $(1-\alpha^{\gamma+1})/(1-\alpha)$ tokens. For $\alpha=0.6$
   and $c=0.25$, which $\gamma$ in 1..8 is best, and what speed-up does it predict?
4. **Static batching waste.** In the simulation, what fraction of slot-steps does static batching leave idle at
   `max_batch=8`, and why does continuous batching not suffer from it?
5. **Why 256?** Our C++ kernel adds products of an int8 weight (−128..127) and an int16 activation
   (−32767..32767) into an int32 running sum (at most $2^{31}-1$ in size). How many products can one sum add with
   no risk of overflow? Check with `exercises.check_int32_chunk(n)`.
6. **The C++ step's ceiling.** From the recorded ladder row `int8, whole decode step in C++` of the replica, take
   the bytes one decode step reads (`read_bytes_per_token`) and the run's best read bandwidth
   (`bandwidth_max_GBs`). How many tokens per second would a step that only streams its weights at that bandwidth
   reach, and what fraction of that does the C++ step reach? Where could the rest go?
7. **Four times the bytes.** The fp32 C++ step reads about four times the bytes of the int8 one. If memory alone
   set the pace, how much slower would it be? Compare with the recorded replica rows `fp32, whole decode step in
   C++` and `int8, whole decode step in C++` (and the tiny model's, whose weights fit in the CPU's caches), and
   explain the difference.
"""),
    code(r"""
def step(model, token, past):
    # your code here: one forward pass on `token` with `past`, return (next_token [1, 1], new_past)
    raise NotImplementedError
"""),
    solution(r"""
def step(model, token, past):
    with torch.no_grad():
        out = model(input_ids=token, past_key_values=past, use_cache=True)
    return out.logits[:, -1:].argmax(-1), out.past_key_values

exercises.check_greedy_step(step)
exercises.check_kv_cache_mb(30 * 2 * 3 * 64 * 2048 * 2 / 1e6)
"""),
    solution(r"""
alpha, c = 0.6, 0.25
best = max(range(1, 9), key=lambda g: speculative.expected_tokens_per_call(alpha, g) / (g * c + 1))
print("best gamma:", best, "predicted speed-up:", round(speculative.expected_tokens_per_call(alpha, best) / (best * c + 1), 3))
s8 = batching.simulate(batching.workload(64, seed=0), "static", max_batch=8)
print("static batching idle fraction:", round(1 - s8["slot_utilisation"], 2))
"""),
    solution(r"""
exercises.check_int32_chunk((2 ** 31 - 1) // (128 * 32767))
"""),
    solution(r"""
rep = ladder[ladder["model"] == "replica:smollm2-135m"]
row = rep[rep["rung"] == "int8, whole decode step in C++"].iloc[0]
ceiling = row["bandwidth_max_GBs"] * 1e9 / row["read_bytes_per_token"]  # tokens/s if only weights were read
print(f"ceiling at the run's best bandwidth: {ceiling:.0f} tok/s; the C++ step: {row['tok_s']:.0f} tok/s "
      f"({row['tok_s'] / ceiling:.0%}, which is its MBU)")
# The rest: the cores wait for each other at ~6 barriers per layer (one is always a little behind on a shared
# machine), attention and norms read no weights, and the best bandwidth sample is a moment the machine was quiet.
"""),
    solution(r"""
for name, d in ladder[ladder["loop"] == "cpp"].groupby("model", sort=False):
    f32, i8 = (d[d["rung"] == f"{w}, whole decode step in C++"].iloc[0] for w in ("fp32", "int8"))
    print(f"{name}: bytes per token fp32/int8 = {f32['read_bytes_per_token'] / i8['read_bytes_per_token']:.2f}, "
          f"speed int8/fp32 = {i8['tok_s'] / f32['tok_s']:.2f}, GB/s read: fp32 {f32['achieved_GBs']:.1f}, "
          f"int8 {i8['achieved_GBs']:.1f}")
# On the replica the two speeds differ by nearly the ratio of bytes: both steps stream weights at a similar rate,
# so memory sets the pace. On the tiny model (~6 MB of int8 weights, ~23 MB in fp32) the weights come from the
# CPU's caches (32 MB of L3 here), the step is short and its fixed costs (barriers, attention) weigh more, so the
# ratio of speeds need not follow the ratio of bytes.
"""),
]
