"""Interactive panels (ipywidgets) for the chapters. Each panel is built by a function here; its update
callback is a plain function that validates its inputs, so it can be unit-tested without a browser.
Shared by every chapter: add your own functions below."""
from __future__ import annotations

from .measure import PPL_TOKENS


# ------------------------------------------------------------------ chapter 4: the latency model
LATENCY_RANGES = {"params_b": (0.01, 500.0), "bits": (1, 32), "batch": (1, 4096), "context": (1, 1_000_000),
                  "new_tokens": (2, 100_000)}


def _check_range(name: str, value, lo, hi) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")


def latency_model_update(params_b: float, bits: float, hardware, batch: int, context: int,
                         new_tokens: int = 128, extra_hardware: dict | None = None):
    """The widget's callback without the widget: roofline prediction for a ``params_b``-billion-parameter
    model stored at ``bits`` bits per weight on ``hardware`` (a GPU name from ``secbook.roofline.GPUS``, a
    key of ``extra_hardware`` or a ``Hardware``). Returns ``(Prediction, one-paragraph text)``."""
    from .roofline import GPUS, Hardware, predict

    for name, v in (("params_b", params_b), ("bits", bits), ("batch", batch), ("context", context),
                    ("new_tokens", new_tokens)):
        _check_range(name, v, *LATENCY_RANGES[name])
    table = {**GPUS, **(extra_hardware or {})}
    if isinstance(hardware, Hardware):
        hw = hardware
    elif hardware in table:
        hw = table[hardware]
    else:
        raise ValueError(f"unknown hardware {hardware!r}; choose one of {list(table)}")
    p = predict(params_b * 1e9, hw, batch=int(batch), prompt_len=int(context), new_tokens=int(new_tokens),
                bytes_per_weight=bits / 8)
    text = (f"{hw.name}: {params_b:g} B parameters × {bits:g} bits = {p.weight_bytes / 1e9:.2f} GB of weights"
            f"{'' if p.fits_in_memory else ' (does NOT fit in memory)'}. "
            f"TTFT {p.ttft_s * 1e3:.2f} ms ({p.prefill_bound}-bound, {p.prefill_intensity:.0f} FLOP/B); "
            f"TPOT {p.tpot_s * 1e3:.3f} ms ({p.decode_bound}-bound, {p.decode_intensity:.1f} FLOP/B; "
            f"ridge {p.ridge:.0f} FLOP/B); {p.tokens_per_s:,.0f} tokens/s over the batch of {batch}.")
    return p, text


