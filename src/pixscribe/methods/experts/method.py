"""The experts method: every chosen expert's output as a column, with provenance.

    pixscribe caption photos -o out --profile lite          # offline CPU experts + a description
    pixscribe caption photos -o out --experts ocr,faces     # just these
    pixscribe caption photos -o out --profile full          # the VLM plus the transformers experts

Columns: ``expert_<name>`` (JSON text) for each expert, and with ``--profile lite`` a
``description`` composed from them (also the ``caption``). With ``--profile full`` the VLM's
``re_caption`` is the caption and the experts are its evidence.

(Experts run one after another: those that take boxes (SAM, depth) use an earlier one's.)

An expert that fails on one image puts ``{"error": "..."}`` in its column for that image and
the row stays valid; the row's ``error`` is set only when every expert failed on it. An
expert that cannot load stops the run before it starts, with the reason.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ...api import Method, MethodContext, MethodError, ModelRole, Stage, register_method
from ...config import RunConfig
from ...experts import FULL_EXPERTS, LITE_EXPERTS, build_expert, to_jsonable
from ...experts.base import Expert
from ...record import PixscribeError, Record, format_error
from ...stages import GenerateStage
from ...stages.experts import expert_identity as _expert_identity
from ..recap import RecapOptions
from .describe import lite_description

# experts that need boxes take them from the first of these that ran before them
BOX_SOURCES = ("dense", "grounding_dino", "owlv2", "faces")
BOX_TAKERS = ("sam", "depth")


def _boxes(out: Any) -> list[dict[str, Any]]:
    """Box prompts ({box: pixel xyxy, label}) from an expert's JSON-ready output (a list of
    detections, or faces), so SAM's masks and depth's values carry the region's label."""
    if isinstance(out, dict) and "faces" in out:
        out = out["faces"]
    if isinstance(out, dict) and "regions" in out:
        out = out["regions"]
    if not isinstance(out, list):
        return []
    return [{"box": list(d["box"]), "label": str(d.get("label", ""))} for d in out if isinstance(d, dict) and "box" in d]


def _exif_of(r: Record) -> dict[str, Any] | None:
    """The decoder's EXIF summary (``fields["exif"]``), or an input column ``_exif`` (a dict or
    its JSON text)."""
    ex = r.fields.get("exif") or r.columns.get("_exif")
    if isinstance(ex, str):
        try:
            ex = json.loads(ex)
        except ValueError:
            return None
    return ex if isinstance(ex, dict) else None


