"""What hardware is here, and which device and dtype to use on it."""
from __future__ import annotations

import torch

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve ``"auto"`` to the best device present (CUDA > MPS > CPU) and check an explicit request.

    Asking for a device this machine lacks raises a ``ValueError`` that says what is available, rather
    than failing later inside a kernel.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unsupported device {str(device)!r}; use 'cpu', 'cuda', 'mps' or 'auto'.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for, but this machine has no CUDA GPU visible to torch "
                             "(torch.cuda.is_available() is False). Use device='cpu', or device='auto' to "
                             "take the best device present; on Colab pick Runtime > Change runtime type > GPU.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(dev)!r} was asked for, but only {torch.cuda.device_count()} "
                             f"CUDA device(s) exist (cuda:0..cuda:{torch.cuda.device_count() - 1}).")
    elif dev.type == "mps" and not mps_available():
        raise ValueError("device='mps' was asked for, but Apple MPS is not available here; use 'cpu' or 'auto'.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {str(device)!r}; use 'cpu', 'cuda', 'mps' or 'auto'.")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Turn ``"bf16"``-style names into torch dtypes; ``None`` stays ``None``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(DTYPES))}") from None


# ----------------------------------------------------------------------------------------------------------
# What this machine has
# ----------------------------------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    import platform

    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The instruction-set flags the kernel reports for the first CPU (empty set off Linux)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_cores() -> int:
    """Cores this process may use (the affinity mask, which containers and ``taskset`` shrink)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU has bf16 arithmetic in hardware: AVX512-BF16 (AMD Zen 4+, Intel Cooper Lake+) or
    AMX-BF16 (Intel Sapphire Rapids+). Without them PyTorch emulates bf16 and it is slower than fp32."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def gpu_info(index: int = 0) -> dict | None:
    """Name, memory, compute capability and SM count of CUDA GPU ``index``; ``None`` without a GPU."""
    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(index)
    major, minor = torch.cuda.get_device_capability(index)
    return {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "capability": f"{major}.{minor}",
            "sms": p.multi_processor_count, "cuda": torch.version.cuda,
            "bf16": major >= 8, "fp16_tensor_cores": (major, minor) >= (7, 0)}


def _installed(module: str) -> str:
    """The version of an installed package, or ``"no"`` (without importing it: some print noise)."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return "no"
    try:
        return importlib.metadata.version(module.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "yes"


def sdpa_backends() -> str:
    """Which ``scaled_dot_product_attention`` back-ends could run here. On CUDA: flash (needs compute
    capability >= 8.0), memory-efficient, cuDNN, math; on CPU PyTorch has its own fused (flash-style) kernel
    plus the math fallback."""
    if not torch.cuda.is_available():
        return "cpu fused (flash-style), math"
    major, _ = torch.cuda.get_device_capability()
    b = torch.backends.cuda
    names = []
    if b.flash_sdp_enabled() and major >= 8:
        names.append("flash")
    if b.mem_efficient_sdp_enabled():
        names.append("mem-efficient")
    if getattr(b, "cudnn_sdp_enabled", lambda: False)() and major >= 8:
        names.append("cudnn")
    if b.math_sdp_enabled():
        names.append("math")
    return ", ".join(names)


def describe():
    """One table of what this machine offers for inference: CPU, GPU, dtype support and kernel libraries.

    Each row is a fact the rest of the book branches on: which device (CUDA > MPS > CPU), which dtype
    (bf16 needs compute capability 8.0 on NVIDIA GPUs and AVX512-BF16/AMX on CPUs to be fast), which
    attention kernels (FlashAttention, Dao et al. 2022) and which quantized kernels (bitsandbytes, int4).
    """
    import pandas as pd

    gpu = gpu_info()
    rows = [
        ("CPU", cpu_model()),
        ("CPU cores usable", cpu_cores()),
        ("CPU bf16 in hardware (AVX512-BF16/AMX)", cpu_has_fast_bf16()),
        ("torch", torch.__version__),
        ("CUDA GPU", gpu["name"] if gpu else "none"),
        ("GPU memory (GiB)", gpu["memory_gib"] if gpu else "-"),
        ("GPU compute capability", gpu["capability"] if gpu else "-"),
        ("GPU bf16", gpu["bf16"] if gpu else "-"),
        ("GPU fp16 tensor cores", gpu["fp16_tensor_cores"] if gpu else "-"),
        ("Apple MPS", mps_available()),
        ("best device", str(pick_device("auto"))),
        ("dtype pick_dtype() chooses", str(pick_dtype(pick_device("auto"))).replace("torch.", "")),
        ("SDPA back-ends", sdpa_backends()),
        ("flash-attn package", _installed("flash_attn")),
        ("bitsandbytes", _installed("bitsandbytes")),
        ("torchao", _installed("torchao")),
        ("int4 matmul kernel (aten._weight_int4pack_mm)", hasattr(torch.ops.aten, "_weight_int4pack_mm")),
        ("triton (torch.compile's GPU code generator)", _installed("triton")),
    ]
    return pd.DataFrame([(k, str(v)) for k, v in rows], columns=["what", "here"]).set_index("what")


def supports_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` runs bf16 natively: CUDA compute capability >= 8.0 (Ampere+), MPS, or a CPU with
    AVX512-BF16/AMX. (PyTorch can *emulate* bf16 elsewhere, but slowly; on pre-Ampere GPUs some kernels
    refuse it.)"""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_capability(dev.index or 0)[0] >= 8
    if dev.type == "mps":
        return True
    return cpu_has_fast_bf16()


def pick_dtype(device: str | torch.device = "auto", prefer: str | torch.dtype | None = None) -> torch.dtype:
    """The inference dtype for ``device``: bf16 where the hardware has it, fp16 on older GPUs (compute
    capability < 8.0, e.g. a Colab T4), fp32 on a CPU without bf16 instructions.

    ``prefer`` overrides the choice; asking for bf16 on a GPU without it raises a ``ValueError`` (fp16 has
    the speed there, with care for overflow). bf16 keeps fp32's exponent range with a shorter mantissa
    (Kalamkar et al. 2019), so it rarely overflows; fp16 has more mantissa but overflows past 65504.
    """
    dev = pick_device(device)
    if prefer is not None:
        dt = resolve_dtype(prefer)
        if dt == torch.bfloat16 and dev.type == "cuda" and not supports_bf16(dev):
            name = torch.cuda.get_device_name(dev.index or 0)
            cap = ".".join(map(str, torch.cuda.get_device_capability(dev.index or 0)))
            raise ValueError(f"bf16 was asked for, but {name} (compute capability {cap}) has no bf16 support "
                             "(it needs 8.0+, Ampere or newer). Use prefer='fp16' (or None to pick "
                             "automatically), or 'fp32'.")
        if dt == torch.float16 and dev.type == "cpu":
            import warnings

            warnings.warn("fp16 on CPU runs, but most CPU kernels are slow in fp16; bf16 or fp32 is faster.")
        return dt
    if dev.type == "cuda":
        return torch.bfloat16 if supports_bf16(dev) else torch.float16
    if dev.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


# ----------------------------------------------------------------------------------------------------------
# Mixed precision
# ----------------------------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, warmup: int = 1, repeats: int = 5, device: str | torch.device = "cpu") -> float:
    """Median wall time of ``fn()`` after ``warmup`` calls; CUDA is synchronised around each call."""
    import statistics
    import time

    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def output_cache(out):
    """The KV cache returned in a model output (``.cache`` in newer transformers, ``.past_key_values`` before)."""
    c = getattr(out, "cache", None) if "cache" in getattr(out, "keys", lambda: ())() else None
    return c if c is not None else out["past_key_values"]


def cache_kwarg(model) -> str:
    """The name of the KV-cache argument of ``model.forward``: ``cache`` (transformers >= 5.2x) or the older
    ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def decode_seconds_per_token(model, input_ids: torch.Tensor, new_tokens: int = 16, autocast=None,
                             repeats: int = 3) -> float:
    """Median seconds per decoded token of a hand-written greedy loop with a KV cache (prefill excluded).

    ``autocast`` (a dtype) runs the loop under ``torch.autocast``: weights stay in their dtype, matmuls run in
    the lower precision.
    """
    import contextlib

    dev = input_ids.device
    kw = cache_kwarg(model)
    ctx = (lambda: torch.autocast(dev.type, dtype=autocast)) if autocast is not None else contextlib.nullcontext

    def run():
        with ctx():
            out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
            cache, tok = output_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
            _sync(dev)
            import time
            t0 = time.perf_counter()
            for _ in range(new_tokens):
                out = model(input_ids=tok, use_cache=True, **{kw: cache})
                cache, tok = output_cache(out), out.logits[:, -1].argmax(-1, keepdim=True)
            _sync(dev)
            return (time.perf_counter() - t0) / new_tokens

    run()  # warm-up
    import statistics
    return statistics.median(run() for _ in range(repeats))


def precision_table(model, tokenizer, text: str, dtypes=("fp32", "bf16", "fp16"), autocast: str | None = "bf16",
                    prompt_len: int = 32, new_tokens: int = 16, max_tokens: int = 2048, repeats: int = 3):
    """Weights in fp32 / bf16 / fp16 and fp32 weights under autocast: memory, decode speed and perplexity.

    One run, side by side, on the model's device. Perplexity is measured on ``text`` (held-out) so a lower
    precision that changes the output shows by how much (Micikevicius et al. 2018, *Mixed Precision
    Training*, for the fp16 loss-of-range problem; bf16 keeps fp32's exponent). The decode speed is timed *in
    turn*: ``repeats`` rounds, each timing every variant once (:func:`decode_seconds_per_token`), so that a change
    in a shared machine's load hits all of them alike; ``ms_per_token`` is the median over rounds and
    ``df.attrs["rounds"]`` keeps each variant's tokens/s per round, for :func:`secbook.claims.compare`.
    """
    import copy
    import statistics

    import pandas as pd

    from .measure import perplexity

    if repeats < 1:
        raise ValueError(f"repeats (rounds in turn) must be >= 1, got {repeats}")
    dev = next(model.parameters()).device
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[:, :prompt_len].to(dev)
    variants = [(d, resolve_dtype(d), None) for d in dtypes]
    if autocast is not None:
        variants.append((f"fp32 + autocast {autocast}", torch.float32, resolve_dtype(autocast)))
    built, rows = {}, {}
    for label, dt, ac in variants:
        m = copy.deepcopy(model).to(dt).eval()
        if ac is None:
            ppl = perplexity(m, tokenizer, text, max_tokens=max_tokens)
        else:
            with torch.autocast(dev.type, dtype=ac):
                ppl = perplexity(m, tokenizer, text, max_tokens=max_tokens)
        decode_seconds_per_token(m, ids, new_tokens=new_tokens, autocast=ac, repeats=1)  # warm-up
        built[label] = (m, ac)
        rows[label] = {"variant": label, "weights_MB": sum(p.numel() * p.element_size() for p in m.parameters()) / 1e6,
                       "perplexity": ppl}
    rounds: dict[str, list[float]] = {label: [] for label in built}
    for _ in range(repeats):
        for label, (m, ac) in built.items():
            rounds[label].append(1 / decode_seconds_per_token(m, ids, new_tokens=new_tokens, autocast=ac, repeats=1))
    del built
    for label, tps in rounds.items():
        rows[label]["ms_per_token"] = 1e3 / statistics.median(tps)
        rows[label]["tokens_per_s"] = statistics.median(tps)
    df = pd.DataFrame(list(rows.values())).set_index("variant")
    df = df[["weights_MB", "ms_per_token", "tokens_per_s", "perplexity"]]
    df["perplexity_change_%"] = 100 * (df["perplexity"] / df["perplexity"].iloc[0] - 1)
    df["device"] = str(dev)
    df.attrs["rounds"] = rounds
    return df


@torch.no_grad()
def dtype_in_turn(model, input_ids: torch.Tensor, dtypes=("fp32", "bf16"), new_tokens: int = 16, rounds: int = 3):
    """The same model with its weights in each of ``dtypes``, decoded greedily by our static-cache loop
    (:class:`secbook.generate.FastGenerator`) from ``input_ids`` and timed *in turn* (``rounds`` rounds, each
    running every dtype once). One row per dtype: weight MB, median tokens/s (new tokens ÷ the whole call), the
    median per-round ratio to the first dtype, and the token agreement of its greedy tokens with the first
    dtype's (``identical``: all equal). ``df.attrs["rounds"]`` keeps tokens/s per round (for
    :func:`secbook.claims.compare`), ``df.attrs["tokens"]`` each dtype's new tokens (nested lists, one per row)."""
    import copy
    import statistics

    import pandas as pd

    from .generate import FastGenerator
    from .measure import tok_s_in_turn, token_agreement

    if rounds < 1 or new_tokens < 1 or not dtypes:
        raise ValueError("need rounds >= 1, new_tokens >= 1 and at least one dtype")
    names = {resolve_dtype(d): d for d in dtypes}
    if None in names or len(names) != len(dtypes):
        raise ValueError(f"dtypes must be distinct dtype names such as 'fp32', 'bf16', 'fp16'; got {dtypes}")
    T = input_ids.shape[1]
    gens, outs, mb = {}, {}, {}
    for dt, name in names.items():
        m = model if dt == next(model.parameters()).dtype else copy.deepcopy(model).to(dt)
        mb[name] = sum(p.numel() * p.element_size() for p in m.parameters()) / 1e6
        gens[name] = FastGenerator(m, max_len=T + new_tokens).generate
        outs[name] = gens[name](input_ids, new_tokens)[:, T:].cpu()  # also the warm-up
    speeds = tok_s_in_turn(gens, input_ids, new_tokens, rounds=rounds, warmup=0)
    first = dtypes[0]
    df = pd.DataFrame([{"dtype": d, "weights_MB": mb[d], "tokens_per_s": statistics.median(speeds[d]),
                        "vs_first": statistics.median(a / b for a, b in zip(speeds[d], speeds[first])),
                        "token_agreement": token_agreement(outs[d], outs[first]),
                        "identical": bool(torch.equal(outs[d], outs[first]))} for d in dtypes]).set_index("dtype")
    df.attrs["rounds"] = speeds
    df.attrs["tokens"] = {d: outs[d].tolist() for d in dtypes}  # lists, not tensors: pandas compares attrs
    return df


def float_formats():
    """Range and precision of fp32, bf16 and fp16 (``torch.finfo``): the numbers behind the overflow story."""
    import pandas as pd

    rows = []
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        f = torch.finfo(dt)
        rows.append({"dtype": name, "bits": f.bits, "exponent_bits": {32: 8, 16: 8 if dt == torch.bfloat16 else 5}[f.bits],
                     "mantissa_bits": {torch.float32: 23, torch.bfloat16: 7, torch.float16: 10}[dt],
                     "max": float(f.max), "smallest_normal": float(f.tiny), "eps": float(f.eps)})
    return pd.DataFrame(rows).set_index("dtype")


def fp16_overflow_demo(activation: float = 300.0, width: int = 8) -> dict[str, float]:
    """The mean of squares an RMSNorm computes, for activations of size ``activation``, in three dtypes.

    300² = 90 000 is above fp16's largest finite value (65 504): in fp16 the result is ``inf`` and the next
    layer gets NaN. bf16 has fp32's 8-bit exponent and only loses digits. This is why transformers' RMSNorm
    upcasts to fp32, and why fp16 inference of a model trained in bf16 can produce NaN.
    """
    x = torch.full((width,), activation)
    return {name: float((x.to(dt) * x.to(dt)).mean())
            for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16))}


# ----------------------------------------------------------------------------------------------------------
# Launch overhead and CUDA graphs
# ----------------------------------------------------------------------------------------------------------

@torch.no_grad()
def count_ops(model, input_ids: torch.Tensor) -> int:
    """How many ATen operators (≈ GPU kernel launches) one decode step of ``model`` dispatches.

    A prefill of ``input_ids`` fills the KV cache, then one next-token forward is run under a
    ``TorchDispatchMode`` that counts every operator. On a GPU each is a kernel launch of a few
    microseconds of CPU time, whatever the work inside it: the per-token floor that CUDA graphs remove.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    tok = out.logits[:, -1].argmax(-1, keepdim=True)
    with Count():
        model(input_ids=tok, use_cache=True, **{cache_kwarg(model): output_cache(out)})
    return Count.n


def launch_overhead_seconds(device: str | torch.device = "cpu", repeats: int = 2000) -> float:
    """Median seconds to dispatch one trivially small operator (add on a 1-element tensor) on ``device``:
    what every operator costs before it does any work. Asynchronous on CUDA (the launch, not the run)."""
    import time

    dev = pick_device(device)
    x = torch.zeros(1, device=dev)
    for _ in range(100):
        x = x + 1
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        x = x + 1
    elapsed = time.perf_counter() - t0
    _sync(dev)
    return elapsed / repeats


def read_bandwidth(device: str | torch.device = "cpu", mbytes: int = 256, repeats: int = 5) -> float:
    """Measured memory read bandwidth of ``device`` in bytes/s: the median time to sum an fp32 tensor of
    ``mbytes`` MB (too big for caches). The ceiling for reading weights during decode (chapter 4)."""
    dev = pick_device(device)
    x = torch.ones(mbytes * 2**20 // 4, device=dev)
    return x.nbytes / median_seconds(lambda: x.sum(), warmup=1, repeats=repeats, device=dev)


class StaticDecoder:
    """Greedy decoding with every tensor at a fixed address — so one decode step can be captured in a
    CUDA graph and replayed with a single launch.

    The forward is our decoder (:class:`secbook.decoder.Decoder`, any family it knows) over a pre-allocated
    KV cache (:class:`secbook.decoder.StaticCache`, ``max_len`` positions, masks cut from a pre-allocated
    causal table); token and position are written into fixed input tensors. ``step()`` is ordinary eager
    PyTorch (it runs on CPU too, and must give the same tokens as ``generate``); after ``capture()`` (CUDA
    only) it replays the graph instead. CUDA graphs: NVIDIA CUDA programming guide; the recipe is the one of
    PyTorch's ``torch.cuda.graphs`` documentation.
    """

    def __init__(self, model, batch: int = 1, max_len: int = 256):
        from .decoder import Decoder

        self.model, self.batch, self.max_len = model, batch, max_len
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.decoder = Decoder(model)
        self.cache = self.decoder.new_cache(batch, max_len)
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)
        self.length = 0
        self.graph = None
        self.logits = None

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Fill the cache with the prompt; return the logits of its last position."""
        b, n = input_ids.shape
        if b != self.batch or n >= self.max_len:
            raise ValueError(f"prompt must have batch {self.batch} and fewer than max_len={self.max_len} tokens")
        logits = self.decoder(input_ids, torch.arange(n, device=self.device), self.cache, last_only=True)
        self.length = n
        return logits[:, -1]

    def _forward(self) -> torch.Tensor:
        return self.decoder(self.token, self.position, self.cache)[:, -1]

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Feed one token per sequence; return next-token logits (eager, or a graph replay after capture)."""
        if self.length >= self.max_len:
            raise ValueError(f"the static cache is full ({self.max_len} tokens)")
        self.token.copy_(token.view(self.batch, 1))
        self.position.fill_(self.length)
        if self.graph is None:
            logits = self._forward()
        else:
            self.graph.replay()
            logits = self.logits
        self.length += 1
        return logits

    @torch.no_grad()
    def capture(self, warmup: int = 3) -> None:
        """Record one decode step as a CUDA graph (after ``prefill``). CUDA only. The warm-up steps write the
        current token's keys at the next position, which the first real step overwrites."""
        if self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device; this model is on " + str(self.device))
        self.position.fill_(self.length)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm up on a side stream, as the PyTorch recipe asks
            for _ in range(warmup):
                self._forward()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._forward()
        torch.cuda.synchronize()

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
        """Greedy ``new_tokens`` after the prompt; returns prompt + new tokens."""
        tok = self.prefill(input_ids).argmax(-1)
        out = [tok]
        for _ in range(new_tokens - 1):
            tok = self.step(tok).argmax(-1)
            out.append(tok)
        return torch.cat([input_ids, torch.stack(out, 1)], 1)


@torch.no_grad()
def cuda_graph_benchmark(model, input_ids: torch.Tensor, new_tokens: int = 32, compile: bool = True):
    """Seconds per decode step on CUDA: HF dynamic cache (eager), static cache (eager), the same step replayed
    as a hand-captured CUDA graph, and ``torch.compile(mode="reduce-overhead")`` (which captures graphs
    itself). Also checks that the graph gives the same greedy tokens as eager. Raises on a CPU-only machine.
    """
    import pandas as pd

    dev = next(model.parameters()).device
    if dev.type != "cuda":
        raise ValueError("cuda_graph_benchmark needs the model on a CUDA GPU (CUDA graphs are CUDA-only)")
    max_len = input_ids.shape[1] + new_tokens + 8
    rows = [{"variant": "HF dynamic cache, eager",
             "ms_per_token": 1e3 * decode_seconds_per_token(model, input_ids, new_tokens=new_tokens)}]

    def static_run(dec):
        dec.prefill(input_ids)
        return median_seconds(lambda: dec.step(dec.token), warmup=2, repeats=new_tokens, device=dev)

    eager = StaticDecoder(model, input_ids.shape[0], max_len + 3 * new_tokens)
    ref = eager.generate(input_ids, new_tokens)
    rows.append({"variant": "static cache, eager", "ms_per_token": 1e3 * static_run(
        StaticDecoder(model, input_ids.shape[0], max_len + 3 * new_tokens))})
    g = StaticDecoder(model, input_ids.shape[0], max_len + 3 * new_tokens)
    g.prefill(input_ids)
    g.capture()
    rows.append({"variant": "static cache, CUDA graph (manual)",
                 "ms_per_token": 1e3 * median_seconds(lambda: g.step(g.token), warmup=2, repeats=new_tokens,
                                                      device=dev)})

    def agreement(dec) -> float:  # greedy tokens from dec's cache, fed eager's own tokens, vs eager's
        tok = ref[:, input_ids.shape[1]]
        same = [tok]
        for _ in range(new_tokens - 1):
            tok = dec.step(tok).argmax(-1)
            same.append(tok)
        return float((torch.stack(same, 1) == ref[:, input_ids.shape[1]:]).float().mean())

    g2 = StaticDecoder(model, input_ids.shape[0], max_len)
    g2.prefill(input_ids)
    g2.capture()
    rows[-1]["token_agreement_vs_eager"] = agreement(g2)
    if compile:
        c = StaticDecoder(model, input_ids.shape[0], max_len + 3 * new_tokens)
        c._forward = torch.compile(c._forward, mode="reduce-overhead", fullgraph=False)
        c.prefill(input_ids)
        agree = agreement(c)  # also the compile warm-up; the timed steps continue from there
        rows.append({"variant": 'torch.compile(mode="reduce-overhead")',
                     "ms_per_token": 1e3 * median_seconds(lambda: c.step(c.token), warmup=3, repeats=new_tokens,
                                                          device=dev), "token_agreement_vs_eager": agree})
    df = pd.DataFrame(rows).set_index("variant")
    df["tokens_per_s"] = 1e3 / df["ms_per_token"]
    df["ops_per_step"] = count_ops(model, input_ids)
    df["gpu"] = torch.cuda.get_device_name(dev)
    return df


def recorded_gpu_results(kind: str):
    """GPU results recorded by ``bench-hardware`` for this chapter (``data/results/hardware_<kind>_cuda.csv`` or
    ``_nccl.csv``), labelled by the GPU they came from (a printed line, and ``df.attrs["where"]``: GPU, date, torch);
    prints a line and returns ``None`` if none exist."""
    import pandas as pd

    from .paths import result_files

    files = [f for f in result_files(f"hardware_{kind}_*.csv") if f.stem.endswith(("_cuda", "_nccl"))]
    if not files:
        print(f"No GPU run of '{kind}' has been recorded yet (run `python -m secbook bench-hardware` on a GPU "
              "machine to record one into data/results/).")
        return None
    from .measure import MACHINE_COLUMNS

    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    where = ", ".join(f"{g} ({t})" for g, t in df[["gpu", "timestamp"]].drop_duplicates().itertuples(index=False)) \
        if {"gpu", "timestamp"} <= set(df.columns) else "unknown GPU"
    if "torch" in df.columns:
        where += f", torch {', '.join(map(str, df['torch'].unique()))}"
    print(f"Recorded on {where}:")
    # the line above names the machine: the table keeps the measurements (and the GPU, one column)
    drop = [c for c in (*MACHINE_COLUMNS, "load_avg_1m", "timestamp", "device") if c in df.columns and c != "gpu"]
    df = df.drop(columns=drop)
    df.attrs["where"] = where  # the label, for sentences printed about these rows
    return df


def gpu_only(what: str, kind: str | None = None) -> bool:
    """For a GPU-only cell: ``True`` if a CUDA GPU is here; otherwise print one line saying what the cell
    would do, show the recorded GPU results of ``kind`` (if any) and return ``False``."""
    if torch.cuda.is_available():
        return True
    print(f"No CUDA GPU on this machine: on a GPU this cell would {what}.")
    if kind is not None:
        df = recorded_gpu_results(kind)
        if df is not None:
            from IPython.display import display

            display(df)
    return False
