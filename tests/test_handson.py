"""secbook.handson: the source's SimpleLLM bug is real, the fix fixes it, the harness times."""
import pytest
import torch

from secbook import handson


def test_parameter_counts():
    assert handson.n_params(handson.build("buggy")) == 9_266_960
    assert handson.n_params(handson.build("fixed")) == 9_266_960
    t = handson.n_params(handson.build("transformer"))
    assert abs(t - 9_266_960) / 9_266_960 < 0.02


def test_buggy_model_reads_batch_as_sequence():
    m = handson.build("buggy")
    x = torch.randint(0, 10000, (1, 10))
    s = handson.lstm_shapes(m, x)
    assert s["lstm sees sequences"] == 10 and s["lstm sees length"] == 1
    assert m(x).shape == (1, 10000)  # the bug is silent: the shape looks right


def test_buggy_prediction_ignores_context_and_fixed_does_not():
    assert handson.context_sensitivity(handson.build("buggy")) == 0.0
    assert handson.context_sensitivity(handson.build("fixed")) > 1e-4
    assert handson.context_sensitivity(handson.build("transformer")) > 1e-4


def test_fixed_equals_transposed_buggy_with_same_weights():
    buggy, fixed = handson.build("buggy", seed=1), handson.build("fixed", seed=1)
    x = torch.randint(0, 10000, (2, 7))
    with torch.no_grad():
        out, _ = buggy.lstm(buggy.embedding(x).transpose(0, 1))
        assert torch.allclose(buggy.fc(out[-1]), fixed(x), atol=1e-5)


@pytest.mark.parametrize("kind", ["buggy", "fixed", "transformer"])
def test_generate_produces_exact_length(kind):
    m = handson.build(kind)
    ids = torch.randint(0, 10000, (1, 5))
    out = handson.generate(m, ids, 4)
    assert out.shape == (1, 9) and torch.equal(out[:, :5], ids)


def test_stateful_lstm_generation_matches_recomputation():
    m = handson.build("fixed")
    ids = torch.randint(0, 10000, (1, 6))
    fast = handson.generate(m, ids, 5)
    seq = ids
    with torch.no_grad():
        for _ in range(5):
            seq = torch.cat([seq, m(seq).argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(fast, seq)


def test_time_call_and_bad_input():
    calls = []
    r = handson.time_call(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and r["repeats"] == 3 and r["min_s"] <= r["median_s"] <= r["max_s"]
    with pytest.raises(ValueError):
        handson.time_call(lambda: None, repeats=0)
    with pytest.raises(ValueError):
        handson.build("gru")
    with pytest.raises(ValueError):
        handson.generate(handson.build("fixed"), torch.zeros(1, 2, dtype=torch.long), 0)


def test_timing_table_small():
    models = {"fixed": handson.build("fixed")}
    df = handson.timing_table(models, seq_lens=(4,), prompt_len=4, new_tokens=3, repeats=1)
    assert list(df.task) == ["forward", "generate"]
    assert (df.median_ms > 0).all() and df.tokens_per_s.iloc[1] > 0


def test_environment_table():
    df = handson.environment()
    assert {"Python", "PyTorch"} <= set(df.component)
    assert df.loc[df.component == "PyTorch", "found here"].item() == torch.__version__


def test_exercise_check():
    from secbook.exercises import check_simplellm_params

    check_simplellm_params(9_266_960)
    with pytest.raises(AssertionError):
        check_simplellm_params(9_266_960 - 4 * 512)  # one bias vector per gate forgotten


def test_generation_in_turn_small():
    models = {"buggy": handson.build("buggy"), "fixed": handson.build("fixed")}
    speeds = handson.generation_in_turn(models, prompt_len=4, new_tokens=3, rounds=2)
    assert set(speeds) == {"buggy", "fixed"} and all(len(v) == 2 and min(v) > 0 for v in speeds.values())


def test_hand_written_chat_loop_matches_generate(tiny):
    """reply() is greedy decoding with the KV cache: the same tokens as HF generate, stopping at the end token."""
    import copy

    model, tok = tiny
    tok = copy.deepcopy(tok)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    messages = [{"role": "user", "content": "def add(a, b):"}]
    r = handson.reply(model, tok, messages, max_new_tokens=12)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)[0, ids.shape[1]:]
    assert r.tokens == ref.tolist()[:len(r.tokens)] and len(r.token_times) == len(r.tokens) and r.prompt_tokens == ids.shape[1]
    assert r.ttft_s > 0 and (len(r.tokens) < 2 or r.tokens_per_s > 0)
    with pytest.raises(ValueError, match="user turn"):
        handson.reply(model, tok, [{"role": "assistant", "content": "hi"}])
    with pytest.raises(ValueError, match="chat template"):
        handson.reply(model, tiny[1], messages)


def test_forward_table_small():
    df = handson.forward_table({"fixed": handson.build("fixed")}, seq_lens=(3, 5), repeats=1)
    assert list(df.seq_len) == [3, 5] and (df.min_ms <= df.median_ms).all() and (df.median_ms <= df.max_ms).all()
