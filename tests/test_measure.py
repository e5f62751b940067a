"""secbook.measure: bytes, timing structure, prompts, agreement, perplexity, results files."""
import math
import time
from collections import Counter

import pytest
import torch

from secbook import measure, paths
from secbook.measure import (Timing, model_bytes, peak_memory, prompt_ids, results_frame, time_generation,
                             token_agreement)


def test_model_bytes_fp32_bf16_and_tied():
    lin = torch.nn.Linear(10, 20)
    assert model_bytes(lin) == (200 + 20) * 4
    assert model_bytes(lin.to(torch.bfloat16)) == (200 + 20) * 2
    emb = torch.nn.Embedding(50, 8)
    head = torch.nn.Linear(8, 50, bias=False)
    head.weight = emb.weight  # tied: one storage
    assert model_bytes(torch.nn.ModuleList([emb, head])) == 50 * 8 * 4


class Packed(torch.nn.Module):
    """A fake 4-bit layer: keeps an fp32 copy around but stores 0.5 byte/weight plus one fp16 scale per 64."""

    def __init__(self, n):
        super().__init__()
        self.register_buffer("unpacked", torch.zeros(n))
        self.n = n

    def storage_bytes(self):
        return self.n // 2 + (self.n // 64) * 2


def test_model_bytes_uses_storage_bytes():
    m = torch.nn.Sequential(Packed(4096), torch.nn.Linear(4, 4, bias=False))
    assert model_bytes(m) == 2048 + 128 + 16 * 4


def test_model_bytes_real_quantized_layers():
    lin = torch.nn.Sequential(torch.nn.Linear(256, 512))
    q = torch.ao.quantization.quantize_dynamic(lin, {torch.nn.Linear}, dtype=torch.qint8)
    b = model_bytes(q)
    assert 256 * 512 + 512 * 4 <= b <= 256 * 512 + 512 * 4 + 64  # int8 weight, fp32 bias, one scale
    bnb = pytest.importorskip("bitsandbytes")
    l4 = bnb.nn.Linear4bit(256, 512, bias=False, quant_type="nf4").to("cpu")
    per_weight = model_bytes(l4) / (256 * 512)
    assert 0.5 <= per_weight < 0.6, per_weight  # half a byte plus absmax scales, not 4 bytes


def test_model_bytes_tiny(tiny):
    model, _ = tiny
    n = sum(p.numel() for p in model.parameters())  # tied embedding counted once
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())  # rotary inv_freq
    assert model_bytes(model) == 4 * n + buffers


def fake_generate(log, first=0.3, prefill=0.01, per_token=0.004, slow_call=None):
    """generate_fn with known sleeps: the first call is slow (compile); call number ``slow_call`` too."""
    def fn(ids, n):
        log.append(n)
        if len(log) == 1:
            time.sleep(first)
        elif len(log) == slow_call:
            time.sleep(1.0)
        else:
            time.sleep(prefill + per_token * (n - 1))
        return torch.zeros(ids.shape[0], ids.shape[1] + n, dtype=torch.long)
    return fn


def test_time_generation_structure_warmup_excluded_and_medians():
    log = []
    ids = torch.zeros(2, 5, dtype=torch.long)
    # calls: 1 first (full) + 1 (1-token) + (warmup-1)*2 + repeats*2; make one timed end-to-end call very slow
    slow = 1 + 1 + 2 + 4  # the 2nd timed end-to-end call
    t = time_generation(None, None, new_tokens=11, warmup=2, repeats=5, input_ids=ids,
                        generate_fn=fake_generate(log, slow_call=slow))
    assert isinstance(t, Timing)
    assert len(log) == 1 + 1 + 2 + 2 * 5
    assert log[0] == 11 and log[-2:] == [1, 11]
    assert len(t.ttft_all) == len(t.latency_all) == t.repeats == 5
    assert t.first_call_s >= 0.3 and max(t.latency_all) >= 1.0  # recorded...
    assert t.ttft_s < 0.1 and t.latency_s < 0.3               # ...but neither in the medians
    assert 0.002 < t.tpot_s < 0.02
    assert t.tokens_per_s == pytest.approx(2 / t.tpot_s)  # batch 2
    d = t.as_dict()
    assert d["batch"] == 2 and d["prompt_len"] == 5 and d["new_tokens"] == 11
    assert not any(isinstance(v, list) for v in d.values())


