"""ONNX export with past keys/values: logits match PyTorch, greedy tokens match our loop."""
import pytest
import torch

from secbook.generate import fast_generate
from secbook.measure import prompt_ids


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    from secbook.onnx_export import OrtGenerator, export_with_cache

    model, tok = tiny
    path = export_with_cache(model, tmp_path_factory.mktemp("onnx") / "tiny_kv.onnx")
    return OrtGenerator(path, model.config)


def test_logits_match_pytorch(tiny, exported):
    from secbook.onnx_export import compare_logits

    model, tok = tiny
    d = compare_logits(model, exported, prompt_ids(tok, 24))
    assert d["prefill_max_abs_diff"] < 1e-3 and d["decode_max_abs_diff"] < 1e-3
    assert d["logit_scale"] > 1.0  # real logits, not zeros


def test_greedy_tokens_match(tiny, exported):
    model, tok = tiny
    ids = prompt_ids(tok, 32)
    assert torch.equal(exported.generate(ids, 24), fast_generate(model, ids, 24))


def test_unsupported_architecture():
    from transformers import GPT2Config, GPT2LMHeadModel

    from secbook.onnx_export import CachedLM

    with pytest.raises(ValueError, match="llama"):
        CachedLM(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)))
