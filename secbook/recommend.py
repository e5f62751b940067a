"""Which technique should I pick? Measure a handful of configurations and take the best one that fits.

``recommend(model, hardware, latency_budget, quality_budget)`` builds each configuration of a small sweep
with the pipeline steps of ``secbook.pipeline`` (fp32, bf16, dynamic int8, int8 and int4 weight-only, the
fast decode loop), measures its stored bytes, its reply latency and decode speed (``measure.time_generation``,
medians after warm-up) and its held-out perplexity, and returns the fastest configuration whose latency
and perplexity increase both stay within budget — with the whole table, so the choice can be checked.
For a GPU named in ``secbook.roofline.GPUS`` that is not present here, speed is *predicted* with the
roofline model (``roofline.predict`` with the configuration's real bytes per weight, an ideal lower bound
with no per-token overhead) and the table says so; quality is still measured here, because rounding the
weights changes the model's predictions the same way on any device.
"""
from __future__ import annotations

import copy
from pathlib import Path
from dataclasses import dataclass, field

import torch

from .pipeline import DynamicInt8, Dtype, FastDecode, Quantize, Step, TorchAO, apply_steps, measure_model

LOCAL = ("this machine", "here", "local", "auto")


def default_configs() -> dict[str, list[Step]]:
    """The sweep: a name per configuration and the pipeline steps that build it from the fp32 model."""
    return {
        "fp32": [],
        "bf16": [Dtype("bf16")],
        "dynamic int8": [DynamicInt8()],
        "int8 weight-only (torchao)": [TorchAO("int8wo")],
        "int4 weight-only g64": [Quantize(bits=4, group_size=64)],
        "fp32 + fast decode loop": [FastDecode()],
    }


@dataclass
class Recommendation:
    """The chosen configuration (``best``: a row of ``table`` as a dict, or ``None``) and the evidence."""
    best: dict | None
    table: object
    message: str
    hardware: str
    predicted: bool
    steps: list = field(default_factory=list)
    message_zh: str = ""  # the same message in Chinese, from the same numbers (for ``say(..., zh=...)``)

    def __str__(self) -> str:
        return self.message

    def _repr_markdown_(self) -> str:
        return self.message


def _check_budget(name: str, value) -> float | None:
    if value is None:
        return None
    what = ("seconds per reply, e.g. 1.0" if name == "latency_budget"
            else "allowed relative perplexity increase over fp32, e.g. 0.05 for +5 %")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0 or (
            name == "latency_budget" and value == 0):
        raise ValueError(f"{name} must be a positive number ({what}) or None, got {value!r}")
    return float(value)


def _resolve_hardware(hardware: str) -> tuple[str, bool]:
    """(label, predict?) for ``hardware``: this machine (measured), a GPU present here (measured), or a GPU
    from the roofline table that is not here (predicted)."""
    from .roofline import GPUS

    if str(hardware).lower() in LOCAL:
        return "this machine", False
    names = {k.lower(): k for k in GPUS}
    key = str(hardware).lower()
    if key not in names:
        raise ValueError(f"unknown hardware {hardware!r}; use 'this machine' or a GPU of the latency model: "
                         f"{list(GPUS)}")
    gpu = names[key]
    if torch.cuda.is_available() and all(w in torch.cuda.get_device_name(0).lower() for w in key.split()[:1]):
        return gpu, False
    return gpu, True


def _load(model_or_name, tokenizer):
    if isinstance(model_or_name, str):
        from .models import load
        return load(model_or_name)
    if isinstance(model_or_name, tuple) and len(model_or_name) == 2:
        return model_or_name
    if isinstance(model_or_name, torch.nn.Module):
        if tokenizer is None:
            raise ValueError("pass tokenizer= with a model object (or a name such as 'tiny')")
        return model_or_name, tokenizer
    raise TypeError(f"model_or_name must be a model name, a model (with tokenizer=) or a (model, tokenizer) pair; "
                    f"got {type(model_or_name).__name__}")


