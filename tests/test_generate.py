"""Our static-cache generation loop: token-for-token equal to HF generate, plus its error cases."""
import pytest
import torch

from secbook.generate import FastGenerator, StaticDecoder, apply_transform, fast_generate, hf_generate, sample
from secbook.measure import prompt_ids


@pytest.mark.parametrize("fixture,n", [("tiny", 40), ("small_llama", 20), ("small_qwen", 20)])
def test_greedy_equals_hf_generate(request, fixture, n):
    model, tok = request.getfixturevalue(fixture)
    ids = prompt_ids(tok, 32)
    ours = fast_generate(model, ids, n)
    ref = hf_generate(model, ids, n)
    assert ours.shape == ref.shape == (1, 32 + n)
    assert torch.equal(ours, ref)


def test_generator_reuse_and_batch(tiny):
    model, tok = tiny
    ids = prompt_ids(tok, 16, batch=2)
    g = FastGenerator(model, max_len=32, batch=2)
    a = g.generate(ids, 12)
    b = g.generate(ids, 12)  # the stale cache of the first call must not leak into the second
    assert torch.equal(a, b)
    assert torch.equal(a, hf_generate(model, ids, 12))


def test_sampling_seeded_and_top1(tiny):
    model, tok = tiny
    ids = prompt_ids(tok, 16)
    g = FastGenerator(model, max_len=40)
    s1 = g.generate(ids, 16, temperature=1.0, seed=3)
    s2 = g.generate(ids, 16, temperature=1.0, seed=3)
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, g.generate(ids, 16))  # sampling at T=1 does leave the greedy path
    assert torch.equal(g.generate(ids, 16, temperature=0.8, top_k=1, seed=1), g.generate(ids, 16))
    with pytest.raises(ValueError, match="temperature"):
        sample(torch.zeros(1, 5), temperature=-1)


def test_errors(tiny):
    model, tok = tiny
    g = FastGenerator(model, max_len=40)
    with pytest.raises(ValueError, match="max_len"):
        g.generate(prompt_ids(tok, 32), 16)
    with pytest.raises(ValueError, match="does not fit"):
        g.prefill(prompt_ids(tok, 40))
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=64))
    with pytest.raises(ValueError, match="llama.*qwen2.*mistral"):
        FastGenerator(gpt2, max_len=16)
    with pytest.raises(ValueError, match="transform"):
        apply_transform(model, "int3")


def test_static_cache_bytes_match_formula(small_qwen):
    from secbook.kvcache import kv_cache_bytes

    model, _ = small_qwen
    dec = StaticDecoder(model, max_len=100)
    assert dec.cache_bytes() == kv_cache_bytes(model.config, 100) == 2 * 2 * 2 * 64 * 100 * 4


def test_quantized_layers_drop_in(tiny):
    """Weight-only int8 layers replace nn.Linear; our loop calls the modules, so it runs them unchanged."""
    import copy

    from secbook.quantize import QuantLinear

    model, tok = tiny
    q = apply_transform(copy.deepcopy(model), "int8wo")
    assert isinstance(q.model.layers[0].mlp.up_proj, QuantLinear)
    ids = prompt_ids(tok, 16)
    ours = fast_generate(q, ids, 12)
    assert torch.equal(ours, hf_generate(q, ids, 12))
