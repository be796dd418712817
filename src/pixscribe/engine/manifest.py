"""The shard manifest: the plan (which inputs, in which shard) written once, at the first
run, and read by every later run, so shard boundaries never move under a resume.

Files: ``_state/manifest.json`` (version, shard size, input specs and roots, shard count)
and ``_state/manifest.parquet`` (one row per shard item: files shards list their files,
container shards name their container and row range; every row carries the unit's size
and modification time). Both are written atomically, the parquet first.

A rerun expands its inputs again and compares units with the manifest (:func:`diff`):
added, removed, modified (same path, other size or mtime). Any change is refused with the
counts, unless ``--update``: then :func:`update` appends new shards for exactly the new and
modified units, drops removed and modified units from the shards that held them, and says
which finished shards must lose rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..io import writers
from ..io.plan import LOOSE_KINDS, ShardSpec, Unit, specs_from_units
from ..record import InputError

VERSION = 2


@dataclass
class Manifest:
    shard_size: int
    shards: list[ShardSpec]
    stamps: dict[str, tuple[int | None, int | None]]  # unit path -> (size, mtime_ns)
    kinds: dict[str, str]  # unit path -> kind
    roots: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    version: int = VERSION
    next_index: int = 0  # shard indices are never reused, even for dropped shards

    def __post_init__(self) -> None:
        self.next_index = max([self.next_index] + [s.index + 1 for s in self.shards])

    @classmethod
    def create(cls, units: list[Unit], shard_size: int, roots: list[str], inputs: list[str]) -> "Manifest":
        return cls(shard_size, specs_from_units(units, shard_size), {u.path: u.stamp for u in units},
                   {u.path: u.kind for u in units}, list(roots), list(inputs))


@dataclass
class Diff:
    added: list[Unit]
    removed: list[str]
    modified: list[Unit]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.modified)

    def describe(self) -> str:
        parts = []
        for what, items in (("added", [u.path for u in self.added]), ("removed", self.removed),
                            ("modified", [u.path for u in self.modified])):
            if items:
                ex = ", ".join(Path(p).name for p in items[:3]) + (", ..." if len(items) > 3 else "")
                parts.append(f"{len(items)} {what} ({ex})")
        return "; ".join(parts)


# ---- reading and writing --------------------------------------------------------------------
def paths(state_dir: Path) -> tuple[Path, Path]:
    return state_dir / "manifest.json", state_dir / "manifest.parquet"


def exists(state_dir: Path) -> bool:
    return paths(state_dir)[0].exists()


def write(state_dir: Path, m: Manifest) -> None:
    head, body = paths(state_dir)
    rows: dict[str, list[Any]] = {k: [] for k in ("shard", "kind", "name", "path", "start", "stop", "offset",
                                                  "split", "count", "unit_kind", "size", "mtime_ns")}

    def add(spec: ShardSpec, path: str) -> None:
        size, mtime = m.stamps.get(path, (None, None))
        for k, v in (("shard", spec.index), ("kind", spec.kind), ("name", spec.name), ("path", path),
                     ("start", spec.start), ("stop", spec.stop), ("offset", spec.offset), ("split", spec.split),
                     ("count", spec.count), ("unit_kind", m.kinds.get(path, "file")), ("size", size),
                     ("mtime_ns", mtime)):
            rows[k].append(v)

    for spec in m.shards:
        if spec.kind == "files" and not spec.items:
            add(spec, "")  # an emptied shard still exists (its index is never reused)
        for p in spec.paths():
            add(spec, p)
    types = {"shard": pa.int64(), "start": pa.int64(), "stop": pa.int64(), "offset": pa.int64(), "count": pa.int64(),
             "size": pa.int64(), "mtime_ns": pa.int64()}
    # from_arrays, not pa.table(dict): that one imports pandas (0.4 s) to check for a DataFrame
    table = pa.Table.from_arrays([pa.array(v, type=types.get(k, pa.string())) for k, v in rows.items()],
                                 names=list(rows))
    writers.atomic_write_bytes(body, writers.table_to_bytes(table, "parquet"))
    writers.atomic_write_json(head, {"version": m.version, "shard_size": m.shard_size, "shards": len(m.shards),
                                     "roots": m.roots, "inputs": m.inputs, "units": len(m.stamps), "next_index": m.next_index,
                                     "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def read(state_dir: Path) -> Manifest:
    head_p, body_p = paths(state_dir)
    try:
        head = json.loads(head_p.read_text())
        table = pq.read_table(body_p)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"{head_p.parent}: the run's manifest is unreadable ({type(exc).__name__}); "
                         "use --overwrite to plan the run again") from None
    shards: dict[int, ShardSpec] = {}
    stamps: dict[str, tuple[int | None, int | None]] = {}
    kinds: dict[str, str] = {}
    for r in table.to_pylist():
        s = shards.get(r["shard"])
        if s is None:
            s = shards[r["shard"]] = ShardSpec(r["shard"], r["kind"], r["name"], [], None, r["start"], r["stop"],
                                               r["offset"], r["split"], r["count"])
        if not r["path"]:
            continue
        if s.kind == "files":
            s.items.append(r["path"])
        else:
            s.path = r["path"]
        stamps[r["path"]] = (r["size"], r["mtime_ns"])
        kinds[r["path"]] = r["unit_kind"]
    return Manifest(int(head["shard_size"]), [shards[i] for i in sorted(shards)], stamps, kinds,
                    list(head.get("roots", [])), list(head.get("inputs", [])), int(head.get("version", VERSION)),
                    int(head.get("next_index", 0)))


# ---- comparing and updating -------------------------------------------------------------------
def diff(m: Manifest, units: list[Unit]) -> Diff:
    now = {u.path: u for u in units}
    added = [u for p, u in now.items() if p not in m.stamps]
    removed = [p for p in m.stamps if p not in now]
    modified = [u for p, u in now.items() if p in m.stamps and u.kind not in ("url",) and u.stamp != m.stamps[p]]
    return Diff(added, removed, modified)


@dataclass
class Update:
    """What :func:`update` changed: shards that lost items (rows to drop from their outputs,
    by source path), shards that are gone entirely, and the new shards."""

    trimmed: dict[int, set[str]]
    dropped: list[int]
    new: list[ShardSpec]


def update(m: Manifest, d: Diff) -> Update:
    """Apply ``d`` to ``m`` in place (see the module docstring)."""
    gone = set(d.removed) | {u.path for u in d.modified}
    trimmed: dict[int, set[str]] = {}
    dropped: list[int] = []
    for s in m.shards:
        if s.kind == "files":
            lost = {p for p in s.items if p in gone}
            if lost:
                s.items = [p for p in s.items if p not in lost]
                s.count = len(s.items)
                trimmed[s.index] = lost
        elif s.path in gone:
            dropped.append(s.index)
    m.shards = [s for s in m.shards if s.index not in set(dropped)]
    for p in gone:
        m.stamps.pop(p, None)
        m.kinds.pop(p, None)
    fresh = [u for u in d.added + d.modified]
    new = specs_from_units(fresh, m.shard_size, start=m.next_index)
    m.shards += new
    m.next_index += len(new)
    for u in fresh:
        m.stamps[u.path] = u.stamp
        m.kinds[u.path] = u.kind
    return Update(trimmed, dropped, new)


def loose_sources(units: list[Unit]) -> set[str]:
    return {u.path for u in units if u.kind in LOOSE_KINDS}
