"""The editorial mechanism: sentences worded from measurements, and guards that fail on a contradiction."""
import pytest

from secbook.claims import ClaimError, compare, guard, say, times


def test_guard_raises_with_the_claim_and_the_evidence():
    guard(True, "identical tokens")
    with pytest.raises(ClaimError, match="the text claims: identical tokens; this run contradicts it .31 of 32"):
        guard(False, "identical tokens", "31 of 32")


def test_times_formats_ratios():
    assert times(1.8412) == "1.84x" and times(12.34) == "12.3x" and times(153.2) == "153x"
    assert times(float("nan")) == "n/a"


@pytest.mark.parametrize("a,b,verdict", [
    ([20, 21, 19], [10, 10, 10], "faster"),  # every round 1.9-2.1x
    ([5, 5, 5], [10, 11, 9], "slower"),
    ([10, 10.2, 9.9], [10, 10, 10], "about as fast"),
    ([12, 9, 11.5], [10, 10, 10], "not clearly faster"),  # median 1.15x, but one round had it slower
])
def test_compare_words_follow_every_round(a, b, verdict):
    c = compare({"A": a, "B": b}, "A", "B")
    assert c.verdict == verdict
    assert c.words().startswith("A was")
    if verdict == "faster":
        assert "as fast as B" in c.words() and "median of 3 rounds in turn" in c.words()


def test_not_clearly_says_whether_the_rounds_disagree_or_only_miss_the_margin():
    split = compare({"A": [12, 9, 11.5], "B": [10, 10, 10]}, "A", "B")  # one round the other way
    assert "the rounds disagree" in split.words() and "各轮结果不一致" in split.words_zh()
    close = compare({"A": [10.3, 11.5, 11.2], "B": [10, 10, 10]}, "A", "B")  # every round faster, one by only 3%
    assert close.verdict == "not clearly faster"
    assert "every round the same way but not every one by more than 5%" in close.words()
    assert "各轮方向一致" in close.words_zh() and "5%" in close.words_zh()


def test_compare_times_invert():
    c = compare({"A": [1.0, 1.0], "B": [2.0, 2.2]}, "A", "B", higher_is_better=False)  # seconds: A takes half
    assert c.verdict == "faster" and c.median == pytest.approx(2.1)


def test_compare_needs_paired_rounds():
    with pytest.raises(ValueError, match="same number"):
        compare({"A": [1, 2], "B": [1]}, "A", "B")


def test_say_prints_outside_a_notebook(capsys):
    assert say("**3** tokens") == "**3** tokens"
    assert "**3** tokens" in capsys.readouterr().out


def test_say_keeps_english_by_default_and_shows_chinese_when_asked(capsys, monkeypatch):
    monkeypatch.delenv("SECBOOK_LANG", raising=False)
    assert say("**3** tokens", zh="**3** 个词元") == "**3** tokens"
    monkeypatch.setenv("SECBOOK_LANG", "zh_CN")
    assert say("**3** tokens", zh="**3** 个词元") == "**3** 个词元"
    assert say("only English") == "only English"  # no Chinese given: the English is shown
    out = capsys.readouterr().out
    assert "**3** 个词元" in out and "only English" in out
    with pytest.raises(ValueError, match="zh must be"):
        say("x", zh="  ")


def test_say_output_carries_both_languages():
    """In a kernel, the output's metadata holds both sentences (the Chinese edition is generated from it)."""
    IPython = pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    from secbook.claims import SAY_KEY

    shell = InteractiveShell.instance()
    published = []
    shell.display_pub.publish = lambda data, metadata=None, **kw: published.append((data, metadata))
    try:
        say("A was **2.00x** as fast", zh="A 的速度是 **2.00 倍**")
    finally:
        del shell.display_pub.publish
        InteractiveShell.clear_instance()
    (data, metadata), = published
    assert data["text/markdown"] == "A was **2.00x** as fast"
    assert metadata[SAY_KEY] == {"en": "A was **2.00x** as fast", "zh": "A 的速度是 **2.00 倍**"}


@pytest.mark.parametrize("a,b", [([20, 21, 19], [10, 10, 10]), ([5, 5, 5], [10, 11, 9]),
                                 ([10, 10.2, 9.9], [10, 10, 10]), ([12, 9, 11.5], [10, 10, 10])])
def test_compare_words_in_chinese_carry_the_same_numbers(a, b):
    import re

    c = compare({"A": a, "B": b}, "A", "B")
    nums = lambda s: sorted(re.findall(r"\d+(?:\.\d+)?", s))  # noqa: E731
    assert nums(c.words_zh()) == nums(c.words()) and c.words_zh().startswith("A ")


def test_verdicts_in_chinese():
    from secbook.claims import VERDICT_ZH

    for a, verdict in (([20, 21, 19], "faster"), ([5, 5, 5], "slower"), ([10, 10.2, 9.9], "about as fast"),
                       ([12, 9, 11.5], "not clearly faster"), ([8, 11, 8.5], "not clearly slower")):
        c = compare({"A": a, "B": [10, 10, 10]}, "A", "B")
        assert c.verdict == verdict and c.verdict_zh == VERDICT_ZH[verdict] and c.than_zh == c.verdict_zh
        assert c.than == ("about as fast as" if verdict == "about as fast" else verdict + " than")
    assert set(VERDICT_ZH) == {"faster", "slower", "about as fast", "not clearly faster", "not clearly slower"}
