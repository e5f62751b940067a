"""Measurement you can trust: timing, bytes, memory, quality, and the machine the numbers came from.

The rules follow standard benchmarking practice (and what MLPerf-style inference reports require): warm up
first and report the first call (compilation, allocation, cache filling) separately; synchronise the GPU
before every clock read, because CUDA kernels run asynchronously; repeat and report the median and spread;
make every repeat do the same work (greedy decoding, a fixed number of new tokens); and attach the machine
to every number. Time to first token (TTFT) is the prefill, time per output token (TPOT) the decode
(terms as in the vLLM and TensorRT-LLM benchmarks).
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import paths


# --------------------------------------------------------------------------------------------- definitions
PPL_TOKENS = 4096  # the book's perplexity protocol: the first 4,096 held-out tokens, windows of 256, stride 128

# One definition per metric, used by every chapter and by the glossary (tests check that the glossary says the same).
METRICS = {
    "token agreement": "the fraction of the greedy tokens generated from the same prompt that equal the reference "
                       "model's at the same position (token_agreement); one changed token usually changes the rest "
                       "of the text, so it falls fast",
    "top-1 match": "the fraction of positions of the held-out text at which the model's most likely next token "
                   "equals the reference model's, each position seeing the true text before it (top1_match)",
    "perplexity": "exp of the mean negative log-likelihood per token of held-out text, lower is better; the book "
                  "scores the first 4,096 held-out tokens in windows of 256 with a stride of 128 (perplexity), and "
                  "compares perplexities only within one model and one protocol",
    "MBU": "model bandwidth utilisation: the bytes a decode step reads (weights, and the KV cache where counted) ÷ "
           "the time per step ÷ the read bandwidth measured on the same machine in the same run (roofline.mbu)",
    "acceptance rate": "in speculative decoding, α = accepted drafts ÷ drafts the target judged, counting each "
                       "verification call's drafts up to and including its first rejection "
                       "(speculative.acceptance_rate)",
}


def perplexity_protocol(max_tokens: int | None = PPL_TOKENS) -> str:
    """How a perplexity was measured, in words, to print beside it (perplexities differ by protocol)."""
    n = "all" if max_tokens is None else f"the first {max_tokens:,}"
    return f"perplexity of {n} held-out tokens (windows of 256, stride 128)"


def perplexity_protocol_zh(max_tokens: int | None = PPL_TOKENS) -> str:
    """The words of :func:`perplexity_protocol` in Chinese, with the same numbers (for ``say(..., zh=...)``)."""
    n = "全部" if max_tokens is None else f"前 {max_tokens:,} 个"
    return f"{n}留出词元上的困惑度（窗口 256，步长 128）"


# --------------------------------------------------------------------------------------------- quality
@torch.no_grad()
def perplexity(model, tokenizer, text: str | None = None, window: int = 256, stride: int = 128,
               max_tokens: int | None = PPL_TOKENS) -> float:
    """Sliding-window perplexity: exp(mean negative log-likelihood) of ``text``.

    Each window of ``window`` tokens is scored, but only the tokens not already scored by the previous
    window count, so every token is predicted with at least ``window - stride`` tokens of context
    (the standard recipe from the Hugging Face perplexity guide). ``max_tokens`` caps the work.
    ``text=None`` means the committed held-out text (``secbook.corpus.heldout_text()``).
    """
    if stride <= 0 or stride > window:
        raise ValueError(f"stride must be in 1..window ({window}), got {stride}")
    if text is None:
        from .corpus import heldout_text

        # ~4 characters per token is plenty for max_tokens tokens; None reads it all
        text = heldout_text(max_chars=None if max_tokens is None else max_tokens * 8)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False, verbose=False).input_ids[0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise ValueError("text is too short to measure perplexity")
    device = next(model.parameters()).device
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids) - 1, stride):
        end = min(begin + window, len(ids))
        chunk = ids[begin:end].to(device)[None]
        labels = chunk.clone()
        new = end - prev_end  # tokens not scored yet
        labels[:, :-new] = -100
        logits = model(input_ids=chunk).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100,
                                                 reduction="sum")
        nll += loss.item()
        count += int((labels[0, 1:] != -100).sum())
        prev_end = end
        if end == len(ids):
            break
    return math.exp(nll / count)


def top1_match(a: torch.Tensor, b: torch.Tensor) -> float:
    """Top-1 match (:data:`METRICS`): the fraction of positions where two models' most likely next tokens agree,
    given the argmaxes each computed over the same text (teacher forcing; e.g. from ``compress.evaluate``)."""
    a, b = torch.as_tensor(a).flatten(), torch.as_tensor(b).flatten()
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"top1_match needs two non-empty argmax sequences of equal length, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    return float((a.cpu() == b.cpu()).float().mean())


def token_agreement(a, b) -> float:
    """Token agreement (:data:`METRICS`): the fraction of positions where two generated token sequences agree,
    over the shorter length.

    Accepts lists or tensors, 1-D (one sequence) or 2-D (a batch, same number of rows). A speed-up that
    changes the output must say by how much: this is the simplest such number for greedy decoding.
    """
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    if ta.dim() == 1 and tb.dim() == 1:
        ta, tb = ta[None], tb[None]
    if ta.dim() != 2 or tb.dim() != 2 or ta.shape[0] != tb.shape[0]:
        raise ValueError(f"token_agreement needs two 1-D sequences or two 2-D batches with the same number of "
                         f"rows; got shapes {tuple(ta.shape)} and {tuple(tb.shape)}")
    n = min(ta.shape[1], tb.shape[1])
    if n == 0:
        raise ValueError("token_agreement needs non-empty sequences")
    return float((ta[:, :n].cpu() == tb[:, :n].cpu()).float().mean())


# --------------------------------------------------------------------------------------------- prompts
_PROMPT_CACHE: dict[tuple[int, int], list[int]] = {}


def _heldout_ids(tokenizer, n_tokens: int) -> list[int]:
    from .corpus import heldout_text

    key = (id(tokenizer), n_tokens)
    if key not in _PROMPT_CACHE:
        chars = max(4096, n_tokens * 8)
        while True:
            text = heldout_text(max_chars=chars)
            ids = tokenizer(text, add_special_tokens=False, verbose=False).input_ids
            if len(ids) >= n_tokens or len(text) < chars:
                break
            chars *= 2
        if not ids:
            raise ValueError("the held-out text tokenised to nothing")
        while len(ids) < n_tokens:  # a tiny held-out text: cycle it
            ids = ids + ids
        _PROMPT_CACHE[key] = ids[:n_tokens]
    return _PROMPT_CACHE[key]


def prompt_ids(tokenizer, prompt_len: int, batch: int = 1) -> torch.LongTensor:
    """A deterministic prompt ``[batch, prompt_len]`` cut from the committed held-out text.

    Row ``i`` is the ``i``-th consecutive slice of ``prompt_len`` tokens, so a batch holds different
    (realistic) prompts of equal length and no padding is needed.
    """
    if prompt_len < 1 or batch < 1:
        raise ValueError(f"prompt_len and batch must be >= 1, got prompt_len={prompt_len}, batch={batch}")
    ids = _heldout_ids(tokenizer, prompt_len * batch)
    return torch.tensor(ids, dtype=torch.long).view(batch, prompt_len)


# --------------------------------------------------------------------------------------------- timing
def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _clock(fn: Callable, *args) -> tuple[Any, float]:
    _sync()
    t0 = time.perf_counter()
    out = fn(*args)
    _sync()
    return out, time.perf_counter() - t0


def tok_s_in_turn(generators: dict, input_ids: torch.Tensor, new_tokens: int, rounds: int = 5,
                  expect: torch.Tensor | None = None, warmup: int = 1) -> dict[str, list[float]]:
    """Tokens/s of several ``generate(input_ids, new_tokens) -> ids`` functions, timed *in turn*: after
    ``warmup`` calls each, every round runs each function once, so a change in a shared machine's load hits all
    of them alike; compare them by the median over rounds of their ratio. Returns name → tok/s per round (new
    tokens ÷ the whole call, prompt included; the GPU is synchronised before every clock read). With
    ``expect``, every output must equal it."""
    for _ in range(warmup):
        for fn in generators.values():
            fn(input_ids, new_tokens)
    speeds: dict[str, list[float]] = {name: [] for name in generators}
    for _ in range(rounds):
        for name, fn in generators.items():
            out, seconds = _clock(fn, input_ids, new_tokens)
            if expect is not None and not torch.equal(out, expect):
                raise AssertionError(f"{name}: its tokens differ from the expected ones")
            speeds[name].append(new_tokens / seconds)
    return speeds


def hf_generate_fn(model, pad_token_id: int | None = None) -> Callable:
    """Greedy ``model.generate`` that always produces exactly ``max_new_tokens`` (no early stop on EOS)."""
    if pad_token_id is None:
        pad_token_id = getattr(model.generation_config, "pad_token_id", None)
        if pad_token_id is None:
            pad_token_id = getattr(model.generation_config, "eos_token_id", None)
            if isinstance(pad_token_id, (list, tuple)):
                pad_token_id = pad_token_id[0]

    @torch.inference_mode()
    def generate(input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        return model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                              max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                              do_sample=False, num_beams=1, pad_token_id=pad_token_id)

    return generate


@dataclass
class Timing:
    """Result of :func:`time_generation`. Times are seconds; medians over ``repeats`` after warm-up.

    ``tokens_per_s`` is the decode throughput: ``batch / tpot_s``. ``first_call_s`` is the very first
    (cold) end-to-end call, never mixed into the medians.
    """
    ttft_s: float
    tpot_s: float
    tokens_per_s: float
    latency_s: float
    first_call_s: float
    repeats: int
    ttft_all: list[float] = field(default_factory=list)
    latency_all: list[float] = field(default_factory=list)
    batch: int = 1
    prompt_len: int = 0
    new_tokens: int = 0

    def as_dict(self) -> dict:
        """Flat scalars for a results table: the medians plus min/max spread (lists left out)."""
        d = {k: v for k, v in asdict(self).items() if not isinstance(v, list)}
        d["ttft_min_s"], d["ttft_max_s"] = min(self.ttft_all), max(self.ttft_all)
        d["latency_min_s"], d["latency_max_s"] = min(self.latency_all), max(self.latency_all)
        return d


def _check_output(out, prompt_len: int, batch: int, n: int) -> None:
    if isinstance(out, torch.Tensor) and out.dim() == 2:
        if out.shape[0] != batch or out.shape[1] not in (prompt_len + n, n):
            raise RuntimeError(f"generate_fn returned shape {tuple(out.shape)} for {n} new tokens on a "
                               f"[{batch}, {prompt_len}] prompt: every repeat must produce exactly {n} tokens")


def time_generation(model, tokenizer, prompt_len: int = 32, new_tokens: int = 64, batch: int = 1,
                    warmup: int = 1, repeats: int = 5, generate_fn: Callable | None = None,
                    input_ids: torch.Tensor | None = None) -> Timing:
    """Time greedy generation: TTFT (a 1-token generation = prefill), TPOT and end-to-end latency.

    ``generate_fn(input_ids, max_new_tokens) -> ids`` defaults to :func:`hf_generate_fn` (HF ``generate``,
    greedy, exactly ``max_new_tokens``). The first call is timed on its own (``first_call_s``) and, with
    the other ``warmup - 1`` warm-up rounds, left out; then each of ``repeats`` rounds times a 1-token
    call (TTFT) and a ``new_tokens`` call (end-to-end). TPOT = (median end-to-end − median TTFT) /
    (new_tokens − 1). The GPU is synchronised before every clock read.
    """
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2 to separate prefill from decode, got {new_tokens}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    if generate_fn is None:
        if model is None:
            raise ValueError("pass a model or a generate_fn")
        generate_fn = hf_generate_fn(model)
    if input_ids is None:
        input_ids = prompt_ids(tokenizer, prompt_len, batch)
    batch, prompt_len = input_ids.shape
    if model is not None:
        try:
            input_ids = input_ids.to(next(model.parameters()).device)
        except StopIteration:
            pass
    out, first_call = _clock(generate_fn, input_ids, new_tokens)  # cold: compile, allocate, fill caches
    _check_output(out, prompt_len, batch, new_tokens)
    generate_fn(input_ids, 1)
    for _ in range(max(warmup, 1) - 1):
        generate_fn(input_ids, 1)
        generate_fn(input_ids, new_tokens)
    ttft_all, latency_all = [], []
    for _ in range(repeats):
        ttft_all.append(_clock(generate_fn, input_ids, 1)[1])
        latency_all.append(_clock(generate_fn, input_ids, new_tokens)[1])
    ttft, latency = statistics.median(ttft_all), statistics.median(latency_all)
    tpot = max(latency - ttft, 1e-12) / (new_tokens - 1)
    return Timing(ttft_s=ttft, tpot_s=tpot, tokens_per_s=batch / tpot, latency_s=latency,
                  first_call_s=first_call, repeats=repeats, ttft_all=ttft_all, latency_all=latency_all,
                  batch=batch, prompt_len=prompt_len, new_tokens=new_tokens)


# --------------------------------------------------------------------------------------------- bytes
def tensor_bytes(t: torch.Tensor) -> int:
    """Real storage of one tensor, including packed/quantized layouts.

    Tensor subclasses that follow the PyTorch subclass protocol (torchao's quantized tensors) are
    flattened into their inner tensors; bitsandbytes' ``Params4bit``/``Int8Params`` add their quantization
    state (absmax scales, code book) or ``SCB`` scales; quantized ``torch.qint8`` tensors count 1 byte per
    element plus their scales.
    """
    if t is None:
        return 0
    if type(t) not in (torch.Tensor, torch.nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        try:
            names, _ = t.__tensor_flatten__()
            return sum(tensor_bytes(getattr(t, n)) for n in names)
        except Exception:  # pragma: no cover - unusual subclass: fall back to the plain count
            pass
    if t.is_quantized:
        n = t.numel() * t.element_size()
        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                           torch.per_channel_affine_float_qparams):
            n += tensor_bytes(t.q_per_channel_scales()) + tensor_bytes(t.q_per_channel_zero_points())
        else:
            n += 8 + 8  # one scale and one zero point
        return n
    n = t.numel() * t.element_size()
    qs = getattr(t, "quant_state", None)  # bitsandbytes 4-bit
    if qs is not None:
        n += _quant_state_bytes(qs)
    scb = getattr(t, "SCB", None)  # bitsandbytes 8-bit row scales
    if isinstance(scb, torch.Tensor):
        n += tensor_bytes(scb)
    return n


def _quant_state_bytes(qs) -> int:
    n = 0
    for name in ("absmax", "code", "offset"):
        v = getattr(qs, name, None)
        if isinstance(v, torch.Tensor):
            n += tensor_bytes(v)
    nested = getattr(qs, "state2", None)
    if nested is not None:
        n += _quant_state_bytes(nested)
    return n


def _packed_params_bytes(module) -> int | None:
    """torch.ao dynamic-quantized Linear keeps its int8 weight in ``_packed_params``, not as a parameter."""
    fn = getattr(module, "_weight_bias", None)
    if fn is None or not hasattr(module, "_packed_params"):
        return None
    w, b = fn()
    return tensor_bytes(w) + (tensor_bytes(b) if b is not None else 0)


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer as actually stored (shared/tied tensors counted once).

    A module may define ``storage_bytes(self) -> int`` to report its own packed storage; that number then
    replaces the count of its parameters and buffers and of everything below it. A 4-bit layer thus counts
    about half a byte per weight plus its scales, not the 4 bytes of the fp32 tensor it replaced.
    """
    seen: set[int] = set()
    total = 0

    def visit(m: torch.nn.Module) -> None:
        nonlocal total
        sb = getattr(m, "storage_bytes", None)
        if callable(sb):
            total += int(sb())
            return
        packed = _packed_params_bytes(m)
        if packed is not None:  # covers its LinearPackedParams child too
            total += packed
            return
        for t in list(m._parameters.values()) + list(m._buffers.values()):
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            total += tensor_bytes(t)
        for child in m.children():
            if id(child) not in seen:
                seen.add(id(child))
                visit(child)

    visit(model)
    return total



def decode_read_bytes(model: torch.nn.Module) -> int:
    """Weight bytes one batch-1 decode step reads: :func:`model_bytes` less the input embedding table unless
    it is also the output layer's weight, because a lookup reads one row of the table, not all of it.

    With tied embeddings (SmolLM2, Qwen2.5-0.5B, Llama-3.2-1B, our tiny model) the LM head reads the whole
    table every token and it counts; once a quantizer gives the head its own int8 copy, the fp32 table is
    only looked up and drops out. This is the numerator of model-bandwidth utilisation (MBU).
    """
    total = model_bytes(model)
    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    w = getattr(emb, "weight", None)
    if not isinstance(w, torch.Tensor):
        return total
    head = model.get_output_embeddings() if callable(getattr(model, "get_output_embeddings", None)) else None
    hw = getattr(head, "weight", None)
    if isinstance(hw, torch.Tensor) and hw.data_ptr() == w.data_ptr():
        return total
    return total - tensor_bytes(w) + tensor_bytes(w[0])

# --------------------------------------------------------------------------------------------- memory
def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_memory(fn: Callable, *args, interval: float = 0.002, **kw) -> tuple[Any, int]:
    """Run ``fn(*args, **kw)``; return ``(result, peak_bytes)``.

    On CUDA: ``torch.cuda.max_memory_allocated`` after resetting the peak (tensors torch allocated on the
    GPU). On CPU: the peak resident set size (RSS) of this process while ``fn`` ran, sampled every
    ``interval`` seconds by a background thread (so it includes Python, torch and the model itself; subtract
    a baseline to see what ``fn`` added).
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        result = fn(*args, **kw)
        torch.cuda.synchronize()
        return result, int(torch.cuda.max_memory_allocated())
    peak = _rss()
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss())
            stop.wait(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        result = fn(*args, **kw)
    finally:
        stop.set()
        th.join()
    return result, max(peak, _rss())


# --------------------------------------------------------------------------------------------- machine
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """What produced a number: CPU model and cores, RAM, GPU, and the library versions."""
    import transformers

    try:
        import psutil

        ram = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover
        ram = 0
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_name(),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "ram_gb": round(ram / 2**30, 1),
        "gpu": gpu,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "os": platform.system(),
    }


def describe_machine(info: dict | None = None) -> str:
    """One line, e.g. ``AMD EPYC 9R14 (2 cores, 24 GiB RAM), GPU: none; torch 2.13.0, transformers 5.24.0``."""
    i = info or machine_info()
    return (f"{i['cpu']} ({i['cores']} cores, {i['ram_gb']:g} GiB RAM), GPU: {i['gpu']}; "
            f"torch {i['torch']}, transformers {i['transformers']}")


# --------------------------------------------------------------------------------------------- results
MACHINE_COLUMNS = ("cpu", "cores", "ram_gb", "gpu", "torch", "transformers", "python")


def results_frame(records: Sequence[dict]):
    """A tidy DataFrame of ``records`` with the machine columns, the 1-minute load average (above the core
    count, other work competed for the CPU) and a UTC timestamp added. Existing columns of the same name are
    kept, so recorded results from another machine stay labelled."""
    import pandas as pd

    df = pd.DataFrame(list(records))
    info = machine_info()
    for k in MACHINE_COLUMNS:
        if k not in df.columns:
            df[k] = info[k]
    if "load_avg_1m" not in df.columns and hasattr(os, "getloadavg"):  # > cores: the timings were contended
        df["load_avg_1m"] = round(os.getloadavg()[0], 2)
    if "timestamp" not in df.columns:
        df["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return df


def _results_path(name: str) -> Path:
    name = str(name)
    if name.endswith(".csv"):
        name = name[:-4]
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"results name must be a plain file stem like 'bench_cpu', got {name!r}")
    return paths.RESULTS_DIR / f"{name}.csv"


def save_results(df, name: str) -> Path:
    """Write ``data/results/<name>.csv`` atomically (temp file, then rename); return the path."""
    path = _results_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def load_results(name: str):
    """Read ``data/results/<name>.csv`` (raises FileNotFoundError listing what exists)."""
    import pandas as pd

    path = paths.find_result(_results_path(name).name)
    if not path.exists():
        have = [p.stem for p in paths.result_files()]
        raise FileNotFoundError(f"no results file {path}; recorded results: {', '.join(have) or 'none'}")
    return pd.read_csv(path)
