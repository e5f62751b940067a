"""The rendered book as a reader's browser sees it: every page served on localhost and loaded in headless
Chromium. The book is built from the notebooks' committed outputs (nbval re-executes every notebook in the
same test run, and `make book` executes them afresh), so this test checks rendering, not computation."""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "_build" / "ci"
HTML = OUT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def toc_pages() -> list[str]:
    """Every document in _toc.yml, as the relative path of its HTML page."""
    docs = re.findall(r"(?:root|file):\s*(\S+)", (ROOT / "_toc.yml").read_text())
    return [d + ".html" if d != "book/intro" else "book/intro.html" for d in docs]


PAGES = toc_pages()
sys.path.insert(0, str(ROOT / "tools"))
import translate  # noqa: E402

# The Chinese edition (_build/html/zh): its translated pages get every check below; every page of both editions is
# checked for its language switch (test_every_page_links_to_its_twin) without a browser.
PAGES_ZH = ["zh/" + p for p, src in zip(PAGES, translate.pages()) if translate.is_translated(src)]


def build_from_committed_outputs() -> Path:
    """jupyter-book build with execution off, into _build/ci."""
    import yaml

    subprocess.run(["bash", str(ROOT / "tools" / "vendor_js.sh")], check=True, cwd=ROOT)
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg["execute"]["execute_notebooks"] = "off"
    ext = cfg["sphinx"]["local_extensions"]  # relative to the configuration file, which moves to _build/ci
    cfg["sphinx"]["local_extensions"] = {name: str(ROOT / path) for name, path in ext.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "_config.yml").write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
    shutil.rmtree(HTML, ignore_errors=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    r = subprocess.run([str(jb), "build", str(ROOT), "--config", str(OUT / "_config.yml"), "--path-output",
                        str(OUT)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (HTML / "index.html").exists()
    return HTML


def build_chinese_edition(html: Path) -> Path:
    """The Chinese edition from the same committed outputs, into ``html``/zh (as `make book` does from its run)."""
    return translate.site_html(None, out=html / "zh", stage=ROOT / "_build" / "ci-zh")


@pytest.fixture(scope="module")
def site():
    """Build the book (both editions) and serve it on a free localhost port."""
    html = build_from_committed_outputs()
    build_chinese_edition(html)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing: `make setup` installs them (apt-get install chromium chromium-driver)")
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                "--disable-sync", "--disable-quic", "--window-size=1280,1600",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):  # off-host fails at once (and is logged)
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every network request, for the checks below
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 15.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: d.execute_script(script))


def network(driver, site: str) -> tuple[list[str], list[str]]:
    """Requests since the last call, from Chromium's performance log: (URLs off this site, failed requests)."""
    off, failed = [], []
    for entry in driver.get_log("performance"):
        m = json.loads(entry["message"])["message"]
        p = m.get("params", {})
        if m["method"] == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not url.startswith((site, "data:", "blob:", "about:")):
                off.append(url)
        elif m["method"] == "Network.responseReceived" and p["response"]["status"] >= 400:
            if not p["response"]["url"].endswith("/favicon.ico"):  # the browser's own guess, not the page's
                failed.append(f"{p['response']['status']} {p['response']['url']}")
    return off, failed


def test_toc_lists_pages():
    assert "book/intro.html" in PAGES and len(PAGES) >= 4
    assert "zh/book/intro.html" in PAGES_ZH


SWITCH = re.compile(r'<a class="secbook-lang-link" href="([^"]+)"')


def test_every_page_links_to_its_twin(site):
    """Every page of each edition links to the same page of the other, and that page exists and links back."""
    for page in PAGES:
        for here, there in ((page, "zh/" + page), ("zh/" + page, page)):
            links = SWITCH.findall((HTML / here).read_text(encoding="utf-8"))
            assert len(links) == 1, f"{here}: {len(links)} language switches"
            target = (HTML / here).parent / links[0]
            assert target.resolve() == (HTML / there).resolve() and target.exists(), f"{here} links to {links[0]}"


# Two different Chinese characters drawn in the page's font differ, and differ from an unassigned code point's
# glyph (the empty box a missing font shows): no tofu.
NO_TOFU = """
const fam = getComputedStyle(document.querySelector('article') || document.body).fontFamily;
const px = ch => { const cv = document.createElement('canvas'); cv.width = cv.height = 48;
  const x = cv.getContext('2d'); x.font = '40px ' + fam; x.fillText(ch, 2, 40);
  return Array.from(x.getImageData(0, 0, 48, 48).data).join(','); };
const box = px('\u0378');
return px('中') !== box && px('文') !== box && px('中') !== px('文');
"""


@pytest.mark.parametrize("page", PAGES + PAGES_ZH)
def test_page_renders(site, browser, page):
    url = f"{site}/{page}"
    assert urllib.request.urlopen(url, timeout=30).status == 200
    network(browser, site)  # drop what earlier pages logged
    browser.get(url)
    wait_for(browser, "return document.readyState === 'complete'")
    assert browser.title.strip() and "404" not in browser.title

    # the language switch leads to this page in the other edition
    twin = page[3:] if page.startswith("zh/") else "zh/" + page
    href = browser.execute_script("return document.querySelector('a.secbook-lang-link').href")
    assert href == f"{site}/{twin}", f"{page}: the language switch leads to {href}"
    if page.startswith("zh/"):
        assert browser.execute_script("return document.documentElement.lang").startswith("zh")
        assert browser.execute_script(NO_TOFU), f"{page}: Chinese text drawn as empty boxes (no CJK font)"

    # widgets: every embedded widget view must be replaced by a rendered widget
    views = browser.execute_script(
        "return document.querySelectorAll('script[type=\"application/vnd.jupyter.widget-view+json\"]').length")
    if views:
        wait_for(browser, "return document.querySelectorAll('.jupyter-widgets').length > 0", timeout=30)
        rendered = browser.execute_script("return document.querySelectorAll('.widget-subarea, .jupyter-widgets').length")
        assert rendered >= views, f"{page}: {views} widget views but {rendered} rendered widgets"

    # mermaid diagrams are drawn (an <svg> replaces the diagram text), from the vendored mermaid.js
    diagrams = browser.execute_script("return document.querySelectorAll('pre.mermaid, div.mermaid').length")
    if diagrams:
        wait_for(browser, "return Array.from(document.querySelectorAll('pre.mermaid, div.mermaid'))"
                          ".every(e => e.querySelector('svg'))", timeout=30)

    # no Python error in any cell output
    errors = browser.execute_script(
        "return Array.from(document.querySelectorAll('.cell_output')).map(e => e.innerText)"
        ".filter(t => t.includes('Traceback (most recent call last)') || /\\w+Error: /.test(t) && t.includes('----> '))")
    assert not errors, f"{page}: error output in a cell: {errors[0][:500]}"
    assert not browser.execute_script("return document.querySelectorAll('.output.traceback, .output.error').length")

    # formulas are typeset by the vendored MathJax: no raw TeX left on the page
    formulas = browser.execute_script("return document.querySelectorAll('.math').length")
    if formulas:
        wait_for(browser, "return document.querySelectorAll('mjx-container').length >= "
                          "document.querySelectorAll('.math').length", timeout=30)
    raw = browser.execute_script(r"return Array.from(document.querySelectorAll('article p, article li, article td, "
                                 r"article dd, .math')).map(e => e.innerText).join(' ')"
                                 r".match(/\\\(|\\\[|\\begin\{|\$\$/g)")  # prose and maths, not code
    assert not raw, f"{page}: formulas left as raw TeX: {raw[:5]}"

    # every image loads
    wait_for(browser, "return Array.from(document.images).every(i => i.complete)")
    broken = browser.execute_script("return Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)")
    assert broken == [], f"{page}: images that did not load: {broken}"

    # everything the page asked for came from this site, and came
    off, failed = network(browser, site)
    assert not off, f"{page}: requests off this site (the book must work offline): {off[:5]}"
    assert not failed, f"{page}: requests that failed: {failed[:5]}"

    SHOTS.mkdir(parents=True, exist_ok=True)
    height = min(browser.execute_script("return document.body.scrollHeight"), 12000)
    browser.set_window_size(1280, max(height, 800))
    browser.save_screenshot(str(SHOTS / (page.replace("/", "__").replace(".html", ".png"))))
    browser.set_window_size(1280, 1600)
