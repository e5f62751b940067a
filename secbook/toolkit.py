"""Tools and resources: what each inference tool does, when to use it, and ONNX Runtime run for real.

The source names six tools (PyTorch, TensorFlow, TensorRT, ONNX Runtime, NVIDIA GPUs, Google TPUs); the
table here adds the ones an LLM practitioner reaches for today (vLLM with PagedAttention, Kwon et al. 2023;
llama.cpp; CTranslate2; ONNX Runtime GenAI; torchao; bitsandbytes, Dettmers et al. 2022) and says which this
machine has (``secbook.engines`` runs the CPU engines side by side). ONNX Runtime is
exercised live: the model's forward pass is exported with ``torch.onnx.export`` (the dynamo exporter), run
with ``onnxruntime`` on the CPU, and checked against PyTorch (logits, greedy next tokens) and timed with the
same harness. TensorRT needs an NVIDIA GPU; ``tensorrt_providers`` says what is present.
"""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import tempfile
from pathlib import Path

import torch

# name, kind, what it does, runs on, reach for it when, python package (to check the version here)
TOOLS: list[tuple[str, str, str, str, str, str | None]] = [
    ("PyTorch", "framework (named by the source)",
     "tensors, autograd, eager execution; torch.compile fuses and compiles; the reference implementation",
     "CPU, NVIDIA/AMD GPU, Apple MPS", "research, prototyping, and the reference every other tool is checked against",
     "torch"),
    ("TensorFlow", "framework (named by the source)",
     "graph-based framework; XLA compiler; TF Lite / LiteRT for phones",
     "CPU, GPU, TPU, mobile", "an existing TF/Keras stack, or on-device deployment through LiteRT", "tensorflow"),
    ("TensorRT", "inference compiler (named by the source)",
     "NVIDIA's optimizer: layer fusion, kernel auto-tuning, fp16/int8/fp8; TensorRT-LLM adds in-flight batching",
     "NVIDIA GPUs only", "lowest latency on NVIDIA hardware once the model is fixed", "tensorrt"),
    ("ONNX Runtime", "inference engine (named by the source)",
     "runs an exported ONNX graph with graph optimizations and pluggable execution providers (CPU, CUDA, TensorRT, ...)",
     "CPU, GPUs, NPUs, browsers, phones", "one exported file served from many languages and devices; no Python needed",
     "onnxruntime"),
    ("NVIDIA GPU", "hardware (named by the source)",
     "thousands of cores, tensor cores for fp16/bf16/int8/fp8, high memory bandwidth (HBM)",
     "-", "decode speed is set by memory bandwidth: pick the card by GB/s and memory size", None),
    ("Google TPU", "hardware (named by the source)",
     "systolic-array matrix units and HBM, programmed through XLA (JAX, TensorFlow, PyTorch/XLA)",
     "Google Cloud only", "large JAX/TF workloads on Google Cloud", None),
    ("vLLM", "LLM serving engine (added)",
     "PagedAttention KV-cache memory, continuous batching, prefix caching, quantized and speculative decoding",
     "NVIDIA/AMD GPUs (CPU backend exists)", "serving many concurrent users: throughput at acceptable latency",
     "vllm"),
    ("llama.cpp", "C/C++ inference engine (added)",
     "GGUF files with 2-8-bit block formats and kernels for CPUs and GPUs, no Python; the engine inside Ollama and "
     "LM Studio",
     "laptops, phones, CPU servers, Apple silicon, GPUs", "one user, local or offline, little memory",
     "llama-cpp-python"),
    ("CTranslate2", "C++ inference engine (added)",
     "converts transformers models to its own format (float32/float16/int8/int16 weights); fast CPU and GPU decoders",
     "x86 and ARM CPUs, NVIDIA GPUs", "a small model served from Python on CPUs, int8 without a GGUF toolchain",
     "ctranslate2"),
    ("ONNX Runtime GenAI", "generation loop for ONNX Runtime (added)",
     "a model builder (fp32/fp16/int4 ONNX graphs with the KV cache inside) and a C++ generate loop",
     "CPU, CUDA, DirectML, mobile", "generation in an app that already ships ONNX Runtime (C#, Java, C, Python)",
     "onnxruntime-genai"),
    ("torchao", "PyTorch quantization library (added)",
     "int8/int4 weight-only and dynamic quantization, float8, sparsity; composes with torch.compile",
     "CPU, NVIDIA GPU", "quantize a PyTorch model and stay in PyTorch (pairs with torch.compile)", "torchao"),
    ("bitsandbytes", "quantization library (added)",
     "LLM.int8() and 4-bit NF4/FP4 layers, loaded through transformers' BitsAndBytesConfig",
     "NVIDIA GPU (CPU backend now works)", "fit a large model in little GPU memory (also for QLoRA fine-tuning)",
     "bitsandbytes"),
]


