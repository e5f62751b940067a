"""Comparing compressed models on one footing: held-out perplexity, agreement, real bytes, speed.

Every variant of chapter 3.1 (quantized, pruned, distilled) is scored by ``evaluate``: sliding-window
perplexity on the held-out text (the same windows as ``measure.perplexity``) and, in the same pass, the
fraction of positions where its greedy next token equals the uncompressed model's. ``sweep`` runs the
whole grid offline (``python -m secbook compress-sweep``) and writes ``data/results/compress_sweep.csv``
with machine columns; the notebooks recompute a few points live and load the rest, labelled as recorded.
"""
from __future__ import annotations

import math
import time

import torch

from .measure import PPL_TOKENS, top1_match

EVAL_TOKENS = PPL_TOKENS  # held-out tokens scored per variant: the book's perplexity protocol (measure.PPL_TOKENS)


def eval_ids(tokenizer, max_tokens: int = EVAL_TOKENS) -> torch.Tensor:
    """The first ``max_tokens`` token ids of the held-out text (tokenizing only what is needed)."""
    from .corpus import heldout_text

    text = heldout_text(max_chars=max_tokens * 8)
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0][:max_tokens]


@torch.no_grad()
def evaluate(model, ids: torch.Tensor, reference: list | None = None, window: int = 256, stride: int = 128):
    """``(perplexity, top-1 match, argmaxes)``: perplexity over ``ids`` with the windows of
    ``measure.perplexity``; top-1 match (``measure.top1_match``) of the scored positions' argmaxes with
    ``reference`` (the argmaxes returned by the uncompressed model's call), ``nan`` without a reference."""
    dev = next(model.parameters()).device
    nll, count, prev_end, tops = 0.0, 0, 0, []
    for begin in range(0, len(ids) - 1, stride):
        end = min(begin + window, len(ids))
        chunk = ids[begin:end].to(dev)[None]
        new = end - prev_end
        logits = model(input_ids=chunk).logits.float()[0, :-1]
        target = chunk[0, 1:]
        scored = slice(max(0, logits.shape[0] - new), logits.shape[0]) if prev_end else slice(0, logits.shape[0])
        nll += torch.nn.functional.cross_entropy(logits[scored], target[scored], reduction="sum").item()
        count += logits[scored].shape[0]
        tops.append(logits[scored].argmax(-1).cpu())
        prev_end = end
        if end == len(ids):
            break
    agree = top1_match(torch.cat(tops), torch.cat(reference)) if reference is not None else float("nan")
    return math.exp(nll / count), agree, tops


def decode_speed(model, tokenizer, new_tokens: int = 16, repeats: int = 3) -> float:
    """Decode tokens/s (batch 1, greedy) via ``measure.time_generation``; ``nan`` if it fails."""
    try:
        from .measure import time_generation
        return time_generation(model, tokenizer, prompt_len=32, new_tokens=new_tokens, warmup=1,
                               repeats=repeats).tokens_per_s
    except Exception as e:  # noqa: BLE001 — reported, never hidden
        print(f"speed not measured: {e}")
        return float("nan")


@torch.no_grad()
def forward_speed(model, tokens: int = 256, batch: int = 2, repeats: int = 3, vocab: int = 4096) -> float:
    """Prefill throughput (tokens/s) of one forward over ``batch × tokens`` ids: the work where matrix
    size, not per-token overhead, decides the time. Median of ``repeats`` after one warm-up."""
    import statistics

    dev = next(model.parameters()).device
    x = torch.randint(0, vocab, (batch, tokens), generator=torch.Generator().manual_seed(0)).to(dev)
    model(input_ids=x)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(input_ids=x)
        ts.append(time.perf_counter() - t0)
    return batch * tokens / statistics.median(ts)


@torch.no_grad()
def forward_speed_in_turn(models: dict, tokens: int = 256, batch: int = 2, rounds: int = 5,
                          vocab: int = 4096) -> dict[str, list[float]]:
    """Prefill throughput (tokens/s) of several models timed *in turn*: after one warm-up forward each, every
    round runs one forward over ``batch × tokens`` ids per model, so a change in a shared machine's load hits
    them alike (compare them with ``claims.compare``). Returns name → tokens/s per round."""
    if rounds < 1 or not models:
        raise ValueError(f"need at least one model and one round, got {len(models)} models and rounds={rounds}")
    x = torch.randint(0, vocab, (batch, tokens), generator=torch.Generator().manual_seed(0))
    for m in models.values():
        m(input_ids=x.to(next(m.parameters()).device))
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, m in models.items():
            xi = x.to(next(m.parameters()).device)
            t0 = time.perf_counter()
            m(input_ids=xi)
            speeds[name].append(batch * tokens / (time.perf_counter() - t0))
    return speeds


def model_size(model) -> int:
    """Bytes of the model as stored (``measure.model_bytes`` when available)."""
    try:
        from .measure import model_bytes
        return int(model_bytes(model))
    except ImportError:
        from .quantize import param_bytes
        return param_bytes(model)


