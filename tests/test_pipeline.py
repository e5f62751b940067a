"""The pipeline: steps compose on any HF causal LM, each stage is measured, bad input fails clearly."""
import copy

import pytest
import torch

from secbook.measure import model_bytes
from secbook.pipeline import (Compile, Device, DynamicInt8, Dtype, FastDecode, Pipeline, Prune, Quantize, Step,
                              apply_steps, make_step, mermaid, plot_waterfalls, summary)

FAST = dict(prompt_len=8, new_tokens=3, repeats=1, ppl_tokens=64)


def test_measured_pipeline_on_tiny(tiny):
    model, tok = tiny
    before = model_bytes(model)
    p = Pipeline([Quantize(bits=4, group_size=64), FastDecode(), Device("auto")], **FAST)
    out = p.apply(model, tok)
    t = p.table
    assert list(t["stage"]) == [0, 1, 2, 3]
    assert list(t["box"]) == ["input", "model compression", "algorithm optimization", "hardware acceleration"]
    assert model_bytes(model) == before  # the input model is untouched (a copy was transformed)
    assert t["size_vs_input"].iloc[1] < 0.5  # 4-bit linears: well under half the fp32 bytes
    assert t["model_bytes"].iloc[1] == t["model_bytes"].iloc[3] == model_bytes(out)
    assert (t["tokens_per_s"] > 0).all() and (t["perplexity"] > 1).all()
    # the fast loop gives the same greedy tokens as HF generate on the same (quantized) weights
    assert t["agreement"].iloc[2] == t["agreement"].iloc[1]
    assert t["decode_loop"].iloc[2] == "fast loop"
    assert {"cpu", "torch", "timestamp"} <= set(t.columns)
    assert len(summary(t).columns) < len(t.columns)
    fig = plot_waterfalls(t)
    assert len(fig.axes) == 3


def test_steps_work_on_a_second_architecture(small_qwen):
    model, tok = small_qwen
    m = apply_steps(copy.deepcopy(model), tok, [Prune(0.5), Quantize(8, 64), Dtype("bf16"), FastDecode()])
    assert m.secbook_decode == {"compile": False, "mode": None}
    assert any(type(x).__name__ == "QuantLinear" for x in m.modules())
    assert m.model.embed_tokens.weight.dtype == torch.bfloat16
    q = next(x for x in m.modules() if type(x).__name__ == "QuantLinear")
    assert q.scale.dtype == torch.float16  # packed layers keep their stored scales
    ids = torch.tensor([[1, 2, 3]])
    from secbook.pipeline import generate_fn_for
    out = generate_fn_for(m, 8)(ids, 3)
    assert out.shape == (1, 6)


def test_dtype_and_dynamic_int8_on_llama_replica(small_llama):
    model, tok = small_llama
    m = apply_steps(copy.deepcopy(model), tok, [DynamicInt8()])
    assert model_bytes(m) < model_bytes(model)
    with pytest.raises(ValueError, match="DynamicInt8"):
        apply_steps(m, tok, [Dtype("bf16")])


def test_bad_input_gives_clear_errors(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="unknown step 'quantise'"):
        Pipeline(["quantise"])
    with pytest.raises(TypeError, match="must be a secbook.pipeline.Step"):
        Pipeline([42])
    with pytest.raises(TypeError, match="list of steps"):
        Pipeline(Quantize())
    with pytest.raises(ValueError, match="bits"):
        Quantize(bits=5)
    with pytest.raises(ValueError, match="sparsity"):
        Prune(1.5)
    with pytest.raises(ValueError, match="unknown dtype"):
        Dtype("fp12")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            Device("cuda")
    with pytest.raises(ValueError, match=r"step 2 \(rtn int4 g64.*cannot follow DynamicInt8"):
        Pipeline([DynamicInt8(), Quantize(4, 64)], measure=False).apply(model, tok)
    with pytest.raises(ValueError, match="needs calibration text"):
        Pipeline([Quantize(4, 64, method="gptq")], measure=False).apply(model)
    with pytest.raises(TypeError, match="torch model"):
        Pipeline([]).apply("tiny")

    class NotLlama(torch.nn.Module):
        config = type("C", (), {"model_type": "bloom"})()
    with pytest.raises(ValueError, match="decoder knows the families"):
        Pipeline([Compile()], measure=False).apply(NotLlama())


