"""The Chinese edition (中文版) kept in step with the English: every translated page complete and current, the
generated Chinese book (zh/) and the English glossary up to date with their sources, the Chinese notebooks sharing
the English notebooks' code and outputs (one run), and the mechanism itself (tools/translate.py) on small cases.
The browser test renders both editions."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import translate as T  # noqa: E402

PAGES = T.pages()
NOTEBOOKS = [p for p in PAGES if p.endswith(".ipynb")]

# Pages translated so far. Every other page is pending: strictly expected to fail, so a page drops off the pending
# list (and the tests then hold it complete and current) as soon as its translation is. The list only shrinks:
# add a page here when `python tools/translate.py status` says it is complete.
TRANSLATED = set(PAGES)
PENDING = set(PAGES) - TRANSLATED
# Translated chapters whose committed notebook was executed before its script said its sentences in Chinese
# (say(..., zh=...)): rebuild and execute it (python tools/nb.py build tools/notebooks/<name>.py, then
# python tools/nb.py run chapters/<name>.ipynb), then drop it from this set (strict: the test fails until you do).
AWAITING_RUN: set[str] = set()


def pending(pages, kind: set[str], reason: str):
    return [pytest.param(p, id=p, marks=pytest.mark.xfail(strict=True, reason=reason)) if p in kind
            else pytest.param(p, id=p) for p in pages]


# ------------------------------------------------------------------------------------------- the book's pages
@pytest.mark.parametrize("page", pending(PAGES, PENDING, "page not yet translated"))
def test_page_has_a_complete_current_translation(page):
    r = T.check(page)
    assert r.translated, f"{page} has no translation: python tools/translate.py extract {Path(page).stem}"
    assert not r.text, f"{page}: " + "; ".join(r.text[:8]) + " (python tools/translate.py status)"


@pytest.mark.parametrize("page", pending(sorted(TRANSLATED & set(NOTEBOOKS)), AWAITING_RUN,
                                         "the notebook predates its script's Chinese sentences: re-execute it"))
def test_translated_chapter_says_its_sentences_in_chinese(page):
    """Each sentence a translated chapter prints from a measurement has its Chinese version, in the code and in
    the outputs of the committed run; no prose printed in English only; every widget label translated."""
    r = T.check(page)
    problems = r.code + r.outputs
    assert not problems, f"{page}: " + "; ".join(problems[:8])


def test_generated_files_are_current():
    """zh/ and book/glossary.md are what tools/translate.py generates from the committed sources (so a change of
    the English, its outputs or a translation shows up here until `python tools/translate.py build` runs)."""
    expected = {**T.english_files(), **T.edition_files()}
    stale = [str(p.relative_to(ROOT)) for p, text in expected.items()
             if not p.exists() or p.read_text(encoding="utf-8") != text]
    extra = [str(p.relative_to(ROOT)) for p in sorted(T.EDITION.rglob("*"))
             if p.is_file() and p not in expected and "__pycache__" not in p.parts]
    assert not stale and not extra, (f"out of date: {stale}; not generated: {extra} — run "
                                     f"`python tools/translate.py build`")


def test_every_translation_file_belongs_to_a_page():
    files = {p.relative_to(T.I18N / T.LANG).with_suffix("").as_posix() for p in (T.I18N / T.LANG).rglob("*.yml")}
    files.discard("site")
    docs = {p.rsplit(".", 1)[0] for p in PAGES}
    assert files <= docs, f"translations of no page of the book: {sorted(files - docs)}"
    assert all(T.is_translated(p) for p in TRANSLATED), "a page in TRANSLATED without a translation file"


def test_site_words_cover_the_table_of_contents():
    site = T.load_site()
    captions = T.yaml.safe_load((ROOT / "_toc.yml").read_text())["parts"]
    assert all(p["caption"] in site["captions"] for p in captions), "a part caption of _toc.yml has no translation"
    assert site["title"] and site["notices"]["pending"] and site["notices"]["partial"] and site["setup_comment"]


def test_site_titles_are_the_page_headings():
    """site.yml has a title for each page's first heading, in the table of contents' order, and no stale one."""
    headings = []
    for page in PAGES:
        first = next((m for u in T.english_units(page) if (m := re.match(r"# (.+)", u))), None)
        assert first, f"{page} has no first-level heading"
        headings.append(first.group(1).strip())
    assert list(T.load_site()["titles"]) == headings


@pytest.mark.parametrize("page", NOTEBOOKS)
def test_chinese_notebook_shares_code_and_outputs_with_the_english(page):
    """Same code cells with the same outputs (from one run), but for the set-up cell (it sets SECBOOK_LANG=zh) and
    said sentences (shown in Chinese where the run recorded them)."""
    en, zh = (nbformat.read(ROOT / d / page, as_version=4) for d in ("", "zh"))
    en_code = [c for c in en.cells if c.cell_type == "code"]
    zh_code = [c for c in zh.cells if c.cell_type == "code"]
    assert len(en_code) == len(zh_code)
    first = zh_code[0].source
    assert "google.colab" in first and 'os.environ["SECBOOK_LANG"] = "zh"' in first
    assert f'"{T.yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]}"' in first
    for a, b in zip(en_code[1:], zh_code[1:]):
        assert a.source == b.source and a.metadata == b.metadata
        for oa, ob in zip(a.get("outputs", []), b.get("outputs", []), strict=True):
            zh_text = oa.get("metadata", {}).get(T.SAY_KEY, {}).get("zh")
            if zh_text:
                assert ob["data"]["text/markdown"] == zh_text
                oa, ob = dict(oa, data={}), dict(ob, data={})
            assert oa == ob
    assert zh.metadata["secbook"]["lang"] == "zh"


# ------------------------------------------------------------------------------------------- the table of terms
def test_table_of_terms_names_each_metric_once():
    from secbook.measure import METRICS

    terms = T.load_terms()
    metrics = [t["metric"] for t in terms if "metric" in t]
    assert sorted(metrics) == sorted(METRICS), "each of secbook.measure.METRICS needs one row (metric: name)"
    for t in terms:
        assert ("metric" in t) != bool(t["def"].get("en")), f"{t['en']!r}: a definition of its own, or a metric's"


def test_chinese_text_uses_the_tables_terms():
    """No variant the table rules out ('avoid') in any translation, in site.yml or in a said Chinese sentence."""
    avoid = T.avoided_terms(T.load_terms())
    texts = [str(T.load_site())] + [u.get("zh") or "" for p in TRANSLATED if p != T.GLOSSARY
                                    for u in T.Translation.load(p).units]
    texts += [(ROOT / "tools" / "notebooks" / (Path(p).stem + ".py")).read_text() for p in TRANSLATED
              if T.script_of(p)]
    found = [(bad, good) for bad, good in avoid.items() for t in texts if bad in t]
    assert not found, f"use the table's term: {found}"


def test_glossaries_come_from_the_table():
    terms = T.load_terms()
    defs = T.term_definitions(terms)
    for lang, path in (("en", ROOT / "book" / "glossary.md"), ("zh", T.EDITION / "book" / "glossary.md")):
        text = path.read_text()
        for t in terms:
            assert T.term_heading(t, lang) in text
    zh = (T.EDITION / "book" / "glossary.md").read_text()
    assert all(t["def"]["zh"] in zh for t in terms)
    assert all(d in (ROOT / "book" / "glossary.md").read_text() for d in defs)


# ------------------------------------------------------------------------------------------- the mechanism
def _units(*texts):
    return list(texts)


def _translated(units, zh):
    return T.Translation("chapters/x.ipynb", [{"sha": T.sha(u), "en": u, "zh": z} for u, z in zip(units, zh)])


def test_a_translation_is_current_only_for_the_english_it_translates():
    en = _units("# Title", "One paragraph.", "Two paragraphs.")
    tr = _translated(en, ["# 标题", "一段。", None])
    assert T.unit_states(en, tr) == ["current", "current", "missing"]
    changed = _units("# Title", "One paragraph, changed.", "Two paragraphs.")
    assert T.unit_states(changed, tr) == ["current", "stale", "missing"]


def test_extract_keeps_the_old_pair_beside_the_new_english():
    en = _units("# Title", "One paragraph.", "Two paragraphs.")
    tr = _translated(en, ["# 标题", "一段。", "两段。"])
    new, counts = T.reconcile(_units("# Title", "One paragraph, changed.", "Two paragraphs.", "New."), tr)
    assert counts == {"kept": 2, "stale": 1, "new": 1, "dropped": 0}
    u = new.units[1]
    assert u["en"] == "One paragraph, changed." and u["zh"] is None and u["sha"] == T.sha(u["en"])
    assert (u["old_en"], u["old_zh"]) == ("One paragraph.", "一段。")
    assert new.units[3] == {"sha": T.sha("New."), "en": "New.", "zh": None}
    # reworked: the translator writes zh and deletes the old pair; it is current again
    u["zh"] = "一段，改过。"
    del u["old_en"], u["old_zh"]
    assert T.unit_states(_units("# Title", "One paragraph, changed.", "Two paragraphs.", "New."), new)[:3] == \
        ["current"] * 3


def test_translation_file_refuses_english_edited_by_hand(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "I18N", tmp_path)
    tr = _translated(["Hello."], ["你好。"])
    tr.save()
    path = T.translation_file(tr.page)
    assert T.Translation.load(tr.page).units == tr.units  # round trip through the YAML file
    path.write_text(path.read_text().replace("en: Hello.", "en: Hello!"))
    with pytest.raises(ValueError, match="edited by hand"):
        T.Translation.load(tr.page)


def _english_notebook():
    nb = new_notebook()
    setup = new_code_cell('# set-up\nimport subprocess, sys\nif "google.colab" in sys.modules:\n    pass')
    said = new_code_cell('say(f"**{x}** tokens", zh=f"**{x}** 个词元")', metadata={"tags": ["remove-input"]})
    said.outputs = [new_output("display_data", data={"text/markdown": "**3** tokens", "text/plain": "**3** tokens"},
                               metadata={T.SAY_KEY: {"en": "**3** tokens", "zh": "**3** 个词元"}})]
    printed = new_code_cell("print(1 + 1)")
    printed.outputs = [new_output("stream", name="stdout", text="2\n")]
    nb.cells = [setup, new_markdown_cell("# Why latency matters\n\nSome text."), said,
                new_markdown_cell("More text."), printed]
    return nb


def test_chinese_notebook_from_the_executed_english_one():
    en = _english_notebook()
    zh_md = ["# 为什么延迟很重要\n\n一些文字。", "更多文字。"]
    tr = _translated([c.source for c in en.cells if c.cell_type == "markdown"], zh_md)
    zh = T.zh_notebook("chapters/x.ipynb", en, {"setup_comment": "设置"}, tr)
    assert [c.source for c in zh.cells if c.cell_type == "markdown"] == zh_md
    assert zh.cells[2].outputs[0]["data"]["text/markdown"] == "**3** 个词元"
    assert zh.cells[4] == en.cells[4]  # code and output as they were
    assert zh.cells[0].source.startswith("# 设置\nimport os\nos.environ[\"SECBOOK_LANG\"] = \"zh\"")
    assert en.cells[2].outputs[0]["data"]["text/markdown"] == "**3** tokens", "the English notebook is not touched"
    env = {}
    exec(zh.cells[0].source, env)  # the set-up cell outside Colab only sets the language
    assert os.environ.pop("SECBOOK_LANG") == "zh"


def test_untranslated_page_keeps_its_english_under_a_notice():
    en = _english_notebook()
    site = {"titles": {"Why latency matters": "为什么延迟很重要"},
            "notices": {"pending": "尚未翻译。", "partial": "部分。"}}
    zh = T.zh_notebook("chapters/x.ipynb", en, site, T.Translation("chapters/x.ipynb"))
    md = [c.source for c in zh.cells if c.cell_type == "markdown"]
    assert md == ["# 为什么延迟很重要\n\nSome text.", ":::{note}\n尚未翻译。\n:::", "More text."]
    done = _translated([c.source for c in en.cells if c.cell_type == "markdown"], ["# 标题", "更多文字。"])
    assert not any(c.source.startswith(":::{note}") for c in T.zh_notebook("chapters/x.ipynb", en, site, done).cells)
    del en.cells[2].outputs[0]["metadata"][T.SAY_KEY]["zh"]  # a said sentence without its Chinese: partial
    assert ":::{note}\n部分。\n:::" in [c.source for c in T.zh_notebook("chapters/x.ipynb", en, site, done).cells]
    half = _translated(["More text."], ["更多文字。"])
    md = [c.source for c in T.zh_notebook("chapters/x.ipynb", en, site, half).cells if c.cell_type == "markdown"]
    assert md[1] == ":::{note}\n部分。\n:::" and md[2] == "更多文字。"


def test_say_calls_need_chinese_with_the_same_values():
    nb = new_notebook(cells=[
        new_code_cell('say(f"A took {t:.1f} ms")'),
        new_code_cell('w = "fast" if x else f"{y:.0f} ms"\nw_zh = "快" if x else f"{y:.0f} ms"\n'
                      'say(f"A {w} at {times(r)}", zh=f"A {w_zh}，{times_zh(r)}")'),
        new_code_cell('say(f"A took {t:.1f} ms", zh=f"A 用了 {t:.0f} ms")'),
    ])
    problems = T.say_problems(nb)
    assert len(problems) == 2
    assert problems[0].startswith("cell 0") and "without zh" in problems[0]
    assert problems[1].startswith("cell 2") and "t:.0f" in problems[1]


def test_printed_sentences_are_found_but_not_labels():
    nb = new_notebook(cells=[new_code_cell(
        'print(f"prompt {p}: TTFT {t:.1f} ms, TPOT {u:.1f} ms")\n'
        'print("The first call can pay one-off costs that a user pays only once.")')])
    found = T.printed_prose(nb)
    assert len(found) == 1 and "line 2" in found[0]


def test_said_outputs_need_their_chinese_with_the_same_numbers():
    nb = _english_notebook()
    assert T.output_problems(nb) == []
    nb.cells[2].outputs[0]["metadata"][T.SAY_KEY]["zh"] = "**4** 个词元"
    assert "differ" in T.output_problems(nb)[0]
    del nb.cells[2].outputs[0]["metadata"][T.SAY_KEY]
    assert "without its Chinese" in T.output_problems(nb)[0]


def test_text_checks_numbers_terms_and_broken_lines():
    avoid = {"令牌": "词元"}
    assert T._text_checks("p", [("A 500-token answer.", "500 个词元的回答。")], avoid) == []
    assert "number" in T._text_checks("p", [("A 500-token answer.", "五百个词元的回答。")], avoid)[0]
    assert "词元" in T._text_checks("p", [("A token.", "一个令牌。")], avoid)[0]
    assert T.broken_lines("第一行\n第二行") and not T.broken_lines("- 第一项\n- 第二项")
    assert not T.broken_lines("```\n中文\n中文\n```")


def test_markdown_pages_split_into_blocks_with_fences_whole():
    text = "# T\n\nPara one\nstill one.\n\n```{glossary}\nA\n  a\n\nB\n  b\n```\n\n:::{note}\nx\n\ny\n:::\n"
    assert T.split_blocks(text) == ["# T", "Para one\nstill one.", "```{glossary}\nA\n  a\n\nB\n  b\n```",
                                    ":::{note}\nx\n\ny\n:::"]


def test_pruning_refuses_anything_but_a_generated_edition(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "keep.md").write_text("mine")
    with pytest.raises(ValueError, match="not a generated edition"):
        T.write_edition({}, tmp_path)
    with pytest.raises(ValueError, match="not a generated edition"):
        T.write_edition({}, ROOT)
    assert (tmp_path / "book" / "keep.md").exists()


def test_language_switch_links_each_page_to_its_twin():
    from secbook_lang import switch_html, twin_href

    assert twin_href("chapters/01_why_latency", "en") == "../zh/chapters/01_why_latency.html"
    assert twin_href("chapters/01_why_latency", "zh") == "../../chapters/01_why_latency.html"
    assert twin_href("index", "en") == "zh/index.html"
    assert 'hreflang="en"' in switch_html("book/intro", "zh") and ">English<" in switch_html("book/intro", "zh")
    with pytest.raises(ValueError):
        twin_href("x", "fr")


def test_said_sentences_travel_from_one_english_run(tmp_path):
    """End to end in a kernel: the English notebook runs once; its output carries the Chinese sentence, which the
    Chinese notebook shows."""
    import nb as nbtool

    en = new_notebook(cells=[new_code_cell("from secbook.claims import say\nx = 3\n"
                                           'say(f"**{x}** tokens", zh=f"**{x}** 个词元");')])
    en.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "x.ipynb"
    nbformat.write(en, path)
    nbtool.execute(path, timeout=120)
    ran = nbformat.read(path, as_version=4)
    (out,) = ran.cells[0].outputs
    assert out["data"]["text/markdown"] == "**3** tokens"
    assert out["metadata"][T.SAY_KEY] == {"en": "**3** tokens", "zh": "**3** 个词元"}
    zh = T.zh_notebook("chapters/x.ipynb", ran, {}, T.Translation("chapters/x.ipynb"))
    assert zh.cells[0].outputs[0]["data"]["text/markdown"] == "**3** 个词元"


def test_the_site_build_reads_the_english_builds_execution_cache(tmp_path):
    """`make book`: the Chinese pages take their outputs from the run that the English pages show (jupyter-cache,
    as MyST-NB keeps it), not from the committed notebooks."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    page = "chapters/01_why_latency.ipynb"
    ran = nbformat.read(ROOT / page, as_version=4)
    cell = next(c for c in ran.cells if c.cell_type == "code" and c.get("outputs"))
    cell.outputs = [new_output("stream", name="stdout", text="from the English build's run\n")]
    get_cache(str(tmp_path)).cache_notebook_bundle(CacheBundleIn(ran, str(ROOT / page)), check_validity=False)
    merged = T.cached_notebooks(tmp_path)(page)
    texts = [o.get("text") for c in merged.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert "from the English build's run\n" in texts
    with pytest.raises(SystemExit, match="not in the execution cache"):
        T.cached_notebooks(tmp_path)("chapters/02_core_concepts.ipynb")


def test_the_tool_reads_the_key_say_writes():
    from secbook.claims import SAY_KEY

    assert T.SAY_KEY == SAY_KEY
