"""Stages and methods: what a method is made of.

A stage does one thing: given a batch of decoded records it enriches them in place
(``record.set(...)``, ``record.fail(...)``) and returns them. It knows nothing of files,
shards or resume. Records that already carry an error are not passed to stages.

A stage says what it needs and gives:

- ``needs``: the fields it reads (provided by an earlier stage, or input columns);
- ``reads``: the input columns it reads besides those (a region's box, a row's instruction);
  the engine shows a stage only the input columns it reads (its ``needs`` met by columns,
  and ``reads``; reading another column the row has fails the row, naming it), records a
  hash of their values on every row it computes, and reuses its output only for a row whose
  values are the same (see :func:`stage_reads`);
- ``reads_id``: whether its output depends on the row's id (a region's id is the row's), so
  it is never taken over from a row of another id with the same image bytes;
- ``provides``: the fields it sets (each becomes an output column);
- ``needs_image``: whether it looks at the pixels (a text-only stage does not);
- ``batch_size``: how many records it takes per call (``None``: the engine's);
- ``max_inflight_batches``: how many of its batches may be in flight at once (its model's);
- :meth:`Stage.models`: the backends and vision experts it holds (what it loads, and what it
  shares with another stage: the Ray executor keeps stages that share one in one actor);
- :meth:`Stage.options`: everything that changes its output (model, prompt, sampling,
  thresholds). With the fingerprints of the stages it depends on, that is the stage's
  fingerprint, which resume and reuse compare row by row.

A method is a list of stages plus the columns it writes and which field is the final
``caption``; :meth:`Method.check` verifies, before the run, that every need is met. A method
registers itself with :func:`pixscribe.api.register_method` (see ``api/registry.py``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..errors import MethodError
from ..record import prompt_sha

if TYPE_CHECKING:  # pragma: no cover
    from ..record import Record
    from .models import ModelPool


class Stage(abc.ABC):
    name: str = "stage"
    needs: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    reads_id: bool = False
    needs_image: bool = True
    batch_size: int | None = None
    # HTTP backends keep several batches in flight; a local model runs one at a time
    max_inflight_batches: int = 1

    def options(self) -> dict[str, Any]:
        """What changes this stage's output (JSON-able). Part of its fingerprint."""
        return {}

    def models(self) -> list[Any]:
        """The backends and vision experts this stage holds: what :meth:`setup` loads, and what
        it may share with another stage (the same object). Declare them here; the Ray executor
        keeps the stages that share one in one actor and gives a GPU to those holding a local
        model."""
        return []

    def optional_models(self) -> list[Any]:
        """Those of :meth:`models` loaded only when a row needs them (SAM for a region given
        as points): a missing one makes those rows errors, not the run (``--dry-run`` marks
        them, and the offline check before a run leaves them out)."""
        return []

    def setup(self) -> None:
        """Load models. Called once, before the first batch; may raise to abort the run."""

    @abc.abstractmethod
    def __call__(self, records: list["Record"]) -> list["Record"]:
        ...

    def describe(self) -> dict[str, Any]:
        """What _run.json records about this stage (models, prompts)."""
        return {"stage": self.name, **self.options()}

    def summary(self) -> dict[str, Any]:
        """Counters for the end-of-run summary."""
        return {}

    def close(self) -> None:
        pass


def stage_fingerprints(stages: list[Stage], image_options: dict[str, Any]) -> dict[str, str]:
    """Each stage's fingerprint: its name, class, options, the image options if it looks at
    pixels, and the fingerprints of the earlier stages that provide what it needs."""
    fps: dict[str, str] = {}
    provider: dict[str, str] = {}
    for st in stages:
        deps = sorted({fps[provider[n]] for n in st.needs if n in provider})
        parts: dict[str, Any] = {"stage": st.name, "class": type(st).__name__, "options": st.options(), "deps": deps}
        if st.needs_image:
            parts["image"] = image_options
        fps[st.name] = prompt_sha(parts)
        for f in st.provides:
            provider[f] = st.name
    return fps


def stage_reads(stages: list[Stage]) -> dict[str, tuple[str, ...]]:
    """The input columns each stage reads: its needs that no earlier stage provides (met by
    input columns) and its ``reads``. Not part of the fingerprint (the stage's options are):
    reuse compares the values of these columns row by row instead."""
    provided: set[str] = set()
    out: dict[str, tuple[str, ...]] = {}
    for st in stages:
        out[st.name] = tuple(sorted({n for n in st.needs if n not in provided} | set(st.reads)))
        provided |= set(st.provides)
    return out


