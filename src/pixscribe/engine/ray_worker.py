"""What runs inside Ray's worker processes for ``--executor ray`` (plain Python: the
executor wraps these with ``ray.remote``, so this module imports without Ray).

- :func:`read_shard` (a streaming task, one per shard): opens the shard from its plain
  :class:`~pixscribe.io.plan.ShardSpec`, gives every record its id in input order
  (:class:`~pixscribe.engine.prepare.Identifier`), leaves out the ids already written, and
  yields chunks of one batch, then one small :class:`ShardEnd`.
- :func:`prepare_chunk` (a CPU task per batch): bytes, sha256, reuse, decode, exactly as
  the local decode pool does (:func:`~pixscribe.engine.prepare.prepare`).
- :class:`StageActor` (one per replica of a stage group): builds the method by name from
  the configuration (``build_method(cfg.method, cfg)``), checks that it is the driver's
  method (same stage fingerprints), loads only its group's models, and runs its slice of
  the stages on batches with :class:`~pixscribe.engine.apply.MethodRunner`.

Nothing here writes to the output directory: rows go back to the driver, which owns the
run (claims, batch files, parts, markers).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..record import Record, keyless_id
from .apply import MethodRunner, mark
from .prepare import Identifier, prepare
from .reuse import Priors, RowIndex


# ---- the shape of a method: what reading and preparing need, picklable ------------------------------
@dataclass(frozen=True)
class StageShape:
    name: str
    provides: tuple[str, ...]
    needs_image: bool
    reads_id: bool = False


@dataclass
class MethodShape:
    """The parts of a :class:`~pixscribe.engine.stage.Method` that ids, reuse and decoding
    read (names, provided fields, which stages look at pixels, fingerprints), without its
    models: it travels to every read and decode task."""

    name: str
    stages: list[StageShape]
    fingerprints: dict[str, str]
    rename_inputs: dict[str, str] = field(default_factory=dict)
    id_column: str | None = None  # an input column naming the row, where the method has one
    input_reads: dict[str, tuple[str, ...]] = field(default_factory=dict)  # the input columns each stage reads

    @classmethod
    def of(cls, method: Any) -> "MethodShape":
        shapes = [StageShape(s.name, tuple(s.provides), bool(s.needs_image), bool(s.reads_id)) for s in method.stages]
        return cls(method.name, shapes, dict(method.fingerprints), dict(method.rename_inputs),
                   getattr(method, "id_column", None), dict(method.input_reads))

    def provided_by(self) -> dict[str, str]:
        return {f: s.name for s in self.stages for f in s.provides}


@dataclass
class ShardEnd:
    """The last item a :func:`read_shard` yields: how many records it gave, how many it
    skipped (already written), repeated keys, and whether it read the shard to its end."""

    shard: int
    emitted: int
    skipped: int
    duplicate_keys: int
    exhausted: bool


@dataclass
class RunInfo:
    """What every task of one run needs besides its data (sent once per task, small)."""

    token: str  # tells this run's cached priors and fetchers from another's in a reused worker
    config: Any
    shape: MethodShape
    roots: list[str]  # the input roots (PathGuard)
    priors: list[list[str]]  # the files of each prior index (--overwrite / --reuse)


# ---- per-process caches: Ray reuses worker processes across tasks -----------------------------------
_cache: dict[tuple[Any, ...], Any] = {}
_cache_lock = threading.Lock()


def _cached(key: tuple[Any, ...], make: Any) -> Any:
    with _cache_lock:
        if key not in _cache:
            if len(_cache) > 64:  # an old run's entries
                _cache.clear()
            _cache[key] = make()
        return _cache[key]


def _fetcher(info: RunInfo) -> Any:
    from ..io.fetch import UrlFetcher

    return _cached(("fetcher", info.token), lambda: UrlFetcher.from_config(info.config))


def _guard(info: RunInfo) -> Any:
    from ..io.plan import PathGuard

    return PathGuard(info.roots, allow_any=info.config.allow_any_path)


class RemoteUrl:
    """A URL record's loader as it travels to a decode task, which fetches with its own
    fetcher (made from the run's configuration: the same address guard and limits)."""

    __slots__ = ("url",)

    def __init__(self, url: str):
        self.url = url


def _portable(rec: Record) -> Record:
    from ..io.readers import _UrlLoader

    if isinstance(rec.load, _UrlLoader):
        rec.load = RemoteUrl(rec.load.url)  # type: ignore[assignment]
    return rec


# ---- images between processes --------------------------------------------------------------------------
class PackedImage:
    """A decoded image as it travels between workers: its pixels as a numpy array (Ray
    moves arrays through its object store without pickling them, and without a copy on the
    reading side), its mode, and the source JPEG bytes :func:`~pixscribe.imaging.decode`
    kept on it (``PASSTHROUGH_ATTR``, an attribute PIL's own pickling would drop)."""

    __slots__ = ("array", "mode", "passthrough")

    def __init__(self, array: Any, mode: str, passthrough: Any):
        self.array, self.mode, self.passthrough = array, mode, passthrough


def pack_images(records: list[Record]) -> None:
    import numpy as np

    from ..imaging import PASSTHROUGH_ATTR

    for r in records:
        im = r.image
        if im is not None and not isinstance(im, PackedImage) and getattr(im, "mode", None) in ("RGB", "L", "RGBA"):
            r.image = PackedImage(np.asarray(im), im.mode, getattr(im, PASSTHROUGH_ATTR, None))


def unpack_images(records: list[Record]) -> None:
    from PIL import Image

    from ..imaging import PASSTHROUGH_ATTR

    for r in records:
        p = r.image
        if isinstance(p, PackedImage):
            im = Image.fromarray(p.array, p.mode)
            if p.passthrough is not None:
                setattr(im, PASSTHROUGH_ATTR, p.passthrough)
            r.image = im


# ---- reading ------------------------------------------------------------------------------------------
def read_shard(info: RunInfo, spec: dict[str, Any], skip: set[str], chunk: int, budget: int | None) -> Any:
    """Yield lists of at most ``chunk`` records of one shard (ids given, skipped ids left
    out), then a :class:`ShardEnd`. ``budget``: stop after that many records (``--limit``)."""
    from ..io.plan import ShardSpec
    from ..io.readers import open_shard

    s = ShardSpec.from_dict(spec)
    shard = open_shard(s, _fetcher(info), _guard(info))
    ident = Identifier(info.shape)  # type: ignore[arg-type]
    out: list[Record] = []
    emitted = skipped = 0
    exhausted = True
    try:
        for rec in shard.records():
            if budget is not None and emitted >= budget:
                exhausted = False
                break
            ident(rec)
            if rec.id in skip:
                skipped += 1
                continue
            out.append(_portable(rec))
            emitted += 1
            if len(out) >= chunk:
                yield out
                out = []
    except Exception as exc:  # the reader itself failed mid-shard: one error row, as the local executor
        bad = Record(source=shard.name, shard=s.index)
        bad.fail(exc, "input")
        bad.id = keyless_id(f"{shard.name}#reader-failure")
        out.append(bad)
        emitted += 1
    if out:
        yield out
    yield ShardEnd(s.index, emitted, skipped, ident.duplicate_keys, exhausted)


# ---- preparing ----------------------------------------------------------------------------------------
def _priors(info: RunInfo) -> Priors:
    return _cached(("priors", info.token), lambda: Priors([RowIndex(files) for files in info.priors]))


def _own(info: RunInfo, shard: int, files: list[str] | None) -> RowIndex | None:
    if not files:
        return None
    return _cached(("own", info.token, shard), lambda: RowIndex(files))


def prepare_chunk(info: RunInfo, records: list[Record], own: list[str] | None,
                  pick: list[int] | None = None) -> list[Record]:
    """Bytes, sha256, reuse and decode for a chunk (``pick``: only those records)."""
    recs = [records[i] for i in pick] if pick is not None else records
    fetcher = None
    for r in recs:
        if isinstance(r.load, RemoteUrl):
            fetcher = fetcher or _fetcher(info)
            url = r.load.url
            r.load = lambda url=url: fetcher.fetch(url)
        prepare(r, info.shape, info.config, _own(info, r.shard, own), _priors(info))  # type: ignore[arg-type]
        r.load = None
        r.data = None
    pack_images(recs)
    return recs


def prepare_task(info: RunInfo, records: list[Record], own: list[str] | None,
                 pick: list[int] | None = None) -> tuple[list[Record], dict[str, Any]]:
    """:func:`prepare_chunk`, and how long it took (two results: the driver reads only the
    small one, so it learns that a batch is ready without fetching its images)."""
    t0 = time.perf_counter()
    recs = prepare_chunk(info, records, own, pick)
    return recs, {"seconds": time.perf_counter() - t0, "records": len(recs)}


def warm_up() -> int:
    """Import what decoding needs (run once per task worker before the run's clock starts)."""
    from .. import imaging  # noqa: F401
    from ..io import readers  # noqa: F401

    return os.getpid()


# ---- the stages ---------------------------------------------------------------------------------------
class _Gate:
    """Lets at most ``n`` calls run the stages at once, in the order they arrived, so the
    next batch can be received and unpacked while one runs (and the oldest batch in flight
    is the one running, which is what a replica's death is charged to)."""

    def __init__(self, n: int):
        self.n = n
        self._cv = threading.Condition()
        self._next = self._serving = self._running = 0

    def ticket(self) -> int:
        with self._cv:
            self._next += 1
            return self._next - 1

    def enter(self, ticket: int) -> None:
        with self._cv:
            self._cv.wait_for(lambda: ticket == self._serving and self._running < self.n)
            self._serving += 1
            self._running += 1

    def leave(self) -> None:
        with self._cv:
            self._running -= 1
            self._cv.notify_all()


class StageActor:
    """One replica of a stage group: the method built here by name, its group's stages set
    up (models loaded once per replica, shared by the group's stages), batches run through
    ``stages[start:stop]``, ``concurrency`` at a time (one for a local model), while one
    more call unpacks the next batch. An error while building or loading is kept and raised
    by :meth:`ready`, so the driver shows it as the one-line error it is."""

    def __init__(self, config: Any, start: int, stop: int, fingerprints: dict[str, str], keep_image: bool,
                 concurrency: int = 1):
        self.start, self.stop, self.keep_image = start, stop, keep_image
        self.pid = os.getpid()
        self.error: BaseException | None = None
        self.busy = 0.0
        self.method: Any = None
        self._gate = _Gate(concurrency)
        self._lock = threading.Lock()
        t0 = time.perf_counter()
        try:
            self.method = build_checked(config, fingerprints)
            for st in self.method.stages[start:stop]:
                st.setup()
        except BaseException as exc:  # noqa: BLE001 - shown by ready()
            self.error = exc
        self.load_seconds = time.perf_counter() - t0

    def ready(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return {"pid": self.pid, "host": socket.gethostname(), "load_seconds": round(self.load_seconds, 3)}

    def run(self, records: list[Record], pick: list[int] | None = None) -> tuple[list[Record], dict[str, Any]]:
        """Run this group's stages on ``records`` (``pick``: only those)."""
        ticket = self._gate.ticket()
        recs = [records[i] for i in pick] if pick is not None else records
        try:
            unpack_images(recs)
        finally:
            self._gate.enter(ticket)
        try:
            t0 = time.perf_counter()
            runner = MethodRunner(self.method)
            runner(recs, self.start, self.stop)
            dt = time.perf_counter() - t0
        finally:
            self._gate.leave()
        if not self.keep_image:
            for r in recs:
                r.drop_image()
        pack_images(recs)
        with self._lock:
            self.busy += dt
        counts = {n: c.to_dict() for n, c in runner.counts.items() if n in self._names()}
        return recs, {"counts": counts, "busy": dt, "pid": self.pid}

    def _names(self) -> list[str]:
        return [s.name for s in self.method.stages[self.start:self.stop]]

    def report(self) -> dict[str, Any]:
        """This replica's stage summaries and per-model usage (raw, merged by the driver)."""
        stages = {s.name: s.summary() for s in self.method.stages[self.start:self.stop]}
        usage = []
        pool = self.method.pool
        for k, b in (pool._backends.items() if pool is not None else []):
            u = b.usage
            if u.requests:
                usage.append({"name": f"{pool._specs[k].role}:{b.model}", "requests": u.requests,
                              "failures": u.failures, "retries": u.retries, "tokens_in": u.tokens_in,
                              "tokens_out": u.tokens_out, "latency_buckets": dict(u.latency.buckets)})
        return {"stages": {k: v for k, v in stages.items() if v}, "usage": usage, "busy": self.busy}

    def close(self) -> None:
        if self.method is not None:
            self.method.close()


def build_checked(config: Any, fingerprints: dict[str, str]) -> Any:
    """The method of ``config`` built by name, as the driver's :class:`Runner` builds it;
    refused if its stage fingerprints differ from the driver's (another pixscribe or plugin
    version on this node, or a method the driver did not build by name)."""
    from .run import image_options
    from .stage import MethodError, build_method

    method = build_method(config.method, config).prefix(config.until).with_fingerprints(image_options(config))
    if method.fingerprints != fingerprints:
        mine = sorted(k for k in set(method.fingerprints) | set(fingerprints)
                      if method.fingerprints.get(k) != fingerprints.get(k))
        method.close()
        raise MethodError(
            f"--executor ray: the method {config.method!r} built on {socket.gethostname()} differs from the driver's "
            f"in stage(s) {', '.join(mine)}. The Ray executor builds the method by name in every worker "
            f"(a built-in method or a plugin of the pixscribe.methods entry-point group, the same version on every "
            f"node); a method built in Python with its own objects runs with --executor local")
    return method


def fail_record(rec: Record, message: str, kind: str, stage: Any = None, fingerprint: str = "") -> Record:
    """An error row for a record that could not be computed (its worker kept dying)."""
    rec.fail(message, kind)
    if stage is not None:
        mark(rec, stage, fingerprint)
    rec.drop_image()
    rec.load = None
    rec.prior = None
    return rec
