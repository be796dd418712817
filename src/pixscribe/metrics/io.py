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


def read_predictions(path: str | Path, column: str = "caption") -> tuple[dict[str, str], list[str]]:
    """``({id: caption}, ids_without_caption)``. Later duplicates of an id win."""
    p = Path(path)
    if not p.exists():
        raise MetricsInputError(f"--pred {p}: no such file or directory")
    preds: dict[str, str] = {}
    empty: list[str] = []
    where = str(p)
    if p.is_dir():
        files = sorted(p.glob("part-*.parquet")) + sorted(p.glob("part-*.jsonl"))
        if not files:
            files = sorted(p.rglob("part-*.parquet")) + sorted(p.rglob("part-*.jsonl"))
        if not files:
            raise MetricsInputError(f"--pred {p}: no part-*.parquet or part-*.jsonl files in this directory")
        rows = [r for f in files for r in _rows(f)]
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
