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
    """Weight-only int8 layers replace nn.Linear (LM head included); our loop fuses them and gives the tokens
    HF generate gives with the same quantized model; int4 layers are called as modules."""
    import copy

    from secbook.generate import Int8WeightOnlyFused, SeparateLinears
    from secbook.quantize import QuantLinear

    model, tok = tiny
    q = apply_transform(copy.deepcopy(model), "int8wo")
    assert isinstance(q.model.layers[0].mlp.up_proj, QuantLinear) and isinstance(q.lm_head, QuantLinear)
    dec = StaticDecoder(q, max_len=40)
    assert isinstance(dec.gate_up[0], Int8WeightOnlyFused) and isinstance(dec.head, Int8WeightOnlyFused)
    ids = prompt_ids(tok, 16)
    assert torch.equal(fast_generate(q, ids, 12), hf_generate(q, ids, 12))
    q4 = apply_transform(copy.deepcopy(model), "int4wo")
    assert isinstance(StaticDecoder(q4, max_len=40).qkv[0], SeparateLinears)
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
    fused = StaticDecoder(q, max_len=40).gate_up[0]
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


def test_generate_suite_rows_and_merge(monkeypatch, tmp_path):
    """A short real ladder on the tiny model: side-by-side rows, lossless rungs agree 100%, speculative rungs
    carry their acceptance rate; a full run replaces the model's earlier rows, a partial one only its rungs."""
    import types

    import pandas as pd

    from secbook import paths
    from secbook.generate import LADDER, run_generate_suite, save_ladder

    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    pick = {"HF generate fp32 (baseline)", "our loop fp32, fused weights", "speculative, student draft, gamma=1",
            "prompt lookup, gamma=4"}
    args = types.SimpleNamespace(model="tiny", prompt_len=16, new_tokens=12, repeats=1)
    df = run_generate_suite(args, rungs=[r for r in LADDER if r.name in pick], save=True)
    assert list(df["rung"]) == [r.name for r in LADDER if r.name in pick]
    assert df["speedup"].iloc[0] == 1.0 and (df["token_agreement"] == 1.0).all()
    assert df["acceptance_rate"].iloc[2:].between(0, 1).all() and df["acceptance_rate"].iloc[:2].isna().all()
    assert (df["mbu"] > 0).all() and (df["read_bytes_per_token"] > 0).all()
    spec = df.iloc[2]  # MBU counts one weight read per target call, not per token
    read_per_s = spec["read_bytes_per_token"] * spec["tok_s"] / spec["tokens_per_call"]
    assert (df["bandwidth_max_GBs"] == df["bandwidth_GBs"].max()).all()  # one ceiling per run: its best reading
    assert spec["mbu"] == pytest.approx(read_per_s / (df["bandwidth_GBs"].max() * 1e9))
    assert df["mbu"].iloc[1] == pytest.approx(df["read_bytes_per_token"].iloc[1] * df["tok_s"].iloc[1]
                                              / (df["bandwidth_max_GBs"].iloc[1] * 1e9))
    stale = pd.DataFrame({"model": ["tiny", "other"], "rung": ["an old rung", "kept"], "tok_s": [1.0, 2.0]})
    stale.to_csv(tmp_path / "generate_ladder.csv", index=False)
    save_ladder(df.iloc[:2])
    assert "an old rung" in set(pd.read_csv(tmp_path / "generate_ladder.csv")["rung"])
    save_ladder(df, whole_model=True)
    merged = pd.read_csv(tmp_path / "generate_ladder.csv")
    assert set(merged["rung"]) == pick | {"kept"} and len(merged) == 5


def test_int8_gemv_rates_small():
    from secbook.generate import int8_gemv_rates

    r = int8_gemv_rates(rows=256, in_features=64, n_weights=2, repeats=1)
    from secbook import kernels

    assert len(r) == (6 if kernels.available() else 4) and all(v > 0 for v in r.values())
    assert ("int8 weight-only (compiled)", "from memory (many)") in r
    with pytest.raises(ValueError):
        int8_gemv_rates(rows=0)


