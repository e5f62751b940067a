"""Sentences that follow their numbers: text printed from a measurement, and guards on what the prose claims.

Every figure in the book is measured when the book is built, on whatever machine builds it, and a shared machine
moves from run to run. So a chapter never types a measured fact into its prose. It does one of two things:

* it **says** it: the sentence is formatted from the measurement and shown as Markdown under the cell that
  measured it (:func:`say`), worded by the result — "faster", "slower" or "about as fast" comes from
  :func:`compare`, which times nothing itself but reads rounds measured *in turn* (A, B, A, B, ...) so that a
  change in the machine's load hits both alike (:func:`secbook.measure.tok_s_in_turn`);
* or it **guards** it: where the prose states something that must hold on any machine — two outputs equal token
  for token, an effect of 2x or more — :func:`guard` raises :class:`ClaimError` when the run contradicts it, and
  the book's build (and its tests) fail instead of printing a page that contradicts itself. Guards are kept to
  claims with a wide margin, so that they never make the build flaky; anything closer is worded from the run.

The same idea as MyST-NB's ``glue`` (a value computed in a cell, shown inside the text), but as the output of a
code cell: it works unchanged in Jupyter, on Colab and in the rendered book.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass


class ClaimError(AssertionError):
    """The run contradicts a claim that the text around it makes."""


SAY_KEY = "secbook.say"
"""Key of a :func:`say` output's metadata holding every language of its sentence: ``{"en": ..., "zh": ...}``
(the book's Chinese edition shows ``"zh"`` in place of the English; tools/translate.py reads it)."""


def language() -> str:
    """The language :func:`say` shows: ``"zh"`` when the environment variable ``SECBOOK_LANG`` starts with
    ``zh`` (the Chinese notebooks' set-up cell sets it), else ``"en"``."""
    import os

    return "zh" if os.environ.get("SECBOOK_LANG", "en").lower().startswith("zh") else "en"


def say(text: str, show: bool = True, zh: str | None = None) -> str:
    """Show ``text`` as Markdown below the cell (printed outside a notebook) and return what was shown.

    ``zh`` is the same sentence in Chinese, formatted from the same numbers. The output carries both under the
    metadata key :data:`SAY_KEY`, so the Chinese edition, generated from this one run, shows the Chinese sentence
    (no second execution); a notebook whose ``SECBOOK_LANG`` is ``zh`` shows it directly."""
    if zh is not None and (not isinstance(zh, str) or not zh.strip()):
        raise ValueError("zh must be the sentence in Chinese (a non-empty string), or None")
    shown = zh if zh is not None and language() == "zh" else text
    if show:
        try:
            from IPython import get_ipython
            from IPython.display import display

            if get_ipython() is not None:
                langs = {"en": text} if zh is None else {"en": text, "zh": zh}
                display({"text/markdown": shown, "text/plain": shown}, raw=True, metadata={SAY_KEY: langs})
                return shown
        except ImportError:
            pass
        print(shown)
    return shown


def guard(condition: bool, claim: str, evidence: str = "") -> None:
    """Raise :class:`ClaimError` unless ``condition``: ``claim`` is what the text says, ``evidence`` what the run
    measured. Use it only for claims that hold with a wide margin on any machine."""
    if not condition:
        raise ClaimError(f"the text claims: {claim}; this run contradicts it" + (f" ({evidence})" if evidence else ""))


def times(x: float) -> str:
    """A ratio as the book prints it: ``"1.84x"``, ``"12.3x"``, ``"153x"`` (three significant figures at most)."""
    if x != x:  # NaN
        return "n/a"
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def times_zh(x: float) -> str:
    """A ratio as the Chinese edition prints it: ``"1.84 倍"`` (the digits of :func:`times`)."""
    return "无" if x != x else times(x)[:-1] + " 倍"


VERDICT_ZH = {"faster": "更快", "slower": "更慢", "about as fast": "速度相当", "not clearly faster": "并不明显更快",
              "not clearly slower": "并不明显更慢"}
"""Each :attr:`Comparison.verdict` in Chinese (:attr:`Comparison.verdict_zh`)."""


@dataclass(frozen=True)
class Comparison:
    """Speed of ``a`` relative to ``b``, one ratio per round measured in turn (> 1: ``a`` is faster)."""
    a: str
    b: str
    ratios: tuple[float, ...]
    tolerance: float = 0.05

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def low(self) -> float:
        return min(self.ratios)

    @property
    def high(self) -> float:
        return max(self.ratios)

    @property
    def verdict(self) -> str:
        """``"faster"`` if every round had ``a`` faster by more than the tolerance, ``"slower"`` if every round had
        it slower, ``"about as fast"`` if the median is within the tolerance, else ``"not clearly faster"`` or
        ``"not clearly slower"`` (the rounds disagree: the machine's noise is larger than the difference)."""
        lo, hi, t = self.low, self.high, self.tolerance
        if lo > 1 + t:
            return "faster"
        if hi < 1 - t:
            return "slower"
        if abs(self.median - 1) <= t:
            return "about as fast"
        return "not clearly faster" if self.median > 1 else "not clearly slower"

    @property
    def verdict_zh(self) -> str:
        """:attr:`verdict` in Chinese, for ``say(..., zh=...)``: 更快, 更慢, 速度相当, 并不明显更快 or 并不明显更慢."""
        return VERDICT_ZH[self.verdict]

    @property
    def one_way(self) -> bool:
        """Whether every round had ``a`` on the same side of ``b`` (all faster, or all slower)."""
        return self.low > 1 or self.high < 1

    @property
    def than(self) -> str:
        """:attr:`verdict` with the word that joins it to ``b`` in a sentence: ``"faster than"``, ``"slower than"``,
        ``"about as fast as"``, ``"not clearly faster than"`` or ``"not clearly slower than"``."""
        return "about as fast as" if self.verdict == "about as fast" else f"{self.verdict} than"

    @property
    def than_zh(self) -> str:
        """The Chinese twin of :attr:`than` (:attr:`verdict_zh`: Chinese puts the comparison after ``b``)."""
        return self.verdict_zh

    def words(self) -> str:
        """A sentence: ``"A was 1.84x as fast as B (median of 7 rounds in turn, 1.70x-1.95x)"``, or, when the
        rounds do not settle it, says so."""
        span = f"median of {len(self.ratios)} rounds in turn, {times(self.low)}-{times(self.high)}"
        if self.verdict == "about as fast":
            return f"{self.a} was about as fast as {self.b} ({times(self.median)}; {span})"
        if self.verdict.startswith("not clearly"):
            if self.one_way:  # every round the same way, but not every one beyond the margin
                return (f"{self.a} was {self.verdict} than {self.b}: {times(self.median)} at the median, every round "
                        f"the same way but not every one by more than {self.tolerance:.0%} ({span}) — too close to "
                        f"call on this machine's noise")
            return (f"{self.a} was {self.verdict} than {self.b}: {times(self.median)} at the median, but the rounds "
                    f"disagree ({span}) — the machine's noise is as large as the difference")
        return f"{self.a} was {times(self.median)} as fast as {self.b} ({span})"

    def words_zh(self) -> str:
        """The sentence of :meth:`words` in Chinese, from the same rounds (for ``say(..., zh=...)``)."""
        span = f"轮流测量 {len(self.ratios)} 轮的中位数，{times_zh(self.low)}–{times_zh(self.high)}"
        if self.verdict == "about as fast":
            return f"{self.a} 与 {self.b} 速度相当（{times_zh(self.median)}；{span}）"
        if self.verdict.startswith("not clearly"):
            way = "更快" if self.verdict.endswith("faster") else "更慢"
            if self.one_way:
                return (f"{self.a} 并不明显比 {self.b} {way}：中位数为 {times_zh(self.median)}，各轮方向一致，"
                        f"但并非每轮都超过 {self.tolerance:.0%} 的余量（{span}）——在这台机器的噪声下难分高下")
            return (f"{self.a} 并不明显比 {self.b} {way}：中位数为 {times_zh(self.median)}，"
                    f"但各轮结果不一致（{span}）——机器的噪声与这一差异一样大")
        return f"{self.a} 的速度是 {self.b} 的 {times_zh(self.median)}（{span}）"


def compare(speeds: dict[str, list[float]], a: str, b: str, tolerance: float = 0.05,
            higher_is_better: bool = True) -> Comparison:
    """Compare ``a`` with ``b`` from measurements taken in turn: ``speeds[name][i]`` is round ``i``'s figure
    (tokens/s by default; with ``higher_is_better=False`` a time, so the ratio is inverted to stay "how many
    times as fast"). Each round gives one ratio; the verdict needs every round to agree (:class:`Comparison`)."""
    sa, sb = list(speeds[a]), list(speeds[b])
    if not sa or len(sa) != len(sb):
        raise ValueError(f"need the same number (>= 1) of rounds for {a!r} and {b!r}, got {len(sa)} and {len(sb)}")
    ratios = tuple((x / y) if higher_is_better else (y / x) for x, y in zip(sa, sb))
    return Comparison(a, b, ratios, tolerance)
