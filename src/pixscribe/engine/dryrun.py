"""``pixscribe caption ... --dry-run``: what a run would do, before it does anything.

It reads the inputs the way the run would (the same expansion, the same shards, ``--shard``
included), looks at an existing output the way resume would (which shards are finished,
which rows are in batch files, whether the configuration matches), and lists every model
each stage needs with whether it is present here: a hub model in the local cache (weights,
not only a config), a local directory, a server that lists the model, or the package an
expert's weights ship in. It loads nothing, writes nothing, and never asks the hub: a hub
model is looked up in the local cache only (``HF_HUB_OFFLINE`` is set for the process), so
the answer comes in seconds with no network, and every missing model is named at once with
the command that fetches it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf", ".msgpack", ".h5")


@dataclass
class ModelCheck:
    """One model a stage needs, and whether it is here."""

    stages: list[str]
    what: str  # "transformers", "openai", "vllm", or an expert's name
    model: str
    kind: str  # hub | local | server | package
    present: bool | None  # None: could not tell (a server that did not answer)
    detail: str = ""
    fetch: str | None = None  # the command that makes it present
    optional: bool = False  # loaded only when a row needs it (a missing one makes those rows errors)


@dataclass
class Plan:
    method: str
    stages: list[str]
    inputs: dict[str, Any]
    resume: dict[str, Any]
    models: list[ModelCheck] = field(default_factory=list)

    @property
    def missing(self) -> list[ModelCheck]:
        return [m for m in self.models if m.present is False]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "missing": [m.model for m in self.missing]}


def go_offline() -> None:
    """Never ask the hub from this process: a lookup answers from the local cache at once."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        pass


def make_plan(cfg: Any, method: Any = None) -> Plan:
    """The plan of ``cfg``'s run (see the module docstring); ``method``: a method built in a
    program instead of ``cfg.method``."""
    from .context import build_method
    from .run import image_options

    go_offline()
    method = method if method is not None else build_method(cfg.method, cfg)
    method = method.prefix(cfg.until).with_fingerprints(image_options(cfg))
    specs = _shard_specs(cfg)
    return Plan(method=method.name, stages=[s.name for s in method.stages], inputs=_inputs(cfg, specs),
                resume=_resume(cfg, method, specs), models=check_models(method))


# ---- inputs ---------------------------------------------------------------------------------
def _shard_specs(cfg: Any) -> list[Any]:
    from ..io.plan import expand_inputs, specs_from_units

    exp = expand_inputs(cfg.inputs, cfg.shard_size)
    k, n = cfg.shard_k_n
    return [s for s in specs_from_units(exp.units, cfg.shard_size) if s.index % n == k]


def _rows_of(spec: Any) -> int | None:
    if spec.count is not None:
        return int(spec.count)
    if spec.kind == "tar" and spec.path:
        from ..io.readers import count_tar_samples

        return count_tar_samples(spec.path)
    return None


def _inputs(cfg: Any, specs: list[Any]) -> dict[str, Any]:
    rows = [_rows_of(s) for s in specs]
    kinds: dict[str, int] = {}
    for s in specs:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    known = [r for r in rows if r is not None]
    k, n = cfg.shard_k_n
    return {"shards": len(specs), "shard_kinds": kinds, "rows": sum(known),
            "rows_unknown_shards": len(rows) - len(known), "task": f"{k}/{n}" if n > 1 else None}


# ---- resume ---------------------------------------------------------------------------------
def _resume(cfg: Any, method: Any, specs: list[Any]) -> dict[str, Any]:
    from .state import ConfigMismatch, RunState

    out = Path(cfg.output)
    if not out.is_dir():
        return {"output": str(out), "exists": False}
    state = RunState(out, cfg.format)
    info: dict[str, Any] = {"output": str(out), "exists": True, "overwrite": bool(cfg.overwrite)}
    try:
        from .run import fingerprint, fingerprint_fields

        fields = fingerprint_fields(cfg, method)

        state.check_config(fingerprint(fields), fields, overwrite=bool(cfg.overwrite))
        info["config"] = "matches" if state.previous_run() else "new"
    except ConfigMismatch as exc:
        info["config"] = f"refused: {exc}"
    if cfg.overwrite:
        return info
    done = [s for s in specs if state.check_done(s.index)[0] is not None]
    info["shards_done"] = len(done)
    info["rows_done"] = sum(int(state.marker(s.index).get("rows", 0)) for s in done)
    info["rows_in_batches"] = sum(_batch_rows(state, s.index) for s in specs if s not in done)
    return info


def _batch_rows(state: Any, shard: int) -> int:
    """Distinct ids already written in a shard's batch files (read only; a damaged file counts none)."""
    import pyarrow.parquet as pq

    ids: set[Any] = set()
    for f in state.batch_files(shard):
        try:
            ids.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
        except Exception:  # noqa: BLE001 - the run sets it aside and redoes its rows
            continue
    return len(ids)


# ---- models ---------------------------------------------------------------------------------
def check_models(method: Any, servers: bool = True) -> list[ModelCheck]:
    """Every distinct model of the method's stages, once, with the stages that use it
    (``servers=False``: served models are left out, their backend checks them itself)."""
    seen: dict[int, ModelCheck] = {}
    for st in method.stages:
        lazy = {id(m) for m in st.optional_models()}
        for m in st.models():
            if id(m) in seen:
                seen[id(m)].stages.append(st.name)
            elif servers or getattr(m, "name", None) != "openai":
                seen[id(m)] = check_model(m, st.name)
                seen[id(m)].optional = id(m) in lazy
    return list(seen.values())


def check_model(m: Any, stage: str) -> ModelCheck:
    from ..backends.base import Backend

    name = str(getattr(m, "model", None) or "")
    revision = getattr(m, "revision", None)
    if isinstance(m, Backend) and m.name == "openai":
        urls = [e.base for e in m.pool.endpoints] if getattr(m, "pool", None) else []
        return _server_check(stage, name, urls)
    if isinstance(m, Backend) and m.name in ("transformers", "vllm") or getattr(m, "hub_weights", False):
        return _weights_check(stage, m.name, name, revision)
    modules = list(getattr(m, "needs_modules", ()) or ())
    if modules:
        return _package_check(stage, m.name, name, modules)
    return ModelCheck([stage], m.name, name or "(unnamed)", "other", None, "not a kind pixscribe can check")


def _weights_check(stage: str, what: str, model: str, revision: str | None) -> ModelCheck:
    p = Path(model).expanduser()
    if p.exists() or model.startswith(("/", "./", "../", "~")):
        ok, why = _has_weights(p) if p.exists() else (False, "no such directory")
        return ModelCheck([stage], what, model, "local", ok, why, None if ok else "copy the model to that path")
    snap = hub_snapshot(model, revision)
    ok, why = _has_weights(snap) if snap else (False, "not in the local hub cache")
    fetch = f"hf download {model}" + (f" --revision {revision}" if revision else "")
    return ModelCheck([stage], what, model, "hub", ok, why if not ok else str(snap), None if ok else fetch)