def test_gemv_layouts_small():
    from secbook.generate import gemv_layouts

    r = gemv_layouts(256, 128, repeats=3)
    assert set(r["layouts"]) == {"[out, in]  F.linear(x, W)", "[in, out]  x @ W_t"}
    assert all(v["GB/s"] > 0 for v in r["layouts"].values()) and r["speedup_transposed"] > 0
    with pytest.raises(ValueError):
        gemv_layouts(0, 8)


def test_torchao_layers_are_not_fused(tiny):
    """torchao keeps nn.Linear with a quantized tensor-subclass weight: our loop must call those modules, not
    concatenate their weights."""
    import copy

    from secbook.generate import SeparateLinears
    from secbook.quantize import torchao_quantize

    model, tok = tiny
    q = torchao_quantize(copy.deepcopy(model), "int8wo")
    dec = StaticDecoder(q, max_len=40)
    assert isinstance(dec.qkv[0], SeparateLinears) and isinstance(dec.gate_up[0], SeparateLinears)
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


def test_int8_self_draft_keeps_target_tokens(tiny):
    """Speculative decoding with the target's own dynamic-int8 copy as the draft: the fp32 target's tokens,
    and a draft that is right most of the time."""
    from secbook.generate import draft_for
    from secbook.speculative import SpeculativeDecoder

    model, tok = tiny
    draft, label = draft_for(model, "int8-self")
    assert "int8" in label and draft is not model
    ids = prompt_ids(tok, 16)
    res = SpeculativeDecoder(model, draft, gamma=4, max_len=48).generate(ids, 24)
    assert torch.equal(res.ids, hf_generate(model, ids, 24))
    assert res.acceptance_rate > 0.5


@pytest.mark.parametrize("name", ["int8-self", "student"])
def test_cpp_draft_keeps_target_tokens(tiny, name):
    """A draft on the whole-step C++ decoder (int8 weights on our kernel): still exactly the fp32 target's greedy
    tokens, with the target on the C++ step too; the int8 self-draft is right nearly always. A draft that is
    neither our int8 nor fp32 is refused."""
    from secbook import kernels
    from secbook.generate import draft_for
    from secbook.speculative import SpeculativeDecoder

    if not kernels.available():
        pytest.skip(kernels.unavailable_reason())
    model, tok = tiny
    draft, label = draft_for(model, name, loop="cpp")
    assert "C++" in label
    ids = prompt_ids(tok, 16)
    dec = SpeculativeDecoder(model, draft, gamma=3, max_len=48, cpp_draft=True)
    assert isinstance(dec.draft, kernels.CppDecoder)
    res = dec.generate(ids, 24)
    assert torch.equal(res.ids, hf_generate(model, ids, 24))
    both = SpeculativeDecoder(model, draft, gamma=3, max_len=48, cpp_draft=True, cpp_target=True)
    assert both.target.weights == "fp32"  # the fp32 target on the C++ step: still HF generate's tokens
    assert torch.equal(both.generate(ids, 24).ids, res.ids)
    if name == "int8-self":
        assert res.acceptance_rate > 0.9
    with pytest.raises(ValueError, match="int8k"):  # torch.ao's dynamic int8 is neither our int8 nor fp32
        SpeculativeDecoder(model, draft_for(model, "int8-self")[0], gamma=3, max_len=48, cpp_draft=True)
    with pytest.raises(ValueError, match="draft loop"):
        draft_for(model, name, loop="gpu")


def test_cpu_only_rungs_are_marked():
    """The rungs on our C++ kernel or C++ step, and torch.ao's dynamic int8 (CPU kernels only), are the CPU-only
    ones (a GPU run skips them instead of recording failures); every other rung runs anywhere."""
    from secbook.generate import LADDER

    assert {r.name for r in LADDER if r.cpu_only} == {
        "speculative, int8 student on the C++ step, gamma=2", "speculative, int8 self-draft on the C++ step, gamma=8",
        "our loop int8, C++ kernel + compile", "our loop int8, C++ kernel", "int8, whole decode step in C++",
        "fp32, whole decode step in C++", "speculative, all on the C++ step: fp32 target, int8 self-draft, gamma=8",
        "our loop dynamic int8 (torch.ao)", "our loop dynamic int8 + compile"}


