"""The same weights in every engine's file format: GGUF (llama.cpp), CTranslate2's model.bin, ONNX Runtime GenAI.

Each conversion runs once and is cached in ``<cache>/<model>/engines/`` beside the model it came from (for the real
model: beside its original GGUF file, ``secbook.pretrained.gguf_path()``); a conversion is written into a temporary
name and renamed into place when complete, with a record of the source file it came from (size and modification
time), so a half-written file is never used and a changed source is converted again.

**GGUF.** The real model *is* a GGUF file: llama.cpp's Q4_1 quantization of SmolLM2-135M-Instruct, its token
embedding (which is also the output layer) in Q8_0. The other GGUF variants are written from that file with the
``gguf`` package: its metadata and tokenizer fields copied as they are, every tensor dequantized and stored again as
F32, Q8_0 or Q4_0 (:data:`GGUF_RECIPES`). So the F32 file holds exactly the weights of our fp32 Hugging Face folder
(which was dequantized from the same file), and the Q8_0/Q4_0 files quantize those weights once more. A model
without a GGUF file (the tiny one) is written from its Hugging Face folder: llama.cpp's layout differs from
transformers' in one place — the rows of the query and key projections are reordered so that the two halves of
each head's rotary pairs sit side by side — and its byte-level BPE tokenizer is stored as llama.cpp's ``gpt2``
tokenizer (vocabulary, merges, GPT-2 pre-tokenizer), which llama.cpp loads.

**CTranslate2** converts the fp32 Hugging Face folder with its ``TransformersConverter`` (float32 or int8
weights). **ONNX Runtime GenAI** builds its ONNX graph with its model builder (``onnxruntime_genai.models.builder``,
fp32 or int4, CPU execution provider) in a child process. Both read the folder through a staging copy whose
``config.json`` carries ``rope_theta`` at its top level as well (transformers 5 keeps it only inside
``rope_parameters``, and a converter that looks for ``config.rope_theta`` alone would silently fall back to
10,000) and no ``quantization_config: null``; the cached folder itself is never edited.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import require

# name -> (llama file type, type of the 2-D weights, type of the token embedding / output table)
GGUF_RECIPES: dict[str, tuple[str, str, str]] = {
    "F32": ("ALL_F32", "F32", "F32"),
    "Q8_0": ("MOSTLY_Q8_0", "Q8_0", "Q8_0"),
    "Q4_0": ("MOSTLY_Q4_0", "Q4_0", "Q8_0"),  # the embedding stays Q8_0, as in the original Q4_1 file
    "Q4_1": ("MOSTLY_Q4_1", "Q4_1", "Q8_0"),
}
CT2_QUANTIZATIONS = ("float32", "int8")
ORT_PRECISIONS = ("fp32", "int4")
EMBEDDING = "token_embd.weight"


# --------------------------------------------------------------------------------------------- where, and fresh?
def source_dir(model: str) -> Path:
    """The Hugging Face folder of ``model``: the real model's converted folder (fetched if needed), a model of
    ``secbook.paths`` ("tiny", "student"), or a local folder with a config.json."""
    from .. import paths, pretrained

    if model == pretrained.NAME:
        return pretrained.require()
    found = paths.find_model(model)
    if found is not None:
        return found
    if (Path(model) / "config.json").is_file():
        return Path(model)
    raise ValueError(f"the engines need a model folder; {model!r} is none (use {pretrained.NAME!r}, 'tiny', or a "
                     "folder with config.json and model.safetensors; replicas have no weights to convert)")


def engines_dir(model: str) -> Path:
    """``<cache>/<model>/engines``: where the conversions of ``model`` are kept."""
    from .. import paths, pretrained

    if model == pretrained.NAME:
        return pretrained.cache_root() / "engines"
    return paths.CACHE_DIR / Path(model).name / "engines"


def _weights_file(folder: Path) -> Path:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder}")
    return files[0]


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"source": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _record(out: Path) -> Path:
    return out.parent / f"{out.name}.source.json"


def _fresh(out: Path, fingerprint: dict) -> bool:
    try:
        return out.exists() and json.loads(_record(out).read_text()) == fingerprint
    except (OSError, ValueError):
        return False


def _publish(tmp: Path, out: Path, fingerprint: dict) -> Path:
    """Move a finished conversion into place (``os.replace``), then write its record (read as 'complete')."""
    _record(out).unlink(missing_ok=True)
    if out.is_dir():
        old = out.parent / f".{out.name}.old.{os.getpid()}"
        os.replace(out, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, out)
    rec_tmp = _record(out).with_name(f".{_record(out).name}.{os.getpid()}")
    rec_tmp.write_text(json.dumps(fingerprint) + "\n")
    os.replace(rec_tmp, _record(out))
    return out


def _say(text: str) -> float:
    print(f"secbook: {text} (once; cached)", flush=True)
    return time.perf_counter()


def _done(t0: float, out: Path) -> None:
    print(f"secbook:   -> {out} in {time.perf_counter() - t0:.0f} s", flush=True)


# --------------------------------------------------------------------------------------------- GGUF
def quant_formats():
    """GGUF's block formats as the ``gguf`` package defines them (``GGML_QUANT_SIZES``): weights per block, bytes
    per block and the bits per weight they imply, and what a block stores beside its integers."""
    import gguf
    import pandas as pd

    stores = {"F32": "one float32 per weight (no blocks)",
              "F16": "one float16 per weight (no blocks)",
              "Q8_0": "int8 values and one fp16 scale: w = d * q",
              "Q4_0": "4-bit values and one fp16 scale: w = d * (q - 8)",
              "Q4_1": "4-bit values, an fp16 scale and an fp16 minimum: w = d * q + m",
              "Q4_K": "a super-block of 8 sub-blocks of 32: 4-bit values, 6-bit scales and minimums per sub-block, "
                      "fp16 super-scale and super-minimum"}
    rows = []
    for name, what in stores.items():
        block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
        rows.append({"format": name, "weights per block": block, "bytes per block": nbytes,
                     "bits per weight": 8 * nbytes / block, "stores": what})
    return pd.DataFrame(rows)


def _gguf_type(name: str):
    import gguf

    return gguf.GGMLQuantizationType[name]


def _copy_fields(reader, writer, file_type: str) -> None:
    """Every metadata field of ``reader`` (tokenizer, chat template, hyper-parameters) into ``writer``, with the
    file type set to ``file_type``."""
    import gguf

    skip = {"general.architecture", "general.file_type"}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in skip:
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), vtype)
    writer.add_file_type(gguf.LlamaFileType[file_type].value)


def _target_type(name: str, shape: tuple[int, ...], recipe: tuple[str, str, str]) -> str:
    """The type a tensor of GGUF ``shape`` (row length first) gets in a file made by ``recipe``."""
    _, weights, embedding = recipe
    if len(shape) < 2:
        return "F32"  # norms stay float32 in every llama.cpp file type
    kind = embedding if name in (EMBEDDING, "output.weight") else weights
    return kind if shape[0] % 32 == 0 else "F32"  # a row must hold whole blocks of 32


def _store(writer, name: str, values, src_type: str | None, raw, target: str) -> None:
    """Add one tensor to ``writer`` as ``target`` (raw bytes copied when already of that type)."""
    import numpy as np
    from gguf.quants import quantize

    if src_type == target:
        writer.add_tensor(name, raw, raw_dtype=_gguf_type(target))
    elif target == "F32":
        writer.add_tensor(name, np.ascontiguousarray(values, dtype=np.float32))
    else:
        writer.add_tensor(name, quantize(np.ascontiguousarray(values, dtype=np.float32), _gguf_type(target)),
                          raw_dtype=_gguf_type(target))


def requantize_gguf(src: Path, out: Path, kind: str) -> Path:
    """Write ``out``: the GGUF ``src`` with every tensor stored as :data:`GGUF_RECIPES` ``[kind]`` says and every
    metadata field copied. Writes into a temporary file renamed into place."""
    import gguf
    from gguf.quants import dequantize

    recipe = GGUF_RECIPES[kind]
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        _copy_fields(reader, writer, recipe[0])
        for t in reader.tensors:
            shape = tuple(int(x) for x in t.shape)
            target = _target_type(t.name, shape, recipe)
            src_type = t.tensor_type.name
            values = None if src_type == target else dequantize(t.data, t.tensor_type)
            _store(writer, t.name, values, src_type, t.data, target)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return tmp


def _permute_rotary(w, n_heads: int):
    """transformers keeps each head's rotary pairs as (first half, second half) of its rows; llama.cpp expects the
    two members of a pair side by side. Reorder the rows of a [heads * head_dim, in] projection accordingly."""
    rows, cols = w.shape
    half = rows // n_heads // 2
    return w.reshape(n_heads, 2, half, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def _tokenizer_fields(writer, folder: Path, config: dict) -> None:
    """The tokenizer of ``folder`` as llama.cpp's ``gpt2`` (byte-level BPE) tokenizer; raises for other kinds."""
    import gguf

    spec = json.loads((folder / "tokenizer.json").read_text())
    model, pre = spec.get("model", {}), spec.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise ValueError(f"{folder}: only byte-level BPE tokenizers with the GPT-2 split are written to GGUF here "
                         f"(found model {model.get('type')!r}, pre-tokenizer {pre.get('type')!r})")
    vocab = dict(model["vocab"])
    special = set()
    for added in spec.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["id"])
    n = config["vocab_size"]
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [gguf.TokenType.UNUSED] * n
    for text, i in vocab.items():
        if i < n:
            tokens[i] = text
            types[i] = gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(merges)
    for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                     ("pad_token_id", writer.add_pad_token_id)):
        if isinstance(config.get(key), int):
            add(config[key])
    writer.add_add_bos_token(False)


