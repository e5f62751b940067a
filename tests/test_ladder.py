"""The optimization ladder (secbook.ladder): rungs, the suite's rows and CSV merge, plots, summaries, drafts."""
import pytest
import torch

from secbook.generate import hf_generate
from secbook.measure import prompt_ids


def test_generate_suite_rows_and_merge(monkeypatch, tmp_path):
    """A short real ladder on the tiny model: side-by-side rows, lossless rungs agree 100%, speculative rungs
    carry their acceptance rate; a full run replaces the model's earlier rows, a partial one only its rungs."""
    import types

    import pandas as pd

    from secbook import paths
    from secbook.ladder import LADDER, run_generate_suite, save_ladder

    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    pick = {"HF generate fp32 (baseline)", "our loop fp32, fused weights", "speculative, student draft, gamma=1",
            "prompt lookup, gamma=4"}
    args = types.SimpleNamespace(model="tiny", prompt_len=16, new_tokens=12, repeats=1)
    df = run_generate_suite(args, rungs=[r for r in LADDER if r.name in pick], save=True)
    assert list(df["rung"]) == [r.name for r in LADDER if r.name in pick]
    assert df["speedup"].iloc[0] == 1.0 and (df["token_agreement"] == 1.0).all()
    assert df["acceptance_rate"].iloc[2:].between(0, 1).all() and df["acceptance_rate"].iloc[:2].isna().all()
    assert (df["judged"].iloc[2:] >= df["accepted"].iloc[2:]).all()  # α = accepted ÷ judged can be checked
    assert df["acceptance_rate"].iloc[2:].tolist() == pytest.approx((df["accepted"] / df["judged"]).iloc[2:].tolist())
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
    from secbook.ladder import int8_gemv_rates

    r = int8_gemv_rates(rows=256, in_features=64, n_weights=2, repeats=1)
    from secbook import kernels

    assert len(r) == (6 if kernels.available() else 4) and all(v > 0 for v in r.values())
    assert ("int8 weight-only (compiled)", "from memory (many)") in r
    with pytest.raises(ValueError):
        int8_gemv_rates(rows=0)
    r = int8_gemv_rates(rows=256, in_features=64, n_weights=2, repeats=1, compiled=False)  # no torch.compile
    assert len(r) == (4 if kernels.available() else 2)
    assert not any(kind.startswith("int8 weight-only") for kind, _ in r)


def test_gemv_layouts_small():
    from secbook.ladder import gemv_layouts

    r = gemv_layouts(256, 128, repeats=3)
    assert set(r["layouts"]) == {"[out, in]  F.linear(x, W)", "[in, out]  x @ W_t"}
    assert all(v["GB/s"] > 0 for v in r["layouts"].values()) and r["speedup_transposed"] > 0
    with pytest.raises(ValueError):
        gemv_layouts(0, 8)


def test_int8_self_draft_keeps_target_tokens(tiny):
    """Speculative decoding with the target's own dynamic-int8 copy as the draft: the fp32 target's tokens,
    and a draft that is right most of the time."""
    from secbook.ladder import draft_for
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
    from secbook.ladder import draft_for
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
    from secbook.ladder import LADDER

    assert {r.name for r in LADDER if r.cpu_only} == {
        "speculative, int8 student on the C++ step, gamma=2", "speculative, int8 self-draft on the C++ step, gamma=8",
        "our loop int8, C++ kernel + compile", "our loop int8, C++ kernel", "int8, whole decode step in C++",
        "fp32, whole decode step in C++", "speculative, all on the C++ step: fp32 target, int8 self-draft, gamma=8",
        "our loop dynamic int8 (torch.ao)", "our loop dynamic int8 + compile"}


