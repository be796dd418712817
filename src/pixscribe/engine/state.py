"""Run state: shard completion markers, batch files and id-level skip.

Layout of an output directory::

    OUT_DIR/
      part-00000.parquet         one file per shard (or .jsonl / .tar)
      _run.json                  resolved config, fingerprint, version, models
      _state/
        done/00000.json          completion marker of shard 0 (rows, errors)
        batches/00000/*.parquet  rows of an unfinished shard, one atomic file per batch
        summaries/*.json         end-of-run summaries

Names under OUT_DIR that start with ``_`` are skipped by pyarrow's and DuckDB's
directory discovery, so ``pyarrow.parquet.read_table(OUT_DIR)`` reads only the parts.

Exactly-once: a batch file is written atomically after its rows are computed; a rerun
reads the ids of all batch files of an unfinished shard and skips them; a part file is
always rebuilt from all batch files (last row per id wins, so a retried row replaces
its failed one); the marker is written after the part file, and the batch files are
removed only after the marker. A crash at any point leaves either batch files to
rebuild from, or a marker with its complete part file.
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

    # ---- config ----------------------------------------------------------------
    def check_config(self, fingerprint: str, fields: dict[str, Any], overwrite: bool) -> None:
        """Refuse to resume into OUT_DIR written with a different configuration."""
        if overwrite or not self.run_json.exists():
            return
        try:
            prev = json.loads(self.run_json.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigMismatch(f"{self.run_json} is unreadable ({exc}); use --overwrite to start over") from exc
        if prev.get("fingerprint") == fingerprint:
            return
        old = prev.get("fingerprint_fields", {})
        diff = sorted(k for k in set(old) | set(fields) if old.get(k) != fields.get(k))
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {fields.get(k)!r}" for k in diff[:6])
        raise ConfigMismatch(
            f"{self.out} holds a run with a different configuration ({shown}). "
            "Resuming would mix outputs. Use --overwrite to start over, or write to a new -o directory."
        )

    def clear(self, shards: list[int] | None = None) -> None:
        """Remove pixscribe's own files (all of them, or those of some shards)."""
        if shards is None:
            for p in self.out.glob("part-*"):
                if p.is_file():
                    p.unlink()
            shutil.rmtree(self.state, ignore_errors=True)
            if self.run_json.exists():
                self.run_json.unlink()
            return
        for s in shards:
            for p in (self.part_path(s), self.marker_path(s)):
                if p.exists():
                    p.unlink()
            shutil.rmtree(self.batch_dir(s), ignore_errors=True)

    def write_run_json(self, info: dict[str, Any]) -> None:
        writers.atomic_write_json(self.run_json, info)

    # ---- shards -----------------------------------------------------------------
    def marker(self, shard: int) -> dict[str, Any] | None:
        p = self.marker_path(shard)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def is_done(self, shard: int) -> bool:
        m = self.marker(shard)
        return m is not None and self.part_path(shard).exists()

    def cleanup_done(self, shard: int) -> None:
        """Batch files left behind by a crash after the marker was written."""
        d = self.batch_dir(shard)
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)

    def reopen(self, shard: int) -> None:
        """Turn a finished shard back into batch files (for --retry-errors)."""
        table = self.read_part(shard)
        d = self.batch_dir(shard)
        d.mkdir(parents=True, exist_ok=True)
        writers.atomic_write_bytes(d / "00000000-base.parquet", writers.table_to_bytes(table, "parquet"))
        self.marker_path(shard).unlink()

    def read_part(self, shard: int) -> pa.Table:
        p = self.part_path(shard)
        if self.fmt == "parquet":
            return pq.read_table(p)
        if self.fmt == "jsonl":
            rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            import tarfile

            rows = []
            with tarfile.open(p) as tar:
                for m in tar:
                    if m.name.endswith(".json"):
                        f = tar.extractfile(m)
                        if f is not None:
                            rows.append(json.loads(f.read()))
        return writers.rows_to_table(rows)

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
            except Exception:
                f.rename(f.with_suffix(".bad"))
                continue
            fi = len(readable)
            readable.append(f)
            for ri, (i, e) in enumerate(zip(t.column("id").to_pylist(), t.column("error").to_pylist())):
                last[i] = (fi, ri, e is not None)
        return readable, last

    def written_ids(self, shard: int, retry_errors: bool = False) -> set[str]:
        """Ids already written for an unfinished shard (minus failed ones with --retry-errors)."""
        _, last = self.scan_batches(shard)
        return {i for i, (_, _, failed) in last.items() if i is not None and not (retry_errors and failed)}

    def append_batch(self, shard: int, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._seq += 1
        name = f"{int(time.time() * 1000):013d}-{os.getpid()}-{self._seq:06d}.parquet"
        writers.atomic_write_bytes(self.batch_dir(shard) / name, writers.table_to_bytes(table, "parquet"))

    def finalize(self, shard: int, complete: bool, column_order: list[str] | None = None) -> dict[str, Any]:
        """Write the part file from the batch files, streaming one batch at a time (last row
        per id wins); if complete, write the marker too."""
        from ..record import TAIL_COLUMNS

        readable, last = self.scan_batches(shard)
        # the schema: the requested order, then any other column, then the tail
        head = [c for c in (column_order or []) if c not in TAIL_COLUMNS]
        extra: list[str] = []
        for f in readable:
            for name in pq.read_schema(f).names:
                if name not in head and name not in TAIL_COLUMNS and name not in extra:
                    extra.append(name)
        names = head + extra + list(TAIL_COLUMNS)
        schema = pa.schema([pa.field(n, writers.KNOWN_TYPES.get(n, pa.string())) for n in names])
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
            out.commit()
        except BaseException:
            out.abort()
            raise
        try:  # give the allocator's cached pages back: memory stays flat shard after shard
            pa.default_memory_pool().release_unused()
        except Exception:  # noqa: BLE001 - older pyarrow
            pass
        info = {"shard": shard, "rows": out.rows, "errors": errors, "complete": complete, "time": time.time()}
        if complete:
            writers.atomic_write_json(self.marker_path(shard), info)
            self.cleanup_done(shard)
        return info