def latency_model_widget(extra_hardware: dict | None = None, params_b: float = 1.0, bits: int = 16,
                         hardware: str = "A100 80GB SXM", batch: int = 1, context: int = 512):
    """Sliders for model size, bits per weight, GPU, batch and context → predicted TTFT, TPOT, tokens/s,
    the bound, and the roofline plot with the prefill and decode points (chapter 4)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt

    from .roofline import GPUS, get_hardware, plot_roofline, prediction_points

    names = list(GPUS) + list(extra_hardware or {})
    size = W.FloatLogSlider(value=params_b, base=10, min=-1, max=2.5, step=0.05, description="params (B)")
    bits_w = W.Dropdown(options=[32, 16, 8, 4], value=bits, description="bits/weight")
    hw_w = W.Dropdown(options=names, value=hardware, description="hardware")
    batch_w = W.IntSlider(value=batch, min=1, max=512, description="batch")
    ctx_w = W.IntSlider(value=context, min=16, max=32768, step=16, description="context")
    label, out = W.HTML(), W.Output()

    def update(*_):
        p, text = latency_model_update(size.value, bits_w.value, hw_w.value, batch_w.value, ctx_w.value,
                                       extra_hardware=extra_hardware)
        label.value = f"<p>{text}</p>"
        hw = (extra_hardware or {}).get(hw_w.value) or get_hardware(hw_w.value)
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 3.6))
            plot_roofline(hw, prediction_points(p), bytes_per_weight=bits_w.value / 8, ax=ax)
            plt.show()
        return p

    for w in (size, bits_w, hw_w, batch_w, ctx_w):
        w.observe(update, names="value")
    box = W.VBox([W.HBox([size, bits_w, hw_w]), W.HBox([batch_w, ctx_w]), label, out])
    box.update = update  # for tests and for a first render
    box.controls = dict(params_b=size, bits=bits_w, hardware=hw_w, batch=batch_w, context=ctx_w)
    update()
    return box


# ------------------------------------------------------------------ chapter 3.3: will it fit?
FIT_RANGES = {"batch": (1, 1024), "context": (1, 1_048_576)}


def memory_fit_update(gpu: str, model: str, dtype: str, batch: int, context: int, ax=None):
    """The fit widget's callback without the widget: the memory estimate of ``model`` (a name in
    ``secbook.memory.CONFIGS``) on ``gpu`` (a name in ``secbook.memory.GPUS``) in ``dtype`` with this batch and
    context. Draws the breakdown as a stacked bar against the GPU's memory on ``ax`` (if given) and returns
    ``(MemoryEstimate, one-line verdict)``."""
    from .memory import BYTES_PER_PARAM, CONFIGS, GIB, GPUS, estimate, max_context

    for name, v in (("batch", batch), ("context", context)):
        _check_range(name, v, *FIT_RANGES[name])
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; choose one of {list(GPUS)}")
    if model not in CONFIGS:
        raise ValueError(f"unknown model {model!r}; choose one of {list(CONFIGS)}")
    if dtype not in BYTES_PER_PARAM:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {list(BYTES_PER_PARAM)}")
    e = estimate(model, dtype, int(batch), int(context), gpu)
    longest = max_context(model, gpu, dtype, int(batch))
    verdict = (f"{model} in {dtype} on {gpu}: {e.total / GIB:.1f} GiB of {GPUS[gpu]} GiB → "
               f"{'fits' if e.fits else 'does NOT fit'} (weights {e.weights / GIB:.1f}, KV cache "
               f"{e.kv_cache / GIB:.2f}, activations {e.activations / GIB:.2f}, runtime {e.runtime / GIB:.1f} GiB); "
               + (f"longest context that fits at batch {batch}: {longest:,} tokens."
                  if longest else "not even the weights fit."))
    if gpu == "T4" and dtype == "bf16":
        verdict += " Note: a T4 has no bf16 — use fp16 there."
    if ax is not None:
        left = 0.0
        for part, color in (("weights", "#4c72b0"), ("kv_cache", "#dd8452"), ("activations", "#55a868"),
                            ("runtime", "#8172b3")):
            w = getattr(e, part) / GIB
            ax.barh([0], [w], left=left, color=color, label=part.replace("_", " "))
            left += w
        ax.axvline(GPUS[gpu], color="red", lw=2, label=f"{gpu} memory")
        ax.set_xlim(0, max(left, GPUS[gpu]) * 1.08)
        ax.set_yticks([])
        ax.set_xlabel("GiB")
        ax.set_title("fits" if e.fits else "does not fit", color="green" if e.fits else "red")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=5, fontsize=8, frameon=False)
    return e, verdict


def memory_fit_widget(gpu: str = "T4", model: str = "Llama-3.1-8B", dtype: str = "fp16", batch: int = 1,
                      context: int = 8192):
    """Dropdowns and sliders for GPU, model, dtype, batch and context → fits / does not fit, with the memory
    breakdown bar (chapter 3.3)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt

    from .memory import BYTES_PER_PARAM, CONFIGS, GPUS

    gpu_w = W.Dropdown(options=list(GPUS), value=gpu, description="GPU")
    model_w = W.Dropdown(options=list(CONFIGS), value=model, description="model")
    dtype_w = W.Dropdown(options=list(BYTES_PER_PARAM), value=dtype, description="dtype")
    batch_w = W.IntSlider(value=batch, min=1, max=64, description="batch")
    ctx_w = W.IntSlider(value=context, min=256, max=131072, step=256, description="context")
    label, out = W.HTML(), W.Output()

    def update(*_):
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 1.8))
            _, text = memory_fit_update(gpu_w.value, model_w.value, dtype_w.value, batch_w.value, ctx_w.value, ax)
            fig.tight_layout()
            plt.show()
        label.value = text

    for w in (gpu_w, model_w, dtype_w, batch_w, ctx_w):
        w.observe(update, names="value")
    update()
    return W.VBox([W.HBox([gpu_w, model_w, dtype_w]), W.HBox([batch_w, ctx_w]), label, out])


