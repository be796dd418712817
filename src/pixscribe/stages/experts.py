"""Helpers for stages that run vision experts: their fingerprint identity and loading."""

from __future__ import annotations

from typing import Any

from ..experts.base import Expert
from ..record import PixscribeError

FIX = "Fix that (expert_models in the YAML config can point at local copies; see docs/experts.md)"


def expert_identity(e: Expert) -> dict[str, Any]:
    """What changes an expert's output: its model and its public settings (less those its class
    names in ``speed_only``, which change how fast, not what)."""
    skip = set(getattr(e, "speed_only", ()))
    settings = {k: v for k, v in vars(e).items() if not k.startswith("_") and k not in skip
                and isinstance(v, (str, int, float, bool, type(None), list, tuple))}
    return {"expert": e.name, "model": e.model, **settings}


def setup_experts(experts: list[Expert], fix: str) -> None:
    """Load every expert; one that cannot load stops the run with its name, model, reason and
    ``fix`` (a :class:`PixscribeError`, shown as one line by the CLI)."""
    for e in experts:
        try:
            e.setup()
        except Exception as exc:
            model = f" ({e.model})" if e.model else ""
            raise PixscribeError(f"expert {e.name!r}{model} could not be loaded: {exc}. {fix}", kind="expert") from exc
