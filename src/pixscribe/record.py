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
TAIL_COLUMNS: tuple[str, ...] = ("model", "prompt_sha", "seconds", "error", "provenance", "stages")


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


def keyless_id(source: str) -> str:
    """The id of an input without a key: a hash of where it comes from, so every input is its
    own row (two identical images are two rows with the same ``sha256``)."""
    return sha256_hex(("source:" + source).encode())


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
    when it has one; ``id`` is the key if present, else a hash of the source (so every
    input is its own row, identical images included). ``columns`` holds the input's other
    columns, renamed where a method wants (``caption`` becomes ``org_caption``).
    ``fields`` holds what stages add; ``stages`` the status of each stage on this row
    (fingerprint, ok/error, reused, seconds); ``prior`` an earlier row of the same id whose
    stage outputs may be reused.
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
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    model: str | None = None  # the model of the stage that failed, for error rows
    prior: "PriorRow | None" = None
    compute_from: int = 0  # index of the first stage to compute (earlier ones are reused)

    # ---- helpers used by stages -------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def seconds(self) -> float:
        """Model time that produced this row's content (reused stages count their own)."""
        return sum(float(s.get("seconds") or 0.0) for s in self.stages.values())

    def get(self, name: str, default: Any = None) -> Any:
        """A field an earlier stage set, else the input column of that name (a stage reads
        its ``needs`` with this, so a need can be met either way)."""
        if name in self.fields:
            return self.fields[name]
        return self.columns.get(name, default)

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
        """Set a field and record where it came from. ``seconds`` is the model time this
        row took in ``stage``; give it once per stage and row (it adds up)."""
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
            st = self.stages.setdefault(stage, {})
            st["seconds"] = round(float(st.get("seconds") or 0.0) + float(seconds), 6)
        prov.update({k: v for k, v in extra.items() if v is not None})
        self.provenance[name] = prov

    def drop_image(self) -> None:
        self.image = None
        self.data = None

    # ---- reuse of an earlier row's stage outputs ----------------------------------
    def reuse_stage(self, stage: str, provides: tuple[str, ...]) -> None:
        """Copy ``stage``'s outputs from :attr:`prior` (checked by :meth:`PriorRow.can_reuse`)."""
        assert self.prior is not None
        for f in provides:
            if f in self.prior.fields:
                self.fields[f] = self.prior.fields[f]
                prov = dict(self.prior.provenance.get(f) or {"stage": stage})
                prov["reused"] = True
                self.provenance[f] = prov
        st = dict(self.prior.stages.get(stage) or {})
        st["reused"] = True
        if self.prior.id is not None and self.prior.id != self.id:
            st["reused_from"] = self.prior.id  # the same image bytes under another id (path)
        self.stages[stage] = st

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
        author = self.provenance.get(caption_field) if caption_field else None
        author = author or {}
        row["model"] = author.get("model") or (self.model if self.error else None)
        row["prompt_sha"] = author.get("prompt_sha")
        secs = self.seconds
        row["seconds"] = round(secs, 6) if secs else (0.0 if self.error is None else None)
        row["error"] = self.error
        row["provenance"] = json.dumps(self.provenance, sort_keys=True, default=str) if self.provenance else None
        row["stages"] = json.dumps(self.stages, sort_keys=True, default=str) if self.stages else None
        return row


@dataclass
class PriorRow:
    """An earlier output row (of the same id, or of the same image bytes): its fields
    (decoded), provenance, stages, and its stored columns (to compare what stages read)."""

    fields: dict[str, Any]
    provenance: dict[str, Any]
    stages: dict[str, dict[str, Any]]
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    source: str | None = None
    id: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)

    def can_reuse(self, stage: str, fingerprint: str, provides: tuple[str, ...]) -> bool:
        st = self.stages.get(stage)
        return bool(
            st and st.get("fp") == fingerprint and st.get("status") == "ok" and all(f in self.fields for f in provides)
        )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "PriorRow | None":
        try:
            stages = json.loads(row.get("stages") or "{}")
            prov = json.loads(row.get("provenance") or "{}")
        except ValueError:
            return None
        fields: dict[str, Any] = {}
        for st in stages.values():
            for f in st.get("fields", ()):
                if f not in row:
                    continue
                v = row[f]  # None: the stage set it to None
                if v is not None and f in st.get("json", ()) and isinstance(v, str):  # a typed column is a value already
                    try:
                        v = json.loads(v)
                    except ValueError:
                        continue
                fields[f] = v
        return cls(fields, prov, stages, row.get("width"), row.get("height"), row.get("sha256"), row.get("source"),
                   row.get("id"), row)
