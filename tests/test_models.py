"""secbook.load: the tiny model, the replicas, bad input, determinism, and the tiny model's quality."""
import math
from collections import Counter

import pytest
import torch

import secbook
from secbook import paths
from secbook.models import REPLICAS, replica_config

# Parameter counts of the full public configs (tied embeddings counted once), in millions.
FULL_PARAMS_M = {"smollm2-135m": 134.5, "qwen2.5-0.5b": 494.0, "llama-3.2-1b": 1235.8,
                 "qwen3-0.6b": 596.0,  # model card: 0.6B, 0.44B without the 155.6M-parameter embedding
                 "gemma-3-270m": 268.1}  # Google: 268M, 170M of them embeddings


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_tiny_loads_with_its_documented_shape(tiny):
    model, tok = tiny
    cfg = model.config
    assert cfg.model_type == "llama"
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (4096, 256, 6)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size) == (4, 2, 768)
    assert cfg.tie_word_embeddings
    assert n_params(model) == 5_770_496
    assert len(tok) == cfg.vocab_size
    assert not model.training and next(model.parameters()).dtype == torch.float32


def test_tiny_loads_with_plain_transformers():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = paths.MODELS_DIR / "tiny"
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("def fibonacci(n):", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 4096)
    assert torch.isfinite(logits).all()


def test_available_lists_tiny_and_every_replica():
    names = secbook.available()
    assert "tiny" in names
    assert all(f"replica:{r}" in names for r in REPLICAS)


@pytest.mark.parametrize("name", sorted(REPLICAS))
def test_replica_loads_small_and_runs(name):
    model, tok = secbook.load(f"replica:{name}", num_hidden_layers=2)
    full = REPLICAS[name]
    cfg = model.config
    assert cfg.num_hidden_layers == 2
    assert cfg.hidden_size == full["hidden_size"] and cfg.vocab_size == full["vocab_size"]
    assert cfg.num_key_value_heads == full["num_key_value_heads"]
    ids = tok("import os\n", return_tensors="pt").input_ids
    assert int(ids.max()) < cfg.vocab_size
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], cfg.vocab_size) and torch.isfinite(logits).all()


def test_replicas_are_seeded():
    a, _ = secbook.load("replica:smollm2-135m", num_hidden_layers=1, seed=3)
    b, _ = secbook.load("replica:smollm2-135m", num_hidden_layers=1, seed=3)
    c, _ = secbook.load("replica:smollm2-135m", num_hidden_layers=1, seed=4)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


@pytest.mark.parametrize("name", sorted(REPLICAS))
def test_full_replica_configs_have_the_published_parameter_counts(name):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only: no memory, no time
        model = AutoModelForCausalLM.from_config(replica_config(name))
    assert round(n_params(model) / 1e6, 1) == FULL_PARAMS_M[name]


def test_new_architecture_replicas_as_published():
    """Qwen3-0.6B: q/k norms and head_dim 128 (not hidden / heads); Gemma-3-270M: five 512-token sliding-window
    layers with RoPE base 10k, then one global layer with base 1M, three times; the decoder description reads
    that pattern."""
    from transformers import AutoModelForCausalLM

    from secbook.decoder import describe

    q = replica_config("qwen3-0.6b")
    assert q.head_dim == 128 and q.hidden_size // q.num_attention_heads == 64
    g = replica_config("gemma-3-270m")
    assert g.layer_types == (["sliding_attention"] * 5 + ["full_attention"]) * 3 and g.sliding_window == 512
    assert g.rope_parameters["sliding_attention"]["rope_theta"] == 1e4
    assert g.rope_parameters["full_attention"]["rope_theta"] == 1e6
    with torch.device("meta"):
        s = describe(AutoModelForCausalLM.from_config(replica_config("gemma-3-270m", num_hidden_layers=6)))
    assert s.windows == (512,) * 5 + (None,) and s.family.q_norm and s.embed_scale == pytest.approx(640 ** 0.5)


def test_unknown_replica_lists_the_replicas():
    with pytest.raises(ValueError) as e:
        secbook.load("replica:gpt-5")
    assert all(r in str(e.value) for r in REPLICAS)


def test_unknown_name_lists_what_exists():
    with pytest.raises(ValueError) as e:
        secbook.load("no-such-model")
    msg = str(e.value)
    assert "tiny" in msg and "replica:smollm2-135m" in msg


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Available without download"):
        secbook.load(str(tmp_path / "missing" / "model"))
    with pytest.raises(ValueError):
        secbook.load("./not/here")


def test_overrides_are_only_for_replicas():
    with pytest.raises(ValueError, match="replica"):
        secbook.load("tiny", num_hidden_layers=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so device='cuda' is valid")
def test_cuda_on_a_cpu_machine_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA"):
        secbook.load("tiny", device="cuda")


def test_unsupported_device_and_dtype_are_clear_errors():
    with pytest.raises(ValueError, match="unsupported device"):
        secbook.load("replica:smollm2-135m", device="xpu", num_hidden_layers=1)
    with pytest.raises(ValueError, match="unknown dtype"):
        secbook.load("replica:smollm2-135m", dtype="fp7", num_hidden_layers=1)


def test_auto_device_on_this_machine():
    model, _ = secbook.load("replica:smollm2-135m", device="auto", num_hidden_layers=1)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if secbook.hardware.mps_available() else "cpu")
    assert next(model.parameters()).device.type == expected


def test_dtype_is_applied():
    model, _ = secbook.load("replica:qwen2.5-0.5b", dtype="bf16", num_hidden_layers=1)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_greedy_generation_is_deterministic_and_looks_like_python(tiny):
    model, tok = tiny
    ids = tok("def fibonacci(n):", return_tensors="pt").input_ids
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    with torch.no_grad():
        a, b = model.generate(ids, **kw), model.generate(ids, **kw)
    assert torch.equal(a, b)
    text = tok.decode(a[0, ids.shape[1]:])
    assert any(k in text for k in ("return", "if ", "\n    ", "(", "=")), text


def test_seeded_sampling_is_reproducible(tiny):
    model, tok = tiny
    ids = tok("import ", return_tensors="pt").input_ids
    outs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                       min_new_tokens=16, do_sample=True, temperature=1.0, top_k=0))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_heldout_perplexity_far_below_a_unigram_baseline(tiny):
    """A unigram model (training-token frequencies, add-one smoothing) vs the tiny model on the same
    held-out tokens: the trained model must be far better (less than a quarter of the unigram perplexity)."""
    from secbook.corpus import heldout_text, read_split
    from secbook.measure import perplexity

    model, tok = tiny
    train, _ = read_split()
    counts = Counter()
    for text in train[::8]:  # every 8th training file: frequencies converge long before the whole corpus
        counts.update(tok(text, add_special_tokens=False, verbose=False).input_ids)
    total, vocab = sum(counts.values()), model.config.vocab_size
    held_text = heldout_text(max_chars=20_000)
    held = tok(held_text, add_special_tokens=False, verbose=False).input_ids[:2048]
    unigram_nll = -sum(math.log((counts[i] + 1) / (total + vocab)) for i in held[1:]) / (len(held) - 1)
    unigram_ppl = math.exp(unigram_nll)
    model_ppl = perplexity(model, tok, held_text, max_tokens=2048)
    assert unigram_ppl > 50, unigram_ppl  # sanity: the baseline is a real baseline
    assert model_ppl < unigram_ppl / 4, (model_ppl, unigram_ppl)
