"""Chapter 3.2 widget callback and exercise self-checks."""
import pytest

from secbook import exercises, widgets


def test_generation_update(tiny):
    r = widgets.generation_update(4, 128, 4, "eager", alpha=0.5, model=tiny[0])
    assert r["kv_cache_MB"] == pytest.approx(6 * 2 * 2 * 64 * 128 * 4 * 4 / 1e6)
    assert r["expected_tokens_per_call"] == pytest.approx((1 - 0.5 ** 5) / 0.5)
    assert r["continuous_tok_s"] > r["static_tok_s"] and r["prefill_ms"] > 0
    with pytest.raises(ValueError, match="gamma"):
        widgets.generation_update(1, 128, 99, "sdpa", model=tiny[0])
    with pytest.raises(ValueError, match="attention"):
        widgets.generation_update(1, 128, 2, "nope", model=tiny[0])


def test_check_greedy_step(capsys):
    def good(model, token, past):
        out = model(input_ids=token, past_key_values=past, use_cache=True)
        return out.logits[:, -1:].argmax(-1), out.past_key_values

    exercises.check_greedy_step(good, steps=4)
    assert "Correct" in capsys.readouterr().out

    def no_cache(model, token, past):  # forgets the cache: the model only sees one token
        return model(input_ids=token).logits[:, -1:].argmax(-1), past

    with pytest.raises(AssertionError, match="diverge"):
        exercises.check_greedy_step(no_cache, steps=4)


def test_check_kv_cache_mb(capsys):
    exercises.check_kv_cache_mb(47.2)
    assert "Correct" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        exercises.check_kv_cache_mb(141.6)
