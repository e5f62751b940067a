"""Pruning: mask properties (exact per-row sparsity, 2:4), model-level pruning, structured shrinking, bad input."""
import pytest
import torch
from torch import nn

from secbook import prune as P
from secbook.quantize import linear_layers


@pytest.fixture(scope="module")
def w():
    return torch.randn(32, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9])
def test_wanda_mask_exact_per_row(w, s):
    norm = torch.rand(64, generator=torch.Generator().manual_seed(1)) + 0.1
    mask = P.row_mask(P.wanda_score(w, norm), s)
    assert (mask.sum(1) == 64 - int(64 * s)).all()
    # what Wanda keeps scores at least as high as what it drops, in every row
    sc = P.wanda_score(w, norm)
    if 0 < s:
        kept_min = torch.where(mask, sc, torch.inf).amin(1)
        dropped_max = torch.where(~mask, sc, -torch.inf).amax(1)
        assert (kept_min >= dropped_max).all()


def test_wanda_differs_from_magnitude_when_inputs_differ(w):
    norm = torch.ones(64)
    norm[:8] = 100.0
    m_w = P.row_mask(P.wanda_score(w, norm), 0.5)
    m_m = P.magnitude_mask(w, 0.5)
    # channels with large inputs survive Wanda (almost all), not magnitude pruning (about half)
    assert m_w[:, :8].float().mean() > 0.95 > 0.7 > m_m[:, :8].float().mean()


def test_magnitude_mask_exact(w):
    m = P.magnitude_mask(w, 0.25)
    assert int((~m).sum()) == int(w.numel() * 0.25)
    assert w[m].abs().min() >= w[~m].abs().max()


def test_2_4_validity(w):
    m = P.n_m_mask(w.abs())
    assert (m.reshape(32, 16, 4).sum(-1) == 2).all()
    assert P.is_2_4(w * m) and not P.is_2_4(w)


@pytest.fixture(scope="module")
def mini_llama():
    import secbook
    return secbook.load("replica:smollm2-135m", num_hidden_layers=2, vocab_size=512, hidden_size=192,
                        intermediate_size=384, num_attention_heads=6, num_key_value_heads=2)


@pytest.fixture(scope="module")
def mini_qwen():
    import secbook
    return secbook.load("replica:qwen2.5-0.5b", num_hidden_layers=2, vocab_size=512, hidden_size=128,
                        intermediate_size=256, num_attention_heads=4, num_key_value_heads=2)


def test_prune_model(mini_llama):
    model, tok = mini_llama
    calib = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(0))
    for method in P.METHODS:
        pm, rep = P.prune(model, 0.5, method, calib=calib, inplace=False)
        assert abs(rep["sparsity"] - 0.5) < 0.01
        assert pm(input_ids=calib).logits.isfinite().all()
    pm, rep = P.prune(model, 0.5, "wanda", "2:4", calib=calib, inplace=False)
    assert all(P.is_2_4(m.weight) for m in linear_layers(pm).values())
    # the original is untouched
    assert P.sparsity_of(model) < 0.01


def test_structured_runnable_smaller_and_saveable(mini_qwen, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = mini_qwen
    calib = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(0))
    new, rep = P.prune_structured(model, mlp_fraction=0.5, head_fraction=0.5, calib=calib)
    c = new.config
    assert c.intermediate_size == model.config.intermediate_size // 2
    assert c.num_attention_heads < model.config.num_attention_heads
    assert rep["parameters_after"] < rep["parameters_before"]
    assert new.model.layers[0].mlp.down_proj.weight.shape[1] == c.intermediate_size
    out = new(input_ids=calib).logits
    assert out.shape == (2, 32, model.config.vocab_size) and out.isfinite().all()
    new.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.allclose(again(input_ids=calib).logits, out, atol=1e-5)


def test_structured_zero_fraction_is_identity(tiny):
    model, tok = tiny
    calib = torch.randint(0, 4096, (1, 16), generator=torch.Generator().manual_seed(0))
    new, _ = P.prune_structured(model, 0.0, 0.0, calib=calib)
    assert torch.allclose(new(input_ids=calib).logits, model(input_ids=calib).logits, atol=1e-5)


