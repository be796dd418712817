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

A PRED ``.json`` may also be an object ``{id: caption}``.

Ids are compared as strings.

POPE (``--metrics pope``): LABELS is a POPE question file (:func:`read_pope_labels`), PRED
its answers (:func:`read_pope_answers`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsInputError(ValueError):
    pass


def _rows_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise MetricsInputError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
    return rows


def _rows_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:
        raise MetricsInputError(f"{path}: cannot read parquet ({exc})") from exc


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return _rows_jsonl(path)
    if path.suffix == ".parquet":
        return _rows_parquet(path)
    raise MetricsInputError(f"{path}: unknown file type (expected .json, .jsonl, .parquet or a directory)")


def _read_json(path: Path, flag: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MetricsInputError(f"{flag} {path}: not valid JSON ({exc.msg})") from exc


def _caption_of(row: dict[str, Any], column: str, where: str) -> str | None:
    if column not in row:
        raise MetricsInputError(f"{where}: no column {column!r} (columns: {', '.join(sorted(row))}); choose one with --column")
    v = row.get(column)
    if v is None:
        return None
    return str(v)


def _output_rows(p: Path, flag: str) -> list[dict[str, Any]]:
    """Every row of a pixscribe output directory's ``part-*`` files."""
    files = sorted(p.glob("part-*.parquet")) + sorted(p.glob("part-*.jsonl"))
    if not files:
        files = sorted(p.rglob("part-*.parquet")) + sorted(p.rglob("part-*.jsonl"))
    if not files:
        raise MetricsInputError(f"{flag} {p}: no part-*.parquet or part-*.jsonl files in this directory")
    return [r for f in files for r in _rows(f)]


def read_predictions(path: str | Path, column: str = "caption") -> tuple[dict[str, str], list[str]]:
    """``({id: caption}, ids_without_caption)``. Later duplicates of an id win."""
    p = Path(path)
    if not p.exists():
        raise MetricsInputError(f"--pred {p}: no such file or directory")
    preds: dict[str, str] = {}
    empty: list[str] = []
    where = str(p)
    if p.is_dir():
        rows = _output_rows(p, "--pred")
    elif p.suffix == ".json":
        data = _read_json(p, "--pred")
        if isinstance(data, dict) and "annotations" in data:
            data = data["annotations"]
        elif isinstance(data, dict) and all(isinstance(v, str) or v is None for v in data.values()):
            data = [{"image_id": k, column: v} for k, v in data.items()]
        if not isinstance(data, list):
            raise MetricsInputError(f"--pred {p}: expected a COCO results list [{{'image_id', 'caption'}}, ...]")
        rows = [{"id": r.get("image_id", r.get("id")), **r} for r in data]
    else:
        rows = _rows(p)
    for r in rows:
        if "id" not in r:
            raise MetricsInputError(f"--pred {where}: a row has no 'id' (columns: {', '.join(sorted(r))})")
        k = str(r["id"])
        c = _caption_of(r, column, f"--pred {where}")
        if c is None or (r.get("error") and not c):
            empty.append(k)
            continue
        preds[k] = c
    empty = [k for k in dict.fromkeys(empty) if k not in preds]
    return preds, empty


def _ref_rows(rows: list[Any], p: Path) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = {}
    for r in rows:
        if not isinstance(r, dict):
            raise MetricsInputError(f"--refs {p}: expected rows (objects), got {type(r).__name__}")
        key = r.get("id", r.get("image"))
        v = r["refs"] if "refs" in r else r.get("caption")
        if key is None or v is None:
            raise MetricsInputError(f"--refs {p}: rows need 'id' (or 'image') and 'refs' or 'caption' "
                                    f"(got {', '.join(sorted(r))})")
        refs.setdefault(str(key), []).extend([str(v)] if isinstance(v, str) else [str(x) for x in v])
    return refs


def _coco_refs(data: dict[str, Any], p: Path) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = {}
    for img in data.get("images", []):
        refs.setdefault(str(img["id"]), [])
    for a in data["annotations"]:
        if "caption" not in a:
            raise MetricsInputError(f"--refs {p}: annotation without 'caption' (is this an instances file?)")
        refs.setdefault(str(a["image_id"]), []).append(str(a["caption"]))
    return refs


def read_references(path: str | Path) -> dict[str, list[str]]:
    p = Path(path)
    if not p.exists():
        raise MetricsInputError(f"--refs {p}: no such file")
    if p.suffix == ".json":
        data = _read_json(p, "--refs")
        if isinstance(data, dict) and "annotations" in data:
            refs = _coco_refs(data, p)
        elif isinstance(data, list):
            refs = _ref_rows(data, p)
        elif isinstance(data, dict):
            refs = _ref_rows([{"id": k, "refs": v} for k, v in data.items()], p)
        else:
            raise MetricsInputError(f"--refs {p}: expected a COCO captions file, a list of rows or {{id: caption}}")
    else:
        refs = _ref_rows(_rows(p), p)
    refs = {k: v for k, v in refs.items() if v}
    if not refs:
        raise MetricsInputError(f"--refs {p}: no reference captions found")
    return refs


# --- POPE ------------------------------------------------------------------------------------

def _json_records(path: Path, flag: str) -> list[Any]:
    """A json list, or one JSON value per line (POPE's ``.json`` files are JSON lines)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        data = _read_json(path, flag)
        return list(data)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise MetricsInputError(f"{flag} {path}:{n}: not valid JSON ({exc.msg})") from exc
    return rows


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
        return _output_rows(p, "--pred") if p.is_dir() else _rows_parquet(p)
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
    rows = _answer_rows(p)
    where = f"--pred {p}"
    if any(not isinstance(r, dict) for r in rows):
        raise MetricsInputError(f"{where}: every answer must be a JSON object")
    qids = [str(lab.get("question_id", n)) for n, lab in enumerate(labels, 1)]
    key = next((k for k in ("question_id", "id") if rows and all(k in r for r in rows)), None)
    if key is None:
        if len(rows) != len(labels):
            raise MetricsInputError(f"{where}: {len(rows)} answers for {len(labels)} questions; answers without "
                                    "question_id are paired with the questions line by line")
        texts = [_answer_text(r, column, where) for r in rows]
        return [t if t is not None else "" for t in texts], qids, []
    by_id = {str(r[key]): _answer_text(r, column, where) for r in rows}
    have = [q for q in qids if by_id.get(q) is not None]
    missing = [q for q in qids if by_id.get(q) is None]
    return [by_id[q] for q in have], have, missing
