"""Scripted models and experts with known answers for the textualize method (tests, benchmarks).

A :class:`Scene` says, for one synthetic image (recognised by its size), what the VLM
describes, which objects an LLM extracts, what Grounding DINO and OWLv2 find, which dense
regions Florence-2 would give with their nearness, and which text OCR reads. The scripted
pieces answer from it through the real interfaces:

- :class:`ScriptedLLM`: a :class:`~pixscribe.backends.base.Backend` answering the describe
  (image) requests, the extraction requests (JSON through the real schema check and
  stricter retry of :func:`~pixscribe.backends.structured.generate_with_schema`) and the
  rewrite requests (it drops the sentences naming a hallucination and appends the region
  captions the description lacks, so a test can check what came back);
- :class:`ScriptedGroundingDino` / :class:`ScriptedOwl` (subclasses of the real detectors,
  so :class:`~pixscribe.experts.detection.Verifier` treats them as such),
  :class:`ScriptedDense`, :class:`ScriptedSam` (rectangle masks, real COCO RLE),
  :class:`ScriptedDepth` (a nearness map painted from the regions), :class:`ScriptedOcr`.

Each counts its calls (``calls``: images or requests seen) and may sleep ``latency``
seconds per call, so a benchmark can compare wall time with model time.
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..backends.base import Backend, GenerationRequest, GenerationResult
from ..experts import rle
from ..experts.base import Detection, Expert, Mask, TextLine, normalize_box
from ..experts.depth import DepthExpert
from ..experts.detection import GroundingDinoExpert, OwlV2Expert, normalize_phrase
from ..spatial import Box


@dataclass
class Scene:
    size: tuple[int, int]  # (width, height): how the scripted pieces recognise the image
    description: str
    objects: list[str] | str = field(default_factory=list)  # the LLM's extraction answer (a str: sent as is)
    gdino: dict[str, tuple[float, Box]] = field(default_factory=dict)  # phrase -> (score, box_norm)
    owl: dict[str, tuple[float, Box]] = field(default_factory=dict)
    regions: list[tuple[str, Box, float]] = field(default_factory=list)  # (caption, box_norm, nearness)
    ocr: list[str] = field(default_factory=list)

    def image(self) -> Image.Image:
        w, h = self.size
        arr = np.full((h, w, 3), (90, 120, 150), np.uint8)
        for k, (_, b, _) in enumerate(self.regions):
            x0, y0, x1, y1 = _px(b, w, h)
            arr[y0:y1, x0:x1] = ((40 * k) % 255, 200, (70 * k) % 255)
        return Image.fromarray(arr)


def _px(b: Box, w: int, h: int) -> tuple[int, int, int, int]:
    return int(round(b[0] * w)), int(round(b[1] * h)), int(round(b[2] * w)), int(round(b[3] * h))


class Script:
    """Scenes by image size and by description text."""

    def __init__(self, scenes: list[Scene]):
        self.by_size = {s.size: s for s in scenes}
        self.by_text = {s.description: s for s in scenes}

    def of(self, img: Any) -> Scene:
        return self.by_size[(img.width, img.height)]


class _Counting:
    hub_weights = False  # answers from the scene: nothing to fetch (``caption --dry-run``, the offline check)
    latency = 0.0
    busy = 0.0  # seconds spent inside calls: the sleeps and the scripted work itself

    def _tick(self, n: int) -> None:
        self.calls += n  # type: ignore[attr-defined]
        self.batches += 1  # type: ignore[attr-defined]
        if self.latency:
            time.sleep(self.latency)


def _timed(fn: Any) -> Any:
    """Adds the call's wall time to ``self.busy`` (what a benchmark counts as model time)."""

    @functools.wraps(fn)
    def inner(self: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(self, *a, **kw)
        finally:
            self.busy += time.perf_counter() - t

    return inner


_QUOTED = r'\(quoted data, not instructions\): (".*"|\[.*\])$'


def _last_quoted(prompt: str, label: str) -> Any:
    found = re.findall(rf"^{re.escape(label)} {_QUOTED}", prompt, re.M)
    return json.loads(found[-1]) if found else None


def scripted_rewrite(prompt: str) -> str:
    """What the scripted LLM answers to a rewrite request (deterministic, from the request)."""
    desc = _last_quoted(prompt, "Original description") or ""
    task = prompt[prompt.rfind("Original description (quoted data"):]  # after the prompt's examples
    halls = [h.lower() for h in (_last_quoted(task, "Hallucinations") or [])]
    keep = [s for s in re.split(r"(?<=\.)\s+", desc) if s and not any(re.search(rf"\b{re.escape(h)}\b", s.lower())
                                                                          for h in halls)]
    caps = [json.loads(c) for c in re.findall(rf"^Object \d+ {_QUOTED}", task, re.M)]
    extra = [c for c in caps if c.split()[-1].lower() not in desc.lower()]
    if not keep and not extra:  # every sentence named a hallucination: describe the regions instead
        return " ".join(f"{c[:1].upper()}{c[1:]}." for c in caps)
    return " ".join(keep + ([f"Also visible: {', '.join(extra)}."] if extra else []))


class ScriptedLLM(_Counting, Backend):
    """The VLM and the LLM of the scripted scenes (see the module docstring)."""

    name = "scripted"

    def __init__(self, script: Script, model: str = "scripted-llm", latency: float = 0.0):
        super().__init__()
        self.script, self.model, self.latency = script, model, latency
        self.calls = self.batches = 0
        self.requests: dict[str, list[GenerationRequest]] = {"describe": [], "objects": [], "rewrite": []}
        self.batches_by = {k: 0 for k in self.requests}  # calls (batches) per kind of request

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if any(r.json_schema is not None for r in requests):
            from ..backends.structured import generate_with_schema

            return generate_with_schema(requests, self._plain)
        return self._plain(requests)

    @_timed
    def _plain(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self._tick(len(requests))
        before = {k: len(v) for k, v in self.requests.items()}
        out = [self._one(r) for r in requests]
        for k, v in self.requests.items():
            self.batches_by[k] += len(v) > before[k]
        return out

    def _one(self, req: GenerationRequest) -> GenerationResult:
        text = req.messages[-1]["content"][-1]["text"]
        if req.images:
            self.requests["describe"].append(req)
            return GenerationResult(text=self.script.of(req.images[0]).description, tokens_out=20, seconds=self.latency)
        if text.endswith("Rewritten description:"):
            self.requests["rewrite"].append(req)
            return GenerationResult(text=scripted_rewrite(text), tokens_out=30, seconds=self.latency)
        self.requests["objects"].append(req)
        scene = self.script.by_text[_last_quoted(text, "Description")]
        answer = scene.objects if isinstance(scene.objects, str) else json.dumps({"objects": scene.objects})
        return GenerationResult(text=answer, tokens_out=10, seconds=self.latency)


class _ScriptedDetector(_Counting):
    table = "gdino"

    def __init__(self, script: Script, latency: float = 0.0, **kw: Any):
        super().__init__(f"scripted-{self.table}", **kw)  # type: ignore[call-arg]
        self.script, self.latency = script, latency
        self.calls = self.batches = 0
        self.seen: list[dict[str, Any]] = []

    def setup(self) -> None:
        pass

    @_timed
    def run(self, images: list[Any], queries: Any = None, box_threshold: float | None = None,
            text_threshold: float | None = None, each: bool = False, **_: Any) -> list[list[Detection]]:
        self._tick(len(images))
        per = queries if queries and not isinstance(queries[0], str) else [queries] * len(images)
        bt = 0.0 if box_threshold is None else box_threshold
        self.seen.append({"queries": [list(q) for q in per], "box_threshold": box_threshold,
                          "text_threshold": text_threshold, "each": each})
        out = []
        for img, qs in zip(images, per):
            found = getattr(self.script.of(img), self.table)
            dets = []
            for q in qs:
                hit = {normalize_phrase(k): v for k, v in found.items()}.get(normalize_phrase(q))
                if hit and hit[0] >= bt:
                    w, h = img.width, img.height
                    dets.append(Detection.make(_px(hit[1], w, h), hit[0], q, w, h))
            out.append(dets)
        return out


class ScriptedGroundingDino(_ScriptedDetector, GroundingDinoExpert):
    table = "gdino"


class ScriptedOwl(_ScriptedDetector, OwlV2Expert):
    table = "owl"


class ScriptedDense(_Counting, Expert):
    name, model = "dense", "scripted-dense"

    def __init__(self, script: Script, latency: float = 0.0):
        self.script, self.latency, self.calls, self.batches = script, latency, 0, 0

    @_timed
    def run(self, images: list[Any], **_: Any) -> list[list[Detection]]:
        self._tick(len(images))
        return [[Detection.make(_px(b, im.width, im.height), 1.0, cap, im.width, im.height)
                 for cap, b, _ in self.script.of(im).regions] for im in images]


class ScriptedSam(_Counting, Expert):
    """The box itself as the mask (so a region's pixels and its nearness are known)."""

    name, model = "sam", "scripted-sam"

    def __init__(self, latency: float = 0.0):
        self.latency, self.calls, self.batches = latency, 0, 0

    @_timed
    def run(self, images: list[Any], boxes: Any = None, **_: Any) -> list[list[Mask]]:
        self._tick(len(images))
        out = []
        for im, bs in zip(images, boxes):
            masks = []
            for b in bs:
                m = np.zeros((im.height, im.width), np.uint8)
                x0, y0, x1, y1 = (int(round(v)) for v in b)
                m[y0:y1, x0:x1] = 1
                enc = rle.encode(m)
                masks.append(Mask(rle=enc, area=int(m.sum()), box=tuple(b), box_norm=normalize_box(b, im.width, im.height),
                                  score=0.9))
            out.append(masks)
        return out


class ScriptedDepth(_Counting, DepthExpert):
    """A nearness map (nearest = 1) that is 0 everywhere but inside each scripted region box."""

    def __init__(self, script: Script, latency: float = 0.0):
        super().__init__("scripted-depth")
        self.script, self.latency, self.calls, self.batches = script, latency, 0, 0

    def setup(self) -> None:
        pass

    @_timed
    def maps(self, images: list[Any]) -> list[np.ndarray]:
        self._tick(len(images))
        out = []
        for im in images:
            near = np.zeros((im.height, im.width))
            for _, b, n in self.script.of(im).regions:
                x0, y0, x1, y1 = _px(b, im.width, im.height)
                near[y0:y1, x0:x1] = n
            out.append(near)
        return out


class ScriptedOcr(_Counting, Expert):
    name, model = "ocr", "scripted-ocr"

    def __init__(self, script: Script, latency: float = 0.0):
        self.script, self.latency, self.calls, self.batches = script, latency, 0, 0

    @_timed
    def run(self, images: list[Any], **_: Any) -> list[dict[str, Any]]:
        self._tick(len(images))
        out = []
        for im in images:
            lines = [TextLine(text=t, box=(0.0, 0.0, 1.0, 1.0), box_norm=(0.0, 0.0, 0.1, 0.1), score=0.99)
                     for t in self.script.of(im).ocr]
            out.append({"lines": lines, "text": "\n".join(self.script.of(im).ocr)})
        return out


def scripted_experts(script: Script, latency: float = 0.0, ocr: bool = False) -> dict[str, Expert]:
    ex: dict[str, Expert] = {
        "dense": ScriptedDense(script, latency), "sam": ScriptedSam(latency), "depth": ScriptedDepth(script, latency),
        "grounding_dino": ScriptedGroundingDino(script, latency), "owlv2": ScriptedOwl(script, latency),
    }
    if ocr:
        ex["ocr"] = ScriptedOcr(script, latency)
    return ex


__all__ = ["Scene", "Script", "ScriptedDense", "ScriptedDepth", "ScriptedGroundingDino", "ScriptedLLM",
           "ScriptedOcr", "ScriptedOwl", "ScriptedSam", "scripted_experts", "scripted_rewrite"]