# ------------------------------------------------------------------ chapter 1: latency panel
LATENCY_PANEL_MODELS = ("tiny", "smollm2-135m-instruct", "replica:smollm2-135m")
LATENCY_PANEL_RANGES = {"prompt_len": (1, 256), "new_tokens": (2, 64)}
_PANEL_MODELS: dict = {}


def _panel_model(name: str):
    """Load (once) one of the panel's models."""
    if name not in LATENCY_PANEL_MODELS:
        raise ValueError(f"model must be one of {list(LATENCY_PANEL_MODELS)}, got {name!r}")
    if name not in _PANEL_MODELS:
        from .models import load

        _PANEL_MODELS[name] = load(name)
    return _PANEL_MODELS[name]


def latency_update(model: str, prompt_len: int, new_tokens: int, repeats: int = 3):
    """The chapter-1 panel's callback: measure TTFT, TPOT and tokens/s of ``model`` for a held-out prompt of
    ``prompt_len`` tokens and ``new_tokens`` new tokens. Returns ``(Timing, one-line text)``."""
    from .measure import describe_machine, time_generation

    for name, v in (("prompt_len", prompt_len), ("new_tokens", new_tokens)):
        _check_range(name, v, *LATENCY_PANEL_RANGES[name])
    m, tok = _panel_model(model)
    t = time_generation(m, tok, prompt_len=int(prompt_len), new_tokens=int(new_tokens), repeats=repeats)
    text = (f"{model}: prompt {prompt_len} tokens, {new_tokens} new tokens → TTFT {t.ttft_s * 1e3:.1f} ms, "
            f"TPOT {t.tpot_s * 1e3:.1f} ms, {t.tokens_per_s:.1f} tokens/s, total {t.latency_s * 1e3:.0f} ms "
            f"(median of {t.repeats}; measured now on {describe_machine()})")
    return t, text


def latency_panel(model: str = "tiny", prompt_len: int = 32, new_tokens: int = 32):
    """Prompt length, new tokens and model → a fresh measurement each time a control changes (chapter 1)."""
    import ipywidgets as W

    lo, hi = LATENCY_PANEL_RANGES["prompt_len"]
    p_w = W.IntSlider(value=prompt_len, min=lo, max=hi, description="prompt tokens", continuous_update=False)
    lo, hi = LATENCY_PANEL_RANGES["new_tokens"]
    n_w = W.IntSlider(value=new_tokens, min=lo, max=hi, description="new tokens", continuous_update=False)
    m_w = W.Dropdown(options=list(LATENCY_PANEL_MODELS), value=model, description="model")
    label = W.HTML()

    def update(*_):
        label.value = "<p>measuring…</p>"
        t, text = latency_update(m_w.value, p_w.value, n_w.value)
        label.value = f"<p>{text}</p>"
        return t

    for w in (p_w, n_w, m_w):
        w.observe(update, names="value")
    box = W.VBox([W.HBox([m_w, p_w, n_w]), label])
    box.update = update
    box.controls = dict(model=m_w, prompt_len=p_w, new_tokens=n_w)
    update()
    return box


# ------------------------------------------------------------------ chapter 6: timed streaming
STREAM_RANGES = {"new_tokens": (1, 128), "prompt_chars": (1, 2000)}


