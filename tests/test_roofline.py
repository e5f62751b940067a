"""secbook.roofline: the latency model's arithmetic on hand-computed cases, shapes, table, calibration fit."""
import re
from pathlib import Path

import pandas as pd
import pytest

from secbook import roofline
from secbook.roofline import GPUS, Hardware, ModelShape, mbu, predict

TOY_HW = Hardware("toy", bandwidth=1e12, fp16_flops=100e12, memory=80e9, has_bf16=True, cite="none",
                  fp32_flops=10e12)
ONE_B = ModelShape(params=10**9, matmul_params=10**9, kv_per_token=0, attn_dim=0, layers=1, name="1B")


def test_hand_computed_case():
    # bf16: 2 GB of weights. Decode: 2e9 FLOP / 1e14 = 20 us vs 2e9 B / 1e12 B/s = 2 ms -> memory-bound.
    # Prefill of 1000 tokens: 2e12 FLOP / 1e14 = 20 ms vs 2 ms -> compute-bound.
    p = predict(ONE_B, TOY_HW, batch=1, prompt_len=1000, new_tokens=101, bytes_per_weight="bf16")
    assert p.weight_bytes == 2e9
    assert p.tpot_s == pytest.approx(2e-3) and p.decode_bound == "memory"
    assert p.decode_compute_s == pytest.approx(2e-5)
    assert p.ttft_s == pytest.approx(2e-2) and p.prefill_bound == "compute"
    assert p.decode_intensity == pytest.approx(1.0) and p.ridge == pytest.approx(100.0)
    assert p.prefill_intensity == pytest.approx(1000.0)
    assert p.tokens_per_s == pytest.approx(500.0)
    assert p.latency_s == pytest.approx(0.02 + 100 * 0.002)


def test_quantization_shrinks_bytes_not_parameters():
    fp32 = predict(ONE_B, TOY_HW, bytes_per_weight="fp32")
    int4 = predict(ONE_B, TOY_HW, bytes_per_weight="int4")
    assert fp32.weight_bytes == 4e9 and int4.weight_bytes == 0.5e9  # still 1e9 parameters
    assert int4.tpot_s == pytest.approx(fp32.tpot_s / 8)
    assert fp32.ridge == pytest.approx(10.0)  # fp32 math uses the fp32 peak


def test_batch_and_kv_cache_terms():
    s = ModelShape(params=10**9, matmul_params=10**9, kv_per_token=1000, attn_dim=500, layers=1)
    p = predict(s, TOY_HW, batch=2, prompt_len=100, new_tokens=100, bytes_per_weight=2, kv_bytes=2)
    ctx = 150
    assert p.decode_bytes == pytest.approx(2e9 + 2 * ctx * 1000 * 2)
    assert p.decode_flops == pytest.approx(2 * 1e9 * 2 + 4 * 500 * 2 * ctx)
    assert p.prefill_flops == pytest.approx(2 * 1e9 * 2 * 100 + 2 * 500 * 2 * 100 ** 2)
    assert p.tokens_per_s == pytest.approx(2 / p.tpot_s)
    # a big enough batch crosses the ridge point: decode becomes compute-bound
    big = predict(ONE_B, TOY_HW, batch=512, prompt_len=1, new_tokens=2, bytes_per_weight=2)
    assert big.decode_bound == "compute"


def test_predict_rejects_bad_input():
    with pytest.raises(ValueError, match="int4"):
        predict(ONE_B, TOY_HW, bytes_per_weight="int3")
    with pytest.raises(ValueError, match="batch"):
        predict(ONE_B, TOY_HW, batch=0)
    with pytest.raises(ValueError, match="T4"):
        predict(ONE_B, "GTX 480")
    with pytest.raises(TypeError):
        predict(object(), TOY_HW)


def test_shapes_match_built_models(tiny, small_llama, small_qwen):
    for model, _ in (tiny, small_llama, small_qwen):
        n = sum(p.numel() for p in model.parameters())
        assert roofline.shape_from_config(model.config).params == n
        assert roofline.to_shape(model).params == n
    s = roofline.to_shape("replica:llama-3.2-1b")
    assert 1.2e9 < s.params < 1.3e9 and s.kv_per_token == 2 * 16 * 8 * 64
    assert roofline.to_shape(1e9).params == 10**9