def test_bad_input(w):
    for s in (-0.1, 1.0, 1.5, "half"):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            P.magnitude_mask(w, s)
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            P.prune(nn.Sequential(nn.Linear(4, 4)), s)
    with pytest.raises(ValueError, match="no nn.Linear"):
        P.prune(nn.Sequential(nn.ReLU()), 0.5)
    with pytest.raises(ValueError, match="method"):
        P.prune(nn.Sequential(nn.Linear(4, 4)), 0.5, method="random")
    with pytest.raises(ValueError, match="multiple of 4"):
        P.n_m_mask(torch.randn(3, 6))
    with pytest.raises(ValueError, match="calib"):
        P.prune(nn.Sequential(nn.Linear(4, 4)), 0.5, method="wanda")


def test_gpt2_conv1d_layers_prune():
    """Wanda and 2:4 on GPT-2's Conv1D layers (pruned as nn.Linear): the sparsity asked for, HF's tokens in our
    loop; structured pruning removes MLP channels (Conv1D layout kept, so it saves and reloads as GPT-2) and
    refuses heads, which a GPT-2 cannot lose."""
    import copy
    import tempfile

    from transformers import AutoModelForCausalLM

    from secbook.families import prompt, tiny_model
    from secbook.generate import fast_generate, hf_generate

    model = tiny_model("gpt2")
    calib, ids = prompt(length=32, batch=2, seed=5), prompt()
    for method, pattern in (("wanda", "unstructured"), ("wanda", "2:4"), ("magnitude", "unstructured")):
        pm, rep = P.prune(copy.deepcopy(model), 0.5, method, pattern, calib=calib)
        assert rep["layers"] == 8 and abs(rep["sparsity"] - 0.5) < 0.01 and P.sparsity_of(pm) == rep["sparsity"]
        convs = [m for m in pm.modules() if type(m).__name__ == "Conv1D"]  # still a GPT-2: Conv1D layers
        assert len(convs) == 8 and len(linear_layers(pm)) == 0
        if pattern == "2:4":  # 2 of every 4 consecutive inputs: the rows of a Conv1D's [in, out] weight
            assert all(P.is_2_4(m.weight.t()) for m in convs)
        assert torch.equal(fast_generate(pm, ids, 8), hf_generate(pm, ids, 8))
    with tempfile.TemporaryDirectory() as d:  # unstructured: the pruned GPT-2 saves and reloads as a GPT-2
        pm.save_pretrained(d)
        assert torch.equal(AutoModelForCausalLM.from_pretrained(d)(calib).logits, pm(calib).logits)
    small, rep = P.prune_structured(model, mlp_fraction=0.5, calib=calib)
    assert small.config.n_inner == 48 and small.transformer.h[0].mlp.c_fc.weight.shape == (64, 48)
    assert torch.equal(fast_generate(small, ids, 8), hf_generate(small, ids, 8))
    with tempfile.TemporaryDirectory() as d:
        small.save_pretrained(d)
        again = AutoModelForCausalLM.from_pretrained(d)
        assert torch.allclose(again(calib).logits, small(calib).logits, atol=1e-5)
    with pytest.raises(ValueError, match="head_fraction=0"):
        P.prune_structured(model, 0.5, 0.5, calib=calib)


@pytest.mark.parametrize("family", ["phi3", "gemma3_text", "gpt_neox"])
def test_structured_other_families(family):
    """Fused q/k/v and gate/up (Phi-3), q/k norms and 4 norms per layer (Gemma 3), interleaved q/k/v (GPT-NeoX,
    MLP only): smaller, HF runs it, our loop gives HF's tokens; fractions of 0 change nothing."""
    from secbook.families import prompt, tiny_model
    from secbook.generate import fast_generate, hf_generate

    model = tiny_model(family)
    calib, ids = prompt(length=32, batch=2, seed=5), prompt()
    heads = 0.0 if family == "gpt_neox" else 0.5
    small, rep = P.prune_structured(model, 0.5, heads, calib=calib)
    assert rep["parameters_after"] < rep["parameters_before"]
    assert (small.config.num_attention_heads == 2) == (heads > 0)
    assert torch.equal(fast_generate(small, ids, 8), hf_generate(small, ids, 8))
    same, _ = P.prune_structured(model, 0.0, 0.0, calib=calib)
    assert torch.allclose(same(calib).logits, model(calib).logits, atol=1e-5)
