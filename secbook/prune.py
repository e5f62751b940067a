"""Pruning: remove weights (unstructured, 2:4) or whole heads and channels (structured).

*Magnitude pruning* (Han et al., 2015) zeroes the weights of smallest |w| in each layer. *Wanda* (Sun et
al., 2023) scores each weight by ``|w_ij| · ‖x_j‖₂`` — its magnitude times the L2 norm of its input
channel over a little calibration data — and removes the lowest scores within each output row, with no
retraining. *2:4 semi-structured* sparsity keeps 2 weights out of every 4 consecutive inputs, the pattern
NVIDIA's sparse tensor cores accelerate (Mishra et al., 2021). Zeros inside a dense matrix cost the same
time as any other number: a dense kernel multiplies them anyway, so unstructured sparsity saves nothing
without a sparse format or special hardware. *Structured* pruning removes whole attention heads (Michel
et al., 2019) and MLP channels (as in LLM-Pruner, Ma et al., 2023, here scored Wanda-style without
recovery training): the matrices really shrink, the config is updated, and dense kernels get faster.
"""
from __future__ import annotations

import copy
import time

import torch
from torch import nn

from .quantize import as_conv1d, collect_inputs, decoder_blocks, is_conv1d, linear_layers, linearize

METHODS = ("magnitude", "wanda")
PATTERNS = ("unstructured", "2:4")


def check_sparsity(sparsity: float) -> float:
    if not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be a fraction in [0, 1), got {sparsity!r}")
    return float(sparsity)


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean keep-mask removing the ``sparsity`` fraction of smallest |w| in the whole layer."""
    check_sparsity(sparsity)
    k = int(w.numel() * sparsity)
    if k == 0:
        return torch.ones_like(w, dtype=torch.bool)
    thresh = w.abs().flatten().kthvalue(k).values
    mask = w.abs() > thresh
    # ties at the threshold: drop exactly k
    extra = int((~mask).sum()) - k
    if extra > 0:
        tied = torch.nonzero((w.abs() == thresh).flatten()).flatten()[:extra]
        mask.view(-1)[tied] = True
    return mask


def row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask removing exactly ``int(in·sparsity)`` lowest scores in every row (Wanda's comparison group)."""
    check_sparsity(sparsity)
    k = int(score.shape[1] * sparsity)
    mask = torch.ones_like(score, dtype=torch.bool)
    if k:
        idx = torch.topk(score, k, dim=1, largest=False).indices
        mask.scatter_(1, idx, False)
    return mask


