"""Faces: OpenCV's Haar frontal-face cascade when the installed ``opencv-python-headless``
ships its cascade files (4.x does; some 5.x builds do not), else scikit-image's bundled LBP
frontal-face cascade. Both need no download.

How a detection is kept:

1. the cascade's raw windows are grouped (windows overlapping by more than half of the smaller
   one form one group); a group needs ``min_neighbours`` windows. Its ``score`` is
   ``n / (n + 5)`` for ``n`` windows: more agreeing windows, more evidence. It is not a
   calibrated probability.
2. on colour images the centre of the box must look like skin (YCbCr rule of Chai and Ngan,
   at least ``min_skin`` of the pixels): this removes the cascades' usual false positives on
   round grey or dark things (the astronaut's helmet visor, wheels). Greyscale images skip it.
3. boxes smaller than ``min_size_fraction`` of the shorter image side are not searched, and
   overlapping groups are merged by non-maximum suppression.

On the sample photos both engines find the one face of astronaut and grace_hopper and nothing
on coffee, chelsea, motorcycle, rocket or page; faces of different sizes in one picture are
all kept.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..imaging import resize_to_budget
from ..spatial import area, intersection
from .base import Expert, Face, normalize_box, require

Box = tuple[float, float, float, float]


def nms(boxes: list[Box], scores: list[float], iou: float = 0.3) -> list[int]:
    """Indices kept by greedy non-maximum suppression (also drops boxes mostly inside a kept one)."""
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        ai = area(boxes[i])
        ok = True
        for j in keep:
            inter = intersection(boxes[i], boxes[j])
            aj = area(boxes[j])
            if inter / max(ai + aj - inter, 1e-9) > iou or inter / max(min(ai, aj), 1e-9) > 0.7:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def group_windows(boxes: list[Box], overlap: float = 0.5) -> list[tuple[Box, int]]:
    """Group raw detector windows: (mean box, number of windows), largest groups first."""
    order = sorted(range(len(boxes)), key=lambda i: -area(boxes[i]))
    used = [False] * len(boxes)
    groups: list[tuple[Box, int]] = []
    for i in order:
        if used[i]:
            continue
        members = [i]
        used[i] = True
        for j in order:
            if used[j]:
                continue
            if intersection(boxes[i], boxes[j]) / max(min(area(boxes[i]), area(boxes[j])), 1e-9) > overlap:
                members.append(j)
                used[j] = True
        mean = tuple(float(v) for v in np.mean([boxes[k] for k in members], axis=0))
        groups.append((mean, len(members)))  # type: ignore[arg-type]
    return sorted(groups, key=lambda g: -g[1])


def skin_fraction(ycbcr: np.ndarray, box: Box, inset: float = 0.2) -> float:
    """Share of skin-coloured pixels (77<=Cb<=135, 133<=Cr<=180) in the centre of ``box``."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    H, W = ycbcr.shape[:2]
    r0, r1 = int(max(0, y0 + inset * h)), int(min(H, y1 - inset * h))
    c0, c1 = int(max(0, x0 + inset * w)), int(min(W, x1 - inset * w))
    patch = ycbcr[r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)].astype(np.int16)
    if patch.size == 0:
        return 0.0
    cb, cr = patch[..., 1], patch[..., 2]
    return float(((cr >= 133) & (cr <= 180) & (cb >= 77) & (cb <= 135)).mean())


def _is_greyscale(ycbcr: np.ndarray) -> bool:
    chroma = np.abs(ycbcr[..., 1:].astype(np.int16) - 128)
    return float(chroma.mean()) < 2.0


def _haar_file() -> str | None:
    try:
        import cv2
    except ImportError:
        return None
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        return None
    path = os.path.join(folder, "haarcascade_frontalface_default.xml")
    return path if os.path.isfile(path) else None


def _opencv_has_cascades() -> bool:
    return _haar_file() is not None


class FaceExpert(Expert):
    name = "faces"

    def __init__(self, engine: str = "auto", max_side: int = 640, min_neighbours: int | None = None,
                 min_size_fraction: float = 0.04, min_skin: float = 0.3, skin_check: bool = True):
        if engine not in ("auto", "skimage", "opencv"):
            raise ValueError(f"unknown face engine {engine!r}: auto, opencv or skimage")
        if engine == "auto":
            engine = "opencv" if _opencv_has_cascades() else "skimage"
        self.engine = engine
        self.max_side = max_side
        # the Haar cascade piles up many more windows on a face than the LBP one
        self.min_neighbours = min_neighbours if min_neighbours is not None else (6 if engine == "skimage" else 5)
        self.min_size_fraction = min_size_fraction
        self.min_skin = min_skin
        self.skin_check = skin_check
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
            cv2 = require("cv2", "faces", "opencv-python-headless")
            path = _haar_file()
            if not path:
                raise RuntimeError(
                    f"faces: OpenCV {getattr(cv2, '__version__', '?')} ships no haarcascade_frontalface_default.xml; "
                    "use the scikit-image engine (expert_models: {faces: skimage}) or install opencv-python-headless<5")
            self._det = cv2.CascadeClassifier(path)
            if self._det.empty():
                raise RuntimeError(f"faces: OpenCV could not read the cascade {path}")

    def _windows(self, gray: np.ndarray, min_side: int) -> list[tuple[Box, int]]:
        sh, sw = gray.shape
        if self.engine == "skimage":
            # intersection_score_threshold > 1 keeps skimage from merging: we group ourselves,
            # so each group knows how many windows back it
            raw = self._det.detect_multi_scale(
                img=gray.astype(np.float64) / 255.0, scale_factor=1.2, step_ratio=1,
                min_size=(min_side, min_side), max_size=(min(sw, sh), min(sw, sh)),
                min_neighbor_number=0, intersection_score_threshold=1.5,
            )
            boxes = [(float(f["c"]), float(f["r"]), float(f["c"] + f["width"]), float(f["r"] + f["height"])) for f in raw]
            return group_windows(boxes)
        rects, counts = self._det.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=self.min_neighbours,
                                                    minSize=(min_side, min_side))
        return [((float(x), float(y), float(x + w), float(y + h)), int(n)) for (x, y, w, h), n in zip(rects, counts)]

    def _detect(self, img: Any) -> list[Face]:
        w, h = img.size
        small = resize_to_budget(img, None, self.max_side).convert("RGB")
        scale = small.width / w
        gray = np.asarray(small.convert("L"))
        ycbcr = np.asarray(small.convert("YCbCr"))
        check_skin = self.skin_check and not _is_greyscale(ycbcr)
        min_side = max(18, int(self.min_size_fraction * min(small.size)))
        kept: list[tuple[Box, float]] = []
        for box, n in self._windows(gray, min_side):
            if n < self.min_neighbours:
                continue
            if check_skin and skin_fraction(ycbcr, box) < self.min_skin:
                continue
            kept.append((box, n / (n + 5.0)))
        boxes = [b for b, _ in kept]
        scores = [s for _, s in kept]
        faces = []
        for i in nms(boxes, scores):
            b = tuple(v / scale for v in boxes[i])
            faces.append(Face(box=tuple(round(float(v), 1) for v in b), box_norm=normalize_box(b, w, h),  # type: ignore[arg-type]
                              score=round(scores[i], 4)))
        return sorted(faces, key=lambda f: f.box[0])

    def run(self, images: list[Any], **query: Any) -> list[dict[str, Any]]:
        """Per image: ``{"faces": [Face...], "count": int}``, faces left to right."""
        self.setup()
        out = []
        for img in images:
            faces = self._detect(img)
            out.append({"faces": faces, "count": len(faces)})
        return out
