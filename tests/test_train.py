"""The corpus split and the tiny-model trainer (on a toy corpus, in seconds)."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from secbook import corpus, train
from secbook.paths import MODELS_DIR


def test_file_list_leaves_out_tests_and_tables():
    files = corpus.stdlib_files()
    assert len(files) > 300
    assert files == sorted(files)
    assert not any(f.startswith(("encodings/", "test/", "pydoc_data/")) or "/test_" in f for f in files)
    assert "os.py" in files and "json/decoder.py" in files


def test_split_is_by_file_and_fixed():
    files = corpus.stdlib_files()
    held = [f for f in files if corpus.is_heldout(f)]
    assert 0.02 < len(held) / len(files) < 0.10
    assert [f for f in files if corpus.is_heldout(f)] == held  # deterministic
    text = corpus.heldout_text()
    root = corpus.stdlib_dir()
    first = (root / held[0]).read_text(encoding="utf-8", errors="replace")
    train_file = next(f for f in files if not corpus.is_heldout(f) and len((root / f).read_text()) > 2000)
    assert first[:500] in text, "the committed held-out text no longer matches this interpreter's stdlib"
    assert (root / train_file).read_text()[:2000] not in text


TOY = (["def add(a, b):\n    return a + b\n" * 40, "class A:\n    pass\n" * 40],
       ["def sub(a, b):\n    return a - b\n" * 20])
SMALL = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
             num_key_value_heads=1, seq_len=32, batch_size=4, steps=30, eval_every=10, eval_windows=2,
             warmup=5, bf16_autocast=False, lr=3e-3)


def test_train_toy_model_learns_and_saves_hf_format(tmp_path):
    out = tmp_path / "toy"
    s = train.train(train.TrainConfig(name="toy", **SMALL), out_dir=out, write_heldout=False, progress=False,
                    corpus=TOY)
    assert s["history"][-1]["heldout_loss"] < s["history"][0]["heldout_loss"]
    for f in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md"):
        assert (out / f).exists(), f
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("def add(a, b):", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=5, do_sample=False).shape[1] == ids.shape[1] + 5
    assert json.loads((out / "training_summary.json").read_text())["parameters"] == s["parameters"]


def test_interrupted_save_keeps_the_previous_model(tmp_path, monkeypatch):
    out = tmp_path / "toy"
    train.train(train.TrainConfig(name="toy", **{**SMALL, "steps": 2}), out_dir=out, write_heldout=False,
                progress=False, corpus=TOY)
    before = (out / "model.safetensors").read_bytes()

    make_tokenizer = train.train_tokenizer

    def tokenizer_that_dies_on_save(*a, **k):  # the run is interrupted after the weights are written
        tok = make_tokenizer(*a, **k)

        def crash(*a, **k):
            raise KeyboardInterrupt

        tok.save_pretrained = crash
        return tok

    monkeypatch.setattr(train, "train_tokenizer", tokenizer_that_dies_on_save)
    with pytest.raises(KeyboardInterrupt):
        train.train(train.TrainConfig(name="toy", **{**SMALL, "steps": 3, "seed": 1}), out_dir=out,
                    write_heldout=False, progress=False, corpus=TOY)
    assert (out / "model.safetensors").read_bytes() == before
    AutoModelForCausalLM.from_pretrained(out)


def test_committed_tiny_model_card_matches_its_weights():
    s = json.loads((MODELS_DIR / "tiny" / "training_summary.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(MODELS_DIR / "tiny")
    assert sum(p.numel() for p in model.parameters()) == s["parameters"]
    assert all(d % 64 == 0 for m in model.modules() if isinstance(m, torch.nn.Linear) for d in m.weight.shape)
    assert str(s["heldout_perplexity"]) in (MODELS_DIR / "tiny" / "README.md").read_text()