def n_m_mask(score: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the ``n`` highest scores in every group of ``m`` consecutive inputs (2:4 by default)."""
    out, inp = score.shape
    if inp % m:
        raise ValueError(f"input dimension {inp} is not a multiple of {m} for {n}:{m} sparsity")
    g = score.reshape(out, inp // m, m)
    idx = torch.topk(g, m - n, dim=-1, largest=False).indices
    mask = torch.ones_like(g, dtype=torch.bool)
    mask.scatter_(-1, idx, False)
    return mask.reshape(out, inp)


def wanda_score(w: torch.Tensor, in_norm: torch.Tensor) -> torch.Tensor:
    """``|W| · ‖x_j‖₂`` broadcast over rows (Sun et al., 2023, eq. 1)."""
    return w.abs() * in_norm[None, :]


def is_2_4(w: torch.Tensor) -> bool:
    """True when every group of 4 consecutive inputs of every row has at most 2 non-zeros."""
    out, inp = w.shape
    return inp % 4 == 0 and bool(((w.reshape(out, inp // 4, 4) != 0).sum(-1) <= 2).all())


def sparsity_of(model: nn.Module, skip=("lm_head",)) -> float:
    """Fraction of exact zeros in the Linear (and GPT-2 ``Conv1D``) weights of ``model``."""
    z = n = 0
    conv = [m for name, m in model.named_modules() if is_conv1d(m) and not any(s in name for s in skip)]
    for m in list(linear_layers(model, skip).values()) + conv:
        z += int((m.weight == 0).sum())
        n += m.weight.numel()
    return z / max(n, 1)


def prune(model: nn.Module, sparsity: float = 0.5, method: str = "magnitude", pattern: str = "unstructured",
          calib: torch.Tensor | None = None, tokenizer=None, skip=("lm_head",), n_samples: int = 16,
          inplace: bool = True) -> tuple[nn.Module, dict]:
    """Zero weights of every Linear layer (except ``skip``) by ``method`` and ``pattern``; return
    ``(model, report)``. ``pattern="2:4"`` ignores ``sparsity`` (it is 50% by construction). Wanda needs
    calibration token ids (``calib``) or a ``tokenizer`` to draw them from the training text; its input
    norms are collected block by block from the already-pruned model, as in the paper."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {METHODS}")
    if pattern not in PATTERNS:
        raise ValueError(f"pattern={pattern!r} is not supported; choose one of {PATTERNS}")
    check_sparsity(sparsity)
    if not inplace:
        model = copy.deepcopy(model)
    conv1d = [n for n, m in model.named_modules() if is_conv1d(m)]
    layers = linear_layers(linearize(model), skip)  # GPT-2's Conv1D layers as nn.Linear while they are pruned
    if not layers:
        raise ValueError("the model has no nn.Linear layers to prune")
    t0 = time.perf_counter()
    if method == "wanda":
        if calib is None:
            if tokenizer is None:
                raise ValueError("method='wanda' needs calibration data: pass calib=<token ids> or tokenizer=")
            from .quantize import calibration_ids
            calib = calibration_ids(tokenizer, n_samples)
        blocks = decoder_blocks(model)
        stages = [({n: m for n, m in layers.items() if any(m is x for x in b.modules())}, b) for b in blocks]
        done = set().union(*[set(s[0]) for s in stages])
        rest = {n: m for n, m in layers.items() if n not in done}
        if rest:
            stages.append((rest, None))
    else:
        stages = [(layers, None)]
    for group, block in stages:
        if not group:
            continue
        norms = collect_inputs(model, calib, group, stop_after=block, hessian=False) if method == "wanda" else None
        with torch.no_grad():
            for name, lin in group.items():
                w = lin.weight
                score = wanda_score(w.float(), norms[name]["norm"].to(w.device)) if norms else w.abs().float()
                if pattern == "2:4":
                    mask = n_m_mask(score)
                elif method == "wanda":
                    mask = row_mask(score, sparsity)
                else:
                    mask = magnitude_mask(w, sparsity)
                w.mul_(mask.to(w.dtype))
    report = {"method": method, "pattern": pattern, "target_sparsity": 0.5 if pattern == "2:4" else sparsity,
              "sparsity": round(sparsity_of(model, skip), 4), "layers": len(layers),
              "seconds": round(time.perf_counter() - t0, 2)}
    return as_conv1d(model, conv1d), report


# ----------------------------------------------------------------------------- structured pruning

# GPT-2 and GPT-NeoX size their attention by the hidden width (heads x head size = hidden, q/k/v one [3 hidden]
# layer): a model of their classes cannot have fewer heads of the same size, so only MLP channels can go.
FIXED_HEAD_WIDTH = ("gpt2", "gpt_neox")


def _take(sd: dict, prefix: str, module: nn.Module, idx: torch.Tensor, side: str) -> None:
    """Keep the output features (``side="out"``: weight rows and bias) or input features (``"in"``: weight
    columns) ``idx`` of the layer stored under ``prefix`` in the state dict ``sd`` (GPT-2's ``Conv1D`` stores
    its weight ``[in, out]``, so its axes are swapped)."""
    from .quantize import is_conv1d

    dim = {"out": 0, "in": 1}[side]
    if is_conv1d(module):
        dim = 1 - dim
    sd[f"{prefix}.weight"] = sd[f"{prefix}.weight"].index_select(dim, idx)
    if side == "out" and f"{prefix}.bias" in sd:
        sd[f"{prefix}.bias"] = sd[f"{prefix}.bias"][idx]


