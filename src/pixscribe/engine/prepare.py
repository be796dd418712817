"""Getting records ready for the stages: ids, skips, priors, bytes and decoding.

:class:`Identifier` runs in input order (one thread per shard stream): it gives each record
its id (the method's ``id_column`` when the row has it, else the input's key, else a hash of
its source; a key seen before in the shard gets ``~2``, ``~3``...), renames input columns
the method renames, and keeps input columns that collide with pixscribe's own under an
``input_`` prefix. :func:`prepare` runs in the decode
pool: it reads the bytes, hashes them, finds what an earlier row lets it reuse, and decodes
the image only when a stage that will run looks at pixels. :class:`DecodeCache` shares the
decode of identical bytes between records (one row per region repeats its image on every row).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..record import BASE_COLUMNS, TAIL_COLUMNS, PixscribeError, Record, keyless_id, sha256_hex
from .apply import first_to_compute, needs_decode
from .reuse import Priors, RowIndex
from .stage import Method

INPUT_PREFIX = "input_"


class Identifier:
    def __init__(self, method: Method):
        self.rename = dict(method.rename_inputs)
        self.reserved = set(BASE_COLUMNS) | set(TAIL_COLUMNS) | set(method.provided_by())
        self.id_column = method.id_column
        self.seen: dict[str, int] = {}
        self.duplicate_keys = 0

    def new_shard(self) -> None:
        self.seen = {}

    def __call__(self, rec: Record) -> Record:
        cols = rec.columns
        if cols:
            for a, b in self.rename.items():
                if a in cols and b not in cols:
                    cols[b] = cols.pop(a)
            for c in [c for c in cols if c in self.reserved]:
                cols[input_name(c, cols)] = cols.pop(c)
        own = cols.get(self.id_column) if self.id_column and cols else None
        if own is not None and str(own) != "":
            base = str(own)  # the method names its rows (one row per region: the region's id)
        else:
            base = str(rec.key) if rec.key is not None else keyless_id(rec.source)
        n = self.seen.get(base, 0) + 1
        self.seen[base] = n
        rid = base
        if n > 1:
            self.duplicate_keys += 1
            while rid in self.seen or rid == base:
                rid = f"{base}~{n}"
                n += 1
            self.seen[rid] = 1
        rec.id = rid
        return rec


def input_name(column: str, taken: Any) -> str:
    """The name an input column that collides with one pixscribe writes is kept under:
    ``input_<column>`` (``input_input_<column>`` if that is taken too...)."""
    name = INPUT_PREFIX + column
    while name in taken:
        name = INPUT_PREFIX + name
    return name


class DecodeCache:
    """Identical image bytes are decoded once: the last decodes, keyed by sha256, are shared
    read-only by every record carrying those bytes (stages never draw on ``record.image``;
    they copy). A decode already under way for the same bytes is waited for, not repeated.
    A failure is not kept: each record decodes again and fails with its own source named.

    Bounded by ``size`` entries and ``max_bytes`` of RGB pixels (at least one entry), so
    memory stays flat; ``decodes`` counts the decodes made, ``shared`` the ones spared."""

    def __init__(self, size: int = 8, max_bytes: int = 96 * 1024 * 1024):
        self.size = size
        self.max_bytes = max_bytes
        self.decodes = 0
        self.shared = 0
        self._lock = threading.Lock()
        self._done: OrderedDict[str, tuple[Any, int]] = OrderedDict()  # sha -> (Decoded, pixel bytes)
        self._busy: dict[str, threading.Event] = {}

    def get(self, sha: str | None, make: Callable[[], Any]) -> Any:
        """``make()``'s result for bytes of hash ``sha``, made once while it is kept."""
        if not sha or self.size <= 0:
            return make()
        while True:
            with self._lock:
                if sha in self._done:
                    self._done.move_to_end(sha)
                    self.shared += 1
                    return self._done[sha][0]
                ev = self._busy.get(sha)
                if ev is None:
                    ev = self._busy[sha] = threading.Event()
                    break
            ev.wait()  # the other decode finished (or failed: then this one decodes itself)
        try:
            value = make()
            with self._lock:
                self.decodes += 1
                self._keep(sha, value)
        finally:
            with self._lock:
                del self._busy[sha]
            ev.set()
        return value

    def _keep(self, sha: str, value: Any) -> None:
        im = getattr(value, "image", None)
        self._done[sha] = (value, im.width * im.height * 3 if im is not None else 0)
        total = sum(n for _, n in self._done.values())
        while len(self._done) > 1 and (len(self._done) > self.size or total > self.max_bytes):
            _, (_, n) = self._done.popitem(last=False)
            total -= n


def prepare(rec: Record, method: Method, cfg: Any, own: RowIndex | None, priors: Priors,
            cache: DecodeCache | None = None) -> Record:
    """Bytes, sha256, reuse, decode (runs in the decode pool; never raises)."""
    if rec.error is not None:
        return rec
    try:
        data = rec.data if rec.data is not None else (rec.load() if rec.load else b"")
    except PixscribeError as exc:
        rec.fail(exc)
        return rec
    except Exception as exc:  # noqa: BLE001 - an unexpected reader failure is still a row
        rec.fail(exc, "input")
        return rec
    rec.data = None
    if data:
        rec.sha256 = sha256_hex(data)
    _find_prior(rec, method, own, priors)
    if rec.prior is not None and not needs_decode(method, rec.compute_from):
        rec.width, rec.height = rec.prior.width, rec.prior.height
        return rec
    _decode(rec, data, cfg, cache)
    return rec


def _find_prior(rec: Record, method: Method, own: RowIndex | None, priors: Priors) -> None:
    """The earlier row of this id, else one of the same image bytes (see engine/reuse.py)."""
    assert rec.id is not None
    prior = own.get(rec.id) if own is not None else None
    if prior is None and priors:
        prior = priors.get(rec.id)
    if (prior is None or prior.sha256 != rec.sha256) and priors and rec.sha256 and _image_only_first(method):
        prior = priors.get_by_sha(rec.sha256) or prior
    if prior is None or (prior.sha256 and prior.sha256 != rec.sha256):
        rec.prior, rec.compute_from = None, 0  # other bytes under the same id: compute anew
        return
    rec.prior = prior
    rec.compute_from = first_to_compute(method, rec)
    if rec.compute_from == 0:
        rec.prior = None


def _image_only_first(method: Method) -> bool:
    """Whether the method's first stage depends on nothing but the image and its options (what
    a row of another id with the same bytes can give)."""
    first = method.stages[0] if method.stages else None
    return first is not None and not method.input_reads.get(first.name) and not first.reads_id


def _decode(rec: Record, data: bytes, cfg: Any, cache: DecodeCache | None = None) -> None:
    from .. import imaging

    def make() -> Any:
        return imaging.decode(data, max_pixels=cfg.max_pixels, max_side=cfg.max_side,
                              max_image_pixels=cfg.max_image_pixels, source=rec.source)

    try:
        dec = cache.get(rec.sha256, make) if cache is not None else make()
    except PixscribeError as exc:
        rec.fail(exc)
        return
    except Exception as exc:  # noqa: BLE001
        rec.fail(exc, "decode")
        return
    rec.image = dec.image
    rec.width, rec.height = dec.width, dec.height
    rec.orig_width, rec.orig_height = dec.orig_width, dec.orig_height
    exif = getattr(dec, "exif", None)
    if exif:
        rec.fields["exif"] = exif
