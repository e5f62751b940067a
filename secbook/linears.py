"""Projections fused for decoding: several layers that read the same input, run as one.

A decoder step reads every weight once; at batch 1 how it is read matters. :func:`fuse_linears` turns the
layers that read the same input (q, k and v; gate and up) into ONE module computing
``cat([layer(x) for layer in layers], -1)``, whatever the layers are: plain float ``nn.Linear`` (or GPT-2's
``Conv1D``) as one matmul over a transposed copy (:class:`FusedLinear`, gpt-fast's ``wqkv``), torch.ao dynamic
int8 layers as one packed int8 weight (:class:`Int8DynamicFused`), our int8 weight-only ``QuantLinear`` layers
as one int8 matrix with a fused dequantize-matmul (:class:`Int8WeightOnlyFused`), a layer class that knows how
to fuse itself (a ``fuse(layers)`` class method, e.g. :class:`secbook.kernels.Int8Linear`), and anything else
(int4, bitsandbytes, torchao) as the layers' own calls (:class:`SeparateLinears`). Fusing never changes what is
computed: each output is the same dot product of the same weight row with the same input.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from .quantize import QuantLinear, is_conv1d


def out_features(m) -> int:
    """Output width of a linear layer of any type (``nn.Linear``, ``Conv1D``, our ``QuantLinear``, ...)."""
    if is_conv1d(m):
        return int(m.nf)
    n = getattr(m, "out_features", None)
    return int(n) if n is not None else int(m.weight.shape[0])


def stacked_bias(layers, like: torch.Tensor) -> torch.Tensor | None:
    """The biases of ``layers`` end to end, as the fused layer needs them (zeros for a layer without one), in
    ``like``'s dtype and device; None if no layer has a bias."""
    if all(getattr(m, "bias", None) is None for m in layers):
        return None
    return torch.cat([m.bias.detach().to(like) if m.bias is not None else like.new_zeros(out_features(m))
                      for m in layers])


