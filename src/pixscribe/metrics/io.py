"""Reading predictions and references for ``pixscribe eval``.

PRED may be
- a pixscribe output directory: every ``part-*.parquet`` (and ``part-*.jsonl``), the
  caption column chosen with ``column`` (default ``caption``), rows keyed by ``id``;
  error rows (``error`` set, no caption) count as missing predictions;
- a COCO results json: ``[{"image_id": ..., "caption": ...}, ...]``;
- a ``.jsonl`` / ``.parquet`` file with ``id`` and ``caption`` (or ``column``).

REFS may be
- a COCO captions annotation json (``images`` + ``annotations`` with ``image_id`` and
  ``caption``);
- a ``.jsonl`` / ``.parquet`` file with ``id`` and ``refs`` (a list of strings), or with
  ``id`` (or ``image``) and one ``caption``: the SA-Pancap style of one reference caption
  per image (with inline boxes), which PancapScore needs;
- a ``.json`` list of such rows, or an object ``{id: caption or [captions]}``.

A PRED ``.json`` may also be an object ``{id: caption}``, or ``{id: [caption]}`` (the ``res`` file
of Image Textualization's DID-Bench: one caption per list).

Ids are compared as strings. Each id has at most one prediction (a second one is an error
naming both rows, as pycocoevalcap refuses two hypotheses for one image); captions and
references are text of at most ``max_chars`` characters (``--max-caption-chars``, 10,000:
METEOR's time climbs steeply past it, ``bench/p_meteor_length.py``). Files are read through
:mod:`.files` (regular files only, bounded sizes, UTF-8, every error naming the file).

POPE (``--metrics pope``): LABELS is a POPE question file (:func:`read_pope_labels`), PRED
its answers (:func:`read_pope_answers`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .files import MetricsInputError, json_list, jsonl_values, kind, read_json, regular_file, rows

MAX_CAPTION_CHARS = 10_000
Rows = list[tuple[str, dict[str, Any]]]


def _rows(path: Path, flag: str = "--pred") -> Rows:
    return rows(path, flag)


def row_id(r: dict[str, Any], keys: tuple[str, ...], where: str) -> str:
    for k in keys:
        v = r.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise MetricsInputError(f"{where}: the {k!r} is {kind(v)}, not a string or an integer")
        return str(v)
    raise MetricsInputError(f"{where}: a row has no {' or '.join(repr(k) for k in keys)} (columns: {', '.join(sorted(r))})")


def text(v: Any, what: str, where: str, max_chars: int) -> str | None:
    """A caption or reference: text of at most ``max_chars`` characters, or None."""
    if v is None:
        return None
    if not isinstance(v, str):
        raise MetricsInputError(f"{where}: {what} is {kind(v)}, not text")
    if len(v) > max_chars:
        raise MetricsInputError(f"{where}: {what} is {len(v):,} characters, over --max-caption-chars {max_chars:,}; "
                                "raise it to score longer text")  # fmt: skip
    return v


def _output_rows(p: Path, flag: str) -> Rows:
    """Every row of a pixscribe output directory's ``part-*`` files (``where`` names the file)."""
    files = sorted(p.glob("part-*.parquet")) + sorted(p.glob("part-*.jsonl"))
    if not files:
        files = sorted(p.rglob("part-*.parquet")) + sorted(p.rglob("part-*.jsonl"))
    if not files:
        raise MetricsInputError(f"{flag} {p}: no part-*.parquet or part-*.jsonl files in this directory")
    return [(f"{f.name} {w}", r) for f in files for w, r in _rows(f, flag)]


