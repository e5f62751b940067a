"""Chapter 4 — The latency model: T = f(M, D, P) becomes the roofline, calibrated on this machine."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

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
4. a calibration: the model's predictions against measurements of a real 135M-parameter chat model and of
   models of growing size, all taken when the page is built, on the machine that builds it;
5. an interactive panel, and exercises.

All the arithmetic lives in `secbook.roofline`; the measurements use `secbook.measure`.
"""),
    opening(["bound the time of any computation by its FLOPs and its bytes (the roofline), and find its ridge point",
             "explain why prefill is compute-bound and batch-1 decode memory-bound, and predict TTFT and TPOT",
             "say what quantization changes in the latency formula (bytes, not parameters)",
             "check a latency model against measurements: predicted vs measured TTFT and TPOT, and MBU"],
            ["chapter 1 (prefill, decode, TTFT, TPOT, tokens/s) and section 3.2 (the KV cache)",
             "powers of ten and units: GB/s, TFLOP/s"], 40),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import torch, pandas as pd
import matplotlib.pyplot as plt
from secbook import roofline
from secbook.roofline import GPUS, predict
from secbook.claims import guard, say, times, times_zh
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

* **Prefill** (time to first token, TTFT): all $L$ prompt tokens of all $b$ sequences go through the
  model at once. FLOPs $\approx 2N \cdot b \cdot L$, but the weights are read from memory only once. The
  intensity grows with $b \cdot L$: a long prompt is compute-bound.
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
much less — the calibration below measures how much less on the machine that builds this page. How close a
decode comes to its memory bound is its **model bandwidth utilisation**, MBU {cite}`databricks2023inference`.
This book uses one definition of it: the bytes a decode step reads (weights, and the KV cache where counted)
÷ the time per step ÷ the read bandwidth *measured on the same machine in the same run*
(`secbook.roofline.mbu`). Published figures often divide by the datasheet's peak instead — gpt-fast reports
72% for a 7B model on an A100 after compilation, against the A100's datasheet bandwidth {cite}`gptfast2023` —
which gives a smaller number for the same run, so compare MBUs only when they share a denominator.

## Case study: a 1-billion-parameter model

The source's case study is a model with 1 billion parameters. First, this machine's own "datasheet",
measured now: read bandwidth (summing a large array) and matrix-multiply throughput in fp32 and in bf16.
"""),
    code(r"""
import os
cpu = roofline.measure_machine(device="cpu")
info, load1 = secbook.machine_info(), os.getloadavg()[0]
busy = load1 > info["cores"]  # more runnable work than cores: other work competed for the CPU
say(f"measured on {secbook.describe_machine(info)}, load average {load1:.1f}"
    + (" (above the number of cores: other work competed for the CPU)" if busy else ""),
    zh=f"测量于 {secbook.describe_machine(info)}，负载均值 {load1:.1f}"
       + ("（高于核心数：有其他工作在争用 CPU）" if busy else ""))
print(f"{cpu.name}: read bandwidth {cpu.bandwidth/1e9:.1f} GB/s, matmul fp32 {cpu.fp32_flops/1e9:.0f} GFLOP/s, "
      f"bf16 {cpu.fp16_flops/1e9:.0f} GFLOP/s (medians)")
"""),
    md(r"""
A measured peak is only the rate of the kernel that measured it. A CPU without bf16 units runs PyTorch's bf16
matrix product as a slow emulation, hundreds of times below its fp32 rate; fed that number, a latency model
would predict that a 4-bit model computes slower than an fp32 one. But no kernel has to use a slow path: it can
widen narrow weights to fp32 in registers and multiply there, which is what llama.cpp's CPU kernels do. So
`secbook.roofline` takes, for each weight format, the faster of the format's own path and the fp32 rate
(`Hardware.format_path`). Which one it takes here:
"""),
    code(r"""