def _version(pkg: str | None) -> str:
    if pkg is None:
        return "-"
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "not installed"


def tools_table(check_installed: bool = True):
    """The comparison table as a DataFrame; ``here`` is the installed version (or hardware present)."""
    import pandas as pd

    df = pd.DataFrame(TOOLS, columns=["tool", "kind", "what it does", "runs on", "reach for it when", "package"])
    if check_installed:
        here = []
        for name, *_, pkg in TOOLS:
            if name == "NVIDIA GPU":
                here.append(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none here")
            elif name == "Google TPU":
                here.append("available" if importlib.util.find_spec("torch_xla") else "none here")
            else:
                here.append(_version(pkg))
        df["here"] = here
    return df.drop(columns="package")


class _Logits(torch.nn.Module):
    """Wrap a causal LM so the exported graph maps ``input_ids`` to ``logits`` (no cache)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False).logits


def export_forward(model, path: str | Path | None = None, example_len: int = 16) -> Path:
    """Export ``input_ids [batch, seq] -> logits [batch, seq, vocab]`` to ONNX with dynamic batch and
    sequence axes (torch.onnx dynamo exporter). Returns the ``.onnx`` path (weights may sit in a
    ``.onnx.data`` file beside it). A KV-cache decoding loop is ``secbook.onnx_export``'s job."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="secbook_onnx_")) / "model.onnx"
    path = Path(path)
    vocab = model.config.vocab_size
    # batch 2 in the example: torch.export specialises dimensions whose example size is 1
    ids = torch.randint(0, vocab, (2, example_len), generator=torch.Generator().manual_seed(0))
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=4096)
    wrapped = _Logits(model.float().cpu().eval()).eval()
    import logging

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # torchvision notes
    torch.onnx.export(wrapped, (ids,), str(path), input_names=["input_ids"], output_names=["logits"],
                      dynamic_shapes={"input_ids": {0: batch, 1: seq}}, dynamo=True, verbose=False,
                      optimize=False)  # ONNX Runtime optimises the graph itself when it loads it
    return path


def onnx_file_bytes(path: str | Path) -> int:
    """Bytes on disk of an exported model: the graph plus any external-data files next to it."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def ort_session(path: str | Path, device: str = "cpu", optimize: bool = True):
    """An ONNX Runtime session. ``device="cuda"`` asks for TensorRT then CUDA providers (clear error if
    neither exists); ``optimize=False`` turns ONNX Runtime's graph optimisations off."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if device == "cpu":
        providers = ["CPUExecutionProvider"]
    elif device == "cuda":
        providers = tensorrt_providers() or []
        if not providers:
            raise ValueError("no GPU execution provider in this onnxruntime build "
                             f"(have {ort.get_available_providers()}); install onnxruntime-gpu on a CUDA machine")
    else:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def tensorrt_providers() -> list[str]:
    """GPU execution providers ONNX Runtime offers here, TensorRT first; empty without an NVIDIA GPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    have = ort.get_available_providers()
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]


@torch.no_grad()
def compare_with_onnx(model, session, input_ids: torch.Tensor, repeats: int = 10) -> dict:
    """Run the same ``input_ids`` through PyTorch and ONNX Runtime: largest logit difference, agreement of
    the greedy next token at every position, and the median forward time of each. The two are timed with
    ``handson.time_call`` in alternation (one call each per round, after warm-up), so a noisy shared machine
    slows both alike."""
    import statistics

    from .handson import time_call

    ids_np = input_ids.cpu().numpy()
    ref = model(input_ids=input_ids, use_cache=False).logits.float()
    got = torch.from_numpy(session.run(["logits"], {"input_ids": ids_np})[0])
    run_pt = lambda: model(input_ids=input_ids, use_cache=False)  # noqa: E731
    run_ort = lambda: session.run(["logits"], {"input_ids": ids_np})  # noqa: E731
    time_call(run_pt, warmup=2, repeats=1), time_call(run_ort, warmup=2, repeats=1)
    t_pt, t_ort = [], []
    for _ in range(repeats):
        t_pt.append(time_call(run_pt, warmup=0, repeats=1)["median_s"])
        t_ort.append(time_call(run_ort, warmup=0, repeats=1)["median_s"])
    t_pt, t_ort = statistics.median(t_pt), statistics.median(t_ort)
    return {"tokens": int(input_ids.shape[1]), "max_abs_logit_diff": (ref - got).abs().max().item(),
            "argmax_agreement": (ref.argmax(-1) == got.argmax(-1)).float().mean().item(),
            "pytorch_ms": 1e3 * t_pt, "onnxruntime_ms": 1e3 * t_ort, "speedup": t_pt / t_ort}


@torch.no_grad()
def greedy_onnx(session, input_ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding with the no-cache forward graph: the whole sequence is re-run for every new token
    (quadratic work — what a KV cache saves; ``secbook.onnx_export`` does it with past key/values)."""
    seq = input_ids.cpu().numpy()
    import numpy as np

    for _ in range(new_tokens):
        logits = session.run(["logits"], {"input_ids": seq})[0]
        seq = np.concatenate([seq, logits[:, -1:].argmax(-1)], axis=1)
    return torch.from_numpy(seq)


