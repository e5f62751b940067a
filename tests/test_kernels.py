"""secbook::int8_linear, our C++ int8 kernel: the same numbers as its PyTorch reference, close to the fp32
product, fused layers, the decode loop's tokens, and its error messages; the whole-step C++ decoder on every
architecture it runs (Llama, Qwen2, Qwen3, Mistral); and the vector paths (AVX-512, AVX2, plain loops) against
each other.

The kernel is compiled on first use. These tests skip only where there is no C++ compiler at all; where one
exists (CI) a failed build fails them. Besides the native build they build one forced path (AVX2 on an AVX-512
CPU, else the plain loops); SECBOOK_TEST_ALL_SIMD=1 tests every path this CPU can run.
"""
import copy
import os
import platform
import shutil

import pytest
import torch

from secbook import kernels

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="no C++ compiler on this machine")


def test_kernel_builds():
    assert kernels.unavailable_reason() == ""
    assert kernels.available()
    assert kernels.simd_path() in ("avx512-vnni", "avx512", "avx2", "neon", "scalar")
    assert kernels.has_vnni() == (kernels.simd_path() == "avx512-vnni")
    # a compile error in the vector code would make _build fall back to the flags without -march=native, which
    # builds the plain loops instead: the native build must use the widest path this CPU has
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        flags = set()
    if os.environ.get("SECBOOK_SIMD", "native") != "native":
        pass  # the default build was forced to another path
    elif {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= flags:
        assert kernels.simd_path() == "avx512-vnni"
    elif {"avx512f", "avx512bw", "avx512vl"} <= flags:
        assert kernels.simd_path() == "avx512"
    elif {"avx2", "fma"} <= flags:
        assert kernels.simd_path() == "avx2"
    elif platform.machine() in ("aarch64", "arm64"):
        assert kernels.simd_path() == "neon"


def test_simd_argument_is_checked(monkeypatch):
    default = kernels.default_simd()
    assert kernels.available()  # the default build, loaded as torch.ops.secbook
    monkeypatch.setenv("SECBOOK_SIMD", "avx3")
    assert "SECBOOK_SIMD='avx3'" in kernels.unavailable_reason()
    # a different default build asked for once one is loaded: one library per namespace, so refused, saying why
    monkeypatch.setenv("SECBOOK_SIMD", "scalar" if default != "scalar" else "native")
    assert "already loaded" in kernels.unavailable_reason() and "before" in kernels.unavailable_reason()
    monkeypatch.undo()
    assert kernels.available()
    assert "use one of native, avx2, scalar" in kernels.unavailable_reason("avx3")
    with pytest.raises(ValueError, match="avx3"):
        kernels.ops("avx3")
    assert "lacks avx2" in kernels._cpu_cannot_run("avx2", "flags : fpu sse2 fma")
    assert "x86-64" in kernels._cpu_cannot_run("avx2", "Features : neon", machine="aarch64")
    assert kernels._cpu_cannot_run("avx2", "flags : fpu avx2 fma", machine="x86_64") == ""
    assert kernels._cpu_cannot_run("scalar", "", machine="aarch64") == ""


def test_build_is_named_per_cpu():
    """-march=native builds must not be shared between CPUs with different instructions (a shared home
    directory): the build's name carries a tag of the CPU's flags."""
    a = "model name\t: Some CPU\nflags\t\t: fpu sse2 avx2\n"
    b = "model name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
    assert kernels.cpu_tag(a) == kernels.cpu_tag(a) != kernels.cpu_tag(b)
    assert len(kernels.cpu_tag(a)) == 8
    names = {kernels._build_name(simd, ns) for simd in ("native", "avx2") for ns in ("secbook", "secbook_avx2")}
    assert len(names) == 4 and all(n.endswith(kernels.cpu_tag()) for n in names)


# K not a multiple of 32 (masked tail) or of 256 (short last chunk), N not a multiple of 8, several rows of x
@pytest.mark.parametrize("M,N,K", [(1, 3072, 576), (1, 5, 70), (3, 577, 1536), (32, 64, 600), (2, 13, 31)])
def test_kernel_matches_reference_and_fp32(M, N, K):
    g = torch.Generator().manual_seed(M * 1000 + N + K)
    w = torch.randint(-128, 128, (N, K), dtype=torch.int8, generator=g)
    s = torch.rand(N, generator=g) / 100
    x = torch.randn(M, K, generator=g) * 3
    x[0, K // 2] = 40.0  # an outlier: it sets its chunk's scale
    y = kernels.int8_linear(x, w, s)
    ref = kernels.int8_linear_reference(x, w, s)
    fp32 = (x.double() @ w.double().T * s.double()).float()
    assert y.shape == (M, N)
    # the same integer sums; only the order of the final fp32 additions differs
    assert (y - ref).abs().max() <= 1e-5 * ref.abs().max()
    # the int16 rounding of the activations: ~1e-5 of the output's scale
    assert (y - fp32).abs().max() <= 2e-4 * fp32.abs().max()


def test_kernel_keeps_leading_shape_and_rejects_bad_input():
    w = torch.randint(-128, 128, (16, 64), dtype=torch.int8)
    s = torch.rand(16)
    x = torch.randn(2, 3, 64)
    assert kernels.int8_linear(x, w, s).shape == (2, 3, 16)
    assert torch.equal(kernels.int8_linear(torch.zeros(1, 64), w, s), torch.zeros(1, 16))
    with pytest.raises(RuntimeError, match="int8"):
        kernels.int8_linear(x, w.float(), s)
    with pytest.raises(RuntimeError, match="inputs"):
        kernels.int8_linear(torch.randn(1, 63), w, s)
    with pytest.raises(RuntimeError, match="scale"):
        kernels.int8_linear(x, w, torch.rand(15))


def test_quantize_activations_error_bound():
    x = torch.randn(3, 600, generator=torch.Generator().manual_seed(0)) * torch.logspace(-2, 2, 600)
    q, sx = kernels.quantize_activations(x)
    assert q.dtype == torch.int16 and q.shape == (3, 3, 256) and sx.shape == (3, 3)
    assert (q.abs().amax(-1) == 32767).all()  # each chunk's largest value maps to the top of the int16 range
    back = (q.float() * sx[..., None]).reshape(3, -1)[:, :600]
    step = sx.repeat_interleave(256, -1)[:, :600]
    # within half a step (plus the fp32 rounding of x / step, up to 2^-8 steps near 32767); errors do occur
    assert ((back - x).abs() <= (0.5 + 0.01) * step).all()
    assert ((back - x).abs() > 0.1 * step).any()


def test_int8_linear_from_quant_linear_and_fuse(small_qwen):
    """Int8Linear holds the QuantLinear's integers; q/k/v fused (Qwen2 biases) = the three layers."""
    from secbook.linears import fuse_linears
    from secbook.quantize import QuantLinear

    model, _ = small_qwen
    a = model.model.layers[0].self_attn
    qls = [QuantLinear.from_linear(m, bits=8, group_size=None) for m in (a.q_proj, a.k_proj, a.v_proj)]
    ks = [kernels.Int8Linear.from_quant_linear(q) for q in qls]
    x = torch.randn(1, 4, model.config.hidden_size)
    for q, k in zip(qls, ks):
        ref = q(x)
        assert (k(x) - ref).abs().max() <= 1e-4 * ref.abs().max()
    fused = fuse_linears(ks)
    assert type(fused) is kernels.Int8Linear and fused.out_features == sum(k.out_features for k in ks)
    assert torch.equal(fused(x), torch.cat([k(x) for k in ks], -1))  # the same per-row arithmetic
    with pytest.raises(ValueError, match="per-channel"):
        kernels.Int8Linear.from_quant_linear(QuantLinear.from_linear(a.q_proj, bits=8, group_size=16))
    with pytest.raises(ValueError, match="quantize it first"):
        kernels.use_int8_kernel(copy.deepcopy(model))
    on_meta = copy.deepcopy(model).to("meta")  # stands in for a GPU: any device but the CPU is refused
    with pytest.raises(ValueError, match="CPU only"):
        kernels.use_int8_kernel(on_meta)


def test_int8_kernel_decode_equals_hf_generate(tiny):
    """The tiny model on the kernel: our loop, eager and compiled, gives HF generate's tokens on the same
    model, and its held-out perplexity stays within 0.1% of the pure-PyTorch int8 weight-only model's."""
    from secbook.generate import FastGenerator, StaticDecoder, hf_generate
    from secbook.ladder import apply_transform
    from secbook.measure import perplexity, prompt_ids

    model, tok = tiny
    k = apply_transform(copy.deepcopy(model), "int8k")
    assert isinstance(k.lm_head, kernels.Int8Linear) and isinstance(k.model.layers[0].mlp.down_proj,
                                                                    kernels.Int8Linear)
    assert isinstance(StaticDecoder(k, max_len=24).decoder.layers[0].qkv, kernels.Int8Linear)
    ids = prompt_ids(tok, 8)
    ref = hf_generate(k, ids, 10)
    assert torch.equal(FastGenerator(k, max_len=24).generate(ids, 10), ref)
    assert torch.equal(FastGenerator(k, max_len=24, compile=True).generate(ids, 10), ref)
    torch._dynamo.reset()
    wo = apply_transform(copy.deepcopy(model), "int8wo")
    p_k, p_wo = perplexity(k, tok, max_tokens=512), perplexity(wo, tok, max_tokens=512)
    assert abs(p_k / p_wo - 1) < 1e-3


def test_interleaved_ab_suite(capsys, monkeypatch, tmp_path):
    """`bench --suite ab`: our loop under two transforms of the tiny model, timed in turn; the kernel's tokens
    agree with the pure-PyTorch int8 model's; rows merge by (model, transform); a bad transform is one line."""
    import pandas as pd

    from secbook import paths
    from secbook.cli import main
    from secbook.ladder import interleaved_tok_s

    df = interleaved_tok_s("tiny", ("int8wo", "int8k", "int8k-cpp"), rounds=2, prompt_len=8, new_tokens=6,
                           compile=False)
    assert list(df["transform"]) == ["int8wo", "int8k", "int8k-cpp"] and (df["tok_s"] > 0).all()
    assert df["ratio"].iloc[0] == 1.0 and df["token_agreement"].iloc[0] == 1.0
    assert (df["token_agreement"] == 1.0).all()  # ~1e-5 apart: the same greedy tokens on the tiny model
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    pd.DataFrame({"model": ["tiny", "tiny"], "transform": ["none", "int8k"], "tok_s": [1.0, 2.0]}).to_csv(
        tmp_path / "generate_ab.csv", index=False)
    from secbook.ladder import save_ladder

    save_ladder(df, "generate_ab", key=("model", "transform"))
    merged = pd.read_csv(tmp_path / "generate_ab.csv")
    assert sorted(merged["transform"]) == ["int8k", "int8k-cpp", "int8wo", "none"] and 2.0 not in set(merged["tok_s"])
    capsys.readouterr()  # drop the progress bars above
    assert main(["bench", "--suite", "ab", "--model", "tiny", "--transforms", "int8wo", "int3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "int3" in err and "int8k" in err


def test_check_int32_chunk(capsys):
    """The chapter's exercise check: 512 products fit an int32 sum; the int8-activation count does not pass."""
    from secbook import exercises

    exercises.check_int32_chunk(512)
    assert "Correct" in capsys.readouterr().out
    assert 256 * 128 * 32767 < 2 ** 31 - 1 < 513 * 128 * 32767  # the kernel's chunk is safe, 513 would not be
    for wrong in (256, 513, 132104):
        with pytest.raises(AssertionError):
            exercises.check_int32_chunk(wrong)


def odd_llama():
    """A 2-layer Llama with shapes that fill no block evenly: 72 inputs (not a multiple of 32), head_dim 24 (not
    a multiple of 16: the plain attention loop), 45 MLP rows (gate/up pairs not a multiple of 4), 4101 vocabulary
    rows (not a multiple of 8)."""
    import secbook

    return secbook.load("replica:smollm2-135m", num_hidden_layers=2, hidden_size=72, num_attention_heads=3,
                        num_key_value_heads=1, head_dim=24, intermediate_size=45, vocab_size=4101)


@pytest.mark.parametrize("weights", ["int8k", "fp32"])
@pytest.mark.parametrize("fixture", ["tiny", "small_llama", "small_qwen", "odd"])
def test_cpp_decoder_matches_python_loop(fixture, weights, request):
    """The whole decode step in C++ (CppDecoder) against our PyTorch loop over the same weights (our Int8Linear,
    or the model's own fp32 ones): prefill logits, the KV cache it writes, and three teacher-forced decode steps
    agree to rounding (the Qwen2 replica checks the q/k/v biases, the replicas grouped-query attention, "odd"
    the padding of blocks)."""
    from secbook.generate import StaticDecoder
    from secbook.ladder import apply_transform

    model, _ = odd_llama() if fixture == "odd" else request.getfixturevalue(fixture)
    k = apply_transform(copy.deepcopy(model), "int8k") if weights == "int8k" else model
    py, cpp = StaticDecoder(k, max_len=16), kernels.CppDecoder(k, max_len=16)
    assert cpp.weights == ("int8" if weights == "int8k" else "fp32")
    ids = torch.randint(0, k.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(1))
    # int8: ~1e-4 of the largest logit on the Qwen2 replica, the same before and after the first decode step (the
    # int16 rounding of an activation flips where the two loops' fp32 sums differ in the last bit); fp32: ~2e-6
    tol = 3e-4 if weights == "int8k" else 2e-5
    with torch.no_grad():
        steps = [(ids, torch.arange(8))] + [(ids[:, i:i + 1], torch.tensor([8 + i])) for i in range(3)]
        for x, pos in steps:
            a, b = py(x, pos), cpp(x, pos)
            assert a.shape == b.shape
            assert (a - b).abs().max() <= tol * a.abs().max(), (fixture, pos)
    n = 11  # positions written
    for layer in range(k.config.num_hidden_layers):
        # 5e-4: a 1e-7 difference can flip one int16 rounding of the next layer's input (a 3e-5 step)
        for mine, theirs in ((cpp.k_cache, py.k_cache), (cpp.v_cache, py.v_cache)):
            ref = theirs[layer][0, :, :n]
            assert (mine[layer, :, :n] - ref).abs().max() <= 5e-4 * ref.abs().max()
    assert cpp.k_cache[:, :, n:].abs().max() == 0  # nothing written past the last position
    assert cpp.cache_bytes() == sum(t.nbytes for t in py.k_cache + py.v_cache)


def test_cpp_decoder_same_logits_for_any_split(tiny):
    """The packed weights hold one part per core; any number of parts, run on any number of threads, gives
    bit-identical logits (a row's arithmetic does not depend on which core computes it)."""
    from secbook.ladder import apply_transform

    k = apply_transform(copy.deepcopy(tiny[0]), "int8k")
    ids = torch.randint(0, k.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        d = kernels.CppDecoder(k, max_len=16)
        ref = d(ids, torch.arange(8))
        for parts in (1, 3, 5):
            assert torch.equal(kernels.CppDecoder(k, max_len=16, parts=parts)(ids, torch.arange(8)), ref), parts
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert torch.equal(d(ids, torch.arange(8)), ref)
        finally:
            torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="parts"):
        kernels.CppDecoder(k, max_len=16, parts=-1)


def test_cpp_decoder_generates_hf_tokens_and_rejects_bad_input(tiny):
    """FastGenerator(cpp=True) on the tiny int8 model gives HF generate's greedy tokens on the same model, and
    every misuse gets an error that says what to do."""
    from secbook.generate import FastGenerator, StaticDecoder, hf_generate
    from secbook.ladder import apply_transform
    from secbook.measure import prompt_ids

    model, tok = tiny
    k = apply_transform(copy.deepcopy(model), "int8k")
    ids = prompt_ids(tok, 8)
    gen = FastGenerator(k, max_len=24, cpp=True)
    assert torch.equal(gen.generate(ids, 12), hf_generate(k, ids, 12))
    fp32 = FastGenerator(model, max_len=48, cpp=True)  # the fp32 model as it is: HF generate's own tokens
    assert fp32.decoder.weights == "fp32" and fp32.decoder.packed[0].dtype == torch.float32
    assert torch.equal(fp32.generate(prompt_ids(tok, 16), 32), hf_generate(model, prompt_ids(tok, 16), 32))
    with pytest.raises(ValueError, match="int8k"):
        kernels.CppDecoder(apply_transform(copy.deepcopy(model), "bf16"), max_len=24)  # neither int8k nor fp32
    with pytest.raises(ValueError, match="CPU only.*compile=True"):  # any device but the CPU (here: meta)
        kernels.CppDecoder(copy.deepcopy(model).to("meta"), max_len=24)
    with pytest.raises(ValueError, match="batch"):
        kernels.CppDecoder(k, max_len=24, batch=2)
    with pytest.raises(ValueError, match="compile=False"):
        FastGenerator(k, max_len=24, cpp=True, compile=True)
    with pytest.raises(ValueError, match="max_len"):
        gen.generate(prompt_ids(tok, 20), 8)
    with pytest.raises(ValueError, match="consecutive"):
        gen.decoder(ids[:, :2], torch.tensor([0, 2]))
    with pytest.raises(RuntimeError, match="vocabulary"):
        gen.decoder(torch.tensor([[k.config.vocab_size]]), torch.tensor([0]))
    with pytest.raises(RuntimeError, match="do not fit"):
        gen.decoder(ids[:, :2], torch.tensor([23, 24]))
    d = gen.decoder  # the operator itself refuses inputs that do not match instead of reading past them
    args = [ids[0, :1], 0, d.embed, d.norms, d.packed, d.sqkv, d.bqkv, d.so, d.bo, d.sgu, d.bgu, d.sd, d.bd, d.head_s,
            d.cos, d.sin, d.k_cache, d.v_cache, d.n_heads, d.eps, d.scaling, True]
    with pytest.raises(RuntimeError, match="one scale per output row"):
        torch.ops.secbook.llama_step(*args[:5], d.sqkv[:, :-1].contiguous(), *args[6:])
    with pytest.raises(RuntimeError, match="llama_pack"):  # the parts of another split
        torch.ops.secbook.llama_step(*args[:4], d.packed + d.packed, *args[5:])
    with pytest.raises(RuntimeError, match="sliding-window"):
        torch.ops.secbook.llama_step(*args, None, [4])  # one window per layer, not one
    with pytest.raises(RuntimeError, match="qk_norms"):
        torch.ops.secbook.llama_step(*args, d.norms[:, None, :8].contiguous(), [])
    # Llama has no sliding window (Hugging Face's Llama ignores config.sliding_window, and so does the C++ step)
    k.config.sliding_window = 16
    try:
        assert kernels.sliding_windows(k) == [0] * k.config.num_hidden_layers
        StaticDecoder(k, max_len=24)  # nor does our PyTorch loop: it reads windows from the family description
    finally:
        k.config.sliding_window = None
    from secbook.families import tiny_model

    for family in ("gemma3_text", "gpt2"):  # families the C++ step does not run: it names the Python loop
        with pytest.raises(ValueError, match="C\\+\\+ decode step runs.*FastGenerator"):
            kernels.CppDecoder(tiny_model(family), max_len=24)


def test_cpp_decoder_bias_in_some_layers_only(tiny):
    """A bias on one projection of the last layer only (none in layer 0) still reaches the C++ step."""
    from secbook.generate import StaticDecoder

    model = copy.deepcopy(tiny[0])
    q = model.model.layers[-1].self_attn.q_proj
    q.bias = torch.nn.Parameter(torch.randn(q.out_features, generator=torch.Generator().manual_seed(3)))
    py, cpp = StaticDecoder(model, max_len=16), kernels.CppDecoder(model, max_len=16)
    assert cpp.bqkv is not None and cpp.bqkv[0].abs().max() == 0 and cpp.bqkv[-1].abs().max() > 0
    ids = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a, b = py(ids, torch.arange(8)), cpp(ids, torch.arange(8))
    assert (a - b).abs().max() <= 2e-5 * a.abs().max()


# ----------------------------------------------------------------------------- the vector paths against each other
@pytest.fixture(scope="session")
def forced_builds():
    """Builds of the kernels on another vector path than the native build's, which this CPU can run: AVX2 where the
    native build is AVX-512, else the plain loops ("scalar") — one extra build (~10-20 s). With
    SECBOOK_TEST_ALL_SIMD=1: every forced build this CPU can run (avx2 and scalar)."""
    if os.environ.get("SECBOOK_TEST_ALL_SIMD"):
        names = [s for s in ("avx2", "scalar") if not kernels._cpu_cannot_run(s)]
    else:
        names = ["avx2" if kernels.simd_path().startswith("avx512") and not kernels._cpu_cannot_run("avx2")
                 else "scalar"]
    for simd in names:  # where the CPU can run a path, its build must work, and run that path
        assert kernels.unavailable_reason(simd) == ""
        assert kernels.simd_path(simd) == simd
    return names


def test_forced_builds_give_the_same_int8_products(forced_builds):
    """The int8 products are exact integer sums combined in one fixed order: every path gives the native build's
    outputs to the bit (odd shapes: partial pieces, short chunks, fewer than 8 rows left)."""
    g = torch.Generator().manual_seed(5)
    for M, N, K in [(1, 3072, 576), (1, 5, 70), (3, 577, 1536), (2, 13, 31)]:
        w = torch.randint(-128, 128, (N, K), dtype=torch.int8, generator=g)
        s = torch.rand(N, generator=g) / 100
        x = torch.randn(M, K, generator=g) * 3
        y = kernels.int8_linear(x, w, s)
        assert (y - kernels.int8_linear_reference(x, w, s)).abs().max() <= 1e-5 * y.abs().max()
        for simd in forced_builds:
            assert torch.equal(kernels.int8_linear(x, w, s, simd=simd), y), (simd, M, N, K)


@pytest.mark.parametrize("weights", ["int8k", "fp32"])
@pytest.mark.parametrize("fixture", ["tiny", "odd"])
def test_forced_builds_decode_like_the_python_loop(fixture, weights, forced_builds, request):
    """The C++ step on each forced path: logits within the tolerances of test_cpp_decoder_matches_python_loop
    over a prefill and three decode steps, and HF generate's greedy tokens."""
    from secbook.generate import FastGenerator, StaticDecoder, hf_generate
    from secbook.ladder import apply_transform

    model = odd_llama()[0] if fixture == "odd" else request.getfixturevalue(fixture)[0]
    k = apply_transform(copy.deepcopy(model), "int8k") if weights == "int8k" else model
    ids = torch.randint(0, k.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(1))
    steps = [(ids, torch.arange(8))] + [(ids[:, i:i + 1], torch.tensor([8 + i])) for i in range(3)]
    py = StaticDecoder(k, max_len=16)
    with torch.no_grad():
        ref = [py(x, pos) for x, pos in steps]
    tol = 3e-4 if weights == "int8k" else 2e-5
    want = hf_generate(k, ids, 12)
    for simd in forced_builds:
        cpp = kernels.CppDecoder(k, max_len=16, simd=simd)
        assert cpp.simd == simd
        with torch.no_grad():
            for (x, pos), a in zip(steps, ref):
                assert (cpp(x, pos) - a).abs().max() <= tol * a.abs().max(), (simd, pos)
        gen = FastGenerator(k, max_len=20, cpp=True)
        gen.decoder = kernels.CppDecoder(k, max_len=20, simd=simd)
        assert torch.equal(gen.generate(ids, 12), want), simd


# ----------------------------------------------------------------------------- architectures of the C++ step
def random_decoder(arch: str):
    """A 2-layer random model of each architecture the C++ step runs besides Llama, from transformers' own config
    classes: Qwen3 (q/k head norms), Mistral (sliding window of 8 in every layer), Qwen2 with a sliding window in
    its second layer only (layer_types). Norm weights are perturbed from 1, so that a missing norm shows."""
    import transformers

    shapes = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=128)
    torch.manual_seed(0)
    if arch == "qwen3":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**shapes))
    elif arch == "mistral":
        model = transformers.MistralForCausalLM(transformers.MistralConfig(sliding_window=8, **shapes))
    else:
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(use_sliding_window=True, sliding_window=8,
                                                                       max_window_layers=1, **shapes))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


