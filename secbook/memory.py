"""Will it fit? Memory planning for inference, and what to do when it does not: device maps and offload.

Inference memory is, to first order, weights (parameters × bytes per parameter) + the KV cache
(2 × layers × KV heads × head size × context × batch × bytes) + activations of the widest step + the
runtime's own overhead. When the sum exceeds one device, Hugging Face accelerate (the ``device_map`` of
``from_pretrained``, Big Model Inference) places whole decoder layers on GPUs, the CPU and finally disk,
and streams offloaded layers in one at a time as the forward pass reaches them — correct, but every token
then pays for moving those bytes. Sources: the accelerate "Big Model Inference" guide; Pope et al. 2022,
*Efficiently Scaling Transformer Inference* (the KV-cache arithmetic).
"""
from __future__ import annotations

import copy
import functools
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch

from .hardware import median_seconds

GIB = 2**30

# Memory of common inference GPUs, GiB as on the vendor datasheets (torch reports slightly less usable memory).
GPUS: dict[str, float] = {
    "T4": 16, "L4": 24, "RTX 3090": 24, "RTX 4090": 24, "A10G": 24, "A100 40GB": 40, "A100 80GB": 80,
    "H100 80GB": 80, "H200": 141,
}
# A CUDA context plus cuBLAS/cuDNN workspaces typically takes a few hundred MB before any tensor: an assumption
# of the estimate (measure yours with torch.cuda.mem_get_info right after start-up).
CUDA_RUNTIME_BYTES = int(0.5 * GIB)

BYTES_PER_PARAM = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1, "int4": 0.5}

# Shapes from each model's public config.json (Hugging Face hub). Enough fields for the estimate only.
CONFIGS: dict[str, dict] = {
    "SmolLM2-135M": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "Qwen2.5-0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, attention_bias=True),
    "Llama-3.2-1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "Mistral-7B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False),
    "Llama-3.1-8B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    "Llama-3.1-70B": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                          num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}


def _config(model_or_config):
    """A config-like object from a model, a transformers config, a dict, or a name in ``CONFIGS``."""
    if isinstance(model_or_config, str):
        if model_or_config not in CONFIGS:
            raise ValueError(f"unknown model {model_or_config!r}; known: {', '.join(CONFIGS)} (or pass a config)")
        return SimpleNamespace(**CONFIGS[model_or_config])
    if isinstance(model_or_config, dict):
        return SimpleNamespace(**model_or_config)
    return getattr(model_or_config, "config", model_or_config)


def _shape(cfg) -> dict:
    h, nh = cfg.hidden_size, cfg.num_attention_heads
    inter = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * h  # GPT-2: n_inner
    return dict(h=h, i=inter, layers=cfg.num_hidden_layers, nh=nh,
                nkv=getattr(cfg, "num_key_value_heads", None) or nh,
                hd=getattr(cfg, "head_dim", None) or h // nh, vocab=cfg.vocab_size,
                tied=bool(getattr(cfg, "tie_word_embeddings", False)),
                bias=bool(getattr(cfg, "attention_bias", False) or getattr(cfg, "model_type", "") == "qwen2"))


@functools.lru_cache(maxsize=32)
def _counted(config_json: str) -> int:
    """Parameters of the model a transformers config (as JSON) describes, counted on the meta device (no
    memory, no arithmetic), tied tensors once."""
    from transformers import AutoConfig, AutoModelForCausalLM

    d = json.loads(config_json)
    cfg = AutoConfig.for_model(d.pop("model_type"), **d)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def parameter_count(model_or_config) -> int:
    """Parameters of a decoder from its config alone. A transformers config (or a model's) of any architecture
    is counted exactly: its model is built on the meta device, which allocates nothing, and its parameters
    added up. A bare dict of shapes (or a name in ``CONFIGS``) takes the Llama-style formula: embeddings + per
    layer (q, k, v, o projections, gated MLP, two RMSNorms) + final norm + LM head unless tied."""
    cfg = _config(model_or_config)
    if hasattr(cfg, "to_json_string") and getattr(cfg, "model_type", ""):
        return _counted(cfg.to_json_string(use_diff=False))
    s = _shape(cfg)
    attn = s["h"] * s["nh"] * s["hd"] * 2 + s["h"] * s["nkv"] * s["hd"] * 2
    if s["bias"]:
        attn += s["nh"] * s["hd"] + 2 * s["nkv"] * s["hd"]
    layer = attn + 3 * s["h"] * s["i"] + 2 * s["h"]
    return s["vocab"] * s["h"] * (1 if s["tied"] else 2) + s["layers"] * layer + s["h"]


def _bytes_per(dtype) -> float:
    if isinstance(dtype, torch.dtype):
        return torch.empty(0, dtype=dtype).element_size()
    key = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}.get(str(dtype), str(dtype))
    if key not in BYTES_PER_PARAM:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(BYTES_PER_PARAM)} or a torch dtype")
    return BYTES_PER_PARAM[key]


