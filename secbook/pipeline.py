"""The source's diagram made executable: input → model compression → algorithm optimization → hardware
acceleration → output, as a list of small steps applied one after another and measured after each.

Each step is a tiny class with a ``name``, the box of the diagram it belongs to (``stage``) and
``apply(model, tokenizer=None) -> model``: ``Quantize`` (weight-only round-to-nearest/GPTQ/AWQ,
``secbook.quantize``), ``DynamicInt8`` (PyTorch dynamic quantization), ``TorchAO`` (torchao weight-only),
``Prune`` (``secbook.prune``), ``FastDecode`` (our static-KV-cache decode loop, ``secbook.generate``, after
gpt-fast), ``Compile`` (the same loop with the decode step compiled by ``torch.compile``), ``Dtype`` and
``Device``. ``Pipeline(steps).apply(model, tokenizer)`` applies them in order to a copy of the model and
records, after every stage, the stored bytes (``measure.model_bytes``), decode speed and first-token time
(``measure.time_generation``, medians after warm-up), held-out perplexity (``measure.perplexity``) and the
agreement of the greedy output with the unmodified model's — one tidy table (``Pipeline.table``) with the
machine's columns, and ``plot_waterfall`` draws how each stage moved each number. :class:`StepByStep` is the
same idea for ways of *decoding* (HF ``generate``, our loop, the C++ step, ...): each step checked token for token
against the first and timed in turn with the one before it, as a shared machine requires. The compression and
decoding ideas are those of the chapters that implement them (Jacob et al. 2018; Frantar et al. 2022;
Han et al. 2015; the PyTorch team's gpt-fast, 2023).
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Sequence

import torch
from torch import nn

STAGES = ("model compression", "algorithm optimization", "hardware acceleration")


# ----------------------------------------------------------------------------------------------- helpers
def _ao_dynamic_layers(model: nn.Module) -> int:
    """How many torch.ao dynamic-quantized Linear layers ``model`` holds (they compute on CPU in fp32)."""
    return sum(1 for m in model.modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic"))


def _float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.dtype.is_floating_point:
            return p.dtype
    return torch.float32


def _device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def describe_model(model: nn.Module) -> dict:
    """Device, dtype and decode loop of ``model`` as it is now (strings, for the results table)."""
    dec = getattr(model, "secbook_decode", None)
    loop = "HF generate" if not dec else ("fast loop + torch.compile" if dec.get("compile") else "fast loop")
    return {"device": str(_device(model)), "dtype": str(_float_dtype(model)).replace("torch.", ""),
            "decode_loop": loop}


def generate_fn_for(model: nn.Module, max_len: int) -> Callable | None:
    """The ``generate_fn(ids, n)`` that ``FastDecode``/``Compile`` attached to ``model``, sized for
    ``max_len`` positions; ``None`` (Hugging Face ``generate``) when no such step was applied."""
    dec = getattr(model, "secbook_decode", None)
    if not dec:
        return None
    from .generate import FastGenerator

    gen = FastGenerator(model, max_len=max_len, compile=bool(dec.get("compile")), mode=dec.get("mode"))
    return lambda ids, n: gen.generate(ids, n)


# ----------------------------------------------------------------------------------------------- steps
class Step:
    """One stage of the pipeline: ``apply(model, tokenizer=None) -> model`` (may modify ``model``)."""

    name = "step"
    stage = ""

    def apply(self, model: nn.Module, tokenizer=None) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}<{self.name}>"


def _check_not_ao(model: nn.Module, what: str) -> None:
    if _ao_dynamic_layers(model):
        raise ValueError(f"{what} cannot follow DynamicInt8: torch.ao dynamic int8 layers have no nn.Linear left "
                         "to change and run only on CPU with fp32 activations. Put DynamicInt8 last among the "
                         "compression steps, or choose one of the two.")


class Quantize(Step):
    """Weight-only quantization of every Linear layer (except the LM head) with ``secbook.quantize``:
    ``bits`` in (2, 3, 4, 8), ``group_size`` an int or None (one scale per output channel), ``method``
    ``"rtn"``, ``"gptq"`` or ``"awq"`` (the last two draw calibration text through the tokenizer)."""

    stage = "model compression"

    def __init__(self, bits: int = 4, group_size: int | None = 64, scheme: str = "sym", method: str = "rtn"):
        from .quantize import METHODS, check_args

        if method not in METHODS:
            raise ValueError(f"method={method!r} is not supported; choose one of {METHODS}")
        check_args(bits, group_size, scheme)
        self.bits, self.group_size, self.scheme, self.method = bits, group_size, scheme, method
        g = "per-channel" if group_size is None else f"g{group_size}"
        self.name = f"{method} int{bits} {g}" + ("" if scheme == "sym" else f" {scheme}")

    def apply(self, model, tokenizer=None):
        from .quantize import quantize

        _check_not_ao(model, "Quantize")
        if self.method != "rtn" and tokenizer is None:
            raise ValueError(f"Quantize(method={self.method!r}) needs calibration text: pass the tokenizer to "
                             "Pipeline.apply(model, tokenizer)")
        model, _ = quantize(model, self.bits, self.group_size, self.scheme, method=self.method, tokenizer=tokenizer)
        return model


class DynamicInt8(Step):
    """PyTorch dynamic quantization (``torch.ao``): int8 weights, activations quantized on the fly, int8
    matrix products on the CPU. CPU-only, fp32 activations."""

    stage = "model compression"
    name = "dynamic int8"

    def apply(self, model, tokenizer=None):
        from .quantize import dynamic_int8

        _check_not_ao(model, "DynamicInt8")
        if _device(model).type != "cpu":
            raise ValueError("DynamicInt8 runs on CPU only; apply it before Device(...) or on a CPU model")
        if _float_dtype(model) != torch.float32:
            raise ValueError("DynamicInt8 needs an fp32 model (it quantizes activations from fp32); "
                             f"this one is {_float_dtype(model)}: apply it before Dtype(...)")
        return dynamic_int8(model)


class TorchAO(Step):
    """torchao weight-only quantization: ``kind`` ``"int8wo"`` or ``"int4wo"`` (the library path)."""

    stage = "model compression"

    def __init__(self, kind: str = "int8wo", group_size: int = 64):
        if kind not in ("int8wo", "int4wo"):
            raise ValueError(f"kind={kind!r} is not supported; choose 'int8wo' or 'int4wo'")
        self.kind, self.group_size = kind, group_size
        self.name = f"torchao {kind}"

    def apply(self, model, tokenizer=None):
        from .quantize import torchao_quantize

        _check_not_ao(model, "TorchAO")
        return torchao_quantize(model, self.kind, self.group_size)


class Prune(Step):
    """Zero weights of every Linear layer with ``secbook.prune``: ``sparsity`` in [0, 1), ``method``
    ``"magnitude"`` or ``"wanda"``, ``pattern`` ``"unstructured"`` or ``"2:4"``. Zeros are stored densely, so
    this changes quality, not bytes or speed, until a sparse kernel uses them (chapter 3.1)."""

    stage = "model compression"

    def __init__(self, sparsity: float = 0.5, method: str = "magnitude", pattern: str = "unstructured"):
        from .prune import METHODS, PATTERNS, check_sparsity

        if method not in METHODS:
            raise ValueError(f"method={method!r} is not supported; choose one of {METHODS}")
        if pattern not in PATTERNS:
            raise ValueError(f"pattern={pattern!r} is not supported; choose one of {PATTERNS}")
        check_sparsity(sparsity)
        self.sparsity, self.method, self.pattern = sparsity, method, pattern
        self.name = f"prune {method} {'2:4' if pattern == '2:4' else f'{sparsity:.0%}'}"

    def apply(self, model, tokenizer=None):
        from .prune import prune

        _check_not_ao(model, "Prune")
        if self.method == "wanda" and tokenizer is None:
            raise ValueError("Prune(method='wanda') needs calibration text: pass the tokenizer to Pipeline.apply")
        model, _ = prune(model, self.sparsity, self.method, self.pattern, tokenizer=tokenizer)
        return model


class FastDecode(Step):
    """Algorithm optimization: decode with our static-KV-cache loop (``secbook.generate.FastGenerator``)
    instead of Hugging Face ``generate`` — the same greedy tokens with less per-token work. Every family of
    ``secbook.decoder.FAMILIES`` (Llama/SmolLM, Qwen2/3, Mistral, Gemma 2/3, Phi-3, GPT-2, GPT-NeoX)."""

    stage = "algorithm optimization"
    name = "fast decode loop"
    compile = False

    def apply(self, model, tokenizer=None):
        from .decoder import check_supported

        check_supported(model)
        model.secbook_decode = {"compile": self.compile, "mode": getattr(self, "mode", None)}
        return model


class Compile(FastDecode):
    """Hardware acceleration by the compiler: the fast loop's one-token decode step compiled with
    ``torch.compile`` (CUDA graphs on a GPU, ``mode="reduce-overhead"``; Inductor's C++ kernels on CPU). The
    first call pays the compile time; ``first_call_s`` in the table shows it."""

    stage = "hardware acceleration"
    compile = True

    def __init__(self, mode: str | None = None):
        self.mode = mode
        self.name = "torch.compile" + (f" ({mode})" if mode else "")


class Dtype(Step):
    """Cast floating-point weights to ``dtype`` (``"bf16"``, ``"fp16"``, ``"fp32"``); packed quantized
    layers keep their own storage."""

    stage = "hardware acceleration"

    def __init__(self, dtype: str | torch.dtype = "bf16"):
        from .hardware import resolve_dtype

        self.dtype = resolve_dtype(dtype)
        if self.dtype is None:
            raise ValueError("Dtype needs a dtype such as 'bf16', 'fp16' or 'fp32'")
        self.name = str(self.dtype).replace("torch.", "").replace("bfloat16", "bf16").replace("float", "fp")

    def apply(self, model, tokenizer=None):
        if _ao_dynamic_layers(model):
            raise ValueError(f"Dtype({self.name}) does not apply after DynamicInt8: torch.ao dynamic int8 layers "
                             "take fp32 activations only. Use Dtype before other steps, or weight-only Quantize.")
        packed = {m: {k: b for k, b in m._buffers.items() if b is not None}
                  for m in model.modules() if callable(getattr(m, "storage_bytes", None))}
        model = model.to(self.dtype)
        for m, bufs in packed.items():  # keep packed layers' scales as they were stored
            m._buffers.update(bufs)
        return model


class Device(Step):
    """Move the model to ``device`` (``"auto"`` = CUDA > MPS > CPU, via ``secbook.hardware.pick_device``)."""

    stage = "hardware acceleration"

    def __init__(self, device: str = "auto"):
        from .hardware import pick_device

        self.requested = device
        self.device = pick_device(device)
        self.name = f"device {device}" + (f" → {self.device}" if device == "auto" else "")

    def apply(self, model, tokenizer=None):
        if _ao_dynamic_layers(model) and self.device.type != "cpu":
            raise ValueError(f"Device({self.requested!r}) → {self.device}: torch.ao dynamic int8 layers run on CPU "
                             "only; use Quantize/TorchAO weight-only quantization for a GPU")
        return model.to(self.device)


STEPS: dict[str, Callable[[], Step]] = {
    "quantize": Quantize, "int8": lambda: Quantize(8, None), "int4": lambda: Quantize(4, 64),
    "dynamic_int8": DynamicInt8, "torchao": TorchAO, "prune": Prune, "fast_decode": FastDecode,
    "compile": Compile, "bf16": lambda: Dtype("bf16"), "fp16": lambda: Dtype("fp16"), "fp32": lambda: Dtype("fp32"),
    "device": Device,
}


def make_step(spec) -> Step:
    """A ``Step`` from a ``Step`` (returned as is) or a name in :data:`STEPS` (default arguments)."""
    if isinstance(spec, Step):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower().replace("-", "_").replace(" ", "_")
        if key in STEPS:
            return STEPS[key]()
        raise ValueError(f"unknown step {spec!r}; use a Step object (Quantize, Prune, DynamicInt8, TorchAO, "
                         f"FastDecode, Compile, Dtype, Device) or one of the names {sorted(STEPS)}")
    raise TypeError(f"a pipeline step must be a secbook.pipeline.Step or a step name, got {type(spec).__name__}: "
                    f"{spec!r}. A step has .name and .apply(model, tokenizer=None) -> model.")


# ----------------------------------------------------------------------------------------------- measuring
def measure_model(model: nn.Module, tokenizer, prompt_len: int = 32, new_tokens: int = 32, repeats: int = 3,
                  ppl_tokens: int | None = 1024, reference: torch.Tensor | None = None,
                  timing: bool = True) -> tuple[dict, torch.Tensor]:
    """``(row, greedy_tokens)``: stored bytes, decode speed (medians of ``repeats`` after a warm-up),
    held-out perplexity over ``ppl_tokens`` tokens (``None`` skips it) and, given ``reference`` tokens,
    the fraction of greedy output tokens equal to them."""
    from .measure import model_bytes, perplexity, time_generation, token_agreement

    gen = generate_fn_for(model, prompt_len + new_tokens)
    if gen is None:
        from .measure import hf_generate_fn
        gen = hf_generate_fn(model)
    seen: dict = {}

    def recording(ids, n):
        out = gen(ids, n)
        if n == new_tokens:
            seen["out"] = out
        return out

    row = {**describe_model(model), "model_bytes": model_bytes(model), "prompt_len": prompt_len,
           "new_tokens": new_tokens, "repeats": repeats}
    if timing:
        t = time_generation(model, tokenizer, prompt_len=prompt_len, new_tokens=new_tokens, warmup=1,
                            repeats=repeats, generate_fn=recording)
        row.update({"tokens_per_s": t.tokens_per_s, "ttft_ms": 1e3 * t.ttft_s, "tpot_ms": 1e3 * t.tpot_s,
                    "latency_s": t.latency_s, "first_call_s": t.first_call_s})
    else:  # one greedy reply for the agreement column only
        from .measure import prompt_ids
        recording(prompt_ids(tokenizer, prompt_len).to(_device(model)), new_tokens)
    tokens = seen["out"][:, -new_tokens:].cpu()
    row["perplexity"] = (perplexity(model, tokenizer, max_tokens=ppl_tokens) if ppl_tokens else float("nan"))
    row["agreement"] = token_agreement(tokens, reference) if reference is not None else 1.0
    return row, tokens


class Pipeline(Step):
    """Steps applied in order: ``Pipeline([Quantize(4, 64), Compile(), Device("auto")]).apply(model, tok)``.

    With a tokenizer and ``measure=True`` the model is measured before the first step and after each one;
    the rows land in ``self.table`` (a DataFrame with machine columns). The input model is left untouched
    (a deep copy is transformed) unless ``copy=False``. A pipeline is itself a step, so pipelines nest.
    """

    stage = "pipeline"

    def __init__(self, steps: Sequence, measure: bool = True, prompt_len: int = 32, new_tokens: int = 32,
                 repeats: int = 3, ppl_tokens: int | None = 1024, copy: bool = True, progress: bool = False):
        if isinstance(steps, (Step, str)) or not isinstance(steps, Sequence):
            raise TypeError("Pipeline takes a list of steps, e.g. Pipeline([Quantize(bits=4), Compile()])")
        self.steps = [make_step(s) for s in steps]
        self.measure, self.copy, self.progress = measure, copy, progress
        self.opts = dict(prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats, ppl_tokens=ppl_tokens)
        self.name = " → ".join(s.name for s in self.steps) or "(no steps)"
        self.table = None

    def _apply_one(self, i: int, step: Step, model, tokenizer):
        try:
            out = step.apply(model, tokenizer)
        except (ValueError, TypeError, NotImplementedError, RuntimeError, ImportError, AssertionError) as e:
            raise ValueError(f"pipeline step {i + 1} ({step.name}, {step.stage}) does not apply to this model "
                             f"after [{', '.join(s.name for s in self.steps[:i]) or 'nothing'}]: "
                             f"{type(e).__name__}: {e}") from e
        if not isinstance(out, nn.Module):
            raise TypeError(f"pipeline step {i + 1} ({step.name}) returned {type(out).__name__}, not a model")
        return out

    def apply(self, model: nn.Module, tokenizer=None) -> nn.Module:
        from tqdm.auto import tqdm

        if not isinstance(model, nn.Module):
            raise TypeError(f"Pipeline.apply needs a torch model (an HF causal LM), got {type(model).__name__}")
        if self.copy:
            model = copy.deepcopy(model)
        measure = self.measure and tokenizer is not None
        rows, ref = [], None
        if measure:
            row, ref = measure_model(model, tokenizer, **self.opts)
            rows.append({"stage": 0, "step": "input model", "box": "input", "step_s": 0.0, **row})
        for i, step in enumerate(tqdm(self.steps, desc="pipeline", disable=not self.progress)):
            t0 = time.perf_counter()
            model = self._apply_one(i, step, model, tokenizer)
            dt = time.perf_counter() - t0
            if measure:
                row, _ = measure_model(model, tokenizer, reference=ref, **self.opts)
                rows.append({"stage": i + 1, "step": step.name, "box": step.stage, "step_s": dt, **row})
        if measure:
            self.table = stage_table(rows)
        return model


def apply_steps(model: nn.Module, tokenizer, steps: Sequence, device: str | None = None) -> nn.Module:
    """Apply ``steps`` in order without measuring (then move to ``device`` if given); errors as in
    :class:`Pipeline`."""
    p = Pipeline(list(steps) + ([Device(device)] if device else []), measure=False, copy=False)
    return p.apply(model, tokenizer)


def stage_table(rows: list[dict]):
    """Rows of :func:`measure_model` → DataFrame with ratios to the first row and machine columns."""
    from .measure import results_frame

    df = results_frame(rows)
    base = df.iloc[0]
    df["size_vs_input"] = df["model_bytes"] / base["model_bytes"]
    df["speedup_vs_input"] = df["tokens_per_s"] / base["tokens_per_s"]
    df["ppl_change_pct"] = 100 * (df["perplexity"] / base["perplexity"] - 1)
    return df


SUMMARY_COLUMNS = ["stage", "step", "box", "device", "dtype", "decode_loop", "model_bytes", "size_vs_input",
                   "tokens_per_s", "speedup_vs_input", "ttft_ms", "first_call_s", "perplexity", "ppl_change_pct",
                   "agreement"]


def summary(table):
    """The columns worth reading, rounded (for display in the book)."""
    cols = [c for c in SUMMARY_COLUMNS if c in table.columns]
    return table[cols].round({"size_vs_input": 3, "tokens_per_s": 1, "speedup_vs_input": 2, "ttft_ms": 2,
                              "first_call_s": 2, "perplexity": 2, "ppl_change_pct": 1, "agreement": 3})


class StepByStep:
    """A worked optimisation, measured one step at a time the way a shared machine allows.

    ``add(name, generate)`` adds a way of decoding the same prompt (``generate(ids, n) -> ids``: HF ``generate``,
    our loop, the C++ step, ...). The first one is the baseline: its greedy tokens are the reference. Every later
    one is run once (its tokens are compared with the reference: token agreement, and whether they are identical)
    and then timed *in turn* with the step before it (:func:`secbook.measure.tok_s_in_turn`: A, B, A, B, ...), so
    that a change in the machine's load hits both alike; ``add`` returns that :class:`secbook.claims.Comparison`.
    ``overall()`` times the first and the last step in turn. ``table()`` is one row per step: the change it made,
    its median tokens/s and its predecessor's *in the same rounds* (the baseline's own from the rounds against the
    second step), its speed ÷ the previous step's (median of per-round ratios) and the product of those ratios from
    the baseline on (``chained_vs_first``: a chain of separate measurements, which ``overall()`` checks with one),
    the weight bytes a decode step reads (if given), its token agreement with the baseline and whether its tokens
    are identical."""

    def __init__(self, input_ids: torch.Tensor, new_tokens: int, rounds: int = 3):
        if new_tokens < 1 or rounds < 1:
            raise ValueError(f"need new_tokens >= 1 and rounds >= 1, got {new_tokens} and {rounds}")
        self.ids, self.new_tokens, self.rounds = input_ids, int(new_tokens), int(rounds)
        self.steps: list[dict] = []
        self.reference: torch.Tensor | None = None
        self.overall_speeds: dict[str, list[float]] = {}

    def _new(self, out: torch.Tensor) -> torch.Tensor:
        return out[:, self.ids.shape[1]:].cpu()

    def add(self, name: str, generate: Callable, change: str = "", read_bytes: int | None = None):
        """Check ``generate``'s tokens against the baseline's and time it in turn with the previous step."""
        from .claims import compare
        from .measure import tok_s_in_turn, token_agreement

        if any(s["step"] == name for s in self.steps):
            raise ValueError(f"a step called {name!r} was already added; give each step its own name")
        new = self._new(generate(self.ids, self.new_tokens))  # also its warm-up
        if new.shape[1] != self.new_tokens:
            raise ValueError(f"step {name!r} returned {new.shape[1]} new tokens, not {self.new_tokens}")
        row = {"step": name, "change": change, "read_MB_per_token": read_bytes / 1e6 if read_bytes else float("nan"),
               "fn": generate}
        if self.reference is None:
            self.reference = new
            self.steps.append({**row, "token_agreement": 1.0, "identical": True})
            return None
        prev = self.steps[-1]
        speeds = tok_s_in_turn({prev["step"]: prev["fn"], name: generate}, self.ids, self.new_tokens,
                               rounds=self.rounds, warmup=0)
        c = compare(speeds, name, prev["step"])
        prev.setdefault("speeds", speeds[prev["step"]])
        self.steps.append({**row, "speeds": speeds[name], "prev_speeds": speeds[prev["step"]], "comparison": c,
                           "token_agreement": token_agreement(new, self.reference),
                           "identical": bool(torch.equal(new, self.reference))})
        return c

    def overall(self, rounds: int | None = None):
        """The last step against the first, timed in turn (a :class:`secbook.claims.Comparison`); the tokens/s of
        its rounds are kept in ``self.overall_speeds``."""
        from .claims import compare
        from .measure import tok_s_in_turn

        if len(self.steps) < 2:
            raise ValueError("overall() needs at least two steps")
        first, last = self.steps[0], self.steps[-1]
        speeds = tok_s_in_turn({first["step"]: first["fn"], last["step"]: last["fn"]}, self.ids, self.new_tokens,
                               rounds=rounds or self.rounds, warmup=0)
        self.overall_speeds = speeds
        return compare(speeds, last["step"], first["step"])

    def table(self):
        """One row per step (see the class docstring)."""
        import statistics

        import pandas as pd

        rows, chained = [], 1.0
        for s in self.steps:
            c = s.get("comparison")
            chained *= c.median if c else 1.0
            rows.append({"step": s["step"], "change": s["change"],
                         "tokens_per_s": statistics.median(s["speeds"]) if "speeds" in s else float("nan"),
                         "previous_tokens_per_s": statistics.median(s["prev_speeds"]) if c else float("nan"),
                         "vs_previous": c.median if c else float("nan"),
                         "verdict_vs_previous": c.verdict if c else "", "chained_vs_first": chained,
                         "read_MB_per_token": s["read_MB_per_token"], "token_agreement": s["token_agreement"],
                         "identical_tokens": s["identical"]})
        return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- waterfall
HIGHER_IS_BETTER = {"tokens_per_s": True, "speedup_vs_input": True, "agreement": True, "model_bytes": False,
                    "perplexity": False, "ttft_ms": False, "tpot_ms": False, "latency_s": False}
LABELS = {"model_bytes": "stored MB", "tokens_per_s": "decode tokens/s", "perplexity": "held-out perplexity",
          "ttft_ms": "time to first token (ms)", "agreement": "greedy agreement with input"}


def plot_waterfall(table, metric: str = "tokens_per_s", ax=None, scale: float | None = None):
    """A waterfall of ``metric`` over the stages: the input model's bar, then one floating bar per step
    from the previous value to the new one (green when it moved the good way, red otherwise), then the
    final value. ``model_bytes`` is shown in MB."""
    import matplotlib.pyplot as plt

    if metric not in table.columns:
        raise ValueError(f"metric {metric!r} is not in the table; choose one of {list(HIGHER_IS_BETTER)}")
    scale = scale if scale is not None else (1e-6 if metric == "model_bytes" else 1.0)
    vals = [float(v) * scale for v in table[metric]]
    names = list(table["step"])
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    up_good = HIGHER_IS_BETTER.get(metric, True)
    ax.bar(0, vals[0], color="0.6")
    ax.text(0, vals[0], f"{vals[0]:.3g}", ha="center", va="bottom", fontsize=8)
    for i in range(1, len(vals)):
        lo, hi = sorted((vals[i - 1], vals[i]))
        good = (vals[i] >= vals[i - 1]) == up_good
        color = "tab:green" if good else "tab:red"
        if vals[i] == vals[i - 1]:
            color = "0.8"
        ax.bar(i, max(hi - lo, 1e-12), bottom=lo, color=color)
        ax.plot([i - 1.4, i + 0.4], [vals[i - 1]] * 2, color="0.4", lw=0.6, ls=":")
        ratio = vals[i] / vals[i - 1] if vals[i - 1] else float("nan")
        ax.text(i, hi, f"×{ratio:.2f}", ha="center", va="bottom", fontsize=8)
    n = len(vals)
    ax.bar(n, vals[-1], color="tab:blue")
    ax.text(n, vals[-1], f"{vals[-1]:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(n + 1), names + ["result"], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(LABELS.get(metric, metric))
    return ax


def plot_waterfalls(table, metrics: Sequence[str] = ("model_bytes", "tokens_per_s", "perplexity"), title: str = ""):
    """One waterfall per metric, side by side; returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    for ax, m in zip(list(axes) if len(metrics) > 1 else [axes], metrics):
        plot_waterfall(table, m, ax=ax)
        ax.set_title(LABELS.get(m, m), fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- the diagram
DIAGRAM = ["input", "model compression", "algorithm optimization", "hardware acceleration", "output"]


def mermaid(steps: Sequence[Step] | None = None) -> str:
    """The source's diagram as a mermaid flowchart; with ``steps``, each box lists the steps in it."""
    inner = {b: [s.name for s in (steps or []) if s.stage == b] for b in DIAGRAM}
    lines = ["flowchart LR"]
    for i, b in enumerate(DIAGRAM):
        extra = ("<br/>" + "<br/>".join(inner[b])) if inner[b] else ""
        lines.append(f'    S{i}["{b}{extra}"]')
    lines.append("    " + " --> ".join(f"S{i}" for i in range(len(DIAGRAM))))
    return "\n".join(lines)


def plot_diagram(steps: Sequence[Step] | None = None, ax=None):
    """The same diagram drawn with matplotlib (so it shows in Colab and any notebook viewer)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 2.2))
    colors = ["0.85", "#c6dbef", "#c7e9c0", "#fdd0a2", "0.85"]
    w, gap = 1.8, 0.5
    for i, (b, c) in enumerate(zip(DIAGRAM, colors)):
        x = i * (w + gap)
        ax.add_patch(FancyBboxPatch((x, 0), w, 1, boxstyle="round,pad=0.05", fc=c, ec="0.3"))
        names = [s.name for s in (steps or []) if s.stage == b]
        ax.text(x + w / 2, 0.62 if names else 0.5, b.replace(" ", "\n", 1), ha="center", va="center", fontsize=9,
                weight="bold")
        if names:
            ax.text(x + w / 2, 0.2, "\n".join(names), ha="center", va="center", fontsize=7)
        if i < len(DIAGRAM) - 1:
            ax.annotate("", xy=(x + w + gap - 0.05, 0.5), xytext=(x + w + 0.08, 0.5),
                        arrowprops=dict(arrowstyle="->", lw=1.5))
    ax.set_xlim(-0.2, len(DIAGRAM) * (w + gap))
    ax.set_ylim(-0.2, 1.2)
    ax.axis("off")
    return ax
