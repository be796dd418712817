"""Running a method over inputs into an output directory: the entry point.

    from pixscribe.engine.runner import run
    summary = run(RunConfig(inputs=["photos"], output="out"))

:class:`Runner` builds the method (unless one is given), cuts it at ``--until``, computes
every stage's fingerprint and hands it to the configured executor (local, or Ray).
"""

from __future__ import annotations

from typing import Any, Callable

from ..api.stage import Method
from ..config import RunConfig
from ..record import Record
from .context import build_method
from .executor import make_executor
from .run import image_options
from .summary import Summary


class Runner:
    """Runs one method over inputs into an output directory. Use :func:`run`."""

    def __init__(
        self,
        config: RunConfig,
        method: Method | None = None,
        *,
        console: Any = None,
        on_batch: Callable[[list[Record]], None] | None = None,
    ):
        self.config = config
        self.method = method
        self.console = console
        self.on_batch = on_batch
        self.summary: Summary | None = None

    def run(self) -> Summary:
        cfg = self.config
        method = self.method if self.method is not None else build_method(cfg.method, cfg)
        method = method.prefix(cfg.until).with_fingerprints(image_options(cfg))
        self.method = method
        self.summary = make_executor(cfg, console=self.console, on_batch=self.on_batch).run(method)
        return self.summary


def run(config: RunConfig, method: Method | None = None, **kwargs: Any) -> Summary:
    """Run ``config.method`` (or ``method``) over ``config.inputs`` into ``config.output``."""
    return Runner(config, method, **kwargs).run()


__all__ = ["Runner", "Summary", "run"]
