"""A hand-written CPU kernel for int8 weights: ``secbook::int8_linear`` (source: ``secbook/csrc/int8_linear.cpp``).

Decoding one token reads every weight once, so an int8 weight reads a quarter of the bytes of an fp32 one —
*if* the product can keep up with memory. On a small CPU it cannot when each int8 weight is first turned into
a float and multiplied in fp32 (what the compiler makes of our PyTorch formulation, :class:`linears.
Int8WeightOnlyFused`): that costs several instructions per weight, and the loop runs slower than memory
delivers the bytes. llama.cpp's answer (Gerganov et al., 2023, its ``Q8_0`` dot products) is to round the
*activations* to integers too, so that one integer multiply-add instruction does many products at once. Here
the activations are rounded to int16 with one scale per 256 inputs (error ~1e-5 of the largest value in each
256) — closer to fp32 than the int8 activations of torch.ao's dynamic quantization — and on CPUs with AVX-512
VNNI one ``vpdpwssd`` instruction multiplies and adds 32 int16 pairs, with AVX2 one ``vpmaddwd`` does 16, on
64-bit ARM (NEON) one ``smlal`` does 4; elsewhere plain loops that the compiler vectorizes do the same
arithmetic. Which of these paths a build uses is decided when it is compiled, from the instructions the compiler
may use (``secbook/csrc/simd.h``); :func:`simd_path` says which. All give the same int8 products to the bit.

The C++ file is compiled the first time it is needed with :func:`torch.utils.cpp_extension.load` (10-30 s
on a 2-core CPU; cached under ``~/.cache/torch_extensions`` afterwards) and registered as a PyTorch operator,
so ``torch.compile`` calls it from a compiled graph like any built-in kernel. It is compiled for this CPU's own
instructions (``-march=native``), or for those named by ``$SECBOOK_SIMD`` (``avx2``, ``scalar``); a second
build for another path can be loaded beside it (``simd=`` arguments below, operators in ``torch.ops.secbook_avx2``
etc.), which is how the tests check every path a CPU can run. :func:`int8_linear_reference`
is the same arithmetic in PyTorch, for reading and for tests.

:class:`CppDecoder` goes one step further, as llama.cpp does: the whole decode step of a Llama-layout model
(Llama, Qwen2, Qwen3, Mistral) —
norms, RoPE, KV-cache writes, attention, MLP and all the int8 products — as one C++ operator call per token
(``secbook::llama_step``, ``secbook/csrc/llama_step.cpp``), so nothing but weight reading is left between two
tokens; its weights are packed so that each core reads one sequential stream through the whole step. It runs on
our int8 weights or, without any quantization, on the model's fp32 weights.
"""
from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import torch

CSRC = Path(__file__).parent / "csrc"
SOURCES = [CSRC / "int8_linear.cpp", CSRC / "llama_step.cpp"]  # both include int8_gemv.h and simd.h
CHUNK = 256  # inputs per activation scale (must match kChunk in the C++ file)
# the builds one can ask for, and the compiler flags that pick each path of simd.h: "native" is whatever this CPU
# has (AVX-512 where present, else AVX2; NEON on 64-bit ARM; else plain loops); "avx2" and "scalar" force one path
SIMD_BUILDS = {"native": ["-march=native"], "avx2": ["-mavx2", "-mfma"], "scalar": ["-DSECBOOK_PORTABLE"]}


def cpu_tag(cpuinfo: str | None = None) -> str:
    """A short hash of this CPU's architecture, model name and instruction-set flags (from ``/proc/cpuinfo``).

    The kernel is built with ``-march=native``, so a build is only good for CPUs with the same instructions; the
    build cache (``~/.cache/torch_extensions``) is keyed by the extension's name, so the name carries this tag and a
    home directory shared by different machines (a cluster's login and compute nodes) never hands one CPU a build
    that uses instructions it lacks."""
    import hashlib
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    lines = cpuinfo.splitlines()
    model = next((line for line in lines if line.startswith("model name")), "")
    flags = next((line for line in lines if line.startswith(("flags", "Features"))), "")
    return hashlib.sha1(f"{platform.machine()}|{model}|{flags}".encode()).hexdigest()[:8]