class FusedLinear(torch.nn.Module):
    """Several ``nn.Linear`` layers that read the same input, run as ONE matmul over their weights stored
    transposed and concatenated: ``weight_t`` is ``[in, out_1 + out_2 + ...]``, contiguous.

    Each output is still the dot product of the same weight row with the same input, so the tokens do not
    change. Two things get faster at batch 1: one call instead of three (q, k, v) or two (gate, up), and the
    layout — a CPU BLAS matrix-vector product streams an ``[in, out]`` matrix about twice as fast as
    ``nn.Linear``'s ``[out, in]`` one (chapter 3.2 measures both). gpt-fast fuses ``wqkv`` the same way. The
    fused copy is the decoder's own: the Hugging Face model keeps its weights, so they are held twice. GPT-2's
    ``Conv1D`` layers already store ``[in, out]``; they are taken as they are.
    """

    def __init__(self, linears):
        super().__init__()
        w_t = torch.cat([lin.weight.detach() if is_conv1d(lin) else lin.weight.detach().t() for lin in linears], 1)
        self.register_buffer("weight_t", w_t.contiguous())
        self.register_buffer("bias", stacked_bias(linears, like=w_t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight_t
        return y if self.bias is None else y + self.bias


_INT8_PACKED: dict[int, object] = {}  # key -> fbgemm packed weights; entries die with their Int8DynamicFused


# A low-level operator definition (``torch.library.Library``) rather than ``torch.library.custom_op``: the
# latter adds ~10 µs of Python per call, which at ~120 calls per token is a tenth of an int8 decode step.
_LIB = torch.library.Library("secbook", "DEF")
_LIB.define("int8_dynamic_linear(Tensor x, int key, int out_features) -> Tensor")


def _int8_dynamic_linear(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    return torch.ops.quantized.linear_dynamic(x, _INT8_PACKED[key], reduce_range=True)


_LIB.impl("int8_dynamic_linear", _int8_dynamic_linear, "CPU")


@torch.library.register_fake("secbook::int8_dynamic_linear")
def _(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], out_features)


class Int8DynamicFused(torch.nn.Module):
    """torch.ao dynamically quantized int8 Linear layers that read the same input, fused into one int8 weight
    with a scale per output row (each row keeps the scale it had, so the arithmetic is the layers' own).

    ``torch.compile`` cannot trace the packed weights (a TorchScript object), so the matmul is hidden behind a
    custom operator (``secbook::int8_dynamic_linear``) that the compiler treats as a black box with a known
    output shape; everything around it (norms, RoPE, attention, residuals) is compiled.
    """

    def __init__(self, qlinears):
        super().__init__()
        rows, scales, zps, biases = [], [], [], []
        for m in qlinears:
            w, b = m._packed_params._packed_params.unpack()
            n = w.shape[0]
            if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                s, z = torch.full((n,), w.q_scale(), dtype=torch.double), torch.full((n,), w.q_zero_point())
            else:
                s, z = w.q_per_channel_scales(), w.q_per_channel_zero_points()
            rows.append(w.int_repr())
            scales.append(s.double())
            zps.append(z.long())
            biases.append(b)
        w = torch._make_per_channel_quantized_tensor(torch.cat(rows), torch.cat(scales), torch.cat(zps), 0)
        bias = None
        if any(b is not None for b in biases):
            bias = torch.cat([b if b is not None else torch.zeros(r.shape[0]) for b, r in zip(biases, rows)])
        self.out_features = w.shape[0]
        self._register(torch.ops.quantized.linear_prepack(w, bias))

    def _register(self, packed) -> None:
        """File the packed weights under this module's own key, dropped when the module is collected."""
        self.key = id(self)
        _INT8_PACKED[self.key] = packed
        weakref.finalize(self, _INT8_PACKED.pop, self.key, None)

    def __deepcopy__(self, memo):
        # a plain deepcopy would copy the key and share the original's entry, which vanishes with the original;
        # the copy files the same (read-only) packed weights under a key of its own
        new = type(self).__new__(type(self))
        torch.nn.Module.__init__(new)
        new.training, new.out_features = self.training, self.out_features
        new._register(_INT8_PACKED[self.key])
        memo[id(self)] = new
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.secbook.int8_dynamic_linear(x, self.key, self.out_features)


class Int8WeightOnlyFused(torch.nn.Module):
    """Our int8 weight-only ``QuantLinear`` layers (symmetric, one scale per output row or per group of
    inputs) that read the same input, fused: signed int8 ``weight [N, K]`` and fp32 ``scale [N, G]``.

    Weight-only quantization halves (vs bf16) or quarters (vs fp32) the bytes a decode step reads, but only
    if the int8 weights are turned into products *on the fly*. Dequantizing into a float matrix and calling a
    matmul writes and re-reads a full-size float copy: slower than not quantizing at all. So for one token
    inside a compiled graph the product is written as a reduction, ``y[n] = sum_g scale[n, g] * sum_k
    x[g, k] * w[n, g, k]``: the compiler turns it into one loop that reads each int8 weight once, converts it
    in registers and multiplies (the "fused dequantize-matmul" of gpt-fast's int8 path). The rows are cut into
    ``blocks`` contiguous blocks written as separate sums: the compiler fuses them into one loop that keeps a
    running sum per block, so the CPU has independent additions to overlap instead of waiting on one chain
    (measured on a 2-core EPYC: ~1.4x on the 49152-row LM head with 4 blocks). Otherwise (eager, prefill) it
    dequantizes and calls ``F.linear``, which is correct but slow — chapter 3.2 shows both.
    """

    blocks = 4

    def __init__(self, qlinears):
        super().__init__()
        gs = qlinears[0].group_size or qlinears[0].in_features
        w = torch.cat([m.signed_int8() for m in qlinears])
        self.register_buffer("weight", w.contiguous())
        self.register_buffer("scale", torch.cat([m.scale.float().reshape(m.out_features, -1) for m in qlinears]))
        self.out_features, self.in_features, self.group = w.shape[0], w.shape[1], gs
        self.register_buffer("bias", stacked_bias(qlinears, like=self.scale))

    @staticmethod
    def accepts(linears) -> bool:
        return all(type(m) is QuantLinear and m.bits == 8 and m.scheme == "sym" and m.in_scale is None
                   and (m.group_size or m.in_features) == (linears[0].group_size or linears[0].in_features)
                   for m in linears)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, K, g = self.out_features, self.in_features, self.group
        w = self.weight.view(N, K // g, g)
        if torch.compiler.is_compiling() and x.shape[:-1].numel() == 1:
            xg = x.reshape(*x.shape[:-1], 1, K // g, g)
            rows = -(-N // self.blocks)
            y = torch.cat([((xg * wb.to(x.dtype)).sum(-1) * sb.to(x.dtype)).sum(-1)
                           for wb, sb in zip(w.split(rows), self.scale.split(rows))], dim=-1)
        else:
            y = F.linear(x, (w.to(x.dtype) * self.scale.to(x.dtype)[..., None]).view(N, K))
        return y if self.bias is None else y + self.bias.to(x.dtype)



class SeparateLinears(torch.nn.Module):
    """The unfused fallback: call each layer (any module: our ``QuantLinear``, bitsandbytes, ...) and
    concatenate the outputs, so the decoder's code is the same either way."""

    def __init__(self, linears):
        super().__init__()
        self.linears = torch.nn.ModuleList(linears)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.linears) == 1:
            return self.linears[0](x)
        return torch.cat([lin(x) for lin in self.linears], dim=-1)




def _plain_float(lin) -> bool:
    """A float ``nn.Linear`` or ``Conv1D`` whose weight is an ordinary tensor (not torchao's subclass)."""
    return ((type(lin) is torch.nn.Linear or is_conv1d(lin)) and type(lin.weight.detach()) is torch.Tensor
            and lin.weight.dtype.is_floating_point)


def fuse_linears(linears, fuse: bool = True) -> torch.nn.Module:
    """One module computing ``cat([lin(x) for lin in linears], -1)``: :class:`FusedLinear` for plain float
    ``nn.Linear`` (or ``Conv1D``) layers, :class:`Int8DynamicFused` for torch.ao dynamic int8 ones,
    :class:`Int8WeightOnlyFused` for our int8 ``QuantLinear`` ones, ``type(layers[0]).fuse(layers)`` for layers of
    one class that has a ``fuse`` class method (our C++ kernel's ``Int8Linear``), else (or ``fuse=False``)
    :class:`SeparateLinears`."""
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    linears = list(linears)
    kind = type(linears[0])
    if fuse and all(type(lin) is kind for lin in linears) and callable(getattr(kind, "fuse", None)):
        return kind.fuse(linears)
    if fuse and all(_plain_float(lin) for lin in linears):
        return FusedLinear(linears)
    if fuse and all(type(lin) is DynLinear and lin._packed_params.dtype == torch.qint8 for lin in linears):
        return Int8DynamicFused(linears)
    if fuse and Int8WeightOnlyFused.accepts(linears):
        return Int8WeightOnlyFused(linears)
    return SeparateLinears(linears)
