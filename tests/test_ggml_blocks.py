"""llama.cpp's block formats read by hand (secbook.ggml_blocks): bytes built by hand split back into scale,
minimum and codes; Q4_1 quantization errs by at most half a step and is a fixed point on its own output; and on the
real model's GGUF the hand-decoded block equals both the gguf package's dequantization and the converted weights."""
import numpy as np
import pytest
import torch

from secbook import ggml_blocks as G
from secbook import pretrained
from test_pretrained import fetched_or_skip


def _q4_1_bytes(d: float, m: float, q: list[int]) -> np.ndarray:
    lo, hi = np.array(q[:16], np.uint8), np.array(q[16:], np.uint8)
    return np.concatenate([np.array([d, m], np.float16).view(np.uint8), lo | (hi << 4)])


def test_a_hand_built_q4_1_block_splits_into_its_scale_minimum_and_codes():
    codes = list(range(16)) + list(range(15, -1, -1))
    raw = _q4_1_bytes(0.5, -2.0, codes)[None]
    assert raw.shape == (1, 20)
    d, m, q = G.q4_1_split(raw)
    assert d.item() == 0.5 and m.item() == -2.0 and q[0, 0].tolist() == codes
    assert G.q4_1_dequantize(d, m, q)[0].tolist() == [0.5 * c - 2.0 for c in codes]


def test_q4_1_rounds_within_half_a_step_and_is_a_fixed_point_of_itself():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    d, m, q = G.q4_1_quantize(w)
    back = G.q4_1_dequantize(d, m, q)
    step = d.repeat_interleave(G.BLOCK, -1)
    assert ((back - w).abs() <= step / 2 + 1e-3 * step + 2e-3).all()  # half a step, plus fp16 rounding of d and m
    assert q.amin() == 0 and q.amax() == 15
    d2, m2, q2 = G.q4_1_quantize(back)
    assert torch.equal(G.q4_1_dequantize(d2, m2, q2), back)


def test_bad_rows_and_names_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="whole blocks"):
        G.q4_1_split(np.zeros((1, 30), np.uint8))
    with pytest.raises(ValueError, match="whole blocks"):
        G.q4_1_quantize(torch.zeros(2, 40))
    with pytest.raises(ValueError, match="no Hugging Face name"):
        G.hf_name("blk.0.something.weight")
    assert G.hf_name("blk.3.ffn_down.weight") == "model.layers.3.mlp.down_proj.weight"


def test_the_real_files_blocks_decode_to_the_converted_weights():
    fetched_or_skip()
    from gguf import GGMLQuantizationType, quants
    from safetensors import safe_open

    fmt, raw = G.read_tensor(pretrained.gguf_path(), "blk.0.ffn_down.weight")
    assert fmt == "Q4_1"
    d, m, q = G.q4_1_split(raw[:4])
    mine = G.q4_1_dequantize(d, m, q)
    assert np.array_equal(mine.numpy(), quants.dequantize(raw[:4], GGMLQuantizationType.Q4_1))
    with safe_open(str(pretrained.model_dir() / "model.safetensors"), "pt") as f:
        w = f.get_tensor(G.hf_name("blk.0.ffn_down.weight"))
    assert torch.equal(mine, w[:4])
    d2, m2, q2 = G.q4_1_quantize(w[:4])
    assert torch.equal(G.q4_1_dequantize(d2, m2, q2), w[:4])
    fmts = G.tensor_formats(pretrained.gguf_path()).set_index("format")
    assert fmts.loc["Q4_1", "bits_per_weight"] == 5.0
