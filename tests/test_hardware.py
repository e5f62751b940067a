"""Device and dtype selection (GPU mocked at the torch.cuda boundary), precision facts, the static decoder."""
import pytest
import torch

from secbook import hardware as hw


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hw, "mps_available", lambda: False)


def fake_gpu(monkeypatch, capability, name="Fake GPU"):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: name)


def test_cpu_only_picks_cpu_and_refuses_cuda(no_gpu):
    assert hw.pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        hw.pick_device("cuda")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        hw.pick_dtype("cuda")


def test_cpu_dtype_follows_bf16_instructions(no_gpu, monkeypatch):
    monkeypatch.setattr(hw, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert hw.pick_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(hw, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert hw.pick_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(hw, "cpu_flags", lambda: {"avx2", "fma"})
    assert hw.pick_dtype("cpu") == torch.float32
    assert hw.pick_dtype("cpu", prefer="bf16") == torch.bfloat16  # explicit override wins on CPU
    assert hw.pick_dtype("auto", prefer=torch.float32) == torch.float32


def test_t4_class_gpu_gets_fp16_and_refuses_bf16(monkeypatch):
    fake_gpu(monkeypatch, (7, 5), "Tesla T4")
    assert hw.pick_device("auto") == torch.device("cuda")
    assert hw.pick_dtype("auto") == torch.float16
    assert not hw.supports_bf16("cuda")
    with pytest.raises(ValueError, match=r"Tesla T4 \(compute capability 7\.5\) has no bf16"):
        hw.pick_dtype("cuda", prefer="bf16")
    assert hw.pick_dtype("cuda", prefer="fp32") == torch.float32


def test_ampere_gpu_gets_bf16(monkeypatch):
    fake_gpu(monkeypatch, (8, 0), "A100")
    assert hw.pick_dtype("cuda") == torch.bfloat16
    assert hw.pick_dtype("cuda", prefer="bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        hw.pick_device("cuda:3")


def test_apple_gpu_gets_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hw, "mps_available", lambda: True)
    assert hw.pick_device("auto") == torch.device("mps")
    assert hw.pick_dtype("auto") == torch.float16


def test_unknown_dtype_and_device():
    with pytest.raises(ValueError, match="unknown dtype"):
        hw.pick_dtype("cpu", prefer="fp8x")
    with pytest.raises(ValueError, match="unsupported device"):
        hw.pick_device("xla")


def test_describe_is_one_table(no_gpu):
    df = hw.describe()
    assert df.loc["CUDA GPU", "here"] == "none"
    assert df.loc["best device", "here"] == "cpu"
    assert int(df.loc["CPU cores usable", "here"]) >= 1
    assert {"SDPA back-ends", "bitsandbytes", "flash-attn package"} <= set(df.index)


def test_fp16_overflow_and_formats():
    r = hw.fp16_overflow_demo(300.0)
    assert r["fp32"] == 90000.0 and r["fp16"] == float("inf") and 89000 < r["bf16"] < 91000
    assert hw.fp16_overflow_demo(100.0)["fp16"] == 10000.0
    f = hw.float_formats()
    assert f.loc["fp16", "max"] == 65504.0 and f.loc["bf16", "max"] > 3e38 and f.loc["bf16", "eps"] == 2 ** -7


def test_static_decoder_matches_generate(tiny):
    model, tok = tiny
    ids = tok("import os\n\ndef walk(path):\n", return_tensors="pt").input_ids
    ref = model.generate(ids, max_new_tokens=10, min_new_tokens=10, do_sample=False)
    out = hw.StaticDecoder(model, batch=1, max_len=64).generate(ids, 10)
    assert torch.equal(out, ref)
    with pytest.raises(ValueError, match="CUDA"):
        dec = hw.StaticDecoder(model, 1, 64)
        dec.prefill(ids)
        dec.capture()
    with pytest.raises(ValueError, match="CUDA"):
        hw.cuda_graph_benchmark(model, ids)


def test_count_ops_is_deterministic(tiny):
    model, tok = tiny
    ids = tok("x = 1\n", return_tensors="pt").input_ids
    n = hw.count_ops(model, ids)
    assert n > 10 * model.config.num_hidden_layers and n == hw.count_ops(model, ids)


def test_precision_table_bf16_halves_weights(tiny):
    from secbook.corpus import heldout_text

    model, tok = tiny
    df = hw.precision_table(model, tok, heldout_text(4000), dtypes=("fp32", "bf16"), autocast=None,
                            new_tokens=2, max_tokens=128)
    assert df.loc["bf16", "weights_MB"] == pytest.approx(df.loc["fp32", "weights_MB"] / 2)
    assert abs(df.loc["bf16", "perplexity_change_%"]) < 5  # bf16 changes the output, but little
    assert (df["ms_per_token"] > 0).all()
    assert next(model.parameters()).dtype == torch.float32  # the original is untouched
    rounds = df.attrs["rounds"]  # timed in turn: one tokens/s per round and variant, the median in the table
    assert set(rounds) == {"fp32", "bf16"} and all(len(v) == 3 for v in rounds.values())
    assert df.loc["fp32", "tokens_per_s"] == pytest.approx(sorted(rounds["fp32"])[1])


def test_dtype_in_turn_on_our_loop(tiny):
    from secbook.measure import prompt_ids

    model, tok = tiny
    df = hw.dtype_in_turn(model, prompt_ids(tok, 8), dtypes=("fp32", "bf16"), new_tokens=4, rounds=2)
    assert list(df.index) == ["fp32", "bf16"]
    assert df.loc["bf16", "weights_MB"] == pytest.approx(df.loc["fp32", "weights_MB"] / 2)
    assert df.loc["fp32", "identical"] and df.loc["fp32", "vs_first"] == 1.0
    assert 0 <= df.loc["bf16", "token_agreement"] <= 1 and (df["tokens_per_s"] > 0).all()
    assert all(len(v) == 2 for v in df.attrs["rounds"].values())
    assert len(df.attrs["tokens"]["bf16"][0]) == 4 and df.round(2).shape == df.shape  # plain lists: pandas copies them
    assert next(model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="distinct dtype"):
        hw.dtype_in_turn(model, prompt_ids(tok, 8), dtypes=("fp32", "float32"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need an NVIDIA GPU")
def test_cuda_graph_replay_matches_eager(tiny):
    model, tok = tiny
    m = model.to("cuda")
    try:
        ids = tok("def f(x):\n", return_tensors="pt").input_ids.cuda()
        df = hw.cuda_graph_benchmark(m, ids, new_tokens=8)
        assert df.loc["static cache, CUDA graph (manual)", "token_agreement_vs_eager"] == 1.0
        assert df.loc['torch.compile(mode="reduce-overhead")', "token_agreement_vs_eager"] == 1.0
    finally:
        model.to("cpu")


def test_gpu_cells_on_cpu_say_what_they_would_do(no_gpu, tmp_path, monkeypatch, capsys):
    import pandas as pd

    import secbook.paths

    monkeypatch.setattr(secbook.paths, "RESULTS_DIR", tmp_path)  # written results
    monkeypatch.setattr(secbook.paths, "SHIPPED_RESULTS_DIR", tmp_path / "shipped")  # none shipped either
    assert hw.gpu_only("time CUDA graphs", "cuda_graphs") is False
    out = capsys.readouterr().out
    assert "would time CUDA graphs" in out and "No GPU run of 'cuda_graphs' has been recorded yet" in out
    pd.DataFrame([{"variant": "eager", "ms_per_token": 1.0, "gpu": "Tesla T4", "timestamp": "t"}]).to_csv(
        tmp_path / "hardware_cuda_graphs_cuda.csv", index=False)
    pd.DataFrame([{"variant": "fp32", "gpu": "none", "timestamp": "t"}]).to_csv(
        tmp_path / "hardware_precision_cpu.csv", index=False)
    df = hw.recorded_gpu_results("cuda_graphs")
    assert len(df) == 1 and "Recorded on Tesla T4" in capsys.readouterr().out
    assert df.attrs["where"].startswith("Tesla T4 (t)")
    assert hw.recorded_gpu_results("precision") is None  # a CPU recording is not a GPU result


def test_bench_hardware_is_a_cli_command():
    from secbook.cli import build_parser

    args = build_parser().parse_args(["bench-hardware", "--models", "tiny", "--no-tp", "--new-tokens", "4"])
    assert args.models == ["tiny"] and args.no_tp and args.new_tokens == 4 and callable(args.func)


def test_bench_hardware_measures_the_real_model_when_fetched(monkeypatch):
    from secbook import bench, pretrained

    monkeypatch.setattr(pretrained, "is_fetched", lambda: True)
    assert bench.hardware_models() == ("tiny", pretrained.NAME)
    monkeypatch.setattr(pretrained, "is_fetched", lambda: False)
    assert bench.hardware_models() == ("tiny", "replica:smollm2-135m")
