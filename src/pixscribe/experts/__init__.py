"""Vision experts behind one batched interface (see base.py).

Experts are looked up by name and imported lazily, so a missing optional dependency
only matters when that expert is asked for. Every class has ``from_config(config)``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Expert, ExpertOutput, MissingDependency, to_jsonable

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig

# name -> "module:Class"
REGISTRY: dict[str, str] = {
    # offline CPU experts (weights install from the registry)
    "ocr": "pixscribe.experts.ocr:OCRExpert",
    "faces": "pixscribe.experts.faces:FaceExpert",
    "nsfw": "pixscribe.experts.nsfw:NSFWExpert",
    "stats": "pixscribe.experts.stats:ImageStatsExpert",
    # transformers experts (hub ids or local directories)
    "grounding_dino": "pixscribe.experts.detection:GroundingDinoExpert",
    "owlv2": "pixscribe.experts.detection:OwlV2Expert",
    "sam": "pixscribe.experts.segmentation:SamExpert",
    "depth": "pixscribe.experts.depth:DepthExpert",
    "dense": "pixscribe.experts.florence:FlorenceExpert",
}

LITE_EXPERTS = ["stats", "faces", "ocr", "nsfw"]
# full: dense region captions give boxes (no queries needed); SAM and depth work on them
FULL_EXPERTS = ["stats", "faces", "ocr", "dense", "sam", "depth"]


def expert_class(name: str) -> type[Expert]:
    if name not in REGISTRY:
        raise ConfigError(f"unknown expert {name!r}; available: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_expert(name: str, config: "RunConfig") -> Expert:
    """The expert ``name`` configured from ``config``; ``config.expert_options[name]`` sets its
    attributes (e.g. ``{"dense": {"max_new_tokens": 256, "num_beams": 1}}``)."""
    expert = expert_class(name).from_config(config)  # type: ignore[attr-defined]
    for key, value in config.expert_options.get(name, {}).items():
        if key.startswith("_") or not hasattr(expert, key):
            raise ConfigError(f"expert_options.{name}.{key}: {type(expert).__name__} has no option {key!r}")
        setattr(expert, key, value)
    return expert


__all__ = [
    "Expert",
    "ExpertOutput",
    "MissingDependency",
    "REGISTRY",
    "LITE_EXPERTS",
    "FULL_EXPERTS",
    "build_expert",
    "expert_class",
    "to_jsonable",
]
