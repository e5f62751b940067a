"""Our static-cache generation loop: token-for-token equal to HF generate, plus its error cases."""
import pytest
import torch

from secbook.generate import FastGenerator, StaticDecoder, fast_generate, hf_generate, sample
from secbook.ladder import apply_transform
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
    with pytest.raises(ValueError, match="transform"):
        apply_transform(model, "int3")


def test_static_cache_bytes_match_formula(small_qwen):
    from secbook.kvcache import kv_cache_bytes

    model, _ = small_qwen
    dec = StaticDecoder(model, max_len=100)
    assert dec.cache_bytes() == kv_cache_bytes(model.config, 100) == 2 * 2 * 2 * 64 * 100 * 4


def test_quantized_layers_drop_in(tiny):
    """Weight-only int8 layers replace nn.Linear (LM head included); our loop fuses them and gives the tokens
    HF generate gives with the same quantized model; int4 layers are called as modules."""
    import copy

    from secbook.generate import Int8WeightOnlyFused, SeparateLinears
    from secbook.quantize import QuantLinear

    model, tok = tiny
    q = apply_transform(copy.deepcopy(model), "int8wo")
    assert isinstance(q.model.layers[0].mlp.up_proj, QuantLinear) and isinstance(q.lm_head, QuantLinear)
    dec = StaticDecoder(q, max_len=40)
    assert isinstance(dec.decoder.layers[0].up, Int8WeightOnlyFused) and isinstance(dec.decoder.head, Int8WeightOnlyFused)
    ids = prompt_ids(tok, 16)
    assert torch.equal(fast_generate(q, ids, 12), hf_generate(q, ids, 12))
    q4 = apply_transform(copy.deepcopy(model), "int4wo")
    assert isinstance(StaticDecoder(q4, max_len=40).decoder.layers[0].qkv, SeparateLinears)
    assert torch.equal(fast_generate(q4, ids, 8), hf_generate(q4, ids, 8))


