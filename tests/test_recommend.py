"""recommend(): a small measured sweep, budgets applied, predictions labelled, clear errors."""
import re

import pytest

import secbook
from secbook.pipeline import Dtype, FastDecode, Quantize
from secbook.recommend import choose, default_configs, recommend

FAST = dict(prompt_len=8, new_tokens=3, repeats=1, ppl_tokens=64)
CONFIGS = {"fp32": [], "bf16": [Dtype("bf16")], "fast loop": [FastDecode()]}


def test_recommend_here_meets_budgets(tiny):
    r = recommend(tiny, latency_budget=60.0, quality_budget=1.0, configs=CONFIGS, **FAST)
    t = r.table
    assert list(t["config"]) == list(CONFIGS)
    assert r.best is not None and not r.predicted
    assert r.best["config"] in CONFIGS
    assert r.best["latency_s"] == t.loc[t["meets_both"], "latency_s"].min()  # the fastest within budget
    assert t.loc[t["config"] == "bf16", "size_vs_fp32"].item() < 0.6
    assert t.loc[t["config"] == "fast loop", "ppl_change_pct"].item() == 0  # same weights, same perplexity
    assert "measured here" in r.message and r.best["config"] in r.message
    digits = lambda text: re.findall(r"\d+(?:\.\d+)?", text)
    assert "在本机测量" in r.message_zh and sorted(digits(r.message_zh)) == sorted(digits(r.message))  # same numbers
    # a quality budget of 0 admits only configurations at least as accurate as fp32
    _, fits = choose(t, quality_budget=0.0)
    assert len(fits) >= 2 and (fits["ppl_change_pct"] <= 0).all()
    _, small = choose(t, objective="size")
    assert small.iloc[0]["model_bytes"] == t["model_bytes"].min()
    _, none = choose(t, latency_budget=1e-9)
    assert none.empty
    assert secbook.recommend is recommend


def test_nothing_meets_budget_and_gpu_prediction(tiny):
    g = recommend(tiny, hardware="A100 80GB SXM", configs={"fp32": [], "int4 g64": [Quantize(4, 64)]}, **FAST)
    if g.predicted:
        assert g.table["speed_source"].str.startswith("predicted").all()
        # the roofline bound: fewer bytes per weight → faster on a memory-bound decode
        tps = g.table.set_index("config")["tokens_per_s"]
        assert tps["int4 g64"] > tps["fp32"]
        assert "predicted" in g.message
    r = recommend(tiny, hardware="T4", latency_budget=1e-12, configs={"fp32": []}, **FAST)
    assert r.best is None and "No configuration meets the budget" in str(r)
    assert "没有任何配置满足预算" in r.message_zh


def test_bad_input():
    with pytest.raises(ValueError, match="latency_budget must be a positive number"):
        recommend("tiny", latency_budget=-1)
    with pytest.raises(ValueError, match="quality_budget"):
        recommend("tiny", quality_budget="5%")
    with pytest.raises(ValueError, match="unknown hardware 'TPU v9'"):
        recommend("tiny", hardware="TPU v9", configs={"fp32": []})
    with pytest.raises(ValueError, match="objective"):
        recommend("tiny", objective="cheapest")
    assert "fp32" in default_configs()


def test_collect_results_and_pareto(tmp_path):
    import pandas as pd

    from secbook.recommend import collect_results, pareto_front

    pd.DataFrame({"variant": ["fp32", "int4"], "perplexity": [10.0, 11.0], "decode_tokens_per_s": [5.0, 9.0],
                  "model_bytes": [400, 100], "cpu": "X", "gpu": "none"}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"rung": ["eager", "compiled"], "tok_s": [20.0, 40.0], "gpu": "H100", "cpu": "Y"}).to_csv(
        tmp_path / "b.csv", index=False)
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "no_speed.csv", index=False)
    d = collect_results(tmp_path)
    assert list(d["source"]) == ["a", "a", "b", "b"]
    assert list(d["machine"]) == ["X", "X", "H100", "H100"]
    assert d["ppl_change_pct"].iloc[1] == pytest.approx(10.0)
    pts = pd.DataFrame({"tokens_per_s": [1.0, 2.0, 2.0], "ppl_change_pct": [0.0, 0.0, 5.0],
                        "model_bytes": [10, 10, 10]})
    assert list(pareto_front(pts)) == [False, True, False]