def test_gpu_table_facts_and_citations():
    assert not GPUS["T4"].has_bf16 and all(h.has_bf16 for k, h in GPUS.items() if k != "T4")
    assert GPUS["H200"].bandwidth == 4800e9 and GPUS["A100 40GB"].bandwidth == 1555e9
    assert GPUS["H100 SXM"].fp16_flops == 989e12
    bib = (Path(__file__).resolve().parent.parent / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    assert {h.cite for h in GPUS.values()} <= keys
    df = roofline.hardware_table()
    assert len(df) == 7 and (df["ridge_FLOP/B"] > 50).all()
    # batch-1 bf16 decode of a 1B model is memory-bound on every GPU in the table
    for h in GPUS.values():
        assert predict(ONE_B, h, bytes_per_weight=2).decode_bound == "memory"


def test_mbu_hand_case():
    assert mbu(0.01, 1e9, 2e11) == pytest.approx(0.5)
    assert mbu(0.004, 1e9, "A100 80GB SXM") == pytest.approx(1e9 / 0.004 / 2039e9)
    with pytest.raises(ValueError):
        mbu(0.0, 1e9, 1e9)


def test_measure_machine_small():
    hw = roofline.measure_machine(read_mib=16, matmul_n=128, repeats=2, refresh=True)
    assert 1e7 < hw.bandwidth < 1e13  # bytes/s; loose: a shared 2-core machine can be very slow
    assert 1e6 < hw.fp32_flops < 1e16 and 1e6 < hw.fp16_flops < 1e16
    assert hw.ridge(4) == pytest.approx(hw.fp32_flops / hw.bandwidth)


def test_fit_overhead_recovers_line():
    x = [1e6, 1e7, 1e8, 1e9]
    df = pd.DataFrame({"model_bytes": x, "measured_tpot_s": [0.02 + b / 1e10 for b in x]})
    ov, bw = roofline.fit_overhead(df)
    assert ov == pytest.approx(0.02, rel=1e-3) and bw == pytest.approx(1e10, rel=1e-3)


def test_latency_widget_callback():
    import matplotlib

    matplotlib.use("Agg")
    from secbook.widgets import latency_model_update, latency_model_widget

    p, text = latency_model_update(1.0, 4, "T4", 1, 512)
    assert p.weight_bytes == pytest.approx(0.5e9, rel=1e-3) and p.decode_bound == "memory"
    assert "T4" in text and "tokens/s" in text
    with pytest.raises(ValueError, match="bits"):
        latency_model_update(1.0, 0, "T4", 1, 512)
    with pytest.raises(ValueError, match="batch"):
        latency_model_update(1.0, 16, "T4", 0, 512)
    with pytest.raises(ValueError, match="H100 SXM"):
        latency_model_update(1.0, 16, "Voodoo2", 1, 512)
    w = latency_model_widget(extra_hardware={"toy": TOY_HW})
    w.controls["hardware"].value = "toy"  # observe -> update
    w.controls["bits"].value = 32
    p2 = w.update()
    assert p2.hardware == "toy" and p2.weight_bytes == pytest.approx(4e9, rel=1e-3)
    assert "toy" in w.children[2].value


def test_exercise_checks():
    from secbook import exercises

    exercises.check_decode_bound(2039e9 / 14e9)
    exercises.check_ridge_point(989e12 / 3350e9)
    exercises.check_critical_batch(153)
    for check, wrong in ((exercises.check_decode_bound, 1455), (exercises.check_ridge_point, 29.5),
                         (exercises.check_critical_batch, 1)):
        with pytest.raises(AssertionError):
            check(wrong)


def test_calibrate_small_and_describe(tiny):
    specs = [("tiny", {}), ("one layer", "replica:smollm2-135m", {"num_hidden_layers": 1})]
    df = roofline.calibrate(specs, hardware=TOY_HW, prompt_len=4, new_tokens=3, repeats=1, progress=False)
    assert df["model"].tolist() == ["tiny", "one layer"]
    assert (df["measured_tpot_s"] > 0).all()
    # predicted = (weights + KV at mean context) / bandwidth of the given hardware
    kv = (4 + 1.5) * roofline.to_shape(tiny[0]).kv_per_token * 4
    assert df["predicted_tpot_s"].iloc[0] == pytest.approx((df["model_bytes"].iloc[0] + kv) / 1e12)
    assert df["ratio"].iloc[0] == pytest.approx(df["measured_tpot_s"].iloc[0] / df["predicted_tpot_s"].iloc[0])
    assert {"cpu", "torch"} <= set(df.columns)


def test_describe_calibration_text():
    x = [1e7, 1e8, 1e9]
    df = pd.DataFrame({"model": ["a", "b", "c"], "model_bytes": x,
                       "measured_tpot_s": [0.01 + b / 1e10 for b in x]})
    df["predicted_tpot_s"] = df["model_bytes"] / 1e10
    df["ratio"] = df["measured_tpot_s"] / df["predicted_tpot_s"]
    text = roofline.describe_calibration(df)
    assert "a: 10 MB" in text and "overhead-bound" in text.splitlines()[0]
    assert "small factor of its memory bound" in text.splitlines()[2]
    assert "10.0 ms of fixed overhead" in text and "above about 100 MB" in text


def test_a_slow_narrow_path_falls_back_to_fp32():
    """A CPU whose bf16 matmul is an emulation (1 GFLOP/s against 100 fp32) must not predict int4 slower than
    fp32, nor a prefill hundreds of times slower: a kernel can always widen the weights to fp32."""
    cpu = Hardware("slow-bf16 CPU", bandwidth=20e9, fp16_flops=1e9, memory=16e9, has_bf16=True, cite="measured",
                   fp32_flops=100e9, kind="cpu")
    assert cpu.peak_flops(0.5) == 100e9 and cpu.format_path(0.5)[0].startswith("fp32 (widened")
    assert cpu.format_path(4) == ("fp32", 100e9)
    fp32 = predict(ONE_B, cpu, prompt_len=512, bytes_per_weight="fp32")
    for fmt in ("bf16", "int8", "int4"):
        p = predict(ONE_B, cpu, prompt_len=512, bytes_per_weight=fmt)
        assert p.tokens_per_s > fp32.tokens_per_s and p.ttft_s <= fp32.ttft_s
    # where the narrow path is faster (every GPU, a CPU with bf16 units) it is the one used
    assert GPUS["H100 SXM"].format_path(0.5) == ("fp16/bf16", 989e12)
    assert GPUS["H100 SXM"].format_path(1) == ("int8", 1979e12)


def test_measure_machine_device_choice():
    hw = roofline.measure_machine(read_mib=8, matmul_n=64, repeats=1, refresh=True, device="cpu")
    assert hw.name == "this CPU" and hw.kind == "cpu"
    with pytest.raises(ValueError, match="device"):
        roofline.measure_machine(device="tpu")


def test_predicted_vs_measured_rows(tiny):
    model, tok = tiny
    hw = Hardware("toy CPU", bandwidth=10e9, fp16_flops=50e9, memory=16e9, has_bf16=True, cite="none",
                  fp32_flops=50e9, kind="cpu")
    df = roofline.predicted_vs_measured(model, tok, hw, prompt_len=8, new_tokens=3, repeats=1, name="tiny")
    assert list(df["phase"]) == ["prefill (TTFT)", "decode (TPOT)"]
    assert (df["predicted_ms"] > 0).all() and (df["measured_ms"] > 0).all()
    assert df["ratio"].tolist() == pytest.approx((df["measured_ms"] / df["predicted_ms"]).tolist())
    dec = df.iloc[1]
    # MBU is the one definition: bytes a step reads / TPOT / bandwidth; with a KV-free shape it equals bound/measured
    p = predict(model, hw, prompt_len=8, new_tokens=3, bytes_per_weight=4.0)
    assert dec["mbu"] == pytest.approx(mbu(dec["measured_ms"] / 1e3, model, hw, context=9, kv_bytes=4.0))
    assert dec["predicted_ms"] == pytest.approx(1e3 * p.tpot_s)
