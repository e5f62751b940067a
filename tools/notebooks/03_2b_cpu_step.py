"""Chapter 3.2.1 — Inside a fast CPU decode step: memory, the weight layout, an int8 kernel, the whole step in C++."""
import sys

sys.path.insert(0, "tools")
from nb import answer, code, exercise, md, opening, solution, summary  # noqa: E402

NAME = "03_2b_cpu_step"

CELLS = [
    md(r"""
# Inside a fast CPU decode step

At batch 1, a decode step reads every weight of the model once to produce one token. On a CPU the fastest rung of
the ladder in section 3.2 does three things to make that reading fast: it lays the weights out in the order the
step reads them, it multiplies int8 weights with an integer kernel instead of converting each one to a float,
and it runs the whole step as one C++ call, so that almost nothing but weight reading happens between two
tokens. This section builds these three pieces one at a time, starting from how a CPU reads memory, and measures
each against the Python loop of section 3.2.
"""),
    opening(["explain what a cache line and the hardware prefetcher are, and why reading order matters",
             "read the weights of a matrix-vector product in the layout its kernel streams fastest",
             "follow an int8 × int16 dot product into one vector instruction (AVX-512 VNNI, AVX2, NEON)",
             "say what a parallel region and a barrier are, and where the decode step needs its barriers",
             "compare a C++ decode step with the Python loop, timed in turn, and explain the result"],
            ["section 3.2 (our decoding loop, the optimization ladder)",
             "section 3.1.1 (int8 weights with one scale per row)",
             "reading a few lines of C++ helps, but is not needed"], 35),
    code(r"""
import secbook
machine = secbook.notebook_setup()  # quiet warnings and progress bars, seed 0
import copy, os
import numpy as np, torch, pandas as pd, matplotlib.pyplot as plt
from secbook import generate, kernels, memaccess, pretrained, ladder as L
from secbook.claims import say, guard, compare, times, times_zh
from dataclasses import replace  # a comparison relabelled in Chinese, for say(..., zh=...)
from secbook.hardware import read_bandwidth
from secbook.measure import tok_s_in_turn, token_agreement, decode_read_bytes, load_results, machine_info
pd.set_option("display.width", 140); pd.set_option("display.precision", 3)
print("measured on:", machine)
"""),
    md(r"""
## How a CPU reads memory

Main memory is far from the cores: a read that has to go all the way there takes on the order of a hundred
nanoseconds {cite}`drepper2007memory`. Two mechanisms hide that delay.

- **Cache lines.** Memory moves in blocks of 64 bytes, called cache lines (16 fp32 numbers). Reading one number
  brings its whole line into the CPU's caches; the other 15 then cost nothing more. Reading one number in every
  line costs as much memory traffic as reading all of them.
- **The hardware prefetcher.** The CPU watches the addresses each core reads. When they march through memory in
  order, it fetches the next lines *before* they are asked for, so a sequential stream runs at the memory's full
  speed. Addresses in an order it cannot predict leave every read waiting the whole delay.

Four ways of reading one 64 MiB array (much larger than the caches), timed in turn over five rounds: every float
in order; one float per cache line in order; and one float per line gathered by an index, with the lines in order
or shuffled (the same instructions, only the order of the addresses differs):
"""),
    code(r"""
pat = memaccess.access_patterns(mib=64, rounds=5)
ms = pd.DataFrame({k: 1e3 * np.array(v) for k, v in pat.items()})
fig, ax = plt.subplots(figsize=(6.5, 2.4))
ax.barh(range(len(ms.columns)), ms.median(), xerr=[ms.median() - ms.min(), ms.max() - ms.median()], capsize=3,
        color=["tab:blue", "tab:blue", "tab:orange", "tab:orange"])
ax.set_yticks(range(len(ms.columns)), ms.columns); ax.invert_yaxis()
ax.set(xlabel="ms to read the 64 MiB array (median, min-max of 5 rounds)"); plt.show()
"""),
    code(r"""
P = memaccess.PATTERNS
named = {"Reading one float per cache line": pat[P[1]], "reading every float": pat[P[0]],
         "The gather with the lines in random order": pat[P[3]], "the same gather in order": pat[P[2]]}
line = compare(named, "Reading one float per cache line", "reading every float", higher_is_better=False)
order = compare(named, "The gather with the lines in random order", "the same gather in order", higher_is_better=False)
guard(line.median < 4, "reading a sixteenth of the floats, one per cache line, is nowhere near 16x faster",
      f"{line.median:.2f}x")
line_zh = replace(line, a="每个缓存行读取一个浮点数", b="读取每个浮点数")
order_zh = replace(order, a="缓存行顺序被打乱的收集", b="缓存行按顺序的同一收集")
say(f"{line.words()}: a sixteenth of the numbers, but the same whole lines fetched from memory. {order.words()}"
    + ("; the difference is what the prefetcher is worth to a stream it can predict." if order.verdict == "slower"
       else "; in this run the order made no clear difference, which happens when the machine's other work "
            "dominates the timings: run the cell again."),
    zh=f"{line_zh.words_zh()}：读取的数只有十六分之一，但从内存取来的缓存行一行不少。{order_zh.words_zh()}"
       + ("；这一差别就是预取器对一条可预测的数据流的价值。" if order.verdict == "slower"
          else "；这次运行中顺序没有造成明显差别，当机器上的其他工作主导了计时时就会这样：请再运行一次这个单元格。"));
""", tags=("remove-input",)),
    md(r"""
## The layout of the weights

At batch 1 each projection of a decode step is a matrix-*vector* product $y = Wx$: every weight is read once and
used for one multiply-add, so its speed is the speed at which the weights stream from memory. `nn.Linear` stores
$W$ as `[out, in]`: each output $y_n$ is the dot product of row $n$ with $x$, and the kernel reads the rows one
after another. Stored transposed, `[in, out]`, the same product is a sum of rows scaled by the inputs,
$y = \sum_k x_k W^\top_{k,:}$, which the library runs with another kernel. Both read every byte once and in
order; which of the two streams faster is up to the library's kernels, so it is measured (a 64 MiB fp32 matrix,
three rounds in turn):
"""),
    code(r"""
lay = [L.gemv_layouts(repeats=10) for _ in range(3)]
old, new = list(lay[0]["layouts"])  # nn.Linear's [out, in] with F.linear, the transposed [in, out] with x @ W_t
gbs = {"the transposed layout (x @ W_t)": [r["layouts"][new]["GB/s"] for r in lay],
       "nn.Linear's layout (F.linear)": [r["layouts"][old]["GB/s"] for r in lay]}
pd.DataFrame(gbs).describe().loc[["50%", "min", "max"]].rename(index={"50%": "median GB/s"}).round(1)
"""),
    code(r"""
c_lay = compare(gbs, "the transposed layout (x @ W_t)", "nn.Linear's layout (F.linear)")
c_lay_zh = replace(c_lay, a="转置布局 (x @ W_t)", b="nn.Linear 的布局 (F.linear)")
say(f"Weight bytes streamed per second: {c_lay.words()}. "
    + ("Our Python loop keeps its fused weights transposed for this reason." if c_lay.verdict == "faster" else
       "Here the transposed layout, which our Python loop keeps, did not win clearly: which kernel streams faster "
       "depends on the library and the CPU, so the choice has to be measured on the machine that runs it."),
    zh=f"每秒流式读取的权重字节数：{c_lay_zh.words_zh()}。"
       + ("我们的 Python 循环正是因此把融合权重以转置形式保存。" if c_lay.verdict == "faster" else
          "这里，我们的 Python 循环所采用的转置布局并没有明显胜出：哪个内核流式读取更快取决于库和 CPU，所以必须在实际"
          "运行它的机器上测量后再做选择。"));
""", tags=("remove-input",)),
    md(r"""
The C++ step goes further. When it is built it copies each core's share of the rows of every matrix into **one
buffer per core, in the order the step reads them**: layer 0's q/k/v rows, its output rows, its gate/up rows, its
down rows, then layer 1's, …, the LM head's. Each core then reads one sequential stream through the whole step,
and the prefetcher runs on from one matrix into the next. Within that stream 8 rows are interleaved piece by
piece, so that 8 running sums advance over one contiguous run of bytes.

## An int8 kernel

An int8 weight is a quarter of the bytes of an fp32 one, so at batch 1 it could be up to four times as fast — if
the arithmetic keeps up. Converting every weight to a float first costs several instructions per weight, too
many. Like llama.cpp {cite}`llamacpp`, our kernel (`secbook/csrc/int8_linear.cpp`, built on first use) rounds the
*activations* to integers too, so that integer instructions do the products:

- activations become **int16**, with one scale per 256 inputs (each off by at most 1/65,534 of the largest of its
  256, so outputs stay within about $10^{-5}$ of the fp32 product);
- int8 × int16 products are summed exactly in **int32**; 256 of them cannot overflow (exercise 1); each 256-input
  sum is then scaled into fp32.

The instruction that does the work depends on the CPU {cite}`intelsdm`. With **AVX-512 VNNI**, one `vpdpwssd`
multiplies 32 int16 pairs, adds neighbouring products and accumulates 16 int32 sums. With **AVX2**, `vpmaddwd`
does the multiply-and-pair step for 16 pairs and `vpaddd` accumulates the 8 sums; on 64-bit ARM, **NEON**'s
`smlal` multiplies and accumulates 4 pairs; elsewhere plain loops do the same arithmetic. Every path gives the
same integers. The arithmetic on a small example, then the path this page runs on and a check of the kernel
against the same arithmetic in PyTorch and against the exact product:
"""),
    code(r"""
# NBVAL_CHECK_OUTPUT
x = torch.tensor([[0.5, -1.0, 0.25, 2.0]])                 # four activations (one chunk, padded to 256)
w = torch.tensor([[12, -7, 127, -128]], dtype=torch.int8)  # one int8 weight row
xq, sx = kernels.quantize_activations(x)
print("int16 activations:", xq[0, 0, :4].tolist(), "scale:", f"{sx.item():.3e}", "(2.0 -> 32767)")
exact = int((xq[0, 0, :4].long() * w[0].long()).sum())
print("integer sum:", exact, "-> times the scale:", f"{exact * sx.item():.6f}", "| fp32:", float(x @ w.float().T))
print(f"largest possible sum of 256 products: 256 x 128 x 32767 = {256 * 128 * 32767:,} < 2^31 - 1 = {2**31 - 1:,}")
"""),
    code(r"""
if kernels.available():
    print("vector path of the C++ kernels:", kernels.simd_path())
    torch.manual_seed(0)
    w8, s8, x8 = torch.randint(-127, 128, (3072, 576), dtype=torch.int8), torch.rand(3072) / 100, torch.randn(1, 576)
    y_k, y_ref = kernels.int8_linear(x8, w8, s8), kernels.int8_linear_reference(x8, w8, s8)
    y_fp32 = (x8.double() @ w8.double().T * s8.double()).float()
    rel = lambda a, b: ((a - b).abs().max() / b.abs().max()).item()
    print(f"largest error, relative to the largest output: {rel(y_k, y_ref):.1e} against the same arithmetic in "
          f"PyTorch (kernels.int8_linear_reference), {rel(y_k, y_fp32):.1e} against the exact product")
    guard(rel(y_k, y_fp32) < 1e-3, "the int8 kernel computes the int8 product to within rounding")
else:
    print("the C++ kernel cannot be built here:", kernels.unavailable_reason())
"""),
    md(r"""
Is the kernel limited by memory or by arithmetic? Run it over *one* int8 matrix again and again, so that the
matrix stays in the caches, and over 16 different ones in turn, so that they stream from memory; the same for the
fp32 product $x W^\top$. A product that gains a lot from the cache was waiting for memory; one that gains little
was busy computing.
"""),
    code(r"""
if kernels.available():
    rates = L.int8_gemv_rates(repeats=3, compiled=False)  # an 8192 x 576 matrix; 16 copies for "from memory"
    rt = pd.Series({f"{k}, {s}": v for (k, s), v in rates.items()}, name="weight GB/s")
    display(rt.round(1).to_frame())
"""),
    code(r"""
if kernels.available():
    def gain(kind):  # the same product from the cache vs from memory (each timed on its own, not in turn)
        g = rates[(kind, "from cache (one matrix)")] / rates[(kind, "from memory (many)")]
        return (f"ran {times(g)} as fast from the cache: from memory it was waiting for memory" if g >= 2 else
                f"gained little from the cache ({times(g)}): something other than memory held it back" if g < 1.25
                else f"ran {times(g)} as fast from the cache")
    def gain_zh(kind):  # gain(kind) in Chinese
        g = rates[(kind, "from cache (one matrix)")] / rates[(kind, "from memory (many)")]
        return (f"从缓存读取时的速度是从内存读取时的 {times_zh(g)}：从内存读取时它在等待内存" if g >= 2 else
                f"从缓存中获益很少（{times_zh(g)}）：限制它的不是内存，而是别的因素" if g < 1.25
                else f"从缓存读取时的速度是从内存读取时的 {times_zh(g)}")
    k8, f32 = rates[("int8 C++ kernel", "from memory (many)")], rates[("fp32 x @ W_t", "from memory (many)")]
    say(f"From memory, the int8 kernel read {k8:.1f} GB/s of weights and the fp32 product {f32:.1f} GB/s: the "
        f"kernel got through {times(k8 / (f32 / 4))} as many weights per second, a quarter of the bytes each. The "
        f"int8 kernel {gain('int8 C++ kernel')}; the fp32 product {gain('fp32 x @ W_t')}. (Each figure is a median "
        "of a few runs taken one after another, so a busy machine can blur the smaller differences.)",
        zh=f"从内存读取时，int8 内核每秒读取 {k8:.1f} GB 权重，而 fp32 乘积为 {f32:.1f} GB/s：每个权重只占四分之一的字节，"
           f"按权重个数计，内核每秒处理的权重是后者的 {times_zh(k8 / (f32 / 4))}。int8 内核{gain_zh('int8 C++ kernel')}；"
           f"fp32 乘积{gain_zh('fp32 x @ W_t')}。（每个数字都是接连运行几次所得的中位数，所以繁忙的机器可能会模糊较小的差异。）")
""", tags=("remove-input",)),
    md(r"""
## The whole step in C++

Besides its products, a PyTorch decode step runs a few hundred small operations per token (norms, rotary
embeddings, cache writes, attention, activations), with Python in between; for one token each takes
microseconds, and the time around them adds up. llama.cpp runs the whole model as one C++ program.
`secbook/csrc/llama_step.cpp` does the same for one decode step of a Llama-layout model (Llama, SmolLM, Qwen2,
Qwen3, Mistral): one call per token, from the embedding to the LM head, on int8 or fp32 weights. Three ideas from
parallel programming are needed to read it {cite}`openmp52`:

- A **thread** is one stream of instructions, run on a core; the step uses one per core.
- A **parallel region** (`#pragma omp parallel`) starts the threads, and each runs the same code on its own part
  of the work. Starting them costs time, so the step opens *one* region per token, not one per product.
- A **barrier** (`#pragma omp barrier`) is a point every thread must reach before any continues. The step needs
  one wherever a thread reads what others wrote: after the q/k/v product, after the rotary embedding and cache
  write, after attention, after the output product, after gate/up with SiLU, after the down product — six per
  layer. Small work in between, such as a norm, each thread does on its own copy instead of waiting for one.

A barrier makes every thread wait for the *slowest*. When the operating system gives a core to another program
for a moment, all threads wait at the next barrier, so a busy machine hurts this step more than a loop that
parallelises each product on its own.

`FastGenerator(model, max_len, cpp=True)` decodes with it (`kernels.CppDecoder` packs the weights). On the real
model's fp32 weights nothing is rounded, so it must give HF `generate`'s greedy tokens; on int8 weights
(`ladder.apply_transform(model, "int8k")`) it uses the int8 kernel's arithmetic and may change a token here and
there.
"""),
    code(r"""
real, rtok = secbook.load(pretrained.NAME)
chat, chat_label = L.ladder_prompt(rtok)
N = 24
ref = generate.hf_generate(real, chat, N)
print(chat_label, "->", repr(rtok.decode(ref[0, chat.shape[1]:])))
loops = {"the Python loop (fp32)": generate.FastGenerator(real, chat.shape[1] + N)}
if kernels.available():
    real8 = L.apply_transform(copy.deepcopy(real), "int8k")
    loops["the C++ step (fp32)"] = generate.FastGenerator(real, chat.shape[1] + N, cpp=True)
    loops["the C++ step (int8)"] = generate.FastGenerator(real8, chat.shape[1] + N, cpp=True)
outs = {k: g.generate(chat, N) for k, g in loops.items()}
for k, o in outs.items():
    print(f"{k:>22}: token agreement with HF generate (fp32) {token_agreement(o[:, chat.shape[1]:], ref[:, chat.shape[1]:]):.2f}")
guard(all(torch.equal(outs[k], ref) for k in outs if "fp32" in k), "the fp32 loops give HF generate's greedy tokens")
"""),
    md(r"""
The three loops timed in turn on the real model, three rounds (new tokens ÷ the whole call, prompt included):
"""),
    code(r"""
speeds = tok_s_in_turn({k: g.generate for k, g in loops.items()}, chat, N, rounds=3)
load1, cores = os.getloadavg()[0], machine_info().get("cores") or os.cpu_count()
pd.DataFrame(speeds).describe().loc[["50%", "min", "max"]].rename(index={"50%": "median tok/s"}).round(1)
"""),
    code(r"""
if kernels.available():
    c32 = compare(speeds, "the C++ step (fp32)", "the Python loop (fp32)")
    c8 = compare(speeds, "the C++ step (int8)", "the Python loop (fp32)")
    c32_zh = replace(c32, a="C++ 解码步 (fp32)", b="Python 循环 (fp32)")
    c8_zh = replace(c8, a="C++ 解码步 (int8)", b="Python 循环 (fp32)")
    busy = load1 > cores
    text = f"Timed in turn: {c32.words()}; {c8.words()}. "
    text_zh = f"轮流计时：{c32_zh.words_zh()}；{c8_zh.words_zh()}。"
    if c32.verdict != "faster":
        text += (f"The machine was {'busy' if busy else 'not busy'} while this page was built (load average "
                 f"{load1:.1f} on {cores} cores): "
                 + ("the step's threads wait at every barrier for a core the operating system gave to another "
                    "program, which costs the C++ step far more than the Python loop. " if busy else
                    "an unexpected result; run the cell again. "))
        text_zh += (f"构建本页时机器{'很忙' if busy else '并不忙'}（{cores} 个核心上的平均负载为 {load1:.1f}）："
                    + ("解码步的线程在每个屏障处都要等待一个被操作系统分给其他程序的核心，这对 C++ 解码步造成的损失远大于"
                       "对 Python 循环的。" if busy else "这是一个意外的结果；请再运行一次这个单元格。"))
    rec = load_results("generate_ladder")
    text += L.versus_record(rec, pretrained.NAME, "fp32, whole decode step in C++", "our loop fp32, fused weights", c32)
    text += " " + L.versus_record(rec, pretrained.NAME, "int8, whole decode step in C++", "our loop fp32, fused weights",
                                  c8).replace("The recorded ladder", "The same record", 1)
    text_zh += L.versus_record_zh(rec, pretrained.NAME, "fp32, whole decode step in C++",
                                  "our loop fp32, fused weights", c32)
    text_zh += L.versus_record_zh(rec, pretrained.NAME, "int8, whole decode step in C++",
                                  "our loop fp32, fused weights", c8).replace("记录下来的阶梯", "同一份记录", 1)
    say(text, zh=text_zh)
else:
    say("The C++ step cannot be built here, so this page cannot time it: " + kernels.unavailable_reason(),
        zh="这里无法构建 C++ 解码步，因此本页无法为它计时：" + kernels.unavailable_reason())
""", tags=("remove-input",)),
    md(r"""
How close does the step come to what memory allows? Its **model bandwidth utilisation** (MBU) is the weight bytes
one step reads × steps per second ÷ the memory's read bandwidth, measured now with a large sum in PyTorch:
"""),
    code(r"""
if kernels.available():
    bw = read_bandwidth() / 1e9
    mbu = {k: decode_read_bytes(real8 if "int8" in k else real) * np.median(v) / 1e9 / bw for k, v in speeds.items()}
    say(f"Read bandwidth measured now: {bw:.1f} GB/s. MBU of the Python loop {mbu['the Python loop (fp32)']:.0%}, of "
        f"the C++ step on fp32 {mbu['the C++ step (fp32)']:.0%} and on int8 {mbu['the C++ step (int8)']:.0%} (whole calls, the "
        "prompt included, so a little below the decode steps' own figure). What the C++ step leaves unused goes "
        "to the barriers, to work that reads no weights (attention, norms), and to the moments the machine was "
        "busy.",
        zh=f"此刻测得的读取带宽：{bw:.1f} GB/s。Python 循环的 MBU 为 {mbu['the Python loop (fp32)']:.0%}，fp32 上的 "
           f"C++ 解码步为 {mbu['the C++ step (fp32)']:.0%}，int8 上为 {mbu['the C++ step (int8)']:.0%}（按整个调用计算，"
           "包括提示，所以比解码步本身的数字略低）。C++ 解码步没有用上的带宽，花在了屏障、不读取权重的工作（注意力、归一化）"
           "以及机器繁忙的时刻上。")
""", tags=("remove-input",)),
    md(r"""
The ladder recorded the same steps on all three models; the C++ rows, with the bytes one step reads and the
memory bandwidth of that run:
"""),
    code(r"""
rec = load_results("generate_ladder")
cpp = rec[rec.loop == "cpp"][["model", "rung", "tok_s", "speedup", "token_agreement", "read_bytes_per_token",
                              "achieved_GBs", "bandwidth_max_GBs", "mbu", "timestamp"]]
print("recorded on:", rec.cpu.iloc[0], f"({rec.cores.iloc[0]} cores)")
cpp.round(3)
"""),
    code(r"""
tiny = cpp[cpp.model == "tiny"]
tiny_mbu, tiny_mb = tiny.mbu.max(), tiny.read_bytes_per_token / 1e6
say(f"On the tiny model the recorded MBU reached {tiny_mbu:.0%}"
    + (f": above 100 %, because its weights ({tiny_mb.min():.0f} MB in int8, {tiny_mb.max():.0f} MB in fp32) fit "
       "in the CPU's caches and are read from there, faster than memory delivers; MBU measures memory bandwidth "
       "and does not apply to it. On the two 135M models the weights come from memory and MBU means what it "
       "says." if tiny_mbu > 1 else
       ": the tiny model's weights were read no faster than memory delivers."),
    zh=f"小模型记录下来的 MBU 达到了 {tiny_mbu:.0%}"
       + (f"：超过了 100 %，因为它的权重（int8 下 {tiny_mb.min():.0f} MB，fp32 下 {tiny_mb.max():.0f} MB）能装进 CPU "
          "的缓存并从那里读取，比内存供给得更快；MBU 衡量的是内存带宽，不适用于它。在两个 135M 模型上，权重来自内存，MBU "
          "名副其实。" if tiny_mbu > 1 else
          "：小模型的权重读取速度没有超过内存的供给速度。"));
""", tags=("remove-input",)),
    summary(["Memory moves in 64-byte cache lines, and a prefetcher runs ahead of reads that go through memory in "
             "order: a decode step should read its weights as long sequential streams.",
             "At batch 1 each projection is a matrix-vector product limited by streaming the weights; the layout "
             "decides which kernel streams them, and is chosen by measuring.",
             "An int8 kernel that rounds the activations to int16 per 256 inputs sums exact integer products in "
             "int32 with one vector instruction per 32 pairs (AVX-512 VNNI), or a few (AVX2, NEON).",
             "The whole step in C++ opens one parallel region per token and meets at six barriers per layer; "
             "almost nothing but weight reading is left between two tokens, but every barrier waits for the slowest "
             "core, so a busy machine hurts it most.",
             "Whether the C++ step beats the Python loop on a given machine is measured in turn, and a live result "
             "that differs from the recorded ladder is reported beside it."]),
    md(r"""
## Exercises
"""),
    exercise(1, r"""
**Why 256 is safe.** The kernel adds products of an int8 weight (−128..127) and an int16 activation
(−32,767..32,767) into an int32 sum (at most $2^{31}-1$), 256 products per sum. How many products could one sum add
with no risk of overflow? Check with `secbook.exercises.check_int32_chunk(n)`, and compare with the kernel's 256.
"""),
    solution(r"""
from secbook import exercises
n = (2 ** 31 - 1) // (128 * 32767)   # the largest product is 128 x 32767 in size
exercises.check_int32_chunk(n)
"""),
    exercise(2, r"""
**The step's ceiling.** From the recorded ladder row `int8, whole decode step in C++` of the real model, take the
bytes one decode step reads (`read_bytes_per_token`) and the run's best read bandwidth (`bandwidth_max_GBs`). How
many tokens per second would a step reach that did nothing but stream its weights at that bandwidth, and what
fraction of it did the C++ step reach?
"""),
    solution(r"""
row = rec[(rec.model == pretrained.NAME) & (rec.rung == "int8, whole decode step in C++")].iloc[0]
ceiling = row.bandwidth_max_GBs * 1e9 / row.read_bytes_per_token
print(f"ceiling: {row.bandwidth_max_GBs:.1f} GB/s / {row.read_bytes_per_token / 1e6:.0f} MB per token = {ceiling:.0f} tok/s; "
      f"the C++ step: {row.tok_s:.0f} tok/s, {row.tok_s / ceiling:.0%} of it (its MBU, {row.mbu:.0%}).")
say("The rest: the threads wait for each other at the barriers, attention and the norms read no weights, "
    "and the best bandwidth sample of a run is a moment the machine was quiet.",
    zh="其余的部分：线程在屏障处互相等待，注意力和归一化不读取权重，而一次运行中最好的带宽样本取自机器空闲的那一刻。")
"""),
    exercise(3, r"""
**Counting barriers.** How many barriers does one token of the real model pass through in the C++ step? Using the
live speed of the int8 step above, what share of a step would be lost if every barrier cost 10 µs of waiting?
"""),
    solution(r"""
layers = real.config.num_hidden_layers
barriers = 6 * layers
if kernels.available():
    step_s = 1 / np.median(speeds["the C++ step (int8)"])
    print(f"{layers} layers x 6 = {barriers} barriers per token; at 10 us each that is {barriers * 10e-6 * 1e3:.1f} ms, "
          f"{barriers * 10e-6 / step_s:.0%} of one step ({step_s * 1e3:.1f} ms, measured above, prompt included).")
else:
    print(f"{layers} layers x 6 = {barriers} barriers per token (the C++ step could not be timed here).")
say("On a quiet machine a barrier costs well under a microsecond; on a busy one a thread that loses its core "
    "makes the others wait for milliseconds, which is why this step is the most sensitive to a shared machine.",
    zh="在空闲的机器上，一个屏障的代价远低于一微秒；在繁忙的机器上，一个失去核心的线程会让其他线程等上几毫秒，这就是为什么"
       "这个解码步对共享机器最为敏感。")
"""),
    exercise(4, r"""
**Four times the bytes.** The fp32 C++ step reads four times the bytes of the int8 one. If memory alone set the
pace, how much faster would int8 be? Compare with the recorded C++ rows of the real model and of the tiny model,
and explain the difference.
"""),
    solution(r"""
for name, d in cpp.groupby("model", sort=False):
    f32, i8 = (d[d.rung == f"{w}, whole decode step in C++"].iloc[0] for w in ("fp32", "int8"))
    print(f"{name}: bytes fp32/int8 {f32.read_bytes_per_token / i8.read_bytes_per_token:.2f}, "
          f"speed int8/fp32 {i8.tok_s / f32.tok_s:.2f}")
say("Where the weights stream from memory (the 135M models), int8's speed-up approaches the ratio of bytes as far "
    "as the step is limited by memory. The tiny model's weights are small enough to stay in a large CPU cache (its "
    "MBU above 100 % says they did where it was recorded); its step is short and fixed costs (barriers, attention, "
    "the embedding) weigh more, so the ratio of speeds need not follow the ratio of bytes.",
    zh="在权重从内存流式读入的地方（135M 的两个模型），只要解码步受限于内存，int8 的加速比就会接近字节数之比。小模型的权重"
       "小到可以留在一个大的 CPU 缓存中（它在记录时超过 100 % 的 MBU 说明确实如此）；它的一步很短，固定开销（屏障、注意力、"
       "词嵌入）占比更大，所以速度之比不一定跟随字节数之比。")
"""),
]
