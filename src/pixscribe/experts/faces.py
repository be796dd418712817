"""Faces: OpenCV 4.x's Haar frontal-face cascade (bundled with ``opencv-python-headless`` < 5;
OpenCV 5 dropped the cascades) by default, or scikit-image's LBP frontal-face cascade.

``engine="auto"`` takes OpenCV when it is installed with its cascades, else scikit-image. On the
sample photos the Haar cascade finds the one face of astronaut and grace_hopper and nothing on
coffee, chelsea, motorcycle or rocket; the LBP cascade also fires on the astronaut's suit, so
with it faces much smaller than the largest one are dropped (``min_relative_side``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Expert, Face, normalize_box, require


def nms(boxes: list[tuple[float, float, float, float]], scores: list[float], iou: float = 0.3) -> list[int]:
    """Indices kept by greedy non-maximum suppression (also drops boxes mostly inside a kept one)."""
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        bi = boxes[i]
        ai = max(0.0, bi[2] - bi[0]) * max(0.0, bi[3] - bi[1])
        ok = True
        for j in keep:
            bj = boxes[j]
            iw = max(0.0, min(bi[2], bj[2]) - max(bi[0], bj[0]))
            ih = max(0.0, min(bi[3], bj[3]) - max(bi[1], bj[1]))
            inter = iw * ih
            aj = max(0.0, bj[2] - bj[0]) * max(0.0, bj[3] - bj[1])
            if inter / max(ai + aj - inter, 1e-9) > iou or inter / max(min(ai, aj), 1e-9) > 0.7:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def _opencv_has_cascades() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    return bool(getattr(getattr(cv2, "data", None), "haarcascades", None))


class FaceExpert(Expert):
    name = "faces"

    def __init__(self, engine: str = "auto", max_side: int = 640, min_neighbours: int = 5,
                 min_size_fraction: float = 0.04, min_relative_side: float | None = None):
        if engine not in ("auto", "skimage", "opencv"):
            raise ValueError(f"unknown face engine {engine!r}: auto, opencv or skimage")
        if engine == "auto":
            engine = "opencv" if _opencv_has_cascades() else "skimage"
        self.engine = engine
        self.min_relative_side = min_relative_side if min_relative_side is not None else (
            0.7 if engine == "skimage" else 0.0)
        self.max_side = max_side
        self.min_neighbours = min_neighbours
        self.min_size_fraction = min_size_fraction
        self.model = "skimage/lbpcascade_frontalface" if engine == "skimage" else "opencv/haarcascade_frontalface_default"
        self._det: Any = None

    @classmethod
    def from_config(cls, config: Any) -> "FaceExpert":
        return cls(engine=(config.expert_models or {}).get("faces", "auto"))

    def setup(self) -> None:
        if self._det is not None:
            return
        if self.engine == "skimage":
            require("skimage", "faces", "scikit-image")
            from skimage import data
            from skimage.feature import Cascade

            self._det = Cascade(data.lbp_frontal_face_cascade_filename())
        else:
            cv2 = require("cv2", "faces", "opencv-python-headless<5")
            path = getattr(getattr(cv2, "data", None), "haarcascades", None)
            if not path:
                raise RuntimeError("this OpenCV ships no Haar cascades (OpenCV 5 dropped them): use engine skimage")
            self._det = cv2.CascadeClassifier(path + "haarcascade_frontalface_default.xml")

    def _detect(self, img: Any) -> list[Face]:
        w, h = img.size
        scale = min(1.0, self.max_side / max(w, h))
        small = img.resize((max(1, round(w * scale)), max(1, round(h * scale)))) if scale < 1 else img
        gray = np.asarray(small.convert("L"))
        sw, sh = small.size
        min_side = max(18, int(self.min_size_fraction * min(sw, sh)))
        boxes: list[tuple[float, float, float, float]] = []
        scores: list[float] = []
        if self.engine == "skimage":
            found = self._det.detect_multi_scale(
                img=gray.astype(np.float64) / 255.0, scale_factor=1.2, step_ratio=1,
                min_size=(min_side, min_side), max_size=(min(sw, sh), min(sw, sh)), min_neighbor_number=self.min_neighbours,
            )
            for f in found:
                boxes.append((f["c"], f["r"], f["c"] + f["width"], f["r"] + f["height"]))
                scores.append(float(f["width"] * f["height"]))
        else:
            found = self._det.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=self.min_neighbours,
                                               minSize=(min_side, min_side))
            for x, y, fw, fh in found:
                boxes.append((x, y, x + fw, y + fh))
                scores.append(float(fw * fh))
        faces = []
        top = max(scores) if scores else 1.0
        for i in nms(boxes, scores):
            if (scores[i] / top) ** 0.5 < self.min_relative_side:
                continue
            b = tuple(v / scale for v in boxes[i])
            faces.append(Face(box=tuple(round(float(v), 1) for v in b), box_norm=normalize_box(b, w, h),  # type: ignore[arg-type]
                              score=round(scores[i] / top, 4)))
        return sorted(faces, key=lambda f: f.box[0])

    def run(self, images: list[Any], **query: Any) -> list[dict[str, Any]]:
        """Per image: ``{"faces": [Face...], "count": int}``."""
        self.setup()
        out = []
        for img in images:
            faces = self._detect(img)
            out.append({"faces": faces, "count": len(faces)})
        return out
