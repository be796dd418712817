"""Old import path of the method API (a shim for plugins written against it): stages, methods
and the registry live in :mod:`pixscribe.api`, the build in :mod:`pixscribe.engine.context`.
To be removed when phase 2 of issue 24 has moved every method (docs/architecture.md)."""

from ..api import Method, MethodError, Stage, available_methods, register_method, stage_fingerprints, stage_reads
from .context import build_method

__all__ = ["Method", "MethodError", "Stage", "available_methods", "build_method", "register_method",
           "stage_fingerprints", "stage_reads"]