def kv_cache_bytes(model_or_config, batch: int = 1, context: int = 2048, dtype="bf16") -> int:
    """Bytes of the KV cache: 2 (K and V) × KV heads × head size × batch × bytes × the positions each layer
    keeps, summed over the layers — ``context`` for a full-attention layer; for a sliding-window layer (Mistral,
    Gemma's local layers) at most ``window - 1``, the previous positions a new token can still see, which is
    what transformers' cache keeps for such a layer."""
    from .decoder import config_windows

    cfg = _config(model_or_config)
    s = _shape(cfg)
    kv_dtype = "bf16" if str(dtype) in ("int8", "int4") else dtype  # weight-only quantization keeps a 16-bit cache
    kept = [min(context, w - 1) if w else context for w in config_windows(cfg, s["layers"])]
    return int(2 * s["nkv"] * s["hd"] * sum(kept) * batch * _bytes_per(kv_dtype))


def activation_bytes(model_or_config, batch: int = 1, context: int = 2048, dtype="bf16") -> int:
    """A rough peak of temporary tensors during a prefill of ``context`` tokens: a few hidden-size tensors
    and the two MLP intermediates of one layer at a time (layers run one after another), plus fp32 logits for
    the last position. Attention scores are not counted: fused SDPA/FlashAttention never materialises them."""
    s = _shape(_config(model_or_config))
    act = "bf16" if str(dtype) in ("int8", "int4") else dtype
    return int(batch * context * (4 * s["h"] + 2 * s["i"]) * _bytes_per(act) + batch * s["vocab"] * 4)


@dataclass
class MemoryEstimate:
    """The parts of an inference memory estimate, in bytes, and whether they fit ``budget``."""
    weights: int
    kv_cache: int
    activations: int
    runtime: int
    budget: int | None = None

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.runtime

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else self.total <= self.budget

    def frame(self):
        import pandas as pd

        d = asdict(self)
        d.pop("budget")
        d["total"] = self.total
        return pd.DataFrame({"GiB": {k: v / GIB for k, v in d.items()}})


def device_budget(device) -> tuple[int, bool]:
    """(bytes, is_cuda) of a device given as a name in ``GPUS``, ``"cpu"`` (this machine's RAM), ``"cuda"``
    (the GPU here) or a number of bytes."""
    if isinstance(device, (int, float)):
        return int(device), False
    if device in GPUS:
        return int(GPUS[device] * GIB), True
    if device == "cpu":
        import psutil

        return psutil.virtual_memory().total, False
    if str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' asked for, but there is no CUDA GPU here; name a GPU from GPUS instead")
        return torch.cuda.get_device_properties(torch.device(device).index or 0).total_memory, True
    raise ValueError(f"unknown device {device!r}; use one of {', '.join(GPUS)}, 'cpu', 'cuda' or a byte count")


def estimate(model_or_config, dtype="bf16", batch: int = 1, context: int = 2048, device=None) -> MemoryEstimate:
    """Will ``model_or_config`` fit on ``device`` in ``dtype`` with this batch and context?

    ``model_or_config``: a model, a transformers config, a dict of its fields, or a name in ``CONFIGS``.
    ``dtype``: fp32/bf16/fp16/int8/int4 (weight-only int8/int4 keep 16-bit activations and KV cache).
    """
    if batch < 1 or context < 1:
        raise ValueError(f"batch and context must be >= 1, got batch={batch}, context={context}")
    cfg = _config(model_or_config)
    budget, is_cuda = device_budget(device) if device is not None else (None, False)
    return MemoryEstimate(weights=int(parameter_count(cfg) * _bytes_per(dtype)),
                          kv_cache=kv_cache_bytes(cfg, batch, context, dtype),
                          activations=activation_bytes(cfg, batch, context, dtype),
                          runtime=CUDA_RUNTIME_BYTES if is_cuda else 0, budget=budget)


def max_context(model_or_config, device, dtype="bf16", batch: int = 1) -> int:
    """The longest context whose estimate still fits ``device`` (0 if not even the weights fit)."""
    lo, hi = 0, 1 << 24
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate(model_or_config, dtype, batch, mid, device).fits:
            lo = mid
        else:
            hi = mid - 1
    return lo


# ----------------------------------------------------------------------------------------------------------
# Device maps and offload with accelerate
# ----------------------------------------------------------------------------------------------------------

def _to_bytes(v) -> int:
    from accelerate.utils import convert_file_size_to_int

    return convert_file_size_to_int(v) if isinstance(v, str) else int(v)


def largest_layer_bytes(model) -> int:
    """Bytes of the biggest module that must not be split (a decoder layer): an offloaded layer is copied
    whole into the execution device's memory when its turn comes."""
    from accelerate.utils import compute_module_sizes

    sizes = compute_module_sizes(model)
    classes = set(getattr(model, "_no_split_modules", None) or [])
    layer_sizes = [sizes[n] for n, m in model.named_modules() if type(m).__name__ in classes]
    if not layer_sizes:
        raise ValueError(f"{type(model).__name__} declares no _no_split_modules; cannot find its layers")
    return max(layer_sizes)