def test_plot_ladder_labels_the_machine():
    """One panel per model, stacked; the title names the GPU the rows were recorded on, else the CPU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from secbook.ladder import plot_ladder

    rows = pd.DataFrame({"model": ["a", "a", "b"], "rung": ["HF generate fp32 (baseline)", "x", "y"],
                         "tok_s": [1.0, 2.0, 3.0], "speedup": [1.0, 2.0, 1.0], "token_agreement": [1.0, 1.0, 0.5],
                         "gpu": ["NVIDIA H200"] * 3, "cpu": ["some CPU"] * 3, "cores": [16] * 3})
    fig = plot_ladder(rows)
    assert len(fig.axes) == 2 and fig._suptitle.get_text() == "recorded on NVIDIA H200"
    assert fig.axes[0].get_position().y0 > fig.axes[1].get_position().y1  # stacked, one column
    plt.close(fig)
    fig = plot_ladder(rows.assign(gpu="none", timestamp="2026-12-03T01:20:31Z"))
    assert fig._suptitle.get_text() == "recorded 2026-12-03 on some CPU, 16 cores"
    plt.close(fig)
    with pytest.raises(ValueError):
        plot_ladder(rows.assign(tok_s=float("nan")))
    with pytest.raises(ValueError, match="'c'"):
        plot_ladder(rows, models=["c"])


def test_plot_ladder_sorted_and_readable():
    """Rungs sorted by speed, fastest on top; labels at least 8 pt in a figure no wider than a page allows, so
    they stay legible at page width; ``models`` picks the panels; bars coloured by kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from secbook.ladder import KIND_COLOURS, plot_ladder

    rows = pd.DataFrame({"model": ["m"] * 5 + ["n"], "tok_s": [10.0, 30.0, 80.0, 20.0, 40.0, 5.0],
                         "rung": ["HF generate fp32 (baseline)", "ours fp32", "ours int4", "ours bf16", "lookup", "z"],
                         "transform": ["none", "none", "int4wo", "bf16", "none", "none"],
                         "loop": ["hf", "ours", "ours", "ours", "lookup", "hf"],
                         "speedup": [1.0, 3.0, 8.0, 2.0, 4.0, 1.0], "token_agreement": [1.0, 1.0, 0.5, 0.9, 1.0, 1.0],
                         "cpu": ["c"] * 6, "cores": [2] * 6})
    fig = plot_ladder(rows, models=["m"])
    assert len(fig.axes) == 1 and fig.get_figwidth() <= 10
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    by_y = [lab for _, lab in sorted(zip(ax.get_yticks(), labels))]
    top_to_bottom = by_y  # the y axis is inverted: the smallest y is drawn on top
    assert ax.yaxis_inverted() and top_to_bottom == ["ours int4", "lookup", "ours fp32", "ours bf16",
                                                      "HF generate fp32 (baseline)"]
    assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= 8
    assert all(t.get_fontsize() >= 8 for t in ax.texts)
    colours = {lab: bar.get_facecolor() for lab, bar in zip(by_y, sorted(ax.patches, key=lambda b: b.get_y()))}
    assert colours["HF generate fp32 (baseline)"] == matplotlib.colors.to_rgba(KIND_COLOURS["HF generate"])
    assert colours["lookup"] == matplotlib.colors.to_rgba(KIND_COLOURS["speculation (same tokens)"])
    assert colours["ours int4"] == matplotlib.colors.to_rgba(KIND_COLOURS["other weights (bf16, int8, int4)"])
    plt.close(fig)