def default_simd() -> str:
    """The build behind ``torch.ops.secbook``: ``$SECBOOK_SIMD`` if set (``native``, ``avx2`` or ``scalar``), else
    ``native``."""
    simd = os.environ.get("SECBOOK_SIMD", "native") or "native"
    if simd not in SIMD_BUILDS:
        raise ValueError(f"SECBOOK_SIMD={simd!r} is not a build secbook knows; use one of {', '.join(SIMD_BUILDS)}")
    return simd


def _resolve(simd: str | None) -> tuple[str, str]:
    """(build, operator namespace) for a ``simd`` argument: None or the default build -> ``secbook``; another
    build -> its own namespace (``secbook_avx2``), so that both can be loaded in one process."""
    default = default_simd()
    if simd is None or simd == default:
        return default, "secbook"
    if simd not in SIMD_BUILDS:
        raise ValueError(f"simd={simd!r} is not a build secbook knows; use one of {', '.join(SIMD_BUILDS)} (or None)")
    return simd, f"secbook_{simd}"


def _build_name(simd: str, namespace: str) -> str:
    """The extension's name, also its folder in the build cache: one per build, namespace and kind of CPU (see
    :func:`cpu_tag`)."""
    return f"{namespace}_kernels_{simd}_{cpu_tag()}"


def _cpu_cannot_run(simd: str, cpuinfo: str | None = None, machine: str | None = None) -> str:
    """Why this CPU cannot run a forced build's instructions (x86-64 AVX2 + FMA), or "" if it can (or if
    ``/proc/cpuinfo`` cannot be read: the build is then tried). ``cpuinfo``/``machine`` stand in for this CPU's."""
    import platform

    if simd != "avx2":
        return ""
    machine = machine or platform.machine()
    if machine.lower() not in ("x86_64", "amd64"):
        return f"the avx2 build is for x86-64 CPUs; this one is {machine}"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    missing = {"avx2", "fma"} - set(cpuinfo.split())
    return f"this CPU lacks {' and '.join(sorted(missing))}" if missing else ""


def _build(simd: str | None = None) -> str:
    """Compile and load one build of the operators once per process; return "" on success, else why it failed."""
    try:
        simd, ns = _resolve(simd)
    except ValueError as e:
        return str(e)
    loaded = _LOADED.setdefault(ns, simd)
    if loaded != simd:  # one library per namespace: $SECBOOK_SIMD changed after the default build was loaded
        return (f"the {loaded} build is already loaded as torch.ops.{ns} in this process; set SECBOOK_SIMD before "
                "Python starts, or pass simd= to use another build beside it")
    return _compile(simd, ns)


_LOADED: dict[str, str] = {}  # operator namespace -> the build loaded into it in this process


