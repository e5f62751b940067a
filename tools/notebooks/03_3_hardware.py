"""Chapter 3.3 — Hardware acceleration: devices, precision, CUDA graphs, memory planning, more than one device."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

NAME = "03_3_hardware"

CELLS = [
    md(r"""
# Hardware acceleration: from one device to several

The third family of speed-ups in the source is the hardware itself: run on a GPU, in a lower precision,
with fewer kernel launches, and — when one device is not enough — spread the model over several. Each of
these is a decision the code must take *for the machine it runs on*: a Colab T4 has no bf16, a laptop has
no GPU at all, and the machine that built this page is named under the first code cell. This chapter covers:

1. **What is here** — one table of the machine, and the device/dtype choice made from it;
2. **Mixed precision** — fp32, bf16, fp16 weights and autocast: memory, speed, and how much the output
   changes; why fp16 overflows {cite}`micikevicius2018mixed` and bf16 does not {cite}`kalamkar2019bf16`;
3. **Launch overhead and CUDA graphs** — why a small model on a fast GPU is limited by the CPU, and how
   capturing a decode step as a graph removes that {cite}`nvidia_cuda_graphs`;
4. **Will it fit?** — a memory estimate, an interactive panel, and what accelerate does when the model does
   not fit: device maps and offload to CPU and disk {cite}`hf_accelerate_bigmodel`;
5. **Beyond one device** — tensor parallelism written out with `torch.distributed` and run here on two CPU
   processes {cite}`shoeybi2019megatron`, transformers' built-in version, pipeline parallelism, and where
   serving engines take over.