def write_gguf_from_hf(folder: Path, out: Path, kind: str) -> Path:
    """Write a GGUF of the Llama-layout Hugging Face model in ``folder`` (tied embeddings; weights stored as
    :data:`GGUF_RECIPES` ``[kind]``) into a temporary file beside ``out``; return the temporary file."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise ValueError(f"{folder}: only Llama-layout models are written to GGUF here (found "
                         f"{config.get('model_type')!r})")
    recipe = GGUF_RECIPES[kind]
    n_layers, n_heads = config["num_hidden_layers"], config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_heads)
    head_dim = config.get("head_dim") or config["hidden_size"] // n_heads
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"{folder}: rope type {rope.get('rope_type')!r} is not written to GGUF here")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(tmp, "llama")
    try:
        writer.add_name(folder.name)
        writer.add_context_length(config.get("max_position_embeddings", 2048))
        writer.add_embedding_length(config["hidden_size"])
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_block_count(n_layers)
        writer.add_head_count(n_heads)
        writer.add_head_count_kv(n_kv)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
        writer.add_vocab_size(config["vocab_size"])
        writer.add_file_type(gguf.LlamaFileType[recipe[0]].value)
        _tokenizer_fields(writer, folder, config)
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
        weights = load_file(_weights_file(folder))
        tied = config.get("tie_word_embeddings", False) or "lm_head.weight" not in weights
        for hf_name, w in weights.items():
            if hf_name == "lm_head.weight" and tied:
                continue
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise ValueError(f"{folder}: no GGUF name for tensor {hf_name!r}")
            if hf_name.endswith("q_proj.weight"):
                w = _permute_rotary(w, n_heads)
            elif hf_name.endswith("k_proj.weight"):
                w = _permute_rotary(w, n_kv)
            target = _target_type(name, tuple(reversed(w.shape)), recipe)
            _store(writer, name, w, "F32" if w.dtype.name == "float32" else None, w, target)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return tmp


def gguf_file(model: str, kind: str) -> Path:
    """The GGUF file of ``model`` with weights stored as ``kind`` (a key of :data:`GGUF_RECIPES`), written once.

    The real model's Q4_1 is its original file; its other kinds are written from that file. Other models are
    written from their Hugging Face folder."""
    from .. import pretrained

    if kind not in GGUF_RECIPES:
        raise ValueError(f"unknown GGUF kind {kind!r}; choose from {', '.join(GGUF_RECIPES)}")
    if model == pretrained.NAME:
        pretrained.require()
        original = pretrained.gguf_path()
        if kind == "Q4_1":
            return original
        source = original
    else:
        source = _weights_file(source_dir(model))
    out = engines_dir(model) / f"{Path(model).name}.{kind}.gguf"
    fp = _fingerprint(source)
    if _fresh(out, fp):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = _say(f"writing {out.name} ({kind}) from {source.name}")
    try:
        tmp = requantize_gguf(source, out, kind) if source.suffix == ".gguf" else \
            write_gguf_from_hf(source.parent, out, kind)
        _publish(tmp, out, fp)
    finally:
        for stale in out.parent.glob(f".{out.name}.{os.getpid()}.tmp"):
            stale.unlink()
    _done(t0, out)
    return out


def gguf_tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each type a GGUF file holds, e.g. ``{"Q4_1": 210, "F32": 61, "Q8_0": 1}``."""
    import gguf

    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def gguf_read_bytes(path: Path) -> int:
    """Weight bytes one decode step of llama.cpp reads from a GGUF file: every tensor, except the token embedding
    when a separate output layer exists (then the embedding is only looked up, one row per token)."""
    import gguf

    tensors = gguf.GGUFReader(path).tensors
    untied = any(t.name == "output.weight" for t in tensors)
    return sum(int(t.n_bytes) for t in tensors if not (untied and t.name == EMBEDDING))


