"""recommend(): a small measured sweep, budgets applied, predictions labelled, clear errors."""
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