def test_results_normalised_within_one_model_and_one_machine(tmp_path):
    """A perplexity is compared only with the same model's on the same machine; the tiny model's perplexity change
    in the ladder is never lent to another model; each (source, machine, model) has its own Pareto front."""
    import pandas as pd

    from secbook.recommend import GROUP, collect_results, fastest_within, pareto_front

    pd.DataFrame({"variant": ["fp32", "bf16", "fp32", "bf16"], "model": ["tiny", "tiny", "replica", "replica"],
                  "perplexity": [35.0, 35.35, 56000.0, 56560.0], "tokens_per_s": [200.0, 210.0, 50.0, 55.0],
                  "weights_MB": [23.0, 11.5, 538.0, 269.0], "gpu": "H200", "cpu": "Z"}).to_csv(tmp_path / "p.csv",
                                                                                               index=False)
    pd.DataFrame({"rung": ["HF generate fp32 (baseline)", "int8"], "model": ["real", "real"], "tok_s": [12.0, 150.0],
                  "tiny_ppl_change": [0.0, 0.002], "token_agreement": [1.0, 0.9], "cpu": "EPYC",
                  "timestamp": "2026-12-03T01:20:31Z"}).to_csv(tmp_path / "ladder.csv", index=False)
    d = collect_results(tmp_path).set_index(["source", "model", "variant"])
    assert d.loc[("p", "replica", "bf16"), "ppl_change_pct"] == pytest.approx(1.0)  # against the replica's fp32
    assert d.loc[("p", "tiny", "bf16"), "ppl_change_pct"] == pytest.approx(1.0)
    assert d.loc[("p", "tiny", "bf16"), "model_bytes"] == pytest.approx(11.5e6)
    assert pd.isna(d.loc[("ladder", "real", "int8"), "ppl_change_pct"])  # the tiny model's change is not the real one's
    assert d.loc[("ladder", "real", "int8"), "token_agreement"] == 0.9
    assert d.loc[("ladder", "real", "int8"), "timestamp"].startswith("2026-12-03")
    pts = collect_results(tmp_path)
    front = pareto_front(pts, by=GROUP)
    # per group: bf16 is faster, smaller and a little worse, so fp32 and bf16 both stay on each front (across groups
    # the tiny rows would have "beaten" the replica's); the ladder: only int8 (faster; no perplexity for this model)
    assert front.sum() == 4 + 1
    assert not pareto_front(pts).loc[pts["model"] == "replica"].any()  # what mixing models would have said
    acc = pd.DataFrame({"variant": ["fp32", "int8", "dyn8"], "correct": [21, 20, 9], "tokens_per_s": [12.0, 150, 70],
                        "model_bytes": [540, 140, 140]})
    assert list(fastest_within(acc, "correct", 2).variant) == ["int8", "fp32"]
    assert pareto_front(acc, quality="correct", higher_quality_is_better=True).tolist() == [True, True, False]
    with pytest.raises(ValueError, match="not in the table"):
        fastest_within(acc, "accuracy", 1)


def test_sweep_in_turn(tiny):
    from secbook.recommend import sweep

    df = sweep(*tiny, configs=CONFIGS, rounds=2, **FAST)
    rounds = df.attrs["rounds"]
    assert list(rounds) == list(CONFIGS) and all(len(v) == 2 for v in rounds.values())
    assert df.set_index("config").loc["bf16", "tokens_per_s"] == pytest.approx(sum(rounds["bf16"]) / 2)
