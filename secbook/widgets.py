"""Interactive panels (ipywidgets) for the chapters. Each panel is built by a function here; its update
callback is a plain function that validates its inputs, so it can be unit-tested without a browser.
Shared by every chapter: add your own functions below."""
from __future__ import annotations


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
