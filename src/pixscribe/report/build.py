"""``pixscribe report``: an output directory -> a static site that shows what was said and why.

Layout of the report directory (every path relative, so it works from ``file://``)::

    index.html            the run: counts, errors by kind, time, plots, stages, models, metrics
    page-0001.html ...    the shown rows, --page-size per page, each a card with its overlays
    assets/               report.css, report.js, rows.js (a small index of the shown rows, for filters)
    thumbs/, masks/       thumbnails re-read from the sources, mask images
    _report.json          what was built, from what (marks the directory as a report)

Memory stays bounded by one page: rows are chosen by a DuckDB query that reads only the
columns it needs, then fetched, rendered and written a page at a time. The report is built
in a temporary directory beside the destination and moved into place at the end, so a
failed build never leaves half a report, and an earlier report is replaced whole.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..deps import require
from ..imaging import DEFAULT_MAX_IMAGE_PIXELS
from ..io.writers import atomic_write_bytes
from .dest import check_apart, check_replaceable, swap_into_place
from .images import SourceReader
from .media import MaskFiles, Thumbnails
from .parts import OutputDir
from .query import Query
from .rowview import RowView, build_view, fmt_num
from .stats import read_eval, run_stats
from .svg import histogram

__all__ = ["ReportOptions", "ReportResult", "build_report"]

MARKER = "_report.json"
FLAG_NAMES = {"error": "has error", "hallucinations": "has hallucinations", "skipped": "skipped",
              "overlays": "has overlays", "expert-error": "an expert failed", "region-error": "a region failed",
              "no-image": "image unavailable"}
SEARCH_CHARS = 2000  # of each row's searchable text, in assets/rows.js


@dataclass
class ReportOptions:
    sample: int = 1000
    seed: int = 0
    where: str | None = None
    sort: str | None = None
    page_size: int = 50
    thumb_size: int = 384
    eval_path: Path | None = None
    images: bool = True
    fetch_urls: bool = True
    allow_private_urls: bool = False
    allow_any_path: bool = False
    workers: int = 4


@dataclass
class ReportResult:
    dest: Path
    rows: int
    shown: int
    pages: int
    thumbnails: int
    thumbnail_errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _env() -> Any:
    jinja2 = require("jinja2", extra="report", what="pixscribe report")
    env = jinja2.Environment(loader=jinja2.PackageLoader("pixscribe.report", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_num
    return env


def pager(pages: list[dict[str, Any]], current: int | None, around: int = 5) -> list[dict[str, Any]]:
    """The pager of one page: the first and last pages and those within ``around`` of
    ``current``, with gaps, so a report of 200,000 pages does not list them all on each."""
    keep = {1, len(pages)} | set(range((current or 1) - around, (current or 1) + around + 1))
    out: list[dict[str, Any]] = []
    for p in pages:
        if p["n"] in keep:
            if out and out[-1].get("n") != p["n"] - 1:
                out.append({"gap": True})
            out.append(p)
    return out


def _index_entry(v: RowView, page: int) -> dict[str, Any]:
    """What the filters need of a row: its page, error kind, flags and lower-cased text."""
    r = v.row
    texts = [r.get(k) for k in ("caption", "org_caption", "description", "caption_plain", "id", "source")]
    texts += [it["text"] for s in v.sections if s["kind"] == "expert" for it in s["items"] if it.get("text")]
    texts += [x["caption"] for s in v.sections if s["kind"] == "regions" for x in s["regions"] if x.get("caption")]
    t = " ".join(str(x) for x in texts if x).lower()[:SEARCH_CHARS]
    return {"p": page, "k": v.key, "e": v.error_kind or "", "f": sorted(v.flags), "t": t}


class _Builder:
    def __init__(self, out: OutputDir, tmp: Path, opts: ReportOptions, q: Query):
        self.out, self.tmp, self.opts, self.q = out, tmp, opts, q
        self.env = _env()
        self.reader = SourceReader(guard=out.source_guard(opts.allow_any_path), fetch_urls=opts.fetch_urls,
                                   allow_private=opts.allow_private_urls)
        cfg = (out.run_info().get("config") or {})
        self.thumbs = Thumbnails(tmp, self.reader, opts.thumb_size,
                                 cfg.get("max_image_pixels") or DEFAULT_MAX_IMAGE_PIXELS)
        self.masks = MaskFiles(tmp, opts.thumb_size)
        self.index = _RowsIndex(tmp / "assets" / "rows.js")
        self.pool = cf.ThreadPoolExecutor(max_workers=max(1, opts.workers))

    def _views(self, refs: Any, first: int, page: int) -> list[RowView]:
        rows: list[Any] = [None] * len(refs)
        for pos, row in self.q.fetch(refs):
            rows[pos] = row
        views = []
        for i, row in enumerate(rows):
            n = first + i + 1
            v = build_view(row, f"r{n}", self.masks)
            v.n, v.idx = n, n - 1
            views.append(v)
        thumbs = list(self.pool.map(self.thumbs.make, rows)) if self.opts.images else [None] * len(rows)
        for v, t in zip(views, thumbs):
            self._place(v, t)
            self.index.add(_index_entry(v, page))
        return views

    def _place(self, v: RowView, t: Any) -> None:
        w, h = v.frame
        scale = self.opts.thumb_size / max(w, h)
        v.display = (max(1, round(w * scale)), max(1, round(h * scale)))
        if t is None:
            v.thumb_error = "images are off for this report (--no-images)"
        elif t.href is None:
            v.thumb_error = t.error
        else:
            v.thumb, v.changed = t.href, t.changed
            v.display = (t.width, t.height)
        if v.thumb is None:
            v.flags.add("no-image")

    def pages(self, refs: Any) -> list[dict[str, Any]]:
        size = max(1, self.opts.page_size)
        return [{"n": i + 1, "href": f"page-{i + 1:04d}.html", "rows": len(refs[s:s + size])}
                for i, s in enumerate(range(0, len(refs), size))]

    def write_pages(self, refs: Any, pages: list[dict[str, Any]], kinds: list[str],
                    flags: list[str]) -> None:
        size = max(1, self.opts.page_size)
        tpl = self.env.get_template("page.html")
        for p in pages:
            start = (p["n"] - 1) * size
            views = self._views(refs[start:start + size], start, p["n"])
            html = tpl.render(views=views, pages=pages, pager=pager(pages, p["n"]), current=p["n"], out_dir=str(self.out.path),
                              error_kinds=kinds, flags=flags, flag_names=FLAG_NAMES)
            (self.tmp / p["href"]).write_text(html, encoding="utf-8")

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.reader.close()
        self.index.close()


class _RowsIndex:
    """``assets/rows.js``: ``window.PIXSCRIBE_ROWS = [...]`` written a row at a time, so memory
    does not grow with the rows shown. ``<`` is written ``\\u003c``: no row text can end a script."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w", encoding="ascii")  # noqa: SIM115 - closed by close()
        self.f.write("window.PIXSCRIBE_ROWS = [\n")
        self.n = 0

    def add(self, entry: dict[str, Any]) -> None:
        text = json.dumps(entry, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")
        self.f.write(("," if self.n else "") + text + "\n")
        self.n += 1

    def close(self) -> None:
        if not self.f.closed:
            self.f.write("];\n")
            self.f.close()


def _kinds_and_flags(q: Query) -> tuple[list[str], list[str]]:
    """Error kinds of the whole output (for the filter), and every flag a row can have."""
    kinds = [k for (k,) in q.all("SELECT DISTINCT split_part(error, ':', 1) FROM rows WHERE error IS NOT NULL "
                                 "ORDER BY 1")] if "error" in q.types else []
    flags = ["error", "no-image", "overlays"]
    if "hallucinations" in q.types or "objects" in q.types:
        flags.insert(1, "hallucinations")
    if "textualize_skipped" in q.types:
        flags.insert(2, "skipped")
    if any(c.startswith("expert_") for c in q.types):
        flags.append("expert-error")
    if "regions" in q.types or "region" in q.types:
        flags.append("region-error")
    return [k.strip() for k in kinds], flags


def _write_index(b: _Builder, stats: dict[str, Any], pages: list[dict[str, Any]], shown: int) -> None:
    o = b.opts
    plots = {"caption_words": histogram(stats["hist"]["caption_words"], "words", "caption length"),
             "hallucinations": histogram(stats["hist"]["hallucinations"], "hallucinated phrases", "hallucinations"),
             "seconds": histogram(stats["hist"]["seconds"], "seconds", "seconds per row")}
    html = b.env.get_template("index.html").render(
        stats=stats, pages=pages, pager=pager(pages, None), current=None, out_dir=str(b.out.path), shown=shown, where=o.where, sort=o.sort,
        sample=o.sample, seed=o.seed, plots=plots, evaluation=read_eval(o.eval_path), version=__version__,
        written_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
        config_json=json.dumps(stats["run"].get("config") or {}, indent=1, sort_keys=True, default=str))
    (b.tmp / "index.html").write_text(html, encoding="utf-8")


def _write_assets(tmp: Path) -> None:
    assets = tmp / "assets"
    assets.mkdir(exist_ok=True)
    here = Path(__file__).parent / "assets"
    for name in ("report.css", "report.js"):
        shutil.copyfile(here / name, assets / name)


def build_report(out_dir: str | Path, dest: str | Path, opts: ReportOptions | None = None) -> ReportResult:
    """Write the report of ``out_dir`` to ``dest`` (see the module docstring)."""
    t0 = time.perf_counter()
    opts = opts or ReportOptions()
    read_eval(opts.eval_path)  # a bad --eval fails before any work
    out = OutputDir(Path(out_dir))
    dest = Path(dest)
    check_apart(out.path, dest, "-o")
    check_replaceable(dest, marker=MARKER, what="a pixscribe report", flag="-o", overwrite=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="pixscribe-report-") as scratch:
            q = Query(out, Path(scratch))
            stats = run_stats(out, q, opts.where)
            refs = q.select(opts.where, opts.sort, opts.sample, opts.seed)
            b = _Builder(out, tmp, opts, q)
            try:
                pages = b.pages(refs)
                kinds, flags = _kinds_and_flags(q)
                b.write_pages(refs, pages, kinds, flags)
                _write_index(b, stats, pages, len(refs))
                _write_assets(tmp)
            finally:
                b.close()
        result = ReportResult(dest, stats["rows"], len(refs), len(pages), b.thumbs.made, dict(b.thumbs.failed),
                              time.perf_counter() - t0)
        marker = {"pixscribe_version": __version__, "out_dir": str(out.path.resolve()), "rows": result.rows,
                  "shown": result.shown, "pages": result.pages, "options": {k: str(v) if isinstance(v, Path) else v
                                                                            for k, v in vars(opts).items()}}
        atomic_write_bytes(tmp / MARKER, json.dumps(marker, indent=1).encode(), fsync_dir=False)
        swap_into_place(tmp, dest)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
