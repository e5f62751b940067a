"""secbook.engines: the same weights in GGUF / CTranslate2 / ONNX Runtime GenAI, one greedy generate per engine, and
the engines suite. The engines themselves are optional (`make engines`): tests that need one skip without it; the
GGUF writing needs only the `gguf` package, which is always installed."""
import json

import numpy as np
import pytest
import torch

from secbook import paths
from secbook.engines import EngineMissing, PACKAGES, formats, installed, require, runners, suite


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache folder, so conversions made by a test never touch the real one."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    return tmp_path / "cache"


def test_quant_formats_are_computed_from_gguf():
    import gguf

    df = formats.quant_formats().set_index("format")
    bpw = df["bits per weight"]
    assert bpw["F32"] == 32 and bpw["Q8_0"] == 8.5 and bpw["Q4_0"] == 4.5 and bpw["Q4_1"] == 5.0
    assert bpw["Q4_K"] == 4.5 and df.loc["Q4_K", "weights per block"] == 256
    for name, row in df.iterrows():
        block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
        assert (row["weights per block"], row["bytes per block"]) == (block, nbytes)


def _rope_half(x, theta):
    """transformers' rotary embedding: dimension i is paired with i + d/2."""
    d = x.shape[-1]
    cos, sin = np.cos(np.concatenate([theta, theta])), np.sin(np.concatenate([theta, theta]))
    rot = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
    return x * cos + rot * sin


def _rope_pairs(x, theta):
    """llama.cpp's (normal) rotary embedding: dimensions 2i and 2i + 1 form a pair."""
    out = x.copy()
    a, b = x[..., 0::2], x[..., 1::2]
    out[..., 0::2] = a * np.cos(theta) - b * np.sin(theta)
    out[..., 1::2] = a * np.sin(theta) + b * np.cos(theta)
    return out