def sweep(model, tokenizer, configs: dict[str, list[Step]] | None = None, hardware: str = "this machine",
          prompt_len: int = 32, new_tokens: int = 32, repeats: int = 2, ppl_tokens: int = 512, progress: bool = False,
          rounds: int | None = None):
    """Measure every configuration (or predict its speed on a GPU that is not here); return a DataFrame.

    With ``rounds`` (measured here only), the configurations are also timed *in turn* — every round generates
    once with each of them (:func:`secbook.measure.tok_s_in_turn`), so a change in a shared machine's load hits
    all alike — and ``tokens_per_s`` is then the median of those rounds (new tokens ÷ the whole call, prompt
    included); ``df.attrs["rounds"]`` keeps them, for :func:`secbook.claims.compare`."""
    from tqdm.auto import tqdm

    from .measure import results_frame

    label, predict = _resolve_hardware(hardware)
    configs = configs or default_configs()
    dev = None
    if not predict and label != "this machine":
        dev = "cuda"
    elif not predict:
        from .hardware import pick_device
        dev = str(pick_device("auto"))
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds must be >= 1 (or None: no timing in turn), got {rounds}")
    in_turn = rounds is not None and not predict
    rows, ref, gens = [], None, {}
    for name, steps in tqdm(configs.items(), desc="recommend", disable=not progress):
        row = {"config": name, "steps": " → ".join(s.name for s in steps) or "(none)", "hardware": label}
        try:
            m = apply_steps(copy.deepcopy(model), tokenizer, steps, dev if not predict else None)
        except ValueError as e:
            rows.append({**row, "error": str(e)[:300]})
            continue
        r, tokens = measure_model(m, tokenizer, prompt_len, new_tokens, repeats, ppl_tokens, reference=ref,
                                  timing=not predict)
        if ref is None:
            ref = tokens
        row.update(r)
        row["speed_source"] = f"measured ({r['device']})"
        if predict:
            row.update(_predicted(m, label, prompt_len, new_tokens, name))
        if in_turn:
            gens[name] = _generate_fn(m, prompt_len + new_tokens)
        else:
            del m
        rows.append(row)
    df = results_frame(rows)
    if in_turn and gens:
        import statistics

        from .measure import prompt_ids, tok_s_in_turn

        ids = prompt_ids(tokenizer, prompt_len).to(dev)
        speeds = tok_s_in_turn(gens, ids, new_tokens, rounds=rounds, warmup=0)
        df.loc[df["config"].isin(list(speeds)), "tokens_per_s"] = [statistics.median(speeds[c]) for c in df["config"]
                                                                  if c in speeds]
        df.attrs["rounds"] = speeds
        del gens
    ok = df["perplexity"].notna() if "perplexity" in df else None
    if ok is not None and ok.any():
        base = df.loc[ok].iloc[0]
        df["ppl_change_pct"] = 100 * (df["perplexity"] / base["perplexity"] - 1)
        df["size_vs_fp32"] = df["model_bytes"] / base["model_bytes"]
    return df


def _generate_fn(model, max_len: int):
    """The greedy ``generate(ids, n)`` a configuration decodes with: our fast loop if a step attached it, else HF
    ``generate``."""
    from .measure import hf_generate_fn
    from .pipeline import generate_fn_for

    return generate_fn_for(model, max_len) or hf_generate_fn(model)


def _predicted(model, gpu: str, prompt_len: int, new_tokens: int, name: str) -> dict:
    """Roofline speed of this configuration on ``gpu``, from its real bytes per weight."""
    from .measure import model_bytes
    from .roofline import predict

    n = sum(p.numel() for p in model.parameters() if p.dtype.is_floating_point)
    if "dynamic int8" in name:
        return {"speed_source": "not applicable (torch.ao dynamic int8 is CPU-only)", "tokens_per_s": float("nan"),
                "latency_s": float("nan"), "ttft_ms": float("nan"), "tpot_ms": float("nan")}
    # quantized layers hold packed buffers, not parameters: count their weights from their shapes
    n += sum(m.in_features * m.out_features for m in model.modules()
             if callable(getattr(m, "storage_bytes", None)) and hasattr(m, "in_features"))
    bpw = min(max(model_bytes(model) / max(n, 1), 0.1), 8.0)
    p = predict(model, gpu, prompt_len=prompt_len, new_tokens=new_tokens, bytes_per_weight=bpw)
    return {"speed_source": f"predicted (roofline lower bound on {gpu}, {bpw:.2f} B/weight)",
            "tokens_per_s": p.tokens_per_s, "latency_s": p.latency_s, "ttft_ms": 1e3 * p.ttft_s,
            "tpot_ms": 1e3 * p.tpot_s, "first_call_s": float("nan")}