The code lives in `secbook.hardware`, `secbook.memory` and `secbook.parallel`. GPU-only cells say what they
would do on a GPU and show GPU numbers only where a real run was recorded, labelled with the GPU and the date.
"""),
    opening(["tell from a machine's description which device and number format to use, and why",
             "measure what a lower precision costs in memory, speed, tokens and answers, on a tiny and a real model",
             "explain launch overhead and how CUDA graphs remove it",
             "estimate whether a model fits a GPU, and what offloading to CPU or disk costs when it does not",
             "split a model across two processes with tensor parallelism, and say when that pays off"],
            ["chapter 1 (tokens/s) and chapter 2; chapter 3.2's decode loop helps",
             "no GPU: every cell runs on a CPU, and GPU-only cells show recorded results"], 35),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import os, tempfile
import torch, pandas as pd, matplotlib.pyplot as plt
from secbook import corpus, exercises, hardware, measure, memory, parallel, paths, tasks, widgets
from secbook.claims import compare, guard, say, times, times_zh
from secbook.measure import PPL_TOKENS, perplexity_protocol
from secbook.pretrained import chat_ids
pd.set_option("display.width", 160)
print("measured on:", machine)
"""),
    md(r"""
## What is here

`hardware.describe()` gathers the facts the rest of the book branches on: the CPU and whether it has bf16
instructions (AVX512-BF16 or AMX), the GPU, its memory and *compute capability* (NVIDIA's generation number:
7.5 is a T4, 8.0 an A100, 8.9 an L4, 9.0 an H100), which attention kernels and which quantized-kernel
libraries are installed.
"""),
    code(r"""
hardware.describe()
"""),
    md(r"""
### Choosing the device and the dtype

`pick_device("auto")` takes CUDA, then Apple MPS, then the CPU; asking for a device that is absent is an
error at once, not a crash deep inside a kernel. `pick_dtype(device)` chooses by this table:

| hardware | dtype | why |
|---|---|---|
| NVIDIA GPU, compute capability ≥ 8.0 (A100, L4, H100...) | bf16 | tensor cores run bf16 at the fp16 rate, with fp32's range |
| NVIDIA GPU, compute capability < 8.0 (**T4**, V100) | fp16 | no bf16 hardware; fp16 tensor cores exist |
| Apple GPU (MPS) | fp16 | every Apple GPU runs fp16; MPS has bf16 only from macOS 14 |
| CPU with AVX512-BF16 or AMX | bf16 | the CPU multiplies bf16 in hardware |
| CPU without them | fp32 | bf16 would be emulated, slower than fp32 |

An explicit `prefer=` overrides the rule; asking for bf16 on a T4 is refused with a message that says to use
fp16. (The unit tests check every row of this table by pretending, at the `torch.cuda` boundary, that a T4
or an A100 is present.)
"""),
    code(r"""
dev = hardware.pick_device("auto")
print("device:", dev, "| dtype:", hardware.pick_dtype(dev), "| CPU bf16 instructions:", hardware.cpu_has_fast_bf16())
for ask in ("cuda", "mps"):
    try:
        hardware.pick_device(ask)
    except ValueError as e:
        print(f"pick_device({ask!r}) -> ValueError: {str(e)[:110]}...")
"""),
    md(r"""
## Mixed precision

A 16-bit format halves the bytes of every weight. Once a model is large enough that its decode step is limited by
how fast its weights are read (chapter 4), that can nearly double the speed. The two 16-bit formats split their bits differently:
fp16 keeps 10 mantissa bits but only 5 exponent bits; bf16 keeps fp32's 8 exponent bits and only 7 mantissa
bits.
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
print(hardware.float_formats()[["exponent_bits", "mantissa_bits", "max", "eps"]].to_string())
print("mean of 300² in each dtype:", hardware.fp16_overflow_demo(300.0))
"""),
    md(r"""
The second line is the fp16 pitfall. RMSNorm computes the mean of squared activations; activations of a few
hundred are common in large models (a few "outlier" features are much larger {cite}`dettmers2022llmint8`),
and 300² = 90 000 is beyond fp16's largest value, 65 504. The result is `inf`, the next division gives 0 or
NaN, and the generated text becomes garbage. bf16 only loses digits. This is why transformers computes
norms in fp32 even in an fp16 model, why models trained in bf16 sometimes produce NaN when run in fp16 on a
T4, and why mixed-precision *training* needs loss scaling in fp16 {cite}`micikevicius2018mixed`.

Now the measurement: the tiny model with its weights in each format, plus fp32 weights under
`torch.autocast` (the matmuls run in bf16, the weights stay fp32). Same model, same prompt, same held-out
text, one run; the decode speed is timed in turn — each round times every variant once — so that other work on
the machine slows all of them alike.
"""),
    code(r"""
model, tok = secbook.load("tiny")
text = corpus.heldout_text(max_chars=48000)
prec = hardware.precision_table(model, tok, text, dtypes=("fp32", "bf16", "fp16"), autocast="bf16",
                                new_tokens=8, max_tokens=PPL_TOKENS, repeats=3)
print("perplexity:", perplexity_protocol(PPL_TOKENS), "| decode speed: median of 3 rounds in turn")
prec.round(3)
"""),
    code(r"""
fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharey=True)
for ax, col, title in zip(axes, ["weights_MB", "ms_per_token", "perplexity_change_%"],
                          ["weight memory (MB)", "decode ms / token", "perplexity change vs fp32 (%)"]):
    prec[col].plot.barh(ax=ax, color="#4c72b0"); ax.set_title(title); ax.set_ylabel("")
fig.suptitle(f"tiny model, {secbook.describe_machine()}", fontsize=9); fig.tight_layout()
plt.show()
"""),
    code(r"""
guard(prec.loc["bf16", "weights_MB"] == prec.loc["fp32", "weights_MB"] / 2
      and prec.loc["fp16", "weights_MB"] == prec.loc["bf16", "weights_MB"], "16-bit weights take exactly half the bytes")
r = prec.attrs["rounds"]
speed = "; ".join(compare(r, v, "fp32").words() for v in prec.index[1:])
speed_zh = "；".join(compare(r, v, "fp32").words_zh() for v in prec.index[1:])
say(f"The 16-bit weights took exactly half the bytes. Perplexity changed by "
    + ", ".join(f"{prec.loc[v, 'perplexity_change_%']:+.3f} % ({v})" for v in prec.index[1:])
    + f". Decode speed of the tiny model, timed in turn: {speed}.",
    zh="16 位权重恰好只占一半的字节。困惑度的变化为 "
       + "，".join(f"{prec.loc[v, 'perplexity_change_%']:+.3f} %（{v}）" for v in prec.index[1:])
       + f"。小模型的解码速度（轮流计时）：{speed_zh}。");
""", tags=("remove-input",)),
    md(r"""
What to read from it. The perplexity column shows what the rounding costs: bf16's 7-bit mantissa is a relative
error of up to 0.4% on every weight, fp16's 10 bits eight times less, and both errors mostly average out over a
dot product. The speed column depends on the kernels, not on the bytes alone: the tiny model reads only a few
tens of MB of weights per token, so reading them is not what limits its step (next section), and halving the
bytes can gain little — or lose, where a format's CPU kernels are slower for such small matrices. Autocast keeps
fp32 weights in memory and converts them on every call: it saves no memory, and whatever it saves in arithmetic
it pays in conversions; for inference, store the weights in the low precision instead.

### The real model in bf16

The tiny model shows the mechanics; whether a lower precision still gives the same *answers* is a question for
a real model. SmolLM2-135M-Instruct in fp32 and in bf16 (the format `pick_dtype` chooses on a CPU with bf16
instructions), both decoded by our loop of chapter 3.2 from one chat turn and timed in turn; then both answer the
30 questions of `secbook.tasks` (chapter 3.1), greedy, at most 24 new tokens.
"""),
    code(r"""
real, rtok = secbook.load("smollm2-135m-instruct")
turn = chat_ids(rtok, "Explain how a bicycle works, step by step.")
dt = hardware.dtype_in_turn(real, turn, dtypes=("fp32", "bf16"), new_tokens=16, rounds=3)
import copy
bf16 = copy.deepcopy(real).to(torch.bfloat16)
answers = {"fp32": tasks.score(real, rtok, max_new_tokens=24, batch_size=30),
           "bf16": tasks.score(bf16, rtok, max_new_tokens=24, batch_size=30)}
del bf16
dt["answered"] = [f"{int(answers[d].correct.sum())}/30" for d in dt.index]
dt.round({"weights_MB": 0, "tokens_per_s": 1, "vs_first": 2, "token_agreement": 3})
"""),
    code(r"""
c = compare(dt.attrs["rounds"], "bf16", "fp32")
pairs = list(zip(dt.attrs["tokens"]["bf16"][0], dt.attrs["tokens"]["fp32"][0]))
first_diff = next((i for i, (x, y) in enumerate(pairs) if x != y), None)
n_fp32, n_bf16 = (int(answers[d].correct.sum()) for d in ("fp32", "bf16"))
changed = int((answers["fp32"].reply != answers["bf16"].reply).sum())
say(f"On the real model, timed in turn with our loop: {c.words()}. "
    + ("bf16 produced fp32's 16 greedy tokens exactly. " if dt.loc["bf16", "identical"] else
       f"bf16's greedy reply left fp32's at token {first_diff + 1} of 16 (token agreement "
       f"{dt.loc['bf16', 'token_agreement']:.3f}): one different token sends the rest of the reply its own way. ")
    + f"Yet on the question set bf16 answered {n_bf16}/30 and fp32 {n_fp32}/30 ({n_bf16 - n_fp32:+d}; one answer is "
    f"about 3 percentage points, so a difference of one or two is noise), with {changed} of the 30 replies "
    f"changed at all. "
    + (f"`pick_dtype` chose bf16 for this CPU from its instruction set; on the real model with our loop bf16 was "
       f"{c.than} fp32 here" + (", which bears the rule out." if c.verdict == "faster" else
       ": a rule from the instruction set is a starting point, and a measurement decides.")
       if hardware.pick_dtype("cpu") == torch.bfloat16 else
       "`pick_dtype` chose fp32 for this CPU: it has no bf16 instructions, so bf16 is emulated."),
    zh=f"在真实模型上用我们的循环轮流计时：{c.words_zh()}。"
       + ("bf16 与 fp32 的 16 个贪心词元完全相同。" if dt.loc["bf16", "identical"] else
          f"bf16 的贪心回复在第 {first_diff + 1} 个词元（共 16 个）处与 fp32 的分开（词元一致率 "
          f"{dt.loc['bf16', 'token_agreement']:.3f}）：只要有一个词元不同，回复的其余部分就会各走各的路。")
       + f"然而在问题集上，bf16 答对了 {n_bf16}/30，fp32 答对了 {n_fp32}/30（{n_bf16 - n_fp32:+d}；一道题约占 3 个"
       f"百分点，所以相差一两道题只是噪声），30 个回复中有 {changed} 个有所改变。"
       + (f"`pick_dtype` 根据这个 CPU 的指令集为它选择了 bf16；在真实模型上用我们的循环，bf16 在这里与 fp32 相比"
          f"{c.than_zh}" + ("，这印证了这条规则。" if c.verdict == "faster" else
          "：根据指令集定出的规则只是一个起点，要由测量来决定。")
          if hardware.pick_dtype("cpu") == torch.bfloat16 else
          "`pick_dtype` 为这个 CPU 选择了 fp32：它没有 bf16 指令，所以 bf16 只能靠模拟。"));
""", tags=("remove-input",)),
    md(r"""
On a GPU the same comparison runs on the GPU (and the recorded runs below were made on one):
"""),
    code(r"""
if hardware.gpu_only("time fp32/bf16/fp16 weights and autocast for the real model on the GPU"):
    m, t = secbook.load("smollm2-135m-instruct", device="cuda")
    display(hardware.precision_table(m, t, text, dtypes=("fp32", "fp16") + (("bf16",) * hardware.supports_bf16("cuda")),
                                     autocast="bf16" if hardware.supports_bf16("cuda") else "fp16",
                                     max_tokens=PPL_TOKENS))
"""),
    code(r"""
rec = hardware.recorded_gpu_results("precision")
if rec is not None:
    display(rec.round(3))
    replicas = sorted({m for m in rec["model"] if str(m).startswith("replica:")})
    say("In the recorded table, " + (f"{', '.join(replicas)} has the real model's shapes but random weights: its speed "
        "is that of a model of that shape, and its perplexity is a random model's, so only the change between "
        "formats means anything there. " if replicas else "")
        + "The GPU's speeds are not comparable with this page's CPU rows: another machine, another run.",
        zh="在记录的表中，" + (f"{', '.join(replicas)} 具有真实模型的形状，但权重是随机的：它的速度就是这种形状的模型的速度，"
           "而它的困惑度是一个随机模型的困惑度，所以那里只有不同格式之间的变化才有意义。" if replicas else "")
           + "GPU 上的速度不能与本页在 CPU 上测得的各行相比：那是另一台机器、另一次运行。");
""", tags=("remove-input",)),
    md(r"""
## Launch overhead and CUDA graphs

Every PyTorch operator costs some microseconds of CPU time before it does any work: Python, the dispatcher,
and on a GPU the kernel launch. A decode step of even a small transformer is hundreds of operators. Count
them exactly, by intercepting every operator of one decode step:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
ids = tok("def read_config(path):\n", return_tensors="pt").input_ids
n_ops = hardware.count_ops(model, ids)
print(f"tiny: {n_ops} operators in one decode step of a {model.config.num_hidden_layers}-layer model "
      f"({n_ops // model.config.num_hidden_layers} per layer, plus embedding and LM head)")
n_real = hardware.count_ops(real, turn)
print(f"smollm2-135m-instruct: {n_real:,} operators per decode step ({real.config.num_hidden_layers} layers)")
"""),
    code(r"""
per_op, bw = hardware.launch_overhead_seconds("cpu"), hardware.read_bandwidth("cpu")
step = hardware.decode_seconds_per_token(model, ids, new_tokens=8)
floor = pd.Series({"reading the weights once": measure.model_bytes(model) / bw * 1e3,
                   "dispatch floor (ops × trivial-op cost)": n_ops * per_op * 1e3, "measured decode step": step * 1e3})
print(f"one trivial operator: {per_op * 1e6:.1f} µs; read bandwidth {bw / 1e9:.0f} GB/s (this CPU, now)")
floor.plot.barh(figsize=(7, 1.8), title="ms per token, tiny model, CPU"); plt.show()
"""),
    code(r"""
w_share, d_share = floor.iloc[0] / floor.iloc[2], floor.iloc[1] / floor.iloc[2]
say(f"The measured step took {floor.iloc[2]:.2f} ms. Reading the weights once at the measured bandwidth would take "
    f"{w_share:.0%} of it, bare dispatch of its {n_ops} operators {d_share:.0%}"
    + (": the step is far above what its bytes need, and most of it is the fixed cost of running hundreds of small "
       "operators, not arithmetic or bytes." if w_share < 0.5 else
       ": reading the weights is a large share of this step here, so fewer bytes would show in its speed."),
    zh=f"实测的一步耗时 {floor.iloc[2]:.2f} ms。以实测带宽把权重读一遍需要其中的 {w_share:.0%}，"
       f"单纯分发它的 {n_ops} 个算子需要 {d_share:.0%}"
       + ("：这一步远远超出了读取它的字节所需的时间，其中大部分是运行数百个小算子的固定开销，而不是算术或字节。"
          if w_share < 0.5 else "：在这里，读取权重占了这一步的很大一部分，所以更少的字节会体现在它的速度上。"));
""", tags=("remove-input",)),
    md(r"""
The first bar is what the step would cost if it only had to read the weights at the machine's measured
bandwidth — the decode bound of chapter 4. The second is time spent *only* dispatching operators, with no
arithmetic (a lower bound: real operators also allocate outputs, check shapes and, on a multi-core CPU,
start and join threads). On a GPU the arithmetic of a small model takes a few microseconds per kernel, so the
GPU idles while the CPU launches the next one: the step costs about (number of operators) × (launch time),
whatever the GPU. A **CUDA graph** records the whole sequence of kernels once and replays it with a single
launch.

Capturing needs every tensor at a fixed address: a pre-allocated (static) KV cache, a pre-allocated
attention mask, and fixed input buffers into which each new token is copied. `hardware.StaticDecoder` does
exactly that; its `step()` runs eagerly on any device, and after `capture()` it replays the graph. Eagerly, it
must produce the same tokens as `generate` — checked here on the CPU:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
ref = model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)
static = hardware.StaticDecoder(model, batch=1, max_len=64).generate(ids, 12)
print("static-cache decoder == generate:", torch.equal(static, ref))
guard(torch.equal(static, ref), "the static-cache decoder gives generate's greedy tokens")
"""),
    md(r"""
The capture itself, on a GPU (the code in `StaticDecoder.capture`): warm up on a side stream, then record
one forward inside `torch.cuda.graph(g)`; each later token is `token.copy_(...)`, one mask slot opened,
`g.replay()`. `torch.compile(mode="reduce-overhead")` does the same automatically (it also fuses operators
first). `cuda_graph_benchmark` times the four ways side by side and checks the tokens of the captured graph
and of the compiled step against eager (`token_agreement_vs_eager`):
"""),
    code(r"""
if hardware.gpu_only("time eager vs static cache vs a hand-captured CUDA graph vs torch.compile(mode='reduce-overhead')"):
    g = model.to("cuda")
    display(hardware.cuda_graph_benchmark(g, ids.cuda(), new_tokens=32))
    model = g.to("cpu")
"""),
    code(r"""
graphs = hardware.recorded_gpu_results("cuda_graphs")
if graphs is not None:
    ms = graphs.pivot_table(index="variant", columns=["model", "dtype"], values="ms_per_token", sort=False)
    print("milliseconds per decode step:")
    display(ms.round(2))
    checked = graphs[graphs["token_agreement_vs_eager"].notna()] if "token_agreement_vs_eager" in graphs else graphs[:0]
    unchecked = sorted(set(graphs.variant) - set(checked.variant))
    speed = [f"{times(ms.loc['static cache, eager', (m, d)] / ms.loc['static cache, CUDA graph (manual)', (m, d)])} for {m} in {d}"
             for m, d in ms.columns]
    speed_zh = [f"{m}（{d}）{times_zh(ms.loc['static cache, eager', (m, d)] / ms.loc['static cache, CUDA graph (manual)', (m, d)])}"
                for m, d in ms.columns]
    def names(variants):  # the variant names hold commas: quote each
        return ", ".join(f"`{v}`" for v in variants)
    def names_zh(variants):
        return "、".join(f"`{v}`" for v in variants)
    say(f"In the recorded run ({', '.join(graphs.gpu.unique())}), the speed of the hand-captured graph's step "
        f"relative to the same static-cache step run eagerly was " + "; ".join(speed) + ". "
        + (f"Its token check against eager covers {names(sorted(set(checked.variant)))} (agreement "
           f"{checked.token_agreement_vs_eager.min():.3f} at worst); " if len(checked) else "")
        + (f"the rows of {names(unchecked)} were timed without that check." if unchecked else ""),
        zh=f"在记录的运行中（{', '.join(graphs.gpu.unique())}），手动捕获的图执行一步的速度，是以即时执行方式运行同一个"
           f"静态缓存一步的：" + "；".join(speed_zh) + "。"
           + (f"它与即时执行的词元核对覆盖了 {names_zh(sorted(set(checked.variant)))}（一致率最低为 "
              f"{checked.token_agreement_vs_eager.min():.3f}）；" if len(checked) else "")
           + (f"{names_zh(unchecked)} 这几行的计时没有做这项核对。" if unchecked else ""));
""", tags=("remove-input",)),
    md(r"""
On the CPU there are no graphs to capture (no launch queue to batch) — the CPU's cure for per-operator
overhead is to do more work per operator (larger batches, fused kernels, `torch.compile`), or to run the whole
step as one call (section 3.2.1). As a rule of thumb, graphs help most when the model is small relative to the
GPU and batch is 1: exactly the decode case. A T4 note: CUDA graphs work on a T4 as on any GPU since CUDA 10; what a T4 lacks is bf16.

## Will it fit?

Inference memory is, to first order,

$$ \underbrace{N_\text{params} \times b_w}_{\text{weights}} \;+\;
   \underbrace{2 \cdot L \cdot h_{kv} \cdot d_h \cdot T \cdot B \cdot b_{kv}}_{\text{KV cache}} \;+\;
   \text{activations} \;+\; \text{runtime}, $$

with $L$ layers, $h_{kv}$ key/value heads of size $d_h$, context $T$, batch $B$, and $b$ bytes per value
{cite}`pope2022efficiently`. `memory.estimate` computes each term from a model's config; the parameter count
is derived from the shapes alone. First, the estimate against what torch actually allocates:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    out = model(input_ids=torch.randint(0, 4000, (2, 100)), use_cache=True, logits_to_keep=1)
cache = hardware.output_cache(out)
real_kv = sum(l.keys.nbytes + l.values.nbytes for l in cache.layers)
print("parameters  estimate", memory.parameter_count(model.config), "| real", sum(p.numel() for p in model.parameters()))
print("KV cache    estimate", memory.kv_cache_bytes(model.config, batch=2, context=100, dtype="fp32"), "| real", real_kv)
print("Llama-3.1-8B parameters from its config:", f"{memory.parameter_count('Llama-3.1-8B'):,}")
guard(memory.parameter_count(model.config) == sum(p.numel() for p in model.parameters())
      and memory.kv_cache_bytes(model.config, batch=2, context=100, dtype="fp32") == real_kv,
      "the parameter and KV-cache estimates equal what torch allocates")
"""),
    md(r"""
Both are exact (the check in the cell stops the build if not). Now real models on real GPUs. The runtime term is
an assumption (0.5 GiB for the CUDA context and library workspaces); activations are a rough peak of one layer
during a prefill. The bars show where the memory goes for an 8k-token context:
"""),
    code(r"""
cases = [("T4", "Llama-3.2-1B", "fp16"), ("T4", "Llama-3.1-8B", "fp16"), ("T4", "Llama-3.1-8B", "int4"),
         ("L4", "Llama-3.1-8B", "bf16"), ("A100 80GB", "Llama-3.1-70B", "bf16"), ("H200", "Llama-3.1-70B", "int8")]
fig, axes = plt.subplots(len(cases), 1, figsize=(8, 1.45 * len(cases)))
for ax, (gpu, name, dt) in zip(axes, cases):
    e, verdict = widgets.memory_fit_update(gpu, name, dt, batch=1, context=8192, ax=ax)
    ax.set_ylabel(f"{name}\n{dt} on {gpu}", rotation=0, ha="right", va="center", fontsize=8)
    if ax is not axes[-1]:
        ax.get_legend().remove()
fig.tight_layout(); plt.show()
"""),
    md(r"""
The panel below does the same for any combination. Move the context slider for an 8B model on a T4 in
int4: the weights fit easily, then the KV cache grows linearly until it does not. (In the static book the
panel shows its initial state; run the notebook to move the sliders.)
"""),
    code(r"""
display(widgets.memory_fit_widget(gpu="T4", model="Llama-3.1-8B", dtype="int4", batch=1, context=8192))
fig, ax = plt.subplots(figsize=(7, 1.8))
print(widgets.memory_fit_update("T4", "Llama-3.1-8B", "int4", batch=4, context=32768, ax=ax)[1])
fig.tight_layout(); plt.show()
"""),
    md(r"""
### When it does not fit: device maps and offload

accelerate's answer {cite}`hf_accelerate_bigmodel` is to place whole decoder layers: as many as fit on the
GPU(s), then in CPU memory, then on disk, recorded in a **device map**. During the forward pass, hooks copy
each offloaded layer to the execution device just before it runs. Here a SmolLM2-shaped replica (4 layers,
random weights) gets a CPU budget of 140 MB — enough for its 113 MB embedding and little else:
"""),
    code(r"""
rep, rtok = secbook.load("replica:smollm2-135m", num_hidden_layers=4)
print(f"one decoder layer: {memory.largest_layer_bytes(rep) / 1e6:.1f} MB; whole model: "
      f"{sum(p.nbytes for p in rep.parameters()) / 1e6:.0f} MB")
memory.plan_device_map(rep, {"cpu": "140MB"})
"""),
    md(r"""
accelerate keeps room for one layer on the execution device (the offloaded layers are copied there one at a
time), so all four layers go to disk. Run it for real — the disk-offloaded weights are written to a
temporary folder and read back on every forward — and compare with the model in memory:
"""),
    code(r"""
rids = rtok(text[:400], return_tensors="pt").input_ids[:, :16]
cost = memory.offload_cost(rep, rids, {"cpu": "140MB"}, repeats=7)
display(cost)
print(f"offloaded / in memory: {cost.seconds_per_forward.iloc[1] / cost.seconds_per_forward.iloc[0]:.2f}×")
cost["seconds_per_forward"].plot.barh(figsize=(7, 1.8), title="one forward of 16 tokens (s), median"); plt.show()
"""),
    code(r"""
guard(cost.max_logit_diff.iloc[1] == 0, "offloaded layers give exactly the in-memory logits")
rounds = {"the model in memory": cost.attrs["rounds"]["in memory"], "the offloaded one": cost.attrs["rounds"][cost.index[1]]}
off = compare(rounds, "the model in memory", "the offloaded one", higher_is_better=False)
from dataclasses import replace
off_zh = replace(off, a="内存中的模型", b="卸载后的模型")  # the same rounds, named in Chinese
say(f"The logits were identical. Timed in turn, one forward: {off.words()}; the offloaded model read "
    f"{cost.bytes_on_disk.iloc[1] / 1e6:.0f} MB back from its offload folder on every forward.",
    zh=f"两者的 logits 完全相同。对一次前向计算轮流计时：{off_zh.words_zh()}；卸载后的模型每次前向计算都要从它的"
       f"卸载文件夹读回 {cost.bytes_on_disk.iloc[1] / 1e6:.0f} MB。");
""", tags=("remove-input",)),
    md(r"""
Offload moves bytes; it does not change the arithmetic. The price is reading the `bytes_on_disk` back and
copying them on every forward — on every *token* when decoding. Here the files were just written, so the
operating system's page cache serves them from RAM, at memory speed rather than the disk's; from a cold cache it
is the disk's speed; on a GPU every offloaded layer also crosses PCIe (≈ 25 GB/s for PCIe 4.0 x16, against 300–4800 GB/s of
GPU memory bandwidth). A 70B model with 100 GB offloaded thus needs seconds per token. Offload is a way to
run a model at all, not to run it fast.

The budget must hold at least one layer, or nothing can run:
"""),
    code(r"""
try:
    memory.plan_device_map(rep, {"cpu": "5MB"})
except ValueError as e:
    print("ValueError:", e)
"""),
    md(r"""
The usual form is one argument to `from_pretrained`: `device_map="auto"` with `max_memory`. Loading the tiny
model from its checkpoint folder with a 10 MB budget puts its layers "on disk"; for a safetensors checkpoint
transformers memory-maps those layers straight from the checkpoint file, so the offload folder stays empty:
"""),
    code(r"""
with tempfile.TemporaryDirectory() as folder:
    dm_model = memory.load_with_device_map(paths.find_model("tiny"), {"cpu": "10MB"}, folder)
    print("device map:", dm_model.hf_device_map, "| files in offload folder:", len(os.listdir(folder)))
    with torch.no_grad():
        print("same logits as in memory:", torch.equal(dm_model(ids).logits, model(ids).logits))
"""),
    md(r"""
## Beyond one device: tensor parallelism

When a model is too big or too slow for one GPU, split each matrix across devices
{cite}`shoeybi2019megatron`. In a decoder layer:

* **column split** — q, k, v and the MLP's gate and up projections: rank $r$ keeps its share of the
  attention heads and of the MLP's intermediate features, and computes them with no communication;
* **row split** — the o projection and the MLP's down projection: rank $r$ keeps the matching input
  columns and produces a *partial sum* of the full hidden vector; one **all-reduce** adds the partial sums.

Two all-reduces per layer per token. `parallel.tensor_parallelize` does this to any Llama-style model in
about 30 lines; `parallel.launch(2)` starts it with `torchrun --nproc_per_node 2` as two CPU processes
talking over gloo (on GPUs the same code uses NCCL, one GPU per rank), and returns rank 0's logits:
"""),
    code(r"""
tp = parallel.launch(2, "tiny", new_tokens=8, timeout=300)
prompt = tok(parallel.PROMPT, return_tensors="pt", add_special_tokens=False).input_ids
one_logits, one_tokens, _ = parallel.greedy(model, prompt, 8)
print(f"world {tp['world']} over {tp['backend']}; max |logit difference| vs one process: "
      f"{(tp['logits'] - one_logits).abs().max():.1e}")
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
print("same logits (atol 1e-4):", torch.allclose(tp["logits"], one_logits, atol=1e-4))
print("same greedy tokens:", torch.equal(tp["tokens"], one_tokens))
print("all-reduces per token:", tp["allreduce_calls_per_token"], "| gate_proj per rank:", tp["gate_proj_shape_per_rank"])
"""),
    md(r"""
The logits agree to float rounding (a sum split in two and added back is not bit-identical). Now the cost.
Each all-reduce moves only one hidden vector (its size is printed below), but it is a synchronisation of two
processes:
"""),
    code(r"""
comm = pd.Series({"1 process (1 thread)": tp["seconds_per_token_1proc"] * 1e3,
                  "2 ranks: total": tp["seconds_per_token"] * 1e3,
                  "2 ranks: inside all-reduce": tp["comm_seconds_per_token"] * 1e3})
print(f"one bare all-reduce of {model.config.hidden_size} floats over gloo: {tp['allreduce_seconds'] * 1e6:.0f} µs")
comm.plot.barh(figsize=(7, 2), title="ms per token, tiny model, this CPU"); plt.show()
"""),
    code(r"""
ratio, share = comm.iloc[0] / comm.iloc[1], comm.iloc[2] / comm.iloc[1]
say(f"Two ranks ran at {times(ratio)} the speed of one process "
    + ("(slower)" if ratio < 0.95 else "(faster)" if ratio > 1.05 else "(about the same)")
    + f", and {share:.0%} of their step was spent inside the {tp['allreduce_calls_per_token']:.0f} all-reduces per "
    f"token (one measurement each, not timed in turn: other work on the machine moves them).",
    zh=f"两个 rank 的速度是单进程的 {times_zh(ratio)}"
       + ("（更慢）" if ratio < 0.95 else "（更快）" if ratio > 1.05 else "（大致相同）")
       + f"，它们每一步有 {share:.0%} 的时间花在每个词元的 {tp['allreduce_calls_per_token']:.0f} 次 all-reduce 之内"
       f"（各只测量一次，没有轮流计时：机器上的其他工作会影响这些数字）。");
""", tags=("remove-input",)),
    md(r"""
Read the speed ratio and the all-reduce share together. The tiny model's per-rank arithmetic per layer is
small, and each all-reduce is a round trip between processes through the operating system — plus waiting for
the slower rank, which on a machine with other work is often descheduled (the time "inside all-reduce" includes
that wait). The general lesson: tensor parallelism pays off when the matrices are large enough that halving them
saves more than the all-reduces cost, and when the interconnect is fast: microsecond latency and high bandwidth
(NVLink: ~900 GB/s between H100s). It is used *within* a server, across GPUs joined by NVLink — rarely across machines.

### The library version: `tp_plan="auto"`

transformers ships a tensor-parallel plan for Llama-style models — the same column/row split, as DTensors —
applied by `from_pretrained(path, tp_plan="auto")` under torchrun. In transformers 5 it also runs on CPU
over gloo, so it can be checked against ours and against one process:
"""),
    code(r"""
hf = parallel.launch(2, "tiny", new_tokens=8, mode="hf", timeout=300)
print("tp_plan='auto': backend", hf["backend"], "| gate_proj per rank:", hf["gate_proj_shape_per_rank"],
      "| max |logit diff| vs one process:", f"{(hf['logits'] - one_logits).abs().max():.1e}",
      "| same tokens:", torch.equal(hf["tokens"], one_tokens))
"""),
    code(r"""
if hardware.gpu_only("run the same tensor-parallel code over NCCL, one GPU per rank (needs ≥ 2 GPUs)", "tensor_parallel"):
    if torch.cuda.device_count() >= 2:
        display(pd.DataFrame([{k: v for k, v in parallel.launch(2, "tiny").items() if k not in ("logits", "tokens")}]))
    else:
        say("one GPU only: tensor parallelism needs at least two", zh="只有一块 GPU：张量并行至少需要两块。")
"""),
    md(r"""
Asking for more ranks than devices (GPUs under NCCL, CPU cores under gloo) is refused before anything starts:
"""),
    code(r"""
try:
    parallel.launch(parallel.available_devices("gloo") + 1)
except ValueError as e:
    print("ValueError:", e)
"""),
    md(r"""
### Pipeline parallelism, and where serving engines take over

**Pipeline parallelism** {cite}`huang2019gpipe` splits the model by *layers* instead: GPU 0 runs layers
1–16, GPU 1 layers 17–32, and only the hidden state crosses between them — one transfer per stage boundary
instead of two all-reduces per layer, so it tolerates slow links (across machines). For a single request it
gives no speed-up at all: the stages run one after another, each GPU idle while the other works. It pays off
only with many requests in flight (micro-batches), and the idle "bubble" shrinks with their number: with $p$
stages and $m$ micro-batches a fraction $(p-1)/(m+p-1)$ of the time is lost. `device_map="auto"` above is the
simplest pipeline, with $m = 1$.

Real deployments combine them — tensor parallelism inside a server, pipeline parallelism across servers —
and that is where **serving engines** take over from transformers: vLLM {cite}`kwon2023vllm` (paged KV cache,
continuous batching, CUDA graphs, tensor and pipeline parallelism as two settings, `tensor_parallel_size` and
`pipeline_parallel_size`) and TensorRT-LLM {cite}`tensorrtllm` (ahead-of-time compiled engines, fused kernels,
in-flight batching). Both do everything in this chapter — precision, graphs, memory planning, parallelism — automatically, on GPUs. The
point of doing it by hand here is to know what they do, and what each part costs.
"""),
    code(r"""
stages = [2, 4, 8]
bubble = pd.DataFrame({f"{p} stages": [(p - 1) / (m + p - 1) for m in (1, 4, 16, 64)] for p in stages},
                      index=pd.Index([1, 4, 16, 64], name="micro-batches"))
ax = bubble.plot(marker="o", logx=True, figsize=(6, 3), title="pipeline bubble: fraction of time idle")
ax.set_ylabel("idle fraction"); plt.show()
"""),
    summary(["What a machine offers decides the device and the number format: bf16 where the hardware has it "
             "(Ampere GPUs and later, CPUs with AVX512-BF16 or AMX), fp16 on older GPUs, fp32 otherwise.",
             "A 16-bit format halves the bytes; whether it is faster depends on the kernels and on how much of a step "
             "is reading weights; whether it still answers is a question for the question set, not for token "
             "agreement alone.",
             "A small model's decode step is mostly the fixed cost of hundreds of operators; on a GPU a CUDA graph "
             "replays them with one launch.",
             "Memory is weights + KV cache + activations + runtime; offload runs a model that does not fit, at the "
             "speed of whatever link brings its layers back.",
             "Tensor parallelism splits every matrix and adds two all-reduces per layer per token: worth it for large "
             "matrices and fast links; pipeline parallelism splits layers and needs many requests in flight."]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
Compute the KV-cache size, in bytes, of Llama-3.1-8B (32 layers, 8 key/value heads of size 128) for one sequence
of 8192 tokens in bf16. Check it with `exercises.check_kv_cache_8k(answer)`.
"""),
    code(r"""
answer = None  # your number of bytes
if answer is not None:
    exercises.check_kv_cache_8k(answer)
"""),
    solution(r"""
answer = 2 * 32 * 8 * 128 * 8192 * 2   # K and V × layers × KV heads × head size × tokens × bytes
exercises.check_kv_cache_8k(answer)
"""),
    exercise(2, r"""
A Colab T4 has 16 GB (16 × 10⁹ bytes, about 15 GiB of it usable). What is the largest model (in billions of
parameters) whose fp16 weights alone fit in 16 GB? Check with `exercises.check_weights_fit_t4(answer)`. Then use the panel (or `memory.max_context`): what is the longest
context Llama-3.1-8B in int4 supports on a T4 at batch 1, and at batch 8? Why can you not choose bf16 there?
"""),
    solution(r"""
answer = 16e9 / 2 / 1e9   # bytes / (2 bytes per fp16 parameter), in billions
exercises.check_weights_fit_t4(answer)
for b in (1, 8):
    print(f"batch {b}: longest context", f"{memory.max_context('Llama-3.1-8B', 'T4', 'int4', batch=b):,}")
print("bf16 needs compute capability >= 8.0; a T4 is 7.5 (pick_dtype refuses it: use fp16)")
"""),
    exercise(3, r"""
How many bytes does 2-way tensor parallelism of the tiny model (6 layers, hidden size 256, fp32, batch 1)
all-reduce per generated token? Check with `exercises.check_allreduce_bytes(answer)`. If each all-reduce has a
fixed latency of 10 µs over NVLink and 500 µs between machines, what is the communication floor per token for a
32-layer model in each case?
"""),
    solution(r"""
answer = 2 * 6 * 256 * 4   # two all-reduces per layer, one hidden vector of fp32 each
exercises.check_allreduce_bytes(answer)
for name, lat in (("NVLink", 10e-6), ("between machines", 500e-6)):
    print(f"{name}: {2 * 32 * lat * 1e3:.2f} ms per token just in all-reduce latency")
"""),
    exercise(4, r"""
**Would fp16 overflow on the real model?** fp16's largest value is 65,504. Run one forward of the real model
over a chat turn with a forward hook on every RMSNorm, record the largest |activation| entering each, and find
the largest one of the model. Would the mean of squares an RMSNorm computes overflow in fp16 for that
activation alone (its square)? Why does transformers' RMSNorm compute in fp32 anyway?
"""),
    solution(r"""
peaks = []
hooks = [mod.register_forward_hook(lambda mod, inp, out: peaks.append(float(inp[0].abs().max())))
         for name, mod in real.named_modules() if type(mod).__name__.endswith("RMSNorm")]
with torch.no_grad():
    real(turn)
for h in hooks:
    h.remove()
top = max(peaks)
fp16_max = torch.finfo(torch.float16).max
print(f"{len(peaks)} RMSNorm inputs; the largest |activation| is {top:,.1f}; its square {top ** 2:,.0f}")
print(f"The activation itself {'fits in' if top < fp16_max else 'overflows'} fp16 (largest value {fp16_max:,.0f}"
      + (f", {fp16_max / top:.1f}x above it" if top < fp16_max else "") + "); its square "
      + ("overflows." if top ** 2 > fp16_max else "fits."))
say(f"Any activation above {fp16_max ** 0.5:.0f} squares to more than fp16 can hold, and another prompt can push "
    "one higher than this one did; computing the norm in fp32 removes the risk for every prompt at the cost of "
    "two conversions per norm.",
    zh=f"任何大于 {fp16_max ** 0.5:.0f} 的激活值，平方后都超出 fp16 能表示的范围，而换一个提示就可能把某个激活值推得比"
       "这次更高；用 fp32 计算归一化，能对所有提示消除这一风险，代价是每个归一化多两次类型转换。");
"""),
]
