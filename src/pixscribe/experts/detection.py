"""Open-vocabulary detection (Grounding DINO, OWLv2) and ``verify()``, the hallucination check.

Both detectors take text queries and return boxes through their processors' own
post-processing (``post_process_grounded_object_detection`` in transformers 5)::

    det = GroundingDinoExpert("IDEA-Research/grounding-dino-base"); det.setup()
    det.run([img], queries=["a cat", "a remote control"], box_threshold=0.3, text_threshold=0.25)
    # -> [[Detection(box=(x0, y0, x1, y1), box_norm=(...), score=0.81, label="a cat"), ...]]

``queries`` is one list for every image or one list per image. A detection's ``label``
is always one of the queries, exactly as given, so callers can match on it.

:func:`verify` says for each phrase (an object a VLM named) whether a detector finds it
above the threshold, and where. With ``consensus=True`` two detectors must both find it
with overlapping boxes (IoU >= ``iou``), as GranD does. The decision itself is the pure
function :func:`decide_groundings`, which takes per-detector detection lists.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..spatial import iou as box_iou
from .base import Detection, Expert, check_bounds
from .hf import ExpertUnavailable, TransformersExpert, _to_device, load_pretrained

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig

log = logging.getLogger("pixscribe")

DEFAULT_GROUNDING_DINO = "IDEA-Research/grounding-dino-base"
DEFAULT_OWLV2 = "google/owlv2-base-patch16-ensemble"


# --------------------------------------------------------------------------- box maths


def nms(dets: list[Detection], iou: float) -> list[Detection]:
    """Greedy per-label non-maximum suppression (highest score first)."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(k.label != d.label or box_iou(k.box_norm, d.box_norm) < iou for k in kept):
            kept.append(d)
    return kept


def normalize_phrase(p: str) -> str:
    """Lowercase, collapse spaces, drop surrounding punctuation: how phrases are matched."""
    return re.sub(r"\s+", " ", str(p)).strip().strip(".,;:!?").strip().lower()


def _per_image_queries(queries: Any, n: int) -> list[list[str]]:
    if queries is None:
        raise ValueError("detection needs text queries: run(images, queries=['a cat', 'a dog'])")
    if isinstance(queries, str):
        queries = [q for q in queries.split(".") if q.strip()]
    if queries and all(isinstance(q, str) for q in queries):
        per = [list(queries)] * n
    else:
        per = [list(q) for q in queries]
        if len(per) != n:
            raise ValueError(f"got {len(per)} query lists for {n} images; give one list, or one per image")
    out = []
    for qs in per:
        seen: dict[str, str] = {}
        for q in qs:
            key = normalize_phrase(q)
            if key and key not in seen:
                seen[key] = q
        out.append(list(seen.values()))
    return out


# --------------------------------------------------------------------------- detectors


