"""secbook.apps (streaming with timings, budgets) and the chapter 1 / 6 widget callbacks."""
import pytest
import torch

from secbook import apps, widgets


def test_stream_records_every_token_in_order(tiny):
    model, tok = tiny
    seen = []
    r = apps.stream(model, tok, "import os\n", new_tokens=10, on_text=lambda t, s: seen.append((t, s)),
                    stop_at_eos=False)
    assert len(r.tokens) == 10 and len(r.token_times) == 10
    assert all(a <= b for a, b in zip(r.token_times, r.token_times[1:]))
    assert 0 < r.ttft_s <= r.total_s and r.tpot_s > 0 and r.tokens_per_s > 0
    assert "".join(t for t, _ in seen) == tok.decode(r.tokens)  # the streamed text is the generated text


def test_stream_greedy_matches_generate(tiny):
    model, tok = tiny
    r = apps.stream(model, tok, "def main():\n", new_tokens=8, on_text=lambda t, s: None, stop_at_eos=False)
    ids = tok("def main():\n", return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, min_new_tokens=8,
                             do_sample=False)
    assert r.tokens == ref[0, ids.shape[1]:].tolist()


def test_stream_bad_input(tiny):
    model, tok = tiny
    with pytest.raises(ValueError):
        apps.stream(model, tok, "", new_tokens=4)
    with pytest.raises(ValueError):
        apps.stream(model, tok, "x", new_tokens=0)


def test_complete_stops_at_line_end(tiny):
    model, tok = tiny
    r = apps.complete(model, tok, "import ", max_new_tokens=12)
    assert sum(1 for ln in r.text.split("\n") if ln.strip()) == 1


def test_keystroke_budget_table(tiny):
    model, tok = tiny
    df = apps.keystroke_budget(model, tok, ["import o", "def f(x):\n    return "], budget_ms=1e9, repeats=1,
                               max_new_tokens=3)
    assert list(df.prefix_tokens) == sorted(df.prefix_tokens)
    assert df["within_1e+09_ms"].all() and (df.first_token_ms > 0).all()
    df0 = apps.keystroke_budget(model, tok, ["import o"], budget_ms=1e-6, repeats=1, max_new_tokens=2)
    assert not df0.iloc[:, 3].any()
    with pytest.raises(ValueError):
        apps.keystroke_budget(model, tok, ["x"], budget_ms=0)


def test_tokens_per_word(tiny):
    _, tok = tiny
    r = apps.tokens_per_word(tok, "def read_file(path):\n    return open(path).read()\n")
    assert r["words"] == 7  # def read_file path return open path read
    assert r["tokens"] >= 7 and r["tokens_per_word"] == r["tokens"] / 7
    with pytest.raises(ValueError):
        apps.tokens_per_word(tok, "  ()  ")


def test_voice_budget_arithmetic():
    df = apps.voice_budget(ttft_s=0.05, tpot_s=0.01, first_phrase_tokens=11, total_ms=1000,
                           assumptions_ms={"asr": 300.0, "tts": 200.0})
    ms = dict(zip(df.stage, df.ms))
    assert ms["LLM (first 11 tokens)"] == pytest.approx(150.0)
    assert ms["total"] == pytest.approx(650.0) and ms["left of the 1000 ms budget"] == pytest.approx(350.0)
    with pytest.raises(ValueError):
        apps.voice_budget(0.1, 0.01, 0)


def test_reading_speed_table():
    df = apps.reading_speed_table(1.5, {"m": 30.0}, wpm={"x": 240})
    assert df["reader needs tokens/s"].item() == pytest.approx(6.0)
    assert df["model / reader"].item() == pytest.approx(5.0)


def test_latency_panel_update_validates_and_measures(tiny, monkeypatch):
    monkeypatch.setitem(widgets._PANEL_MODELS, "tiny", tiny)
    t, text = widgets.latency_update("tiny", 8, 4, repeats=1)
    assert t.prompt_len == 8 and t.new_tokens == 4 and t.ttft_s > 0 and "tokens/s" in text
    with pytest.raises(ValueError, match="prompt_len"):
        widgets.latency_update("tiny", 0, 4)
    with pytest.raises(ValueError, match="new_tokens"):
        widgets.latency_update("tiny", 8, 1000)
    with pytest.raises(ValueError, match="model must be one of"):
        widgets.latency_update("gpt-4", 8, 4)


def test_streaming_update_validates_and_streams(tiny, capsys):
    model, tok = tiny
    r = widgets.streaming_update(model, tok, "import ", 5)
    out = capsys.readouterr().out
    assert len(r.tokens) == 5 and "TTFT" in out and out.startswith("import ")
    with pytest.raises(ValueError):
        widgets.streaming_update(model, tok, "   ", 5)
    with pytest.raises(ValueError):
        widgets.streaming_update(model, tok, "x", 500)


def test_exercise_checks():
    from secbook.exercises import check_latency_prediction, check_reading_rate

    check_latency_prediction(0.1 + 99 * 0.01, 0.1, 0.01, 100)
    with pytest.raises(AssertionError):
        check_latency_prediction(0.1 + 100 * 0.01, 0.1, 0.01, 100)
    check_reading_rate(300 / 60 * 2.0, 2.0)
    with pytest.raises(AssertionError):
        check_reading_rate(300 * 2.0, 2.0)


def test_stream_text_times_follow_the_printed_chunks(tiny):
    model, tok = tiny
    seen = []
    r = apps.stream(model, tok, "import os\n", new_tokens=12, on_text=lambda t, s: seen.append(s), stop_at_eos=False)
    assert r.text_times == seen  # the stamps a printer shows are the recorded ones
    assert r.first_text_s >= r.ttft_s  # text appears when a word is complete, never before the first token


def test_stream_chat_needs_a_chat_template(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="chat template"):
        apps.stream(model, tok, "hello", new_tokens=2, chat=True)


def test_first_sentence_waits_for_the_space_after_the_stop(tiny):
    _, tok = tiny
    ids = tok("Paris is big. It has a river.", add_special_tokens=False).input_ids
    r = apps.StreamResult("q", tok.decode(ids), ids, [0.1 * (i + 1) for i in range(len(ids))])
    f = apps.first_sentence(r, tok)
    assert f["sentence"] == "Paris is big." and f["complete"]
    k = f["tokens"]  # the first prefix whose text has ". " — one token after the full stop at the latest
    assert ". " in tok.decode(ids[:k]) and ". " not in tok.decode(ids[:k - 1]) and f["seconds"] == pytest.approx(0.1 * k)
    one = apps.StreamResult("q", "No stop", ids[:2], [0.1, 0.2])
    assert apps.first_sentence(one, tok)["tokens"] == 2  # no sentence end: the whole reply, when it ended
    with pytest.raises(ValueError):
        apps.first_sentence(apps.StreamResult("q", "", [], []), tok)


def test_voice_budget_from_a_measured_first_sentence():
    df = apps.voice_budget(ttft_s=0.05, tpot_s=0.01, first_phrase_tokens=7, first_phrase_s=0.4).set_index("stage")
    assert df.loc["LLM (first 7 tokens)", "ms"] == pytest.approx(400.0)
    assert df.loc["LLM (first 7 tokens)", "source"].startswith("measured: first sentence")
    assert df["ms"].iloc[-2] == pytest.approx(400 + sum(apps.VOICE_ASSUMPTIONS_MS.values()))
    with pytest.raises(ValueError):
        apps.voice_budget(0.1, 0.01, 3, first_phrase_s=-1)
