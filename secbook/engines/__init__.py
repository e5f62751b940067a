"""The engines readers run a small model with, side by side with ours: llama.cpp, CTranslate2, ONNX Runtime GenAI.

Three CPU engines with a real generation loop, each with its own file format and its own quantization schemes:

* **llama.cpp** (Gerganov et al., 2023; through ``llama-cpp-python``) runs GGUF files — the format Ollama and
  LM Studio download — whose weights are stored in blocks (``Q8_0``: 32 int8 values and one fp16 scale;
  ``Q4_0``/``Q4_1``: 32 4-bit values with a scale, and a minimum for ``Q4_1``); its CPU kernels multiply those
  blocks against activations rounded to 8-bit blocks too.
* **CTranslate2** (OpenNMT) converts a transformers model into its own ``model.bin`` (float32, or int8 weights
  with one scale per output row) and runs it with a C++ decoder.
* **ONNX Runtime GenAI** builds an ONNX graph of the whole decoder with its KV cache (its *model builder*),
  optionally with 4-bit block-quantized matrix products (``MatMulNBits``), and runs the generation loop in C++.

:mod:`.formats` writes the same weights into each engine's format once (cached beside the model),
:mod:`.runners` gives every engine — and HF ``generate`` and our own C++ decode step — the same greedy
``generate(ids, n)``, and :mod:`.suite` times them in turn (``python -m secbook bench --suite engines``).

The engines are optional: ``make engines`` installs them (pinned in :data:`PACKAGES`); without them the rest of
the package works and chapter 7 shows the last recorded comparison.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util

# engine -> (python module, package on the index, pinned version)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "llama.cpp": ("llama_cpp", "llama-cpp-python", "0.3.36"),
    "CTranslate2": ("ctranslate2", "ctranslate2", "4.8.5"),
    "ONNX Runtime GenAI": ("onnxruntime_genai", "onnxruntime-genai", "0.18.0"),
}
INSTALL = "make engines"


class EngineMissing(ImportError):
    """An optional engine is not installed here."""


def installed(engine: str) -> bool:
    """True when ``engine`` (a key of :data:`PACKAGES`) can be imported here."""
    return importlib.util.find_spec(PACKAGES[engine][0]) is not None


def version(engine: str) -> str | None:
    """The installed version of ``engine``'s package, or None."""
    try:
        return importlib.metadata.version(PACKAGES[engine][1])
    except importlib.metadata.PackageNotFoundError:
        return None


def require(engine: str):
    """Import and return ``engine``'s module, or raise :class:`EngineMissing` saying how to install it."""
    if engine not in PACKAGES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(PACKAGES)}")
    module, package, pin = PACKAGES[engine]
    if not installed(engine):
        raise EngineMissing(f"{engine} is not installed: run `{INSTALL}` in the book's repository (it installs "
                            f"{package}=={pin} and the other engines), or `pip install {package}=={pin}`")
    return importlib.import_module(module)


def missing() -> list[str]:
    """The engines of :data:`PACKAGES` that are not installed here."""
    return [e for e in PACKAGES if not installed(e)]