@pytest.mark.parametrize("arch", ["qwen3", "mistral", "qwen2-window"])
def test_cpp_decoder_other_architectures(arch, forced_builds):
    """Qwen3 and Mistral (and Qwen2's per-layer sliding window) on the C++ step: logits within 1e-4 of HF's forward
    over 26 positions (more than three windows of 8), HF generate's greedy tokens on fp32 and int8 weights, on
    the native and the forced paths."""
    from secbook.generate import FastGenerator, hf_generate
    from secbook.ladder import apply_transform

    model = random_decoder(arch)
    d = kernels.CppDecoder(model, max_len=26)
    assert (d.qk_norms is not None) == (arch == "qwen3")
    assert d.windows == {"qwen3": [0, 0], "mistral": [8, 8], "qwen2-window": [0, 8]}[arch]
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(0))
    want = hf_generate(model, ids, 20)
    with torch.no_grad():
        hf = model(want).logits
        assert (d(want, torch.arange(26)) - hf).abs().max() <= 1e-4 * hf.abs().max()
    k = apply_transform(copy.deepcopy(model), "int8k")
    want8 = hf_generate(k, ids, 20)
    for simd in [None] + forced_builds:
        for m, ref in ((model, want), (k, want8)):
            gen = FastGenerator(m, max_len=26, cpp=True)
            if simd:
                gen.decoder = kernels.CppDecoder(m, max_len=26, simd=simd)
            assert torch.equal(gen.generate(ids, 20), ref), (simd, gen.decoder.weights)


def test_cpp_decoder_refuses_other_architectures():
    """A model the C++ step does not run (GPT-2 here) gets an error that names our PyTorch loop instead."""
    import transformers

    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match=r"model_type='gpt2'.*FastGenerator\(model, max_len\) without cpp=True"):
        kernels.CppDecoder(gpt2, max_len=16)
    model = random_decoder("mistral")
    model.config.hidden_act = "gelu"
    with pytest.raises(ValueError, match="SiLU.*FastGenerator"):
        kernels.CppDecoder(model, max_len=16)