path_rows = [{"format": fmt, "bytes/weight": roofline.BYTES_PER_WEIGHT[fmt], "compute path": cpu.format_path(roofline.BYTES_PER_WEIGHT[fmt])[0],
              "peak GFLOP/s": cpu.peak_flops(roofline.BYTES_PER_WEIGHT[fmt]) / 1e9} for fmt in ("fp32", "bf16", "int8", "int4")]
pd.DataFrame(path_rows).round(1)
"""),
    code(r"""
ratio = cpu.fp16_flops / cpu.fp32_flops
say(f"Here the bf16 matrix product ran at {times(ratio)} the fp32 rate: "
    + ("this CPU has a fast bf16 path, and narrower formats are predicted at its rate." if ratio > 1 else
       "bf16 has no fast path on this CPU, so every format narrower than fp32 is predicted at the fp32 rate."),
    zh=f"这里 bf16 矩阵乘法的速率是 fp32 的 {times_zh(ratio)}："
       + ("这台 CPU 有快速的 bf16 路径，更窄的格式都按它的速率来预测。" if ratio > 1 else
          "这台 CPU 上 bf16 没有快速路径，所以比 fp32 更窄的每种格式都按 fp32 的速率来预测。"));
""", tags=("remove-input",)),
    md(r"""
Now the predicted decode speed (tokens/s at batch 1) and time to first token (512-token prompt) of a
1 B-parameter model (Llama-3.2-1B's shape) in four storage formats: on each GPU from its datasheet, on this
CPU from the rates just measured. All of them are predictions, not measurements. On a GPU, int8 uses the
int8 tensor-core rate where the datasheet gives one; int4 is *weight-only*: weights are dequantized to 16
bits inside the kernel, so its arithmetic runs at the fp16/bf16 rate.
"""),
    code(r"""
devices = {**GPUS, "this CPU": cpu}
FORMATS = ["fp32", "bf16", "int8", "int4"]
rows = [predict(shape, hw, batch=1, prompt_len=512, new_tokens=128, bytes_per_weight=fmt).as_dict() | {"format": fmt}
        for hw in devices.values() for fmt in FORMATS]
case = pd.DataFrame(rows)
tok_s = case.pivot(index="hardware", columns="format", values="tokens_per_s").loc[list(devices), FORMATS]
say("predicted decode tokens/s, batch 1, Llama-3.2-1B shape (roofline lower bound on time: an upper bound on speed)",
    zh="预测的解码每秒词元数，批大小 1，Llama-3.2-1B 形状（屋顶线模型给出时间的下界，也就是速度的上界）")
tok_s.round(1)
"""),
    code(r"""
ttft = case.pivot(index="hardware", columns="format", values="ttft_s").loc[list(devices), FORMATS]
print("predicted time to first token, 512-token prompt (ms)")
(ttft * 1e3).round(2).rename(columns=lambda c: c + " TTFT ms")
"""),
    code(r"""
c = "this CPU"
guard(all(tok_s.loc[c, f] >= tok_s.loc[c, "fp32"] for f in FORMATS) and all(ttft.loc[c, f] <= ttft.loc[c, "fp32"] for f in FORMATS),
      "on this CPU, fewer bytes per weight never predicts a slower decode nor a slower prefill than fp32",
      f"tokens/s {tok_s.loc[c].round(1).to_dict()}, TTFT s {ttft.loc[c].round(3).to_dict()}")
"""),
    code(r"""
gpu_ttft = ttft.drop(index=c)["bf16"]
say(f"On this CPU the predicted bf16 prefill of 512 tokens takes {ttft.loc[c, 'bf16'] * 1e3:,.0f} ms, "
    f"{times(ttft.loc[c, 'bf16'] / gpu_ttft.max())} the slowest GPU's ({gpu_ttft.idxmax()}, "
    f"{gpu_ttft.max() * 1e3:.1f} ms); its decode bound is {tok_s.loc[c, 'bf16']:.1f} tokens/s in bf16 against "
    f"{tok_s.drop(index=c)['bf16'].min():.0f}-{tok_s.drop(index=c)['bf16'].max():,.0f} on the GPUs.",
    zh=f"在这台 CPU 上，预测 512 个词元的 bf16 预填充需要 {ttft.loc[c, 'bf16'] * 1e3:,.0f} ms，"
       f"是最慢的 GPU（{gpu_ttft.idxmax()}，{gpu_ttft.max() * 1e3:.1f} ms）的 "
       f"{times_zh(ttft.loc[c, 'bf16'] / gpu_ttft.max())}；它在 bf16 下的解码上界为每秒 {tok_s.loc[c, 'bf16']:.1f} 个词元，"
       f"而各款 GPU 为 {tok_s.drop(index=c)['bf16'].min():.0f}-{tok_s.drop(index=c)['bf16'].max():,.0f}。");
""", tags=("remove-input",)),
    md(r"""
Two patterns in the GPU rows (datasheet numbers, the same on every machine). Decode speed is set by
bandwidth: the H200 is fastest, and the RTX 3090 — a consumer card with modest tensor throughput but 936 GB/s —
beats the L4 and T4 by 3×. Prefill is set by FLOP/s. On the T4, "bf16" actually means fp16: the card has no
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

## Calibration: a real model, predicted and measured

A latency model is only worth something if it predicts measurements. The first test is a real model: the
chat model of chapter 1, SmolLM2-135M-Instruct (30 layers, 135 M parameters, fp32 — this copy was
dequantized from llama.cpp's 4-bit Q4_1 file, so it is a real model but not the original bf16 weights). Its
shape goes into `predict` with the bandwidth and fp32 rate of this machine, measured right before; its TTFT
(a 64-token prompt) and TPOT are measured with the book's harness, `secbook.measure.time_generation`
(medians after a warm-up), on the CPU. `roofline.predicted_vs_measured` puts both side by side.
"""),
    code(r"""
real, rtok = secbook.load("smollm2-135m-instruct")
print(secbook.pretrained.PROVENANCE)
cpu_now = roofline.measure_machine(device="cpu", repeats=3, refresh=True)
pvm = roofline.predicted_vs_measured(real, rtok, cpu_now, prompt_len=64, new_tokens=8, repeats=3,
                                     name="smollm2-135m-instruct")
print(f"measured on {secbook.describe_machine()}: read bandwidth {cpu_now.bandwidth / 1e9:.1f} GB/s, "
      f"fp32 matmul {cpu_now.fp32_flops / 1e9:.0f} GFLOP/s, load average {os.getloadavg()[0]:.1f}")
pvm.round(3)
"""),
    code(r"""
pre, dec = pvm.iloc[0], pvm.iloc[1]
guard(all(0.01 < r < 100 for r in pvm["ratio"]),
      "the roofline predicts the real model's TTFT and TPOT on this CPU within two orders of magnitude",
      f"measured / predicted = {pvm['ratio'].round(2).tolist()}")
say(f"The prefill of 64 tokens took {pre.measured_ms:.0f} ms against a predicted {pre.predicted_ms:.0f} ms "
    f"({pre.bound}-bound): {times(pre.ratio)} the bound. A decode step took {dec.measured_ms:.1f} ms against "
    f"{dec.predicted_ms:.1f} ms ({dec.bound}-bound): {times(dec.ratio)} the bound, an MBU of {dec.mbu:.0%}.",
    zh=f"64 个词元的预填充实测用了 {pre.measured_ms:.0f} ms，预测为 {pre.predicted_ms:.0f} ms"
       f"（{pre.bound}-bound）：是下界的 {times_zh(pre.ratio)}。一个解码步实测用了 {dec.measured_ms:.1f} ms，"
       f"预测为 {dec.predicted_ms:.1f} ms（{dec.bound}-bound）：是下界的 {times_zh(dec.ratio)}，MBU 为 {dec.mbu:.0%}。");
"""),
    md(r"""
The prediction ignores everything but bytes and FLOPs: the Python of the generation loop, hundreds of small
kernels per token (30 layers, each with its norms, projections, attention and MLP), the sampling. So a ratio
above 1 is the cost of that overhead; a ratio below 1 would mean the bandwidth measured on the big array
undersold what the model's access pattern achieved. On a busy machine both move: other programs slow the
timed generation (two threads that must meet after every operation wait for each other) more than the short
measurements of bandwidth and FLOP/s. The check above fails the book's build if either phase ever lands more
than a hundred times away from its bound — the size of error a wrong peak produces (a slow emulated bf16
rate, fed to the model as the peak, predicts a 1-billion-parameter prefill of twenty minutes).

## Calibration: overhead or bytes?

How far a model is from its bound depends on its size. We time greedy decoding of models of growing size —
the tiny model, and three Llama-shaped replicas with random weights and the same depth (4 layers) but growing
width, from 60 MB to over 1 GB of fp32 weights — and compare the measured time per token with the memory
bound: the bytes a decode step reads divided by the read bandwidth, measured right before each model is
timed. Equal depth means the same number of kernels per token, so the fixed per-token cost stays the same
while the bytes grow.
"""),
    code(r"""
specs = roofline.DEFAULT_CALIBRATION  # tiny + roofline.width_specs((256, 1024, 2048), layers=4)
cal = roofline.calibrate(specs, prompt_len=16, new_tokens=8, repeats=3, progress=False)
cal[["model", "params", "step_bytes", "measured_tpot_s", "predicted_tpot_s", "ratio", "mbu"]].round(4)
"""),
    code(r"""
ax = roofline.plot_calibration(cal)
real_bytes = secbook.measure.decode_read_bytes(real)
ax.loglog([real_bytes], [dec.measured_ms], "*", ms=12, color="tab:red", label="SmolLM2-135M-Instruct (30 layers)")
ax.legend(fontsize=7)
plt.show()
print(roofline.describe_calibration(cal))
print(f"measured on {secbook.describe_machine()}, load average {os.getloadavg()[0]:.1f}")
"""),
    code(r"""
reps = cal[cal["model"].str.startswith("4 layers")]
falling = reps["ratio"].is_monotonic_decreasing
say(f"Across the three 4-layer replicas, from {reps.model_bytes.iloc[0] / 1e6:.0f} MB to "
    f"{reps.model_bytes.iloc[-1] / 1e6:,.0f} MB, measured ÷ bound went "
    + " → ".join(f"{r:.1f}" for r in reps["ratio"])
    + (": it fell as the bytes grew, as the overhead-plus-bytes picture predicts." if falling else
       ": not monotonically in this run — the machine's noise is larger than the effect here; rerun it on a "
       "quiet machine.")
    + f" The tiny model measured {times(cal.ratio.iloc[0])} its bound; the 30-layer real model, with "
      f"{real_bytes / 1e6:.0f} MB, {times(dec.ratio)}.",
    zh=f"在三个 4 层复刻模型上，从 {reps.model_bytes.iloc[0] / 1e6:.0f} MB 到 "
       f"{reps.model_bytes.iloc[-1] / 1e6:,.0f} MB，实测 ÷ 下界依次为 "
       + " → ".join(f"{r:.1f}" for r in reps["ratio"])
       + ("：随着字节数增长而下降，正如“开销加字节”的图景所预测的。" if falling else
          "：这次运行中并非单调变化——这里机器的噪声比这一效应还大；请在安静的机器上重新运行。")
       + f"小模型实测为其下界的 {times_zh(cal.ratio.iloc[0])}；30 层的真实模型（"
         f"{real_bytes / 1e6:.0f} MB）为 {times_zh(dec.ratio)}。")
ov, bw = roofline.fit_overhead(reps)
line_ms = 1e3 * (ov + real_bytes / bw)
say(f"At the real model's size the 4-layer line gives {line_ms:.1f} ms per token; the real model took "
    f"{dec.measured_ms:.1f} ms, " + (f"{times(dec.measured_ms / line_ms)} that: the cost of its 26 extra layers' kernels."
                                      if dec.measured_ms > line_ms else "no more than that in this run."),
    zh=f"在真实模型的大小处，4 层复刻模型的拟合直线给出每个词元 {line_ms:.1f} ms；真实模型实际用了 "
       f"{dec.measured_ms:.1f} ms，" + (f"是它的 {times_zh(dec.measured_ms / line_ms)}：这是多出来的 26 层的内核的代价。"
                                        if dec.measured_ms > line_ms else "在这次运行中并不比它多。"));
""", tags=("remove-input",)),
    md(r"""
What the model predicts, and what to look for in the numbers above:

* **A small model is overhead-bound, not memory-bound.** The tiny model's 23 MB of weights can be read in a
  few milliseconds, but every decode step also pays a fixed cost — Python, the `generate` loop, launching
  dozens of small kernels per layer — that has nothing to do with bytes. The roofline then underestimates its
  time by that cost, and reading fewer bytes (quantization) can barely change its speed.
* **As the model grows, the weights take over.** The fixed per-token cost is shared by more and more weight
  traffic, so measured ÷ bound should fall as the replicas widen. A straight line — a fixed overhead plus
  bytes over an effective bandwidth — is fitted to the measurements, and where the two terms are equal is the
  crossover from overhead-bound to memory-bound (printed above when the run was quiet enough to fit). Above
  that size the roofline predicts within a small factor, and reading fewer bytes pays off. The crossover is
  why the speed-ups in later chapters (quantization, compilation, static KV caches) help different models by
  very different amounts.
* **The overhead grows with depth.** The real model has 30 layers, so it launches about seven times as many
  kernels per token as the 4-layer replicas: expect its point (the star) above the 4-layer line.

On a GPU the same picture appears at a different scale: kernel-launch overhead of a few microseconds per
kernel makes small models overhead-bound there too, which is what CUDA graphs and `torch.compile` remove.

## With the overhead removed

What does the bound look like once the overhead is gone? Chapter 3.2 builds such a decode step: the whole forward
as one C++ call per token (`secbook.kernels.CppDecoder`), on int8 or on fp32 weights. Its recorded rows test the
model directly: bound = the best read bandwidth measured in that run ÷ the bytes one step reads, and
measured ÷ bound is the MBU of the book's definition. These rows were recorded on the machine named above the
table, not measured now:
"""),
    code(r"""
ladder = secbook.load_results("generate_ladder")
cpp = ladder[ladder["loop"] == "cpp"].copy()
cpp["bound_tok_s"] = cpp["bandwidth_max_GBs"] * 1e9 / cpp["read_bytes_per_token"]
cpp["mbu"] = cpp["tok_s"] / cpp["bound_tok_s"]
cpp["recorded"] = cpp["cpu"] + ", " + cpp["cores"].astype(str) + " cores, " + cpp["timestamp"].str[:10]
cpp[["model", "rung", "recorded", "read_bytes_per_token", "bandwidth_max_GBs", "bound_tok_s", "tok_s", "mbu"]].round(3)
"""),
    code(r"""
def row(model, kind):
    return cpp[(cpp.model == model) & cpp.rung.str.startswith(kind)].iloc[0]
lines, lines_zh = [], []
for model in cpp.model.unique():
    f32, i8 = row(model, "fp32"), row(model, "int8")
    lines.append(f"{model}: the int8 step read {times(f32.read_bytes_per_token / i8.read_bytes_per_token)} fewer "
                 f"bytes and ran {times(i8.tok_s / f32.tok_s)} as fast; MBU {f32.mbu:.0%} (fp32) and {i8.mbu:.0%} (int8)")
    lines_zh.append(f"{model}：fp32 解码步读取的字节数是 int8 解码步的 "
                    f"{times_zh(f32.read_bytes_per_token / i8.read_bytes_per_token)}，int8 解码步的速度是前者的 "
                    f"{times_zh(i8.tok_s / f32.tok_s)}；两者的 MBU 分别为 {f32.mbu:.0%} 和 {i8.mbu:.0%}")
above = cpp[cpp.mbu > 1]
say("In the recorded rows — " + "; ".join(lines) + ". "
    + (f"An MBU above 100% ({', '.join(sorted(set(above.model)))}) means that a bound computed from *main-memory* "
       "bandwidth was no bound at all: those weights were served from the CPU's caches, which are faster."
       if len(above) else "No row passed its bound.")
    + (" The rows of different models were recorded on different days, so compare speeds within a model's own "
       "rows: the same shape can run at different speeds in two recordings." if cpp["recorded"].nunique() > 1 else ""),
    zh="在记录下来的各行中——" + "；".join(lines_zh) + "。"
       + (f"MBU 超过 100%（{', '.join(sorted(set(above.model)))}）意味着按*主存*带宽算出的下界根本算不上下界："
          "那些权重是从 CPU 的缓存中读取的，而缓存更快。"
          if len(above) else "没有哪一行超过它的下界。")
       + ("不同模型的各行是在不同的日子记录的，所以只在同一个模型自己的各行之内比较速度：同一个形状在两次记录中"
          "可能以不同的速度运行。" if cpp["recorded"].nunique() > 1 else ""));
""", tags=("remove-input",)),
    md(r"""
## On a GPU

On a GPU the chapter measures the real model there, against that GPU's bandwidth measured in the same run. On
every machine it then shows recorded GPU rows: the ladder of chapter 3.2 for the 1-billion-parameter replica, recorded
on the GPU named in the table, with its MBU (the same definition, the bandwidth measured on that GPU in that
run) and, for the same model on the same GPU, the bound from that GPU's datasheet. Both bounds belong to this
one model and this one GPU; neither says anything about another machine.
"""),
    code(r"""
if torch.cuda.is_available():
    gpu = roofline.measure_machine(device="cuda", repeats=3)
    real_gpu = real.to("cuda")
    gpu_pvm = roofline.predicted_vs_measured(real_gpu, rtok, gpu, prompt_len=64, new_tokens=16, repeats=3,
                                             name="smollm2-135m-instruct")
    print(f"measured on {gpu.name}, read bandwidth {gpu.bandwidth / 1e9:,.0f} GB/s")
    display(gpu_pvm.round(3))
    real = real_gpu.to("cpu")
gl = secbook.load_results("generate_ladder_cuda")
gl = gl[gl["tok_s"].notna()].copy()
gpu_name = gl["gpu"].iloc[0].replace("NVIDIA ", "")
sheet = GPUS[gpu_name] if gpu_name in GPUS else None
if sheet is not None:  # the same bytes per step over the datasheet's bandwidth instead of the measured one
    gl["datasheet_bound_tok_s"] = sheet.bandwidth / gl["read_bytes_per_token"]
    gl["of_datasheet_bound"] = gl["tok_s"] / gl["datasheet_bound_tok_s"]
print(f"recorded on {gl['gpu'].iloc[0]}, {gl['timestamp'].iloc[0][:10]}; model {gl['model'].iloc[0]}; "
      f"read bandwidth measured there {gl['bandwidth_max_GBs'].max():,.0f} GB/s"
      + (f", datasheet {sheet.bandwidth / 1e9:,.0f} GB/s" if sheet else ""))
cols = ["rung", "tok_s", "read_bytes_per_token", "mbu"] + (["datasheet_bound_tok_s", "of_datasheet_bound"] if sheet else [])
gl.sort_values("tok_s", ascending=False)[cols].round(3)
"""),
    code(r"""
best = gl.loc[gl["tok_s"].idxmax()]
say(f"On the {gl['gpu'].iloc[0]} the fastest recorded rung, *{best.rung}*, decoded {best.tok_s:,.0f} tokens/s: "
    f"an MBU of {best.mbu:.0%} of the bandwidth measured on that GPU"
    + (f", {best.of_datasheet_bound:.0%} of the {best.datasheet_bound_tok_s:,.0f} tokens/s its datasheet's bandwidth "
       f"allows for the same bytes." if sheet is not None else ".")
    + f" The HF `generate` baseline, *{gl.rung.iloc[0]}*, reached an MBU of {gl.mbu.iloc[0]:.0%}"
    + (": even a 1-billion-parameter model is far from its bound on this GPU until the per-token overhead is "
       "compiled away." if "compile" in best.rung and best.mbu > 2 * gl.mbu.iloc[0] else "."),
    zh=f"在 {gl['gpu'].iloc[0]} 上，记录中最快的一级 *{best.rung}* 每秒解码 {best.tok_s:,.0f} 个词元："
       f"MBU 为在那块 GPU 上测得的带宽的 {best.mbu:.0%}"
       + (f"，是其数据手册带宽对同样字节数所允许的每秒 {best.datasheet_bound_tok_s:,.0f} 个词元的 "
          f"{best.of_datasheet_bound:.0%}。" if sheet is not None else "。")
       + f"HF `generate` 基线 *{gl.rung.iloc[0]}* 的 MBU 为 {gl.mbu.iloc[0]:.0%}"
       + ("：在把每个词元的开销编译掉之前，即使是 1B 参数的模型，在这块 GPU 上也离它的下界很远。"
          if "compile" in best.rung and best.mbu > 2 * gl.mbu.iloc[0] else "。"));
""", tags=("remove-input",)),
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
"""),
    summary([
        "A computation takes at least max(FLOPs ÷ peak FLOP/s, bytes ÷ bandwidth); its arithmetic intensity "
        "against the device's ridge point says which term wins.",
        "Prefill processes the whole prompt at once and is compute-bound; batch-1 decode reads every weight per "
        "token and is memory-bound on every device, so its bound is bytes ÷ bandwidth.",
        "Quantization keeps the parameters and the FLOPs and shrinks the bytes: it raises the decode bound in "
        "proportion, and on a device without a fast narrow path the arithmetic can always run at the fp32 rate.",
        "A measured peak is only the rate of the kernel that measured it: feed a latency model the rate a real "
        "kernel would use.",
        "Measured ÷ predicted is the overhead the model leaves out; it is large for small or deep models and "
        "shrinks as the weights grow. MBU is the same ratio seen from the bandwidth side, with the bandwidth "
        "measured on the same machine in the same run.",
    ]),
    md(r"""
## Exercises

The checks live in `secbook.exercises`; each prints "Correct" or raises an error with a hint.
"""),
    code(r"""
from secbook import exercises
answer = None  # your number here, e.g. answer = 123.4
if answer is not None:
    exercises.check_decode_bound(answer)
"""),
    exercise(1, r"""
*Decode bound.* A 7-billion-parameter model is stored in bf16 on an A100 80GB SXM. Ignoring the KV cache,
what is the highest batch-1 decode speed, in tokens/s, the hardware allows? Check your answer with
`exercises.check_decode_bound(answer)`.
"""),
    solution(r"""
# bytes per token = 7e9 parameters × 2 bytes; tokens/s ≤ bandwidth / bytes per token
exercises.check_decode_bound(GPUS["A100 80GB SXM"].bandwidth / (7e9 * 2))
"""),
    exercise(2, r"""
*Ridge point.* What is the ridge point of an H100 SXM for dense bf16 math, in FLOP/byte? Check with
`exercises.check_ridge_point(answer)`.
"""),
    solution(r"""
# ridge = peak FLOP/s / bandwidth in bytes/s
exercises.check_ridge_point(GPUS["H100 SXM"].fp16_flops / GPUS["H100 SXM"].bandwidth)
"""),
    exercise(3, r"""
*Critical batch.* At what batch size does bf16 decoding on an A100 80GB SXM stop being memory-bound
(ignore the KV cache and the attention FLOPs)? Check with `exercises.check_critical_batch(answer)`. Why does
this make batching the cheapest speed-up a server has?
"""),
    solution(r"""
# a bf16 decode step does 2·N·batch FLOPs and reads 2·N bytes: intensity ≈ batch FLOP/byte = the ridge point
exercises.check_critical_batch(GPUS["A100 80GB SXM"].ridge(2.0))
say("Below that batch the step is memory-bound: it reads the weights once whatever the batch, so each extra "
    "sequence adds FLOPs the idle compute units absorb for free — more tokens per step at almost the same time.",
    zh="低于这个批大小时，解码步受内存带宽限制：无论批多大，它都只读一遍权重，所以每多一个序列，增加的浮点运算"
       "都由空闲的计算单元免费吸收——每一步产出更多词元，而时间几乎不变。")
"""),
    exercise(4, r"""
*KV cache.* Using `predict` (or the shape's `kv_per_token`), find the context length at which the KV cache of
the Llama-3.2-1B shape (bf16 cache, batch 8) is as many bytes per decode step as the bf16 weights themselves.
"""),
    solution(r"""
# KV bytes per step = batch × context × kv_per_token × 2 bytes; set equal to the weight bytes and solve
w = predict(shape, "A100 80GB SXM", bytes_per_weight="bf16").weight_bytes
context = w / (8 * shape.kv_per_token * 2)
p = predict(shape, "A100 80GB SXM", batch=8, prompt_len=int(context), new_tokens=2, bytes_per_weight="bf16")
print(f"context ≈ {context:,.0f} tokens: then a decode step reads {p.decode_bytes / 1e9:.2f} GB, "
      f"about twice the {w / 1e9:.2f} GB of weights")
"""),
    exercise(5, r"""
*Your own calibration.* Quantize the real model's linear layers to int8 with PyTorch's dynamic quantization
(`secbook.bench.apply_technique(model, "int8-dynamic")`), predict its TPOT on this CPU from the bytes it really
stores per weight (`secbook.measure.decode_read_bytes` over the shape's `matmul_params`) and measure it with
`roofline.predicted_vs_measured(..., bytes_per_weight=...)`. Is int8 decoding as close to its bound as fp32 was?
What does the answer depend on?
"""),
    solution(r"""
import copy
real8 = apply_technique(copy.deepcopy(real), "int8-dynamic")
bpw = secbook.measure.decode_read_bytes(real8) / roofline.to_shape(real8).matmul_params
pvm8 = roofline.predicted_vs_measured(real8, rtok, cpu_now, prompt_len=64, new_tokens=8, repeats=2,
                                      bytes_per_weight=bpw, name="smollm2-135m-instruct int8")
display(pvm8.round(3))
r8, r32 = pvm8.iloc[1].ratio, dec.ratio
say(f"{bpw:.2f} bytes per weight. int8 decode measured {times(r8)} its bound, fp32 {times(r32)}: int8 was "
    + ("closer to" if r8 < r32 else "further from") + " its bound in this run. The fixed per-token overhead is "
    "the same in both formats while the bound shrinks with the bytes, so the fewer the bytes, the larger the share "
    "of a step the overhead takes; and dynamic int8 adds work fp32 does not do, quantizing every activation "
    "before each product.",
    zh=f"每个权重 {bpw:.2f} 字节。int8 解码实测为其下界的 {times_zh(r8)}，fp32 为 {times_zh(r32)}：这次运行中 int8 "
       + ("离它的下界更近" if r8 < r32 else "离它的下界更远") + "。每个词元的固定开销在两种格式下相同，而下界随字节数"
       "缩小，所以字节越少，开销在一步中所占的份额就越大；而且动态 int8 还要做 fp32 不做的工作：在每次乘法之前先"
       "量化每个激活值。");
del real8
"""),
]
