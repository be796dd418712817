"""One stage group's actor pool for the Ray executor: replicas, their in-flight batches,
restarts, autoscaling and utilisation.

Each replica is a :class:`~pixscribe.engine.ray.worker.StageActor` created with
``max_restarts=-1`` (Ray restarts a dead replica, which builds the method and loads its
models again) and ``max_task_retries=0``: the pool, not Ray, decides what a death costs.
A replica runs its batches one after another (``concurrency`` at a time for HTTP
backends) while it receives and unpacks the next, and the pool keeps ``concurrency + 2``
in flight so it never waits for the driver.

When a replica dies, the batches it had finished are kept and the others go back to the
queue; their old results are never read, so a batch is written at most once whatever Ray
delivers later. Which batch killed it is not known while several were in flight (a
finished batch's reply can die with the process), so those batches are then sent alone
(``suspect``), and a death with one batch in flight is charged to that batch.

Autoscaling (``max_replicas`` above ``replicas``): a replica is added while batches wait
for this group, every replica is full and the cluster has room for one more; one idle for
``IDLE_SECONDS`` is removed while more than ``replicas`` remain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ...config import RunConfig
from ...record import RunStop
from .plan import StageGroup

IDLE_SECONDS = 30.0
READY_TIMEOUT = 600.0  # loading a large model onto a GPU can take minutes


@dataclass
class Replica:
    handle: Any
    index: int
    ready_ref: Any = None
    ready_at: float | None = None
    gone_at: float | None = None
    inflight: list[Any] = field(default_factory=list)  # batches, oldest first
    busy: float = 0.0
    idle_since: float = field(default_factory=time.monotonic)
    pid: int | None = None
    report: dict[str, Any] | None = None
    ready_failures: int = 0

    @property
    def ready(self) -> bool:
        return self.ready_ref is None and self.gone_at is None

    def alive_seconds(self, now: float) -> float:
        if self.ready_at is None:
            return 0.0
        return (self.gone_at or now) - self.ready_at


class Pool:
    def __init__(self, ray: Any, actor_cls: Any, group: StageGroup, config: RunConfig, fingerprints: dict[str, str]):
        self.ray = ray
        self.group = group
        self.depth = group.concurrency + 2  # running, unpacking, and one queued behind them
        self._cls = actor_cls.options(
            num_cpus=group.num_cpus, num_gpus=group.num_gpus, max_restarts=-1, max_task_retries=0,
            max_concurrency=group.concurrency + 1)
        self._args = (config, group.start, group.stop, fingerprints, group.keep_image, group.concurrency)
        self.replicas: list[Replica] = []
        self.restarts = 0
        self.batches = 0
        self.retried = 0
        self.peak = 0
        self._last_scale = 0.0

    # ---- replicas ----------------------------------------------------------------------------
    def add(self) -> Replica:
        r = Replica(self._cls.remote(*self._args), len(self.replicas))
        r.ready_ref = r.handle.ready.remote()
        self.replicas.append(r)
        return r

    def start(self) -> None:
        """Start ``replicas`` actors and wait until every one has loaded its models; the
        first error (a model that cannot load, a method that differs) is raised as it is."""
        for _ in range(self.group.replicas):
            self.add()
        refs = {r.ready_ref: r for r in self.replicas}
        ready, pending = self.ray.wait(list(refs), num_returns=len(refs), timeout=READY_TIMEOUT)
        if pending:
            raise RunStop(f"stage group {self.group.name}: {len(pending)} replica(s) did not start within "
                          f"{READY_TIMEOUT:.0f} s (each needs {self.group.num_cpus:g} CPU and "
                          f"{self.group.num_gpus:g} GPU; the cluster has {self.ray.cluster_resources()})")
        for ref in ready:
            self.on_ready(refs[ref], ref)

    def on_ready(self, r: Replica, ref: Any) -> None:
        """A replica answered ``ready()`` (at start, or after Ray restarted it)."""
        info = _get_cause(self.ray, ref)  # raises the replica's own error
        r.ready_ref = None
        r.ready_failures = 0
        r.pid = info["pid"]
        if r.ready_at is None:
            r.ready_at = time.monotonic()
        r.idle_since = time.monotonic()
        self.peak = max(self.peak, len(self.live()))

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.gone_at is None]

    def pending_ready(self) -> dict[Any, Replica]:
        return {r.ready_ref: r for r in self.live() if r.ready_ref is not None}

    def free(self, suspect: bool = False) -> Replica | None:
        """The ready replica with the fewest batches in flight, if one has room; for a
        ``suspect`` batch (in flight when a replica died), one with nothing in flight. A
        replica running a suspect takes nothing else."""
        ok = [r for r in self.live() if r.ready and not any(b.suspect for b in r.inflight)
              and (not r.inflight if suspect else len(r.inflight) < self.depth)]
        return min(ok, key=lambda r: len(r.inflight), default=None)

    # ---- batches -------------------------------------------------------------------------------
    def submit(self, r: Replica, batch: Any, data: Any, pick: list[int] | None) -> tuple[Any, Any]:
        recs, info = r.handle.run.options(num_returns=2).remote(data, pick)
        r.inflight.append(batch)
        self.batches += 1
        return recs, info

    def done(self, r: Replica, batch: Any, info: dict[str, Any]) -> None:
        if batch in r.inflight:
            r.inflight.remove(batch)
        r.busy += float(info.get("busy", 0.0))
        if not r.inflight:
            r.idle_since = time.monotonic()

    def died(self, r: Replica, dead: list[Any]) -> None:
        """``dead`` were lost with their replica. Which one killed it is only known when it
        ran alone: then it is charged one attempt; otherwise none is, and each of them runs
        alone from now on (``suspect``). Then wait for Ray to restart the replica."""
        for b in dead:
            if b in r.inflight:
                r.inflight.remove(b)
        if len(dead) == 1 and dead[0].suspect:
            dead[0].attempts += 1
        for b in dead:
            b.suspect = True
        self.retried += len(dead)
        if r.ready_ref is None:
            self.restarts += 1
            r.ready_ref = r.handle.ready.remote()  # answered once Ray has restarted it
        r.idle_since = time.monotonic()

    def lost_replica(self, r: Replica) -> None:
        """A restarted replica that cannot load again: give up on it."""
        r.gone_at = time.monotonic()
        r.ready_ref = None
        try:
            self.ray.kill(r.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    # ---- autoscaling ---------------------------------------------------------------------------
    def autoscale(self, backlog: int) -> None:
        now = time.monotonic()
        if now - self._last_scale < 1.0:
            return
        self._last_scale = now
        live = self.live()
        starting = any(r.ready_ref is not None for r in live)
        if backlog and not starting and len(live) < self.group.max_replicas and self.free() is None \
                and self._room():
            self.add()
            return
        if backlog == 0 and len(live) > self.group.replicas:
            idle = [r for r in live if r.ready and not r.inflight and now - r.idle_since > IDLE_SECONDS]
            if idle:
                self.retire(idle[-1])

    def _room(self) -> bool:
        free = self.ray.available_resources()
        return all(free.get(k, 0.0) >= v for k, v in self.group.resources.items() if v > 0)

    def retire(self, r: Replica) -> None:
        """Take a replica out of the pool, keeping its counters."""
        r.report = self._report(r)
        r.gone_at = time.monotonic()
        self.ray.kill(r.handle, no_restart=True)

    def _report(self, r: Replica) -> dict[str, Any] | None:
        try:
            return self.ray.get(r.handle.report.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - a dead replica's counters are gone with it
            return None

    # ---- the end ---------------------------------------------------------------------------------
    def reports(self) -> list[dict[str, Any]]:
        """Every replica's stage summaries and model usage (asked of the live ones now)."""
        live = [r for r in self.live() if r.ready]
        refs = [r.handle.report.remote() for r in live]
        for r, ref in zip(live, refs):
            try:
                r.report = self.ray.get(ref, timeout=60)
            except Exception:  # noqa: BLE001
                r.report = None
        return [r.report for r in self.replicas if r.report]

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        alive = sum(r.alive_seconds(now) for r in self.replicas)
        busy = sum(r.busy for r in self.replicas)
        return {"replicas": len(self.live()), "replicas_peak": self.peak, "replicas_range":
                f"{self.group.replicas}..{self.group.max_replicas}", "num_gpus": self.group.num_gpus,
                "num_cpus": self.group.num_cpus, "batches": self.batches, "restarts": self.restarts,
                "batches_retried": self.retried, "busy_seconds": round(busy, 3),
                "utilisation": round(busy / alive, 3) if alive > 0 else None}

    def shutdown(self) -> None:
        for r in self.live():
            try:
                self.ray.kill(r.handle, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
            r.gone_at = time.monotonic()


def _get_cause(ray: Any, ref: Any, timeout: float | None = None) -> Any:
    """``ray.get``, raising a task's own exception (a MethodError stays a MethodError)."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise
