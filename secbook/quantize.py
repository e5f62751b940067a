"""Weight quantization from scratch: round-to-nearest, GPTQ and AWQ, plus the library paths that prove it.

Quantization stores each weight as a small integer ``q`` and recovers it as ``(q - zero) * scale``
(Jacob et al., 2018). *Symmetric* quantization fixes ``zero`` at the middle of the integer range and sets
``scale = max|w| / qmax``; *asymmetric* uses the min and max, so a lopsided range wastes no levels. One
scale may serve the whole tensor, one output channel (a row), or a *group* of ``g`` consecutive inputs
of a row (finer groups: smaller error, a little more storage). Round-to-nearest (RTN) rounds every
weight independently. GPTQ (Frantar et al., 2022) quantizes one input column at a time and pushes each
column's rounding error onto the columns not yet quantized, weighted by the inverse Hessian
``(2 XᵀX)⁻¹`` of the layer's calibration inputs ``X`` (Optimal Brain Surgeon, Hassibi & Stork, 1993).
AWQ (Lin et al., 2023) scales salient input channels (those with large activations) up before
quantizing and divides the activations by the same factor, choosing the exponent of ``mean|x|^α`` that
minimises the layer's output error on calibration data.

``QuantLinear`` keeps the packed integers (two 4-bit values per byte, four 2-bit values, eight 3-bit
values in three bytes) and fp16 scales, dequantizes and calls ``F.linear`` — simple enough for
``torch.compile`` to fuse. ``quantize(model, bits, group_size, scheme, method)`` swaps the Linear layers
of any Hugging Face causal LM and returns a report of sizes and per-layer errors.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_BITS = (2, 3, 4, 8)
SCHEMES = ("sym", "asym")
METHODS = ("rtn", "gptq", "awq")
BNB_MODES = ("int8", "nf4", "fp4")


# ----------------------------------------------------------------------------- validation

def check_args(bits: int, group_size, scheme: str, in_features: int | None = None) -> int:
    """Validate quantization arguments; return the effective group size (``in_features`` for per-channel,
    0 for per-tensor). ``group_size``: a positive int (per-group), ``None``/-1 (per-channel) or "tensor"."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits!r} is not supported; choose one of {SUPPORTED_BITS}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not supported; choose one of {SCHEMES}")
    if group_size == "tensor":
        return 0
    if group_size is None or group_size == -1:
        return in_features or -1
    if not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive int, None/-1 (per-channel) or 'tensor', got {group_size!r}")
    if in_features is not None and in_features % group_size:
        raise ValueError(f"group_size={group_size} does not divide the input dimension {in_features}; "
                         f"use a divisor of {in_features} or None (per-channel)")
    return group_size


# ----------------------------------------------------------------------------- round-to-nearest

def qrange(bits: int, scheme: str) -> tuple[int, int, int]:
    """(qmin, qmax, zero for sym): integers are stored unsigned in [0, 2^bits - 1]."""
    top = 2 ** bits - 1
    return 0, top, 2 ** (bits - 1)


