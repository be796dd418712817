"""Training inputs: a text corpus, optional image-caption pairs, optional unpaired images.

- Text corpus: ``.txt`` (one caption per line), ``.jsonl`` (a column, a string or a list of
  strings per row), ``.parquet`` (a column). Bad rows are reported by file and line and skipped:
  a caption over ``max_chars`` characters (``--max-text-chars``, 2,000: the decoder learns 40
  tokens of it) is never tokenized, a line that is not UTF-8 text (or holds control characters)
  is not trained on, and a jsonl line over 16 MiB is skipped without being held in memory. A
  file that is not text at all (a NUL byte in its first 8 KiB, or most of its lines rejected)
  is refused whole, naming it.
- Pairs and unpaired images: any pixscribe input (folders, lists, globs, tars, tables, HF
  datasets, URLs) through :func:`pixscribe.io.readers.plan_shards`; for pairs, the caption
  comes from a column (``caption`` by default; a webdataset ``.txt`` member is that column).
  An image that cannot be read or decoded is reported (file and reason) and skipped.

Image embeddings are cached by the input's key and source (:func:`.embed.image_key`), so a
rerun skips finished images without reading their bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ...io.lines import iter_lines, too_long
from ...record import PixscribeError, Record
from .embed import ClipEncoder, EmbeddingCache, image_key

TEXT_COLUMNS = ("caption", "text", "sentence", "raw")
MAX_TEXT_CHARS = 2000  # --max-text-chars: longer captions are skipped, never tokenized
MAX_JSONL_LINE = 16 << 20  # bytes of one jsonl row of a text corpus
_SNIFF = 8192  # a NUL byte in the first 8 KiB: not a text file
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class TrainingInputError(PixscribeError, ValueError):
    """An input that cannot be used at all (missing file, no such column)."""

    kind = "input"


@dataclass
class Problems:
    """Bad rows and images met while reading: reported, counted, never fatal (the first
    :data:`KEPT` messages are kept, so a corpus of a million bad lines costs a counter)."""

    messages: list[str] = field(default_factory=list)
    console: Any = None
    count: int = 0
    KEPT = 100

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < self.KEPT:
            self.messages.append(message)
        if self.console is not None and self.count <= 20:
            self.console.print(f"[yellow]skipped:[/] {message}", highlight=False, soft_wrap=True)

    def summary(self) -> dict[str, Any]:
        return {"count": self.count, "first": self.messages[:20]}


def _texts_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return [v.strip() for v in value if isinstance(v, str) and v.strip()]
    return []


def _pick_column(names: Sequence[str], column: str | None, path: Path) -> str:
    if column:
        if column not in names:
            raise TrainingInputError(f"{path}: no column {column!r} (columns: {', '.join(names)})")
        return column
    for c in TEXT_COLUMNS:
        if c in names:
            return c
    raise TrainingInputError(f"{path}: no text column found (tried {', '.join(TEXT_COLUMNS)}); pass --text-column")


def _too_many_chars(where: str, text: str, max_chars: int) -> str | None:
    if len(text) > max_chars:
        return f"{where}: a text of {len(text):,} characters is over --max-text-chars {max_chars:,}"
    return None


def _read_txt(path: Path, max_chars: int, problems: Problems) -> list[str]:
    """One caption per line: UTF-8 text, each at most ``max_chars`` characters."""
    out: list[str] = []
    bad = lines = 0
    with path.open("rb") as f:
        head = f.read(_SNIFF)
        nul = head.find(b"\0")
        if nul >= 0:
            raise TrainingInputError(f"{path}: not a text file (a NUL byte at offset {nul}); "
                                     "--text takes UTF-8 text, one caption per line")  # fmt: skip
        f.seek(0)
        for line in iter_lines(f, 4 * max_chars):  # UTF-8: at most 4 bytes a character
            if line.blank:
                continue
            lines += 1
            why = _bad_line(path, line, max_chars)
            if why:
                bad += 1
                problems.add(why)
                continue
            out.append(line.data.decode("utf-8").strip())  # type: ignore[union-attr]
    if bad and bad * 2 > lines:
        raise TrainingInputError(f"{path}: {bad:,} of its {lines:,} lines are not usable text (see the skipped "
                                 "lines above); --text takes UTF-8 text, one caption per line")  # fmt: skip
    return out


def _bad_line(path: Path, line: Any, max_chars: int) -> str | None:
    where = f"{path}:{line.number}"
    if line.data is None:
        return f"{where}: a line of {line.size:,} bytes is over --max-text-chars {max_chars:,}"
    try:
        text = line.data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        return f"{where}: not UTF-8 text (byte {exc.start})"
    if _CONTROL.search(text):
        return f"{where}: holds control characters (is it a text file?)"
    return _too_many_chars(where, text, max_chars)


def _read_jsonl(path: Path, column: str | None, problems: Problems, max_chars: int = MAX_TEXT_CHARS) -> list[str]:
    out: list[str] = []
    col = column
    with path.open("rb") as f:
        for line in iter_lines(f, MAX_JSONL_LINE):
            n = line.number
            if line.blank:
                continue
            if line.data is None:
                problems.add(too_long(str(path), line, MAX_JSONL_LINE, "a jsonl row of a text corpus"))
                continue
            try:
                obj = json.loads(line.data)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
                problems.add(f"{path}:{n}: not valid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                problems.add(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
                continue
            col = col or _pick_column(list(obj), None, path)
            texts = _texts_of(obj.get(col))
            if not texts:
                problems.add(f"{path}:{n}: no text in column {col!r}")
            out.extend(_within(texts, f"{path}:{n}", max_chars, problems))
    return out


def _within(texts: list[str], where: str, max_chars: int, problems: Problems) -> list[str]:
    keep = []
    for t in texts:
        why = _too_many_chars(where, t, max_chars)
        if why:
            problems.add(why)
        else:
            keep.append(t)
    return keep


def _read_parquet(path: Path, column: str | None, problems: Problems, max_chars: int = MAX_TEXT_CHARS) -> list[str]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    col = _pick_column(names, column, path)
    out: list[str] = []
    for n, v in enumerate(pq.read_table(path, columns=[col]).column(col).to_pylist()):
        texts = _texts_of(v)
        if not texts:
            problems.add(f"{path}#row={n}: no text in column {col!r}")
        out.extend(_within(texts, f"{path}#row={n}", max_chars, problems))
    return out


def read_texts(paths: Sequence[str | Path], column: str | None = None, problems: Problems | None = None,
               max_chars: int = MAX_TEXT_CHARS) -> list[str]:
    """All captions of the corpus files, in order (duplicates kept: they are the distribution)."""
    problems = problems if problems is not None else Problems()
    out: list[str] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise TrainingInputError(f"{p}: text corpus file not found")
        suffix = p.suffix.lower()
        if suffix == ".txt":
            out.extend(_read_txt(p, max_chars, problems))
        elif suffix == ".jsonl":
            out.extend(_read_jsonl(p, column, problems, max_chars))
        elif suffix == ".parquet":
            out.extend(_read_parquet(p, column, problems, max_chars))
        else:
            raise TrainingInputError(f"{p}: unknown corpus type {suffix!r} (txt, jsonl or parquet)")
    return out


def iter_records(inputs: Sequence[str]) -> Iterator[Record]:
    """Records of any pixscribe inputs, in the engine's deterministic shard order."""
    from ...io.readers import plan_shards

    for shard in plan_shards(list(inputs)):
        yield from shard.records()


