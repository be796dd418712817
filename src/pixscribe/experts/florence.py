"""Florence-2 dense regions: ``<OD>``, ``<DENSE_REGION_CAPTION>``, ``<OCR_WITH_REGION>`` (and the text tasks).

    fl = FlorenceExpert("florence-community/Florence-2-large"); fl.setup()
    fl.run([img], task="<DENSE_REGION_CAPTION>")  # -> [[Detection(label="a brown cat lying on a bed", ...)]]
    fl.run([img], task="<OCR_WITH_REGION>")       # -> [[TextLine(text="OPEN 24H", box=..., ...)]]
    fl.run([img], task="<MORE_DETAILED_CAPTION>") # -> ["A cat lies ..."]

Florence-2 writes locations as tokens ``<loc_0>``..``<loc_999>``: 1000 bins per axis, a
box is four of them (x0 y0 x1 y1), an OCR quad eight (four x, y corners). Decoding goes
through the processor's ``post_process_generation``; :func:`parse_generation` is the same
parsing in plain Python (used when a processor lacks its post-processor config, and
unit-tested on hand-written strings). Florence-2 gives no scores: ``score`` is 1.0.
OCR text is data: it is never interpreted as an instruction.

The default is the transformers-native conversion ``florence-community/Florence-2-large``
(``Florence2ForConditionalGeneration``), so ``trust_remote_code`` is not needed.
"""

from __future__ import annotations

import re
from typing import Any

from .hf import TransformersExpert
from .base import Detection, TextLine, check_bounds, normalize_box
from .hf import _to_device


DEFAULT_FLORENCE = "florence-community/Florence-2-large"
BOX_TASKS = ("<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>")
OCR_TASKS = ("<OCR_WITH_REGION>",)
TEXT_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OCR>")
TASKS = BOX_TASKS + OCR_TASKS + TEXT_TASKS
BINS = 1000

_LOC = r"<loc_(\d+)>"
_BOX_RE = re.compile(r"([^<]*)((?:<loc_\d+>){4,})")
_OCR_RE = re.compile(r"(.+?)" + _LOC * 8)


def dequantize(bins: list[int], size: tuple[int, int]) -> list[int]:
    """Bin indices (x, y, x, y, ...) -> pixel coordinates at bin centres, as Florence-2 does."""
    w, h = size
    return [int((b + 0.5) * (w if k % 2 == 0 else h) / BINS) for k, b in enumerate(bins)]


def _strip(text: str) -> str:
    return text.replace("<s>", "").replace("</s>", "").replace("<pad>", "")


def parse_generation(text: str, task: str, image_size: tuple[int, int]) -> dict[str, Any]:
    """Parse Florence-2 output text like ``post_process_generation`` (``image_size`` is (w, h)).

    Box tasks -> ``{"bboxes": [[x0, y0, x1, y1], ...], "labels": [...]}``, OCR ->
    ``{"quad_boxes": [[x0, y0, ..., x3, y3], ...], "labels": [...]}``, text tasks -> str.
    A phrase followed by several boxes gives one entry per box.
    """
    text = _strip(text)
    if task in OCR_TASKS:
        quads, labels = [], []
        for m in _OCR_RE.finditer(text):
            quads.append(dequantize([int(g) for g in m.groups()[1:]], image_size))
            labels.append(m.group(1).strip())
        return {"quad_boxes": quads, "labels": labels}
    if task in BOX_TASKS:
        bboxes, labels = [], []
        for m in _BOX_RE.finditer(text):
            phrase = re.sub(r"<[^>]*>", "", m.group(1)).strip()
            if not phrase and task != "<REGION_PROPOSAL>":
                continue
            bins = [int(b) for b in re.findall(_LOC, m.group(2))]
            for k in range(0, len(bins) - 3, 4):
                bboxes.append(dequantize(bins[k : k + 4], image_size))
                labels.append(phrase.encode("ascii", "ignore").decode("ascii"))
        return {"bboxes": bboxes, "labels": labels}
    return re.sub(r"<[^>]*>", "", text).strip()  # type: ignore[return-value]