@functools.cache
def _compile(simd: str, ns: str) -> str:
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        return "no C++ compiler found (install g++ or clang, or set CXX)"
    why = _cpu_cannot_run(simd)
    if why:
        return why
    name = _build_name(simd, ns)
    try:
        import torch.utils.cpp_extension as ext

        if not ext.is_ninja_available():
            try:  # the PyPI `ninja` package puts its binary next to the interpreter or in ninja.BIN_DIR
                import ninja

                os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
            except ImportError:
                return "the ninja build tool is missing (pip install ninja)"
        built = Path(ext._get_build_directory(name, verbose=False)) / f"{name}.so"
        if not built.exists():
            what = "the int8 kernel" if simd == "native" and ns == "secbook" else f"the {simd} build of the kernels"
            print(f"secbook: compiling {what} (once; 10-30 s) ...", flush=True)
        last_error = ""
        base = ["-O3", f"-DSECBOOK_NS={ns}"] + SIMD_BUILDS[simd]
        # -fopenmp: at::parallel_for and the decode step's parallel region use the OpenMP runtime torch already
        # loaded (without it everything runs on one core); a compiler without it, or without -march=native
        # (the native build only: a forced build without its flags would be another path), still gets a build
        tries = [base + ["-fopenmp"], base]
        if simd == "native":
            tries = [base + ["-fopenmp"], ["-O3", f"-DSECBOOK_NS={ns}", "-fopenmp"], ["-O3", f"-DSECBOOK_NS={ns}"]]
        for flags in tries:
            try:
                ext.load(name, [str(f) for f in SOURCES], extra_cflags=flags,
                         extra_ldflags=["-fopenmp"] if "-fopenmp" in flags else [], is_python_module=False,
                         verbose=False)
                break
            except Exception as e:  # e.g. a compiler that does not know -march=native
                last_error = f"{e.__class__.__name__}: {str(e)[-300:]}"
        else:
            return f"compiling {', '.join(f.name for f in SOURCES)} failed: {last_error}"
        if last_error:  # built, but with fewer flags: slower (no vector path, or one core); say why
            import warnings

            warnings.warn(f"secbook: the int8 kernel was built with {' '.join(flags)} only, because the full build "
                          f"failed: {last_error}", stacklevel=2)
    except Exception as e:
        return f"{e.__class__.__name__}: {str(e)[-300:]}"
    path = getattr(torch.ops, ns).simd_path()
    if simd != "native" and path != simd:  # a forced build must run the path it names, or its tests mean nothing
        return f"the {simd} build compiled the {path} path (the compiler's macros did not match its flags)"

    @torch.library.register_fake(f"{ns}::int8_linear")
    def _(x, w, scale):
        return x.new_empty(*x.shape[:-1], w.shape[0])

    return ""


def available(simd: str | None = None) -> bool:
    """Whether the operators are compiled and loaded (compiles them on the first call); ``simd`` names another
    build than the default (``"native"``, ``"avx2"``, ``"scalar"``)."""
    return _build(simd) == ""


def unavailable_reason(simd: str | None = None) -> str:
    """Empty if the kernels work here (in the build ``simd``; None: the default one), else why not."""
    return _build(simd)


def ops(simd: str | None = None):
    """The operators of one build: ``torch.ops.secbook`` (the default build), or e.g. ``torch.ops.secbook_avx2``
    for ``simd="avx2"`` (compiled and loaded on first use). Raises a ``ValueError`` for a name that is no build,
    a ``RuntimeError`` if the build cannot be made or run here."""
    _require(simd)
    return getattr(torch.ops, _resolve(simd)[1])


def simd_path(simd: str | None = None) -> str:
    """Which vector path a build runs: ``"avx512-vnni"``, ``"avx512"``, ``"avx2"``, ``"neon"`` (64-bit ARM) or
    ``"scalar"`` (plain loops that the compiler vectorizes as it can). ``simd``: None for the default build, or
    the build to ask about. All give the same int8 products to the bit; fp32 sums differ in their order only."""
    return str(ops(simd).simd_path())


def has_vnni() -> bool:
    """Whether the default build uses AVX-512 VNNI instructions."""
    return simd_path() == "avx512-vnni"


def _require(simd: str | None = None) -> None:
    ns = _resolve(simd)[1]  # a name that is no build: ValueError
    why = _build(simd)
    if why:
        if ns != "secbook":
            raise RuntimeError(f"secbook's {simd} build of the kernels is not available here: {why}")
        raise RuntimeError(f"secbook's int8 kernel is not available here: {why}. Use the pure-PyTorch int8 "
                           "weight-only path instead (apply_transform(model, 'int8wo')).")


