"""Stages and methods.

A stage does one thing: given a batch of decoded records it enriches them in place
(``record.set(...)``, ``record.fail(...)``) and returns them. It knows nothing of files,
shards or resume. Records that already carry an error are not passed to stages.

A method is a list of stages plus the columns it writes and which field is the
final ``caption``. Adding a method means adding one file under ``methods/`` that
registers itself with :func:`register_method`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig
    from ..record import Record


class Stage(abc.ABC):
    name: str = "stage"

    def setup(self) -> None:
        """Load models. Called once, before the first batch; may raise to abort the run."""

    @abc.abstractmethod
    def __call__(self, records: list["Record"]) -> list["Record"]:
        ...

    def describe(self) -> dict[str, Any]:
        """What run.json records about this stage (models, prompts)."""
        return {"stage": self.name}

    def summary(self) -> dict[str, Any]:
        """Counters for the end-of-run summary (e.g. backend usage)."""
        return {}

    def close(self) -> None:
        pass


@dataclass
class Method:
    name: str
    stages: list[Stage]
    columns: list[str]  # the method's own output columns, in order
    caption_field: str | None = "caption"
    # how input columns are renamed for this method, e.g. {"caption": "org_caption"}
    rename_inputs: dict[str, str] = field(default_factory=dict)

    def setup(self) -> None:
        for s in self.stages:
            s.setup()

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "stages": [s.describe() for s in self.stages]}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for s in self.stages:
            su = s.summary()
            if su:
                out[s.name] = su
        return out

    def close(self) -> None:
        for s in self.stages:
            s.close()


MethodFactory = Callable[["RunConfig"], Method]
_METHODS: dict[str, MethodFactory] = {}


def register_method(name: str) -> Callable[[MethodFactory], MethodFactory]:
    def deco(fn: MethodFactory) -> MethodFactory:
        _METHODS[name] = fn
        return fn

    return deco


def available_methods() -> list[str]:
    from .. import methods  # noqa: F401  (imports register the built-in methods)

    return sorted(_METHODS)


def build_method(name: str, config: "RunConfig") -> Method:
    available = available_methods()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available)}")
    return _METHODS[name](config)
