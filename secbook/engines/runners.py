"""One greedy ``generate(ids, n)`` for every engine: HF ``generate``, our C++ decode step, llama.cpp, CTranslate2 and
ONNX Runtime GenAI, on the same weights and the same number of threads.

Each runner takes a prompt as a list of token ids (the same ids for every engine, from the model's Hugging Face
tokenizer, so no engine's own tokenizer takes part) and returns the new token ids: exactly ``n`` of them, or up to
and including the end-of-sequence token when ``eos`` is given (a reply to a question). It also says how many weight
bytes one decode step reads (:attr:`Runner.read_bytes`, the numerator of MBU), which vector instructions its
kernels use (:attr:`Runner.vector_path`), and anything a reader should know about how it ran (:attr:`Runner.notes`).

Thread counts: ``torch.set_num_threads`` (HF and our C++ step, whose weights are split into one stream per thread),
llama.cpp's ``n_threads``/``n_threads_batch``, CTranslate2's ``intra_threads`` (one batch at a time) and ONNX
Runtime's ``intra_op_num_threads`` (in GenAI's session options).
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from . import formats, require, version


def cpu_vector_isa(cpuinfo: str | None = None) -> str:
    """The widest vector instructions this CPU offers, from ``/proc/cpuinfo``: "AVX-512 VNNI", "AVX-512", "AVX2",
    "NEON" (ARM) or "scalar" ("unknown" where there is no /proc/cpuinfo)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown"
    line = next((x for x in cpuinfo.splitlines() if x.startswith(("flags", "Features"))), "")
    flags = set(line.split(":", 1)[-1].split())
    if "avx512f" in flags:
        return "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    if "asimd" in flags or "neon" in flags:
        return "NEON"
    return "scalar"


class Runner:
    """What the suite times: ``generate(ids, n, eos=None) -> new ids``, plus what one step reads and how it ran."""
    engine: str = ""
    precision: str = ""
    bits: int = 32  # the weights' nominal bits (32, 8 or 4): entries of the same bits are compared as matched
    read_bytes: int = 0
    vector_path: str = ""
    notes: str = ""

    @property
    def label(self) -> str:
        return f"{self.engine} {self.precision}"

    @property
    def version(self) -> str:
        return version(self.engine) or ""

    def generate(self, ids: list[int], n: int, eos: int | None = None) -> list[int]:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the runner holds (models, threads)."""


def _cut(tokens: list[int], eos: int | None) -> list[int]:
    if eos is not None and eos in tokens:
        return tokens[:tokens.index(eos) + 1]
    return tokens


# --------------------------------------------------------------------------------------------- ours
class HFRunner(Runner):
    """transformers' ``generate``, greedy, on the fp32 model: the reference every other engine is checked against."""
    engine, precision, bits = "HF generate", "fp32", 32

    def __init__(self, model: str, threads: int):
        import torch

        from .. import load
        from ..measure import decode_read_bytes

        torch.set_num_threads(threads)
        self.model, self.tok = load(model)
        self.read_bytes = decode_read_bytes(self.model)
        self.vector_path = f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
        pad = self.model.generation_config.pad_token_id
        self.pad = pad if pad is not None else 0

    @property
    def version(self) -> str:
        import transformers

        return transformers.__version__

    def generate(self, ids, n, eos=None):
        import torch

        x = torch.tensor([ids])
        kw = dict(eos_token_id=eos)  # None: no end token at all, so exactly n tokens and none of them suppressed
        with torch.inference_mode():
            out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                                      do_sample=False, num_beams=1, pad_token_id=self.pad, **kw)
        return _cut(out[0, len(ids):].tolist(), eos)


def _cpp_vector_path() -> str:
    """Which vector path our C++ step was built with: ``kernels.simd_path()`` where the kernels have several, else
    whether its int8 products use AVX-512 VNNI or the plain loops the compiler vectorizes (``-march=native``)."""
    from .. import kernels

    simd = getattr(kernels, "simd_path", None)
    if callable(simd):
        return f"secbook {simd()}"
    vnni = "AVX-512 VNNI" if kernels.has_vnni() else "plain loops"
    return f"secbook -march=native on {cpu_vector_isa()}: int8 products by {vnni}"