def quant_params(w: torch.Tensor, bits: int, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point over the last dimension of ``w`` (any leading shape). Scales are rounded to
    fp16, the precision they are stored in."""
    _, top, mid = qrange(bits, scheme)
    w = w.float()
    if scheme == "sym":
        amax = w.abs().amax(-1)
        scale = amax / (mid - 1)
        scale = scale.clamp(min=1e-8).half().float()
        zero = torch.full_like(scale, float(mid))
    else:
        lo = w.amin(-1).clamp(max=0)
        hi = w.amax(-1).clamp(min=0)
        scale = ((hi - lo) / top).clamp(min=1e-8).half().float()
        zero = torch.round(-lo / scale).clamp(0, top)
    return scale, zero


def quantize_tensor(w: torch.Tensor, bits: int = 8, group_size=None, scheme: str = "sym"):
    """Round-to-nearest: return ``(q, scale, zero)`` with ``q`` uint8 of w's shape ``[out, in]`` and
    ``scale``/``zero`` of shape ``[out, n_groups]`` (``[1, 1]`` per-tensor)."""
    if w.dim() != 2:
        raise ValueError(f"expected a 2-D weight [out, in], got shape {tuple(w.shape)}")
    out, inp = w.shape
    g = check_args(bits, group_size, scheme, inp)
    _, top, _ = qrange(bits, scheme)
    if g == 0:  # per-tensor
        scale, zero = quant_params(w.reshape(1, 1, -1), bits, scheme)
        wg = w.float().reshape(1, 1, -1)
    else:
        wg = w.float().reshape(out, inp // g, g)
        scale, zero = quant_params(wg, bits, scheme)
    q = torch.clamp(torch.round(wg / scale[..., None]) + zero[..., None], 0, top)
    return q.reshape(out, inp).to(torch.uint8), scale.reshape(scale.shape[0], -1), zero.reshape(zero.shape[0], -1)


def dequantize_tensor(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``(q - zero) * scale`` with the groups implied by the shape of ``scale`` (``[rows, n_groups]``)."""
    rows, ng = scale.shape
    w = (q.float().reshape(rows, ng, -1) - zero.float()[..., None]) * scale.float()[..., None]
    return w.reshape(q.shape)


def fake_quantize(w: torch.Tensor, bits: int = 8, group_size=None, scheme: str = "sym") -> torch.Tensor:
    """Quantize then dequantize (what the model will actually compute with)."""
    return dequantize_tensor(*quantize_tensor(w, bits, group_size, scheme)).to(w.dtype)


# ----------------------------------------------------------------------------- bit packing

def _pack_layout(bits: int) -> tuple[int, int]:
    """(values per word, bytes per word): 8 → (1,1), 4 → (2,1), 2 → (4,1), 3 → (8,3)."""
    n_bits = math.lcm(bits, 8)
    return n_bits // bits, n_bits // 8


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned ``bits``-bit integers densely into a flat uint8 tensor (little-endian within a word)."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits!r} is not supported; choose one of {SUPPORTED_BITS}")
    flat = q.reshape(-1).to(torch.int64)
    if flat.numel() and int(flat.max()) >= 2 ** bits:
        raise ValueError(f"values do not fit in {bits} bits")
    per, nbytes = _pack_layout(bits)
    pad = (-flat.numel()) % per
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    v = flat.reshape(-1, per)
    shifts = torch.arange(per, dtype=torch.int64) * bits
    word = (v << shifts).sum(-1)
    byte_shifts = torch.arange(nbytes, dtype=torch.int64) * 8
    return ((word[:, None] >> byte_shifts) & 255).to(torch.uint8).reshape(-1)


