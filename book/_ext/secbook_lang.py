"""The language switch of the two editions: every page links to the same page in the other language.

The English book is built into ``_build/html`` and the Chinese one (tools/translate.py) into ``_build/html/zh``, with
the same page names, so a page's twin is found by its name alone: one level down into ``zh/`` from an English page,
one level up from a Chinese one. The link is written into each page's HTML at build time (no script needed), at the
top of the article, with a ``<link rel="alternate" hreflang>`` in its head. ``secbook_edition`` (``en`` or ``zh``,
set in each edition's _config.yml) says which edition is being built.
"""
from __future__ import annotations

LABELS = {"en": ("中文", "zh-CN"), "zh": ("English", "en")}  # edition -> (the other edition's name, its language)


def twin_href(pagename: str, edition: str) -> str:
    """The relative URL, from page ``pagename`` of ``edition``, of the same page in the other edition."""
    if edition not in LABELS:
        raise ValueError(f"secbook_edition must be one of {sorted(LABELS)}, got {edition!r}")
    up = "../" * pagename.count("/")
    return up + ("zh/" if edition == "en" else "../") + pagename + ".html"


def switch_html(pagename: str, edition: str) -> str:
    label, lang = LABELS[edition]
    return (f'<p class="secbook-lang"><a class="secbook-lang-link" href="{twin_href(pagename, edition)}" '
            f'hreflang="{lang}" lang="{lang}">{label}</a></p>\n')


def _add_switch(app, pagename, templatename, context, doctree) -> None:
    if "body" not in context or doctree is None:  # search, index pages: no article to put it in
        return
    edition = app.config.secbook_edition
    context["body"] = switch_html(pagename, edition) + context["body"]
    _, lang = LABELS[edition]
    context["metatags"] = context.get("metatags", "") + (
        f'\n<link rel="alternate" hreflang="{lang}" href="{twin_href(pagename, edition)}" />')


def setup(app):
    app.add_config_value("secbook_edition", "en", "html")
    app.add_css_file("secbook-lang.css")
    app.connect("html-page-context", _add_switch)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
