"""The question set: its matching rule, its shape, and a real model that answers some of it."""
import pytest

import secbook
from secbook import pretrained, tasks


@pytest.mark.parametrize("reply, answers, ok", [
    ("The capital of France is Paris.", ("Paris",), True),
    ("the capital is paris", ("Paris",), True),
    ("7 + 5 = 12", ("2",), False),           # a number inside another number is not the answer
    ("It is 2.", ("2",), True),
    ("Do this before the loop", ("for",), False),
    ("Use a for loop", ("for",), True),
    ("returns the string hello in capitals", ("HELLO",), False),  # all-capital answers keep their case
    ("It returns 'HELLO'.", ("HELLO",), True),
    ("water is h2o", ("H2O",), True),
    ("call int('42')", ("int(",), True),
    ("numbers = [1, 2, 3]", ("[1, 2, 3]", "[1,2,3]"), True),
    ("nothing useful", ("Paris", "Rome"), False),
])
def test_is_correct(reply, answers, ok):
    assert tasks.is_correct(reply, answers) is ok


def test_question_set_is_well_formed():
    qs = tasks.QUESTIONS
    assert 25 <= len(qs) <= 40
    assert {q.kind for q in qs} == {"fact", "arithmetic", "code"}
    assert len({q.prompt for q in qs}) == len(qs)
    assert all(q.answers and all(a.strip() for a in q.answers) for q in qs)


def test_score_and_summary_on_the_tiny_model(tiny):
    model, tok = tiny
    qs = tasks.QUESTIONS[:5]
    df = tasks.score(model, tok, questions=qs, max_new_tokens=4)
    assert list(df.columns) == ["kind", "prompt", "expected", "reply", "correct"] and len(df) == 5
    one = tasks.score(model, tok, questions=qs, max_new_tokens=4, batch_size=1)
    assert one.shape == df.shape and list(one["prompt"]) == list(df["prompt"])
    s = tasks.summary(df)
    assert s.iloc[-1]["kind"] == "all" and s.iloc[-1]["total"] == 5
    assert s.iloc[-1]["accuracy"] == df["correct"].mean()
    with pytest.raises(ValueError, match="batch_size"):
        tasks.score(model, tok, questions=qs, batch_size=0)


def test_the_real_model_answers_some_questions():
    if not pretrained.is_fetched():
        pytest.skip(f"the real model is not fetched (run `{pretrained.REPAIR}`)")
    model, tok = secbook.load(pretrained.NAME)
    df = tasks.score(model, tok, max_new_tokens=16)
    assert df.loc[df["prompt"].str.contains("capital of France"), "correct"].all()
    assert 0 < df["correct"].mean() < 1


def test_score_through_a_generate_function_matches_batch_one(tiny):
    """Questions asked one at a time through our own loop give model.generate's batch-1 replies (cut at EOS)."""
    from secbook.generate import FastGenerator

    model, tok = tiny
    qs = tasks.QUESTIONS[:4]
    gen = FastGenerator(model, max_len=128)
    ours = tasks.score(None, tok, questions=qs, max_new_tokens=6, generate=gen.generate)
    ref = tasks.score(model, tok, questions=qs, max_new_tokens=6, batch_size=1)
    assert list(ours["reply"]) == list(ref["reply"])
    with pytest.raises(ValueError, match="pass a model"):
        tasks.score(None, tok, questions=qs)