def test_ladder_summary_picks_from_the_rows():
    """Best lossless = fp32 weights, all tokens equal, our loops only; best within budget = |tiny ppl| <= 1%."""
    import pandas as pd

    from secbook.ladder import ladder_summary

    rows = pd.DataFrame({
        "model": ["m"] * 5, "tok_s": [10.0, 30.0, 50.0, 80.0, 40.0],
        "rung": ["HF generate fp32 (baseline)", "ours fp32", "ours bf16", "ours int4", "lookup"],
        "transform": ["none", "none", "bf16", "int4wo", "none"], "loop": ["hf", "ours", "ours", "ours", "lookup"],
        "token_agreement": [1.0, 1.0, 0.9, 0.5, 1.0], "tiny_ppl_change": [0.0, 0.0, 0.001, 0.05, 0.0],
        "speedup": [1.0, 3.0, 5.0, 8.0, 4.0], "mbu": [0.1, 0.3, 0.5, 0.6, 0.2], "bandwidth_max_GBs": [100.0] * 5,
        "acceptance_rate": [None, None, None, None, 0.5], "judged": [None, None, None, None, 12]})
    text = ladder_summary(rows)
    assert "m: HF generate 10.0 tok/s" in text and "best lossless loop: ours fp32 3.00x (MBU 30.0%)" in text
    assert "best within 1% ppl: ours bf16 5.00x (ppl +0.10%" in text  # int4 is faster but outside the budget
    assert "lookup: 4.00x HF, agreement 1.00, acceptance 0.50" in text  # "lookup" is no ladder rung: no own loop
    rows.loc[4, "rung"] = "prompt lookup, gamma=4"
    rows.loc[1, "rung"] = "our loop fp32, fused weights"
    text = ladder_summary(rows)
    assert ("prompt lookup, gamma=4: 4.00x HF, 1.33x its own loop (our loop fp32, fused weights), agreement 1.00, "
            "acceptance 0.50") in text


def test_ladder_summary_mbu_above_one_and_unchecked_acceptance():
    """A rung that read its weights faster than the run's memory bandwidth (a model in the CPU's caches) gets no
    MBU share above 100%, but words that say why; an acceptance rate is printed only from rows that record the
    drafts the target judged (the definition α = accepted ÷ judged can then be checked)."""
    import pandas as pd

    from secbook.ladder import ladder_summary

    rows = pd.DataFrame({
        "model": ["m"] * 3, "tok_s": [10.0, 120.0, 40.0],
        "rung": ["HF generate fp32 (baseline)", "fp32, whole decode step in C++", "prompt lookup, gamma=4"],
        "transform": ["none"] * 3, "loop": ["hf", "cpp", "lookup"], "token_agreement": [1.0] * 3,
        "tiny_ppl_change": [0.0] * 3, "speedup": [1.0, 12.0, 4.0], "mbu": [0.1, 1.21, 0.2],
        "bandwidth_max_GBs": [30.0] * 3, "read_bytes_per_token": [23e6] * 3, "acceptance_rate": [None, None, 0.5]})
    text = ladder_summary(rows)
    assert "121" not in text and "MBU 1" not in text
    assert "its 23 MB of weights came from the CPU's caches, so MBU does not apply" in text
    assert "acceptance" not in text  # no judged count recorded
    text = ladder_summary(rows.assign(judged=[None, None, 10.0]))
    assert "prompt lookup, gamma=4: 4.00x HF" in text and text.endswith("acceptance 0.50")


def test_speculative_rows_are_compared_with_their_own_loop():
    """A speculative rung's own loop is the same target loop without speculation; its speed-up over it is taken
    within one run (same model and timestamp), never across runs; values already recorded are kept."""
    import pandas as pd

    from secbook.ladder import LADDER, own_loop, with_own_loop_speedup

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
    from secbook.ladder import LADDER_QUESTION, ladder_prompt

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

    from secbook import kernels, ladder, pretrained
    from secbook.ladder import LADDER, _generate_fn, ladder_prompt

    if not pretrained.is_fetched():
        pytest.skip("the real model is not fetched: run `python -m secbook fetch` (or make fetch) once")
    import secbook

    # the two C++ self-draft rungs share one int8 draft: build it once (it takes seconds for a 135M model)
    monkeypatch.setattr(ladder, "draft_for", functools.lru_cache(ladder.draft_for))
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