def _one_caption(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 1 and isinstance(v[0], str)


def _prediction_rows(p: Path, column: str) -> tuple[Rows, tuple[str, ...]]:
    """The rows of PRED, and the keys that hold their id (COCO results: ``image_id``)."""
    if p.is_dir():
        return _output_rows(p, "--pred"), ("id",)
    if p.suffix != ".json":
        return _rows(p, "--pred"), ("id",)
    data = read_json(p, "--pred")
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    elif isinstance(data, dict):  # {id: caption}, or IT's DID-Bench res file {id: [caption]}
        return [(f"key {k!r}", {"id": k, column: v[0] if _one_caption(v) else v}) for k, v in data.items()], ("id",)
    return json_list(data, p, "--pred"), ("image_id", "id")


def read_predictions(path: str | Path, column: str = "caption", max_chars: int = MAX_CAPTION_CHARS
                     ) -> tuple[dict[str, str], list[str]]:
    """``({id: caption}, ids_without_caption)``; an id given twice is an error."""
    p = Path(path)
    if not p.exists():
        raise MetricsInputError(f"--pred {p}: no such file or directory")
    preds: dict[str, str] = {}
    seen: dict[str, str] = {}
    empty: list[str] = []
    got, keys = _prediction_rows(p, column)
    if not got:
        raise MetricsInputError(f"--pred {p}: no predictions in it")
    for where, r in got:
        at = f"--pred {p}: {where}"
        k = row_id(r, keys, at)
        if k in seen:
            raise MetricsInputError(f"--pred {p}: id {k!r} has two predictions ({seen[k]} and {where}); "
                                    "give one caption per id")  # fmt: skip
        seen[k] = where
        if column not in r:
            raise MetricsInputError(f"{at}: no column {column!r} (columns: {', '.join(sorted(r))}); "
                                    "choose one with --column")  # fmt: skip
        c = text(r[column], f"the caption of id {k!r}", at, max_chars)
        if c is None or (r.get("error") and not c):
            empty.append(k)
        else:
            preds[k] = c
    return preds, empty


def ref_texts(v: Any, where: str, max_chars: int) -> list[str]:
    """References: one text or a list of texts, each bounded as :func:`text`."""
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list):
        raise MetricsInputError(f"{where}: references are text or a list of texts, not {kind(v)}")
    return [t for t in (text(x, "a reference", where, max_chars) for x in items) if t is not None]


def _ref_rows(items: Rows, p: Path, max_chars: int) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = {}
    for where, r in items:
        at = f"--refs {p}: {where}"
        key = row_id(r, ("id", "image"), at)
        v = r["refs"] if "refs" in r else r.get("caption")
        if v is None:
            raise MetricsInputError(f"{at}: rows need 'id' (or 'image') and 'refs' or 'caption' "
                                    f"(got {', '.join(sorted(r))})")
        refs.setdefault(key, []).extend(ref_texts(v, at, max_chars))
    return refs


def _coco_refs(data: dict[str, Any], p: Path, max_chars: int) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = {}
    for where, img in json_list(data.get("images", []), p, "--refs", "images "):
        refs.setdefault(row_id(img, ("id",), f"--refs {p}: {where}"), [])
    for where, a in json_list(data["annotations"], p, "--refs", "annotations "):
        at = f"--refs {p}: {where}"
        if "caption" not in a:
            raise MetricsInputError(f"{at}: annotation without 'caption' (is this an instances file?)")
        refs.setdefault(row_id(a, ("image_id",), at), []).extend(ref_texts(a["caption"], at, max_chars))
    return refs


def read_references(path: str | Path, max_chars: int = MAX_CAPTION_CHARS) -> dict[str, list[str]]:
    p = Path(path)
    if p.suffix == ".json":
        data = read_json(p, "--refs")
        if isinstance(data, dict) and "annotations" in data:
            refs = _coco_refs(data, p, max_chars)
        elif isinstance(data, list):
            refs = _ref_rows(json_list(data, p, "--refs"), p, max_chars)
        elif isinstance(data, dict):
            refs = _ref_rows([(f"key {k!r}", {"id": k, "refs": v}) for k, v in data.items()], p, max_chars)
        else:
            raise MetricsInputError(f"--refs {p}: expected a COCO captions file, a list of rows or {{id: caption}}")
    else:
        regular_file(p, "--refs")
        refs = _ref_rows(_rows(p, "--refs"), p, max_chars)
    refs = {k: v for k, v in refs.items() if v}
    if not refs:
        raise MetricsInputError(f"--refs {p}: no reference captions found")
    return refs