OBJECTIVES = {"speed": ("latency_s", True), "size": ("model_bytes", True), "quality": ("perplexity", True)}


def choose(df, latency_budget: float | None = None, quality_budget: float | None = None,
           objective: str = "speed"):
    """Mark which rows of a sweep table meet each budget; return ``(table, rows within both budgets sorted
    best first by objective)``. Budgets as in :func:`recommend`."""
    lat = _check_budget("latency_budget", latency_budget)
    qual = _check_budget("quality_budget", quality_budget)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    df = df.copy()
    ok = df["latency_s"].notna() if "latency_s" in df else df["config"].isna()
    df["meets_latency"] = ok & ((df["latency_s"] <= lat) if lat is not None else True)
    df["meets_quality"] = ok & ((df["ppl_change_pct"] <= 100 * qual) if qual is not None else True)
    df["meets_both"] = df["meets_latency"] & df["meets_quality"]
    col, asc = OBJECTIVES[objective]
    return df, df[df["meets_both"]].sort_values([col, "model_bytes"], ascending=[asc, True])


def recommend(model_or_name="tiny", hardware: str = "this machine", latency_budget: float | None = None,
              quality_budget: float | None = None, tokenizer=None, configs: dict[str, list[Step]] | None = None,
              objective: str = "speed", prompt_len: int = 32, new_tokens: int = 32, repeats: int = 2,
              ppl_tokens: int = 512, progress: bool = False) -> Recommendation:
    """Run the sweep and pick the best configuration that meets both budgets.

    ``latency_budget``: seconds allowed for one reply (a ``prompt_len``-token prompt, ``new_tokens`` new
    tokens), ``None`` = any. ``quality_budget``: allowed relative perplexity increase over fp32 (``0.05`` =
    +5 %), ``None`` = any. ``objective``: among configurations within budget, the fastest (``"speed"``), the
    smallest (``"size"``) or the most accurate (``"quality"``). ``hardware``: ``"this machine"`` or a GPU
    of ``secbook.roofline.GPUS`` (predicted when it is not present here).
    """
    lat = _check_budget("latency_budget", latency_budget)
    qual = _check_budget("quality_budget", quality_budget)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    _resolve_hardware(hardware)
    model, tok = _load(model_or_name, tokenizer)
    configs = configs or default_configs()
    df = sweep(model, tok, configs, hardware, prompt_len, new_tokens, repeats, ppl_tokens, progress)
    label, predicted = _resolve_hardware(hardware)
    df, fits = choose(df, lat, qual, objective)
    budget = (f"latency ≤ {lat:g} s per reply of {new_tokens} tokens" if lat is not None else "any latency") + \
        ", " + (f"perplexity ≤ +{100 * qual:g} % over fp32" if qual is not None else "any quality")
    how = "predicted with the roofline model (speed) and measured here (quality)" if predicted else "measured here"
    budget_zh = (f"每次 {new_tokens} 个词元的回复延迟 ≤ {lat:g} s" if lat is not None else "延迟不限") + \
        "，" + (f"困惑度比 fp32 至多高 {100 * qual:g} %" if qual is not None else "质量不限")
    how_zh = "速度由屋顶线模型预测，质量在本机测量" if predicted else "在本机测量"
    label_zh = "本机" if label == "this machine" else label
    if fits.empty:
        ok = df["latency_s"].notna() if "latency_s" in df else df["config"].isna()
        fastest = df.loc[df["latency_s"].idxmin()] if ok.any() else None
        best_q = df.loc[df["ppl_change_pct"].idxmin()] if ok.any() else None
        msg = (f"No configuration meets the budget ({budget}) on {label} ({how}). "
               + (f"Fastest: {fastest['config']} at {fastest['latency_s']:.3g} s per reply "
                  f"(perplexity {fastest['ppl_change_pct']:+.1f} %); most accurate: {best_q['config']} "
                  f"({best_q['latency_s']:.3g} s). Relax a budget, use a smaller model, or faster hardware."
                  if fastest is not None else ""))
        msg_zh = (f"在{label_zh}上（{how_zh}）没有任何配置满足预算（{budget_zh}）。"
                  + (f"最快的是 {fastest['config']}，每次回复 {fastest['latency_s']:.3g} s（困惑度 "
                     f"{fastest['ppl_change_pct']:+.1f} %）；最准确的是 {best_q['config']}（{best_q['latency_s']:.3g} s）。"
                     "请放宽预算、换用更小的模型或更快的硬件。" if fastest is not None else ""))
        return Recommendation(None, df, msg, label, predicted, [], msg_zh)
    best = fits.iloc[0].to_dict()
    msg = (f"On {label} ({how}), for {budget}: use **{best['config']}** — {best['latency_s']:.3g} s per reply, "
           f"{best['tokens_per_s']:.3g} tokens/s, {best['model_bytes'] / 1e6:.2f} MB, perplexity "
           f"{best['perplexity']:.2f} ({best['ppl_change_pct']:+.1f} % vs fp32). "
           f"{int(df['meets_both'].sum())} of {len(df)} configurations meet the budget.")
    msg_zh = (f"在{label_zh}上（{how_zh}），对于{budget_zh}：使用 **{best['config']}**——每次回复 "
              f"{best['latency_s']:.3g} s，每秒 {best['tokens_per_s']:.3g} 个词元，{best['model_bytes'] / 1e6:.2f} MB，"
              f"困惑度 {best['perplexity']:.2f}（相对 fp32 {best['ppl_change_pct']:+.1f} %）。"
              f"{len(df)} 个配置中有 {int(df['meets_both'].sum())} 个满足预算。")
    return Recommendation(best, df, msg, label, predicted, list(configs[best["config"]]), msg_zh)




