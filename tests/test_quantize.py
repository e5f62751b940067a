"""Quantization: round-trip error bounds, packing, QuantLinear, GPTQ vs RTN, model-level swap, bad input."""
import pytest
import torch
from torch import nn

from secbook import quantize as Q


@pytest.fixture(scope="module")
def w():
    return torch.randn(48, 128, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bits", Q.SUPPORTED_BITS)
@pytest.mark.parametrize("scheme", Q.SCHEMES)
@pytest.mark.parametrize("group", [None, 32, "tensor"])
def test_round_trip_error_bound(w, bits, scheme, group):
    q, s, z = Q.quantize_tensor(w, bits, group, scheme)
    assert q.dtype == torch.uint8 and int(q.max()) < 2 ** bits
    err = (Q.dequantize_tensor(q, s, z) - w).abs()
    bound = Q.dequantize_tensor(torch.ones_like(q), s, torch.zeros_like(z))  # each weight's step size
    # round-to-nearest: within half a step (+ fp16 scale rounding); asymmetric: the rounded zero point can
    # shift the grid by half a step, so the extremes may clip by up to one step
    assert bool((err <= (0.5 if scheme == "sym" else 1.0) * bound * 1.01 + 1e-6).all())
    assert float((err / bound).mean()) < 0.3


def test_error_shrinks_with_bits_and_groups(w):
    e = {b: (Q.fake_quantize(w, b, None) - w).norm().item() for b in Q.SUPPORTED_BITS}
    assert e[8] < e[4] < e[3] < e[2]
    assert (Q.fake_quantize(w, 4, 32) - w).norm() < (Q.fake_quantize(w, 4, None) - w).norm()
    assert (Q.fake_quantize(w, 8, None) - w).norm() / w.norm() < 0.01


@pytest.mark.parametrize("bits", Q.SUPPORTED_BITS)
def test_packing_round_trip_and_size(bits):
    q = torch.randint(0, 2 ** bits, (7, 24), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
    p = Q.pack(q, bits)
    assert torch.equal(Q.unpack(p, bits, q.numel()).reshape(q.shape), q)
    assert p.numel() == -(-q.numel() * bits // 8)  # exactly ceil(n·bits/8) bytes here (168 values)


@pytest.mark.parametrize("bits,group,scheme", [(8, None, "sym"), (4, 32, "asym"), (3, 64, "sym"), (2, "tensor", "asym")])
def test_quantlinear_matches_dequantized_matmul(w, bits, group, scheme):
    lin = nn.Linear(128, 48)
    lin.weight.data = w.clone()
    ql = Q.QuantLinear.from_linear(lin, bits, group, scheme)
    x = torch.randn(3, 5, 128)
    ref = x @ Q.fake_quantize(w, bits, group, scheme).T + lin.bias
    assert torch.allclose(ql(x), ref, atol=1e-4)
    assert ql.storage_bytes() < 4 * w.numel() * bits / 32 * 1.2 + 4 * 48 + 48 * 4 * 3


def test_int4_storage_ratio(w):
    lin = nn.Linear(128, 48, bias=False)
    lin.weight.data = w.clone()
    ql = Q.QuantLinear.from_linear(lin, 4, 64, "sym")
    assert ql.storage_bytes() <= 0.3 * 4 * w.numel()


def test_gptq_beats_rtn_on_a_layer(w):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(4096, 128, generator=g) @ torch.randn(128, 128, generator=g)  # correlated inputs
    H = 2 * X.T @ X / len(X)
    for bits in (3, 4):
        q, s, z = Q.gptq_quantize_weight(w, H, bits, 32, "sym")
        e_gptq = (X @ (Q.dequantize_tensor(q, s, z) - w).T).pow(2).mean()
        e_rtn = (X @ (Q.fake_quantize(w, bits, 32) - w).T).pow(2).mean()
        assert e_gptq < 0.8 * e_rtn


def test_awq_not_worse_than_rtn(w):
    g = torch.Generator().manual_seed(2)
    X = torch.randn(512, 128, generator=g)
    X[:, :4] *= 20  # a few salient channels
    q, s, z, ins, alpha = Q.awq_search(w, X, X.abs().mean(0), 3, 32, "sym")
    wq = Q.dequantize_tensor(q, s, z) / ins[None]
    assert (X @ (wq - w).T).pow(2).mean() <= (X @ (Q.fake_quantize(w, 3, 32) - w).T).pow(2).mean() + 1e-9


@pytest.fixture(scope="module")
def mini_qwen():
    """A 2-layer, narrow Qwen2 (q/k/v biases): a second architecture, built in a blink."""
    import secbook
    return secbook.load("replica:qwen2.5-0.5b", num_hidden_layers=2, vocab_size=512, hidden_size=128,
                        intermediate_size=256, num_attention_heads=4, num_key_value_heads=2)


def test_quantize_model_swaps_and_runs(mini_qwen):
    model, tok = mini_qwen
    x = torch.tensor([[1, 2, 3, 4, 5, 6]])
    ref = model(input_ids=x).logits
    qm, rep = Q.quantize(model, bits=8, group_size=64, inplace=False)
    names = [n for n, m in qm.named_modules() if isinstance(m, Q.QuantLinear)]
    assert len(names) == len(rep.layers) == 14 and not any("lm_head" in n for n in names)
    assert torch.allclose(qm(input_ids=x).logits, ref, atol=0.05 * ref.abs().max().item())
    assert rep.ratio < 0.3 and rep.model_bytes_after < rep.model_bytes_before
    with pytest.raises(ValueError, match="divide"):
        Q.quantize(model, bits=4, group_size=96, inplace=False)


def test_gptq_model_level(tiny):
    model, tok = tiny
    calib = torch.randint(0, 4096, (4, 64), generator=torch.Generator().manual_seed(0))
    qm, rep = Q.quantize(model, bits=4, group_size=64, method="gptq", calib=calib, inplace=False)
    assert len(rep.layers) == 42
    assert qm(input_ids=calib[:1]).logits.isfinite().all()


def test_outliers():
    a = torch.ones(64)
    a[[3, 40]] = 50
    assert Q.outlier_channels(a) == [3, 40]


def test_bad_input(w):
    with pytest.raises(ValueError, match="bits"):
        Q.quantize_tensor(w, 5)
    with pytest.raises(ValueError, match="divide"):
        Q.quantize_tensor(w, 4, 48)
    with pytest.raises(ValueError, match="scheme"):
        Q.quantize_tensor(w, 4, 32, "nf")
    with pytest.raises(ValueError, match="no nn.Linear"):
        Q.quantize(nn.Sequential(nn.ReLU()), 8)
    with pytest.raises(ValueError, match="method"):
        Q.quantize(nn.Sequential(nn.Linear(4, 4)), 8, None, method="smoothquant")
    with pytest.raises(ValueError, match="calib"):
        Q.quantize(nn.Sequential(nn.Linear(4, 4)), 8, None, method="gptq")
    with pytest.raises(ValueError, match="mode"):
        Q.bnb_quantize(nn.Linear(4, 4), mode="int3")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Q.torchao_quantize(nn.Sequential(nn.Linear(64, 64)), "int4wo")
    with pytest.raises(ValueError, match="kind"):
        Q.torchao_quantize(nn.Sequential(nn.Linear(64, 64)), "int3")
    with pytest.raises(ValueError, match="cuda|cpu"):
        Q.bnb_quantize(nn.Linear(4, 4), mode="nf4", device="mps")


def test_bnb_missing(monkeypatch):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "bitsandbytes":
            raise ImportError("no module")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        Q.bnb_quantize(nn.Linear(4, 4), mode="nf4")


@pytest.mark.parametrize("method", Q.METHODS)
def test_gpt2_conv1d_layers_quantize(method):
    """GPT-2 stores its projections as transformers' Conv1D ([in, out] weights): every method quantizes them
    (as the nn.Linear each one is), the quantized model runs in HF and in our loop with the same tokens, and
    a first step's logits stay close to the fp32 model's."""
    import copy

    from secbook.families import prompt, tiny_model
    from secbook.generate import fast_generate, hf_generate

    model = tiny_model("gpt2")
    calib = prompt(length=32, batch=2, seed=5)
    q, rep = Q.quantize(copy.deepcopy(model), bits=8, group_size=16, method=method, calib=calib)
    layers = [m for m in q.modules() if isinstance(m, Q.QuantLinear)]
    assert len(layers) == 4 * 2 and len(rep.layers) == 8  # c_attn, c_proj, c_fc, c_proj per block
    assert not any(Q.is_conv1d(m) for m in q.modules())
    ids = prompt()
    with torch.no_grad():
        ref, out = model(ids).logits, q(ids).logits
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert torch.equal(fast_generate(q, ids, 8), hf_generate(q, ids, 8))


def test_linearize_keeps_the_function():
    from secbook.families import prompt, tiny_model

    model = tiny_model("gpt2")
    ids = prompt()
    with torch.no_grad():
        ref = model(ids).logits
        Q.linearize(model)
        assert not any(Q.is_conv1d(m) for m in model.modules())
        torch.testing.assert_close(model(ids).logits, ref, rtol=1e-5, atol=1e-5)
    assert len(Q.linear_layers(model)) == 8
    assert len(Q.linear_layers(Q.dynamic_int8(tiny_model("gpt2")), skip=("lm_head",))) == 0  # all now int8