def test_time_generation_checks_token_count():
    with pytest.raises(RuntimeError, match="exactly"):
        time_generation(None, None, new_tokens=4, repeats=1, input_ids=torch.zeros(1, 3, dtype=torch.long),
                        generate_fn=lambda ids, n: torch.zeros(1, 3 + n - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="new_tokens"):
        time_generation(None, None, new_tokens=1, generate_fn=lambda ids, n: ids,
                        input_ids=torch.zeros(1, 3, dtype=torch.long))


def test_time_generation_real_model_exact_tokens(small_llama):
    model, tok = small_llama
    out = measure.hf_generate_fn(model)(prompt_ids(tok, 6), 5)
    assert out.shape == (1, 11)
    t = time_generation(model, tok, prompt_len=6, new_tokens=3, repeats=1)
    assert t.ttft_s > 0 and t.tpot_s > 0 and t.latency_s >= t.ttft_s


def test_prompt_ids_deterministic(tiny):
    _, tok = tiny
    a, b = prompt_ids(tok, 16, batch=3), prompt_ids(tok, 16, batch=3)
    assert a.shape == (3, 16) and a.dtype == torch.long and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
    assert torch.equal(prompt_ids(tok, 16)[0], a[0])
    with pytest.raises(ValueError):
        prompt_ids(tok, 0)


def test_token_agreement():
    assert token_agreement([1, 2, 3, 4], [1, 2, 0]) == pytest.approx(2 / 3)
    assert token_agreement(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 2], [0, 4]])) == 0.75
    with pytest.raises(ValueError):
        token_agreement([], [])
    with pytest.raises(ValueError):
        token_agreement(torch.zeros(2, 3), torch.zeros(3, 3))


def test_perplexity_far_below_unigram(tiny):
    model, tok = tiny
    from secbook.corpus import heldout_text

    ids = tok(heldout_text(max_chars=20000), add_special_tokens=False, verbose=False).input_ids[:2048]
    counts = Counter(ids)
    # unigram perplexity of the text under its own token frequencies (an optimistic baseline)
    entropy = -sum(c / len(ids) * math.log(c / len(ids)) for c in counts.values())
    unigram = math.exp(entropy)
    ppl = measure.perplexity(model, tok, max_tokens=2048)  # text=None: the committed held-out text
    assert ppl < unigram / 3, (ppl, unigram)
    short = measure.perplexity(model, tok, max_tokens=512)
    assert short == pytest.approx(measure.perplexity(model, tok, heldout_text(max_chars=20000), max_tokens=512))


def test_peak_memory_sees_allocation():
    baseline = measure._rss()

    def alloc():
        x = torch.ones(50_000_000)  # 200 MB
        time.sleep(0.05)
        return float(x[0])

    result, peak = peak_memory(alloc)
    assert result == 1.0
    assert peak - baseline > 150e6


def test_results_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    df = results_frame([{"model": "x", "tpot_s": 0.1}, {"model": "y", "tpot_s": 0.2, "cpu": "recorded GPU box"}])
    for col in ("cpu", "cores", "gpu", "torch", "transformers", "timestamp", "load_avg_1m"):
        assert col in df.columns
    assert df["cpu"].iloc[1] == "recorded GPU box"  # an existing label is kept
    path = measure.save_results(df, "unit")
    assert path == tmp_path / "unit.csv" and not list(tmp_path.glob("*.tmp"))
    back = measure.load_results("unit.csv")
    assert list(back["model"]) == ["x", "y"] and back["tpot_s"].iloc[1] == 0.2
    with pytest.raises(ValueError):
        measure.save_results(df, "../escape")
    with pytest.raises(FileNotFoundError, match="unit"):
        measure.load_results("missing")


def test_machine_info():
    info = measure.machine_info()
    assert info["cores"] >= 1 and info["torch"] == torch.__version__
    line = measure.describe_machine(info)
    assert "\n" not in line and str(info["cores"]) in line


def test_tok_s_in_turn():
    """Each function runs once to warm up, then once per round, in turn; a wrong output is an error."""
    from secbook.measure import tok_s_in_turn

    calls = []
    ids = torch.zeros(1, 4, dtype=torch.long)

    def make(name, out):
        def gen(x, n):
            calls.append(name)
            time.sleep(0.001)
            return out
        return gen

    good = torch.ones(1, 6, dtype=torch.long)
    speeds = tok_s_in_turn({"a": make("a", good), "b": make("b", good)}, ids, 2, rounds=3, expect=good)
    assert calls == ["a", "b"] * 4  # warm-up, then 3 rounds in turn
    assert {k: len(v) for k, v in speeds.items()} == {"a": 3, "b": 3}
    assert all(0 < s <= 2 / 0.001 for v in speeds.values() for s in v)  # 2 tokens in at least 1 ms
    with pytest.raises(AssertionError, match="b: its tokens differ"):
        tok_s_in_turn({"a": make("a", good), "b": make("b", good + 1)}, ids, 2, rounds=1, expect=good)
