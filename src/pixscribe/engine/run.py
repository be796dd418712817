"""One run over one output directory, whatever executes it: the plan, the claims, the shard
lifecycle. Every executor (local, Ray) uses this, so they share one output layout and one
protocol (lease, manifest, atomic batch files, validated markers) and a run can move
between them.

    run = Run.open(config, method)        # plan under the plan claim; claim my shards
    for work in run.pending():            # ShardWork: what to read, what to skip, priors
        ...                                # the executor computes and writes batch files
        run.finish(work.index, complete)  # part file, marker, column union, release
    run.close(summary)                    # widen parts to the column union, summary file
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..api.stage import Method
from ..config import RunConfig
from ..errors import ConfigMismatch
from ..io.plan import PathGuard, ShardSpec, expand_inputs
from ..io.readers import Shard, open_shard
from ..record import BASE_COLUMNS, TAIL_COLUMNS, InputError
from . import manifest as mf
from .lease import Leases, _pid_alive
from .reuse import Priors, RowIndex
from .state import RunState
from .summary import Summary


@dataclass
class ShardWork:
    spec: ShardSpec
    shard: Shard
    skip: set[str] = field(default_factory=set)  # ids already written in this shard
    own: RowIndex | None = None  # this shard's batch files, for --retry-errors

    @property
    def index(self) -> int:
        return self.spec.index


class Run:
    def __init__(self, config: RunConfig, method: Method, leases: Leases, state: RunState):
        self.config = config
        self.method = method
        self.leases = leases
        self.state = state
        self.summary = Summary()
        self.manifest: mf.Manifest | None = None
        self.mine: list[ShardSpec] = []
        self.priors = Priors()
        self.guard = PathGuard([], allow_any=True)
        self.fetcher: Any = None
        self.columns: list[str] = []
        self._created_out = False

    # ---- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, config: RunConfig, method: Method) -> "Run":
        out = Path(config.output)
        if out.exists() and not out.is_dir():
            raise InputError(f"-o {out}: is a file, not a directory; name a new or existing output directory")
        try:  # atomic: of two runs started together, exactly one created the directory
            out.mkdir(parents=True)
            created = True
        except FileExistsError:
            created = False
        state = RunState(out, config.format)
        leases = Leases(state.state, timeout=config.lease_timeout)
        run = cls(config, method, leases, state)
        run._created_out = created
        try:
            leases.start()
            leases.claim("plan", wait=True, poll=0.2, what="planning")
            try:
                run._plan()
            finally:
                leases.release("plan")
            run._claim_mine()
        except BaseException:
            run._abandon()
            raise
        return run

    def _abandon(self) -> None:
        """A run that fails before it starts leaves nothing behind it did not find: the output
        directory goes if this run created it and no other run has used it since (another
        run's owner file in the leases says it has: a run started at the same moment)."""
        self.leases.close()
        if not self._created_out:
            return
        others = list(self.leases.dir.glob("owner-*.json")) if self.leases.dir.is_dir() else []
        if others:
            return
        shutil.rmtree(self.state.out, ignore_errors=True)

    def _plan(self) -> None:
        cfg = self.config
        k, n = cfg.shard_k_n
        self.state.sweep_temporaries(self._tmp_owner_dead)
        if self.state.previous_run() is not None and not mf.exists(self.state.state) and not cfg.overwrite:
            raise ConfigMismatch(f"{self.state.out} was written by an older pixscribe (no manifest); use --overwrite "
                                 "to start over (stage outputs are reused), or write to a new -o directory")
        if cfg.overwrite and n == 1:
            self._start_over()
        exp = expand_inputs(cfg.inputs, cfg.shard_size)
        self.guard = PathGuard(exp.roots, allow_any=cfg.allow_any_path)
        exp.check_listed(self.guard)
        self.manifest = self._manifest(exp)
        self.mine = [s for s in self.manifest.shards if s.index % n == k]
        if cfg.overwrite and n > 1:  # only this task's shards: its siblings move their own
            self.state.move_to_previous([s.index for s in self.mine])
        fields = self.fingerprint_fields()
        fp = fingerprint(fields)
        self.state.check_config(fp, fields, overwrite=cfg.overwrite)
        self.summary.shards_total = len(self.mine)
        self._open_priors()
        self._recorded = (fp, fields)
        self.state.write_run_json(self._run_json(fp, fields))
        from ..io.fetch import UrlFetcher

        self.fetcher = UrlFetcher.from_config(cfg)

    def _tmp_owner_dead(self, host: str, pid: int) -> bool:
        from ..io.writers import _HOST

        return host == _HOST and pid != os.getpid() and not _pid_alive(pid)

    def _start_over(self) -> None:
        """--overwrite: keep the old rows aside for reuse, forget the old plan."""
        others = self.leases.live_owners()
        if others:
            raise ConfigMismatch(f"--overwrite: {self.state.out} is being written by {others[0].describe()}; "
                                 "wait for it to finish (or stop it) first")
        self.state.move_to_previous(None)
        self.state.clear_all()

    def _manifest(self, exp: Any) -> mf.Manifest:
        """The run's plan: read (and compared with the inputs), or created at the first run."""
        cfg = self.config
        st = self.state.state
        if not mf.exists(st):
            m = mf.Manifest.create(exp.units, cfg.shard_size, exp.roots, list(cfg.inputs))
            mf.write(st, m)
            return m
        m = mf.read(st)
        if m.shard_size != cfg.shard_size:
            raise ConfigMismatch(f"{self.state.out} was planned with --shard-size {m.shard_size}, not "
                                 f"{cfg.shard_size}; keep it, or use --overwrite to plan again")
        d = mf.diff(m, exp.units)
        if not d.empty:
            if not cfg.update:
                raise ConfigMismatch(
                    f"the inputs changed since {self.state.out} was planned: {d.describe()}. Rerun with --update to "
                    "process exactly the new and changed inputs (finished shards stay as they are), or use "
                    "--overwrite to start over"
                )
            self._apply_update(m, d)
        return m

    def _apply_update(self, m: mf.Manifest, d: mf.Diff) -> None:
        """Apply the plan's changes. The rows of a changed or removed container (a table, a
        tar) are kept aside in ``_state/previous/``: its new shards reuse every row whose id,
        image and inputs did not change, so appending ten rows to a table computes ten."""
        up = mf.update(m, d)
        for s in up.dropped:
            self._claim_or_fail(s, "--update")
            self.state.move_to_previous([s])
            self.state.remove_shard(s)
        for s, lost in up.trimmed.items():
            self._claim_or_fail(s, "--update")
            self.state.drop_sources(s, lost)
        mf.write(self.state.state, m)
        for s in list(up.trimmed) + up.dropped:
            self.leases.release(f"{s:05d}")
        self.summary.notes.append(f"--update: {d.describe()}; {len(up.new)} new shard(s)")

    def _claim_or_fail(self, shard: int, what: str) -> None:
        self.leases.claim(f"{shard:05d}", wait=self.config.wait, what=f"{what}: shard {shard}")

    def _open_priors(self) -> None:
        dirs = [Path(d) for d in self.config.reuse]
        for d in dirs:
            if not d.is_dir():
                raise InputError(f"--reuse {d}: no such output directory")
        if self.config.no_reuse:
            self.priors = Priors()
            return
        prev = self.state.state / "previous"
        kept = sorted(prev.glob("part-*")) + sorted(prev.glob("batch-*.parquet")) if prev.is_dir() else []
        self.priors = Priors([RowIndex(kept)] + Priors.from_dirs(dirs).indexes)

    # ---- fingerprints and _run.json ----------------------------------------------------
    def fingerprint_fields(self) -> dict[str, Any]:
        return fingerprint_fields(self.config, self.method)

    def record_models(self) -> None:
        """Write _run.json again once the models are loaded: what they turned out to be (the
        device, the dtype, which processor classes) is known only then."""
        self.state.write_run_json(self._run_json(*self._recorded))

    def _run_json(self, fp: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {
            "pixscribe_version": __version__,
            "fingerprint": fp,
            "fingerprint_fields": fields,
            "config": self.config.recorded(uses_models=bool(self.method.pool and self.method.pool.describe())),
            "models": self.method.pool.describe() if self.method.pool is not None else [],
            "method": self.method.describe(),
            "shards": len(self.manifest.shards) if self.manifest else 0,
            "input_guard": self.guard.record(),  # report and export re-read sources through it
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    # ---- claims ---------------------------------------------------------------------------
    def _claim_mine(self) -> None:
        """Claim every unfinished shard of this task up front, so a second run on the same
        shards fails at once (or waits with --wait), naming who holds them."""
        for s in self.mine:
            m, why = self.state.check_done(s.index, verify=False)
            if m is not None and not (self.config.retry_errors and m.get("errors", 0)) and not self.config.verify:
                continue
            self._claim_or_fail(s.index, "shard")

    # ---- the shard lifecycle ----------------------------------------------------------------
    def pending(self) -> list[ShardWork]:
        """The shards this task still has to (re)write, opened, with their skip sets."""
        out: list[ShardWork] = []
        for s in self.mine:
            w = self._resolve(s)
            if w is not None:
                out.append(w)
        return out

    def _resolve(self, s: ShardSpec) -> ShardWork | None:
        cfg = self.config
        m, why = self.state.check_done(s.index, verify=cfg.verify)
        if why is not None:
            self.summary.shards_redone.append(f"shard {s.index}: {why}")
            self.state.unmark(s.index)
            self.state.part_path(s.index).unlink(missing_ok=True)
        if m is not None:
            if cfg.retry_errors and m.get("errors", 0) > 0:
                self.state.reopen(s.index)
            else:
                self.summary.shards_done_before += 1
                self.summary.rows_skipped += int(m.get("rows", 0))
                self._sweep_finished(s.index)
                return None
        if f"{s.index:05d}" not in self.leases.held:
            self._claim_or_fail(s.index, "shard")
        readable, last = self.state.scan_batches(s.index)
        skip = {i for i, (_, _, failed) in last.items() if i is not None and not (cfg.retry_errors and failed)}
        own = RowIndex(readable) if readable and cfg.retry_errors else None
        shard = open_shard(s, self.fetcher, self.guard)
        return ShardWork(s, shard, skip, own)

    def _sweep_finished(self, shard: int) -> None:
        """Remove the batch files a finished shard left behind (killed between its marker and
        their removal). Only under the shard's claim, so a run reopening it is never robbed."""
        name = f"{shard:05d}"
        if not self.state.batch_dir(shard).exists() or self.leases.try_claim(name) is not None:
            return
        try:
            if self.state.check_done(shard)[0] is not None:
                shutil.rmtree(self.state.batch_dir(shard), ignore_errors=True)
        finally:
            self.leases.release(name)

    def check_lease(self, shard: int) -> None:
        self.leases.check(f"{shard:05d}")

    def finish(self, shard: int, complete: bool) -> dict[str, Any]:
        self.check_lease(shard)
        info = self.state.finalize(shard, complete, self.columns)
        new = [c for c in info["columns"] if c not in self.columns and c not in TAIL_COLUMNS]
        if new:
            self._with_plan(lambda: self.state.add_columns(new))
        if complete:
            self.summary.shards_completed += 1
            self.leases.release(f"{shard:05d}")
        return info

    def _with_plan(self, fn: Any) -> Any:
        self.leases.claim("plan", wait=True, poll=0.1, what="planning")
        try:
            return fn()
        finally:
            self.leases.release("plan")

    # ---- columns -------------------------------------------------------------------------------
    def set_columns(self, input_columns: list[str]) -> list[str]:
        """The output column order: base, the method's columns, input columns (the union
        known so far), tail. Records the union for later shards and runs."""
        known = self._with_plan(lambda: self.state.add_columns(input_columns))
        cols = list(BASE_COLUMNS) + [c for c in self.method.columns if c not in BASE_COLUMNS]
        cols += [c for c in known if c not in cols and c not in TAIL_COLUMNS]
        self.columns = cols + list(TAIL_COLUMNS)
        return self.columns

    # ---- closing ---------------------------------------------------------------------------------
    def close(self, summary: Summary | None = None) -> None:
        if self.fetcher is not None:
            self.fetcher.close()
        try:
            self._widen_parts()
            if self._previous_used_up():
                self.state.clear_previous()
        finally:
            self._write_summary(summary or self.summary)
            self._sweep_leases()
            self.leases.close()

    def _sweep_leases(self) -> None:
        try:
            self.leases.sweep()
        except OSError:
            pass  # tidying only

    def _widen_parts(self) -> None:
        union = self.state.known_columns()
        if not union:
            return
        for s in self.state.done_shards():
            name = f"{s:05d}"
            if self.leases.try_claim(name) is not None:
                continue  # someone else is writing it: they widen it when they finish
            try:
                self.state.widen_part(s, union)
            finally:
                self.leases.release(name)

    def _previous_used_up(self) -> bool:
        """Whether the rows kept aside for reuse (--overwrite, --update) are needed no more:
        every shard of the plan is done. Not for --overwrite --shard K/N: a sibling task moves
        its own shards there when it starts."""
        k, n = self.config.shard_k_n
        if not (self.state.state / "previous").is_dir() or (self.config.overwrite and n > 1):
            return False
        shards = self.manifest.shards if self.manifest is not None else self.mine
        return all(self.state.check_done(s.index)[0] for s in shards)

    def _write_summary(self, summary: Summary) -> None:
        from ..io.writers import atomic_write_json

        k, n = self.config.shard_k_n
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-shard{k}of{n}.json"
        try:
            atomic_write_json(self.state.state / "summaries" / name, summary.to_dict())
        except OSError:
            pass


def fingerprint_fields(cfg: RunConfig, method: Method) -> dict[str, Any]:
    """What a run's fingerprint is made of (``_run.json``'s ``fingerprint_fields``); the run and
    ``caption --dry-run`` both read it here."""
    fields: dict[str, Any] = {"format": cfg.format, "method": method.name, "stages": [s.name for s in method.stages]}
    fields.update({f"image.{k}": v for k, v in image_options(cfg).items()})
    fields.update(method.fingerprint_fields())
    fields.update({f"fingerprint.{k}": v for k, v in method.fingerprints.items()})
    return fields


def image_options(cfg: RunConfig) -> dict[str, Any]:
    return {"max_pixels": cfg.max_pixels, "max_side": cfg.max_side, "max_image_pixels": cfg.max_image_pixels}


def fingerprint(fields: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
