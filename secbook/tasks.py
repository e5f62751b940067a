"""Does the model still answer? A small question set, scored greedy, beside perplexity.

Perplexity averages the model's surprise over every token of a text; a compression or a fast path can leave it
almost unchanged and still flip the few tokens that carry an answer. So the book also asks the model questions
with known answers — facts, small arithmetic, Python — decodes greedily and checks the reply for an expected
string (task accuracy, as in the evaluations of instruction-tuned models; here written by us, tiny on purpose
so it runs in seconds on a CPU). It is small: with 30 questions one answer is 3 percentage points, so a
difference of one or two answers between two variants is noise, and only larger gaps say something.

Chat models get each prompt as one user turn of their chat template; other models see the raw prompt.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Question:
    """A prompt and the strings that count as a correct answer (any one of them, case-insensitive)."""
    prompt: str
    answers: tuple[str, ...]
    kind: str  # "fact", "arithmetic" or "code"


def _q(kind: str, prompt: str, *answers: str) -> Question:
    return Question(prompt, tuple(answers), kind)


QUESTIONS: tuple[Question, ...] = (
    _q("fact", "What is the capital of France? Answer in one word.", "Paris"),
    _q("fact", "What is the capital of Japan? Answer in one word.", "Tokyo"),
    _q("fact", "What is the capital of Italy? Answer in one word.", "Rome"),
    _q("fact", "What is the chemical symbol for water?", "H2O", "H₂O"),
    _q("fact", "How many days are there in a week?", "7", "seven"),
    _q("fact", "How many legs does a spider have?", "8", "eight"),
    _q("fact", "Which planet is known as the Red Planet?", "Mars"),
    _q("fact", "What is the largest ocean on Earth?", "Pacific"),
    _q("fact", "What gas do plants absorb from the air for photosynthesis?", "carbon dioxide", "CO2", "CO₂"),
    _q("fact", "At what temperature in degrees Celsius does water boil at sea level?", "100"),
    _q("fact", "Who wrote the play Romeo and Juliet?", "Shakespeare"),
    _q("fact", "What is the opposite of the word 'hot'?", "cold"),
    _q("arithmetic", "What is 2 + 3?", "5", "five"),
    _q("arithmetic", "What is 7 + 5?", "12", "twelve"),
    _q("arithmetic", "What is 10 - 4?", "6", "six"),
    _q("arithmetic", "What is 3 times 4?", "12", "twelve"),
    _q("arithmetic", "What is 9 + 10?", "19", "nineteen"),
    _q("arithmetic", "What is 100 divided by 4?", "25", "twenty-five"),
    _q("arithmetic", "What is 6 times 7?", "42", "forty-two"),
    _q("arithmetic", "What is half of 50?", "25", "twenty-five"),
    _q("code", "In Python, what does len([1, 2, 3]) return?", "3", "three"),
    _q("code", "Complete this Python function:\ndef add(a, b):\n    return", "a + b", "a+b", "b + a"),
    _q("code", "In Python, which keyword defines a function?", "def"),
    _q("code", "What does print(2 ** 3) show in Python?", "8", "eight"),
    _q("code", "In Python, what is the type of the value True?", "bool"),
    _q("code", "Which Python keyword starts a loop over the items of a list?", "for"),
    _q("code", "In Python, what does 'hello'.upper() return?", "HELLO"),
    _q("code", "Which Python built-in function turns the string '42' into an integer?", "int("),
    _q("code", "What does the Python expression 7 // 2 evaluate to?", "3", "three"),
    _q("code", "Write a Python list containing the numbers one, two and three.", "[1, 2, 3]", "[1,2,3]"),
)


def is_correct(reply: str, answers) -> bool:
    """True if ``reply`` contains one of ``answers``. Case is ignored, except for an answer written all in
    capitals ("HELLO" is not found in "hello"). An answer that starts or ends with a letter or digit must stand
    alone there (no letter or digit beside it), so "2" is not found in "12" and "for" is not in "before"."""
    for answer in answers:
        exact = any(c.isalpha() for c in answer) and answer == answer.upper() and answer != answer.lower() \
            and len([c for c in answer if c.isalpha()]) > 2  # HELLO, not H2O or CO2
        flags = 0 if exact else re.IGNORECASE
        pattern = re.escape(answer)
        if answer[:1].isalnum():
            pattern = r"(?<![0-9A-Za-z])" + pattern
        if answer[-1:].isalnum():
            pattern += r"(?![0-9A-Za-z])"
        if re.search(pattern, reply, flags):
            return True
    return False


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        from .pretrained import chat_ids

        return chat_ids(tokenizer, prompt)[0].tolist()
    return tokenizer(prompt)["input_ids"]


def _replies(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy replies to ``prompts`` in one left-padded batch (each row attends only to its own tokens)."""
    rows = [_prompt_ids(tokenizer, p) for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(r) for r in rows)
    device = next(model.parameters()).device
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad)
    return [tokenizer.decode(o[width:], skip_special_tokens=True).strip() for o in out]