def plan_device_map(model, max_memory: dict) -> dict:
    """accelerate's ``infer_auto_device_map`` for ``max_memory`` (e.g. ``{"cpu": "40MB"}``): which module goes
    to which device, with ``"disk"`` for what does not fit. The execution device (the first GPU, else the
    CPU) must hold at least one decoder layer, or a clear ``ValueError`` says how much to give."""
    from accelerate import infer_auto_device_map

    if not max_memory:
        raise ValueError("max_memory must name at least one device, e.g. {'cpu': '40MB'} or {0: '10GiB', 'cpu': '30GiB'}")
    budgets = {k: _to_bytes(v) for k, v in max_memory.items()}
    gpus = [k for k in budgets if k not in ("cpu", "disk", "mps")]
    main = gpus[0] if gpus else ("mps" if "mps" in budgets else "cpu")
    need = largest_layer_bytes(model)
    if budgets.get(main, 0) < need:
        raise ValueError(f"max_memory[{main!r}] = {budgets.get(main, 0):,} bytes is smaller than one decoder layer "
                         f"({need:,} bytes). Offloaded layers are brought into this device one at a time, so it "
                         f"must hold at least one: give it >= {need / 2**20:.1f} MiB (more keeps layers resident).")
    budgets.setdefault("disk", 1 << 50)
    return dict(infer_auto_device_map(model, max_memory=budgets,
                                      no_split_module_classes=list(getattr(model, "_no_split_modules", None) or [])))


def offload(model, max_memory: dict, offload_dir: str | os.PathLike):
    """A copy of ``model`` dispatched by accelerate over ``max_memory`` with the rest on disk in ``offload_dir``
    (weights written there as ``.dat`` files and memory-mapped back one layer at a time). The original model
    is left untouched."""
    from accelerate import dispatch_model

    device_map = plan_device_map(model, max_memory)
    devices = [d for d in device_map.values() if d not in ("cpu", "disk")]
    main = devices[0] if devices else "cpu"
    m = dispatch_model(copy.deepcopy(model), device_map=device_map, main_device=main, offload_dir=str(offload_dir))
    m.hf_device_map = device_map
    return m


def load_with_device_map(path, max_memory: dict, offload_folder: str | os.PathLike, dtype=torch.float32):
    """The transformers way: ``from_pretrained(path, device_map="auto", max_memory=..., offload_folder=...)``.
    For safetensors checkpoints the "disk" layers are memory-mapped from the checkpoint itself, so
    ``offload_folder`` may stay empty."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, device_map="auto", max_memory=max_memory,
                                                offload_folder=str(offload_folder), dtype=dtype)


def _folder_bytes(folder) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)


@torch.no_grad()
def offload_cost(model, input_ids: torch.Tensor, max_memory: dict, repeats: int = 5):
    """Measure what offloading costs: one forward of ``input_ids`` with the model in memory vs the same model
    with part of it on disk (a temporary offload folder), same run, same inputs. Returns a one-row-per-variant
    table with seconds, bytes on disk, where the layers went, and the largest logit difference (should be 0:
    offload moves bytes, it does not change the arithmetic). ``df.attrs["rounds"]`` keeps each variant's seconds
    per round (the rounds run in turn)."""
    import pandas as pd

    import statistics

    ref = model(input_ids=input_ids).logits
    with tempfile.TemporaryDirectory(prefix="secbook-offload-") as d:
        m = offload(model, max_memory, d)
        logits = m(input_ids=input_ids).logits
        # Interleaved (in memory, offloaded, in memory, ...) so that a busy machine slows both alike; only the
        # last position's logits are computed, as in generation: the cost measured is the layers'.
        times: dict[str, list[float]] = {"mem": [], "off": []}
        for _ in range(repeats):
            for key, mod in (("mem", model), ("off", m)):
                times[key].append(median_seconds(lambda: mod(input_ids=input_ids, logits_to_keep=1), warmup=0,
                                                 repeats=1))
        t_mem, t_off = statistics.median(times["mem"]), statistics.median(times["off"])
        disk = _folder_bytes(d)
        places = pd.Series(list(m.hf_device_map.values())).value_counts().to_dict()
        del m
    diff = float((logits.float() - ref.float()).abs().max())
    off = f"offloaded (max_memory={max_memory})"
    df = pd.DataFrame([
        {"variant": "in memory", "seconds_per_forward": t_mem, "bytes_on_disk": 0, "placement": "all cpu",
         "max_logit_diff": 0.0},
        {"variant": off, "seconds_per_forward": t_off, "bytes_on_disk": disk,
         "placement": ", ".join(f"{v} modules: {k}" for k, v in places.items()), "max_logit_diff": diff},
    ]).set_index("variant")
    df.attrs["rounds"] = {"in memory": times["mem"], off: times["off"]}  # seconds per round, for claims.compare
    return df