# --------------------------------------------------------------------------------------------- staging
def _staged(folder: Path, into: Path) -> Path:
    """A folder in ``into`` that shows ``folder``'s files (symbolic links) with a config.json that also carries
    ``rope_theta`` at its top level; the original folder is not touched."""
    stage = into / "hf"
    stage.mkdir()
    for f in folder.iterdir():
        if f.name != "config.json":
            (stage / f.name).symlink_to(f.resolve())
    config = json.loads((folder / "config.json").read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" not in config and "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    if config.get("quantization_config", 0) is None:  # ours says null (its weights are plain fp32): the ONNX
        del config["quantization_config"]             # builder reads a present key as a dict
    (stage / "config.json").write_text(json.dumps(config, indent=1))
    return stage


def _convert_dir(model: str, out_name: str, what: str, build) -> Path:
    """Run ``build(staged_folder, target)`` into a temporary folder beside the cached result; publish it."""
    folder = source_dir(model)
    out = engines_dir(model) / out_name
    fp = _fingerprint(_weights_file(folder))
    if _fresh(out, fp):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = _say(f"converting {model} for {what}")
    with tempfile.TemporaryDirectory(prefix=f".{out_name}.", dir=out.parent) as tmp:
        tmp = Path(tmp)
        target = tmp / "out"
        build(_staged(folder, tmp), target)
        _publish(target, out, fp)
    _done(t0, out)
    return out


# --------------------------------------------------------------------------------------------- CTranslate2
def ct2_dir(model: str, quantization: str = "float32") -> Path:
    """``model`` converted by CTranslate2's ``TransformersConverter`` with weights in ``quantization``
    ("float32" or "int8"), once."""
    if quantization not in CT2_QUANTIZATIONS:
        raise ValueError(f"unknown CTranslate2 quantization {quantization!r}; choose from {CT2_QUANTIZATIONS}")
    require("CTranslate2")

    def build(stage: Path, target: Path) -> None:
        from ctranslate2.converters import TransformersConverter

        TransformersConverter(str(stage), load_as_float16=False).convert(str(target), quantization=quantization)

    return _convert_dir(model, f"ct2-{quantization}", f"CTranslate2 ({quantization})", build)


def ct2_read_bytes(folder: Path) -> int:
    """Weight bytes one CTranslate2 decode step reads: its ``model.bin`` (the weights and a small header). With
    tied embeddings, as in the book's models, the table is stored once and the output layer reads it whole."""
    return (Path(folder) / "model.bin").stat().st_size


# --------------------------------------------------------------------------------------------- ONNX Runtime GenAI
_ORT_BUILD = r"""
import sys
from onnxruntime_genai.models import builder
src, out, precision, cache = sys.argv[1:5]
opts = builder.parse_extra_options(None, src, out, precision, "cpu", cache, [])
config = opts["hf_details"]["hf_config"]
theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
if theta is not None and getattr(config, "rope_theta", None) is None:
    config.rope_theta = theta  # the builder reads config.rope_theta and would fall back to 10,000
builder.create_model(None, src, out, precision, "cpu", cache, **opts)
"""


def ort_dir(model: str, precision: str = "fp32") -> Path:
    """``model`` built by ONNX Runtime GenAI's model builder for the CPU execution provider in ``precision``
    ("fp32", or "int4": 4-bit ``MatMulNBits`` weights in blocks of 32), once, in a child process."""
    if precision not in ORT_PRECISIONS:
        raise ValueError(f"unknown ONNX Runtime GenAI precision {precision!r}; choose from {ORT_PRECISIONS}")
    require("ONNX Runtime GenAI")

    def build(stage: Path, target: Path) -> None:
        cache = stage.parent / "builder-cache"
        done = subprocess.run([sys.executable, "-c", _ORT_BUILD, str(stage), str(target), precision, str(cache)],
                              capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0 or not (target / "genai_config.json").is_file():
            tail = " / ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise RuntimeError(f"ONNX Runtime GenAI's model builder failed on {model} ({precision}): {tail}")

    return _convert_dir(model, f"ort-{precision}", f"ONNX Runtime GenAI ({precision})", build)


def ort_read_bytes(folder: Path) -> int:
    """Weight bytes one ONNX Runtime GenAI decode step reads: every initializer of its graph, except those only
    looked up (the inputs of Gather nodes read one row per token) and the rotary cos/sin tables."""
    import onnx

    graph = onnx.load(str(Path(folder) / "model.onnx"), load_external_data=False).graph
    users: dict[str, set[str]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            users.setdefault(name, set()).add(node.op_type if i == 0 else f"{node.op_type}:{i}")
    total = 0
    for init in graph.initializer:
        if init.name in ("cos_cache", "sin_cache") or (users.get(init.name) and
                                                        users[init.name] <= {"Gather", "GatherBlockQuantized"}):
            continue
        ext = {e.key: e.value for e in init.external_data}
        total += int(ext["length"]) if "length" in ext else len(init.raw_data)
    return total
