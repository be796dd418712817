"""TIPCap: a light captioner trained from text (``pixscribe tipcap train``), run over images.

    pixscribe caption IN -o OUT --method tipcap --tipcap-model runs/tipcap
    pixscribe caption IN -o OUT --method tipcap --tipcap-model DIR --prompt-column tags
    pixscribe caption IN -o OUT --method tipcap --tipcap-model DIR --prompt-experts dense

Stages: ``tags`` (only with ``--prompt-experts``: the labels of an expert's detections, the
prompt TIPCap fuses in before generation) and ``tipcap`` (CLIP image embedding -> the gap's
inverse -> prefix -> the decoder; greedy or beam). Columns: ``org_caption``, ``tags`` (JSON list,
with --prompt-experts) and ``tipcap_caption``. The model directory's files are fingerprinted
by content, so retraining into the same directory recomputes the captions.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...api import Flag, Method, MethodContext, MethodError, Stage, StageOptions, option, register_method
from ...record import Record

PROMPT_EXPERTS = ("dense", "grounding_dino", "owlv2")


@dataclass(frozen=True)
class TipCapOptions(StageOptions):
    """The trained captioner over each image (the model's files are fingerprinted by content)."""

    model: str | None = option(None, "a model directory from `pixscribe tipcap train`")
    max_new_tokens: int = option(30, "most tokens generated per caption")
    num_beams: int = option(1, "beam search width (1: greedy)")
    clip: str | None = option(None, "the CLIP model's id or directory (null: the one the model was trained with)")
    prompt_column: str | None = option(None, "the input column of object tags (a list, JSON list or text) fused in "
                                       "as the prompt")
    device: str = option("auto", "auto, cpu or cuda")
    prompt_experts: str | None = option(None, "tags from dense, grounding_dino or owlv2 detections (those need "
                                        "--queries)", choices=PROMPT_EXPERTS)


def model_identity(directory: str) -> dict[str, Any]:
    """What the outputs depend on: the trained files' contents (hashed), not the folder's name."""
    d = Path(directory)
    if not (d / "tipcap.json").is_file():
        raise MethodError(f"--tipcap-model {d}: not a TIPCap model directory (no tipcap.json); train one with "
                          "`pixscribe tipcap train`")
    h = hashlib.sha256()
    for name in ("tipcap.json", "tipcap.safetensors"):
        p = d / name
        if p.is_file():
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return {"tipcap": h.hexdigest()[:16], "setting": json.loads((d / "tipcap.json").read_text()).get("setting")}


def _prompt_of(value: Any) -> list[str] | str | None:
    """A row's prompt: a list of tags, a text, or JSON text of either."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value[:1] == "[":
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, (list, tuple)):
        tags = [str(v) for v in value if str(v).strip()]
        return tags or None
    return str(value)


class TagsStage(Stage):
    """The labels an expert finds, as the prompt's object tags (detector order, no repeats)."""

    name = "tags"
    provides = ("tags",)

    def __init__(self, expert: Any, queries: list[str]):
        self.expert = expert
        self.queries = queries

    def options(self) -> dict[str, Any]:
        return {"expert": self.expert.name, "model": self.expert.model, "queries": self.queries}

    def models(self) -> list[Any]:
        return [self.expert]

    def setup(self) -> None:
        self.expert.setup()

    def __call__(self, records: list[Record]) -> list[Record]:
        kw = {"queries": self.queries} if self.queries else {}
        t = time.perf_counter()
        outs = self.expert.run([r.image for r in records], **kw)
        dt = (time.perf_counter() - t) / max(len(records), 1)
        for r, dets in zip(records, outs):
            labels = [str(getattr(d, "label", "") or "").strip() for d in dets]
            r.set("tags", list(dict.fromkeys(x for x in labels if x)), stage=self.name, model=self.expert.model,
                  seconds=dt)
        return records


class TipCapStage(Stage):
    name = "tipcap"
    provides = ("tipcap_caption",)

    def __init__(self, opts: dict[str, Any], prompt_field: str | None):
        self.opts = opts
        self.prompt_field = prompt_field
        self.needs = (prompt_field,) if prompt_field else ()
        self.identity = model_identity(opts["model"])
        self.captioner: Any = None

    def options(self) -> dict[str, Any]:
        o = {k: v for k, v in self.opts.items() if k not in ("model", "device") and v is not None}
        return {"model": self.identity, **o}

    def setup(self) -> None:
        from ...torchdev import resolve_device
        from .captioner import TipCapCaptioner

        self.captioner = TipCapCaptioner.load(self.opts["model"], clip=self.opts["clip"],
                                              device=resolve_device(self.opts["device"]),
                                              max_new_tokens=int(self.opts["max_new_tokens"]),
                                              num_beams=int(self.opts["num_beams"]))

    def __call__(self, records: list[Record]) -> list[Record]:
        prompts = [_prompt_of(r.get(self.prompt_field)) for r in records] if self.prompt_field else None
        before = sum(v for k, v in self.captioner.timings.items() if k != "images")
        texts = self.captioner.caption([r.image for r in records], prompts)
        spent = sum(v for k, v in self.captioner.timings.items() if k != "images") - before
        model = f"tipcap:{self.opts['model']}"
        for r, text in zip(records, texts):
            r.set("tipcap_caption", text.strip(), stage=self.name, model=model, prompt_sha=self.identity["tipcap"],
                  seconds=spent / max(len(records), 1))
        return records

    def describe(self) -> dict[str, Any]:
        d = {"stage": self.name, **self.options()}
        if self.captioner is not None:
            d.update(self.captioner.describe())
        return d


@register_method(
    "tipcap",
    summary="TIPCap: a light captioner trained from text (pixscribe tipcap train), run over images",
    options={"tipcap": TipCapOptions},
    flags=[Flag("tipcap_model", "tipcap", "model"), Flag("prompt_column", "tipcap", "prompt_column"),
           Flag("prompt_experts", "tipcap", "prompt_experts")],
    commands=("pixscribe.methods.tipcap.cli",),
)
def tipcap(ctx: MethodContext) -> Method:
    opts = ctx.options("tipcap", TipCapOptions)
    if not opts.get("model"):
        raise MethodError("--method tipcap needs --tipcap-model DIR (a model trained with `pixscribe tipcap train`)")
    stages: list[Stage] = []
    prompt_field = opts.pop("prompt_column")
    experts = opts.pop("prompt_experts")
    if experts and prompt_field:
        raise MethodError("--prompt-column and --prompt-experts both give the prompt: choose one")
    if experts:
        if experts not in PROMPT_EXPERTS:
            raise MethodError(f"--prompt-experts {experts!r}: choose one of {', '.join(PROMPT_EXPERTS)}")
        if experts != "dense" and not ctx.config.queries:
            raise MethodError(f"--prompt-experts {experts} needs --queries 'cat,dog'")
        from ...experts import build_expert

        stages.append(TagsStage(build_expert(experts, ctx.config), list(ctx.config.queries)))
        prompt_field = "tags"
    stages.append(TipCapStage(opts, prompt_field))
    cols = ["org_caption"] + (["tags"] if experts else []) + ["tipcap_caption"]
    return Method("tipcap", stages, cols, "tipcap_caption", {"caption": "org_caption"})