def streaming_update(model, tokenizer, prompt: str, new_tokens: int, out=None, chat: bool = False):
    """The chapter-6 panel's callback: stream a greedy continuation of ``prompt`` (with ``chat=True``, a chat
    model's reply to it as a user turn, stopping at its end-of-turn token) into ``out`` (an
    ``ipywidgets.Output``, or stdout when ``None``) with the elapsed time, then TTFT/TPOT. Returns the
    ``secbook.apps.StreamResult``."""
    import contextlib

    from .apps import live_printer, stream

    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    _check_range("prompt length (characters)", len(prompt), *STREAM_RANGES["prompt_chars"])
    _check_range("new_tokens", new_tokens, *STREAM_RANGES["new_tokens"])
    ctx = out if out is not None else contextlib.nullcontext()
    with ctx:
        if out is not None:
            out.clear_output()
        print(("user: " + prompt + "\nassistant: ") if chat else prompt, end="", flush=True)
        r = stream(model, tokenizer, prompt, new_tokens=int(new_tokens), on_text=live_printer(8),
                   stop_at_eos=chat, chat=chat)
        print(f"\n\nTTFT {r.ttft_s * 1e3:.1f} ms · TPOT {r.tpot_s * 1e3:.1f} ms · "
              f"{r.tokens_per_s:.1f} tokens/s · {len(r.tokens)} tokens in {r.total_s * 1e3:.0f} ms")
    return r


def streaming_panel(model, tokenizer, prompt: str = "def fibonacci(n):", new_tokens: int = 48, chat: bool = False):
    """Type a prompt, press Generate, watch the tokens arrive with their timings (chapter 6); ``chat=True`` for a
    chat model (the prompt is sent as a user turn)."""
    import ipywidgets as W

    text = W.Textarea(value=prompt, description="prompt", layout=W.Layout(width="60%", height="5em"))
    lo, hi = STREAM_RANGES["new_tokens"]
    n_w = W.IntSlider(value=new_tokens, min=lo, max=hi, description="new tokens")
    button = W.Button(description="Generate", button_style="primary")
    out = W.Output()

    def update(*_):
        return streaming_update(model, tokenizer, text.value, n_w.value, out=out, chat=chat)

    button.on_click(update)
    box = W.VBox([text, W.HBox([n_w, button]), out])
    box.update = update
    box.controls = dict(prompt=text, new_tokens=n_w, button=button)
    return box


# ------------------------------------------------------------------ chapter 3.1: compression
COMPRESSION_METHODS = ("fp32", "rtn", "gptq", "awq", "magnitude", "wanda", "magnitude 2:4", "wanda 2:4")
COMPRESSION_GROUPS = (None, 32, 64, 128)