class ExpertsStage(Stage):
    name = "experts"
    reads = ("_exif",)  # an input's own EXIF summary, when the decoder found none

    def __init__(self, experts: list[Expert], *, describe: bool = False, queries: list[str] | None = None):
        self.experts = experts
        self.describe_lite = describe
        self.queries = queries or []
        self.provides = tuple(f"expert_{e.name}" for e in experts) + (("description",) if describe else ())
        self.timings: dict[str, float] = {e.name: 0.0 for e in experts}
        self.failures: dict[str, int] = {e.name: 0 for e in experts}

    def models(self) -> list[Any]:
        return list(self.experts)

    def setup(self) -> None:
        """Load every expert before the first batch; one that cannot load stops the run with
        its name, model and reason (a :class:`PixscribeError`, shown as one line by the CLI)."""
        for e in self.experts:
            try:
                e.setup()
            except Exception as exc:
                model = f" ({e.model})" if e.model else ""
                raise PixscribeError(
                    f"expert {e.name!r}{model} could not be loaded: {exc}. "
                    f"Fix that, or leave it out with --experts", kind="expert") from exc

    def _kwargs(self, expert: Expert, records: list[Record], done: dict[str, list[Any]]) -> dict[str, Any] | None:
        if expert.name == "stats":
            return {"exif": [_exif_of(r) for r in records],
                    "sizes": [(r.orig_width or r.width, r.orig_height or r.height) for r in records]}
        if expert.name in ("grounding_dino", "owlv2"):
            return {"queries": self.queries} if self.queries else None
        if expert.name in BOX_TAKERS:
            sources = [s for s in BOX_SOURCES if s in done]
            if not sources:
                return {} if expert.name == "depth" else None
            # per image, the first source that found any box (an empty dense result falls
            # through to the detectors or faces)
            per = [next((b for b in (_boxes(done[s][i]) for s in sources) if b), [])
                   for i in range(len(records))]
            return {"boxes": per}
        return {}

    def _run_one(self, expert: Expert, records: list[Record], kwargs: dict[str, Any]) -> list[Any]:
        images = [r.image for r in records]
        try:
            return list(expert.run(images, **kwargs))
        except Exception:
            if len(records) == 1:
                raise
        out: list[Any] = []  # isolate the image that fails
        for i, r in enumerate(records):
            one = {k: ([v[i]] if isinstance(v, list) and len(v) == len(records) and k != "queries" else v)
                   for k, v in kwargs.items()}
            try:
                out.append(expert.run([r.image], **one)[0])
            except Exception as exc:
                out.append(exc)
        return out

    def _timed(self, expert: Expert, records: list[Record], kwargs: dict[str, Any]) -> tuple[list[Any], float]:
        t = time.perf_counter()
        try:
            outs = self._run_one(expert, records, kwargs)
        except Exception as exc:
            outs = [exc] * len(records)
        return outs, (time.perf_counter() - t) / max(len(records), 1)

    def __call__(self, records: list[Record]) -> list[Record]:
        done: dict[str, list[Any]] = {}
        per_record: list[dict[str, Any]] = [{} for _ in records]
        # one after another: experts that take boxes (SAM, depth) use the output of an earlier one
        for expert in sorted(self.experts, key=lambda e: e.name in BOX_TAKERS):  # box takers last
            kwargs = self._kwargs(expert, records, done)
            if kwargs is None:  # nothing to ask this expert (no queries / no boxes)
                continue
            outs, dt = self._timed(expert, records, kwargs)
            self.timings[expert.name] += dt * len(records)
            jsonable = []
            for i, (r, o) in enumerate(zip(records, outs)):
                if isinstance(o, BaseException):
                    self.failures[expert.name] += 1
                    value: Any = {"error": format_error(o, expert.name)}
                else:
                    value = to_jsonable(o)
                jsonable.append(value)
                per_record[i][expert.name] = value
                r.set(f"expert_{expert.name}", json.dumps(value, ensure_ascii=False), stage=self.name,
                      expert=expert.name, model=expert.model, seconds=dt)
            done[expert.name] = jsonable
        for r, outs in zip(records, per_record):
            if outs and all(isinstance(v, dict) and "error" in v for v in outs.values()):
                r.fail("; ".join(v["error"] for v in outs.values()), "experts")
                continue
            if self.describe_lite:
                r.set("description", lite_description(outs), stage="describe",
                      inputs=sorted(k for k, v in outs.items() if not (isinstance(v, dict) and "error" in v)))
        return records

    def options(self) -> dict[str, Any]:
        return {"experts": [_expert_identity(e) for e in self.experts], "queries": self.queries,
                "describe": self.describe_lite}

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, "experts": [e.describe() for e in self.experts], "queries": self.queries}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for e in self.experts:
            out[f"{e.name}_seconds"] = round(self.timings[e.name], 3)
            if self.failures[e.name]:
                out[f"{e.name}_failures"] = self.failures[e.name]
        return out


def expert_names(config: RunConfig) -> list[str]:
    if config.experts:
        return list(dict.fromkeys(config.experts))
    if config.profile == "full":
        return list(FULL_EXPERTS)
    return list(LITE_EXPERTS)


QUERY_EXPERTS = ("grounding_dino", "owlv2")


@register_method(
    "experts",
    summary="vision experts' outputs as columns (--experts, --profile lite|full), with a composed description",
    options={"recap": RecapOptions},
    roles=[ModelRole("vlm", "--profile full: describes each image, the experts are its evidence")],
    implied_by=("experts", "profile"),
)
def experts_method(ctx: MethodContext) -> Method:
    config = ctx.config
    names = expert_names(config)
    needy = [n for n in names if n in QUERY_EXPERTS]
    if needy and not config.queries:
        raise MethodError(f"the open-vocabulary detector(s) {', '.join(needy)} need text queries: pass "
                          "--queries 'cat,dog' (or leave them out of --experts)")
    experts = [build_expert(n, config) for n in names]
    lite = config.profile != "full"
    stages: list[Stage] = []
    columns: list[str] = []
    caption_field = "description" if lite else None
    if config.profile == "full":
        opts = ctx.options("recap", RecapOptions, primary=True)
        stages.append(GenerateStage("recap", ctx.model("vlm"), opts, provides="re_caption",
                                    identity=ctx.spec("vlm").identity()))
        columns.append("re_caption")
        caption_field = "re_caption"
    stages.append(ExpertsStage(experts, describe=lite, queries=config.queries))
    if lite:
        columns.append("description")
    columns += [f"expert_{n}" for n in names]
    return Method(name="experts", stages=stages, columns=columns, caption_field=caption_field,
                  rename_inputs={"caption": "org_caption"})
