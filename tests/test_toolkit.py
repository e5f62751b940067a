"""secbook.toolkit: the tools table, the reading list, and a real ONNX export checked against PyTorch."""
import re
from pathlib import Path

import pytest
import torch

from secbook import toolkit

ROOT = Path(__file__).resolve().parent.parent


def test_tools_table_covers_source_and_added_tools():
    df = toolkit.tools_table()
    for name in ("PyTorch", "TensorFlow", "TensorRT", "ONNX Runtime", "NVIDIA GPU", "Google TPU",
                 "vLLM", "llama.cpp", "torchao", "bitsandbytes"):
        assert name in set(df.tool)
    assert df.loc[df.tool == "PyTorch", "here"].item() != "not installed"


def test_every_reading_key_is_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, flags=re.M))
    src, book = toolkit.reading_tables()
    missing = (set(src.key) | set(book.key)) - keys
    assert not missing, f"cited but not in book/references.bib: {missing}"


@pytest.fixture(scope="module")
def small_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      bos_token_id=0, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def test_onnx_export_matches_pytorch(small_lm, tmp_path):
    path = toolkit.export_forward(small_lm, tmp_path / "m.onnx", example_len=8)
    assert toolkit.onnx_file_bytes(path) >= 4 * sum(p.numel() for p in small_lm.parameters()) * 0.9
    sess = toolkit.ort_session(path)
    ids = torch.randint(0, 128, (2, 13))  # another batch and length than the example: dynamic axes work
    r = toolkit.compare_with_onnx(small_lm, sess, ids, repeats=2)
    assert r["max_abs_logit_diff"] < 1e-4 and r["argmax_agreement"] == 1.0
    assert r["pytorch_ms"] > 0 and r["onnxruntime_ms"] > 0
    with torch.no_grad():
        ref = small_lm.generate(ids[:1], attention_mask=torch.ones_like(ids[:1]), max_new_tokens=5,
                                min_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(toolkit.greedy_onnx(sess, ids[:1], 5), ref)
    with pytest.raises(ValueError):
        toolkit.ort_session(path, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_no_gpu_providers_without_cuda():
    assert toolkit.tensorrt_providers() == []


def test_onnx_bytes_check():
    from secbook.exercises import check_onnx_bytes

    m = torch.nn.Linear(10, 10)
    check_onnx_bytes(440, m)
    with pytest.raises(AssertionError):
        check_onnx_bytes(880, m)