def unpack(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of ``pack``: the first ``numel`` values as uint8."""
    per, nbytes = _pack_layout(bits)
    b = packed.reshape(-1, nbytes).to(torch.int64)
    byte_shifts = torch.arange(nbytes, dtype=torch.int64, device=packed.device) * 8
    word = (b << byte_shifts).sum(-1)
    shifts = torch.arange(per, dtype=torch.int64, device=packed.device) * bits
    v = (word[:, None] >> shifts) & (2 ** bits - 1)
    return v.reshape(-1)[:numel].to(torch.uint8)


# ----------------------------------------------------------------------------- the module

class QuantLinear(nn.Module):
    """A Linear layer whose weight is stored as packed ``bits``-bit integers with fp16 scales (and zero
    points for the asymmetric scheme). ``forward`` dequantizes and multiplies; ``in_scale`` (AWQ) divides
    the dequantized weight's input channels by a per-channel factor."""

    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int, scheme: str,
                 bias: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.scheme = bits, group_size, scheme
        self.register_buffer("qweight", torch.empty(0, dtype=torch.uint8))
        self.register_buffer("scale", torch.empty(0, dtype=torch.float16))
        self.register_buffer("zero", torch.empty(0, dtype=torch.uint8))
        self.register_buffer("in_scale", None)
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @classmethod
    def from_quantized(cls, q, scale, zero, bits, group_size, scheme, bias=None, in_scale=None) -> "QuantLinear":
        out, inp = q.shape
        m = cls(inp, out, bits, group_size, scheme, bias)
        m.qweight = pack(q, bits)
        m.scale = scale.to(torch.float16).contiguous()
        m.zero = zero.to(torch.uint8).contiguous() if scheme == "asym" else torch.empty(0, dtype=torch.uint8)
        if in_scale is not None:
            m.in_scale = in_scale.to(torch.float16)
        return m

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 8, group_size=128, scheme: str = "sym") -> "QuantLinear":
        """Round-to-nearest quantization of an ``nn.Linear``."""
        g = check_args(bits, group_size, scheme, linear.in_features)
        q, scale, zero = quantize_tensor(linear.weight.detach(), bits, g if g else "tensor", scheme)
        return cls.from_quantized(q, scale, zero, bits, g, scheme, linear.bias)

    def int_weight(self) -> torch.Tensor:
        return unpack(self.qweight, self.bits, self.in_features * self.out_features).reshape(
            self.out_features, self.in_features)

    def signed_int8(self) -> torch.Tensor:
        """The weights of an 8-bit symmetric layer as signed int8 (they are stored offset by 128), the form
        int8 matmul kernels take."""
        if self.bits != 8 or self.scheme != "sym":
            raise ValueError(f"signed_int8() needs an 8-bit symmetric layer, this one is {self.extra_repr()}")
        return (self.int_weight().to(torch.int16) - 128).to(torch.int8)

    def dequantize(self) -> torch.Tensor:
        """The fp32 weight this layer computes with."""
        q = self.int_weight().float()
        if self.scheme == "asym":
            zero = self.zero.float()
        else:
            zero = torch.full_like(self.scale, 2 ** (self.bits - 1), dtype=torch.float32)
        rows = self.scale.shape[0]
        g = self.group_size if self.group_size else self.in_features * self.out_features
        w = (q.reshape(rows, -1, g) - zero[..., None]) * self.scale.float()[..., None]
        w = w.reshape(self.out_features, self.in_features)
        if self.in_scale is not None:
            w = w / self.in_scale.float()[None, :]
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantize().to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, w, b)

    def storage_bytes(self) -> int:
        """Real bytes held: packed integers + scales + zero points (+ AWQ input scales, bias)."""
        n = self.qweight.numel() + self.scale.numel() * 2 + self.zero.numel()
        if self.in_scale is not None:
            n += self.in_scale.numel() * 2
        if self.bias is not None:
            n += self.bias.numel() * self.bias.element_size()
        return n

    def extra_repr(self) -> str:
        gs = "tensor" if self.group_size == 0 else ("channel" if self.group_size == self.in_features else self.group_size)
        return f"{self.in_features}, {self.out_features}, bits={self.bits}, group={gs}, scheme={self.scheme}"


# ----------------------------------------------------------------------------- model-level helpers

def is_conv1d(m) -> bool:
    """Whether ``m`` is transformers' ``Conv1D`` (GPT-2's projections): a linear layer whose ``weight`` is stored
    ``[in, out]`` (``y = x @ weight + bias``), the transpose of ``nn.Linear``'s."""
    return type(m).__name__ == "Conv1D" and type(m).__module__.startswith("transformers")


def linearize(model: nn.Module) -> nn.Module:
    """Replace (in place) every transformers ``Conv1D`` of ``model`` by the ``nn.Linear`` that computes the same
    (weight transposed, bias shared), so every method written for ``nn.Linear`` — RTN, GPTQ, AWQ, Wanda, 2:4,
    torch.ao and torchao quantization — applies to GPT-2-style models too; returns the model. The model's own
    forward is unchanged (it calls the layer). A linearized GPT-2 stores its weights ``[out, in]``: save it with
    ``torch.save`` (or quantized, as any quantized model), not into a GPT-2 checkpoint, which expects ``[in, out]``."""
    for name, m in list(model.named_modules()):
        if is_conv1d(m):
            w = m.weight
            lin = nn.Linear(w.shape[0], w.shape[1], bias=m.bias is not None, device=w.device, dtype=w.dtype)
            lin.weight = nn.Parameter(w.detach().t().contiguous(), requires_grad=w.requires_grad)
            lin.bias = m.bias
            _set_module(model, name, lin)
    return model


