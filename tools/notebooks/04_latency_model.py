"""Chapter 4 — The latency model: T = f(M, D, P) becomes the roofline, calibrated on this machine."""
import sys

sys.path.insert(0, "tools")
from nb import code, md, solution  # noqa: E402

NAME = "04_latency_model"

CELLS = [
    md(r"""
# The latency model: T = f(M, D, P)

The source gives one formula for inference latency: it is a function of the **model complexity M** (how
much arithmetic a forward pass needs), the **data transfer D** (how many bytes must be moved) and the
**compute performance P** of the hardware. The formula is right, but as written it cannot predict
anything. This chapter makes it quantitative:

1. the two resources — arithmetic and memory traffic — and the *roofline* that says which one limits a
   computation {cite}`williams2009roofline`;
2. why a language model's two phases behave so differently: the **prefill** (reading the prompt) is
   usually limited by arithmetic, the **decode** (one token at a time) by memory bandwidth;
3. a 1-billion-parameter case study on seven GPUs and on this CPU, in fp32, bf16, int8 and int4 — and
   a correction to the source's description of what quantization does;
4. a calibration: the model's predictions against measurements taken *while this page was built*;
5. an interactive panel, and exercises.

All the arithmetic lives in `secbook.roofline`; the measurements use `secbook.measure`.
"""),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import torch, pandas as pd
import matplotlib.pyplot as plt
from secbook import roofline
from secbook.roofline import GPUS, predict
pd.set_option("display.width", 140)
print("measured on:", machine)
"""),
    md(r"""
## Two resources, one bound

Any computation does some number of floating-point operations $F$ and moves some number of bytes $B$
between memory and the compute units. A device with peak arithmetic throughput $P$ (FLOP/s) and memory
bandwidth $W$ (bytes/s) cannot finish it faster than

$$ T \;\ge\; \max\!\left(\frac{F}{P},\; \frac{B}{W}\right). $$

This is the source's $T = f(M, D, P)$ with $M = F$ and $D = B$, and the bandwidth $W$ made explicit:
data transfer does not cost time by itself, only *divided by a bandwidth*. Which term wins depends on the
**arithmetic intensity** $I = F / B$ (FLOPs per byte). The device's **ridge point** $P / W$ separates the
two regimes: below it a computation is *memory-bound*, above it *compute-bound*. Plotting the attainable
FLOP/s, $\min(P,\; I \cdot W)$, against $I$ on log axes gives the roofline {cite}`williams2009roofline`.

Here are the peak numbers of seven NVIDIA GPUs, from the vendor datasheets
({cite}`nvidia_t4`, {cite}`nvidia_l4`, {cite}`nvidia_ga102`, {cite}`nvidia_a100`, {cite}`nvidia_h100`,
{cite}`nvidia_h200`). Tensor throughput is *dense* (the datasheets also print a 2× "with sparsity" number
that ordinary models do not reach). The T4 has no bfloat16 at all; it runs 16-bit models in fp16.
"""),
    code(r"""
roofline.hardware_table()
"""),
    md(r"""
The ridge points are in the hundreds of FLOPs per byte: to keep an H100's tensor cores busy, a kernel must
do about 300 floating-point operations for every byte it reads. Keep that number in mind.

## Prefill and decode

A decoder-only transformer with $N$ parameters does about $2N$ FLOPs per token in a forward pass — one
multiply and one add per weight {cite}`kaplan2020scaling` — plus the attention scores, which grow with
the context. Generation has two phases {cite}`pope2022efficiently`:

* **Prefill** (time to first token, TTFT): all $P$ prompt tokens of all $b$ sequences go through the
  model at once. FLOPs $\approx 2N \cdot b \cdot P$, but the weights are read from memory only once. The
  intensity grows with $b \cdot P$: a long prompt is compute-bound.
* **Decode** (time per output token, TPOT): each step produces *one* token per sequence, so it does
  $\approx 2N \cdot b$ FLOPs — and still reads **every weight** (plus the KV cache of all previous
  tokens). With weights stored at $s$ bytes each, the intensity is $\approx 2b / s$ FLOP/byte.

At batch 1 in bf16 ($s = 2$) that is **about 1 FLOP per byte**, two to three orders of magnitude below
every ridge point in the table. Batch-1 decoding is memory-bound on every one of these devices: the time
per token is, to first order, *the model's size in bytes divided by the memory bandwidth*.

The numbers for the Llama-3.2-1B shape (its public configuration {cite}`llama32config`), exactly:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
shape = roofline.to_shape("replica:llama-3.2-1b")
print(f"parameters: {shape.params:,}   KV-cache elements per token: {shape.kv_per_token:,}")
for fmt, s in roofline.BYTES_PER_WEIGHT.items():
    p = predict(shape, "H100 SXM", batch=1, prompt_len=512, new_tokens=128, bytes_per_weight=fmt)
    print(f"{fmt:>4}: weights {int(p.weight_bytes):>13,} bytes   decode intensity {p.decode_intensity:5.2f} FLOP/B"
          f"   prefill intensity {p.prefill_intensity:6.0f} FLOP/B")
"""),
    md(r"""
On the roofline of an H100 the two phases of the same bf16 model land on opposite sides of the ridge
(512-token prompt, batch 1):
"""),
    code(r"""
p = predict(shape, "H100 SXM", batch=1, prompt_len=512, new_tokens=128, bytes_per_weight="bf16")
roofline.plot_roofline(GPUS["H100 SXM"], roofline.prediction_points(p))
plt.show()
print(f"TTFT {p.ttft_s*1e3:.2f} ms ({p.prefill_bound}-bound), TPOT {p.tpot_s*1e3:.3f} ms ({p.decode_bound}-bound)")
"""),
    md(r"""
These are *lower bounds*: every byte moved at the peak bandwidth, every FLOP at the peak rate, no
overhead. Real kernels reach roughly 80–85% of the peak bandwidth at best, and whole generation loops
much less — section 4 measures how much less here. Achieved bandwidth over peak bandwidth during decode
is called **model bandwidth utilisation**, MBU {cite}`databricks2023inference`; gpt-fast reports 72% MBU
for a 7B model on an A100 after compilation {cite}`gptfast2023`.

## Case study: a 1-billion-parameter model

The source's case study is a model with 1 billion parameters. First, this machine's own "datasheet",
measured now: read bandwidth (summing a large array) and matrix-multiply throughput.
"""),
    code(r"""
import os
cpu = roofline.measure_machine()
print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (above the core count, timings are contended)")
print(f"{cpu.name}: read bandwidth {cpu.bandwidth/1e9:.1f} GB/s, matmul fp32 {cpu.fp32_flops/1e9:.0f} GFLOP/s, "
      f"bf16 {cpu.fp16_flops/1e9:.0f} GFLOP/s  (medians; this machine may be shared while the page builds)")
"""),
    md(r"""
Now the predicted decode speed (tokens/s at batch 1) and time to first token (512-token prompt) of a
1 B-parameter model (Llama-3.2-1B's shape) in four storage formats, on each GPU and on this CPU. int8
uses the int8 tensor-core rate where the datasheet gives one; int4 is *weight-only*: weights are
dequantized to 16 bits inside the kernel, so its arithmetic runs at the fp16/bf16 rate.
"""),
    code(r"""
devices = {**GPUS, "this CPU": cpu}
rows = [predict(shape, hw, batch=1, prompt_len=512, new_tokens=128, bytes_per_weight=fmt).as_dict() | {"format": fmt}
        for hw in devices.values() for fmt in ("fp32", "bf16", "int8", "int4")]
case = pd.DataFrame(rows)
case.pivot(index="hardware", columns="format", values="tokens_per_s").loc[list(devices), ["fp32", "bf16", "int8", "int4"]].round(1)
"""),
    code(r"""
ttft = case.pivot(index="hardware", columns="format", values="ttft_s").loc[list(devices), ["fp32", "bf16", "int8", "int4"]]
(ttft * 1e3).round(2).rename(columns=lambda c: c + " TTFT ms")
"""),
    md(r"""
Two patterns. Decode speed is set by bandwidth: the H200 is fastest, and the RTX 3090 — a consumer card
with modest tensor throughput but 936 GB/s — beats the L4 and T4 by 3×. Prefill is set by FLOP/s (and on
this CPU it takes far longer than on any GPU). On the T4, "bf16" actually means fp16: the card has no
bfloat16 units, so a bf16 checkpoint must be converted first.

### What quantization does, and what it does not do

The source describes quantization as if it turned a 1-billion-parameter model into a 100-million-parameter
one. It does not. Quantization stores **the same number of parameters with fewer bits each**: the model
complexity M (FLOPs per token) is unchanged, and what shrinks is the data transfer D (bytes per token):
"""),
    code(r"""
fmt_rows = []
for fmt in ("fp32", "bf16", "int8", "int4"):
    p = predict(shape, "A100 80GB SXM", bytes_per_weight=fmt)
    fmt_rows.append({"format": fmt, "parameters": shape.params, "decode FLOPs/token (M)": p.decode_flops,
                     "bytes/token (D)": p.decode_bytes, "A100 tokens/s": round(p.tokens_per_s)})
pd.DataFrame(fmt_rows)
"""),
    md(r"""
Because batch-1 decoding is memory-bound, shrinking D is exactly what speeds it up: int4 reads 8× fewer
bytes than fp32 and the bound rises 8×, while the parameter count — and the FLOP count — stay put. (A
model that really had 10× fewer parameters would be a *different, smaller model*; that is distillation or
pruning, chapters of their own.)

The same holds for real quantized layers, not just for arithmetic. `secbook.measure.model_bytes` counts
the bytes a model actually stores, packed weights and scales included. The tiny model of this book in three
formats — the parameter count never changes:
"""),
    code(r"""
from secbook.bench import apply_technique
tiny_rows = []
for tech in ("fp32", "bf16", "int8-dynamic"):
    m, tok = secbook.load("tiny")
    n = sum(p.numel() for p in m.parameters())
    m = apply_technique(m, tech)
    tiny_rows.append({"format": tech, "parameters": n, "stored bytes": secbook.model_bytes(m)})
pd.DataFrame(tiny_rows)
"""),
    md(r"""
(int8 here is PyTorch's dynamic quantization of the linear layers; the embedding table stays in fp32,
so the total is not a clean 4×. Chapter 3 measures what such formats cost in perplexity.)

## Calibration: does this machine follow the model?

A latency model is only worth something if it predicts measurements. On this machine we time greedy
decoding (median of repeats after a warm-up, `secbook.measure.time_generation`) for models of growing
size — the tiny model, and three Llama-shaped replicas with the same depth (4 layers) but growing width,
from 60 MB to over 1 GB of fp32 weights — and compare the measured time per token with the memory bound:
model bytes (plus KV cache) divided by the read bandwidth, measured right before each model is timed.
Equal depth means the same number of kernels per token, so the fixed per-token cost stays the same while
the bytes grow. The ratio measured / predicted says how far from the bound each one is.
"""),
    code(r"""
specs = roofline.DEFAULT_CALIBRATION  # tiny + roofline.width_specs((256, 1024, 2048), layers=4)
cal = roofline.calibrate(specs, prompt_len=16, new_tokens=8, repeats=3, progress=False)
cal[["model", "params", "model_bytes", "measured_tpot_s", "predicted_tpot_s", "ratio", "mbu"]].round(4)
"""),
    code(r"""
roofline.plot_calibration(cal)
plt.show()
print(roofline.describe_calibration(cal))
print(f"measured on {secbook.describe_machine()}, load average {os.getloadavg()[0]:.1f}")
"""),
    md(r"""
The ratios printed above were measured while this page was built; on a busy machine they move from run
to run, so read them as orders of magnitude. What the model predicts, and what to check in them:

* **The tiny model is overhead-bound, not memory-bound.** Its 23 MB of weights could be read in a few
  milliseconds, but every decode step also pays a fixed cost — Python, the `generate` loop, launching
  dozens of small kernels per layer — that has nothing to do with bytes. The roofline predicts it badly,
  and reading fewer bytes (quantization) would barely change its speed.
* **As the model grows, the weights take over.** The fixed per-token cost is shared by more and more
  weight traffic, so the ratio should fall as the replicas widen. A straight line — a fixed overhead plus
  bytes over an effective bandwidth — fits the measurements, and where the two terms are equal is the
  crossover from overhead-bound to memory-bound printed above (when the run was quiet enough to fit).
  Above that size the roofline predicts within a small factor, and reading fewer bytes pays off. The
  crossover is why the speed-ups in later chapters (quantization, compilation, static KV caches) help
  different models by very different amounts.
* The overhead grows with depth: a 30-layer model launches about seven times as many kernels per token
  as a 4-layer one. Try it: add `("replica:smollm2-135m", {})` (30 layers) to `specs`.

On a GPU the same picture appears at a different scale: kernel-launch overhead of a few microseconds per
kernel makes small models overhead-bound there too, which is what CUDA graphs and `torch.compile` remove.
"""),
    md(r"""
What does the bound look like once the overhead is gone? Chapter 3.2 builds such a decode step: the whole forward
as one C++ call per token (`secbook.kernels.CppDecoder`), on int8 or on fp32 weights. Its recorded rows test the
model directly: predicted tokens/s = the best read bandwidth of that run ÷ the bytes one step reads. On the
replica both steps should reach a large fraction of their bound, and their speeds should differ by about the
ratio of their bytes (four); on the tiny model, whose weights fit in this CPU's caches, a bound computed from
*memory* bandwidth is no bound at all, and the ratio can pass 1:
"""),
    code(r"""
ladder = secbook.load_results("generate_ladder")
cpp = ladder[ladder["loop"] == "cpp"].copy()
cpp["bound_tok_s"] = cpp["bandwidth_max_GBs"] * 1e9 / cpp["read_bytes_per_token"]
cpp["measured_over_bound"] = cpp["tok_s"] / cpp["bound_tok_s"]
print("recorded on:", cpp["cpu"].iloc[0], f"({cpp['cores'].iloc[0]} cores), no GPU")
cpp[["model", "rung", "read_bytes_per_token", "bandwidth_max_GBs", "bound_tok_s", "tok_s", "measured_over_bound"]].round(3)
"""),
    code(r"""
if not torch.cuda.is_available():
    print("No CUDA GPU here: on a GPU this cell would run `python -m secbook bench --device cuda` and compare "
          "its MBU with the datasheet bandwidth.")
    import secbook.paths as sp
    recorded = sorted(sp.RESULTS_DIR.glob("bench_*cuda*.csv"))
    for f in recorded:
        print("recorded:", f.name); display(pd.read_csv(f))
else:
    m, tok = secbook.load("replica:smollm2-135m", device="cuda", dtype="bf16")
    t = secbook.time_generation(m, tok, prompt_len=128, new_tokens=64, repeats=3)
    gpu = roofline.get_hardware(torch.cuda.get_device_name(0).replace("NVIDIA ", "")) \
        if torch.cuda.get_device_name(0).replace("NVIDIA ", "") in GPUS else roofline.measure_machine()
    print(t.as_dict(), f"MBU {roofline.mbu(t, m, gpu):.1%}")
"""),
    md(r"""
## Try it: the latency model as a panel

Move the sliders: model size (billions of parameters), bits per weight, the GPU, the batch size and the
context (prompt) length. The panel prints the predicted TTFT, TPOT and tokens/s with the bound of each
phase, and places both phases on the device's roofline. Things to try: raise the batch on an A100 until
decode turns compute-bound; pick a 70 B model in bf16 on a T4 (it does not fit); compare int4 on a T4
with bf16 on an RTX 3090.
"""),
    code(r"""
from secbook.widgets import latency_model_update, latency_model_widget
panel = latency_model_widget(extra_hardware={"this CPU": cpu})
display(panel)
print(latency_model_update(1.0, 16, "A100 80GB SXM", 1, 512)[1])  # what the panel shows at its defaults
"""),
    md(r"""
(In the static book the sliders need JavaScript; the printed line above is the panel's default state.)

## Exercises

1. **Decode bound.** A 7-billion-parameter model is stored in bf16 on an A100 80GB SXM. Ignoring the KV
   cache, what is the highest batch-1 decode speed, in tokens/s, the hardware allows? Check your answer
   with `secbook.exercises.check_decode_bound(answer)`.
2. **Ridge point.** What is the ridge point of an H100 SXM for dense bf16 math, in FLOP/byte? Check with
   `check_ridge_point(answer)`.
3. **Critical batch.** At what batch size does bf16 decoding on an A100 80GB SXM stop being memory-bound
   (ignore the KV cache and the attention FLOPs)? Check with `check_critical_batch(answer)`. Why does this
   make batching the cheapest speed-up a server has?
4. **KV cache.** Using `predict`, find the context length at which the KV cache of the Llama-3.2-1B shape
   (bf16 cache, batch 8) is read as many bytes per decode step as the bf16 weights themselves.
"""),
    code(r"""
from secbook import exercises
answer = None  # your number here, e.g. answer = 123.4
if answer is not None:
    exercises.check_decode_bound(answer)
"""),
    solution(r"""
# Solutions
exercises.check_decode_bound(GPUS["A100 80GB SXM"].bandwidth / (7e9 * 2))
exercises.check_ridge_point(GPUS["H100 SXM"].fp16_flops / GPUS["H100 SXM"].bandwidth)
exercises.check_critical_batch(GPUS["A100 80GB SXM"].ridge(2.0))
# 4: KV bytes per step = batch * context * kv_per_token * 2 = weight bytes  ->  solve for context
w = predict(shape, "A100 80GB SXM", bytes_per_weight="bf16").weight_bytes
print(f"exercise 4: context ≈ {w / (8 * shape.kv_per_token * 2):,.0f} tokens")
"""),
]
