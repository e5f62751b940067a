"""Chapter 3.1 glue: the evaluator matches measure.perplexity, the compression panel's callback, the
exercise checks, and the sweep grid."""
import pytest
import torch

from secbook import compress as C


def test_evaluate_matches_measure_perplexity(tiny):
    from secbook.measure import perplexity

    model, tok = tiny
    ids = C.eval_ids(tok, 600)
    ppl, agree, ref = C.evaluate(model, ids)
    assert ppl == pytest.approx(perplexity(model, tok, tok.decode(ids), max_tokens=600), rel=1e-3)
    ppl2, agree2, _ = C.evaluate(model, ids, ref)
    assert agree2 == 1.0 and ppl2 == pytest.approx(ppl)


def test_compression_update_runs_and_validates():
    from secbook.widgets import compression_update

    row, text = compression_update("rtn", 4, 64, "sym", eval_tokens=256)
    assert row["perplexity"] > 1 and "rtn int4 g64" in text
    row2, _ = compression_update("magnitude 2:4", eval_tokens=256)
    assert "2:4" in row2["variant"] and row2["bytes"] > row["bytes"]
    for kw in ({"method": "smoothquant"}, {"bits": 5}, {"group_size": 48}, {"scheme": "nf4"}, {"sparsity": 0.99}):
        with pytest.raises(ValueError):
            compression_update(**kw)


def test_int8_exercise_check():
    from secbook.exercises import check_int8_per_channel

    def good(w):
        s = w.abs().amax(1) / 127
        return torch.round(w / s[:, None]).to(torch.int8), s

    def per_tensor(w):
        s = w.abs().max() / 127
        return torch.round(w / s).to(torch.int8), s.repeat(1)

    check_int8_per_channel(good)
    with pytest.raises(AssertionError):
        check_int8_per_channel(per_tensor)
    with pytest.raises(AssertionError):
        check_int8_per_channel(lambda w: (w / (w.abs().amax(1, keepdim=True) / 127), w.abs().amax(1) / 127))


def test_sweep_grid():
    v = C.variants()
    labels = [C.label(s) for s in v]
    assert len(set(labels)) == len(labels)
    assert {s["family"] for s in v} >= {"fp32", "rtn", "gptq", "awq", "bnb", "dynamic_int8", "torchao", "prune", "structured"}
    with pytest.raises(ValueError, match="family"):
        C.build_variant({"family": "hashing"})