class CppRunner(Runner):
    """Our whole decode step in C++ (:class:`secbook.kernels.CppDecoder` through
    ``FastGenerator(model, max_len, cpp=True)``): fp32 weights, or our int8 weights (``apply_transform(model,
    "int8k")``: int8 per output row, activations rounded to int16 in chunks of 256)."""
    engine = "secbook C++ step"

    def __init__(self, model: str, precision: str, threads: int, max_len: int):
        import torch

        from .. import load
        from ..generate import FastGenerator
        from ..ladder import apply_transform
        from ..measure import decode_read_bytes

        if precision not in ("fp32", "int8"):
            raise ValueError(f"our C++ step runs fp32 or int8 weights, not {precision!r}")
        torch.set_num_threads(threads)  # the step splits its weights into one stream per thread
        self.precision, self.bits = precision, 32 if precision == "fp32" else 8
        m, _ = load(model)
        if precision == "int8":
            m = apply_transform(m, "int8k")
        self.model = m
        self.gen = FastGenerator(m, max_len=max_len, cpp=True)
        self.read_bytes = decode_read_bytes(m)
        self.vector_path = _cpp_vector_path()

    @property
    def version(self) -> str:
        from .. import __version__

        return __version__

    def generate(self, ids, n, eos=None):
        import torch

        out = self.gen.generate(torch.tensor([ids]), n)
        return _cut(out[0, len(ids):].tolist(), eos)


# --------------------------------------------------------------------------------------------- llama.cpp
_PROBE = r"""
import sys, llama_cpp, numpy as np
import llama_cpp.llama as L
path, extra = sys.argv[1], sys.argv[2] == "1"
default = llama_cpp.llama_model_default_params
def params():
    p = default(); p.use_extra_bufts = extra; return p
L.llama_cpp.llama_model_default_params = params
llm = llama_cpp.Llama(path, n_ctx=64, n_threads=1, n_threads_batch=1, verbose=False)
llm.eval([1, 2, 3, 4]); llm.eval([5])
print("ok")
"""