# --- POPE ------------------------------------------------------------------------------------

def _json_records(path: Path, flag: str) -> list[Any]:
    """A json list, or one JSON value per line (POPE's ``.json`` files are JSON lines)."""
    regular_file(path, flag)
    with open(path, "rb") as f:
        first = f.read(4096).lstrip()[:1]
    if first == b"[":
        data = read_json(path, flag)
        return list(data) if isinstance(data, list) else [data]
    return [v for _, v in jsonl_values(path, flag)]


def read_pope_labels(path: str | Path) -> list[dict[str, Any]]:
    """A POPE question file: ``{"question_id", "image", "text", "label": "yes"|"no"}`` per line."""
    p = Path(path)
    if not p.is_file():
        raise MetricsInputError(f"--pope-labels {p}: no such file")
    rows = _json_records(p, "--pope-labels")
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict) or r.get("label") not in ("yes", "no"):
            got = r.get("label") if isinstance(r, dict) else r
            raise MetricsInputError(f"--pope-labels {p}: question {n} has no label 'yes' or 'no' (got {got!r})")
    if not rows:
        raise MetricsInputError(f"--pope-labels {p}: no questions")
    return rows


def _answer_rows(p: Path) -> list[Any]:
    if p.is_dir() or p.suffix == ".parquet":
        return [r for _, r in (_output_rows(p, "--pred") if p.is_dir() else _rows(p, "--pred"))]
    return _json_records(p, "--pred")


def _answer_text(r: dict[str, Any], column: str, where: str) -> str | None:
    for c in dict.fromkeys((column, "answer", "text", "caption")):
        if c in r:
            v = r[c]
            return None if v is None or (r.get("error") and not v) else str(v)
    raise MetricsInputError(f"{where}: an answer row has no {column!r}, 'answer', 'text' or 'caption' "
                            f"(columns: {', '.join(sorted(r))}); choose one with --column")


def read_pope_answers(path: str | Path, labels: list[dict[str, Any]], column: str = "caption"
                      ) -> tuple[list[str], list[str], list[str]]:
    """Answers matched to ``labels``: ``(answers, their question ids, question ids without an answer)``.

    Rows with ``question_id`` (or pixscribe output rows with ``id``) are matched to the
    labels' ``question_id``; rows with neither (POPE's ``{"question", "answer"}``) are paired
    line by line, as POPE's evaluate.py does, and must be as many as the questions.
    """
    p = Path(path)
    if not p.exists():
        raise MetricsInputError(f"--pred {p}: no such file or directory")
    got = _answer_rows(p)
    where = f"--pred {p}"
    if any(not isinstance(r, dict) for r in got):
        raise MetricsInputError(f"{where}: every answer must be a JSON object")
    qids = [str(lab.get("question_id", n)) for n, lab in enumerate(labels, 1)]
    key = next((k for k in ("question_id", "id") if got and all(k in r for r in got)), None)
    if key is None:
        if len(got) != len(labels):
            raise MetricsInputError(f"{where}: {len(got)} answers for {len(labels)} questions; answers without "
                                    "question_id are paired with the questions line by line")
        texts = [_answer_text(r, column, where) for r in got]
        return [t if t is not None else "" for t in texts], qids, []
    by_id: dict[str, str | None] = {}
    for r in got:
        q = str(r[key])
        if q in by_id:
            raise MetricsInputError(f"{where}: {key} {q!r} is answered twice; give one answer per question")
        by_id[q] = _answer_text(r, column, where)
    have = [q for q in qids if by_id.get(q) is not None]
    missing = [q for q in qids if by_id.get(q) is None]
    return [by_id[q] for q in have], have, missing  # type: ignore[misc]
