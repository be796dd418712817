"""Which box convention (:mod:`.boxtext`) a model's box prompts are written in: from what the
model *is*, never guessed from the name it is served under.

In this order, the first that tells wins:

1. ``box_convention`` given (``-S region.box_convention=pixels``, or ``stages: {region:
   {box_convention: ...}}``);
2. the model's own config (``model_type``, then ``architectures``): a local model directory's
   ``config.json``; a hub model's ``config.json`` in the local Hugging Face cache; for an
   OpenAI-compatible server, the config of the model its ``/v1/models`` entry names as ``root``
   (vLLM reports there the path or hub id it loaded) when that is readable here;
3. a name that says what the weights are: the hub model id given to the transformers or vLLM
   backend, the server's ``root``, or, only for a server whose entry has no ``root`` (Ollama,
   llama.cpp), the model id it serves. A served name beside a ``root`` is an alias chosen by
   whoever started the server: it is never read (a Qwen2.5-VL served as ``my-vlm`` once got
   0-1000 boxes instead of pixels, silently).

A local directory's name is never read either. When nothing tells, :func:`resolve` raises
:class:`~pixscribe.engine.stage.MethodError`, so the run stops before it starts, naming the
option to pass. The choice and where it came from are recorded (``_run.json`` and the
region fields' provenance).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .boxtext import CONVENTIONS, convention_for

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Frame:
    convention: str
    source: str  # where it came from, in words


@dataclass(frozen=True)
class Evidence:
    """Something that may say what the model is: a config dict or a name, and where it came from."""

    config: dict[str, Any] | None
    name: str | None
    where: str

    def convention(self) -> tuple[str, str] | None:
        if self.config is not None:
            for key in ("model_type", "architectures"):
                values = self.config.get(key) or []
                for text in [values] if isinstance(values, str) else list(values):
                    conv = convention_for(None, str(text))
                    if conv:
                        return conv, f"{self.where} ({key} {text})"
            return None
        conv = convention_for(self.name)
        return (conv, self.where) if conv else None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def local_config(model: str) -> Evidence | None:
    """A local model directory's config.json, if ``model`` is one."""
    d = Path(model).expanduser()
    if not d.is_dir():
        return None
    cfg = _read(d / "config.json")
    return Evidence(cfg, None, f"the config of {d / 'config.json'}") if cfg is not None else None


def cached_config(repo: str, revision: str | None = None) -> Evidence | None:
    """A hub model's config.json from the local Hugging Face cache (nothing is downloaded)."""
    if not _HUB_ID.match(repo):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(repo, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - no cache, no huggingface_hub: the config is simply not readable
        return None
    cfg = _read(Path(path)) if isinstance(path, str) else None
    return Evidence(cfg, None, f"the config of {repo} in the Hugging Face cache") if cfg is not None else None


def _local_model(model: str, revision: str | None) -> list[Evidence]:
    """A model the transformers or vLLM backend loads: a directory's config (never its name),
    or a hub id's cached config, then the id itself."""
    if Path(model).expanduser().is_dir():
        return [e for e in (local_config(model),) if e is not None]
    cached = cached_config(model, revision)
    named = Evidence(None, model, f"the hub model id {model!r}") if _HUB_ID.match(model) else None
    return [e for e in (cached, named) if e is not None]


def server_evidence(backend: Any) -> list[Evidence]:
    """What an OpenAI-compatible server's ``/v1/models`` entry says about the model it serves:
    its ``root``'s config if readable here, then the root itself; without a root, the id."""
    backend.check()  # stops the run, as it would at setup, if no server serves the model
    entry = getattr(backend, "model_entry", None) or {}
    root, at = entry.get("root"), entry.get("from", "the server")
    if not root:
        return [Evidence(None, backend.model, f"the model id served at {at} (its /v1/models entry gives no root)")]
    root = str(root)
    configs = [local_config(root), cached_config(root)]
    return [e for e in configs if e is not None] + [Evidence(None, root, f"the /v1/models root {root!r} at {at}")]


def evidence(backend: Any, revision: str | None = None) -> list[Evidence]:
    name = getattr(backend, "name", "")
    if name == "openai":
        return server_evidence(backend)
    if name in ("transformers", "vllm"):
        return _local_model(str(backend.model), revision)
    return []  # another backend (a plugin, a scripted one) says nothing about its model


def resolve(given: str | None, backend: Any, revision: str | None = None) -> Frame:
    """The box convention for ``backend``'s model (see the module doc)."""
    from ...errors import MethodError

    if given:
        return Frame(given, "given: region.box_convention")
    looked = evidence(backend, revision)
    for e in looked:
        found = e.convention()
        if found:
            return Frame(*found)
    seen = "; ".join(e.where + (f" (model_type {e.config.get('model_type')})" if e.config else "") for e in looked)
    raise MethodError(
        f"--region-prompt box: cannot tell which box coordinates model {getattr(backend, 'model', '?')!r} was trained "
        f"on ({seen or 'nothing says what the model is'}); pass -S region.box_convention="
        f"{'|'.join(CONVENTIONS)} (docs/region.md lists the families)")


__all__ = ["Evidence", "Frame", "cached_config", "evidence", "local_config", "resolve", "server_evidence"]
