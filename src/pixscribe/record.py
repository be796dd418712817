"""The one record type that flows read -> decode -> method stages -> write.

A reader yields :class:`Record` objects carrying where the image comes from and a
``load`` callable for its bytes; the engine decodes them (``image`` is set, bytes are
dropped), stages add ``fields`` and ``provenance``, and the writer turns each record
into one output row with :meth:`Record.to_row`. Errors never raise through the
engine: they are stored in ``error`` as ``"kind: message"`` and the record is written
as an error row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

# Columns every row has, in order, with their arrow types (see io/writers.py).
BASE_COLUMNS: tuple[str, ...] = (
    "id",
    "source",
    "width",
    "height",
    "sha256",
    "method",
    "caption",
)
TAIL_COLUMNS: tuple[str, ...] = ("model", "prompt_sha", "seconds", "error", "provenance")


class PixscribeError(Exception):
    """An error with a short machine-readable kind, rendered as ``"kind: message"``."""

    kind = "error"

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        if kind:
            self.kind = kind


class DecodeError(PixscribeError):
    kind = "decode"


class FetchError(PixscribeError):
    kind = "fetch"


class InputError(PixscribeError):
    kind = "input"


class RunStop(PixscribeError):
    """Raised by a stage or backend when the run itself cannot go on (every model endpoint
    down past its limit, a lost lease): the executor stops cleanly, keeps what was written,
    and exits non-zero with this message. Never a row error."""

    kind = "stopped"


def format_error(exc: BaseException, kind: str | None = None) -> str:
    """Render an exception as the ``error`` column value: ``"kind: message"``."""
    k = kind or getattr(exc, "kind", None) or type(exc).__name__
    msg = str(exc).strip().replace("\n", " ") or type(exc).__name__
    return f"{k}: {msg}"


def error_kind(error: str | None) -> str | None:
    if not error:
        return None
    return error.split(":", 1)[0].strip()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prompt_sha(*parts: Any) -> str:
    """A short stable hash of a prompt (and any settings that change its meaning)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


@dataclass
class Record:
    """One image travelling through the pipeline.

    ``key`` is the input's own key (webdataset ``__key__``, a ``key``/``id`` column)
    when it has one; ``id`` is the key if present, else the sha256 of the bytes.
    ``columns`` holds the input's other columns, renamed where a method wants
    (``caption`` becomes ``org_caption``). ``fields`` holds what stages add.
    """

    source: str
    key: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    load: Callable[[], bytes] | None = None
    data: bytes | None = None
    image: Any = None  # PIL.Image.Image once decoded, dropped after the stages ran
    id: str | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    orig_width: int | None = None
    orig_height: int | None = None
    shard: int = 0
    index: int = 0  # position of the record in its shard
    fields: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    model: str | None = None
    prompt_sha: str | None = None

    # ---- helpers used by stages -------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.error is None

    def fail(self, exc: BaseException | str, kind: str | None = None) -> None:
        """Mark this record failed; the first error wins."""
        if self.error is not None:
            return
        if isinstance(exc, BaseException):
            self.error = format_error(exc, kind)
        else:
            self.error = f"{kind or 'error'}: {exc}"

    def set(
        self,
        name: str,
        value: Any,
        *,
        stage: str,
        model: str | None = None,
        revision: str | None = None,
        prompt_sha: str | None = None,
        seconds: float | None = None,
        **extra: Any,
    ) -> None:
        """Set a field and record where it came from."""
        self.fields[name] = value
        prov: dict[str, Any] = {"stage": stage}
        if model is not None:
            prov["model"] = model
        if revision is not None:
            prov["revision"] = revision
        if prompt_sha is not None:
            prov["prompt_sha"] = prompt_sha
        if seconds is not None:
            prov["seconds"] = round(float(seconds), 6)
        prov.update({k: v for k, v in extra.items() if v is not None})
        self.provenance[name] = prov
        if seconds is not None:
            self.seconds += float(seconds)
        if model is not None and self.model is None:
            self.model = model
        if prompt_sha is not None and self.prompt_sha is None:
            self.prompt_sha = prompt_sha

    def drop_image(self) -> None:
        self.image = None
        self.data = None

    def to_row(self, method: str, caption_field: str | None, columns: list[str]) -> dict[str, Any]:
        """The output row: base columns, the method's columns, input columns, tail."""
        row: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "width": self.width,
            "height": self.height,
            "sha256": self.sha256,
            "method": method,
            "caption": self.fields.get(caption_field) if caption_field else None,
        }
        for c in columns:
            if c in row:
                continue
            if c in self.fields:
                row[c] = self.fields[c]
            else:
                row[c] = self.columns.get(c)
        for c, v in self.columns.items():
            if c not in row and c not in TAIL_COLUMNS:
                row[c] = v
        row["model"] = self.model
        row["prompt_sha"] = self.prompt_sha
        row["seconds"] = round(self.seconds, 6) if self.seconds else (0.0 if self.error is None else None)
        row["error"] = self.error
        row["provenance"] = json.dumps(self.provenance, sort_keys=True, default=str) if self.provenance else None
        return row