def test_names_and_diagram():
    assert isinstance(make_step("bf16"), Dtype) and make_step("int4").bits == 4
    s = [Quantize(4, 64), Compile(), Device("cpu")]
    assert Pipeline(s).name == "rtn int4 g64 → torch.compile → device cpu"
    text = mermaid(s)
    assert text.startswith("flowchart LR") and "rtn int4 g64" in text and text.count("-->") == 4
    assert issubclass(Pipeline, Step)


def test_pipeline_widget_callback_and_checks(tiny):
    from secbook import exercises
    from secbook.widgets import pipeline_update

    model, tok = tiny
    table = pipeline_update(model, tok, ["bf16"], new_tokens=3, ppl_tokens=64)
    assert list(table["step"]) == ["input model", "bf16"]
    assert table["size_vs_input"].iloc[1] < 0.6
    with pytest.raises(ValueError, match="unknown step"):
        pipeline_update(model, tok, ["int3"])
    with pytest.raises(ValueError, match="new_tokens must be in"):
        pipeline_update(model, tok, ["bf16"], new_tokens=1)
    exercises.check_int4_layer_bytes(768 * 256 // 2 + 768 * 4 * 2)
    with pytest.raises(AssertionError):
        exercises.check_int4_layer_bytes(768 * 256 // 2)
    exercises.check_weight_ratio(8)
    exercises.check_bits_for_claim(1.6)
    with pytest.raises(AssertionError):
        exercises.check_needed_speed(64)
    exercises.check_needed_speed(78.75)


def test_step_by_step_checks_tokens_and_times_in_turn(tiny):
    """Each step is compared token for token with the baseline and timed in turn with the step before it."""
    from secbook.generate import FastGenerator, hf_generate
    from secbook.measure import prompt_ids
    from secbook.pipeline import StepByStep

    model, tok = tiny
    ids = prompt_ids(tok, 8)
    run = StepByStep(ids, new_tokens=4, rounds=2)
    assert run.add("hf", lambda x, n: hf_generate(model, x, n), "baseline", read_bytes=model_bytes(model)) is None
    c = run.add("ours", FastGenerator(model, max_len=12).generate, "our loop")
    assert c.a == "ours" and c.b == "hf" and len(c.ratios) == 2
    lossy = copy.deepcopy(model).to(torch.bfloat16)
    run.add("bf16", FastGenerator(lossy, max_len=12).generate, "bf16 weights")
    t = run.table()
    assert list(t["step"]) == ["hf", "ours", "bf16"]
    assert t["identical_tokens"].iloc[1]  # our loop is lossless
    assert 0 <= t["token_agreement"].iloc[2] <= 1
    assert (t["tokens_per_s"] > 0).all() and t["vs_previous"].iloc[1] == c.median
    assert t["chained_vs_first"].iloc[2] == pytest.approx(c.median * t["vs_previous"].iloc[2])
    assert t["previous_tokens_per_s"].iloc[1] == t["tokens_per_s"].iloc[0]  # the same rounds
    assert t["read_MB_per_token"].iloc[0] == model_bytes(model) / 1e6
    whole = run.overall(rounds=1)
    assert whole.a == "bf16" and whole.b == "hf" and list(run.overall_speeds) == ["hf", "bf16"]
    with pytest.raises(ValueError, match="already added"):
        run.add("ours", FastGenerator(model, max_len=12).generate)
    with pytest.raises(ValueError, match="not 4"):
        run.add("short", lambda x, n: hf_generate(model, x, n - 1))
