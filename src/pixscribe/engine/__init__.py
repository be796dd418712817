"""The engine: planning, the pipeline (decode -> prepare -> stages -> write), run state, leases,
reuse, the local executor, and ``engine/ray/`` for the Ray executor. It runs the methods that
:mod:`pixscribe.api` describes and never imports a method (docs/architecture.md)."""