def _decode(rec: Record) -> Any:
    """The record's RGB image (CLIP resizes itself; the default pixel budget bounds memory)."""
    from ...imaging import decode

    if rec.error:
        raise PixscribeError(rec.error.split(": ", 1)[-1], kind=rec.error.split(":", 1)[0])
    data = rec.data if rec.data is not None else (rec.load() if rec.load else b"")
    return decode(data, source=rec.source).image


@dataclass
class ImageEmbeddings:
    keys: list[str]
    sources: list[str]
    emb: np.ndarray
    captions: list[list[str]]  # per image (empty lists for unpaired images)


def embed_images(inputs: Sequence[str], encoder: ClipEncoder, cache: EmbeddingCache, *,
                 caption_column: str | None = None, problems: Problems | None = None,
                 batch_size: int = 32, progress: Any = None) -> ImageEmbeddings:
    """CLIP image embeddings of every readable input image (and its captions when ``caption_column``)."""
    problems = problems if problems is not None else Problems()
    keys: list[str] = []
    sources: list[str] = []
    caps: list[list[str]] = []
    pending: list[tuple[str, Any]] = []
    queued: set[str] = set()

    def flush() -> None:
        if pending:
            emb = encoder.embed_images([im for _, im in pending])
            cache.add([k for k, _ in pending], emb)
            if progress is not None:
                progress(len(pending))
            pending.clear()

    for rec in iter_records(inputs):
        texts = _texts_of(rec.columns.get(caption_column)) if caption_column else []
        if caption_column and not texts:
            problems.add(f"{rec.source}: no caption in column {caption_column!r}")
            continue
        key = image_key(rec.key, rec.source)
        if key not in queued and key not in cache:
            try:
                pending.append((key, _decode(rec)))
            except Exception as exc:  # a bad image is reported and skipped, never fatal
                problems.add(f"{rec.source}: {exc}")
                continue
            queued.add(key)
        keys.append(key)
        sources.append(rec.source)
        caps.append(texts)
        if len(pending) >= batch_size:
            flush()
    flush()
    emb = cache.get(keys) if keys else np.zeros((0, encoder.dim), np.float32)
    return ImageEmbeddings(keys, sources, emb, caps)


__all__ = ["ImageEmbeddings", "Problems", "TrainingInputError", "embed_images", "iter_records", "read_texts"]