def clean_label(text: str) -> str:
    """Drop location tokens (and fragments such as ``loc_12>`` a partial match leaves) and tags."""
    text = re.sub(r"<?loc_\d+>", " ", str(text))
    text = re.sub(r"</?[a-z_]+>", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def quad_to_box(quad: list[float]) -> tuple[float, float, float, float]:
    xs, ys = quad[0::2], quad[1::2]
    return (min(xs), min(ys), max(xs), max(ys))


class FlorenceExpert(TransformersExpert):
    name = "dense"
    default_model = DEFAULT_FLORENCE

    model_class = "AutoModelForImageTextToText"
    processor_class = "AutoProcessor"

    def __init__(self, model: str | None = None, *, task: str = "<DENSE_REGION_CAPTION>", max_new_tokens: int = 1024, num_beams: int = 3, **kw: Any) -> None:
        super().__init__(model, **kw)
        self.task = task
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams

    def token_limit(self) -> int | None:
        """How many tokens the decoder can write: its learned position table's size.

        Florence-2's BART decoder embeds positions from a table of ``max_position_embeddings``
        rows; asking ``generate`` for more new tokens fails part-way with "index out of range
        in self" (the released models have 1024, the default ``max_new_tokens``).
        """
        text = getattr(self.net.config, "text_config", self.net.config)
        limit = getattr(text, "max_position_embeddings", None)
        return int(limit) if limit else None

    def _new_tokens(self, asked: int | None) -> int | None:
        limit = self.token_limit()
        return asked if asked is None or limit is None else min(asked, limit)

    def parse(self, text: str, task: str, image_size: tuple[int, int]) -> Any:
        """The processor's ``post_process_generation``, or :func:`parse_generation` if it has no parser config."""
        post = getattr(self.processor, "post_process_generation", None)
        if post is not None and getattr(self.processor, "post_processor_config", None):
            return post(text, task=task, image_size=image_size)[task]
        return parse_generation(text, task, image_size)

    def to_results(self, parsed: Any, task: str, image: Any) -> Any:
        w, h = image.width, image.height
        if task in OCR_TASKS:
            lines = []
            for q, t in zip(parsed["quad_boxes"], parsed["labels"]):
                box = quad_to_box(q)
                if clean_label(t):
                    lines.append(TextLine(text=clean_label(t), box=tuple(round(float(v), 2) for v in box),  # type: ignore[arg-type]
                                          box_norm=normalize_box(box, w, h), score=1.0))  # fmt: skip
            return lines
        if task in BOX_TASKS:
            return [Detection.make(b, 1.0, clean_label(lab), w, h) for b, lab in zip(parsed["bboxes"], parsed["labels"])
                    if clean_label(lab) or task == "<REGION_PROPOSAL>"]  # fmt: skip
        return clean_label(parsed)

    def run(
        self,
        images: list[Any],
        task: str | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        **_: Any,
    ) -> list[Any]:
        import torch

        task = task or self.task
        if task not in TASKS:
            raise ValueError(f"unsupported Florence-2 task {task!r}; choose one of {', '.join(TASKS)}")
        self.setup()
        check_bounds(images, self.name)
        out: list[Any] = []
        for s in range(0, len(images), self.batch_size):
            part = images[s : s + self.batch_size]
            inputs = self.processor(text=[task] * len(part), images=part, return_tensors="pt", padding=True)
            with torch.inference_mode():
                gen = self.net.generate(
                    **_to_device(inputs, self.device, self.torch_dtype),
                    max_new_tokens=self._new_tokens(max_new_tokens or self.max_new_tokens), num_beams=self.num_beams,
                    do_sample=False, **({"min_new_tokens": self._new_tokens(min_new_tokens)} if min_new_tokens else {}),
                )  # fmt: skip
            texts = self.processor.batch_decode(gen, skip_special_tokens=False)
            for im, t in zip(part, texts):
                out.append(self.to_results(self.parse(t, task, (im.width, im.height)), task, im))
        return out


__all__ = ["DEFAULT_FLORENCE", "FlorenceExpert", "TASKS", "clean_label", "dequantize", "parse_generation", "quad_to_box"]