def compression_update(method: str = "rtn", bits: int = 4, group_size=64, scheme: str = "sym",
                       sparsity: float = 0.5, model_name: str = "tiny", eval_tokens: int = PPL_TOKENS, calib=None):
    """The compression panel's callback: compress a fresh ``model_name`` and measure it live. ``method``
    is one of ``COMPRESSION_METHODS`` (quantizers use ``bits``, ``group_size``, ``scheme``; pruners use
    ``sparsity``). Returns ``(row dict, one-line text)`` with perplexity on ``eval_tokens`` held-out tokens,
    real bytes and prefill tokens/s."""
    from . import load
    from .compress import eval_ids, evaluate, forward_speed, model_size
    from .measure import perplexity_protocol
    from .prune import prune
    from .quantize import SCHEMES, SUPPORTED_BITS, calibration_ids, quantize

    if method not in COMPRESSION_METHODS:
        raise ValueError(f"method must be one of {COMPRESSION_METHODS}, got {method!r}")
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    if group_size not in COMPRESSION_GROUPS:
        raise ValueError(f"group_size must be one of {COMPRESSION_GROUPS} (None = per-channel), got {group_size!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    _check_range("sparsity", sparsity, 0.0, 0.95)
    _check_range("eval_tokens", eval_tokens, 256, 32768)
    model, tok = load(model_name)
    if method in ("gptq", "awq", "wanda", "wanda 2:4") and calib is None:
        calib = calibration_ids(tok, 8, 256)
    if method in ("rtn", "gptq", "awq"):
        model, _ = quantize(model, bits, group_size, scheme, method=method, calib=calib)
        what = f"{method} int{bits} {'per-channel' if group_size is None else f'g{group_size}'} {scheme}"
    elif method != "fp32":
        pattern = "2:4" if method.endswith("2:4") else "unstructured"
        model, rep = prune(model, sparsity, method.split()[0], pattern, calib=calib)
        what = f"{method} ({rep['sparsity']:.0%} zeros)"
    else:
        what = "fp32"
    ppl, _, _ = evaluate(model, eval_ids(tok, eval_tokens))
    row = {"variant": what, "perplexity": ppl, "bytes": model_size(model),
           "prefill_tokens_per_s": forward_speed(model, repeats=2)}
    text = (f"{what}: perplexity {ppl:.2f} ({perplexity_protocol(eval_tokens)}) · {row['bytes'] / 1e6:.2f} MB · "
            f"{row['prefill_tokens_per_s']:.0f} prefill tokens/s")
    return row, text


def compression_panel(method: str = "rtn", bits: int = 4, group_size=64, scheme: str = "sym",
                      sparsity: float = 0.5, model_name: str = "tiny"):
    """Dropdowns and a slider for method, bits, group size, scheme and sparsity; "Measure" compresses the
    model and prints live perplexity, size and speed (chapter 3.1)."""
    import ipywidgets as W

    m_w = W.Dropdown(options=COMPRESSION_METHODS, value=method, description="method")
    b_w = W.Dropdown(options=[8, 4, 3, 2], value=bits, description="bits")
    g_w = W.Dropdown(options=[("per-channel", None), ("32", 32), ("64", 64), ("128", 128)], value=group_size,
                     description="group size")
    s_w = W.Dropdown(options=["sym", "asym"], value=scheme, description="scheme")
    sp_w = W.FloatSlider(value=sparsity, min=0.0, max=0.95, step=0.05, description="sparsity")
    button = W.Button(description="Measure", button_style="primary")
    out = W.HTML()

    def update(*_):
        row, text = compression_update(m_w.value, b_w.value, g_w.value, s_w.value, sp_w.value, model_name)
        out.value = f"<b>{text}</b>"
        return row, text

    button.on_click(update)
    box = W.VBox([W.HBox([m_w, b_w, g_w]), W.HBox([s_w, sp_w, button]), out])
    box.update = update
    box.controls = dict(method=m_w, bits=b_w, group_size=g_w, scheme=s_w, sparsity=sp_w, button=button)
    return box


# ------------------------------------------------------------------ chapter 3.2: generation algorithms
GENERATION_RANGES = {"batch": (1, 64), "context": (16, 1024), "gamma": (1, 16), "alpha": (0.0, 1.0)}


def generation_update(batch: int, context: int, gamma: int, attention: str, alpha: float = 0.7,
                      draft_cost: float = 0.3, model=None, time_attention: bool = True):
    """The chapter-3.2 panel's callback without the widget. For the tiny model (or ``model``): the KV cache at
    ``batch`` × ``context`` (formula), speculative decoding's expected tokens per target call and speed-up at
    draft length ``gamma`` (acceptance ``alpha``, draft cost ``draft_cost`` of a target call), static vs
    continuous batching at ``batch`` slots (simulation), and — if ``time_attention`` — one prefill of
    ``context`` tokens timed with ``attention`` ("eager" or "sdpa"). Returns a dict of the numbers."""
    from .attention import available_implementations, set_attention, time_prefill
    from .batching import simulate, workload
    from .kvcache import kv_cache_bytes
    from .speculative import expected_tokens_per_call

    for name, v in (("batch", batch), ("context", context), ("gamma", gamma), ("alpha", alpha)):
        _check_range(name, v, *GENERATION_RANGES[name])
    if attention not in available_implementations():
        raise ValueError(f"attention must be one of {available_implementations()}, got {attention!r}")
    if model is None:
        from .models import load

        model = load("tiny")[0]
    e = expected_tokens_per_call(alpha, int(gamma))
    w = workload(48, seed=0)
    s, c = simulate(w, "static", int(batch)), simulate(w, "continuous", int(batch))
    out = {"kv_cache_MB": kv_cache_bytes(model.config, int(context), int(batch)) / 1e6,
           "expected_tokens_per_call": e, "speculative_speedup": e / (int(gamma) * draft_cost + 1),
           "static_tok_s": s["throughput_tok_s"], "continuous_tok_s": c["throughput_tok_s"],
           "static_latency_steps": s["mean_latency_steps"], "continuous_latency_steps": c["mean_latency_steps"]}
    if time_attention:
        set_attention(model, attention)
        out["prefill_ms"] = time_prefill(model, int(context), repeats=1) * 1e3
        set_attention(model, "sdpa")
    return out


def generation_widget(batch: int = 4, context: int = 256, gamma: int = 4, attention: str = "sdpa",
                      alpha: float = 0.7):
    """Sliders for batch size, context length, draft length γ and the attention implementation (chapter 3.2)."""
    import ipywidgets as W

    from .attention import available_implementations
    from .models import load

    model = load("tiny")[0]
    b = W.IntSlider(value=batch, min=1, max=64, description="batch")
    ctx = W.IntSlider(value=context, min=16, max=1024, step=16, description="context")
    g = W.IntSlider(value=gamma, min=1, max=16, description="draft γ")
    a = W.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="accept α")
    att = W.Dropdown(options=available_implementations(), value=attention, description="attention")
    label = W.HTML()

    def update(*_):
        r = generation_update(b.value, ctx.value, g.value, att.value, a.value, model=model)
        label.value = (f"<p>KV cache of the tiny model for {b.value} × {ctx.value} positions (fp32): "
                       f"<b>{r['kv_cache_MB']:.2f} MB</b>. Prefill of {ctx.value} tokens with <b>{att.value}</b> "
                       f"attention: <b>{r['prefill_ms']:.1f} ms</b>. Speculative, γ={g.value}, α={a.value:.2f}: "
                       f"{r['expected_tokens_per_call']:.2f} tokens per target call, ≈{r['speculative_speedup']:.2f}× "
                       f"if a draft step costs 0.3 of a target step. Serving {b.value} slots: static batching "
                       f"{r['static_tok_s']:.0f} tok/s, mean wait {r['static_latency_steps']:.0f} steps; continuous "
                       f"{r['continuous_tok_s']:.0f} tok/s, {r['continuous_latency_steps']:.0f} steps.</p>")
        return r

    for w in (b, ctx, g, a, att):
        w.observe(update, names="value")
    box = W.VBox([W.HBox([b, ctx, att]), W.HBox([g, a]), label])
    box.update = update
    box.controls = dict(batch=b, context=ctx, gamma=g, alpha=a, attention=att)
    update()
    return box


