"""``--executor ray``: the same run on a Ray cluster (or a local Ray instance).

The driver (this process) owns the run exactly as the local executor does: the plan under
the plan claim, the manifest, one claim per shard, ``_run.json``, the batch files (written
by its :class:`~pixscribe.engine.writer.Writer`, with the lease checked before each), the
parts and the markers. Workers read, decode and compute; they never write to the output
directory. So a run begun on Ray resumes locally and the other way round, and the layout
is the same. Why the driver writes, and not the workers: docs/scale.md ("Who writes").

Reading and decoding are Ray tasks (CPU, scaled by the cluster on their own); each stage
group (plan.py: stages sharing a model share an actor) is an actor pool (pool.py);
the loop between them (flow.py) bounds the batches in flight.

The method is built by name in every actor from the configuration (``--method NAME``: a
built-in or a plugin, installed on every node); a method built in Python around objects of
its own cannot be sent to workers and is refused before Ray starts.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

from ...api.stage import Method
from ...backends.base import BackendUsage
from ...config import RunConfig
from ...errors import MethodError
from ...record import RunStop
from ..executor import Executor, _batch_size, _sigterm_as_interrupt, make_progress
from ..run import Run, ShardWork
from ..writer import Writer
from .flow import Flow
from .plan import StageGroup, plan_groups
from .pool import Pool
from .watch import watch_driver
from .worker import MethodShape, RunInfo, StageActor, build_checked, prepare_task, read_shard, warm_up

# variables a remote cluster's workers get from the driver (a local instance inherits them all)
FORWARD_PREFIXES = ("PIXSCRIBE_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")
READ_AHEAD = 4  # chunks a read may run ahead of the driver
MAX_READS = 2  # shards read at once


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, config: RunConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.ray: Any = None
        self.pools: list[Pool] = []
        self.groups: list[StageGroup] = []
        self._started_ray = False
        self.watch: Any = None
        self._usage: dict[str, Any] = {}
        self.start_seconds = 0.0

    # ---- before the run: connect, start the pools (models load there, not here) ----------------------
    def setup(self, run: Run, method: Method) -> None:
        t0 = time.perf_counter()
        _check_buildable(run.config, method)
        plan_groups(method, run.config)  # bad pool settings fail before Ray starts
        try:
            self.ray, self._started_ray = connect(run.config)
            self.watch = watch_driver(self.ray)  # one line if Ray ends this process (watch.py)
            self.groups = plan_groups(method, run.config, self.ray.cluster_resources().get("GPU", 0.0))
            _check_room(self.ray, run.config, self.groups)
            actor = self.ray.remote(StageActor)
            self.pools = [Pool(self.ray, actor, g, run.config, dict(method.fingerprints)) for g in self.groups]
            for p in self.pools:
                p.start()
            self._warm_up()
        except BaseException:
            self._shutdown()
            raise
        method.on_close.append(self._shutdown)  # after the run's time and usage are taken
        self.start_seconds = time.perf_counter() - t0

    def _warm_up(self) -> None:
        """Import the decoding code in the task workers before the clock starts (the first
        task would otherwise pay it), one task per CPU left by the replicas."""
        free = int(self.ray.available_resources().get("CPU", 1))
        task = self.ray.remote(num_cpus=1)(warm_up)
        self.ray.get([task.remote() for _ in range(max(1, free))], timeout=300)

    # ---- the run ---------------------------------------------------------------------------------------
    def execute(self, run: Run, works: list[ShardWork]) -> None:
        cfg, summary = run.config, run.summary
        progress = make_progress(works, cfg, self.console)
        writer = Writer(run, run.method, summary, progress, self.on_batch).start()
        flow = self._flow(run, writer)
        restore = _sigterm_as_interrupt()
        try:
            with progress:
                flow.execute(works)
        except KeyboardInterrupt:
            summary.interrupted = True
        except RunStop as exc:
            summary.stopped = str(exc)
        finally:
            restore()
            try:
                writer.close()
                summary.stages = flow.stage_summary()
                if not writer.errors:
                    for s in sorted(flow.touched):  # visible (and valid), not marked done
                        run.finish(s, complete=False)
                if flow.lost_batches:
                    summary.notes.append(f"{flow.lost_batches} batch(es) lost with a node: their shards stay "
                                         "unfinished; rerun to complete them")
                self._usage = self._collect(flow)
            finally:
                for p in self.pools:  # Ray itself is shut down when the method closes
                    p.shutdown()
        if writer.errors:
            raise writer.errors[0]

    def _flow(self, run: Run, writer: Writer) -> Flow:
        info = RunInfo(uuid.uuid4().hex, run.config, MethodShape.of(run.method), list(run.guard.roots),
                       [[str(f) for f in ix.files] for ix in run.priors.indexes])
        read = self.ray.remote(num_returns="streaming", num_cpus=0, max_retries=3,
                               _generator_backpressure_num_objects=READ_AHEAD)(read_shard)
        prep = self.ray.remote(num_cpus=1, max_retries=3)(prepare_task)
        replicas = sum(g.max_replicas * (g.concurrency + 1) for g in self.groups)
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        max_batches = run.config.prefetch_batches + replicas + 2 * max(1, cpus)
        return Flow(self.ray, run, writer, self.ray.put(info), (read, prep), self.pools,
                    _batch_size(run.config, run.method), max_batches, MAX_READS)

    # ---- after the run -------------------------------------------------------------------------------------
    def _collect(self, flow: Flow) -> dict[str, Any]:
        """Per model (merged over replicas), per stage (summed), per pool (replicas,
        restarts, utilisation), decoding, and the start time."""
        models: dict[str, BackendUsage] = {}
        stages: dict[str, dict[str, Any]] = {}
        out: dict[str, Any] = {}
        for pool in self.pools:
            for rep in pool.reports():
                _merge_usage(models, rep.get("usage", []))
                _merge_stages(stages, rep.get("stages", {}))
            out[f"ray {pool.group.name}"] = pool.stats()
        out["ray decode"] = {"tasks": flow.decode_tasks, "seconds": round(flow.decode_seconds, 3)}
        out["ray start"] = {"seconds": round(self.start_seconds, 3)}
        return {**{k: u.summary() for k, u in models.items()}, **stages, **out}

    def usage(self, method: Method) -> dict[str, Any]:
        return self._usage

    def _shutdown(self) -> None:
        for p in self.pools:
            p.shutdown()
        self.pools = []
        if self.ray is not None and self._started_ray:
            self.ray.shutdown()
        self._started_ray = False
        if self.watch is not None:
            self.watch.done()


def connect(cfg: RunConfig) -> tuple[Any, bool]:
    """Ray, connected to ``--ray-address``, or to a new local instance (``address="local"``:
    never some other cluster found on this machine), which listens on loopback only. A
    program that connected Ray itself keeps its connection when no address is given.
    Returns the ``ray`` module and whether this run made the connection (and closes it)."""
    from ...deps import require

    local = not cfg.ray_address
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind to 127.0.0.1, not the LAN
    ray = require("ray", extra="ray", what="--executor ray")
    if ray.is_initialized():
        if local:
            return ray, False
        ray.shutdown()
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.WARNING, "configure_logging": True}
    if local:
        ray.init(address="local", **kwargs)
    else:
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARD_PREFIXES)}
        if cfg.api_key_env and cfg.api_key_env in os.environ:
            env[cfg.api_key_env] = os.environ[cfg.api_key_env]
        ray.init(address=cfg.ray_address, runtime_env={"env_vars": env}, **kwargs)
    return ray, True


def _check_buildable(cfg: RunConfig, method: Method) -> None:
    """Refuse, before Ray starts, a method that workers cannot build by name."""
    try:
        built = build_checked(cfg, dict(method.fingerprints))
    except MethodError as exc:
        if "differs from the driver's" in str(exc):
            raise MethodError(
                f"--executor ray builds the method by name in every worker, and this method is not what "
                f"--method {cfg.method!r} builds (it was made in Python with objects of its own: stage fingerprints "
                f"differ). Register it as a plugin (docs/methods.md) and pass --method NAME, or run it with "
                f"--executor local") from None
        raise
    built.close()


def _check_room(ray: Any, cfg: RunConfig, groups: list[StageGroup]) -> None:
    """The least replicas of every group, plus one decode task, must fit in the cluster."""
    have = ray.cluster_resources()
    need_cpu = sum(g.replicas * g.num_cpus for g in groups) + 1
    need_gpu = sum(g.replicas * g.num_gpus for g in groups)
    if need_cpu <= have.get("CPU", 0) + 1e-9 and need_gpu <= have.get("GPU", 0) + 1e-9:
        return
    where = cfg.ray_address or "the local Ray instance"
    msg = (f"--executor ray: the replicas need {need_cpu - 1:g} CPU and {need_gpu:g} GPU, plus 1 CPU to read and "
           f"decode, but {where} has {have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU. Lower --replicas, "
           "--replica-cpus or --num-gpus (fractions share a device)")
    if cfg.ray_address:  # an autoscaling cluster may grow: say so, and let the pools wait
        logging.getLogger("pixscribe").warning(msg)
        return
    raise MethodError(msg)


def _merge_usage(into: dict[str, BackendUsage], items: list[dict[str, Any]]) -> None:
    for u in items:
        agg = into.setdefault(u["name"], BackendUsage())
        for k in ("requests", "failures", "retries", "tokens_in", "tokens_out"):
            setattr(agg, k, getattr(agg, k) + int(u.get(k, 0)))
        agg.latency.merge(u.get("latency_buckets", {}))


def _merge_stages(into: dict[str, dict[str, Any]], stages: dict[str, dict[str, Any]]) -> None:
    for name, su in stages.items():
        agg = into.setdefault(name, {})
        for k, v in su.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                agg[k] = round(agg.get(k, 0) + v, 6)
            else:
                agg.setdefault(k, v)