@pytest.mark.parametrize("group", [None, 16])
def test_int8_weight_only_fused_matches_layers(small_qwen, group):
    """The fused int8 weight-only layer (q/k/v with Qwen2's biases; 960 rows in blocks of 240, and an odd row
    count) computes the QuantLinear layers' outputs, both ways: dequantize + matmul (eager) and the compiled
    one-token reduction."""
    from secbook.generate import Int8WeightOnlyFused, fuse_linears
    from secbook.quantize import QuantLinear

    model, _ = small_qwen
    a = model.model.layers[0].self_attn
    lins = [QuantLinear.from_linear(m, bits=8, group_size=group) for m in (a.q_proj, a.k_proj, a.v_proj)]
    fused = fuse_linears(lins)
    assert isinstance(fused, Int8WeightOnlyFused) and fused.bias is not None and fused.weight.dtype == torch.int8
    x = torch.randn(1, 1, model.config.hidden_size)
    ref = torch.cat([m(x) for m in lins], -1)
    torch.testing.assert_close(fused(x), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.compile(fused, fullgraph=True)(x), ref, rtol=1e-4, atol=1e-4)
    odd = QuantLinear.from_linear(torch.nn.Linear(model.config.hidden_size, 7), bits=8, group_size=group)
    torch.testing.assert_close(torch.compile(fuse_linears([odd]))(x), odd(x), rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()
    assert not Int8WeightOnlyFused.accepts([QuantLinear.from_linear(a.q_proj, bits=4, group_size=group)])


def test_fused_projections_match_separate_layers(small_qwen):
    """q/k/v fused into one transposed matmul (with Qwen2's biases) gives the separate layers' outputs."""
    from secbook.generate import FusedLinear, SeparateLinears, fuse_linears

    model, _ = small_qwen
    a = model.model.layers[0].self_attn
    x = torch.randn(1, 3, model.config.hidden_size)
    fused = fuse_linears([a.q_proj, a.k_proj, a.v_proj])
    assert isinstance(fused, FusedLinear) and fused.bias is not None
    ref = torch.cat([a.q_proj(x), a.k_proj(x), a.v_proj(x)], dim=-1)
    torch.testing.assert_close(fused(x), ref, rtol=1e-5, atol=1e-5)
    assert isinstance(fuse_linears([a.q_proj], fuse=False), SeparateLinears)


def test_unfused_loop_and_dynamic_int8_fusion(tiny):
    """fuse=False (module calls) gives HF's tokens too; the fused int8 layers compute what torch.ao's
    separate dynamic-int8 layers compute (same int8 rows, same scales)."""
    import copy

    from secbook.generate import Int8DynamicFused

    model, tok = tiny
    ids = prompt_ids(tok, 16)
    assert torch.equal(FastGenerator(model, max_len=40, fuse=False).generate(ids, 12), hf_generate(model, ids, 12))
    q = apply_transform(copy.deepcopy(model), "dyn8")
    mlp = q.model.layers[0].mlp
    fused = StaticDecoder(q, max_len=40).decoder.layers[0].up
    assert isinstance(fused, Int8DynamicFused)
    x = torch.randn(1, 2, model.config.hidden_size)
    torch.testing.assert_close(fused(x), torch.cat([mlp.gate_proj(x), mlp.up_proj(x)], -1), rtol=1e-5, atol=1e-5)
    assert torch.equal(fast_generate(q, ids, 12), hf_generate(q, ids, 12))


def test_compiled_dynamic_int8_step(tiny):
    """torch.compile traces through the fused int8 matmul (a custom operator with a fake kernel): same tokens
    as the eager loop."""
    import copy

    model, tok = tiny
    q = apply_transform(copy.deepcopy(model), "dyn8")
    ids = prompt_ids(tok, 8)
    eager = FastGenerator(q, max_len=24).generate(ids, 10)
    g = FastGenerator(q, max_len=24, compile=True)
    assert torch.equal(g.generate(ids, 10), eager)
    assert g.compile_s is not None and g.compile_s > 0
    torch._dynamo.reset()


def test_compiled_int8_weight_only_step(tiny):
    """Compiled, the int8 weight-only decode step runs as a fused reduction over the int8 weights: the same
    tokens as HF generate on the same quantized model."""
    import copy

    model, tok = tiny
    q = apply_transform(copy.deepcopy(model), "int8wo")
    ids = prompt_ids(tok, 8)
    assert torch.equal(FastGenerator(q, max_len=24, compile=True).generate(ids, 10), hf_generate(q, ids, 10))
    torch._dynamo.reset()


def test_decode_read_bytes(tiny):
    """Tied embeddings are read by the LM head each token; an untied table is only looked up (one row)."""
    import copy

    from secbook.measure import decode_read_bytes, model_bytes

    model, _ = tiny
    assert decode_read_bytes(model) == model_bytes(model)
    q = apply_transform(copy.deepcopy(model), "dyn8")
    emb = q.get_input_embeddings().weight
    assert decode_read_bytes(q) == model_bytes(q) - emb.numel() * 4 + emb.shape[1] * 4


def test_torchao_layers_are_not_fused(tiny):
    """torchao keeps nn.Linear with a quantized tensor-subclass weight: our loop must call those modules, not
    concatenate their weights."""
    import copy

    from secbook.generate import SeparateLinears
    from secbook.quantize import torchao_quantize

    model, tok = tiny
    q = torchao_quantize(copy.deepcopy(model), "int8wo")
    dec = StaticDecoder(q, max_len=40)
    assert isinstance(dec.decoder.layers[0].qkv, SeparateLinears) and isinstance(dec.decoder.layers[0].up, SeparateLinears)
    ids = prompt_ids(tok, 16)
    assert torch.equal(fast_generate(q, ids, 8), hf_generate(q, ids, 8))


def test_int8_fusion_of_per_tensor_layers(small_qwen):
    """torch.ao's default dynamic int8 has one scale per tensor (and Qwen2 has q/k/v biases): fused rows keep
    their own tensor's scale, so the fused layer computes what the three layers compute."""
    import copy
    import warnings

    from secbook.generate import Int8DynamicFused, fuse_linears

    model, _ = small_qwen
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        a = quantize_dynamic(copy.deepcopy(model.model.layers[0].self_attn), {torch.nn.Linear}, dtype=torch.qint8)
    assert a.q_proj.weight().qscheme() == torch.per_tensor_affine
    fused = fuse_linears([a.q_proj, a.k_proj, a.v_proj])
    assert isinstance(fused, Int8DynamicFused)
    x = torch.randn(1, 3, model.config.hidden_size)
    torch.testing.assert_close(fused(x), torch.cat([a.q_proj(x), a.k_proj(x), a.v_proj(x)], -1), rtol=1e-5, atol=1e-5)
    # a deep copy keeps working after the original is gone (its packed weights were filed under the original's key)
    import gc

    ref, twin = fused(x), copy.deepcopy(fused)
    assert twin.key != fused.key
    del fused
    gc.collect()
    torch.testing.assert_close(twin(x), ref, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_loop_and_self_draft_on_cuda(tiny):
    """On a GPU: our loop compiled with CUDA graphs (mode="reduce-overhead") gives HF generate's greedy tokens,
    call after call; the int8 self-draft there is our int8 weight-only copy, and speculation keeps the tokens."""
    import copy

    from secbook.ladder import draft_for
    from secbook.speculative import SpeculativeDecoder

    model, tok = tiny
    m = copy.deepcopy(model).to("cuda")
    ids = prompt_ids(tok, 16).cuda()
    ref = hf_generate(m, ids, 24)
    gen = FastGenerator(m, max_len=48, compile=True)
    assert torch.equal(gen.generate(ids, 24), ref) and torch.equal(gen.generate(ids, 24), ref)
    assert torch.equal(FastGenerator(m, max_len=48).generate(ids, 24), ref)
    draft, label = draft_for(m, "int8-self")
    assert "weight-only" in label and next(draft.parameters()).device.type == "cuda"
    assert torch.equal(SpeculativeDecoder(m, draft, gamma=4, max_len=48).generate(ids, 24).ids, ref)
    sampled = SpeculativeDecoder(m, "lookup", gamma=4, max_len=48).generate(ids, 24, temperature=0.8, seed=0).ids
    assert sampled.device == ids.device and sampled.shape == ref.shape  # prompt lookup's sampling path on the GPU
    torch._dynamo.reset()
