"""The chapters as a teacher and a student read them: every chapter opens with its objectives, prerequisites and
time, ends with a summary, and every exercise has a complete solution hidden whole; the prose states no measured
fact about the machine that builds it and never talks about how the book was developed."""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.md")) + sorted((ROOT / "chapters").glob("*.md"))


# Chapters not yet rewritten to this standard: strictly expected to fail, so each one drops off this list (and
# the test then holds it to the standard) as soon as it passes. The list only shrinks.
REWRITTEN = {"01_why_latency.ipynb", "02_core_concepts.ipynb", "03_1a_quantization.ipynb", "03_1b_pruning.ipynb",
             "03_1c_distillation.ipynb", "03_2_algorithms.ipynb", "03_2b_cpu_step.ipynb", "03_3_hardware.ipynb",
             "03_4_worked_run.ipynb", "04_latency_model.ipynb", "05_hands_on.ipynb", "06_applications.ipynb",
             "06b_serving.ipynb", "07_tools.ipynb", "08_summary.ipynb", "09_faq.ipynb"}
PENDING = {"structure": {p.name for p in CHAPTERS} - REWRITTEN,
           "prose": {"02_core_concepts.ipynb", "03_2_algorithms.ipynb", "03_3_hardware.ipynb", "07_tools.ipynb"} - REWRITTEN}


def checked(paths, kind: str):
    return [pytest.param(p, id=p.name, marks=pytest.mark.xfail(strict=True, reason="chapter not yet rewritten"))
            if p.name in PENDING[kind] else pytest.param(p, id=p.name) for p in paths]


def cells(path: Path):
    return nbformat.read(path, as_version=4).cells


def prose(path: Path) -> list[str]:
    """The markdown paragraphs of a chapter notebook or a markdown page."""
    texts = [c.source for c in cells(path) if c.cell_type == "markdown"] if path.suffix == ".ipynb" \
        else [path.read_text()]
    return [p for t in texts for p in t.split("\n\n")]


@pytest.mark.parametrize("path", checked(CHAPTERS, "structure"))
def test_chapter_opens_with_objectives_and_ends_with_a_summary(path):
    md = [c.source for c in cells(path) if c.cell_type == "markdown"]
    assert any(s.startswith(":::{admonition} In this chapter") and "**You will learn to**" in s
               and "**You need**" in s and "**Time**" in s for s in md[:3]), \
        "no opening box in the first markdown cells (tools/nb.py: opening(objectives, prerequisites, minutes))"
    assert any(s.startswith("## Summary") for s in md), "no '## Summary' (tools/nb.py: summary(points))"


def _is_solution(cell) -> bool:
    if cell.cell_type == "code":
        return "hide-cell" in cell.metadata.get("tags", []) and "google.colab" not in cell.source
    return cell.source.startswith(":::{dropdown} Solution")


@pytest.mark.parametrize("path", checked(CHAPTERS, "structure"))
def test_every_exercise_has_a_hidden_solution(path):
    cs = cells(path)
    starts = [i for i, c in enumerate(cs) if c.cell_type == "markdown" and re.match(r"\*\*Exercise \d+\.\*\*", c.source)]
    for i in range(len(cs)):  # an exercise written inside another markdown cell escapes the check: forbid it
        if cs[i].cell_type == "markdown" and i not in starts:
            assert not re.search(r"\*\*Exercise \d+\.\*\*", cs[i].source), \
                f"cell {i}: start each exercise in its own cell (tools/nb.py: exercise(n, text))"
    for k, i in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(cs)
        assert any(_is_solution(c) for c in cs[i + 1:end]), \
            f"{cs[i].source[:60]!r} has no solution (tools/nb.py: solution(code) or answer(text)) before the next one"
    shown = [c for c in cs if c.cell_type == "code" and "hide-input" in c.metadata.get("tags", [])]
    assert not shown, "a solution must hide its printed answer too: use solution() (hide-cell), not hide-input"


DEVELOPMENT = re.compile(r"this session|added later|partial run|recorded before the|a later version of this book|"
                         r"we (re-?ran|re-?recorded)|in an earlier run|when this (page|chapter) was written", re.I)
MACHINE = re.compile(r"\b(two|2)[ -]cores?\b|\b2-core\b|\b\d+ ?MB (of )?L[23]\b|\bL3 cache of \d|\bon this kind of\b|"
                     r"\bthis machine has\b|\bAVX-?512\b[^.]*\bthis (CPU|machine)\b", re.I)


@pytest.mark.parametrize("path", checked(CHAPTERS + PAGES, "prose"))
def test_prose_states_no_machine_fact_and_no_development_history(path):
    for para in prose(path):
        assert not DEVELOPMENT.search(para), f"prose about how the book was developed: {para[:200]!r}"
        m = MACHINE.search(para)
        assert not m, (f"a fact about the building machine typed by hand ({m.group(0)!r}): print it from "
                       f"secbook.describe_machine() or a measurement instead: {para[:200]!r}")


def test_glossary_defines_each_metric_as_the_package_does():
    """One definition per metric: the glossary says what secbook.measure.METRICS says (code names aside)."""
    from secbook.measure import METRICS

    glossary = " ".join((ROOT / "book" / "glossary.md").read_text().split())
    for name, definition in METRICS.items():
        words = re.sub(r" \([a-z0-9_.]+\)", "", " ".join(definition.split()))
        assert words[1:] in glossary, f"the glossary's {name!r} differs from secbook.measure.METRICS"