def prune_structured(model: nn.Module, mlp_fraction: float = 0.5, head_fraction: float = 0.0,
                     calib: torch.Tensor | None = None, tokenizer=None, n_samples: int = 8):
    """Remove the least important MLP channels and attention heads of every block; return a *new*,
    smaller model of the same class (config updated: ``intermediate_size`` (GPT-2: ``n_inner``),
    ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``) and a report. It saves and loads like any HF
    model. Every family of :mod:`secbook.decoder` works — separate, fused (Phi-3) or per-head interleaved
    (GPT-NeoX) projections, ``Conv1D`` (GPT-2) — where the model class allows it: GPT-2 and GPT-NeoX tie the
    attention's width to the hidden size, so for them only ``head_fraction=0`` is possible (a clear error
    otherwise).

    Importance (Wanda-style, structured): an MLP channel ``j`` scores ``‖down[:, j]‖₂ · ‖h_j‖₂`` with ``h`` the
    input of the down projection; a query head scores ``‖o_proj[:, head]‖_F · ‖attn_out_head‖₂``. With GQA the
    same number of query heads is kept in each key/value group (when a group has a single query head, whole
    key/value groups are removed instead). Every block keeps the same counts (HF configs are uniform).
    """
    from transformers import AutoModelForCausalLM

    from .decoder import describe, module_at

    check_sparsity(mlp_fraction)
    check_sparsity(head_fraction)
    spec = describe(model)  # a clear ValueError for an architecture the decoder description does not know
    f, cfg = spec.family, model.config
    if head_fraction > 0 and spec.model_type in FIXED_HEAD_WIDTH:
        raise ValueError(f"{spec.model_type} ties the attention width to the hidden size (heads x head size = "
                         "hidden), so its heads cannot be removed in a model of the same class; use head_fraction=0 "
                         "(MLP channels only)")
    if calib is None:
        if tokenizer is None:
            raise ValueError("structured pruning needs calibration data: pass calib=<token ids> or tokenizer=")
        from .quantize import calibration_ids
        calib = calibration_ids(tokenizer, n_samples)
    # input norms of each o / down projection, collected on an nn.Linear twin when the model has Conv1D layers
    scored = linearize(copy.deepcopy(model)) if any(is_conv1d(m) for m in model.modules()) else model
    blocks = module_at(scored, f.layers)
    watch = {}
    for i, b in enumerate(blocks):
        watch[f"{i}.o"] = module_at(b, f"{f.attn}.{f.o}")
        watch[f"{i}.down"] = module_at(b, f"{f.mlp}.{f.down}")
    stats = collect_inputs(scored, calib, watch, hessian=False)
    H, KV, hd = spec.n_heads, spec.n_kv, spec.head_dim
    G, I = H // KV, watch["0.down"].in_features
    keep_I = max(1, round(I * (1 - mlp_fraction)))
    if G > 1:
        keep_G, keep_KV = max(1, round(G * (1 - head_fraction))), KV
    else:
        keep_G, keep_KV = 1, max(1, round(KV * (1 - head_fraction)))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    for i, orig in enumerate(module_at(model, f.layers)):  # the original layers: their storage layout
        p = f"{f.layers}.{i}"
        # MLP channels
        s = watch[f"{i}.down"].weight.float().norm(dim=0) * stats[f"{i}.down"]["norm"]
        keep = torch.sort(torch.topk(s, keep_I).indices).values
        if f.gated and len(f.up) == 1:  # Phi-3: [gate | up] in one layer
            rows = {f.up[0]: torch.cat([keep, I + keep])}
        else:
            rows = {n: keep for n in f.up}
        for n, idx in rows.items():
            _take(sd, f"{p}.{f.mlp}.{n}", module_at(orig, f"{f.mlp}.{n}"), idx, "out")
        _take(sd, f"{p}.{f.mlp}.{f.down}", module_at(orig, f"{f.mlp}.{f.down}"), keep, "in")
        if keep_G == G and keep_KV == KV:
            continue
        # attention heads
        wo = watch[f"{i}.o"].weight.float().reshape(-1, H, hd)
        xo = stats[f"{i}.o"]["norm"].reshape(H, hd)
        hs = (wo.norm(dim=(0, 2)) * xo.norm(dim=1)).reshape(KV, G)  # [KV, G]
        kv_keep = torch.sort(torch.topk(hs.sum(1), keep_KV).indices).values if keep_KV < KV else torch.arange(KV)
        q_heads = []
        for kv in kv_keep.tolist():
            within = torch.sort(torch.topk(hs[kv], keep_G).indices).values
            q_heads += [kv * G + j for j in within.tolist()]
        q_rows = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in q_heads])
        kv_rows = torch.cat([torch.arange(k * hd, (k + 1) * hd) for k in kv_keep.tolist()])
        if len(f.qkv) == 1:  # q, k and v in one layer, [q | k | v] (Phi-3)
            rows = {f.qkv[0]: torch.cat([q_rows, H * hd + kv_rows, (H + KV) * hd + kv_rows])}
        else:
            rows = dict(zip(f.qkv, (q_rows, kv_rows, kv_rows)))
        for n, idx in rows.items():
            _take(sd, f"{p}.{f.attn}.{n}", module_at(orig, f"{f.attn}.{n}"), idx, "out")
        _take(sd, f"{p}.{f.attn}.{f.o}", module_at(orig, f"{f.attn}.{f.o}"), q_rows, "in")
        # per-head norms (Qwen3, Gemma 3 q_norm/k_norm) act on head_dim and are unaffected
    new_cfg = cfg.__class__.from_dict(cfg.to_dict())
    setattr(new_cfg, "n_inner" if spec.model_type == "gpt2" else "intermediate_size", keep_I)
    if spec.model_type not in FIXED_HEAD_WIDTH:
        new_cfg.num_attention_heads = keep_G * keep_KV
        new_cfg.num_key_value_heads = keep_KV
        new_cfg.head_dim = hd
    new = AutoModelForCausalLM.from_config(new_cfg, dtype=next(model.parameters()).dtype)
    out_key = next((n for n, m in new.named_modules() if m is new.get_output_embeddings()), "lm_head") + ".weight"
    missing, unexpected = new.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != out_key]
    if missing or unexpected:
        raise RuntimeError(f"structured pruning produced mismatched weights: missing {missing}, unexpected {unexpected}")
    if getattr(new_cfg, "tie_word_embeddings", False):
        new.tie_weights()
    new.generation_config = copy.deepcopy(model.generation_config)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in new.parameters())
    report = {"mlp_fraction": mlp_fraction, "head_fraction": head_fraction, "intermediate_size": f"{I} -> {keep_I}",
              "attention_heads": f"{H} -> {keep_G * keep_KV}", "kv_heads": f"{KV} -> {keep_KV}",
              "parameters_before": before, "parameters_after": after, "seconds": round(time.perf_counter() - t0, 2)}
    return new.to(next(model.parameters()).device).eval(), report