def int8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, simd: str | None = None) -> torch.Tensor:
    """``(x @ weight.T) * scale`` for int8 ``weight [N, K]`` and fp32 ``scale [N]``, by the C++ kernel (of the
    build ``simd``: None for the default one)."""
    return ops(simd).int8_linear(x, weight, scale)


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
        from .linears import stacked_bias

        return cls(torch.cat([m.weight for m in layers]), torch.cat([m.scale for m in layers]),
                   stacked_bias(layers, like=layers[0].scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.secbook.int8_linear(x.float(), self.weight, self.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, int8 weights x int16 activations (C++ kernel)"


def _require_cpu(model: torch.nn.Module, what: str, instead: str) -> None:
    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    if devices - {"cpu"}:
        raise ValueError(f"{what} runs on the CPU only, and this model is on {sorted(devices)}; {instead}")


def use_int8_kernel(model: torch.nn.Module) -> torch.nn.Module:
    """Replace (in place) every 8-bit symmetric per-channel ``QuantLinear`` of ``model`` by an
    :class:`Int8Linear` with the same weights; returns the model. Raises if the kernel cannot be built here."""
    _require()
    from .quantize import _set_module

    _require_cpu(model, "secbook's int8 kernel", "on a GPU use the compiled pure-PyTorch int8 path "
                 "(apply_transform(model, 'int8wo') and FastGenerator(..., compile=True)) or torchao.")
    targets = [name for name, m in model.named_modules() if Int8Linear.accepts(m)]
    if not targets:
        raise ValueError("the model has no 8-bit symmetric per-channel QuantLinear layers; quantize it first: "
                         "secbook.quantize.quantize(model, bits=8, group_size=None)")
    for name in targets:
        _set_module(model, name, Int8Linear.from_quant_linear(model.get_submodule(name)))
    return model


CPP_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")  # the decoder layouts secbook::llama_step runs


def check_cpp_supported(model) -> None:
    """Raise a ``ValueError`` naming our PyTorch loop as the alternative if the C++ decode step cannot run
    ``model``: it runs the Llama layout (RMSNorm, RoPE, grouped-query attention, SiLU-gated MLP) with Qwen2's
    biases, Qwen3's per-head q/k RMSNorm and Mistral's sliding window."""
    cfg = getattr(model, "config", None)
    mt = getattr(cfg, "model_type", None)
    if mt not in CPP_MODEL_TYPES:
        raise ValueError(f"the C++ decode step runs {', '.join(CPP_MODEL_TYPES)} models, not model_type={mt!r}; "
                         "use our PyTorch loop for this model instead: FastGenerator(model, max_len) without "
                         "cpp=True (or model.generate())")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise ValueError(f"the C++ decode step implements the SiLU MLP, not hidden_act={cfg.hidden_act!r}; use "
                         "FastGenerator(model, max_len) without cpp=True (or model.generate())")


def sliding_windows(model) -> list[int]:
    """Per layer, how many of the latest positions a query attends to (0: all of them). Mistral: the config's
    ``sliding_window`` in every layer (Jiang et al., 2023, "Mistral 7B"); Qwen2/Qwen3: each attention module's own
    ``sliding_window`` (set in the layers ``config.layer_types`` marks as sliding); Llama: none."""
    cfg, layers = model.config, model.model.layers
    if cfg.model_type == "mistral":
        return [int(getattr(cfg, "sliding_window", None) or 0)] * len(layers)
    return [int(getattr(layer.self_attn, "sliding_window", None) or 0) for layer in layers]


class CppDecoder(torch.nn.Module):
    """The whole decoder forward of a Llama-layout model (Llama, Qwen2, Qwen3, Mistral) as ONE call of the C++
    operator ``secbook::llama_step`` (``secbook/csrc/llama_step.cpp``), on int8 or fp32 weights.

    A drop-in for :class:`secbook.generate.StaticDecoder` (``forward(ids [1, T], input_pos [T], last_only)``
    → logits), so ``FastGenerator(model, max_len, cpp=True)`` decodes with it. Two kinds of model work: one
    that has run through :func:`use_int8_kernel` (``apply_transform(model, "int8k")``: every projection and the
    LM head an :class:`Int8Linear`; the products are :func:`int8_linear`'s arithmetic), or a plain fp32 model
    (every projection and the LM head an fp32 ``nn.Linear``; fp32 products, nothing quantized). The weights are
    copied once, by ``secbook::llama_pack``, into one buffer per core (``parts``, by default
    ``torch.get_num_threads()``): each core's share of every matrix, in the order the step reads them, so that
    each core reads one sequential stream and the cores meet only at the barriers between the step's phases
    (see the top of ``llama_step.cpp``). The copy doubles the memory of the weights, like the fused copies of
    our Python loop. Norms, RoPE (the model's own cos/sin tables), attention and SiLU are fp32 loops, so the
    logits differ from the PyTorch loop's over the same weights only by the order of fp32 additions (and ~1e-7
    from the step's own ``exp``). Any ``parts`` gives the same logits on any number of threads; it is fastest
    when it equals the number of threads. Qwen3's q/k norms and Mistral's sliding window (:func:`sliding_windows`:
    keys older than the window are skipped; the cache still holds ``max_len`` positions) run inside the step.
    ``simd`` picks another build of the operator than the default (``"avx2"``, ``"scalar"``: see :func:`ops`).
    Batch 1, CPU only.
    """

    def __init__(self, model, max_len: int, batch: int = 1, parts: int | None = None, simd: str | None = None):
        super().__init__()
        from .linears import stacked_bias

        check_cpp_supported(model)
        self.ops = ops(simd)  # builds the operators on first use, or says why they cannot be built
        self.simd = simd_path(simd)
        _require_cpu(model, "the C++ decode step", "on a GPU use FastGenerator(model, max_len, compile=True) "
                     "(CUDA graphs).")
        cfg = model.config
        if batch != 1:
            raise ValueError(f"the C++ decode step runs one sequence at a time (batch=1), got batch={batch}; "
                             "use FastGenerator(..., cpp=False) for batches")
        m = model.model
        names = [(f"model.layers.{i}.{n}", getattr(getattr(layer, part), n)) for i, layer in enumerate(m.layers)
                 for part, ns in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                                  ("mlp", ("gate_proj", "up_proj", "down_proj"))) for n in ns]
        names.append(("lm_head", model.lm_head))
        fp32 = all(type(mod) is torch.nn.Linear and mod.weight.dtype == torch.float32 for _, mod in names)
        wrong = [n for n, mod in names if type(mod) is not Int8Linear]
        if wrong and not fp32:
            raise ValueError(f"the C++ decode step needs every projection and the LM head as an Int8Linear, or all "
                             f"as fp32 nn.Linear, but {len(wrong)} are not Int8Linear (e.g. {wrong[0]}: "
                             f"{type(dict(names)[wrong[0]]).__name__}); run secbook.ladder.apply_transform(model, "
                             "'int8k') first, or keep the model in fp32")
        if model.lm_head.bias is not None:
            raise ValueError("the C++ decode step does not add an LM-head bias")
        self.weights = "fp32" if fp32 else "int8"
        layers = m.layers
        groups = {"qkv": [[l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj] for l in layers],
                  "o": [[l.self_attn.o_proj] for l in layers],
                  "gu": [[l.mlp.gate_proj, l.mlp.up_proj] for l in layers],
                  "d": [[l.mlp.down_proj] for l in layers]}
        stacked = {}
        for kind, per_layer in groups.items():  # one [layers, out, in] tensor per kind: q/k/v rows together, ...
            weights = [torch.cat([mod.weight.detach() for mod in mods]) for mods in per_layer]
            stacked[kind] = torch.stack(weights)
            scales = ([torch.ones(w.shape[0]) for w in weights] if fp32 else  # fp32: scales of 1 (exact)
                      [torch.cat([mod.scale for mod in mods]) for mods in per_layer])
            self.register_buffer(f"s{kind}", torch.stack(scales))
            # [layers, out], zeros where a module has none; None if no layer of this kind has a bias
            bias = stacked_bias([mod for mods in per_layer for mod in mods], like=scales[0])
            self.register_buffer(f"b{kind}", None if bias is None else bias.view(len(per_layer), -1))
        # one buffer per core: its share of every matrix, in the order the step reads them (see llama_step.cpp)
        self.parts = int(parts or torch.get_num_threads())
        if self.parts < 1:
            raise ValueError(f"parts must be >= 1 (one per core that runs the step), got {parts}")
        head_w = model.lm_head.weight.detach()
        self.packed = self.ops.llama_pack(stacked["qkv"], stacked["o"], stacked["gu"], stacked["d"],
                                          head_w.contiguous(), self.parts)
        del stacked
        norms = [n for l in layers for n in (l.input_layernorm, l.post_attention_layernorm)] + [m.norm]
        self.register_buffer("norms", torch.stack([n.weight.detach().float() for n in norms]))
        self.eps = float(getattr(m.norm, "variance_epsilon", getattr(cfg, "rms_norm_eps", 1e-6)))
        # Qwen3: an RMSNorm over each query and each key head before RoPE, [layers, 2 (q, k), head_dim]
        qk = [(l.self_attn.q_norm, l.self_attn.k_norm) for l in layers if hasattr(l.self_attn, "q_norm")]
        if qk and len(qk) != len(layers):
            raise ValueError("the C++ decode step needs q/k norms in every layer or in none")
        if any(float(getattr(n, "variance_epsilon", self.eps)) != self.eps for pair in qk for n in pair):
            raise ValueError("the C++ decode step uses one RMSNorm epsilon; this model's q/k norms use another")
        self.register_buffer("qk_norms", torch.stack([torch.stack([q.weight.detach().float(), k.weight.detach()
                                                                   .float()]) for q, k in qk]) if qk else None)
        self.windows = sliding_windows(model)
        self.embed = m.embed_tokens.weight.detach()
        if self.embed.dtype != torch.float32:
            self.embed = self.embed.float()
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scaling = float(layers[0].self_attn.scaling)
        self.max_len, self.batch, self.n_layers = int(max_len), 1, len(layers)
        with torch.no_grad():  # the model's own RoPE tables (any rope type: default, llama3, linear, ...)
            cos, sin = m.rotary_emb(self.embed[:1][None], torch.arange(self.max_len)[None])
        self.register_buffer("cos", cos[0].float().contiguous())
        self.register_buffer("sin", sin[0].float().contiguous())
        shape = (self.n_layers, self.n_kv, self.max_len, self.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape))
        self.register_buffer("v_cache", torch.zeros(shape))
        self.head_s = torch.ones(head_w.shape[0]) if fp32 else model.lm_head.scale

    def cache_bytes(self) -> int:
        """Bytes of the pre-allocated KV cache."""
        return self.k_cache.nbytes + self.v_cache.nbytes

    def forward(self, ids: torch.Tensor, input_pos: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        if ids.shape[0] != 1:
            raise ValueError(f"the C++ decode step runs batch 1, got ids of shape {tuple(ids.shape)}")
        pos = int(input_pos[0])
        if input_pos.numel() > 1 and not torch.equal(input_pos, torch.arange(pos, pos + ids.shape[1])):
            raise ValueError("the C++ decode step writes consecutive positions; input_pos must be pos, pos+1, ...")
        logits = self.ops.llama_step(
            ids.reshape(-1).long().contiguous(), pos, self.embed, self.norms, self.packed, self.sqkv, self.bqkv,
            self.so, self.bo, self.sgu, self.bgu, self.sd, self.bd, self.head_s, self.cos, self.sin, self.k_cache,
            self.v_cache, self.n_heads, self.eps, self.scaling, last_only, self.qk_norms,
            self.windows if any(self.windows) else [])
        return logits[None]