def test_plot_ladder_labels_the_machine():
    """One panel per model; the title names the GPU the rows were recorded on, else the CPU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from secbook.generate import plot_ladder

    rows = pd.DataFrame({"model": ["a", "a", "b"], "rung": ["HF generate fp32 (baseline)", "x", "y"],
                         "tok_s": [1.0, 2.0, 3.0], "speedup": [1.0, 2.0, 1.0], "token_agreement": [1.0, 1.0, 0.5],
                         "gpu": ["NVIDIA H200"] * 3, "cpu": ["some CPU"] * 3, "cores": [16] * 3})
    fig = plot_ladder(rows)
    assert len(fig.axes) == 2 and fig._suptitle.get_text() == "recorded on NVIDIA H200"
    plt.close(fig)
    fig = plot_ladder(rows.assign(gpu="none"))
    assert fig._suptitle.get_text() == "recorded on some CPU, 16 cores"
    plt.close(fig)
    with pytest.raises(ValueError):
        plot_ladder(rows.assign(tok_s=float("nan")))


def test_ladder_summary_picks_from_the_rows():
    """Best lossless = fp32 weights, all tokens equal, our loops only; best within budget = |tiny ppl| <= 1%."""
    import pandas as pd

    from secbook.generate import ladder_summary

    rows = pd.DataFrame({
        "model": ["m"] * 5, "tok_s": [10.0, 30.0, 50.0, 80.0, 40.0],
        "rung": ["HF generate fp32 (baseline)", "ours fp32", "ours bf16", "ours int4", "lookup"],
        "transform": ["none", "none", "bf16", "int4wo", "none"], "loop": ["hf", "ours", "ours", "ours", "lookup"],
        "token_agreement": [1.0, 1.0, 0.9, 0.5, 1.0], "tiny_ppl_change": [0.0, 0.0, 0.001, 0.05, 0.0],
        "speedup": [1.0, 3.0, 5.0, 8.0, 4.0], "mbu": [0.1, 0.3, 0.5, 0.6, 0.2], "bandwidth_max_GBs": [100.0] * 5,
        "acceptance_rate": [None, None, None, None, 0.5]})
    text = ladder_summary(rows)
    assert "m: HF generate 10.0 tok/s" in text and "best lossless loop: ours fp32 3.00x (MBU 30.0%)" in text
    assert "best within 1% ppl: ours bf16 5.00x (ppl +0.10%" in text  # int4 is faster but outside the budget
    assert "lookup: 4.00x HF, agreement 1.00, acceptance 0.50" in text  # "lookup" is no ladder rung: no own loop
    rows.loc[4, "rung"] = "prompt lookup, gamma=4"
    rows.loc[1, "rung"] = "our loop fp32, fused weights"
    text = ladder_summary(rows)
    assert ("prompt lookup, gamma=4: 4.00x HF, 1.33x its own loop (our loop fp32, fused weights), agreement 1.00, "
            "acceptance 0.50") in text


def test_speculative_rows_are_compared_with_their_own_loop():
    """A speculative rung's own loop is the same target loop without speculation; its speed-up over it is taken
    within one run (same model and timestamp), never across runs; values already recorded are kept."""
    import pandas as pd

    from secbook.generate import LADDER, own_loop, with_own_loop_speedup

    by = {r.name: r for r in LADDER}
    assert own_loop(by["prompt lookup, gamma=4"]) == "our loop fp32, fused weights"
    assert own_loop(by["speculative, int8 self-draft on the C++ step, gamma=8"]) == "our loop fp32, fused weights"
    assert own_loop(by["speculative, all on the C++ step: fp32 target, int8 self-draft, gamma=8"]) == \
        "fp32, whole decode step in C++"
    assert own_loop(by["our loop bf16"]) is None
    rows = pd.DataFrame({
        "model": ["m", "m", "m", "m", "n"], "timestamp": ["t1", "t1", "t1", "t2", "t1"],
        "rung": ["our loop fp32, fused weights", "prompt lookup, gamma=4", "fp32, whole decode step in C++",
                 "speculative, all on the C++ step: fp32 target, int8 self-draft, gamma=8", "prompt lookup, gamma=4"],
        "tok_s": [20.0, 30.0, 80.0, 120.0, 50.0]})
    out = with_own_loop_speedup(rows)
    assert out["speedup_vs_own_loop"].iloc[1] == 1.5  # 30 / 20, same run
    assert out["speedup_vs_own_loop"].isna().tolist() == [True, False, True, True, True]  # t2, model n: no own loop
    kept = with_own_loop_speedup(out.assign(speedup_vs_own_loop=[None, 9.0, None, None, None]))
    assert kept["speedup_vs_own_loop"].iloc[1] == 9.0


def test_ladder_prompt(tiny):
    """A model without a chat template gets held-out text of the requested length; a chat model its chat turn."""
    from secbook.generate import LADDER_QUESTION, ladder_prompt

    ids, label = ladder_prompt(tiny[1], 24)
    assert torch.equal(ids, prompt_ids(tiny[1], 24)) and "held-out" in label

    class Chat:
        chat_template = "{{ messages }}"

        def apply_chat_template(self, messages, **kw):
            assert messages == [{"role": "user", "content": LADDER_QUESTION}] and kw["add_generation_prompt"]
            return {"input_ids": torch.tensor([[1, 2, 3]])}

    ids, label = ladder_prompt(Chat(), 24)
    assert ids.tolist() == [[1, 2, 3]] and LADDER_QUESTION in label and "3 tokens" in label


def test_real_model_lossless_rungs_match_hf_generate(monkeypatch):
    """On the real model (SmolLM2-135M-Instruct) and the ladder's chat prompt, every lossless rung that is not
    compiled — our loop with module calls and fused, the speculative and prompt-lookup loops, the C++ step —
    gives HF generate's greedy tokens, and the reply never reaches the end-of-sequence token (our loops do not
    mask it, HF's min_new_tokens does), so a full-length run is the model's own greedy reply."""
    import functools

    from secbook import generate, kernels, pretrained
    from secbook.generate import LADDER, _generate_fn, ladder_prompt

    if not pretrained.is_fetched():
        pytest.skip("the real model is not fetched: run `python -m secbook fetch` (or make fetch) once")
    import secbook

    # the two C++ self-draft rungs share one int8 draft: build it once (it takes seconds for a 135M model)
    monkeypatch.setattr(generate, "draft_for", functools.lru_cache(generate.draft_for))
    model, tok = secbook.load(pretrained.NAME)
    ids, _ = ladder_prompt(tok)
    n = 16
    ref = hf_generate(model, ids, n)
    rungs = [r for r in LADDER if r.transform == "none" and not r.compile and not r.tiny_only and r.loop != "hf"]
    if not kernels.available():
        rungs = [r for r in rungs if "cpp" not in (r.loop, r.draft_loop, r.target_loop)]
    assert len(rungs) >= 4
    for rung in rungs:
        out = _generate_fn(rung, model, ids.shape[-1] + n)(ids, n)
        assert torch.equal(out, ref), rung.name
        assert tok.eos_token_id not in out[0, ids.shape[-1]:].tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_loop_and_self_draft_on_cuda(tiny):
    """On a GPU: our loop compiled with CUDA graphs (mode="reduce-overhead") gives HF generate's greedy tokens,
    call after call; the int8 self-draft there is our int8 weight-only copy, and speculation keeps the tokens."""
    import copy

    from secbook.generate import draft_for
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