@dataclass
class Method:
    name: str
    stages: list[Stage]
    columns: list[str]  # the method's own output columns, in order
    caption_field: str | None = "caption"
    # how input columns are renamed for this method, e.g. {"caption": "org_caption"}
    rename_inputs: dict[str, str] = field(default_factory=dict)
    # closed once at the end (shared models); set by the method context
    on_close: list[Callable[[], None]] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)
    pool: "ModelPool | None" = None  # the pool its stages took their models from
    # arrow types of the method's own columns that are not text (e.g. a list of structs);
    # the others are stored as text, JSON for non-string values
    column_types: dict[str, Any] = field(default_factory=dict)
    # an input column that names the row when it has one, before the input's key/id (a
    # method whose rows are not images: one row per region is named by its region_id)
    id_column: str | None = None
    # the input columns each stage reads (stage_reads), set with the fingerprints
    input_reads: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise MethodError(f"method {self.name!r}: stage names must be unique, {', '.join(dup)} repeat")

    # ---- checks -------------------------------------------------------------------
    def check(self, input_columns: Iterable[str]) -> None:
        """Fail before the run when a stage needs a field that no earlier stage provides and
        that is not an input column, naming both."""
        cols = set(input_columns)
        cols |= {self.rename_inputs.get(c, c) for c in cols}
        have: dict[str, str] = {}
        for st in self.stages:
            for n in st.needs:
                if n in have or n in cols:
                    continue
                where = f"; input columns: {', '.join(sorted(cols)) or 'none'}"
                raise MethodError(
                    f"method {self.name!r}: stage {st.name!r} needs the field {n!r}, which no earlier stage "
                    f"({', '.join(have.values()) or 'none'}) provides and no input column holds{where}"
                )
            for f in st.provides:
                have.setdefault(f, st.name)

    def provided_by(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for st in self.stages:
            for f in st.provides:
                out[f] = st.name
        return out

    def prefix(self, until: str | None) -> "Method":
        """The method cut after stage ``until`` (``--until`` / ``--stages``)."""
        if until is None:
            return self
        names = [s.name for s in self.stages]
        if until.startswith("stages:"):  # --stages a,b: must be the method's first stages, in order
            asked = until[len("stages:"):].split("|")
            if asked != names[: len(asked)]:
                raise MethodError(f"--stages {','.join(asked)}: must be a prefix of method {self.name!r}'s stages "
                                  f"({', '.join(names)}); use --until NAME")
            until = asked[-1]
        if until not in names:
            raise MethodError(f"--until {until!r}: method {self.name!r} has the stages {', '.join(names)}")
        keep = self.stages[: names.index(until) + 1]
        provided = {f for s in keep for f in s.provides}
        cols = [c for c in self.columns if c in provided or c not in self.provided_by()]
        cap = self.caption_field if self.caption_field in provided else None
        return Method(self.name, keep, cols, cap, dict(self.rename_inputs), self.on_close, {}, self.pool,
                      {c: t for c, t in self.column_types.items() if c in cols}, self.id_column)

    def with_fingerprints(self, image_options: dict[str, Any]) -> "Method":
        self.fingerprints = stage_fingerprints(self.stages, image_options)
        self.input_reads = stage_reads(self.stages)
        return self

    def fingerprint_fields(self) -> dict[str, Any]:
        """Every stage's options, flattened (``"rewrite.prompt": ...``), for the message that
        says what changed when a resume is refused."""
        out: dict[str, Any] = {}
        for st in self.stages:
            for k, v in st.options().items():
                out[f"{st.name}.{k}"] = v
        return out

    # ---- lifecycle -----------------------------------------------------------------
    def setup(self) -> None:
        for s in self.stages:
            s.setup()

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "caption_field": self.caption_field,
            "stages": [{**s.describe(), "fingerprint": self.fingerprints.get(s.name),
                        **({"reads": list(self.input_reads[s.name])} if self.input_reads.get(s.name) else {})}
                       for s in self.stages],
        }

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
        for fn in self.on_close:
            fn()
        self.on_close.clear()


__all__ = ["Method", "MethodError", "Stage", "stage_fingerprints", "stage_reads"]