# ----------------------------------------------------------------------------- where speed comes from

def time_matmul(w: torch.Tensor, x: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``x @ w.T`` (dense or sparse ``w``)."""
    from .hardware import median_seconds

    is_sparse = w.layout != torch.strided
    f = (lambda: torch.sparse.mm(w, x.T)) if is_sparse else (lambda: x @ w.T)
    return median_seconds(f, warmup=warmup, repeats=repeats)


def sparse_speed_table(out: int = 1024, inp: int = 1024, tokens: int = 64,
                       sparsities=(0.0, 0.5, 0.9, 0.99), seed: int = 0, repeats: int = 20):
    """Time a dense matmul whose weight has zeros, and the same weight in CSR sparse format: zeros alone
    change nothing; a sparse format only pays off at very high sparsity. Returns a DataFrame."""
    import pandas as pd

    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(out, inp, generator=g)
    x = torch.randn(tokens, inp, generator=g)
    base = time_matmul(w0, x, repeats)
    rows = []
    for s in sparsities:
        w = w0 * magnitude_mask(w0, s)
        dense = time_matmul(w, x, repeats)
        sparse = time_matmul(w.to_sparse_csr(), x, repeats)
        rows.append({"sparsity": s, "dense_ms": dense * 1e3, "csr_ms": sparse * 1e3,
                     "dense_vs_unpruned": base / dense, "csr_vs_unpruned": base / sparse})
    return pd.DataFrame(rows)


def sparse_speed_rounds(out: int = 1024, inp: int = 1024, tokens: int = 64, sparsities=(0.0, 0.5, 0.9, 0.99),
                        rounds: int = 5, repeats: int = 5, seed: int = 0):
    """The timing of :func:`sparse_speed_table`, taken *in turn*: each round times the unpruned dense weight,
    then every sparsity as a dense weight with zeros and in CSR format (median of ``repeats`` calls each), so a
    change in the machine's load hits every variant alike. Returns one row per round and variant: ``round``,
    ``sparsity``, ``kernel`` ("dense" or "csr"), ``ms``; the unpruned weight is ``sparsity`` 0, kernel "dense"."""
    import pandas as pd

    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(out, inp, generator=g)
    x = torch.randn(tokens, inp, generator=g)
    weights = {(0.0, "dense"): w0}
    for s in sparsities:
        w = w0 * magnitude_mask(w0, s)
        weights.setdefault((float(s), "dense"), w)
        weights[(float(s), "csr")] = w.to_sparse_csr()
    rows = []
    for r in range(rounds):
        for (s, kernel), w in weights.items():
            rows.append({"round": r, "sparsity": s, "kernel": kernel,
                         "ms": 1e3 * time_matmul(w, x, repeats=repeats, warmup=1 if r else 3)})
    return pd.DataFrame(rows)