def test_rotary_row_permutation_turns_transformers_rope_into_llama_cpp_rope():
    rng = np.random.default_rng(0)
    heads, d, cols = 3, 8, 5
    w, x = rng.standard_normal((heads * d, cols)), rng.standard_normal(cols)
    theta = 7.0 * 10000.0 ** (-np.arange(d // 2) * 2 / d)  # position 7
    hf = _rope_half((w @ x).reshape(heads, d), theta)
    cpp = _rope_pairs((formats._permute_rotary(w, heads) @ x).reshape(heads, d), theta)
    assert np.allclose(formats._permute_rotary(hf.reshape(-1, 1), heads).reshape(heads, d), cpp)
    assert not np.allclose(_rope_pairs((w @ x).reshape(heads, d), theta), cpp)  # the permutation matters


def test_tiny_gguf_holds_the_hf_weights_and_tokenizer(cache, tiny):
    import gguf

    model, tok = tiny
    path = formats.gguf_file("tiny", "F32")
    assert path.is_relative_to(cache) and formats._fresh(path, formats._fingerprint(
        formats._weights_file(formats.source_dir("tiny"))))
    reader = gguf.GGUFReader(path)
    f = {k: v.contents() for k, v in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    cfg = model.config
    assert f["llama.block_count"] == cfg.num_hidden_layers and f["llama.attention.head_count_kv"] == 2
    assert f["general.file_type"] == gguf.LlamaFileType.ALL_F32
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == cfg.vocab_size
    assert reader.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    t = {x.name: np.array(x.data) for x in reader.tensors}
    assert "output.weight" not in t  # tied: llama.cpp uses the token embedding as the output layer
    sd = model.state_dict()
    assert np.array_equal(t["token_embd.weight"], sd["model.embed_tokens.weight"].numpy())
    assert np.array_equal(t["blk.1.ffn_down.weight"], sd["model.layers.1.mlp.down_proj.weight"].numpy())
    q = sd["model.layers.0.self_attn.q_proj.weight"].numpy()
    assert np.array_equal(t["blk.0.attn_q.weight"], formats._permute_rotary(q, cfg.num_attention_heads))
    assert formats.gguf_read_bytes(path) == sum(v.nbytes for v in t.values())


def test_gguf_conversions_are_cached_and_redone_when_the_source_changes(cache, tmp_path):
    src = tmp_path / "tiny"
    src.mkdir()
    for f in formats.source_dir("tiny").iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    q8 = formats.gguf_file(str(src), "Q8_0")
    assert q8.parent == cache / "tiny" / "engines"
    assert formats.gguf_tensor_types(q8) == {"Q8_0": 43, "F32": 13}
    q4 = formats.gguf_file(str(src), "Q4_0")
    assert formats.gguf_tensor_types(q4) == {"Q8_0": 1, "Q4_0": 42, "F32": 13}  # the embedding stays Q8_0
    assert formats.gguf_read_bytes(q4) < formats.gguf_read_bytes(q8)
    stamp = q8.stat().st_mtime_ns
    assert formats.gguf_file(str(src), "Q8_0") == q8 and q8.stat().st_mtime_ns == stamp  # cached
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # a new source file: converted again
    formats.gguf_file(str(src), "Q8_0")
    assert json.loads(formats._record(q8).read_text())["mtime_ns"] == weights.stat().st_mtime_ns
    assert not list(q8.parent.glob(".*"))  # nothing half-written left behind
    with pytest.raises(ValueError, match="GGUF kind"):
        formats.gguf_file(str(src), "Q3_X")


def test_requantize_copies_fields_and_rewrites_types(tmp_path):
    import gguf
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    src = tmp_path / "src.gguf"
    wr = gguf.GGUFWriter(src, "llama")
    wr.add_block_count(1)
    wr.add_token_list(["a", "b", "c"])
    wr.add_chat_template("{{ messages }}")
    wr.add_tensor("token_embd.weight", quantize(w, gguf.GGMLQuantizationType.Q8_0),
                  raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    wr.add_tensor("blk.0.attn_q.weight", quantize(w, gguf.GGMLQuantizationType.Q4_1),
                  raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    wr.add_tensor("blk.0.attn_norm.weight", w[0].copy())
    wr.write_header_to_file(); wr.write_kv_data_to_file(); wr.write_tensors_to_file(); wr.close()
    old = {t.name: t for t in gguf.GGUFReader(src).tensors}
    for kind in ("F32", "Q8_0", "Q4_0"):
        tmp = formats.requantize_gguf(src, tmp_path / f"{kind}.gguf", kind)
        r = gguf.GGUFReader(tmp)
        assert r.fields["tokenizer.ggml.tokens"].contents() == ["a", "b", "c"]
        assert r.fields["tokenizer.chat_template"].contents() == "{{ messages }}"
        assert r.fields["llama.block_count"].contents() == 1
        t = {x.name: x for x in r.tensors}
        assert t["blk.0.attn_norm.weight"].tensor_type.name == "F32"
        assert t["blk.0.attn_q.weight"].tensor_type.name == kind
        assert t["token_embd.weight"].tensor_type.name == formats.GGUF_RECIPES[kind][2]
        q = dequantize(t["blk.0.attn_q.weight"].data, t["blk.0.attn_q.weight"].tensor_type)
        exact = dequantize(old["blk.0.attn_q.weight"].data, old["blk.0.attn_q.weight"].tensor_type)
        if kind == "F32":
            assert np.array_equal(q, exact)  # the F32 file holds exactly the dequantized weights
        else:
            assert np.abs(q - exact).max() < 0.5 * np.abs(exact).max() and not np.array_equal(q, exact)
        if kind == "Q8_0":  # already Q8_0: its bytes are copied
            assert np.array_equal(t["token_embd.weight"].data, old["token_embd.weight"].data)


def test_cpu_vector_isa_reads_cpuinfo():
    assert runners.cpu_vector_isa("flags\t: fpu avx2 avx512f avx512_vnni\n") == "AVX-512 VNNI"
    assert runners.cpu_vector_isa("flags\t: fpu avx2 avx512f\n") == "AVX-512"
    assert runners.cpu_vector_isa("flags\t: fpu sse4_2 avx2 fma\n") == "AVX2"
    assert runners.cpu_vector_isa("Features\t: fp asimd evtstrm\n") == "NEON"
    assert runners.cpu_vector_isa("flags\t: fpu sse2\n") == "scalar"


def test_entries_and_missing_engines(monkeypatch):
    assert runners.parse_entries(["hf", "llama:q8_0", "ct2"]) == [
        ("HF generate", "fp32"), ("llama.cpp", "Q8_0"), ("CTranslate2", "float32"), ("CTranslate2", "int8")]
    assert runners.parse_entries(["cpp:int8", "cpp"]) == [("secbook C++ step", "int8"), ("secbook C++ step", "fp32")]
    with pytest.raises(ValueError, match="unknown engine"):
        runners.parse_entries(["tensorrt"])
    with pytest.raises(ValueError, match="no precision"):
        runners.parse_entries(["llama:Q2_K"])
    monkeypatch.setitem(PACKAGES, "CTranslate2", ("no_such_module_here", "ctranslate2", "4.8.5"))
    assert not installed("CTranslate2")
    with pytest.raises(EngineMissing, match="make engines"):
        require("CTranslate2")
    with pytest.raises(EngineMissing, match="make engines"):
        formats.ct2_dir("tiny")
    assert suite._available([("HF generate", "fp32"), ("CTranslate2", "int8")], lambda s: None) == [
        ("HF generate", "fp32")]


class _Parrot(runners.Runner):
    """Answers every question with the text it is given (to check the scoring, not a model)."""
    engine, precision = "parrot", "-"

    def __init__(self, tok, answer):
        self.tok, self.answer = tok, answer

    def generate(self, ids, n, eos=None):
        return self.tok(self.answer(ids), add_special_tokens=False)["input_ids"][:n] + [eos]


def test_question_accuracy_scores_replies():
    from secbook import pretrained, tasks

    if not pretrained.is_fetched():
        pytest.skip(f"the real model is not fetched (run `{pretrained.REPAIR}`)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pretrained.model_dir())
    by_prompt = {tuple(pretrained.chat_ids(tok, q.prompt)[0].tolist()): q.answers[0] for q in tasks.QUESTIONS}
    right = _Parrot(tok, lambda ids: f"It is {by_prompt[tuple(ids)]}.")
    assert suite.question_accuracy(right, tok, max_new_tokens=64) == (len(tasks.QUESTIONS), len(tasks.QUESTIONS))
    assert suite.question_accuracy(_Parrot(tok, lambda ids: "I do not know."), tok) == (0, len(tasks.QUESTIONS))


def _fast_entries():
    """Our entries and every installed engine's fp32 entry, plus llama.cpp Q8_0 (conversions of the tiny model)."""
    out = [("HF generate", "fp32"), ("secbook C++ step", "fp32")]
    for engine, precision in (("llama.cpp", "F32"), ("llama.cpp", "Q8_0"), ("CTranslate2", "float32"),
                              ("ONNX Runtime GenAI", "fp32")):
        if installed(engine):
            out.append((engine, precision))
    return out


@pytest.fixture(scope="module")
def tiny_run():
    """One short comparison on the tiny model: our entries and the installed engines' cheap ones."""
    from secbook import kernels

    entries = _fast_entries()
    if not kernels.available():
        entries.remove(("secbook C++ step", "fp32"))
    return entries, suite.run(models=("tiny",), entries=entries, rounds=2, new_tokens=8, threads=1, progress=False)


def test_engines_suite_on_the_tiny_model(tiny_run):
    """Every fp32 entry reproduces HF generate's greedy tokens; the row has what the CSV promises."""
    entries, df = tiny_run
    assert len(df) == len(entries) and set(zip(df["engine"], df["precision"])) == set(entries)
    fp32 = df[df["bits"] == 32]
    assert fp32["tokens_match_hf"].all() and (fp32["token_agreement"] == 1).all(), \
        df[["label", "tokens_match_hf", "token_agreement"]]
    assert (df["decode_tok_s"] > 0).all() and (df["ttft_s"] > 0).all()
    assert (df["decode_tok_s_min"] <= df["decode_tok_s_max"]).all()
    assert all(len(s.split(";")) == 2 for s in df["decode_tok_s_rounds"])
    hf = df.set_index("label").loc["HF generate fp32"]
    assert hf["weight_bytes_per_token"] == pytest.approx(4 * 5.77e6, rel=0.01)
    assert hf["mbu"] == pytest.approx(hf["implied_GB_s"] / hf["read_bandwidth_GB_s"])
    assert df["task_accuracy"].isna().all()  # the tiny model has no chat template: no question set
    assert df["cpu_isa"].iloc[0] == runners.cpu_vector_isa() and df["vector_path"].str.len().gt(0).all()
    for col in ("cpu", "cores", "timestamp"):
        assert col in df
    view = suite.table(df)
    assert list(view["decode tok/s"]) == sorted(view["decode tok/s"], reverse=True)
    # engines of one process group were timed in turn together (other groups ran in processes of their own)
    together = {e: ", ".join(dict.fromkeys(x[0] for x in g)) for g in suite.process_groups(entries) for e in g}
    assert list(df["timed_with"]) == [together[e] for e in zip(df["engine"], df["precision"])]


def test_engines_that_slow_each_other_down_get_processes_of_their_own():
    entries = [("HF generate", "fp32"), ("CTranslate2", "int8"), ("secbook C++ step", "int8"), ("llama.cpp", "Q8_0"),
               ("ONNX Runtime GenAI", "int4"), ("another engine", "fp32")]
    assert suite.process_groups(entries) == [
        [("HF generate", "fp32"), ("secbook C++ step", "int8"), ("llama.cpp", "Q8_0")], [("CTranslate2", "int8")],
        [("ONNX Runtime GenAI", "int4")], [("another engine", "fp32")]]
    assert suite.process_groups([]) == []


def test_report_reads_a_recorded_comparison(tiny_run, tmp_path, monkeypatch):
    """Without the engines the chapter shows the recorded CSV: written, read back, labelled, plotted, judged."""
    import matplotlib

    matplotlib.use("Agg")
    from secbook.engines import report
    from secbook.measure import save_results

    _, df = tiny_run
    for folder in ("RESULTS_DIR", "SHIPPED_RESULTS_DIR"):
        monkeypatch.setattr(paths, folder, tmp_path / folder)
    monkeypatch.setattr("secbook.engines.missing", lambda: ["llama.cpp"])
    none, why = report.comparison(model="tiny")
    assert none is None and "make engines" in why and "no comparison is recorded" in why
    save_results(df, suite.RESULTS)
    rec, why = report.comparison(model="tiny")
    assert len(rec) == len(df) and "recorded" in why and df["cpu"].iloc[0] in why
    assert rec["tokens_match_hf"].dtype == bool and report.rounds_of(rec, "tiny") == report.rounds_of(df, "tiny")
    pairs = [p for p in report.MATCHED if set(p) <= set(rec["label"])]
    sentences = report.verdict(rec, "tiny")
    assert len(sentences) == len(pairs) and all("MB of weights" in s for s in sentences)
    for ours, theirs in pairs:
        f = report.split(rec, "tiny", ours, theirs)
        assert f["speed"] == pytest.approx(f["bytes"] * f["rate"])
    assert len(report.plot(rec, "tiny")) == 2


def test_report_sentences_in_chinese_carry_the_english_numbers(monkeypatch):
    """The comparison's sentence and the verdict, in Chinese (report.about_zh, report.verdict_zh), from the same
    frame as the English ones and with the same numbers."""
    import re

    import pandas as pd

    from secbook.engines import report

    monkeypatch.setattr("secbook.engines.missing", lambda: ["llama.cpp"])
    rows = [dict(model="m", label=label, decode_tok_s_rounds=rounds, decode_tok_s=speed, weight_bytes_per_token=b,
                 implied_GB_s=b * speed / 1e9, mbu=b * speed / 8e9, cpu="CPU X", cores=2, cpu_isa="AVX2",
                 timestamp="2026-01-02T03:04", load_avg_1m=1.5, rounds=3, new_tokens=32, threads=2)
            for label, rounds, speed, b in (("secbook C++ step fp32", "8;9;10", 9.0, 538e6),
                                            ("llama.cpp F32", "9;12;7", 9.0, 538e6),
                                            ("secbook C++ step int8", "20;21;22", 21.0, 135e6),
                                            ("llama.cpp Q8_0", "30;31;33", 31.0, 143e6))]
    df = pd.DataFrame(rows)
    nums = lambda s: sorted(re.findall(r"\d+(?:[.,]\d+)*", s))  # noqa: E731
    en, zh = report.verdict(df, "m"), report.verdict_zh(df, "m")
    assert len(en) == len(zh) == 2 and all(nums(a) == nums(b) for a, b in zip(en, zh))
    assert "wins mostly because" in en[1] and "胜出" in zh[1]
    live = df.copy()
    live.attrs["live"] = True
    assert report.about(df).startswith("The engines are not installed") and "recorded" in report.about(df)
    assert report.about(live).startswith("Measured live") and report.about(None).endswith("engines`).")
    for frame in (df, live, None):
        assert nums(report.about(frame)) == nums(report.about_zh(frame))
    assert "MBU above 100 %" not in " ".join(en)
    fast = df.assign(mbu=[1.06, 0.98, 0.7, 0.5])  # read faster than the run's bandwidth probe
    en, zh = report.verdict(fast, "m"), report.verdict_zh(fast, "m")
    assert "MBU above 100 % (secbook C++ step fp32)" in en[0] and "超过 100 %" in zh[0] and "100 %" not in en[1]
    assert all(nums(a) == nums(b) for a, b in zip(en, zh))
    groups = live.assign(timed_with=["HF generate, llama.cpp", "HF generate, llama.cpp", "CTranslate2", "CTranslate2"])
    assert "Groups: HF generate, llama.cpp; CTranslate2" in report.about(groups) and "分组" in report.about_zh(groups)


def test_llama_cpp_reads_the_tiny_tokenizer(tiny):
    if not installed("llama.cpp"):
        pytest.skip("llama.cpp is not installed (make engines)")
    _, tok = tiny
    r = runners.LlamaCppRunner("tiny", "F32", threads=1, max_len=64)
    text = "The quick brown fox, 42 times: don't stop!"
    assert r.llm.tokenize(text.encode(), add_bos=False) == tok(text)["input_ids"]
    r.close()


def test_bench_engines_command(capsys):
    from secbook.cli import main

    assert main(["bench", "--suite", "engines", "--models", "tiny", "--engines", "hf", "--repeats", "1",
                 "--new-tokens", "3", "--threads", "1", "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "HF generate fp32" in out and "machine:" in out
    assert main(["bench", "--suite", "engines", "--engines", "tensorrt", "--no-save"]) == 2
    assert main(["bench", "--models", "tiny", "--no-save"]) == 2  # engines-suite flags on another suite
    assert main(["bench", "--suite", "engines", "--batch", "2", "--no-save"]) == 2


def test_engines_stay_out_of_the_default_set_up():
    """`make test`/`make book` never build llama.cpp: the engines have their own requirements file and target."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    default = (root / "requirements.txt").read_text()
    pins = (root / "requirements-engines.txt").read_text()
    for module, package, pin in PACKAGES.values():
        assert package not in default and f"{package}=={pin}" in pins
    make = (root / "Makefile").read_text()
    targets = {line.split(":")[0]: line.split(":", 1)[1] for line in make.splitlines()
               if line and not line.startswith(("\t", "#", " ")) and ":" in line and "=" not in line.split(":")[0]}
    assert "engines" in targets and "-DGGML_NATIVE=ON" in make
    for target in ("test", "book", "setup", "unit"):
        assert "engines" not in targets[target]
