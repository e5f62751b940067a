"""The decoder description (secbook.decoder): every family against transformers, the KV-cache interface
(static, per-sequence positions, a paged cache of the test's own), the fallback for unknown architectures."""
import pytest
import torch

from secbook.decoder import Decoder, StaticCache, UnsupportedModel, describe
from secbook.families import TINY_CONFIGS, logit_error, prompt, tiny_model
from secbook.generate import FastGenerator, StaticDecoder, fast_generate, hf_generate

FAMILIES = list(TINY_CONFIGS)


@pytest.fixture(scope="module")
def models():
    return {}


def get(models, family):
    if family not in models:
        models[family] = tiny_model(family)
    return models[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_logits_and_greedy_tokens_equal_hf(models, family):
    """Logits within 1e-4 of HF's forward (a prefill, then decode steps through our cache, 20 positions: past
    the sliding windows of 6), and the greedy tokens of our loop are HF generate's."""
    model = get(models, family)
    ids = prompt()
    assert logit_error(model, torch.cat([ids, prompt(length=8, seed=2)], 1)) < 1e-4
    assert torch.equal(fast_generate(model, ids, 16), hf_generate(model, ids, 16))


def _windows_off(dec):
    dec.windows = (None,)
    for layer in dec.layers:
        layer.window = None


def _qk_norm_off(dec):
    for layer in dec.layers:
        layer.q_norm = layer.k_norm = None
        layer.__dict__.pop("q_norm", None)


def _plus_one_off(dec):
    for layer in dec.layers:
        layer.attn_norm.weight = layer.attn_norm.weight - 1


def _softcap_off(dec):
    for layer in dec.layers:
        layer.softcap = None


def _positions_off(dec):
    dec.positions = None


def _serial_residual(dec):
    for layer in dec.layers:
        layer.parallel = False


def _heads_not_interleaved(dec):
    for layer in dec.layers:
        layer.interleaved = False


SWITCHES = [("mistral", _windows_off), ("qwen2", _windows_off), ("gemma3_text", _windows_off),
            ("qwen3", _qk_norm_off), ("gemma3_text", _qk_norm_off), ("gemma2", _plus_one_off),
            ("gemma2", _softcap_off), ("gpt2", _positions_off), ("gpt_neox", _serial_residual),
            ("gpt_neox", _heads_not_interleaved)]


@pytest.mark.parametrize("family,switch_off", SWITCHES, ids=[f"{f}-{s.__name__}" for f, s in SWITCHES])
def test_each_family_switch_matters(models, family, switch_off):
    """Turning off what the family's description switches on breaks the agreement with HF (so the test
    above can fail, and the tiny configs do exercise windows, soft-caps and the rest)."""
    model = get(models, family)
    ids = torch.cat([prompt(), prompt(length=8, seed=2)], 1)
    dec = Decoder(model)
    switch_off(dec)
    with torch.no_grad():
        ours = dec(ids, torch.arange(ids.shape[1]), dec.new_cache(1, ids.shape[1]))
        assert (ours - model(ids).logits).abs().max() > 1e-3


def test_descriptions_read_the_config(models):
    s = describe(get(models, "gemma2"))
    assert s.windows == (6, None) and s.attn_softcap == 2.0 and s.final_softcap == 3.0 and s.family.norm_plus_one
    assert s.embed_scale == pytest.approx(64 ** 0.5)
    s = describe(get(models, "gpt_neox"))
    assert s.rotary_dim == 4 and s.parallel_residual and s.n_kv == s.n_heads == 4  # rotary_pct 0.25 of 16
    s = describe(get(models, "qwen2"))
    assert s.windows == (None, 6)  # use_sliding_window from layer max_window_layers=1 on
    assert describe(get(models, "phi3")).rotary_dim == 8 and describe(get(models, "gpt2")).rotary_dim == 0
    assert describe(get(models, "llama")).windows == (None, None)  # Llama has no sliding window


def test_static_cache_masks():
    """Causal rows of the table; a window of w keeps the w latest positions (the query's own included); [B, T]
    positions give one mask per sequence."""
    c = StaticCache(1, 2, 1, 6, 4)
    m = c.mask(torch.tensor([2, 3]))
    assert m.shape == (1, 1, 2, 6)
    assert (m[0, 0] == 0).tolist() == [[True] * 3 + [False] * 3, [True] * 4 + [False] * 2]
    w = c.mask(torch.tensor([4]), window=2)
    assert (w[0, 0, 0] == 0).tolist() == [False, False, False, True, True, False]
    b = c.mask(torch.tensor([[1], [4]]), window=3)
    assert b.shape == (2, 1, 1, 6)
    assert (b[:, 0, 0] == 0).tolist() == [[True, True] + [False] * 4, [False, False, True, True, True, False]]
    assert torch.isinf(m).any() and m.dtype == torch.float32


def test_static_cache_writes_per_sequence_positions():
    c = StaticCache(1, 2, 1, 5, 2)
    k = torch.arange(8.0).reshape(2, 1, 2, 2)
    keys, _ = c.write(0, k, -k, torch.tensor([[0, 1], [3, 4]]))
    assert torch.equal(keys[0, 0, :2], k[0, 0]) and torch.equal(keys[1, 0, 3:], k[1, 0])
    assert keys[0, 0, 2:].abs().sum() == 0 and keys[1, 0, :3].abs().sum() == 0
    c.write(0, k, -k, torch.tensor([2, 3]))  # shared positions: every sequence at 2, 3
    assert torch.equal(c.k[0][:, :, 2:4], k) and torch.equal(c.v[0][:, :, 2:4], -k)


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt2"])
def test_sequences_of_different_lengths_decode_together(models, family):
    """Two prompts of 5 and 9 tokens in one batch: a prefill of 9 positions (the short row's last 4 are padding,
    hidden from its own queries and overwritten later), then decode steps with positions [B, 1] — each row at
    its own position — give each prompt's own greedy tokens from HF generate."""
    model = get(models, family)
    a, b = prompt(length=5, seed=3), prompt(length=9, seed=4)
    n = 10
    dec = Decoder(model)
    cache = dec.new_cache(2, 9 + n)
    with torch.no_grad():
        ids = torch.cat([torch.cat([a, torch.zeros(1, 4, dtype=a.dtype)], 1), b])
        logits = dec(ids, torch.arange(9), cache)
        tok = torch.stack([logits[0, 4].argmax(), logits[1, 8].argmax()])[:, None]
        pos = torch.tensor([[5], [9]])
        out = [tok]
        for _ in range(n - 1):
            tok = dec(tok, pos, cache)[:, -1].argmax(-1, keepdim=True)
            out.append(tok)
            pos = pos + 1
    new = torch.cat(out, 1)
    assert torch.equal(new[0], hf_generate(model, a, n)[0, 5:])
    assert torch.equal(new[1], hf_generate(model, b, n)[0, 9:])


class PagedCache:
    """A toy paged cache written against the interface alone: a pool of blocks per layer, a block table per
    sequence (blocks in shuffled order), keys gathered back into each sequence's logical order."""

    def __init__(self, n_layers, batch, n_kv, head_dim, blocks_per_seq=4, block=4):
        pool = batch * blocks_per_seq + 3
        self.k = [torch.zeros(pool, n_kv, block, head_dim) for _ in range(n_layers)]
        self.v = [torch.zeros(pool, n_kv, block, head_dim) for _ in range(n_layers)]
        self.table = torch.randperm(pool, generator=torch.Generator().manual_seed(0))[:batch * blocks_per_seq]
        self.table = self.table.view(batch, blocks_per_seq)
        self.block, self.S = block, blocks_per_seq * block

    def write(self, layer, k, v, pos):
        B, _, T, _ = k.shape
        pos = pos.expand(B, T) if pos.dim() == 1 else pos
        blocks = self.table.gather(1, pos // self.block)  # [B, T] physical block of each new position
        for b in range(B):
            for t in range(T):
                self.k[layer][blocks[b, t], :, pos[b, t] % self.block] = k[b, :, t]
                self.v[layer][blocks[b, t], :, pos[b, t] % self.block] = v[b, :, t]
        gather = lambda pool: pool[self.table].permute(0, 2, 1, 3, 4).reshape(B, pool.shape[1], self.S, -1)
        return gather(self.k[layer]), gather(self.v[layer])

    def mask(self, pos, window=None):
        s = torch.arange(self.S)
        ok = s <= pos[..., None]
        if window is not None:
            ok &= s > pos[..., None] - window
        m = torch.zeros(ok.shape).masked_fill(~ok, float("-inf"))
        return m[None, None] if pos.dim() == 1 else m[:, None]


@pytest.mark.parametrize("family", ["qwen3", "gemma3_text"])
def test_a_paged_cache_plugs_in(models, family):
    """The decoder runs on any cache with write/mask: a paged one gives the static cache's logits."""
    model = get(models, family)
    ids = torch.cat([prompt(), prompt(length=4, seed=2)], 1)
    s = describe(model)
    dec = Decoder(model)
    static, paged = dec.new_cache(1, 16), PagedCache(s.n_layers, 1, s.n_kv, s.head_dim)
    with torch.no_grad():
        for x, pos in [(ids[:, :12], torch.arange(12))] + [(ids[:, t:t + 1], torch.tensor([t])) for t in range(12, 16)]:
            torch.testing.assert_close(dec(x, pos, paged), dec(x, pos, static), rtol=1e-5, atol=1e-5)


def test_unknown_architecture_falls_back_to_hf_generate(capsys):
    """An architecture no family describes: FastGenerator says so in one line and HF generate does the work;
    the decoder itself refuses with the list of families."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    opt = OPTForCausalLM(OPTConfig(num_hidden_layers=1, hidden_size=32, ffn_dim=64, num_attention_heads=2,
                                   vocab_size=64, max_position_embeddings=64, word_embed_proj_dim=32)).eval()
    ids = prompt(vocab=64, length=6)
    capsys.readouterr()
    gen = FastGenerator(opt, max_len=16)
    err = capsys.readouterr().err.strip()
    assert gen.decoder is None and len(err.splitlines()) == 1 and "'opt'" in err and "model.generate" in err
    assert torch.equal(gen.generate(ids, 8), hf_generate(opt, ids, 8))
    assert torch.equal(fast_generate(opt, ids, 8), hf_generate(opt, ids, 8))
    assert gen.generate(ids, 4, temperature=1.0, seed=0).shape == (1, 10)
    with pytest.raises(ValueError, match="llama.*qwen3.*gemma3_text.*gpt_neox"):
        StaticDecoder(opt, max_len=16)
    with pytest.raises(ValueError, match="generate"):
        gen.prefill(ids)


def test_clear_errors_for_features_outside_the_description(models):
    with pytest.raises(UnsupportedModel, match="bidirectional"):
        describe(tiny_model("gemma3_text", use_bidirectional_attention=True))
    with pytest.raises(UnsupportedModel, match="activation"):
        describe(tiny_model("llama", hidden_act="relu2"))
    with pytest.raises(ValueError, match="learned positions"):  # GPT-2's position table has 128 rows
        StaticDecoder(get(models, "gpt2"), max_len=200)


@pytest.mark.parametrize("family", ["gemma3_text", "gpt2"])
def test_compiled_loop_equals_hf(models, family):
    """torch.compile(fullgraph=True) of the decode step: HF generate's tokens (Gemma 3: two RoPE bases, windows,
    q/k norms; GPT-2: learned positions, LayerNorm, Conv1D weights). scripts check the other families."""
    model = get(models, family)
    ids = prompt()
    gen = FastGenerator(model, max_len=28, compile=True)
    assert torch.equal(gen.generate(ids, 16), hf_generate(model, ids, 16))
    torch._dynamo.reset()


def _imports() -> dict:
    """secbook module -> the secbook modules it imports, at the top or inside a function."""
    import ast
    from pathlib import Path

    import secbook

    root = Path(secbook.__file__).parent
    mods = {p.stem for p in root.glob("*.py")}
    graph = {}
    for p in root.glob("*.py"):
        deps = set()
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom) and (n.level == 1 or (n.module or "").startswith("secbook")):
                name = (n.module or "").removeprefix("secbook").lstrip(".").split(".")[0]
                deps.update([name] if name else [a.name for a in n.names])
            elif isinstance(n, ast.Import):
                deps.update(a.name.split(".")[1] for a in n.names if a.name.startswith("secbook."))
        graph[p.stem] = (deps & mods) - {p.stem}
    return graph


def test_no_import_cycles_and_the_decoder_below_its_consumers():
    """No module imports, even lazily, one that imports it back (generate, kernels and speculative did; hardware
    and parallel did); the decoder description sits below every consumer of its maths."""
    graph = _imports()

    def below(m, seen=None):
        seen = set() if seen is None else seen
        for d in graph[m]:
            if d not in seen:
                seen.add(d)
                below(d, seen)
        return seen

    cycles = [m for m in graph if m in below(m)]
    assert not cycles, {m: sorted(graph[m]) for m in cycles}
    for consumer in ("generate", "kernels", "onnx_export", "hardware", "speculative", "ladder"):
        assert "decoder" in below(consumer) and consumer not in below("decoder")
    assert below("decoder") <= {"linears", "quantize", "corpus", "paths"}


def test_support_table_runs_the_checks():
    """The "which models work" table: one row per family, from real runs (a family the C++ step does not run
    says so, with the reason)."""
    from secbook import kernels
    from secbook.families import support_table

    t = support_table(["llama", "gpt2"], new_tokens=6, compile=False)
    assert list(t.index) == ["llama", "gpt2"] and (t["max_logit_error"] < 1e-4).all()
    for col in ("tokens_equal_hf", "int8_rtn_equal_hf", "pruned_2_4_equal_hf"):
        assert (t[col] == "yes").all(), t[col]
    if kernels.available():
        assert t.loc["llama", "cpp_step"] == "yes"
    assert t.loc["gpt2", "cpp_step"].startswith("no: ") and "compiled_equal_hf" not in t
