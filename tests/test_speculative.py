"""Speculative decoding: greedy output identical to the target alone; bookkeeping; bad drafts rejected."""
import copy

import pytest
import torch

from secbook.generate import fast_generate
from secbook.measure import prompt_ids
from secbook.speculative import (SpeculativeDecoder, expected_tokens_per_call, hf_assisted, hf_prompt_lookup,
                                 lookup_draft, speculative_generate)


@pytest.fixture(scope="module")
def pair(tiny):
    model, tok = tiny
    draft = copy.deepcopy(model)
    draft.model.layers = draft.model.layers[:2]
    draft.config.num_hidden_layers = 2
    return model, draft, tok


@pytest.mark.parametrize("gamma", [1, 3, 5])
def test_greedy_identical_to_target(pair, gamma):
    target, draft, tok = pair
    ids = prompt_ids(tok, 32)
    ref = fast_generate(target, ids, 40)
    r = speculative_generate(target, draft, ids, 40, gamma=gamma)
    assert torch.equal(r.ids, ref)
    assert r.ids.shape == (1, 72) and r.verified_tokens >= 39 and r.target_calls <= 39
    assert r.accepted <= r.proposed <= gamma * r.target_calls
    lk = speculative_generate(target, "lookup", ids, 40, gamma=gamma)
    assert torch.equal(lk.ids, ref)


def test_draft_equal_to_target_accepts_all(pair):
    target, _, tok = pair
    r = speculative_generate(target, target, prompt_ids(tok, 16), 30, gamma=4)
    assert r.acceptance_rate == 1.0
    assert r.target_calls == 6  # 30 tokens, 5 per call
    s = speculative_generate(target, target, prompt_ids(tok, 16), 30, gamma=4, temperature=1.0, seed=0)
    assert s.acceptance_rate > 0.95  # p == q: min(1, p/q) = 1 up to rounding


def test_expected_tokens_formula():
    assert expected_tokens_per_call(0.0, 4) == 1.0
    assert expected_tokens_per_call(1.0, 4) == 5.0
    assert expected_tokens_per_call(0.5, 2) == pytest.approx(1.75)
    with pytest.raises(ValueError):
        expected_tokens_per_call(1.5, 2)


def test_lookup_draft():
    assert lookup_draft([1, 2, 3, 9, 1, 2], 3) == [3, 9, 1]
    assert lookup_draft([1, 2, 3], 2) == []


def test_library_versions_agree(pair):
    target, draft, tok = pair
    ids = prompt_ids(tok, 32)
    ref = fast_generate(target, ids, 24)
    assert torch.equal(hf_assisted(target, draft, ids, 24, gamma=3), ref)
    assert torch.equal(hf_prompt_lookup(target, ids, 24, gamma=3), ref)


def test_different_tokenizer_is_an_error(pair, small_llama):
    target, draft, tok = pair
    other = copy.deepcopy(tok)
    other.add_tokens(["<an-extra-token>"])
    with pytest.raises(ValueError, match="tokenizer"):
        SpeculativeDecoder(target, draft, target_tokenizer=tok, draft_tokenizer=other)
    with pytest.raises(ValueError, match="vocabulary size"):
        SpeculativeDecoder(target, small_llama[0])
    with pytest.raises(ValueError, match="gamma"):
        SpeculativeDecoder(target, draft, gamma=0)