def ask(model, tokenizer, prompt: str, max_new_tokens: int = 32) -> str:
    """The model's greedy reply to one prompt (a chat turn if the tokenizer has a chat template)."""
    return _replies(model, tokenizer, [prompt], max_new_tokens)[0]


def _replies_with(generate, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy replies through ``generate(ids [1, T], n) -> ids [1, T + n]``, one prompt at a time, each cut at
    the first end-of-sequence token (where ``model.generate`` would have stopped)."""
    out = []
    for p in prompts:
        ids = torch.tensor([_prompt_ids(tokenizer, p)])
        new = generate(ids, max_new_tokens)[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in new:
            new = new[:new.index(tokenizer.eos_token_id)]
        out.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return out


def score(model, tokenizer, questions=QUESTIONS, max_new_tokens: int = 32, batch_size: int = 16,
          progress: bool = False, generate=None):
    """Ask every question greedily and check each reply; one row per question (kind, prompt, expected, reply,
    correct). Questions go in left-padded batches of ``batch_size`` for speed; padding changes the order of
    some sums, so in a rare near-tie a batched greedy reply can differ from the one-at-a-time reply
    (``batch_size=1`` gives exactly those).

    ``generate(ids, n) -> ids`` (e.g. ``FastGenerator(model, max_len).generate``, which may run our C++ step)
    asks the questions one at a time through that loop instead of ``model.generate`` — the answers of a model
    as it is actually decoded; ``model`` may then be ``None``."""
    import pandas as pd
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if model is None and generate is None:
        raise ValueError("pass a model, or generate=a greedy generate(ids, n) function")
    questions = list(questions)
    replies: list[str] = []
    for i in tqdm(range(0, len(questions), batch_size), disable=not progress, desc="questions"):
        chunk = questions[i:i + batch_size]
        prompts = [q.prompt for q in chunk]
        replies += (_replies(model, tokenizer, prompts, max_new_tokens) if generate is None
                    else _replies_with(generate, tokenizer, prompts, max_new_tokens))
    return pd.DataFrame({"kind": [q.kind for q in questions], "prompt": [q.prompt for q in questions],
                         "expected": [" / ".join(q.answers) for q in questions], "reply": replies,
                         "correct": [is_correct(r, q.answers) for r, q in zip(replies, questions)]})


def accuracy(model, tokenizer, **kw) -> float:
    """The fraction of ``QUESTIONS`` answered correctly (``kw`` as for ``score``)."""
    return float(score(model, tokenizer, **kw)["correct"].mean())


def summary(df):
    """Accuracy per kind and overall from a ``score`` frame: columns kind, correct, total, accuracy."""
    import pandas as pd

    rows = [(k, int(g["correct"].sum()), len(g)) for k, g in df.groupby("kind", sort=False)]
    rows.append(("all", int(df["correct"].sum()), len(df)))
    out = pd.DataFrame(rows, columns=["kind", "correct", "total"])
    out["accuracy"] = out["correct"] / out["total"]
    return out
