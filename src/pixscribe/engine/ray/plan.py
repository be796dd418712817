"""How the Ray executor lays a method out: its stages in *groups*, each group an actor pool.

Models are shared, not stages (engine/models.py): stages that use the same model (what
their :meth:`~pixscribe.api.Stage.models` declare) must run in the same actor, so that model
is loaded once per replica. A group is therefore the smallest run of consecutive stages
that holds every stage using any model it uses: the stages between two users of one model
join them (textualize's VLM describes and, as the
LLM, rewrites: its whole chain is one group unless ``--llm`` names another model). A stage
that shares no model is a group of its own.

Each group's pool: ``--replicas`` actors (autoscaled up to ``--max-replicas``), each
holding ``--replica-cpus`` CPUs and ``--num-gpus`` GPUs (default: 1 when the group runs a
local model or vision experts and the cluster has GPUs, else 0); ``ray_stages: {STAGE:
{replicas, max_replicas, num_gpus, num_cpus}}`` in YAML sets them per group (by any of its
stages' names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...api.stage import Method, Stage
from ...backends.base import Backend
from ...config import RunConfig
from ...errors import MethodError

POOL_KEYS = ("replicas", "max_replicas", "num_gpus", "num_cpus")


@dataclass
class StageGroup:
    name: str  # its stages' names joined with "+"
    start: int
    stop: int
    replicas: int
    max_replicas: int
    num_gpus: float
    num_cpus: float
    concurrency: int  # batches one replica runs at once (HTTP backends keep several in flight)
    keep_image: bool  # a later group looks at pixels

    @property
    def resources(self) -> dict[str, float]:
        return {"CPU": self.num_cpus, "GPU": self.num_gpus}

    def describe(self) -> dict[str, Any]:
        return {"stages": self.name, "replicas": self.replicas, "max_replicas": self.max_replicas,
                "num_gpus": self.num_gpus, "num_cpus": self.num_cpus}


def spans(method: Method) -> list[tuple[int, int]]:
    """Stage index ranges ``[start, stop)``: every model's users, and what lies between them,
    in one range; ranges that overlap merged."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, st in enumerate(method.stages):
        for m in st.models():
            first.setdefault(id(m), i)
            last[id(m)] = i
    ranges = sorted([(first[k], last[k] + 1) for k in first] + [(i, i + 1) for i in range(len(method.stages))])
    merged: list[list[int]] = []
    for a, b in ranges:
        if merged and a < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def plan_groups(method: Method, cfg: RunConfig, cluster_gpus: float = 0.0) -> list[StageGroup]:
    """The method's stage groups with their pool settings (see the module docstring)."""
    _check_ray_stages(method, cfg)
    groups = []
    for a, b in spans(method):
        stages = method.stages[a:b]
        over = _overrides(stages, cfg)
        lo = int(over.get("replicas", cfg.replicas))
        hi = int(over.get("max_replicas", cfg.max_replicas or lo))
        if hi < lo:
            raise MethodError(f"stage group {_name(stages)}: max_replicas {hi} is below replicas {lo}")
        gpus = over.get("num_gpus", cfg.num_gpus)
        if gpus is None:
            gpus = 1.0 if cluster_gpus > 0 and _wants_gpu(stages) else 0.0
        groups.append(StageGroup(
            name=_name(stages), start=a, stop=b, replicas=lo, max_replicas=hi, num_gpus=float(gpus),
            num_cpus=float(over.get("num_cpus", cfg.replica_cpus)),
            concurrency=max(1, min(int(s.max_inflight_batches) for s in stages)),
            keep_image=any(s.needs_image for s in method.stages[b:]),
        ))
    return groups


def _name(stages: list[Stage]) -> str:
    return "+".join(s.name for s in stages)


def _overrides(stages: list[Stage], cfg: RunConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in stages:
        for k, v in (cfg.ray_stages or {}).get(s.name, {}).items():
            out.setdefault(k, v)
    return out


def _check_ray_stages(method: Method, cfg: RunConfig) -> None:
    names = [s.name for s in method.stages]
    for stage, opts in (cfg.ray_stages or {}).items():
        if stage not in names:
            raise MethodError(f"ray_stages: method {method.name!r} has no stage {stage!r}; its stages are "
                              f"{', '.join(names)}")
        bad = sorted(set(opts) - set(POOL_KEYS))
        if bad:
            raise MethodError(f"ray_stages.{stage}: unknown key(s) {', '.join(bad)}; allowed: {', '.join(POOL_KEYS)}")


def _wants_gpu(stages: list[Stage]) -> bool:
    """A local model (transformers, vLLM) or a transformers vision expert, not pinned to
    the CPU (the lite experts run on ONNX/OpenCV on the CPU: they want none)."""
    for st in stages:
        for m in st.models():
            pref = m.device_request if isinstance(m, Backend) else m.device_pref
            if pref is not None and pref != "cpu":
                return True
    return False