# The source's reading list, checked: is each paper about inference speed?
SOURCE_READING = [
    ("devlin2019bert", "BERT (Devlin et al., 2019)", "no",
     "pre-training a bidirectional encoder for language understanding; says nothing about making inference fast"),
    ("brown2020gpt3", "GPT-3 (Brown et al., 2020)", "no",
     "scaling a decoder to 175 B parameters and few-shot prompting; a reason inference is expensive, not a method to speed it up"),
    ("tan2019efficientnet", "EfficientNet (Tan & Le, 2019)", "partly",
     "compound scaling of CNNs for accuracy per FLOP and parameter; reports CPU latency for a few models, but for images, not LLMs"),
]

# What the chapters of this book actually use (BibTeX keys in book/references.bib).
BOOK_READING = [
    ("1, 4", "williams2009roofline", "Roofline model: why batch-1 decoding is memory-bound"),
    ("1, 3.2, 4", "pope2022efficiently", "Efficiently scaling Transformer inference: prefill vs decode, KV cache, latency model"),
    ("3.1", "dettmers2022llmint8", "LLM.int8(): 8-bit matrix multiplication with outlier handling (bitsandbytes)"),
    ("3.1", "frantar2023gptq", "GPTQ: accurate post-training quantization with second-order updates"),
    ("3.1", "lin2024awq", "AWQ: activation-aware weight quantization"),
    ("3.1", "dettmers2023qlora", "QLoRA: the NF4 data type used by bitsandbytes 4-bit"),
    ("3.1", "sun2024wanda", "Wanda: pruning by weight magnitude times input activation norm"),
    ("3.1", "hinton2015distilling", "Knowledge distillation with temperature-softened targets"),
    ("3.2", "dao2022flashattention", "FlashAttention: IO-aware exact attention"),
    ("3.2", "leviathan2023fast", "Speculative decoding (draft and verify)"),
    ("3.2", "chen2023accelerating", "Speculative sampling, the concurrent formulation"),
    ("3.2, 7", "kwon2023vllm", "PagedAttention and vLLM: KV-cache memory management and continuous batching"),
    ("3.2", "gptfast2023", "gpt-fast: static KV cache, torch.compile, int8/int4 in a few hundred lines"),
    ("3.3", "micikevicius2018mixed", "Mixed-precision arithmetic (fp16/bf16 with fp32 where needed)"),
    ("3.3", "shoeybi2019megatron", "Megatron-LM tensor parallelism (column/row-split layers)"),
    ("5", "hochreiter1997lstm", "The LSTM of the hands-on project"),
    ("5", "vaswani2017attention", "The transformer it is contrasted with"),
    ("6", "brysbaert2019reading", "How fast people read: the reading-speed budget"),
]


def reading_tables():
    """(the source's list checked, the book's list) as two DataFrames."""
    import pandas as pd

    src = pd.DataFrame(SOURCE_READING, columns=["key", "paper", "about inference speed?", "what it is about"])
    book = pd.DataFrame(BOOK_READING, columns=["chapter", "key", "why"])
    return src, book
