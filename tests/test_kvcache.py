"""KV-cache formula vs real tensors, GQA saving, attention implementations, batching."""
import pytest
import torch

from secbook import attention, batching, kvcache
from secbook.measure import prompt_ids


@pytest.mark.parametrize("fixture", ["tiny", "small_qwen"])
def test_formula_matches_hf_cache(request, fixture):
    model, tok = request.getfixturevalue(fixture)
    ids = prompt_ids(tok, 37)
    assert kvcache.measured_kv_bytes(model, ids) == kvcache.kv_cache_bytes(model.config, 37)


def test_gqa_saving(tiny, small_llama):
    g = kvcache.gqa_saving(tiny[0].config)
    assert (g["heads"], g["kv_heads"], g["saving"]) == (4, 2, 2.0)
    assert g["bytes_per_token_mha"] == 2 * g["bytes_per_token_gqa"]
    assert kvcache.gqa_saving(small_llama[0].config)["saving"] == 3.0
    with pytest.raises(ValueError):
        kvcache.kv_cache_bytes(tiny[0].config, -1)


def test_cache_on_off_same_tokens_and_shape(tiny):
    model, tok = tiny
    df = kvcache.cache_on_off(model, prompt_ids(tok, 8), new_tokens=6)
    assert list(df["position"]) == list(range(8, 14))
    assert (df[["with_cache_ms", "no_cache_ms"]] > 0).all().all()


def test_attention_implementations_agree(tiny):
    model, _ = tiny
    df = attention.compare(model, contexts=(32,), repeats=1)
    assert set(df["attention"]) == {"eager", "sdpa"}
    assert df["max_abs_diff_vs_first"].max() < 1e-4
    with pytest.raises(ValueError, match="not available"):
        attention.set_attention(model, "magic")


def test_left_padding_done_right(tiny):
    model, tok = tiny
    prompts = ["def f(x):\n    return", "import os\nimport sys\n\nclass Reader:\n    def", "x ="]
    assert batching.check_left_padding(model, tok, prompts, new_tokens=8) == [True, True, True]


def test_continuous_beats_static():
    w = batching.workload(48, seed=1)
    s = batching.simulate(w, "static", max_batch=8)
    c = batching.simulate(w, "continuous", max_batch=8)
    assert c["throughput_tok_s"] > s["throughput_tok_s"]
    assert c["mean_latency_steps"] < s["mean_latency_steps"]
    one = batching.simulate(w, "static", max_batch=1)
    assert one == {**batching.simulate(w, "continuous", max_batch=1), "policy": "static"}
    with pytest.raises(ValueError, match="policy"):
        batching.simulate(w, "greedy")