def hub_snapshot(repo: str, revision: str | None) -> Path | None:
    """The local cache's snapshot folder of ``repo`` at ``revision`` (the ``main`` ref by default)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        return None
    root = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    rev = revision or "main"
    ref = root / "refs" / rev
    if ref.is_file():
        rev = ref.read_text().strip()
    snap = root / "snapshots" / rev
    return snap if snap.is_dir() else None


def _has_weights(folder: Path) -> tuple[bool, str]:
    if not folder.is_dir():
        return (folder.is_file(), str(folder))  # a single weights file (an .onnx net, a checkpoint)
    files = [f.name for f in folder.iterdir()]
    if not any(f.endswith(WEIGHT_SUFFIXES) for f in files):
        return False, f"{folder} holds no weights ({', '.join(sorted(files)[:5]) or 'nothing'})"
    return True, str(folder)


def _package_check(stage: str, what: str, model: str, modules: list[str]) -> ModelCheck:
    missing = [m for m in modules if not _importable(m)]
    if missing:
        return ModelCheck([stage], what, model, "package", False, f"{', '.join(missing)} not installed",
                          "pip install 'pixscribe[experts]'")
    return ModelCheck([stage], what, model, "package", True, f"ships with {', '.join(modules)}")


def _importable(module: str) -> bool:
    if module.startswith("bin:"):
        return shutil.which(module[4:]) is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _server_check(stage: str, model: str, urls: list[str], timeout: float = 3.0) -> ModelCheck:
    """Whether the first server that answers lists ``model`` (GET /models, a few seconds at most)."""
    import urllib.request

    last = "no --base-url"
    for base in urls:
        try:
            with urllib.request.urlopen(base.rstrip("/") + "/models", timeout=timeout) as r:  # noqa: S310 - the user's server
                ids = [d.get("id") for d in json.loads(r.read()).get("data", [])]
        except Exception as exc:  # noqa: BLE001 - any failure: say so, try the next
            last = f"{base}: {type(exc).__name__}: {exc}"
            continue
        ok = model in ids
        why = f"{base} serves it" if ok else f"{base} serves {', '.join(map(str, ids)) or 'nothing'}"
        return ModelCheck([stage], "openai", model, "server", ok, why, None if ok else f"serve {model} at {base}")
    return ModelCheck([stage], "openai", model, "server", None, last)


# ---- before a run -----------------------------------------------------------------------------
def hub_offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        return False
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("TRANSFORMERS_OFFLINE", "") in ("1", "true", "TRUE")


def preflight(method: Any) -> None:
    """Offline, a run that lacks models stops before loading any, naming every missing one at
    once with the command that fetches it (loading them one by one would name one per run)."""
    if not hub_offline():
        return
    from ..errors import ModelUnavailable

    missing = [m for m in check_models(method, servers=False) if m.present is False and not m.optional]
    if missing:
        names = "; ".join(f"{m.model} ({', '.join(m.stages)}: {m.detail})" for m in missing)
        fetch = "; ".join(m.fetch for m in missing if m.fetch)
        raise ModelUnavailable(f"{len(missing)} model(s) not here, and the hub is offline (HF_HUB_OFFLINE): {names}. "
                             f"Fetch them where the hub is reachable ({fetch}; add --local-dir DIR for a copy to carry), "
                               "then rerun here, or point --vlm / --llm (a model's directory) or expert_models in "
                               "the YAML config (an expert's) at local copies")


# ---- output ---------------------------------------------------------------------------------
def render(plan: Plan) -> list[str]:
    """The plan as lines for a terminal."""
    i, r = plan.inputs, plan.resume
    unknown = f" (+ {i['rows_unknown_shards']} shards of unknown size)" if i["rows_unknown_shards"] else ""
    task = f", task {i['task']}" if i["task"] else ""
    lines = [f"method {plan.method}: stages {', '.join(plan.stages)}",
             f"inputs: {i['rows']} rows{unknown} in {i['shards']} shards{task} "
             f"({', '.join(f'{v} {k}' for k, v in i['shard_kinds'].items())})"]
    lines.append(_resume_line(r))
    for m in plan.models:
        mark = {True: "present", False: "MISSING", None: "not checked"}[m.present]
        when = " (only for rows that need it)" if m.optional else ""
        lines.append(f"  {', '.join(m.stages)}: {m.what} {m.model} [{m.kind}]{when} {mark}: {m.detail}")
    if plan.missing:
        lines.append(f"{len(plan.missing)} missing; fetch them with:")
        lines += [f"  {m.fetch}" for m in plan.missing if m.fetch]
    return lines


def _resume_line(r: dict[str, Any]) -> str:
    if not r["exists"]:
        return f"output {r['output']}: new"
    if str(r.get("config", "")).startswith("refused"):
        return f"output {r['output']}: {r['config']}"
    if r.get("overwrite"):
        return f"output {r['output']}: --overwrite starts over (stage outputs that did not change are reused)"
    return (f"output {r['output']}: resume skips {r['shards_done']} finished shards ({r['rows_done']} rows) "
            f"and {r['rows_in_batches']} rows already in batch files")


__all__ = ["ModelCheck", "Plan", "check_model", "check_models", "hub_snapshot", "make_plan", "preflight", "render"]
