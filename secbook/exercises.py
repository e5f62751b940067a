"""Self-check functions for the chapters' exercises: each prints "Correct ..." or raises AssertionError
with a hint. Shared by every chapter: add your own ``check_<thing>(answer)`` below."""
from __future__ import annotations


def _expect(ok: bool, hint: str) -> None:
    if not ok:
        raise AssertionError(hint)


def check_simplellm_params(answer: int) -> None:
    """Chapter 5, exercise 1: parameters of SimpleLLM (vocab 10000, embedding 256, LSTM hidden 512)."""
    from .handson import build, n_params

    truth = n_params(build("buggy"))
    _expect(int(answer) == truth,
            "Not quite. Embedding: vocab x embed. nn.LSTM: 4 gates x (hidden x input + hidden x hidden + "
            "2 biases of size hidden). Linear: hidden x vocab + vocab bias.")
    print(f"Correct: SimpleLLM has {truth:,} parameters.")
