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
    from transformers import OPTConfig, OPTForCausalLM

    from secbook.onnx_export import CachedLM

    with pytest.raises(ValueError, match="llama.*gpt2"):
        CachedLM(OPTForCausalLM(OPTConfig(num_hidden_layers=1, hidden_size=32, ffn_dim=64, num_attention_heads=2,
                                          vocab_size=64, word_embed_proj_dim=32)))


@pytest.mark.parametrize("family", ["gemma3_text", "gpt_neox"])
def test_other_families_export(family, tmp_path):
    """The export is our decoder, so other families export too: Gemma 3 (two RoPE bases, a sliding window of 6
    reached by the 20 positions, q/k norms, 1 + w norms) and GPT-NeoX (LayerNorm, partial rotary, interleaved
    fused q/k/v, parallel residual): logits as PyTorch's, greedy tokens as HF generate's."""
    from secbook.families import prompt, tiny_model
    from secbook.generate import hf_generate
    from secbook.onnx_export import OrtGenerator, compare_logits, export_with_cache

    model = tiny_model(family)
    gen = OrtGenerator(export_with_cache(model, tmp_path / "kv.onnx"), model.config)
    d = compare_logits(model, gen, prompt(length=20))
    assert d["prefill_max_abs_diff"] < 1e-4 and d["decode_max_abs_diff"] < 1e-4
    ids = prompt()
    assert torch.equal(gen.generate(ids, 12), hf_generate(model, ids, 12))
