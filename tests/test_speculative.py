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


def test_acceptance_rate_counts_only_judged_drafts():
    """α = accepted ÷ drafts judged (up to and including the first rejection of each call), not ÷ proposed."""
    from secbook.speculative import SpecResult, acceptance_rate, judged_drafts

    # gamma=4: all 4 accepted (4 judged), 2 accepted then a rejection (3 judged), the first rejected (1 judged)
    assert [judged_drafts(a, 4) for a in (4, 2, 0)] == [4, 3, 1]
    assert acceptance_rate([4, 2, 0], [4, 4, 4]) == 6 / 8  # counting the 4 never-judged drafts would give 6 / 12
    assert acceptance_rate([0, 3], [0, 3]) == 1.0  # a call with no draft (lookup found nothing) judges nothing
    assert acceptance_rate([], []) == 0.0 and acceptance_rate([0], [0]) == 0.0
    r = SpecResult(ids=torch.zeros(1, 13, dtype=torch.long), gamma=4, target_calls=3, proposed=12, accepted=6,
                   accepted_per_call=[4, 2, 0], proposed_per_call=[4, 4, 4], prompt_len=3)
    assert r.judged == 8 and r.acceptance_rate == 0.75 and r.new_tokens == 10 and r.tokens_per_call == 3.0
    with pytest.raises(ValueError, match="accepted"):
        acceptance_rate([5], [4])
    with pytest.raises(ValueError, match="per call"):
        acceptance_rate([1, 2], [4])


def test_acceptance_rate_recovers_alpha_and_the_formula():
    """Drafts accepted independently with probability α (the model behind (1 − α^(γ+1)) / (1 − α)): the estimate
    from judged drafts recovers α, and the formula at that estimate matches the measured tokens per call; dividing
    by every proposed draft instead is biased far below α."""
    from secbook.speculative import acceptance_rate

    g = torch.Generator().manual_seed(0)
    alpha, gamma, calls = 0.7, 4, 20000
    trials = torch.rand(calls, gamma, generator=g) < alpha
    accepted = trials.int().cumprod(dim=1).sum(dim=1).tolist()  # accepted up to the first rejection
    est = acceptance_rate(accepted, [gamma] * calls)
    assert est == pytest.approx(alpha, abs=0.01)
    tokens_per_call = sum(a + 1 for a in accepted) / calls
    assert expected_tokens_per_call(est, gamma) == pytest.approx(tokens_per_call, rel=0.01)
    assert sum(accepted) / (gamma * calls) < alpha - 0.1  # the old accepted ÷ proposed


def test_decoder_bookkeeping_and_eos_stop(pair):
    """Per-call counts add up; with eos_token_id the output stops right after that token, as model.generate does."""
    target, draft, tok = pair
    ids = prompt_ids(tok, 16)
    ref = fast_generate(target, ids, 24)
    dec = SpeculativeDecoder(target, draft, gamma=3, max_len=40)
    r = dec.generate(ids, 24)
    assert len(r.accepted_per_call) == len(r.proposed_per_call) == r.target_calls
    assert sum(r.proposed_per_call) == r.proposed and sum(r.accepted_per_call) == r.accepted
    assert r.accepted <= r.judged <= r.proposed and r.new_tokens == 24
    stop = int(ref[0, 16 + 9])  # pretend the 10th new token ends the sequence
    first = ref[0, 16:].tolist().index(stop)
    for d in (draft, "lookup"):
        s = SpeculativeDecoder(target, d, gamma=3, max_len=40).generate(ids, 24, eos_token_id=stop)
        assert torch.equal(s.ids, ref[:, :16 + first + 1])


def test_task_acceptance_on_plain_text(pair):
    """Every (task, draft) row reproduces the target's own greedy reply; a model without a chat template gets the
    plain text."""
    from secbook.speculative import task_acceptance, task_ids, verify_cost

    target, draft, tok = pair
    tasks = {"code": "def add(a, b):\n    return a + b\n\ndef add(a, b):\n", "prose": "The quick brown fox"}
    assert not getattr(tok, "chat_template", None)
    assert torch.equal(task_ids(tok, tasks["prose"]), tok(tasks["prose"], return_tensors="pt").input_ids)
    df = task_acceptance(target, tok, {"draft": draft, "lookup": "lookup"}, tasks=tasks, max_new_tokens=12)
    assert len(df) == 4 and df["identical"].all()
    assert df["acceptance_rate"].between(0, 1).all() and (df["tokens_per_call"] >= 1).all()
    assert verify_cost(target, gamma=2, repeats=2, context=8) > 0
    with pytest.raises(ValueError):
        task_acceptance(target, tok, {}, tasks=tasks)