@functools.cache
def _extra_buffers_work(path: str, fingerprint: tuple) -> bool:
    """Does llama.cpp decode ``path`` with its default weight buffers here? They include repacked layouts and, on
    CPUs with AMX, an AMX buffer whose matrix product crashes on some machines (ggml-org/llama.cpp#20824). A child
    process tries two tokens, so a crash costs nothing here; the answer is kept beside the file, keyed by the file,
    llama.cpp's version and build (its features: a build without AMX answers differently) and this CPU
    (``kernels.cpu_tag``)."""
    from ..kernels import cpu_tag

    record = Path(f"{path}.probe.json")
    key = f"{version('llama.cpp')}|{llama_system_info()}|{cpu_tag()}|{fingerprint}"
    try:
        known = json.loads(record.read_text())
        if known.get("key") == key:
            return bool(known["extra_buffers_work"])
    except (OSError, ValueError, KeyError):
        pass
    done = subprocess.run([sys.executable, "-c", _PROBE, path, "1"], capture_output=True, text=True, timeout=300)
    works = done.returncode == 0 and done.stdout.strip().endswith("ok")
    tmp = record.with_name(f".{record.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"key": key, "extra_buffers_work": works, "returncode": done.returncode}) + "\n")
        os.replace(tmp, record)
    except OSError:  # a read-only cache: probe again next time
        tmp.unlink(missing_ok=True)
    return works


def llama_system_info() -> str:
    """llama.cpp's build features that are on (``llama_print_system_info``), e.g. "AVX2 F16C FMA ... OPENMP"."""
    llama_cpp = require("llama.cpp")
    info = llama_cpp.llama_print_system_info().decode()
    return " ".join(m.group(1) for m in re.finditer(r"(\w+) = 1", info))


class LlamaCppRunner(Runner):
    """llama.cpp (``llama-cpp-python``) on a GGUF file of the model (:func:`formats.gguf_file`): F32, Q8_0, Q4_0 or
    Q4_1. Greedy by hand — evaluate the prompt, take the argmax of the last logits, evaluate that token, ... — so no
    sampler runs and no text is tokenized."""
    engine = "llama.cpp"

    def __init__(self, model: str, kind: str, threads: int, max_len: int, extra_buffers: bool | None = None):
        llama_cpp = require("llama.cpp")
        import llama_cpp.llama as llama_module

        self.precision = kind
        self.bits = {"F32": 32, "Q8_0": 8}.get(kind, 4)
        self.path = formats.gguf_file(model, kind)
        st = self.path.stat()
        if extra_buffers is None:
            extra_buffers = _extra_buffers_work(str(self.path), (st.st_size, st.st_mtime_ns))
        if not extra_buffers:
            self.notes = ("llama.cpp's extra weight buffers (AMX, repacked layouts) are off: decoding with them "
                          "crashed on this CPU (ggml-org/llama.cpp#20824)")
        default = llama_module.llama_cpp.llama_model_default_params

        def params():
            p = default()
            p.use_extra_bufts = bool(extra_buffers)
            return p

        llama_module.llama_cpp.llama_model_default_params = params  # Llama() has no argument for it
        try:
            self.llm = llama_cpp.Llama(str(self.path), n_ctx=max_len, n_batch=max_len, n_threads=threads,
                                       n_threads_batch=threads, verbose=False)
        finally:
            llama_module.llama_cpp.llama_model_default_params = default
        self._llama_cpp = llama_cpp
        self.n_vocab = self.llm.n_vocab()
        self.read_bytes = formats.gguf_read_bytes(self.path)
        self.vector_path = llama_system_info()

    def _next(self) -> int:
        import numpy as np

        logits = np.ctypeslib.as_array(self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        return int(logits.argmax())

    def generate(self, ids, n, eos=None):
        self.llm.reset()
        self.llm.eval(list(ids))
        out = []
        for i in range(n):
            t = self._next()
            out.append(t)
            if t == eos or i == n - 1:
                break
            self.llm.eval([t])
        return out

    def close(self):
        self.llm.close()


# --------------------------------------------------------------------------------------------- CTranslate2
_CT2_PROBE = r"""
import logging, sys, ctranslate2
ctranslate2.set_log_level(logging.INFO)
ctranslate2.Generator(sys.argv[1], device="cpu", compute_type=sys.argv[2], intra_threads=1)
"""


@functools.cache
def ct2_vector_path(folder: str, compute_type: str) -> str:
    """What CTranslate2 logs when it loads a model: the instruction set of its own kernels and its GEMM backend."""
    done = subprocess.run([sys.executable, "-c", _CT2_PROBE, folder, compute_type], capture_output=True, text=True,
                          timeout=300)
    log = done.stderr + done.stdout
    isa = re.search(r"Selected ISA: (\S+)", log)
    gemm = re.search(r"GEMM_S8 backend: (\w+)" if compute_type == "int8" else r"SGEMM backend: (\w+)", log)
    if not isa:
        return "unknown"
    return f"ISA {isa.group(1)}" + (f", GEMM by {gemm.group(1)}" if gemm else "")


class CT2Runner(Runner):
    """CTranslate2's ``Generator`` on the model converted with float32 or int8 weights (:func:`formats.ct2_dir`),
    greedy (``sampling_topk=1``). It takes tokens as strings: the ids are mapped through its vocabulary file."""
    engine = "CTranslate2"

    def __init__(self, model: str, quantization: str, threads: int):
        ctranslate2 = require("CTranslate2")
        self.precision, self.bits = quantization, 32 if quantization == "float32" else 8
        self.dir = formats.ct2_dir(model, quantization)
        self.gen = ctranslate2.Generator(str(self.dir), device="cpu", compute_type=quantization,
                                         intra_threads=threads, inter_threads=1)
        self.vocab = json.loads((self.dir / "vocabulary.json").read_text())
        self.read_bytes = formats.ct2_read_bytes(self.dir)
        self.vector_path = ct2_vector_path(str(self.dir), quantization)

    def generate(self, ids, n, eos=None):
        tokens = [self.vocab[i] for i in ids]
        kw = dict(end_token=[]) if eos is None else dict(end_token=[eos], return_end_token=True)
        kw["max_length"] = n
        r = self.gen.generate_batch([tokens], sampling_topk=1, include_prompt_in_result=False, **kw)
        return list(r[0].sequences_ids[0])

    def close(self):
        del self.gen


# --------------------------------------------------------------------------------------------- ONNX Runtime GenAI
class OrtGenAIRunner(Runner):
    """ONNX Runtime GenAI's ``Generator`` on the graph its model builder made (:func:`formats.ort_dir`): fp32, or
    int4 (``MatMulNBits``: 4-bit weights in blocks of 32, activations rounded to int8 on the CPU). Greedy by hand:
    ``append_tokens`` runs the model on new tokens (the KV cache kept by the generator), ``get_logits`` reads the
    last logits; as fast as its own ``generate_next_token`` loop, and like the other engines it neither suppresses
    nor stops at the end-of-sequence token when asked for exactly ``n`` tokens."""
    engine = "ONNX Runtime GenAI"

    def __init__(self, model: str, precision: str, threads: int):
        og = require("ONNX Runtime GenAI")
        self.precision, self.bits = precision, 32 if precision == "fp32" else 4
        self.dir = formats.ort_dir(model, precision)
        config = og.Config(str(self.dir))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
        self._og = og
        self.model = og.Model(config)
        self.read_bytes = formats.ort_read_bytes(self.dir)
        self.vector_path = f"MLAS, chosen at run time on {cpu_vector_isa()}"

    def generate(self, ids, n, eos=None):
        import numpy as np

        og = self._og
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=len(ids) + n)
        gen = og.Generator(self.model, params)
        gen.append_tokens(np.asarray(ids, dtype=np.int32))
        out = []
        for i in range(n):  # greedy by hand, as for llama.cpp: no end-of-sequence token is suppressed or awaited
            logits = gen.get_logits()
            t = int(logits.reshape(-1, logits.shape[-1])[-1].argmax())
            out.append(t)
            if t == eos or i == n - 1:
                break
            gen.append_tokens(np.asarray([t], dtype=np.int32))
        return out

    def close(self):
        del self.model


# --------------------------------------------------------------------------------------------- the list
# (engine, precision): every entry the suite knows, in the order it reports them
ENTRIES: tuple[tuple[str, str], ...] = (
    ("HF generate", "fp32"), ("secbook C++ step", "fp32"), ("secbook C++ step", "int8"),
    ("llama.cpp", "F32"), ("llama.cpp", "Q8_0"), ("llama.cpp", "Q4_0"), ("llama.cpp", "Q4_1"),
    ("CTranslate2", "float32"), ("CTranslate2", "int8"),
    ("ONNX Runtime GenAI", "fp32"), ("ONNX Runtime GenAI", "int4"),
)


def make_runner(engine: str, precision: str, model: str, threads: int, max_len: int = 512) -> Runner:
    """The runner of one entry of :data:`ENTRIES` for ``model`` (converting the model for it first if needed)."""
    if engine == "HF generate":
        return HFRunner(model, threads)
    if engine == "secbook C++ step":
        return CppRunner(model, precision, threads, max_len)
    if engine == "llama.cpp":
        return LlamaCppRunner(model, precision, threads, max_len)
    if engine == "CTranslate2":
        return CT2Runner(model, precision, threads)
    if engine == "ONNX Runtime GenAI":
        return OrtGenAIRunner(model, precision, threads)
    raise ValueError(f"unknown engine {engine!r}; choose from {sorted({e for e, _ in ENTRIES})}")


def parse_entries(labels) -> list[tuple[str, str]]:
    """Entries from labels like ``"llama.cpp:Q8_0"`` or an engine alone (``"llama.cpp"``: all its precisions);
    aliases ``hf``, ``cpp``, ``llama``, ``ct2``, ``ort``."""
    alias = {"hf": "HF generate", "cpp": "secbook C++ step", "ours": "secbook C++ step", "llama": "llama.cpp",
             "ct2": "CTranslate2", "ctranslate2": "CTranslate2", "ort": "ONNX Runtime GenAI",
             "ort-genai": "ONNX Runtime GenAI"}
    engines = {e.lower(): e for e, _ in ENTRIES}
    out: list[tuple[str, str]] = []
    for label in labels:
        name, _, precision = str(label).partition(":")
        engine = alias.get(name.lower()) or engines.get(name.lower())
        if engine is None:
            raise ValueError(f"unknown engine {name!r} in {label!r}; choose from {sorted(engines.values())} "
                             f"(or {', '.join(alias)})")
        chosen = [e for e in ENTRIES if e[0] == engine and (not precision or e[1].lower() == precision.lower())]
        if not chosen:
            raise ValueError(f"{engine} has no precision {precision!r}; it has "
                             f"{[p for e, p in ENTRIES if e == engine]}")
        out += [e for e in chosen if e not in out]
    return out


def needs(engine: str) -> str | None:
    """The optional package an entry needs (a key of ``secbook.engines.PACKAGES``), or None for ours."""
    return engine if engine in ("llama.cpp", "CTranslate2", "ONNX Runtime GenAI") else None


def default_threads() -> int:
    """The cores this process may run on (the same count is given to every engine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
