"""The dataset card (``README.md``) of an hf or hub export: YAML metadata, then Markdown.

The YAML header is what ``datasets`` and the Hub read (tags, task categories and, for the hub
layout, the configs, features, splits and sizes); the body says how the rows were made: the
method, every model and stage with its fingerprint and prompt (from ``_run.json``), and a
summary of the exported rows' own provenance (rows per model and prompt hash, rows reusing
an earlier run's fields, rows left out by error kind).

Every string that comes from a run or its inputs (prompts, model names, column names) is put
in a code span or a fenced block longer than any backtick run inside it, so no Markdown or
HTML in it is rendered by the Hub or any viewer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import yaml

from .. import __version__
from ..record import error_kind
from .mix import ORIGINAL, RECAPTION
from .parts import parse_json

if TYPE_CHECKING:
    from .export import _Exporter

__all__ = ["card", "code", "fenced", "RowStats"]

_TOP = 20  # rows of each provenance count shown


class RowStats:
    """A provenance summary of the exported rows for the dataset card: rows per model and
    per prompt hash, rows with a field reused from an earlier run, errors by kind."""

    def __init__(self) -> None:
        self.models: dict[str, int] = {}
        self.prompts: dict[str, int] = {}
        self.reused = 0
        self.errors: dict[str, int] = {}
        self.dropped: dict[str, int] = {}  # error rows left out, by kind

    @staticmethod
    def _bump(d: dict[str, int], key: Any) -> None:
        if key is not None:
            d[str(key)] = d.get(str(key), 0) + 1

    def add(self, row: dict[str, Any]) -> None:
        self._bump(self.models, row.get("model"))
        self._bump(self.prompts, row.get("prompt_sha"))
        self._bump(self.errors, error_kind(row.get("error")))
        prov = parse_json(row.get("provenance"))
        if isinstance(prov, dict) and any(isinstance(v, dict) and v.get("reused") for v in prov.values()):
            self.reused += 1

    def left_out(self, row: dict[str, Any]) -> None:
        self._bump(self.dropped, error_kind(row.get("error")) or "error")


def code(value: Any) -> str:
    """``value`` as an inline code span, on one line, whatever backticks it holds."""
    s = " ".join(str(value).split()) or " "
    ticks = "`" * (max((len(m) for m in re.findall("`+", s)), default=0) + 1)
    pad = " " if s[0] == "`" or s[-1] == "`" else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


def fenced(text: Any, indent: str = "") -> list[str]:
    """``text`` as a fenced block (``text``), its fence longer than any backtick run in it."""
    s = str(text)
    ticks = "`" * max(3, max((len(m) for m in re.findall("`+", s)), default=0) + 1)
    return [f"{indent}{ticks}text", *(indent + ln for ln in s.splitlines()), f"{indent}{ticks}"]


def _md(value: Any) -> str:
    """Plain text with Markdown and HTML specials escaped."""
    s = " ".join(str(value).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", s)


def _counts(d: dict[str, int]) -> str:
    top = sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{code(k)} {n}" for k, n in top[:_TOP])
    return shown + (f", and {len(top) - _TOP} more" if len(top) > _TOP else "") if top else "none"


def _text_lines(ex: _Exporter) -> list[str]:
    c, o = ex.choice, ex.opts
    if c.mix:
        how = "each line one of" if c.lines else "one of"
        lines = [f"- text: {how} " + ", ".join(f"{code(col)} (weight {w:g})" for col, w in c.mix)
                 + f" per row, seed {o.seed}; taken: {_counts(c.sources)}"]
    elif c.p is not None:
        lines = [f"- text: the original caption ({code(ex.original)}) with probability {c.p} (seed {o.seed}): "
                 f"{c.took_original} of {c.had_original} rows with an original took it; the others the new caption "
                 f"({code(c.column)})"]
        if c.per_sample:
            lines.append(f"- mix per sample: {code(ORIGINAL)} and {code(RECAPTION)} hold both captions; draw per epoch "
                         f"with {code(f'pixscribe.report.mix.MixedCaption(p={c.p}, seed={o.seed})(row, epoch)')} "
                         f"({code('text')} is its epoch 0)")
    else:
        lines = [f"- text: the column {code(c.column)}"]
    for what, value in (("prefix", c.prefix), ("suffix", c.suffix)):
        if value:
            lines.append(f"- every text has the {what} {code(repr(value))}")
    return lines


def _head(ex: _Exporter, run: dict[str, Any]) -> list[str]:
    method = run.get("method") or {}
    res = ex.res
    empty = f"; rows with no caption text: {res.no_text}" if res.no_text else ""
    images = "none (--text-only)" if ex.opts.text_only else "the original bytes, re-read from each source"
    return [f"# pixscribe export of {code(ex.out.path.name)}", "",
            f"Exported by pixscribe {__version__} from the output directory {code(ex.out.path.name)}"
            + (f" (run fingerprint {code(run['fingerprint'])})" if run.get("fingerprint") else "") + ".", "",
            f"- method: **{_md(method.get('method', '?'))}** (caption from {code(method.get('caption_field', 'caption'))})",
            f"- rows: {res.written}; error rows left out: {res.error_rows_skipped}; "
            f"rows whose image could not be read again: {res.image_errors}{empty}",
            f"- images: {images}", *_text_lines(ex)]


def _models(run: dict[str, Any]) -> list[str]:
    lines = ["", "## Models and stages", ""]
    for m in run.get("models") or []:
        lines.append(f"- model ({_md(m.get('role'))}): {code(m.get('model'))} backend {code(m.get('backend'))}, "
                     f"revision {code(m.get('revision') or 'none')}")
    for s in (run.get("method") or {}).get("stages") or []:
        experts = ", ".join(code(e.get("expert")) for e in s.get("experts") or [] if isinstance(e, dict))
        lines.append(f"- stage {code(s.get('stage'))}: fingerprint {code(s.get('fingerprint'))}"
                     + (f", model {code(s.get('model'))}" if s.get("model") else "")
                     + (f", experts {experts}" if experts else ""))
        if s.get("prompt"):
            lines += ["", f"  prompt ({code(s.get('prompt_sha'))}):", "", *fenced(s["prompt"], "  "), ""]
    return lines


def _provenance(ex: _Exporter) -> list[str]:
    st = ex.stats
    lines = ["", "## Provenance of the exported rows", "",
             f"- rows by model: {_counts(st.models)}",
             f"- rows by prompt hash: {_counts(st.prompts)}",
             f"- rows with a field reused from an earlier run: {st.reused}",
             f"- error rows left out, by kind: {_counts(st.dropped)}"]
    if st.errors:
        lines.append(f"- error rows exported (--keep-errors), by kind: {_counts(st.errors)}")
    return lines


def card(ex: _Exporter, names: list[str], meta: dict[str, Any] | None = None, extra: list[str] = ()) -> str:
    """The card of an export whose rows are written (its counts are final)."""
    run = ex.out.run_info()
    header = {"tags": ["pixscribe", "image-captioning"], "task_categories": ["image-to-text", "text-to-image"],
              **(meta or {})}
    renamed = [f"- the output's own {code(old)} column is {code(new)} here (the export writes {code(old)})"
               for old, new in ex.renamed.items()]
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip("\n"), "---", "",
             *_head(ex, run), *extra, *_models(run), *_provenance(ex), "", "## Columns", "",
             *renamed, *([""] if renamed else []), ", ".join(code(c) for c in names), ""]
    return "\n".join(lines)
