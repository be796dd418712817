"""The report in headless Chromium (Debian's chromium, driven over the DevTools protocol): it
loads from file:// with no failed request, no request off file://, no console error and no
CSP violation; hostile captions do not run; a toggle hides and shows an overlay; hovering an
inline box highlights its entity; the filters narrow the rows (and count the other pages'
matches); a screenshot is taken (kept under pytest's tmp dir, copied to $PIXSCRIBE_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pixscribe.report.build import ReportOptions, build_report
from pixscribe.testing.chromium import Chromium, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (dev/setup installs it)")


@pytest.fixture(scope="module")
def browser():
    with Chromium() as c:
        yield c


def _keep(shot: Path) -> None:
    art = os.environ.get("PIXSCRIBE_ARTIFACTS")
    if art:
        Path(art).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(art) / shot.name)


VISIBLE_ARTICLES = "document.querySelectorAll('article.row:not([hidden])').length"


def _set(page, elem_id: str, value: str, event: str) -> None:
    page.eval(f"(() => {{ const e = document.getElementById('{elem_id}'); e.value = '{value}'; "
              f"e.dispatchEvent(new Event('{event}', {{bubbles: true}})); }})()")


def _layer_display(card: str, layer: str) -> str:
    return (f"getComputedStyle(document.querySelector('#{card} g.layer[data-layer=\"{layer}\"]')).display")


def test_page_in_chromium(browser, sample_out, tmp_path):
    rep = tmp_path / "rep"
    build_report(sample_out, rep, ReportOptions(page_size=5))
    page = browser.page()
    try:
        page.goto((rep / "page-0001.html").as_uri())
        assert page.eval("document.documentElement.dataset.ready") == "1"
        assert page.problems() == []
        urls = page.requests()
        assert urls and all(u.startswith("file://") for u in urls), urls
        assert any("/thumbs/" in u for u in urls) and any("/masks/" in u for u in urls)
        assert page.eval("typeof window.__pwned") == "undefined"
        assert page.eval("document.querySelectorAll('img').length") == 5
        assert page.eval("[...document.images].every(i => i.complete && i.naturalWidth > 0)")

        # a toggle hides and shows one overlay layer of one card
        assert page.eval(_layer_display("r1", "regions")) != "none"
        page.eval("document.querySelector('#r1 input[data-toggle=\"regions\"]').click()")
        assert page.eval(_layer_display("r1", "regions")) == "none"
        assert page.eval(_layer_display("r1", "objects")) != "none"
        page.eval("document.querySelector('#r1 input[data-toggle=\"regions\"]').click()")
        assert page.eval(_layer_display("r1", "regions")) != "none"

        # hovering an inline box of the panoptic caption highlights its box on the overlay
        page.eval("document.querySelector('#r3 a.boxref').dispatchEvent(new MouseEvent('mouseover', {bubbles: true}))")
        ent = page.eval("document.querySelector('#r3 a.boxref').dataset.ent")
        assert page.eval(f"document.querySelector('#r3 g.ent[data-ent=\"{ent}\"]').classList.contains('hl')")
        assert page.eval("document.getElementById('tip').textContent") == "cat · entities"

        # filters narrow the rows; the pager counts matches on the other page
        assert page.eval(VISIBLE_ARTICLES) == 5
        _set(page, "f-text", "tabby", "input")
        page.eval("new Promise(r => setTimeout(r, 300))")
        assert page.eval(VISIBLE_ARTICLES) == 1
        assert page.eval("document.querySelector('article.row:not([hidden])').id") == "r3"
        assert page.eval("document.getElementById('f-count').textContent") == "1 of 5 rows on this page"
        assert page.eval("document.querySelector('[data-page-count=\"2\"]').textContent") == " (0)"
        _set(page, "f-text", "", "input")
        page.eval("new Promise(r => setTimeout(r, 300))")
        _set(page, "f-error", "*", "change")
        assert page.eval(VISIBLE_ARTICLES) == 0  # the error row is on page 2
        assert page.eval("document.querySelector('[data-page-count=\"2\"]').textContent") == " (1)"
        assert page.eval("location.hash") == "#error=*"
        page.eval_and_wait("document.querySelector('a[data-page=\"2\"]').click()")
        assert page.eval("location.pathname.endsWith('page-0002.html')")
        assert page.eval(VISIBLE_ARTICLES) == 1  # the filter came along in the link's hash
        assert page.eval("document.querySelector('article.row:not([hidden])').dataset.error") == "decode"
        _set(page, "f-error", "", "change")
        page.eval("document.querySelector('input[data-flag=\"hallucinations\"]').click()")
        assert page.eval(VISIBLE_ARTICLES) == 0 and page.eval("document.querySelector('[data-page-count=\"1\"]').textContent") == " (1)"

        page.goto((rep / "page-0001.html").as_uri())
        page.eval("document.getElementById('f-overlays').click()")
        assert page.eval(_layer_display("r1", "objects")) == "none"
        page.eval("document.getElementById('f-overlays').click()")
        shot = page.screenshot(tmp_path / "report-page.png")
        assert shot.stat().st_size > 20_000
        _keep(shot)

        page.goto((rep / "index.html").as_uri())
        assert page.problems() == [] and page.eval("document.querySelectorAll('svg.hist').length") == 3
        _keep(page.screenshot(tmp_path / "report-run.png"))
    finally:
        page.close()


def test_a_script_in_a_page_would_be_reported(browser, tmp_path):
    """The checks above can fail: an inline script (blocked by the page's CSP) and a missing file
    both show up as problems."""
    rep = tmp_path / "bad"
    rep.mkdir()
    csp = "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'self'\">"
    (rep / "x.html").write_text(f"<!doctype html><html><head>{csp}</head><body><script>window.ran = 1</script>"
                                "<img src=\"missing.png\"></body></html>")
    page = browser.page()
    try:
        page.goto((rep / "x.html").as_uri())
        problems = page.problems()
        assert page.eval("typeof window.ran") == "undefined"
        assert any("Content Security Policy" in p for p in problems), problems
        assert any(p.startswith("failed request") for p in problems), problems
    finally:
        page.close()


def test_a_malformed_hash_leaves_the_page_script_working(browser, sample_out, tmp_path):
    """A link with a broken %-escape in its #hash (decodeURIComponent throws URIError) must not
    stop the script: the page is ready, the filters work, the good parts of the hash apply."""
    rep = tmp_path / "rep"
    build_report(sample_out, rep, ReportOptions(page_size=5))
    page = browser.page()
    try:
        page.goto((rep / "page-0001.html").as_uri() + "#q=%E0%A4%A&flags=hallucinations&error=%")
        assert page.problems() == []
        assert page.eval("document.documentElement.dataset.ready") == "1"
        assert page.eval("document.querySelector('input[data-flag=\"hallucinations\"]').checked")
        assert page.eval(VISIBLE_ARTICLES) == 1  # the flag from the hash applied; the broken parts ignored
        _set(page, "f-text", "tabby", "input")
        page.eval("new Promise(r => setTimeout(r, 300))")
        assert page.eval(VISIBLE_ARTICLES) == 0
    finally:
        page.close()


def test_titles_say_how_many_pages(browser, sample_out, tmp_path):
    rep = tmp_path / "rep"
    build_report(sample_out, rep, ReportOptions(page_size=5))
    page = browser.page()
    try:
        for n in (1, 2):
            page.goto((rep / f"page-{n:04d}.html").as_uri())
            assert page.eval("document.title") == f"pixscribe report · page {n} of 2"
    finally:
        page.close()


def test_long_unbroken_strings_stay_inside_their_cards(browser, tmp_path):
    """A 3,000-character caption without a space, and the same in every other text a card
    shows, wraps inside the card: no card and no page is wider than the window."""
    import json

    from fixtures_report import rect_rle, write_output
    from pixscribe.testing import write_sample_photos

    photos = write_sample_photos(tmp_path / "photos", ("astronaut",))
    long = "x" * 3000
    row = {"id": "long-" + long, "source": str(photos[0]), "width": 512, "height": 512, "sha256": None,
           "method": "textualize", "caption": long, "org_caption": long, "description": long, "error": "decode: " + long,
           "objects": json.dumps([{"phrase": long, "verdict": "grounded", "score": 0.5, "box": [1, 1, 50, 50],
                                   "detector": long}]),
           "regions": json.dumps([{"caption": long, "box": [1, 1, 99, 99], "mask": rect_rle(512, 512, (1, 1, 99, 99))}]),
           "expert_ocr": json.dumps({"lines": [{"text": long, "box": [1, 1, 40, 9]}]}),
           "expert_stats": json.dumps({"note": long}), "notes": long,
           "provenance": json.dumps({"caption": {"stage": long, "model": long, "prompt_sha": long, "seconds": 1.0}}),
           "stages": json.dumps({long: {"status": "ok", "fp": long, "fields": [long]}})}
    rep = tmp_path / "rep"
    build_report(write_output(tmp_path / "out", [row]), rep)
    page = browser.page()
    try:
        page.goto((rep / "page-0001.html").as_uri())
        page.eval("document.querySelectorAll('details').forEach(d => d.open = true)")
        assert page.eval("document.documentElement.scrollWidth <= window.innerWidth"), \
            page.eval("document.documentElement.scrollWidth")
        assert page.eval("[...document.querySelectorAll('article.row')].every(a => a.scrollWidth <= a.clientWidth)")
        assert page.eval("document.querySelector('article.row').getBoundingClientRect().right <= window.innerWidth")
    finally:
        page.close()
