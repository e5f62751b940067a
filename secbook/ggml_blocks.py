"""llama.cpp's block formats read by hand: Q4_1 and Q8_0 as a GGUF file stores them.

llama.cpp (its tensor library, ggml) quantizes a weight matrix row by row in *blocks* of 32 consecutive weights
(consecutive inputs of one output row). A **Q4_1** block is 20 bytes: an fp16 scale ``d``, an fp16 minimum ``m``
and 16 bytes of 4-bit codes ``q`` in 0..15 — byte ``j`` holds the code of weight ``j`` in its low four bits and
that of weight ``j + 16`` in its high four bits — and weight = ``d * q + m``: 5 bits per weight. A **Q8_0** block
is 34 bytes: an fp16 scale and 32 signed bytes, weight = ``d * q``: 8.5 bits per weight. Q4_1 is an asymmetric
scheme with a *float* minimum (Jacob et al., 2018, use an integer zero point instead); its quantizer maps a block's
minimum to code 0 and its maximum to code 15 (llama.cpp's reference quantizer, ``ggml-quants.c``).

The GGUF file is read with the ``gguf`` package (``GGUFReader``): each tensor's ``data`` holds its blocks as raw
bytes, one row of blocks per output row. ``hf_name`` maps llama.cpp's tensor names onto the Hugging Face Llama
names of the converted model (attention q/k rows are permuted by the conversion, so compare the others).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

BLOCK = 32  # weights per block, for every format here
BLOCK_BYTES = {"Q4_1": 20, "Q8_0": 34, "F32": 4 * BLOCK, "F16": 2 * BLOCK}

_HF_PARTS = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def hf_name(gguf_name: str) -> str:
    """The Hugging Face Llama parameter name of a llama.cpp tensor (``blk.0.ffn_down.weight`` →
    ``model.layers.0.mlp.down_proj.weight``)."""
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _HF_PARTS:
        return f"model.layers.{parts[1]}.{_HF_PARTS[parts[2]]}.{parts[3]}"
    raise ValueError(f"no Hugging Face name known for the GGUF tensor {gguf_name!r}")


def read_tensor(path: str | Path, name: str) -> tuple[str, np.ndarray]:
    """``(format, raw)``: the format name (``"Q4_1"``, ``"Q8_0"``, ``"F32"`` ...) of tensor ``name`` in the GGUF
    file and its bytes as stored, ``uint8 [rows, bytes per row]`` for block formats."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    for t in reader.tensors:
        if t.name == name:
            return t.tensor_type.name, np.array(t.data)
    raise KeyError(f"{Path(path).name} has no tensor {name!r}; its tensors are e.g. "
                   f"{[t.name for t in reader.tensors[:4]]}")


def tensor_formats(path: str | Path):
    """One row per storage format in the file: tensors, weights, bytes and bits per weight (a DataFrame)."""
    import pandas as pd
    from gguf import GGUFReader

    rows = [(t.tensor_type.name, int(t.n_elements), int(t.n_bytes)) for t in GGUFReader(str(path)).tensors]
    df = pd.DataFrame(rows, columns=["format", "weights", "bytes"])
    out = df.groupby("format").agg(tensors=("weights", "size"), weights=("weights", "sum"), bytes=("bytes", "sum"))
    out["bits_per_weight"] = 8 * out.bytes / out.weights
    return out.sort_values("weights", ascending=False).reset_index()


def _blocks(raw, fmt: str) -> np.ndarray:
    raw = np.ascontiguousarray(np.asarray(raw, dtype=np.uint8))
    size = BLOCK_BYTES[fmt]
    if raw.shape[-1] % size:
        raise ValueError(f"{fmt} rows are whole blocks of {size} bytes; got {raw.shape[-1]} bytes per row")
    return raw.reshape(*raw.shape[:-1], raw.shape[-1] // size, size)


def q4_1_split(raw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(d, m, q)`` of Q4_1 rows ``raw`` (uint8 ``[..., 20 * blocks]``): scales and minimums ``[..., blocks]`` as
    fp32 (stored fp16) and codes ``[..., blocks, 32]`` in 0..15 in weight order."""
    b = _blocks(raw, "Q4_1")
    d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    qs = b[..., 4:20]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # low nibbles: weights 0..15, high: 16..31
    return torch.from_numpy(d), torch.from_numpy(m), torch.from_numpy(q.astype(np.uint8))


def q4_1_dequantize(d: torch.Tensor, m: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Weights ``d * q + m`` (fp32), blocks joined back into rows: ``[..., blocks * 32]``."""
    w = d[..., None] * q.float() + m[..., None]
    return w.reshape(*w.shape[:-2], -1)


def q4_1_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_1 of ``w`` (``[..., k * 32]``): per block ``m`` = the minimum and ``d`` = (maximum − minimum) / 15, both
    rounded to fp16 as stored, and codes ``round((w − m) / d)`` clipped to 0..15. Returns ``(d, m, q)`` as
    :func:`q4_1_split` does."""
    if w.shape[-1] % BLOCK:
        raise ValueError(f"Q4_1 needs rows of whole blocks of {BLOCK} weights, got {w.shape[-1]}")
    wb = w.float().reshape(*w.shape[:-1], -1, BLOCK)
    lo, hi = wb.amin(-1), wb.amax(-1)
    d = ((hi - lo) / 15).half().float()
    m = lo.half().float()
    safe = torch.where(d > 0, d, torch.ones_like(d))
    q = torch.round((wb - m[..., None]) / safe[..., None]).clamp(0, 15).to(torch.uint8)
    return d, m, q


def q8_0_split(raw) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d, q)`` of Q8_0 rows: fp32 scales ``[..., blocks]`` and signed codes ``[..., blocks, 32]``."""
    b = _blocks(raw, "Q8_0")
    d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    q = b[..., 2:].copy().view(np.int8)
    return torch.from_numpy(d), torch.from_numpy(q)


def q8_0_dequantize(d: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Weights ``d * q`` (fp32), rows ``[..., blocks * 32]``."""
    w = d[..., None] * q.float()
    return w.reshape(*w.shape[:-2], -1)
