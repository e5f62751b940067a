"""A hand-written CPU kernel for int8 weights: ``secbook::int8_linear`` (source: ``secbook/csrc/int8_linear.cpp``).

Decoding one token reads every weight once, so an int8 weight reads a quarter of the bytes of an fp32 one —
*if* the product can keep up with memory. On a small CPU it cannot when each int8 weight is first turned into
a float and multiplied in fp32 (what the compiler makes of our PyTorch formulation, :class:`generate.
Int8WeightOnlyFused`): that costs several instructions per weight, and the loop runs slower than memory
delivers the bytes. llama.cpp's answer (Gerganov et al., 2023, its ``Q8_0`` dot products) is to round the
*activations* to integers too, so that one integer multiply-add instruction does many products at once. Here
the activations are rounded to int16 with one scale per 256 inputs (error ~1e-5 of the largest value in each
256) — closer to fp32 than the int8 activations of torch.ao's dynamic quantization — and on CPUs with AVX-512
VNNI one ``vpdpwssd`` instruction multiplies and adds 32 int16 pairs; elsewhere plain loops that the compiler
vectorizes do the same arithmetic.

The C++ file is compiled the first time it is needed with :func:`torch.utils.cpp_extension.load` (10-30 s
on a 2-core CPU; cached under ``~/.cache/torch_extensions`` afterwards) and registered as a PyTorch operator,
so ``torch.compile`` calls it from a compiled graph like any built-in kernel. :func:`int8_linear_reference`
is the same arithmetic in PyTorch, for reading and for tests.
"""
from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "csrc" / "int8_linear.cpp"
CHUNK = 256  # inputs per activation scale (must match kChunk in the C++ file)
_NAME = "secbook_int8_linear"


@functools.cache
def _build() -> str:
    """Compile and load the operator once per process; return "" on success, else why it failed."""
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        return "no C++ compiler found (install g++ or clang, or set CXX)"
    try:
        import torch.utils.cpp_extension as ext

        if not ext.is_ninja_available():
            try:  # the PyPI `ninja` package puts its binary next to the interpreter or in ninja.BIN_DIR
                import ninja

                os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
            except ImportError:
                return "the ninja build tool is missing (pip install ninja)"
        built = Path(ext._get_build_directory(_NAME, verbose=False)) / f"{_NAME}.so"
        if not built.exists():
            print("secbook: compiling the int8 kernel (once; 10-30 s) ...", flush=True)
        last_error = ""
        # -march=native: this CPU's vector instructions; -fopenmp: at::parallel_for splits the rows over the
        # cores with the OpenMP runtime torch already loaded (without it the loop runs on one core)
        for flags in (["-O3", "-march=native", "-fopenmp"], ["-O3", "-fopenmp"], ["-O3"]):
            try:
                ext.load(_NAME, [str(SOURCE)], extra_cflags=flags, extra_ldflags=flags[-1:] if "-fopenmp" in flags
                         else [], is_python_module=False, verbose=False)
                break
            except Exception as e:  # e.g. a compiler that does not know -march=native
                last_error = f"{e.__class__.__name__}: {str(e)[-300:]}"
        else:
            return f"compiling {SOURCE.name} failed: {last_error}"
    except Exception as e:
        return f"{e.__class__.__name__}: {str(e)[-300:]}"

    @torch.library.register_fake("secbook::int8_linear")
    def _(x, w, scale):
        return x.new_empty(*x.shape[:-1], w.shape[0])

    return ""


def available() -> bool:
    """Whether ``secbook::int8_linear`` is compiled and loaded (compiles it on the first call)."""
    return _build() == ""


def unavailable_reason() -> str:
    """Empty if the kernel works here, else why not."""
    return _build()


def has_vnni() -> bool:
    """Whether the compiled kernel uses AVX-512 VNNI instructions (else its plain-loop fallback)."""
    _require()
    return bool(torch.ops.secbook.int8_linear_vnni())


def _require() -> None:
    why = _build()
    if why:
        raise RuntimeError(f"secbook's int8 kernel is not available here: {why}. Use the pure-PyTorch int8 "
                           "weight-only path instead (apply_transform(model, 'int8wo')).")