def test_versus_record_agrees_or_says_which_way():
    """The recorded ratio is taken within one run and set beside the live one; agreement within the live range
    (plus the tolerance), otherwise the direction; a missing rung is a clear error."""
    import pandas as pd

    from secbook.claims import Comparison
    from secbook.ladder import recorded_ratio, versus_record

    rows = pd.DataFrame({"model": ["m"] * 4, "timestamp": ["t1", "t1", "t2", "t2"], "cpu": ["c"] * 4,
                         "cores": [2] * 4, "gpu": ["none"] * 4, "rung": ["base", "fast", "base", "other"],
                         "tok_s": [10.0, 30.0, 99.0, 1.0]})
    r, label = recorded_ratio(rows, "m", "fast", "base")
    assert r == 3.0 and label == {"machine": "c, 2 cores", "date": "t1"}  # the base of its own run, not t2's
    assert versus_record(rows, "m", "fast", "base", Comparison("fast", "base", (2.8, 3.1, 2.9))).endswith(
        ": the two agree.")
    assert versus_record(rows, "m", "fast", "base", Comparison("fast", "base", (1.1, 1.2, 1.3))).endswith(
        "a smaller gain than recorded.")
    assert versus_record(rows, "m", "fast", "base", Comparison("fast", "base", (5.0, 6.0, 5.5))).endswith(
        "a larger gain than recorded.")
    noisy = versus_record(rows, "m", "fast", "base", Comparison("fast", "base", (0.5, 3.0, 6.0)))
    assert "scatter too widely to confirm or contradict" in noisy and "agree" not in noisy
    with pytest.raises(ValueError, match="no recorded row 'x'"):
        recorded_ratio(rows, "m", "x", "base")
    with pytest.raises(ValueError, match="in the run of t2"):
        recorded_ratio(rows, "m", "other", "missing")


def test_chinese_summary_and_record_sentences_follow_the_english():
    """ladder_summary_zh and versus_record_zh (the Chinese sentences of say(..., zh=...)) carry the English ones'
    numbers, and the same verdict, from the same rows."""
    import re

    import pandas as pd

    from secbook.claims import Comparison
    from secbook.ladder import ladder_summary, ladder_summary_zh, versus_record, versus_record_zh

    nums = lambda s: sorted(re.findall(r"\d+(?:[.,]\d+)*", s))  # noqa: E731
    rows = pd.DataFrame({
        "model": ["m"] * 4, "tok_s": [10.0, 120.0, 50.0, 40.0], "timestamp": ["t1"] * 4, "cpu": ["c"] * 4,
        "cores": [2] * 4, "gpu": ["none"] * 4,
        "rung": ["HF generate fp32 (baseline)", "fp32, whole decode step in C++", "ours bf16",
                 "prompt lookup, gamma=4"],
        "transform": ["none", "none", "bf16", "none"], "loop": ["hf", "cpp", "ours", "lookup"],
        "token_agreement": [1.0, 1.0, 0.9, 1.0], "tiny_ppl_change": [0.0, 0.0, 0.001, 0.0],
        "speedup": [1.0, 12.0, 5.0, 4.0], "mbu": [0.1, 1.21, 0.5, 0.2], "bandwidth_max_GBs": [30.0] * 4,
        "read_bytes_per_token": [23e6] * 4, "acceptance_rate": [None, None, None, 0.5],
        "judged": [None, None, None, 10]})
    en, zh = ladder_summary(rows), ladder_summary_zh(rows)
    assert nums(en) == nums(zh) and len(en.splitlines()) == len(zh.splitlines())
    assert "MBU 不适用" in zh and "接受率 0.50" in zh
    verdicts = {"the two agree.": "两者一致。", "a smaller gain than recorded.": "收益比记录的更小。",
                "a larger gain than recorded.": "收益比记录的更大。", "run it again on a quiet machine).": "再运行一次）。"}
    for ratios in ((11.5, 12.1, 11.9), (1.1, 1.2, 1.3), (15.0, 16.0, 15.5), (0.5, 3.0, 6.0)):
        live = Comparison("fast", "base", ratios)
        en = versus_record(rows, "m", "fp32, whole decode step in C++", "HF generate fp32 (baseline)", live)
        zh = versus_record_zh(rows, "m", "fp32, whole decode step in C++", "HF generate fp32 (baseline)", live)
        assert nums(en) == nums(zh)
        assert [zh.endswith(z) for e, z in verdicts.items()] == [en.endswith(e) for e in verdicts]
