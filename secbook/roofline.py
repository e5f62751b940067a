"""The latency model T = f(M, D, P) made concrete: the roofline for LLM inference.

The source book writes latency as a function of model complexity M (FLOPs), data transfer D (bytes moved)
and compute performance P. The roofline model (Williams, Waterman and Patterson, 2009) says which term
wins: a kernel that does F FLOPs while moving B bytes takes at least ``max(F / peak_flops, B / bandwidth)``;
its arithmetic intensity F/B against the machine's ridge point ``peak_flops / bandwidth`` tells which bound
applies. For a decoder LLM (Kaplan et al. 2020: a forward pass costs ≈ 2 FLOPs per parameter per token;
Pope et al. 2022 for the inference analysis) the prefill processes the whole prompt at once and is
compute-bound, while each decode step reads every weight (and the KV cache) to produce one token per
sequence: at batch 1 its intensity is ≈ 2 FLOPs / bytes-per-weight, far below any ridge point, so decode
is memory-bound. Model bandwidth utilisation (MBU, from Databricks' inference engineering guide) is the
achieved fraction of peak bandwidth.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch

GB = 1e9
TFLOP = 1e12

# Bytes per weight of common formats. int4 is the ideal 0.5; group-wise scales add a few percent in practice
# (an fp16 scale per 64 weights = +0.03 B/weight), which secbook.measure.model_bytes counts for real models.
BYTES_PER_WEIGHT = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}


@dataclass(frozen=True)
class Hardware:
    """Peak numbers of one accelerator (vendor datasheet) or of this machine (measured).

    ``bandwidth`` is memory bandwidth in bytes/s; ``fp16_flops`` the dense fp16/bf16 tensor throughput in
    FLOP/s (no sparsity); ``int8_ops`` dense int8 tensor ops/s where the datasheet gives it; ``fp32_flops``
    plain fp32 (non-tensor-core) FLOP/s; ``memory`` in bytes; ``cite`` the BibTeX key of the source.
    """
    name: str
    bandwidth: float
    fp16_flops: float
    memory: float
    has_bf16: bool
    cite: str
    fp32_flops: float | None = None
    int8_ops: float | None = None
    kind: str = "gpu"

    def format_path(self, bytes_per_weight: float = 2.0) -> tuple[str, float]:
        """The arithmetic a weight format runs on, and its peak: fp32 math for 4-byte weights, the int8 tensor
        path for int8 (where it exists), fp16/bf16 math otherwise (weight-only int4 is widened to 16 bits) —
        unless the fp32 units are faster. A kernel can always widen narrow weights to fp32 and multiply there
        (llama.cpp's CPU kernels do), so the fp32 rate is a floor: a CPU with no bf16 units, whose bf16
        matmul is a slow emulation, must not make int4 look slower than fp32."""
        if bytes_per_weight >= 4 and self.fp32_flops:
            return "fp32", self.fp32_flops
        name, fast = ("int8", self.int8_ops) if bytes_per_weight == 1 and self.int8_ops else ("fp16/bf16", self.fp16_flops)
        if self.fp32_flops and self.fp32_flops > fast:
            return "fp32 (widened: faster than this device's " + name + " path)", self.fp32_flops
        return name, fast

    def peak_flops(self, bytes_per_weight: float = 2.0) -> float:
        """Compute peak for a weight format (see :meth:`format_path`)."""
        return self.format_path(bytes_per_weight)[1]

    def ridge(self, bytes_per_weight: float = 2.0) -> float:
        """Ridge point (FLOP/byte): kernels with lower arithmetic intensity are memory-bound."""
        return self.peak_flops(bytes_per_weight) / self.bandwidth

    def as_dict(self) -> dict:
        return asdict(self)


def _gpu(name, bw_gbs, fp16_tflops, mem_gb, bf16, cite, fp32_tflops, int8_tops=None) -> Hardware:
    return Hardware(name, bw_gbs * GB, fp16_tflops * TFLOP, mem_gb * GB, bf16, cite, fp32_tflops * TFLOP,
                    None if int8_tops is None else int8_tops * TFLOP)


# Dense (no structured sparsity) tensor-core numbers from the vendor datasheets / whitepaper.
# RTX 3090: fp16 tensor with fp32 accumulate (the GeForce rate; fp16 accumulate is 2x).
GPUS: dict[str, Hardware] = {h.name: h for h in [
    _gpu("T4", 320, 65, 16, False, "nvidia_t4", 8.1, 130),
    _gpu("L4", 300, 121, 24, True, "nvidia_l4", 30.3, 242),
    _gpu("RTX 3090", 936, 71, 24, True, "nvidia_ga102", 35.6, 284),
    _gpu("A100 40GB", 1555, 312, 40, True, "nvidia_a100", 19.5, 624),
    _gpu("A100 80GB SXM", 2039, 312, 80, True, "nvidia_a100", 19.5, 624),
    _gpu("H100 SXM", 3350, 989, 80, True, "nvidia_h100", 67, 1979),
    _gpu("H200", 4800, 989, 141, True, "nvidia_h200", 67, 1979),
]}


def hardware_table():
    """The GPU table as a DataFrame (GB/s, TFLOPS, GB) with ridge points, for display."""
    import pandas as pd

    rows = []
    for h in GPUS.values():
        rows.append({"gpu": h.name, "bandwidth_GB/s": h.bandwidth / GB, "fp16/bf16_TFLOPS": h.fp16_flops / TFLOP,
                     "int8_TOPS": None if h.int8_ops is None else h.int8_ops / TFLOP,
                     "fp32_TFLOPS": h.fp32_flops / TFLOP, "memory_GB": h.memory / GB, "bf16": h.has_bf16,
                     "ridge_FLOP/B": round(h.ridge(2.0)), "source": h.cite})
    return pd.DataFrame(rows)


def get_hardware(name: str | Hardware) -> Hardware:
    """A GPU from :data:`GPUS` by name (case-insensitive), or ``"cpu"`` for this machine (measured)."""
    if isinstance(name, Hardware):
        return name
    if str(name).lower() in ("cpu", "this cpu", "this machine"):
        return measure_machine()
    for k, h in GPUS.items():
        if k.lower() == str(name).lower():
            return h
    raise ValueError(f"unknown hardware {name!r}; choose one of {list(GPUS)} or 'cpu'")


# --------------------------------------------------------------------------------------------- this machine
def _median_time(fn, repeats: int, budget_s: float = 3.0) -> float:
    """Median of up to ``repeats`` timed calls after one warm-up; stops early once ``budget_s`` is spent (a
    slow path, such as an emulated bf16 matmul, is timed a few times, not for minutes)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if sum(times) > budget_s:
            break
    return statistics.median(times)


_MACHINE_CACHE: dict[tuple, Hardware] = {}


def measure_machine(read_mib: int = 256, matmul_n: int = 1024, repeats: int = 5, refresh: bool = False,
                    device: str | None = None) -> Hardware:
    """Measure this machine's achievable read bandwidth and matmul FLOP/s (medians of ``repeats``).

    Bandwidth: summing a ``read_mib`` MiB fp32 tensor (every byte read once, little compute).
    FLOP/s: an ``n×n @ n×n`` matmul (2n³ FLOPs) in fp32 and bf16 — the bf16 figure is whatever PyTorch's
    bf16 matmul reaches, fast on a CPU with bf16 units, a slow emulation on one without
    (:meth:`Hardware.format_path` then falls back to the fp32 rate). Takes a few seconds; cached per
    process (``refresh=True`` measures again). ``device``: ``"cpu"``, ``"cuda"`` or ``None`` (the GPU when
    CUDA is present). Returned as a :class:`Hardware` named "this CPU" or "this GPU (<name>)".
    """
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA GPU is available; use device='cpu'")
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = (read_mib, matmul_n, repeats, dev)
    if key in _MACHINE_CACHE and not refresh:
        return _MACHINE_CACHE[key]
    from .measure import _sync, machine_info

    x = torch.ones(read_mib * 2**20 // 4, dtype=torch.float32, device=dev)

    def read():
        x.sum().item()

    bw = x.numel() * 4 / _median_time(read, repeats)
    del x
    flops = {}
    for dt in (torch.float32, torch.bfloat16):
        a = torch.randn(matmul_n, matmul_n, device=dev).to(dt)
        b = torch.randn(matmul_n, matmul_n, device=dev).to(dt)

        def mm():
            a @ b
            _sync()

        flops[dt] = 2 * matmul_n ** 3 / _median_time(mm, repeats)
    info = machine_info()
    name = "this CPU" if dev == "cpu" else f"this GPU ({info['gpu']})"
    hw = Hardware(name=name, bandwidth=bw, fp16_flops=flops[torch.bfloat16], memory=info["ram_gb"] * 2**30,
                  has_bf16=True, cite="measured", fp32_flops=flops[torch.float32], kind=dev)
    _MACHINE_CACHE[key] = hw
    return hw


# --------------------------------------------------------------------------------------------- model shape
@dataclass(frozen=True)
class ModelShape:
    """What the latency model needs from a decoder LM.

    ``matmul_params``: weights used in matrix products for every token (all layers + the LM head; an
    untied input embedding is a table lookup, so it is excluded); ``params``: all parameters;
    ``kv_per_token``: K and V elements stored per token (2 · layers · kv_heads · head_dim);
    ``attn_dim``: layers · heads · head_dim (for the attention-score FLOPs).
    """
    params: int
    matmul_params: int
    kv_per_token: int
    attn_dim: int
    layers: int
    name: str = ""


def shape_from_config(config, name: str = "") -> ModelShape:
    """The shape of a config without building the model: parameters as :func:`secbook.memory.parameter_count`
    counts them (exactly, for any architecture transformers knows), everything but the final norm and an untied
    input embedding read as a matrix each token, KV elements per token from the attention heads."""
    from .memory import parameter_count

    c = config
    h, L, v = c.hidden_size, c.num_hidden_layers, c.vocab_size
    heads = c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    hd = getattr(c, "head_dim", None) or h // heads
    tied = bool(getattr(c, "tie_word_embeddings", False))
    params = parameter_count(c)
    matmul = params - h - (0 if tied else v * h)  # the LM head reads the (tied or own) v×h matrix
    return ModelShape(params=params, matmul_params=matmul, kv_per_token=2 * L * kv * hd,
                      attn_dim=L * heads * hd, layers=L, name=name or getattr(c, "name_or_path", "") or "")


def shape_from_model(model) -> ModelShape:
    """The shape of a built model: parameters counted from the model itself, KV from its config."""
    s = shape_from_config(model.config)
    if any(hasattr(m, "_packed_params") or hasattr(m, "storage_bytes") for m in model.modules()):
        return s  # quantized layers hide their weights from parameters(): count from the config
    params = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is emb
    matmul = params - (0 if tied else emb.numel())
    return replace(s, params=params, matmul_params=matmul, name=getattr(model.config, "name_or_path", ""))


def shape_for_params(params: float) -> ModelShape:
    """A Llama-3.2-1B-like shape scaled to ``params`` parameters (for what-if questions).

    KV elements per token and attention width are scaled in proportion to the parameter count (an
    approximation: real models of one size differ by 4x or more in KV size, depending on grouped-query
    attention).
    """
    from .models import replica_config

    ref = shape_from_config(replica_config("llama-3.2-1b"), name="llama-3.2-1b")
    k = params / ref.params
    return ModelShape(params=int(params), matmul_params=int(ref.matmul_params * k),
                      kv_per_token=max(1, int(ref.kv_per_token * k)), attn_dim=max(1, int(ref.attn_dim * k)),
                      layers=ref.layers, name=f"{params / 1e9:g}B (Llama-3.2-1B-like)")


def to_shape(config_or_model) -> ModelShape:
    """Accept a ModelShape, a number of parameters, a transformers config, a model, or a replica name."""
    if isinstance(config_or_model, ModelShape):
        return config_or_model
    if isinstance(config_or_model, (int, float)):
        if config_or_model <= 0:
            raise ValueError(f"number of parameters must be positive, got {config_or_model}")
        return shape_for_params(config_or_model)
    if isinstance(config_or_model, str):
        from .models import REPLICAS, replica_config

        name = config_or_model.split(":", 1)[-1]
        if name not in REPLICAS:
            raise ValueError(f"unknown model shape {config_or_model!r}; use a replica name {list(REPLICAS)}, "
                             "a config, a model or a parameter count")
        return shape_from_config(replica_config(name), name=name)
    if isinstance(config_or_model, torch.nn.Module):
        return shape_from_model(config_or_model)
    if hasattr(config_or_model, "hidden_size"):
        return shape_from_config(config_or_model)
    raise TypeError(f"cannot get a model shape from {type(config_or_model).__name__}")


# --------------------------------------------------------------------------------------------- predict
@dataclass
class Prediction:
    """Roofline prediction for one generation. Times in seconds, FLOPs, bytes; intensities in FLOP/byte."""
    hardware: str
    model: str
    batch: int
    prompt_len: int
    new_tokens: int
    bytes_per_weight: float
    weight_bytes: float
    prefill_flops: float
    prefill_bytes: float
    prefill_compute_s: float
    prefill_memory_s: float
    ttft_s: float
    prefill_intensity: float
    prefill_bound: str
    decode_flops: float
    decode_bytes: float
    decode_compute_s: float
    decode_memory_s: float
    tpot_s: float
    decode_intensity: float
    decode_bound: str
    ridge: float
    tokens_per_s: float
    latency_s: float
    fits_in_memory: bool

    def as_dict(self) -> dict:
        return asdict(self)


def predict(config_or_model, hardware: str | Hardware, batch: int = 1, prompt_len: int = 128,
            new_tokens: int = 128, bytes_per_weight: float | str = 2.0, kv_bytes: float | None = None) -> Prediction:
    """Roofline latency of generating ``new_tokens`` after a ``prompt_len`` prompt, ``batch`` sequences.

    Prefill: FLOPs = 2·N·B·P + causal attention 2·attn_dim·B·P²; bytes = weights + KV written.
    Decode (per step, at the mean context P + T/2): FLOPs = 2·N·B + 4·attn_dim·B·ctx; bytes = weights +
    KV read (B·ctx·kv_per_token·kv_bytes). Each phase takes max(FLOPs/peak, bytes/bandwidth) — an ideal
    lower bound with no overhead. ``kv_bytes`` defaults to 4 for fp32 weights, else 2 (an fp16 cache).
    """
    if isinstance(bytes_per_weight, str):
        if bytes_per_weight not in BYTES_PER_WEIGHT:
            raise ValueError(f"unknown weight format {bytes_per_weight!r}; use one of {list(BYTES_PER_WEIGHT)} "
                             "or a number of bytes per weight")
        bytes_per_weight = BYTES_PER_WEIGHT[bytes_per_weight]
    if not 0 < bytes_per_weight <= 8:
        raise ValueError(f"bytes_per_weight must be in (0, 8], got {bytes_per_weight}")
    for k, v in (("batch", batch), ("prompt_len", prompt_len), ("new_tokens", new_tokens)):
        if int(v) != v or v < 1:
            raise ValueError(f"{k} must be a positive integer, got {v}")
    hw = get_hardware(hardware)
    s = to_shape(config_or_model)
    kvb = kv_bytes if kv_bytes is not None else (4.0 if bytes_per_weight >= 4 else 2.0)
    peak = hw.peak_flops(bytes_per_weight)
    W = s.matmul_params * bytes_per_weight
    B, P, T = batch, prompt_len, new_tokens
    # prefill
    pf = 2 * s.matmul_params * B * P + 2 * s.attn_dim * B * P * P
    pb = W + B * P * s.kv_per_token * kvb
    pc, pm = pf / peak, pb / hw.bandwidth
    # decode, one step at the mean context length
    ctx = P + T / 2
    df = 2 * s.matmul_params * B + 4 * s.attn_dim * B * ctx
    db = W + B * ctx * s.kv_per_token * kvb
    dc, dm = df / peak, db / hw.bandwidth
    ttft, tpot = max(pc, pm), max(dc, dm)
    total = W + B * (P + T) * s.kv_per_token * kvb
    return Prediction(
        hardware=hw.name, model=s.name, batch=B, prompt_len=P, new_tokens=T, bytes_per_weight=bytes_per_weight,
        weight_bytes=W, prefill_flops=pf, prefill_bytes=pb, prefill_compute_s=pc, prefill_memory_s=pm, ttft_s=ttft,
        prefill_intensity=pf / pb, prefill_bound="compute" if pc >= pm else "memory",
        decode_flops=df, decode_bytes=db, decode_compute_s=dc, decode_memory_s=dm, tpot_s=tpot,
        decode_intensity=df / db, decode_bound="compute" if dc >= dm else "memory", ridge=peak / hw.bandwidth,
        tokens_per_s=B / tpot, latency_s=ttft + (T - 1) * tpot, fits_in_memory=total <= hw.memory)


def mbu(tpot_s, model_or_bytes, hardware: str | Hardware | float, batch: int = 1, context: int = 0,
        kv_bytes: float = 2.0) -> float:
    """Model bandwidth utilisation of a measured decode: (bytes read per step / TPOT) / peak bandwidth.

    ``tpot_s`` is seconds per step (or a :class:`secbook.measure.Timing`); ``model_or_bytes`` a model (the
    weight bytes a decode step reads, ``measure.decode_read_bytes``, plus its KV cache at ``context`` tokens)
    or a byte count;
    ``hardware`` a :class:`Hardware`, a name, or a bandwidth in bytes/s.
    """
    from .measure import decode_read_bytes

    tpot = getattr(tpot_s, "tpot_s", tpot_s)
    if isinstance(model_or_bytes, torch.nn.Module):
        b = decode_read_bytes(model_or_bytes)
        if context:
            b += batch * context * to_shape(model_or_bytes).kv_per_token * kv_bytes
    else:
        b = float(model_or_bytes)
    bw = float(hardware) if isinstance(hardware, (int, float)) else get_hardware(hardware).bandwidth
    if tpot <= 0 or bw <= 0:
        raise ValueError("tpot and bandwidth must be positive")
    return b / tpot / bw


# --------------------------------------------------------------------------------------------- calibration
def width_specs(hidden_sizes=(256, 1024, 2048), layers: int = 4, base: str = "replica:smollm2-135m") -> list:
    """Calibration specs ``(label, name, overrides)``: the same depth, growing width (64-wide heads,
    grouped-query attention with 4 query heads per KV head, MLP ≈ 8/3 × hidden). Equal depth means an equal
    number of kernels per token, so the per-token overhead stays put while the bytes grow."""
    specs = []
    for h in hidden_sizes:
        heads = max(1, h // 64)
        specs.append((f"{layers} layers, hidden {h}", base, dict(
            num_hidden_layers=layers, hidden_size=h, intermediate_size=max(64, round(h * 8 / 3 / 64) * 64),
            num_attention_heads=heads, num_key_value_heads=max(1, heads // 4))))
    return specs


DEFAULT_CALIBRATION = [("tiny (6 layers, hidden 256)", "tiny", {})] + width_specs()


def calibrate(specs=DEFAULT_CALIBRATION, hardware: Hardware | None = None, prompt_len: int = 16,
              new_tokens: int = 8, repeats: int = 3, dtype=None, progress: bool = True):
    """Predicted vs measured decode time per token on this machine for models of growing size.

    ``specs`` are ``(name, config_overrides)`` or ``(label, name, config_overrides)`` tuples, loaded one at
    a time with ``secbook.load`` (see :func:`width_specs`). For each,
    TPOT is measured on the CPU with :func:`secbook.measure.time_generation` and predicted as the memory
    bound: the bytes a decode step reads (``measure.decode_read_bytes`` plus the KV cache at the mean context)
    over the read bandwidth measured right before. Returns a DataFrame with the ratio measured/predicted and
    MBU (:func:`mbu`, the book's one definition); a ratio ≫ 1 means per-token overhead (Python, kernel
    launches), not bandwidth, sets the speed.
    """
    import gc

    from tqdm.auto import tqdm

    from . import models
    from .measure import decode_read_bytes, model_bytes, results_frame, time_generation

    rows = []
    for spec in tqdm(list(specs), disable=not progress, desc="calibrate"):
        label, name, over = spec if len(spec) == 3 else (None, *spec)
        model, tok = models.load(name, dtype=dtype, **over)
        # without a given hardware, measure the bandwidth right next to each timing: on a shared machine
        # the achievable bandwidth drifts, and the ratio should compare like with like
        hw = hardware or measure_machine(repeats=3, refresh=True, device="cpu")
        s = to_shape(model)
        nbytes = model_bytes(model)
        t = time_generation(model, tok, prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats)
        kvb = next(model.parameters()).element_size()
        ctx = prompt_len + new_tokens / 2
        step_bytes = decode_read_bytes(model) + ctx * s.kv_per_token * kvb
        pred = step_bytes / hw.bandwidth
        label = label or name + "".join(f" {k.replace('num_hidden_layers', 'L')}={v}" for k, v in over.items())
        rows.append({"model": label, "params": s.params, "layers": s.layers, "model_bytes": nbytes,
                     "step_bytes": step_bytes, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                     "measured_tpot_s": t.tpot_s, "predicted_tpot_s": pred, "ratio": t.tpot_s / pred,
                     "mbu": mbu(t.tpot_s, step_bytes, hw.bandwidth), "bandwidth_GB/s": hw.bandwidth / GB,
                     "ttft_s": t.ttft_s, "prompt_len": prompt_len, "new_tokens": new_tokens, "repeats": repeats})
        del model
        gc.collect()
    return results_frame(rows)


def predicted_vs_measured(model, tokenizer, hardware: Hardware, prompt_len: int = 64, new_tokens: int = 16,
                          repeats: int = 3, bytes_per_weight: float | str | None = None, name: str = ""):
    """One model's latency, predicted by :func:`predict` and measured by :func:`secbook.measure.time_generation`
    on the device ``hardware`` describes (measure it with :func:`measure_machine` on the same device).

    Returns a DataFrame with one row per phase — prefill (TTFT) and decode (TPOT) — giving the prediction, its
    bound (compute or memory), the measurement and their ratio, plus the decode's MBU (:func:`mbu`: the bytes a
    step reads over the measured TPOT over the measured bandwidth). ``bytes_per_weight`` defaults to the
    model's own element size (4 for fp32). A prediction is a lower bound: a ratio near 1 means the hardware
    limit sets the speed; a large one, overheads the model leaves out (Python, kernel launches, the sampling).
    """
    import pandas as pd

    from .measure import time_generation

    if bytes_per_weight is None:
        bytes_per_weight = float(next(model.parameters()).element_size())
    t = time_generation(model, tokenizer, prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats)
    s = to_shape(model)
    p = predict(s, hardware, prompt_len=prompt_len, new_tokens=new_tokens, bytes_per_weight=bytes_per_weight,
                kv_bytes=float(next(model.parameters()).element_size()))
    m = mbu(t.tpot_s, model, hardware, context=int(prompt_len + new_tokens / 2),
            kv_bytes=float(next(model.parameters()).element_size()))
    from pathlib import Path

    label = name or Path(str(getattr(model.config, "name_or_path", "") or "model")).name
    rows = [{"model": label, "phase": "prefill (TTFT)", "tokens": prompt_len, "bound": p.prefill_bound,
             "predicted_ms": 1e3 * p.ttft_s, "measured_ms": 1e3 * t.ttft_s, "ratio": t.ttft_s / p.ttft_s,
             "mbu": float("nan")},
            {"model": label, "phase": "decode (TPOT)", "tokens": new_tokens, "bound": p.decode_bound,
             "predicted_ms": 1e3 * p.tpot_s, "measured_ms": 1e3 * t.tpot_s, "ratio": t.tpot_s / p.tpot_s, "mbu": m}]
    return pd.DataFrame(rows)


def describe_calibration(df, overhead_ratio: float = 3.0) -> str:
    """Plain-language reading of a :func:`calibrate` frame, generated from the numbers themselves."""
    import math

    lines = []
    for _, r in df.iterrows():
        if r["ratio"] > overhead_ratio:
            kind = "overhead-bound"
        elif r["ratio"] >= 0.8:
            kind = "within a small factor of its memory bound"
        else:
            kind = "faster than its memory bound: weights served from caches, or a disturbed bandwidth measurement"
        lines.append(f"{r['model']}: {r['model_bytes'] / 1e6:.0f} MB, {r['measured_tpot_s'] * 1e3:.1f} ms/token "
                     f"= {r['ratio']:.1f}x its memory bound ({kind})")
    ov, bw = fit_overhead(df) if len(df) >= 2 else (0.0, float("inf"))
    if math.isfinite(bw) and ov > 0:
        lines.append(f"straight-line fit: {ov * 1e3:.1f} ms of fixed overhead per token + bytes / {bw / GB:.1f} GB/s "
                     f"-> reading the weights dominates above about {ov * bw / 1e6:.0f} MB")
    else:
        lines.append("the timings of this run are too noisy for a straight-line fit (was the machine busy?)")
    return "\n".join(lines)


def fit_overhead(df) -> tuple[float, float]:
    """Fit measured TPOT ≈ overhead + bytes / bandwidth_eff by least squares over a calibration frame.

    Returns ``(overhead_s, effective_bandwidth)``; the crossover model size where weight reading starts
    to dominate is ``overhead_s * effective_bandwidth`` bytes.
    """
    import numpy as np

    x = df["model_bytes"].to_numpy(float)
    y = df["measured_tpot_s"].to_numpy(float)
    if len(x) < 2:
        raise ValueError("need at least two models to fit overhead and bandwidth")
    slope, intercept = np.polyfit(x, y, 1)
    return max(float(intercept), 0.0), (1 / slope if slope > 0 else float("inf"))


# --------------------------------------------------------------------------------------------- plots
def plot_roofline(hardware: Hardware, points: dict[str, tuple[float, float]] | None = None,
                  bytes_per_weight: float = 2.0, ax=None):
    """Log-log roofline: attainable FLOP/s = min(peak, intensity × bandwidth). ``points`` maps a label to
    ``(arithmetic intensity, achieved FLOP/s)``; use :func:`prediction_points` for a prediction."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    peak = hardware.peak_flops(bytes_per_weight)
    ridge = peak / hardware.bandwidth
    x = np.logspace(-1, 5, 200)
    ax.loglog(x, np.minimum(peak, x * hardware.bandwidth), color="black", lw=2, label=hardware.name)
    ax.axvline(ridge, color="gray", ls=":", lw=1)
    ax.annotate(f"ridge {ridge:.0f} FLOP/B", (ridge, peak), textcoords="offset points", xytext=(4, -14),
                fontsize=8, color="gray")
    for label, (ai, f) in (points or {}).items():
        ax.loglog([ai], [f], "o", ms=8, label=label)
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("FLOP/s")
    ax.set_title(f"Roofline: {hardware.name}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    return ax


def prediction_points(p: Prediction) -> dict[str, tuple[float, float]]:
    """The prefill and decode phases of a prediction as roofline points (intensity, achieved FLOP/s)."""
    return {f"prefill ({p.prefill_bound}-bound)": (p.prefill_intensity, p.prefill_flops / p.ttft_s),
            f"decode ({p.decode_bound}-bound)": (p.decode_intensity, p.decode_flops / p.tpot_s)}


def plot_calibration(df, ax=None):
    """Measured vs predicted (memory-bound) TPOT against model bytes, with the fitted overhead line."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    x = df["model_bytes"].to_numpy(float)
    ax.loglog(x, df["measured_tpot_s"] * 1e3, "o", label="measured TPOT")
    ax.loglog(x, df["predicted_tpot_s"] * 1e3, "s--", label="predicted: bytes / read bandwidth")
    if len(df) >= 2:
        ov, bw = fit_overhead(df)
        xs = np.logspace(np.log10(x.min() / 2), np.log10(x.max() * 4), 50)
        ax.loglog(xs, (ov + xs / bw) * 1e3, ":", color="gray", label=f"fit: {ov * 1e3:.1f} ms + bytes / {bw / GB:.0f} GB/s")
        if np.isfinite(bw) and ov > 0:
            ax.axvline(ov * bw, color="red", lw=1, alpha=0.5, label=f"crossover ≈ {ov * bw / 1e6:.0f} MB")
    for xi, yi, m in zip(x, df["measured_tpot_s"] * 1e3, df["model"]):
        ax.annotate(m, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("bytes read per decode step (model bytes)")
    ax.set_ylabel("time per output token (ms)")
    ax.set_title("Decode: predicted vs measured")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    return ax