def int8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(x @ weight.T) * scale`` for int8 ``weight [N, K]`` and fp32 ``scale [N]``, by the C++ kernel."""
    _require()
    return torch.ops.secbook.int8_linear(x, weight, scale)


def quantize_activations(x: torch.Tensor, chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Round each row of ``x [..., K]`` to int16, one scale per ``chunk`` inputs: returns (int16 values
    zero-padded to whole chunks ``[..., C, chunk]``, scales ``[..., C]``). The largest value of a chunk maps to
    32767; each value is off by at most half a step, ``max|x| / 65534``."""
    K = x.shape[-1]
    C = -(-K // chunk)
    xp = _pad_last(x.float(), C * chunk - K).reshape(*x.shape[:-1], C, chunk)
    amax = xp.abs().amax(-1)
    inv = torch.where(amax > 0, 32767.0 / amax, torch.zeros_like(amax))
    return torch.round(xp * inv[..., None]).to(torch.int16), amax / 32767.0


def _pad_last(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` with ``n`` zeros appended along its last axis."""
    return torch.nn.functional.pad(x, (0, n)) if n else x


def int8_linear_reference(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The kernel's arithmetic in PyTorch: int16 activations × int8 weights summed exactly per chunk of 256
    (int64 here, int32 in C++: the same integers), each chunk's sum times its activation scale, times the row
    scale. Slow; for reading and testing."""
    N, K = weight.shape
    xq, sx = quantize_activations(x)
    C = xq.shape[-2]
    w = _pad_last(weight.to(torch.int64), C * CHUNK - K).reshape(N, C, CHUNK)
    parts = torch.einsum("...ck,nck->...nc", xq.to(torch.int64), w)  # exact integer sums per chunk
    return (parts.float() * sx[..., None, :]).sum(-1) * scale.float()


class Int8Linear(torch.nn.Module):
    """A Linear layer with int8 weights (one fp32 scale per output row) multiplied by the C++ kernel.

    Build it from our int8 ``QuantLinear`` (symmetric, per-channel: :meth:`from_quant_linear`) or fuse several
    that read the same input (:meth:`fuse`). The weights are the same integers and scales; the outputs differ
    from ``QuantLinear``'s fp32 product only by the int16 rounding of the activations (relative ~1e-5).
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        _require()  # builds the kernel on first use, or says why it cannot
        if weight.dtype != torch.int8 or weight.dim() != 2:
            raise ValueError("weight must be an int8 [out_features, in_features] tensor")
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("scale", scale.float().reshape(-1).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())
        self.out_features, self.in_features = weight.shape

    @classmethod
    def from_quant_linear(cls, q) -> "Int8Linear":
        if not cls.accepts(q):
            raise ValueError("Int8Linear takes an 8-bit symmetric per-channel QuantLinear without AWQ scales, got "
                             f"{q!r}; quantize with bits=8, group_size=None, scheme='sym'.")
        return cls(q.signed_int8(), q.scale.float().reshape(-1), None if q.bias is None else q.bias)

    @staticmethod
    def accepts(q) -> bool:
        from .quantize import QuantLinear

        return (type(q) is QuantLinear and q.bits == 8 and q.scheme == "sym" and q.in_scale is None
                and q.group_size == q.in_features)

    @classmethod
    def fuse(cls, layers) -> "Int8Linear":
        """One layer computing ``cat([layer(x) for layer in layers], -1)``: their rows stacked."""
        from .generate import stacked_bias

        return cls(torch.cat([m.weight for m in layers]), torch.cat([m.scale for m in layers]),
                   stacked_bias(layers, like=layers[0].scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.secbook.int8_linear(x.float(), self.weight, self.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, int8 weights x int16 activations (C++ kernel)"


def use_int8_kernel(model: torch.nn.Module) -> torch.nn.Module:
    """Replace (in place) every 8-bit symmetric per-channel ``QuantLinear`` of ``model`` by an
    :class:`Int8Linear` with the same weights; returns the model. Raises if the kernel cannot be built here."""
    _require()
    from .quantize import _set_module

    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    if devices - {"cpu"}:
        raise ValueError(f"secbook's int8 kernel runs on the CPU only, and this model is on {sorted(devices)}; "
                         "on a GPU use the compiled pure-PyTorch int8 path (apply_transform(model, 'int8wo') and "
                         "FastGenerator(..., compile=True)) or torchao.")
    targets = [name for name, m in model.named_modules() if Int8Linear.accepts(m)]
    if not targets:
        raise ValueError("the model has no 8-bit symmetric per-channel QuantLinear layers; quantize it first: "
                         "secbook.quantize.quantize(model, bits=8, group_size=None)")
    for name in targets:
        _set_module(model, name, Int8Linear.from_quant_linear(model.get_submodule(name)))
    return model