def variants(quick: bool = False) -> list[dict]:
    """The grid of chapter 3.1: one dict of keyword arguments per compressed variant."""
    v = [{"family": "fp32"}]
    for bits, g in [(8, None), (4, 64), (4, None), (3, 64), (3, None), (2, 64)]:
        v.append({"family": "rtn", "bits": bits, "group_size": g, "scheme": "sym"})
    if not quick:
        v += [{"family": "rtn", "bits": b, "group_size": 64, "scheme": "asym"} for b in (4, 3, 2)]
    for bits, g in [(4, 64), (3, 64), (3, None), (2, 64)]:
        v.append({"family": "gptq", "bits": bits, "group_size": g, "scheme": "sym"})
    if not quick:
        v += [{"family": "awq", "bits": b, "group_size": 64, "scheme": "sym"} for b in (4, 3, 2)]
        v += [{"family": "dynamic_int8"}, {"family": "bnb", "mode": "int8"}, {"family": "bnb", "mode": "nf4"},
              {"family": "bnb", "mode": "fp4"}, {"family": "torchao", "kind": "int8wo"}]
    sp = [0.5] if quick else [0.3, 0.5, 0.7, 0.9]
    for m in ("magnitude", "wanda"):
        v += [{"family": "prune", "method": m, "pattern": "unstructured", "sparsity": s} for s in sp]
        v.append({"family": "prune", "method": m, "pattern": "2:4", "sparsity": 0.5})
    fr = [0.5] if quick else [0.25, 0.5, 0.75]
    v += [{"family": "structured", "mlp_fraction": f, "head_fraction": 0.0} for f in fr]
    if not quick:
        v += [{"family": "structured", "mlp_fraction": 0.5, "head_fraction": 0.5}]
    return v


def build_variant(spec: dict, model_name: str = "tiny", calib=None):
    """Load a fresh copy of ``model_name`` and compress it as ``spec`` says; return ``(model, tokenizer, info)``."""
    from . import load, prune, quantize

    model, tok = load(model_name)
    f = spec["family"]
    info = {}
    if f in ("rtn", "gptq", "awq"):
        model, rep = quantize.quantize(model, spec["bits"], spec["group_size"], spec["scheme"],
                                       method=f, calib=calib)
        info = {"layer_ratio": rep.ratio, "seconds": rep.seconds}
    elif f == "dynamic_int8":
        model = quantize.dynamic_int8(model)
    elif f == "bnb":
        model = quantize.bnb_quantize(model_name, spec["mode"])
    elif f == "torchao":
        model = quantize.torchao_quantize(model, spec["kind"])
    elif f == "prune":
        model, rep = prune.prune(model, spec["sparsity"], spec["method"], spec["pattern"], calib=calib)
        info = {"measured_sparsity": rep["sparsity"]}
    elif f == "structured":
        model, rep = prune.prune_structured(model, spec["mlp_fraction"], spec["head_fraction"], calib=calib)
    elif f != "fp32":
        raise ValueError(f"unknown family {f!r}")
    return model, tok, info


def label(spec: dict) -> str:
    f = spec["family"]
    if f in ("rtn", "gptq", "awq"):
        g = "pc" if spec["group_size"] is None else f"g{spec['group_size']}"
        return f"{f} int{spec['bits']} {g} {spec['scheme']}"
    if f == "bnb":
        return f"bnb {spec['mode']}"
    if f == "torchao":
        return f"torchao {spec['kind']}"
    if f == "prune":
        return f"{spec['method']} {spec['pattern']} {spec['sparsity']:.0%}" if spec["pattern"] != "2:4" else \
            f"{spec['method']} 2:4"
    if f == "structured":
        return f"structured mlp-{spec['mlp_fraction']:.0%} heads-{spec['head_fraction']:.0%}"
    return f


def sweep(model_name: str = "tiny", quick: bool = False, speed: bool = True, max_tokens: int = EVAL_TOKENS,
          name: str = "compress_sweep", progress: bool = True):
    """Evaluate every variant; save ``data/results/<name>.csv`` (with machine columns); return the frame."""
    import pandas as pd
    from tqdm.auto import tqdm

    from . import load
    from .quantize import calibration_ids

    base, tok = load(model_name)
    ids = eval_ids(tok, max_tokens)
    calib = calibration_ids(tok, 32, 256)
    _, _, ref = evaluate(base, ids)
    base_bytes = model_size(base)
    rows = []
    for spec in tqdm(variants(quick), desc="compress-sweep", disable=not progress):
        t0 = time.perf_counter()
        try:
            model, tok, info = build_variant(spec, model_name, calib)
            ppl, agree, _ = evaluate(model, ids, ref)
            size = model_size(model)
            row = {**spec, "variant": label(spec), "perplexity": ppl, "agreement": agree, "model_bytes": size,
                   "size_vs_fp32": size / base_bytes, **info}
            if speed:
                row["decode_tokens_per_s"] = decode_speed(model, tok)
                row["prefill_tokens_per_s"] = forward_speed(model)
        except Exception as e:  # noqa: BLE001 — a library path that does not run here is a result too
            row = {**spec, "variant": label(spec), "error": f"{type(e).__name__}: {e}"[:200]}
        row["build_and_eval_s"] = time.perf_counter() - t0
        row["torch_threads"] = torch.get_num_threads()
        rows.append(row)
        if progress:
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    df = pd.DataFrame(rows)
    fp = df.loc[df.family == "fp32", "perplexity"].iloc[0]
    df["ppl_increase_pct"] = 100 * (df["perplexity"] / fp - 1)
    df["eval_tokens"] = len(ids)
    try:
        from .measure import results_frame, save_results
        df = results_frame(df.to_dict("records"))
        save_results(df, name)
    except ImportError:
        from .paths import RESULTS_DIR
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS_DIR / f"{name}.csv.tmp"
        df.to_csv(tmp, index=False)
        tmp.replace(RESULTS_DIR / f"{name}.csv")
    return df