# ------------------------------------------------------------------ chapter 2: the pipeline
PIPELINE_CHOICES = ("int4", "int8", "dynamic_int8", "prune", "fast_decode", "bf16", "device")


def pipeline_update(model, tokenizer, steps, new_tokens: int = 8, ppl_tokens: int = PPL_TOKENS):
    """The pipeline panel's callback without the widget: apply the named ``steps`` (from
    ``PIPELINE_CHOICES``, in order) to a copy of ``model`` and return the pipeline's summary table."""
    from .pipeline import Pipeline, summary

    steps = list(steps)
    bad = [s for s in steps if s not in PIPELINE_CHOICES]
    if bad:
        raise ValueError(f"unknown step(s) {bad}; choose from {list(PIPELINE_CHOICES)}")
    _check_range("new_tokens", new_tokens, 2, 256)
    _check_range("ppl_tokens", ppl_tokens, 16, 32768)
    p = Pipeline(steps, prompt_len=16, new_tokens=new_tokens, repeats=2, ppl_tokens=ppl_tokens)
    p.apply(model, tokenizer)
    return summary(p.table)


def pipeline_widget(model, tokenizer, steps=("dynamic_int8", "fast_decode")):
    """Pick steps (in order) and press Run: the measured table after each stage (chapter 2)."""
    import ipywidgets as W
    from IPython.display import display

    pick = W.SelectMultiple(options=PIPELINE_CHOICES, value=tuple(steps), description="steps", rows=7)
    button, out = W.Button(description="Run pipeline"), W.Output()

    def update(*_):
        table = pipeline_update(model, tokenizer, pick.value)
        with out:
            out.clear_output(wait=True)
            display(table)
        return table

    button.on_click(update)
    box = W.VBox([W.HBox([pick, button]), out])
    box.update, box.controls = update, dict(steps=pick)
    return box