def as_conv1d(model: nn.Module, names) -> nn.Module:
    """Undo :func:`linearize` for the layers ``names`` (float ``nn.Linear`` layers made from ``Conv1D`` ones): each
    becomes a transformers ``Conv1D`` again, weight transposed back, so a pruned GPT-2 is a GPT-2 that saves and
    reloads as one; returns the model."""
    from transformers.pytorch_utils import Conv1D

    for name in names:
        lin = model.get_submodule(name)
        conv = Conv1D(lin.out_features, lin.in_features).to(device=lin.weight.device, dtype=lin.weight.dtype)
        conv.weight = nn.Parameter(lin.weight.detach().t().contiguous(), requires_grad=lin.weight.requires_grad)
        conv.bias = lin.bias
        _set_module(model, name, conv)
    return model


def linear_layers(model: nn.Module, skip=("lm_head",)) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` of ``model`` by qualified name, except names containing a ``skip`` entry (GPT-2's
    ``Conv1D`` layers count once :func:`linearize` has made them ``nn.Linear``)."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and not any(s in n for s in skip)}


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def param_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers, counting shared (tied) tensors once and using ``storage_bytes``
    for modules that define it."""
    seen, total = set(), 0
    packed = [m for m in model.modules() if hasattr(m, "storage_bytes") and m is not model]
    covered = set()
    for m in packed:
        total += m.storage_bytes()
        covered.update(id(t) for t in list(m.parameters()) + list(m.buffers()))
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in covered or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def calibration_ids(tokenizer, n_samples: int = 32, seq_len: int = 256, seed: int = 0) -> torch.Tensor:
    """``n_samples`` random windows of ``seq_len`` tokens from the *training* text (never the held-out)."""
    from .corpus import read_split

    train, _ = read_split()
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=gen).tolist()
    rows = []
    for i in order:
        ids = tokenizer(train[i], add_special_tokens=False).input_ids
        if len(ids) <= seq_len:
            continue
        s = int(torch.randint(0, len(ids) - seq_len, (1,), generator=gen))
        rows.append(ids[s:s + seq_len])
        if len(rows) == n_samples:
            break
    return torch.tensor(rows, dtype=torch.long)


def _forward_batches(model, calib: torch.Tensor, batch: int = 8):
    dev = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            model(input_ids=calib[i:i + batch].to(dev))


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks: the largest ``nn.ModuleList`` whose items hold Linear layers."""
    best = None
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and len(m) and any(isinstance(x, nn.Linear) for x in m[0].modules()):
            if best is None or len(m) > len(best):
                best = m
    if best is None:
        raise ValueError("found no list of transformer blocks containing nn.Linear layers in this model")
    return best


class _Stop(Exception):
    pass


class single_thread:
    """Run a loop of many small tensor ops on one thread: on a busy 2-core machine the thread hand-offs of
    tiny ops cost more than they save (measured: GPTQ on one layer ≈6× faster with 1 thread under load)."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def collect_inputs(model, calib: torch.Tensor, layers: dict[str, nn.Linear], stop_after: nn.Module | None = None,
                   hessian: bool = True, max_rows: int = 0) -> dict[str, dict]:
    """Run ``calib`` through ``model`` and accumulate, for each layer, ``H = 2/n Σ xxᵀ`` (GPTQ), the
    per-channel input L2 norm (Wanda), mean |x| (AWQ) and, with ``max_rows``, a sample of raw inputs."""
    stats = {n: {"n": 0, "sq": torch.zeros(m.in_features), "abs": torch.zeros(m.in_features), "rows": []}
             for n, m in layers.items()}
    for n, m in layers.items():
        if hessian:
            stats[n]["H"] = torch.zeros(m.in_features, m.in_features)

    def hook(name):
        def f(mod, args, out):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1]).cpu()
            s = stats[name]
            s["n"] += x.shape[0]
            s["sq"] += (x * x).sum(0)
            s["abs"] += x.abs().sum(0)
            if hessian:
                s["H"] += 2 * x.T @ x
            if max_rows and sum(r.shape[0] for r in s["rows"]) < max_rows:
                s["rows"].append(x[:max_rows])
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    if stop_after is not None:
        def stop(*_):
            raise _Stop
        handles.append(stop_after.register_forward_hook(stop))
    try:
        dev = next(model.parameters()).device
        with torch.no_grad():
            for i in range(0, len(calib), 8):
                try:
                    model(input_ids=calib[i:i + 8].to(dev))
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
    for s in stats.values():
        n = max(s["n"], 1)
        if hessian:
            s["H"] /= n
        s["norm"] = s["sq"].sqrt()
        s["mean_abs"] = s["abs"] / n
        s["X"] = torch.cat(s["rows"])[:max_rows] if s["rows"] else None
        del s["rows"]
    return stats


# ----------------------------------------------------------------------------- GPTQ

def gptq_quantize_weight(w: torch.Tensor, H: torch.Tensor, bits: int = 4, group_size=128, scheme: str = "sym",
                         blocksize: int = 128, percdamp: float = 0.01, act_order: bool = True):
    """GPTQ for one weight ``[out, in]`` given the Hessian ``H = 2XᵀX/n`` of its inputs.

    Returns ``(q, scale, zero)`` in the same layout as ``quantize_tensor``. Columns are processed in
    blocks; inside a block each quantization error is spread over the remaining columns with the
    Cholesky factor of the inverse Hessian (Frantar et al., 2022, Algorithm 1). With ``act_order`` the
    columns are visited by decreasing ``diag(H)`` while group scales stay on the original contiguous
    groups ("static groups"), so the stored layout is unchanged.
    """
    out, inp = w.shape
    g = check_args(bits, group_size, scheme, inp)
    _, top, _ = qrange(bits, scheme)
    W = w.detach().float().clone()
    H = H.detach().float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    # scales from the original weights: per group (static groups), per row, or per tensor
    if g == 0:
        s, z = quant_params(W.reshape(1, 1, -1), bits, scheme)
        scale, zero = s.reshape(1, 1).expand(out, 1), z.reshape(1, 1).expand(out, 1)
        gcol = torch.zeros(inp, dtype=torch.long)
    else:
        scale, zero = quant_params(W.reshape(out, inp // g, g), bits, scheme)
        gcol = torch.arange(inp) // g
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(inp)
    W, H = W[:, perm], H[perm][:, perm]
    gcol_p = gcol[perm]
    damp = percdamp * torch.mean(torch.diag(H))
    H += damp * torch.eye(inp)
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    Hinv = torch.linalg.cholesky(Hinv, upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, inp, blocksize):
        i2 = min(i1 + blocksize, inp)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = gcol_p[i1 + i]
            sc, zp = scale[:, col], zero[:, col]
            wcol = W1[:, i]
            qi = torch.clamp(torch.round(wcol / sc) + zp, 0, top)
            Q1[:, i] = qi
            err = (wcol - (qi - zp) * sc) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    inv = torch.argsort(perm)
    q = Q[:, inv].to(torch.uint8)
    if g == 0:
        return q, scale[:1].clone(), zero[:1].clone()
    return q, scale.contiguous(), zero.contiguous()


# ----------------------------------------------------------------------------- AWQ

def awq_search(w: torch.Tensor, X: torch.Tensor, mean_abs: torch.Tensor, bits: int, group_size, scheme: str,
               grid: int = 10):
    """AWQ's scale search for one layer: try ``s = mean|x|^α`` for α on a grid, quantize ``W·diag(s)`` by
    RTN and keep the α with the smallest output error ``‖X Wᵀ − (X/s)(Q(W·s))ᵀ‖``. Returns
    ``(q, scale, zero, s, alpha)``."""
    w = w.detach().float()
    X = X.float()
    ref = X @ w.T
    best = None
    for k in range(grid + 1):
        alpha = k / grid
        s = mean_abs.clamp(min=1e-5).pow(alpha)
        s = (s / (s.max() * s.min()).sqrt()).half().float()
        q, sc, zp = quantize_tensor(w * s[None, :], bits, group_size, scheme)
        wq = dequantize_tensor(q, sc, zp) / s[None, :]
        err = (ref - X @ wq.T).pow(2).mean().item()
        if best is None or err < best[0]:
            best = (err, q, sc, zp, s, alpha)
    return best[1:]


# ----------------------------------------------------------------------------- the model-level entry point

@dataclass
class QuantReport:
    """What ``quantize`` did: per-layer relative weight error and output error, bytes before and after."""
    bits: int
    group_size: object
    scheme: str
    method: str
    layers: list = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0
    model_bytes_before: int = 0
    model_bytes_after: int = 0
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        """Bytes of the quantized layers after / before."""
        return self.bytes_after / max(self.bytes_before, 1)

    def frame(self):
        import pandas as pd
        return pd.DataFrame(self.layers)

    def summary(self) -> dict:
        return {"bits": self.bits, "group_size": self.group_size, "scheme": self.scheme, "method": self.method,
                "layers": len(self.layers), "layer_bytes_fp32": self.bytes_before,
                "layer_bytes_quant": self.bytes_after, "layer_ratio": round(self.ratio, 4),
                "model_bytes_before": self.model_bytes_before, "model_bytes_after": self.model_bytes_after,
                "mean_rel_error": round(sum(r["rel_error"] for r in self.layers) / max(len(self.layers), 1), 6),
                "seconds": round(self.seconds, 2)}


def quantize(model: nn.Module, bits: int = 8, group_size=128, scheme: str = "sym", skip=("lm_head",),
             method: str = "rtn", calib: torch.Tensor | None = None, tokenizer=None, n_samples: int = 32,
             seq_len: int = 256, act_order: bool = True, progress: bool = False, inplace: bool = True):
    """Replace the Linear layers of ``model`` (any HF causal LM) by ``QuantLinear``; return ``(model, report)``.

    ``method``: ``"rtn"`` (no data), ``"gptq"`` or ``"awq"`` (need ``calib`` token ids ``[n, seq]`` or a
    ``tokenizer`` to draw them from the training text). GPTQ runs block by block, each block seeing the
    inputs produced by the already-quantized blocks before it. ``group_size``: int, None (per-channel) or
    "tensor". Modified in place unless ``inplace=False``.
    """
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {METHODS}")
    check_args(bits, group_size, scheme)
    if not inplace:
        model = copy.deepcopy(model)
    layers = linear_layers(linearize(model), skip)
    if not layers:
        raise ValueError("the model has no nn.Linear layers to quantize (after skipping "
                         f"{skip}); quantize works on models built from torch.nn.Linear")
    for n, m in layers.items():
        check_args(bits, group_size, scheme, m.in_features)
    report = QuantReport(bits, group_size, scheme, method, model_bytes_before=param_bytes(model))
    t0 = time.perf_counter()
    if method != "rtn" and calib is None:
        if tokenizer is None:
            raise ValueError(f"method={method!r} needs calibration data: pass calib=<token ids> or tokenizer=")
        calib = calibration_ids(tokenizer, n_samples, seq_len)

    def replace(name, lin, q, scale, zero, in_scale=None):
        g = check_args(bits, group_size, scheme, lin.in_features)
        ql = QuantLinear.from_quantized(q, scale, zero, bits, g, scheme, lin.bias, in_scale)
        ql.to(lin.weight.device)
        w = lin.weight.detach().float()
        err = (ql.dequantize().to(w.device) - w).norm() / w.norm().clamp(min=1e-12)
        report.layers.append({"layer": name, "shape": f"{lin.out_features}x{lin.in_features}",
                              "rel_error": float(err), "bytes_fp32": lin.weight.numel() * 4,
                              "bytes_quant": ql.storage_bytes() - (lin.bias.numel() * 4 if lin.bias is not None else 0)})
        report.bytes_before += lin.weight.numel() * lin.weight.element_size()
        report.bytes_after += report.layers[-1]["bytes_quant"]
        _set_module(model, name, ql)

    if method == "rtn":
        for name, lin in tqdm(layers.items(), desc="rtn", disable=not progress):
            g = check_args(bits, group_size, scheme, lin.in_features)
            q, s, z = quantize_tensor(lin.weight.detach().cpu(), bits, g if g else "tensor", scheme)
            replace(name, lin, q, s, z)
    else:
        blocks = decoder_blocks(model)
        groups = [{n: m for n, m in layers.items() if any(m is x for x in b.modules())} for b in blocks]
        rest = {n: m for n, m in layers.items() if not any(n in gr for gr in groups)}
        stages = [(gr, b) for gr, b in zip(groups, blocks) if gr] + ([(rest, None)] if rest else [])
        for gr, block in tqdm(stages, desc=method, disable=not progress):
            stats = collect_inputs(model, calib, gr, stop_after=block, hessian=(method == "gptq"),
                                   max_rows=(512 if method == "awq" else 0))
            for name, lin in gr.items():
                g = check_args(bits, group_size, scheme, lin.in_features)
                gs = g if g else "tensor"
                if method == "gptq":
                    with single_thread():
                        q, s, z = gptq_quantize_weight(lin.weight.cpu(), stats[name]["H"], bits, gs, scheme,
                                                       act_order=act_order)
                    replace(name, lin, q, s, z)
                else:
                    with single_thread():
                        q, s, z, ins, _ = awq_search(lin.weight.cpu(), stats[name]["X"], stats[name]["mean_abs"],
                                                     bits, gs, scheme)
                    replace(name, lin, q, s, z, ins)
    report.seconds = time.perf_counter() - t0
    report.model_bytes_after = param_bytes(model)
    return model, report


@torch.no_grad()
def rtn_weights(model: nn.Module, bits: int = 4, group_size=128, scheme: str = "sym", skip=("lm_head",)) -> nn.Module:
    """A copy of ``model`` whose Linear weights hold exactly the values a round-to-nearest ``QuantLinear`` computes
    with (:func:`fake_quantize`), kept unpacked in the model's dtype: the same outputs as ``quantize(model, bits,
    group_size, scheme)`` (``F.linear`` of the same dequantized weight), without unpacking every weight on every
    call — for measuring *quality* quickly. It stores no fewer bytes: measure size and speed on ``quantize``'s."""
    layers = linear_layers(model, skip)
    if not layers:
        raise ValueError("the model has no nn.Linear layers to quantize")
    for lin in layers.values():
        check_args(bits, group_size, scheme, lin.in_features)
    out = copy.deepcopy(model)
    for name in layers:
        lin = out.get_submodule(name)
        g = check_args(bits, group_size, scheme, lin.in_features)
        lin.weight.copy_(fake_quantize(lin.weight.detach(), bits, g if g else "tensor", scheme))
    return out


def layer_output_errors(model_fp: nn.Module, model_q: nn.Module, calib: torch.Tensor, skip=("lm_head",)):
    """Relative error of each layer's *output* (quantized vs original), both fed the original model's
    inputs: a DataFrame ``layer, rel_output_error`` (where the quantization error actually hurts)."""
    import pandas as pd

    fp = linear_layers(model_fp, skip)
    qmods = dict(model_q.named_modules())
    stats = collect_inputs(model_fp, calib[:4], fp, hessian=False, max_rows=1024)
    rows = []
    with torch.no_grad():
        for n, lin in fp.items():
            X = stats[n]["X"]
            ref = lin(X)
            got = qmods[n](X)
            rows.append({"layer": n, "rel_output_error": float((got - ref).norm() / ref.norm().clamp(min=1e-12))})
    return pd.DataFrame(rows)


def activation_stats(model: nn.Module, calib: torch.Tensor, skip=("lm_head",)) -> dict[str, torch.Tensor]:
    """Per-input-channel max |x| of each Linear layer's input on ``calib``."""
    layers = linear_layers(model, skip)
    amax = {n: torch.zeros(m.in_features) for n, m in layers.items()}

    def hook(name):
        def f(mod, args, out):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1]).abs().amax(0).cpu()
            amax[name] = torch.maximum(amax[name], x)
        return f

    hs = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        _forward_batches(model, calib)
    finally:
        for h in hs:
            h.remove()
    return amax


def outlier_channels(channel_amax: torch.Tensor, factor: float = 6.0) -> list[int]:
    """Input channels whose max |activation| exceeds ``factor`` × the median channel's (Dettmers et al.,
    2022 call such features outliers; they are what breaks per-tensor activation quantization)."""
    med = channel_amax.median().clamp(min=1e-12)
    return torch.nonzero(channel_amax > factor * med).flatten().tolist()


# ----------------------------------------------------------------------------- library paths

def dynamic_int8(model: nn.Module, skip=("lm_head",)) -> nn.Module:
    """PyTorch dynamic quantization (``torch.ao``): int8 weights, activations quantized per batch at run
    time, int8 GEMM on CPU (FBGEMM/oneDNN). Returns a quantized copy (CPU only)."""
    import warnings

    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    model = linearize(copy.deepcopy(model).cpu())
    layers = linear_layers(model, skip)
    if not layers:
        raise ValueError("the model has no nn.Linear layers to quantize")
    spec = {n: default_dynamic_qconfig for n in layers}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def _require_bnb():
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # ImportError, or a broken native library
        raise ImportError("bitsandbytes is not usable here: `pip install bitsandbytes` (>= 0.45 runs on CPU and "
                          f"CUDA; on macOS/MPS it is not supported) — original error: {e}") from e


def bnb_quantize(model_or_path, mode: str = "nf4", device: str = "cpu", skip=("lm_head",)):
    """Load a model through transformers ``BitsAndBytesConfig``: LLM.int8() (``"int8"``, Dettmers et al.,
    2022) or 4-bit NF4/FP4 (``"nf4"``/``"fp4"``, Dettmers et al., 2023). ``model_or_path``: a folder/name
    accepted by ``secbook.load`` or an in-memory HF model (saved to a temporary folder first)."""
    import tempfile

    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if mode not in BNB_MODES:
        raise ValueError(f"mode={mode!r} is not supported; choose one of {BNB_MODES}")
    _require_bnb()
    if device not in ("cpu", "cuda"):
        raise ValueError(f"bitsandbytes runs on 'cpu' or 'cuda' here, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA GPU is available; use device='cpu'")
    if mode == "int8":
        cfg = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip))
    else:
        cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=mode, bnb_4bit_compute_dtype=torch.float32,
                                 llm_int8_skip_modules=list(skip))
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model_or_path, nn.Module):
            model_or_path.save_pretrained(tmp)
            path = tmp
        else:
            from .paths import find_model
            path = find_model(str(model_or_path)) or model_or_path
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=cfg, device_map=device,
                                                     dtype=torch.float32)
    return model.eval()


def torchao_quantize(model: nn.Module, kind: str = "int8wo", group_size: int = 64, skip=("lm_head",)) -> nn.Module:
    """torchao weight-only quantization of a copy of ``model``: ``"int8wo"`` (per-channel int8) or
    ``"int4wo"`` (int4, group-wise; needs a CPU/CUDA kernel layout that torchao supports here)."""
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    kinds = ("int8wo", "int4wo")
    if kind not in kinds:
        raise ValueError(f"kind={kind!r} is not supported; choose one of {kinds}")
    if kind == "int4wo" and next(model.parameters()).device.type != "cuda":
        raise ValueError("torchao int4 weight-only has no CPU packing format in this torchao version (its int4 "
                         "kernels are CUDA/XPU); move the model to a CUDA GPU, or use kind='int8wo' or "
                         "secbook's QuantLinear (quantize(model, bits=4)) on CPU")
    m = linearize(copy.deepcopy(model))
    if kind == "int8wo":
        cfg = Int8WeightOnlyConfig()
    else:
        cfg = Int4WeightOnlyConfig(group_size=group_size)  # tile-packed for the CUDA tinygemm kernel
        m = m.to(torch.bfloat16)
    names = set(linear_layers(m, skip))
    quantize_(m, cfg, filter_fn=lambda mod, fqn: isinstance(mod, nn.Linear) and fqn in names)
    return m