# ----------------------------------------------------------------------------------------------- the book's results
SPEED_COLS = ("tokens_per_s", "tok_s", "decode_tokens_per_s", "decode_tok_s")
QUALITY_COLS = ("ppl_change_pct", "ppl_increase_pct", "perplexity_change_%")
PPL_COLS = ("perplexity", "ppl")
BYTES_COLS = ("model_bytes", "weight_bytes", "weights_MB", "bytes")
LABEL_COLS = ("variant", "config", "rung", "step", "label", "name", "transform")
AGREEMENT_COLS = ("token_agreement",)  # not "agreement": in some files it is the top-1 match
GROUP = ("source", "machine", "model")  # one protocol, one machine, one model: the only fair comparison


def _first(df, cols):
    return next((c for c in cols if c in df.columns), None)


def _baseline_index(group, labels) -> int:
    """The row a group's quality is measured against: its fp32 row if one is named so, else its first row."""
    for i in group.index:
        if str(labels[i]).lower().startswith(("fp32", "hf generate fp32")):
            return i
    return group.index[0]


def collect_results(results_dir=None):
    """Every ``data/results/*.csv`` that has a speed column, normalised to one table: ``source`` (CSV stem),
    ``machine`` (its GPU, else its CPU), ``model``, ``variant``, ``tokens_per_s``, ``model_bytes``,
    ``ppl_change_pct``, ``token_agreement`` and ``timestamp`` (the first of the rows' dates, if recorded).

    Quality is always against the same model on the same machine in the same file: a perplexity change column is
    taken as it is; a perplexity column is turned into a change against the fp32 row (else the first row) of the
    same (file, machine, model); the ladder's ``tiny_ppl_change`` (the *tiny* model's perplexity change under
    the same weight transform) is used for the tiny model's rows only. Token agreement is copied where a
    ``token_agreement`` column records it (an ``agreement`` column may hold the top-1 match instead: not copied).
    Rows with errors or no speed are dropped."""
    import pandas as pd

    from .paths import result_files

    frames = []
    for path in (sorted(Path(results_dir).glob("*.csv")) if results_dir else result_files()):
        try:
            df = pd.read_csv(path)
        except Exception:  # noqa: BLE001 — an unreadable CSV is skipped, not fatal
            continue
        speed = _first(df, SPEED_COLS)
        if speed is None or df.empty:
            continue
        out = pd.DataFrame({"source": path.stem, "tokens_per_s": pd.to_numeric(df[speed], errors="coerce")})
        gpu = df["gpu"].astype(str) if "gpu" in df else pd.Series("", index=df.index)
        cpu = df["cpu"].astype(str) if "cpu" in df else pd.Series("unknown machine", index=df.index)
        out["machine"] = [g if g and g.lower() not in ("none", "nan", "") else c for g, c in zip(gpu, cpu)]
        out["model"] = df["model"].astype(str) if "model" in df else "(not recorded)"
        lab = _first(df, LABEL_COLS)
        out["variant"] = df[lab].astype(str) if lab else [f"row {i}" for i in range(len(df))]
        b = _first(df, BYTES_COLS)
        out["model_bytes"] = (pd.to_numeric(df[b], errors="coerce") * (1e6 if b == "weights_MB" else 1)) if b \
            else float("nan")
        q, p = _first(df, QUALITY_COLS), _first(df, PPL_COLS)
        out["ppl_change_pct"] = float("nan")
        if q:
            out["ppl_change_pct"] = pd.to_numeric(df[q], errors="coerce")
        elif p:
            ppl = pd.to_numeric(df[p], errors="coerce")
            for _, g in out.groupby(["machine", "model"], sort=False):
                base = ppl[_baseline_index(g, out["variant"])]
                out.loc[g.index, "ppl_change_pct"] = 100 * (ppl[g.index] / base - 1)
        elif "tiny_ppl_change" in df:
            tiny = out["model"] == "tiny"
            out.loc[tiny, "ppl_change_pct"] = 100 * pd.to_numeric(df.loc[tiny, "tiny_ppl_change"], errors="coerce")
        a = _first(df, AGREEMENT_COLS)
        out["token_agreement"] = pd.to_numeric(df[a], errors="coerce") if a else float("nan")
        out["timestamp"] = df["timestamp"].astype(str) if "timestamp" in df else ""
        frames.append(out[out["tokens_per_s"].notna() & (out["tokens_per_s"] > 0)])
    cols = ["source", "machine", "model", "variant", "tokens_per_s", "model_bytes", "ppl_change_pct",
            "token_agreement", "timestamp"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def pareto_front(df, speed: str = "tokens_per_s", quality: str = "ppl_change_pct", size: str = "model_bytes",
                 by=None, higher_quality_is_better: bool = False):
    """Boolean Series: rows no other row beats on all of speed (higher), quality and size (lower). ``quality`` is a
    loss (lower is better, e.g. a perplexity change) unless ``higher_quality_is_better`` (e.g. accuracy or token
    agreement). With ``by`` (column names, e.g. :data:`GROUP`), each group has its own front: points measured on
    different machines, models or protocols never dominate each other."""
    import numpy as np
    import pandas as pd

    if by is not None:
        keep = pd.Series(False, index=df.index)
        for _, g in df.groupby(list(by), sort=False, dropna=False):
            keep[g.index] = pareto_front(g, speed, quality, size, None, higher_quality_is_better)
        return keep
    s = df[speed].to_numpy(float)
    q = df[quality].to_numpy(float)
    q = np.where(np.isnan(q), np.inf, -q if higher_quality_is_better else q)
    b = df[size].fillna(np.inf).to_numpy(float)
    keep = []
    for i in range(len(df)):
        dominated = ((s >= s[i]) & (q <= q[i]) & (b <= b[i]) & ((s > s[i]) | (q < q[i]) | (b < b[i]))).any()
        keep.append(not dominated)
    return pd.Series(keep, index=df.index)


def fastest_within(df, quality: str, tolerance: float, higher_is_better: bool = True, speed: str = "tokens_per_s",
                   baseline=None):
    """The recommender's rule on any measured table: the rows whose ``quality`` is within ``tolerance`` of the
    baseline row's (``baseline``: an index label; default the first row) — at most ``tolerance`` worse — sorted
    fastest first. E.g. ``fastest_within(t, "correct", 2)``: variants that answer at most two questions fewer than
    the baseline. Rows without a quality value never qualify."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    for col in (quality, speed):
        if col not in df.columns:
            raise ValueError(f"column {col!r} is not in the table; it has {list(df.columns)}")
    base = df[quality].loc[baseline] if baseline is not None else df[quality].iloc[0]
    gap = (base - df[quality]) if higher_is_better else (df[quality] - base)
    return df[gap.notna() & (gap <= tolerance)].sort_values(speed, ascending=False)