class _TransformersDetector(TransformersExpert):
    model_class = "AutoModelForZeroShotObjectDetection"
    default_box_threshold = 0.3

    def __init__(
        self,
        model: str | None = None,
        *,
        box_threshold: float | None = None,
        text_threshold: float = 0.25,
        nms_iou: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(model, **kw)
        self.box_threshold = self.default_box_threshold if box_threshold is None else float(box_threshold)
        self.text_threshold = float(text_threshold)
        self.nms_iou = nms_iou

    def run(
        self,
        images: list[Any],
        queries: Any = None,
        box_threshold: float | None = None,
        text_threshold: float | None = None,
        each: bool = False,
        **_: Any,
    ) -> list[list[Detection]]:
        """Detections per image, best first. ``each=True``: every query is checked alone, as if
        ``run`` were called once per query (Image Textualization's rule), with the image's own
        work shared between its queries where that is exact."""
        self.setup()
        check_bounds(images, self.name)
        per = _per_image_queries(queries, len(images))
        bt = self.box_threshold if box_threshold is None else float(box_threshold)
        tt = self.text_threshold if text_threshold is None else float(text_threshold)
        results = self._run_each(images, per, bt, tt) if each else self._run_jobs(images, per, bt, tt, self._chunks)
        out = []
        for r in results:
            if self.nms_iou is not None:
                r = nms(r, self.nms_iou)
            out.append(sorted(r, key=lambda d: -d.score))
        return out

    def _run_jobs(self, images: list[Any], per: list[list[str]], bt: float, tt: float, chunks: Any,
                  each: bool = False) -> list[list[Detection]]:
        """``_detect`` on (image, query chunk) jobs, ``batch_size`` jobs per forward."""
        jobs = [(i, chunk) for i, qs in enumerate(per) for chunk in chunks(qs)]
        results: list[list[Detection]] = [[] for _ in images]
        for s in range(0, len(jobs), self.batch_size):
            part = jobs[s : s + self.batch_size]
            dets = self._detect([images[i] for i, _ in part], [qs for _, qs in part], bt, tt, each)
            for (i, _), d in zip(part, dets):
                results[i].extend(d)
        return results

    def _run_each(self, images: list[Any], per: list[list[str]], bt: float, tt: float) -> list[list[Detection]]:
        """Each query alone: one (image, query) job each, the image's work repeated per query."""
        return self._run_jobs(images, per, bt, tt, lambda qs: [[q] for q in qs])

    def _chunks(self, queries: list[str]) -> list[list[str]]:
        return [queries] if queries else []

    def _detect(self, images: list[Any], queries: list[list[str]], bt: float, tt: float,
                each: bool = False) -> list[list[Detection]]:
        raise NotImplementedError


class GroundingDinoExpert(_TransformersDetector):
    """Grounding DINO: one text "a cat. a dog." per image; box and text thresholds.

    The processor's post-processing gives the kept boxes; each box is then attributed to
    the query whose tokens it scores highest on (the span between the "." separators), and
    kept only if that score passes ``text_threshold``. Long query lists are split into
    several texts that fit the model's ``max_text_len``.

    ``run(..., each=True)`` gives each query its own text (Image Textualization's rule) and, with
    ``share_image`` (the default), runs the processor's image work and the Swin backbone once per
    image instead of once per query (:mod:`pixscribe.experts.gdino_image`).
    """

    name = "grounding_dino"
    default_model = DEFAULT_GROUNDING_DINO
    default_box_threshold = 0.3
    speed_only = ("share_image",)  # the same boxes either way: not in the fingerprint

    def __init__(self, model: str | None = None, *, share_image: bool = True, **kw: Any) -> None:
        super().__init__(model, **kw)
        self.share_image = share_image  # each=True: the backbone once per image (see gdino_image)
        self._warned = False

    def _chunks(self, queries: list[str]) -> list[list[str]]:
        if not queries:
            return []
        self.setup()
        limit = int(getattr(self.net.config, "max_text_len", 256)) - 2
        tok = self.processor.tokenizer
        chunks: list[list[str]] = [[]]
        used = 0
        for q in queries:
            n = len(tok.tokenize(self._clean(q))) + 1  # the phrase and its "."
            if chunks[-1] and used + n > limit:
                chunks.append([])
                used = 0
            chunks[-1].append(q)
            used += n
        return chunks

    @staticmethod
    def _clean(q: str) -> str:
        return re.sub(r"\s+", " ", q.replace(".", " ")).strip().lower()

    def _spans(self, input_ids: list[int], n_phrases: int) -> list[list[int]]:
        tok = self.processor.tokenizer
        dot = tok.convert_tokens_to_ids(".")
        specials = set(tok.all_special_ids)
        spans: list[list[int]] = [[]]
        for pos, t in enumerate(input_ids):
            if t in specials:
                continue
            if t == dot:
                spans.append([])
            else:
                spans[-1].append(pos)
        spans = [s for s in spans if s]
        return spans[:n_phrases]

    def _text(self, queries: list[str]) -> str:
        return ". ".join(self._clean(q) for q in queries) + "."

    def _detect(self, images, queries, bt, tt, each=False):
        inputs = self.processor(images=images, text=[self._text(qs) for qs in queries], return_tensors="pt",
                                padding=True)  # fmt: skip
        return self._forward(inputs, images, queries, bt, tt)

    def _run_each(self, images, per, bt, tt):
        from . import gdino_image

        problem = gdino_image.structure_problem(self.net.model) if self.share_image else "share_image is off"
        if problem is None:
            return gdino_image.run_shared(self, images, per, bt, tt)
        if self.share_image and not self._warned:
            self._warned = True
            log.warning("grounding_dino: the image side is computed per phrase (%s)", problem)
        return super()._run_each(images, per, bt, tt)

    def _forward(self, inputs, images, queries, bt, tt, sides=None):
        """The model on ``inputs`` (with the backbone's output served from ``sides``, one per row,
        when given), then :meth:`_decode`."""
        import torch

        from .gdino_image import serving

        with torch.inference_mode():
            moved = _to_device(inputs, self.device, self.torch_dtype)
            if sides is None:
                outputs = self.net(**moved)
            else:
                with serving(self.net.model, sides):
                    outputs = self.net(**moved)
        return self._decode(outputs, inputs["input_ids"], images, queries, bt, tt)

    def _decode(self, outputs, input_ids, images, queries, bt, tt):
        """The processor's post-processing; each kept box goes to the query it scores highest on."""
        import torch

        sizes = [(im.height, im.width) for im in images]
        post = self.processor.post_process_grounded_object_detection(
            outputs, input_ids, threshold=bt, text_threshold=tt, target_sizes=sizes
        )
        probs_all = torch.sigmoid(outputs.logits.float()).cpu()
        out: list[list[Detection]] = []
        for b, (im, qs, res) in enumerate(zip(images, queries, post)):
            probs = probs_all[b]
            keep = probs.max(-1).values > bt  # the same rule as the post-processing
            kept = probs[keep]
            boxes = res["boxes"].float().cpu().tolist()
            if len(boxes) != kept.shape[0]:  # pragma: no cover - guards a change in transformers
                raise RuntimeError("Grounding DINO post-processing kept a different set of boxes than expected")
            spans = self._spans(input_ids[b].tolist(), len(qs))
            dets = []
            for box, p in zip(boxes, kept):
                best, best_q = -1.0, None
                for q, span in zip(qs, spans):
                    s = float(p[span].max())
                    if s > best:
                        best, best_q = s, q
                if best_q is None or best <= tt:
                    continue
                dets.append(Detection.make(box, best, best_q, im.width, im.height))
            out.append(dets)
        return out


class OwlV2Expert(_TransformersDetector):
    """OWLv2: each query is its own text embedding; one box per query patch; per-label NMS.

    OWLv2 scores are lower than Grounding DINO's: 0.1-0.3 is typical for a true object.
    ``text_threshold`` does not apply.
    """

    name = "owlv2"
    default_model = DEFAULT_OWLV2
    default_box_threshold = 0.1

    def __init__(self, model: str | None = None, **kw: Any) -> None:
        kw.setdefault("nms_iou", 0.5)
        super().__init__(model, **kw)

    def _chunks(self, queries: list[str]) -> list[list[str]]:
        return [queries[i : i + 32] for i in range(0, len(queries), 32)]

    def _run_each(self, images, per, bt, tt):
        """Each query alone is all of an image's queries in one forward: the image embeddings do not
        depend on the text, the class head scores each query embedding on its own, and the boxes
        are kept per query (not only under the query a box scores best on) before per-label NMS."""
        return self._run_jobs(images, per, bt, tt, self._chunks, each=True)

    def _detect(self, images, queries, bt, tt, each=False):
        import torch

        inputs = self.processor(text=[list(q) for q in queries], images=images, return_tensors="pt", truncation=True)
        with torch.inference_mode():
            outputs = self.net(**_to_device(inputs, self.device, self.torch_dtype))
        outputs.logits = outputs.logits.float().cpu()
        outputs.pred_boxes = outputs.pred_boxes.float().cpu()
        sizes = [(im.height, im.width) for im in images]
        out: list[list[Detection]] = [[] for _ in images]
        for col in range(outputs.logits.shape[-1]) if each else [None]:
            view = outputs if col is None else type(outputs)(logits=outputs.logits[..., col : col + 1],
                                                             pred_boxes=outputs.pred_boxes)  # fmt: skip
            post = self.processor.post_process_grounded_object_detection(view, threshold=bt, target_sizes=sizes)
            for dets, im, qs, res in zip(out, images, queries, post):
                for box, score, label in zip(res["boxes"].tolist(), res["scores"].tolist(), res["labels"].tolist()):
                    q = int(label) if col is None else col
                    if 0 <= q < len(qs):  # padded " " queries of a shorter list are dropped
                        dets.append(Detection.make(box, score, qs[q], im.width, im.height))
        return out


# --------------------------------------------------------------------------- verify


@dataclass
class Grounding:
    """Whether a phrase is grounded in the image, and where.

    ``score`` is the best score among the boxes that ground it; when it is not grounded,
    the best score any detector gave it (0.0 if none), so near misses show. ``support``
    is each detector's best score for the phrase.
    """

    phrase: str
    grounded: bool
    boxes: list[Detection] = field(default_factory=list)
    score: float = 0.0
    support: dict[str, float] = field(default_factory=dict)


def _threshold_for(box_threshold: float | Mapping[str, float], name: str) -> float:
    if isinstance(box_threshold, Mapping):
        if name not in box_threshold:
            raise ValueError(f"no box_threshold given for detector {name!r}")
        return float(box_threshold[name])
    return float(box_threshold)


def decide_groundings(
    phrases: Sequence[str],
    detections: Mapping[str, Sequence[Detection]] | Sequence[Detection],
    box_threshold: float | Mapping[str, float] = 0.3,
    consensus: bool = False,
    iou: float = 0.5,
) -> list[Grounding]:
    """The grounded/hallucinated decision, from detections already made (one list per detector).

    - A detection counts for a phrase when its label matches the phrase (case, spaces and
      surrounding punctuation ignored) and its score >= the detector's ``box_threshold``
      (a float, or a dict detector name -> threshold).
    - ``consensus=False``: grounded if any detector has a counting detection.
    - ``consensus=True`` (GranD): needs >= 2 detectors; grounded if a counting box of the first
      detector overlaps (IoU >= ``iou``) a counting box of every other detector. ``boxes``
      are then the agreeing boxes.
    """
    by_det: dict[str, list[Detection]] = (
        {k: list(v) for k, v in detections.items()} if isinstance(detections, Mapping) else {"detector": list(detections)}
    )
    if consensus and len(by_det) < 2:
        raise ValueError(f"consensus mode needs two detectors' results, got {len(by_det)}: {list(by_det)}")
    out = []
    for phrase in phrases:
        key = normalize_phrase(phrase)
        support: dict[str, float] = {}
        passing: dict[str, list[Detection]] = {}
        for name, dets in by_det.items():
            mine = [d for d in dets if normalize_phrase(d.label) == key]
            support[name] = round(max((d.score for d in mine), default=0.0), 4)
            th = _threshold_for(box_threshold, name)
            passing[name] = sorted((d for d in mine if d.score >= th), key=lambda d: -d.score)
        if not consensus:
            boxes = sorted((d for ds in passing.values() for d in ds), key=lambda d: -d.score)
        else:
            names = list(by_det)
            first, others = names[0], names[1:]
            agreeing: list[Detection] = []
            for anchor in passing[first]:
                partners = []
                for o in others:
                    match = [d for d in passing[o] if box_iou(anchor.box_norm, d.box_norm) >= iou]
                    if not match:
                        break
                    partners.append(max(match, key=lambda d: d.score))
                else:
                    for d in [anchor, *partners]:
                        if d not in agreeing:
                            agreeing.append(d)
            boxes = sorted(agreeing, key=lambda d: -d.score)
        grounded = bool(boxes)
        score = boxes[0].score if grounded else max(support.values(), default=0.0)
        out.append(Grounding(phrase=phrase, grounded=grounded, boxes=boxes, score=score, support=support))
    return out


class Verifier:
    """Runs real detectors and decides which phrases are grounded (Image Textualization's check).

    ``detectors`` is one expert, a list, or a dict name -> expert. Detectors are run with a
    low threshold (``probe_threshold``) so near misses are reported; the decision then uses
    ``box_threshold`` (a float, or per detector: OWLv2 scores run lower than Grounding DINO's).
    """

    def __init__(
        self,
        detectors: Expert | Sequence[Expert] | Mapping[str, Expert],
        box_threshold: float | Mapping[str, float] = 0.3,
        consensus: bool = False,
        iou: float = 0.5,
        text_threshold: float = 0.25,
        probe_threshold: float | None = None,
    ) -> None:
        if isinstance(detectors, Mapping):
            self.detectors = dict(detectors)
        elif isinstance(detectors, Expert):
            self.detectors = {detectors.name: detectors}
        else:
            self.detectors = {d.name: d for d in detectors}
        if consensus and len(self.detectors) < 2:
            raise ValueError("consensus verification needs two detectors, e.g. grounding_dino and owlv2")
        self.box_threshold = box_threshold
        self.consensus = consensus
        self.iou = iou
        self.text_threshold = text_threshold
        ths = [_threshold_for(box_threshold, n) for n in self.detectors]
        self.probe_threshold = min(ths) if probe_threshold is None else probe_threshold

    @classmethod
    def from_config(cls, config: "RunConfig", consensus: bool = False, **kw: Any) -> "Verifier":
        dets: dict[str, Expert] = {"grounding_dino": GroundingDinoExpert.from_config(config)}
        if consensus:
            dets["owlv2"] = OwlV2Expert.from_config(config)
        kw.setdefault("box_threshold", {"grounding_dino": 0.3, "owlv2": 0.1})
        return cls(dets, consensus=consensus, **kw)

    def setup(self) -> None:
        for d in self.detectors.values():
            d.setup()

    def verify_batch(self, images: list[Any], phrases: Sequence[Sequence[str]],
                     each: bool = False) -> list[list[Grounding]]:
        """Groundings per image. ``each=True`` checks every phrase alone (Image Textualization's rule;
        the detectors share each image's own work between its phrases where that is exact);
        ``each=False`` sends all phrases of an image to the detector together."""
        if len(phrases) != len(images):
            raise ValueError(f"got {len(phrases)} phrase lists for {len(images)} images")
        idx = [i for i, p in enumerate(phrases) if p]
        results: dict[str, list[list[Detection]]] = {}
        for name, det in self.detectors.items():
            kw: dict[str, Any] = {"box_threshold": self.probe_threshold, "each": each}
            if isinstance(det, GroundingDinoExpert):
                kw["text_threshold"] = self.text_threshold
            res = det.run([images[i] for i in idx], queries=[list(phrases[i]) for i in idx], **kw) if idx else []
            results[name] = res
        out: list[list[Grounding]] = [[] for _ in images]
        for j, i in enumerate(idx):
            per = {name: results[name][j] for name in self.detectors}
            out[i] = decide_groundings(phrases[i], per, self.box_threshold, self.consensus, self.iou)
        return out

    def __call__(self, image: Any, phrases: Sequence[str]) -> list[Grounding]:
        return self.verify_batch([image], [phrases])[0]


def verify(
    image: Any,
    phrases: Sequence[str],
    detectors: Expert | Sequence[Expert] | Mapping[str, Expert],
    box_threshold: float | Mapping[str, float] = 0.3,
    consensus: bool = False,
    iou: float = 0.5,
    text_threshold: float = 0.25,
) -> list[Grounding]:
    """For each phrase: grounded or not, where, and how sure. See :func:`decide_groundings`."""
    return Verifier(detectors, box_threshold, consensus, iou, text_threshold)(image, phrases)


__all__ = [
    "DEFAULT_GROUNDING_DINO",
    "DEFAULT_OWLV2",
    "ExpertUnavailable",
    "GroundingDinoExpert",
    "OwlV2Expert",
    "Grounding",
    "Verifier",
    "box_iou",
    "decide_groundings",
    "load_pretrained",
    "nms",
    "normalize_phrase",
    "verify",
]
