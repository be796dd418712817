"""Run state: batch files, part files, validated completion markers, the output schema.

Layout of an output directory::

    OUT_DIR/
      part-00000.parquet         one file per shard (or .jsonl / .tar)
      _run.json                  resolved config, fingerprints, version, models
      _state/
        manifest.json, manifest.parquet   the plan: which inputs, in which shard (manifest.py)
        columns.json             the union of input columns seen so far (one schema for all parts)
        done/00000.json          completion marker: rows, errors, bytes, sha256, columns of the part
        batches/00000/*.parquet  rows of an unfinished shard, one atomic file per flush
        leases/                  who is writing which shard (lease.py)
        previous/                an earlier run's rows kept for reuse by --overwrite (reuse.py)
        summaries/*.json         end-of-run summaries

Names under OUT_DIR that start with ``_`` or ``.`` are skipped by pyarrow's and DuckDB's
directory discovery, so ``pyarrow.parquet.read_table(OUT_DIR)`` reads only the parts.

Exactly once: only the holder of a shard's claim writes its files. A batch file is written
atomically after its rows are computed; a part file is always rebuilt from all batch files
(last row per id wins, so a retried row replaces its failed one); the marker is written after
the part, and the batch files are removed only after the marker. A marker records the part's
size, row count and sha256: a damaged part is noticed (size and parquet footer by default,
the checksum with ``verify``) and its shard redone.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..io import writers
from ..record import TAIL_COLUMNS


class ConfigMismatch(RuntimeError):
    pass


class RunState:
    def __init__(self, out_dir: str | Path, fmt: str = "parquet"):
        self.out = Path(out_dir)
        self.fmt = fmt
        self.ext = writers.EXTENSIONS[fmt]
        self.state = self.out / "_state"
        self._seq = 0

    # ---- paths ---------------------------------------------------------------
    def part_path(self, shard: int) -> Path:
        return self.out / f"part-{shard:05d}{self.ext}"

    def marker_path(self, shard: int) -> Path:
        return self.state / "done" / f"{shard:05d}.json"

    def batch_dir(self, shard: int) -> Path:
        return self.state / "batches" / f"{shard:05d}"

    @property
    def run_json(self) -> Path:
        return self.out / "_run.json"

    @property
    def columns_json(self) -> Path:
        return self.state / "columns.json"

    # ---- config ----------------------------------------------------------------
    def previous_run(self) -> dict[str, Any] | None:
        if not self.run_json.exists():
            return None
        try:
            return json.loads(self.run_json.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigMismatch(f"{self.run_json} is unreadable ({exc}); use --overwrite to start over") from exc

    def check_config(self, fingerprint: str, fields: dict[str, Any], overwrite: bool) -> None:
        """Refuse to resume into OUT_DIR written with a different configuration."""
        prev = None if overwrite else self.previous_run()
        if prev is None or prev.get("fingerprint") == fingerprint:
            return
        old = prev.get("fingerprint_fields", {})
        diff = sorted(k for k in set(old) | set(fields) if old.get(k) != fields.get(k))
        added = _added_stages(old, fields, diff)
        if added:
            done = old["stages"]
            raise ConfigMismatch(
                f"{self.out} holds the stages {', '.join(done)} of method {fields.get('method')!r} (a run with --until "
                f"{done[-1]}). Rerun with --overwrite to add the stages {', '.join(added)}: the stages done are reused, "
                f"not recomputed; or add --until {done[-1]} to resume that run as it was."
            )
        shown = "; ".join(f"{k}: {_short(old.get(k))} -> {_short(fields.get(k))}" for k in diff[:6])
        more = f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""
        raise ConfigMismatch(
            f"{self.out} holds a run with a different configuration ({shown}{more}). Resuming would mix outputs. "
            "Use --overwrite to start over (stage outputs that did not change are reused), "
            "or write to a new -o directory (add --reuse to take over what did not change)."
        )

    def write_run_json(self, info: dict[str, Any]) -> None:
        writers.atomic_write_json(self.run_json, info)

    # ---- clearing and keeping for reuse ----------------------------------------------
    def move_to_previous(self, shards: list[int] | None = None) -> Path:
        """Move parts and batch files (of ``shards``, or all) under ``_state/previous/`` so an
        ``--overwrite`` run can reuse their stage outputs; markers go. Returns that folder."""
        prev = self.state / "previous"
        prev.mkdir(parents=True, exist_ok=True)
        stamp = f"{int(time.time() * 1000)}-{os.getpid()}"
        parts = sorted(self.out.glob("part-*")) if shards is None else [self.part_path(s) for s in shards]
        for p in parts:
            if p.is_file():
                os.replace(p, prev / f"{p.stem}-{stamp}{p.suffix}")
        batch_root = self.state / "batches"
        dirs = sorted(batch_root.glob("*")) if shards is None else [self.batch_dir(s) for s in shards]
        for d in dirs:
            for f in sorted(d.glob("*.parquet")) if d.is_dir() else []:
                os.replace(f, prev / f"batch-{d.name}-{stamp}-{f.name}")
            shutil.rmtree(d, ignore_errors=True)
        for s in (shards if shards is not None else self.done_shards()):
            self.marker_path(s).unlink(missing_ok=True)
        return prev

    def clear_previous(self) -> None:
        shutil.rmtree(self.state / "previous", ignore_errors=True)

    def clear_all(self) -> None:
        """Forget the run: _run.json, manifest, columns and summaries (parts were moved)."""
        for p in (self.run_json, self.columns_json, self.state / "manifest.json", self.state / "manifest.parquet"):
            p.unlink(missing_ok=True)

    def remove_shard(self, shard: int) -> None:
        """A shard that no longer exists in the plan (``--update``)."""
        for p in (self.part_path(shard), self.marker_path(shard)):
            p.unlink(missing_ok=True)
        shutil.rmtree(self.batch_dir(shard), ignore_errors=True)

    def drop_sources(self, shard: int, sources: set[str]) -> None:
        """Remove the rows read from ``sources`` from a shard's part and batch files
        (``--update``: those inputs were removed or changed)."""
        import pyarrow.compute as pc

        keep = lambda t: t.filter(pc.invert(pc.is_in(t.column("source"), value_set=pa.array(sorted(sources)))))  # noqa: E731
        m = self.marker(shard)
        if m is not None and self.part_path(shard).exists():
            t = keep(self.read_part(shard))
            out = writers.PartWriter(self.part_path(shard), self.fmt, t.schema)
            out.write(t)
            out.commit()
            errors = t.num_rows - t.column("error").null_count if "error" in t.column_names else 0
            m.update(rows=out.rows, errors=errors, bytes=out.size, sha256=out.sha256)
            writers.atomic_write_json(self.marker_path(shard), m)
        for f in self.batch_files(shard):
            t = pq.read_table(f)
            kept = keep(t)
            if kept.num_rows == t.num_rows:
                continue
            if kept.num_rows:
                writers.atomic_write_bytes(f, writers.table_to_bytes(kept, "parquet"))
            else:
                f.unlink()

    def done_shards(self) -> list[int]:
        d = self.state / "done"
        return sorted(int(p.stem) for p in d.glob("*.json") if p.stem.isdigit()) if d.is_dir() else []

    # ---- temporary files ----------------------------------------------------------------
    def sweep_temporaries(self, is_dead: Any) -> int:
        """Remove temporary files left by dead processes (``is_dead(host, pid)``)."""
        n = 0
        dirs = [self.out, self.state, self.state / "done", self.state / "leases"]
        dirs += sorted((self.state / "batches").glob("*")) if (self.state / "batches").is_dir() else []
        for d in dirs:
            if not d.is_dir():
                continue
            for p in d.iterdir():
                who = writers.parse_tmp_name(p.name)
                if who is not None and is_dead(*who):
                    p.unlink(missing_ok=True)
                    n += 1
        return n

    # ---- markers -------------------------------------------------------------------------
    def marker(self, shard: int) -> dict[str, Any] | None:
        p = self.marker_path(shard)
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        return m if isinstance(m, dict) else None

    def check_done(self, shard: int, verify: bool = False) -> tuple[dict[str, Any] | None, str | None]:
        """(marker, None) for a finished shard whose part is sound; (None, None) for one not
        finished; (None, why) for a finished shard whose part is damaged or missing."""
        m = self.marker(shard)
        if m is None:
            return None, ("its completion marker is unreadable" if self.marker_path(shard).exists() else None)
        p = self.part_path(shard)
        try:
            size = p.stat().st_size
        except OSError:
            return None, f"{p.name} is missing"
        if m.get("bytes") is not None and size != m["bytes"]:
            return None, f"{p.name} has {size} bytes, its marker says {m['bytes']}"
        if self.fmt == "parquet":
            try:
                n = pq.ParquetFile(p).metadata.num_rows
            except Exception:  # noqa: BLE001 - any footer failure means a damaged file
                return None, f"{p.name} has no readable parquet footer"
            if n != m.get("rows"):
                return None, f"{p.name} holds {n} rows, its marker says {m.get('rows')}"
        if verify and m.get("sha256") and writers.file_sha256(p) != m["sha256"]:
            return None, f"{p.name} does not match its checksum"
        return m, None

    def unmark(self, shard: int) -> None:
        self.marker_path(shard).unlink(missing_ok=True)

    def reopen(self, shard: int) -> None:
        """Turn a finished shard back into batch files (for --retry-errors)."""
        table = self.read_part(shard)
        d = self.batch_dir(shard)
        d.mkdir(parents=True, exist_ok=True)
        writers.atomic_write_bytes(d / "00000000-base.parquet", writers.table_to_bytes(table, "parquet"))
        self.unmark(shard)

    def read_part(self, shard: int) -> pa.Table:
        return read_part_file(self.part_path(shard), self.fmt)

    # ---- batch files -------------------------------------------------------------------------
    def batch_files(self, shard: int) -> list[Path]:
        d = self.batch_dir(shard)
        if not d.exists():
            return []
        return sorted(p for p in d.glob("*.parquet") if not p.name.startswith("."))

    def scan_batches(self, shard: int) -> tuple[list[Path], dict[Any, tuple[int, int, bool]]]:
        """The readable batch files of a shard, and for every id where its last row is
        (file index, row index, row has an error). Only the id and error columns are read;
        an unreadable file is set aside (``.bad``) and its rows are redone."""
        readable: list[Path] = []
        last: dict[Any, tuple[int, int, bool]] = {}
        for f in self.batch_files(shard):
            try:
                t = pq.read_table(f, columns=["id", "error"])
            except Exception:  # noqa: BLE001
                f.rename(f.with_suffix(".bad"))
                continue
            fi = len(readable)
            readable.append(f)
            for ri, (i, e) in enumerate(zip(t.column("id").to_pylist(), t.column("error").to_pylist())):
                last[i] = (fi, ri, e is not None)
        return readable, last

    def append_batch(self, shard: int, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._seq += 1
        name = f"{int(time.time() * 1000):013d}-{os.getpid()}-{self._seq:06d}.parquet"
        writers.atomic_write_bytes(self.batch_dir(shard) / name, writers.table_to_bytes(table, "parquet"))

    # ---- the output schema -----------------------------------------------------------------
    def known_columns(self) -> list[str]:
        try:
            return list(json.loads(self.columns_json.read_text()).get("columns", []))
        except (OSError, ValueError):
            return []

    def add_columns(self, names: list[str]) -> list[str]:
        """Add ``names`` to the union of columns (call under the plan claim); returns it."""
        cols = self.known_columns()
        new = [n for n in names if n not in cols]
        if new:
            cols += new
            writers.atomic_write_json(self.columns_json, {"columns": cols})
        return cols

    # ---- finalising ------------------------------------------------------------------------
    def finalize(self, shard: int, complete: bool, column_order: list[str] | None = None) -> dict[str, Any]:
        """Write the part file from the batch files, streaming one batch at a time (last row
        per id wins); if complete, write the marker too."""
        readable, last = self.scan_batches(shard)
        names, types = self._schema_names(readable, column_order or [])
        schema = _schema(names, types)
        keep: dict[int, list[int]] = {}
        for fi, ri, _ in last.values():
            keep.setdefault(fi, []).append(ri)
        out = writers.PartWriter(self.part_path(shard), self.fmt, schema)
        errors = 0
        try:
            for fi, f in enumerate(readable):
                rows = sorted(keep.get(fi, []))
                if not rows:
                    continue
                t = pq.read_table(f)
                t = t.take(pa.array(rows, type=pa.int64())) if len(rows) != t.num_rows else t
                if "error" in t.column_names:
                    errors += t.num_rows - t.column("error").null_count
                out.write(t)
        except BaseException:
            out.abort()
            raise
        out.commit()
        try:  # give the allocator's cached pages back: memory stays flat shard after shard
            pa.default_memory_pool().release_unused()
        except Exception:  # noqa: BLE001 - older pyarrow
            pass
        info = {"shard": shard, "rows": out.rows, "errors": errors, "complete": complete, "time": time.time(),
                "bytes": out.size, "sha256": out.sha256, "format": self.fmt, "columns": names}
        if complete:
            writers.atomic_write_json(self.marker_path(shard), info)
            shutil.rmtree(self.batch_dir(shard), ignore_errors=True)
        return info

    def _schema_names(self, readable: list[Path], order: list[str]) -> tuple[list[str], dict[str, pa.DataType]]:
        """The requested order, then any other column of the batch files, then the tail; and
        the type each column has in the batch files (a method's typed column keeps its type)."""
        head = [c for c in order if c not in TAIL_COLUMNS]
        extra: list[str] = []
        types: dict[str, pa.DataType] = {}
        for f in readable:
            for fld in pq.read_schema(f):
                if fld.name not in head and fld.name not in TAIL_COLUMNS and fld.name not in extra:
                    extra.append(fld.name)
                if fld.name not in types and not pa.types.is_null(fld.type):
                    types[fld.name] = fld.type
        return head + extra + list(TAIL_COLUMNS), types

    def widen_part(self, shard: int, names: list[str]) -> bool:
        """Rewrite a finished part so it has every column of ``names`` (nulls where it had
        none), keeping its order; updates the marker. False if nothing was needed."""
        m = self.marker(shard)
        if m is None or all(n in m.get("columns", []) for n in names):
            return False
        have = list(m.get("columns", []))
        head = [c for c in have if c not in TAIL_COLUMNS]
        head += [n for n in names if n not in have and n not in TAIL_COLUMNS]
        full = head + list(TAIL_COLUMNS)
        table = self.read_part(shard)
        schema = _schema(full, {f.name: f.type for f in table.schema})
        out = writers.PartWriter(self.part_path(shard), self.fmt, schema)
        out.write(table)
        out.commit()
        m.update(bytes=out.size, sha256=out.sha256, columns=full)
        writers.atomic_write_json(self.marker_path(shard), m)
        return True


def _schema(names: list[str], types: dict[str, pa.DataType]) -> pa.Schema:
    """Each column's type: as written (``types``), else pixscribe's known type, else string."""
    return pa.schema([pa.field(n, types.get(n) or writers.KNOWN_TYPES.get(n, pa.string())) for n in names])


def read_part_file(path: Path, fmt: str) -> pa.Table:
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        import tarfile

        rows = []
        with tarfile.open(path) as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    f = tar.extractfile(m)
                    if f is not None:
                        rows.append(json.loads(f.read()))
    return writers.rows_to_table(rows)


def _added_stages(old: dict[str, Any], new: dict[str, Any], diff: list[str]) -> list[str]:
    """The stages a run adds to a folder that holds a prefix of its method (an earlier
    ``--until``), when nothing else differs; else none."""
    done, now = old.get("stages"), new.get("stages")
    if not (isinstance(done, list) and isinstance(now, list) and done and now[: len(done)] == done):
        return []
    added = now[len(done):]
    ours = {"stages"} | {f"fingerprint.{a}" for a in added}
    if not added or any(k not in ours and k.split(".", 1)[0] not in added for k in diff):
        return []
    return added


def _short(v: Any, n: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."
