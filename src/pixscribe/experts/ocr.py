"""OCR: RapidOCR (PP-OCR models bundled in the wheel, onnxruntime) by default; Tesseract
optional (``pytesseract`` plus the ``tesseract`` binary, e.g. Debian's tesseract-ocr).

RapidOCR runs here as its three stages, so that work is bounded and batched:

1. **bounds**: the image is downscaled to ``max_side``; one whose short side is under
   ``MIN_TEXT_SIDE`` px is skipped; one longer than ``MAX_ASPECT``:1 is padded to that aspect
   (RapidOCR would otherwise scale a 1x4000 banner's short side up to 736 px, and ask for
   a 9 GiB array). What was done is said in the output's ``bounds``.
2. **detection** on each image, its short side scaled to ``det_side`` (736 px, RapidOCR's
   own; 640 is 1.3x faster but loses Grace Hopper's name tag); only *text-like regions* go on: at least ``MIN_LINE_PX`` high,
   at most ``MAX_LINE_ASPECT``:1, detector score >= ``min_det_score``. An image with none is not
   recognised at all (most photos: detection is the cheap half).
3. **recognition** of the regions of all images of the batch in one call.

A line is kept when its recognition confidence is >= ``min_score`` (0.8) and it has at least
two letters, or two letters or digits read at >= ``min_score_digits`` (0.95: "24H" stays, the
"0000" read off a cameraman's coat at 0.77 goes); a line covering most of the picture read as a few characters is dropped (textured
photos). The output gives each line's ``score``, the image's ``confidence`` (mean score of the
kept lines) and how many regions were ``dropped``.

Text read from an image is DATA: later stages quote it, never follow it.
"""

from __future__ import annotations

import shutil
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..imaging import resize_to_budget
from .base import Expert, TextLine, normalize_box, require

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig


def _reading_order(lines: list[TextLine]) -> list[TextLine]:
    """Top to bottom, then left to right within a row (rows grouped by vertical overlap)."""
    rows: list[list[TextLine]] = []
    for ln in sorted(lines, key=lambda t: (t.box[1] + t.box[3]) / 2):
        cy = (ln.box[1] + ln.box[3]) / 2
        h = max(ln.box[3] - ln.box[1], 1.0)
        for row in rows:
            r0 = row[0]
            rcy = (r0.box[1] + r0.box[3]) / 2
            if abs(rcy - cy) < 0.5 * max(h, r0.box[3] - r0.box[1]):
                row.append(ln)
                break
        else:
            rows.append([ln])
    return [ln for row in rows for ln in sorted(row, key=lambda t: t.box[0])]


MIN_TEXT_SIDE = 8  # px: no line of text fits in fewer
MAX_ASPECT = 8.0  # images longer than this are padded to it
MIN_LINE_PX = 6  # a text-like region is at least this high...
MAX_LINE_ASPECT = 60.0  # ...and at most this long for its height


def letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def bound_for_ocr(img: Any, max_side: int) -> tuple[Any, float, dict[str, Any] | None]:
    """``(image, scale, bounds)``: downscaled to ``max_side`` and padded (bottom or right, with
    the mean colour) to at most ``MAX_ASPECT``:1; ``image`` is None when it is too thin for text."""
    from PIL import Image

    w, h = img.size
    small = resize_to_budget(img, None, max_side).convert("RGB")
    scale = small.width / w
    if min(small.size) < MIN_TEXT_SIDE:
        reason = f"{small.width}x{small.height} px: no line of text fits in {min(small.size)} px"
        return None, scale, {"action": "skip", "from": [w, h], "reason": reason}
    bounds = {"action": "clamp", "from": [w, h], "to": list(small.size)} if small.size != img.size else None
    sw, sh = small.size
    if max(sw, sh) > MAX_ASPECT * min(sw, sh):
        size = (sw, int(np.ceil(sw / MAX_ASPECT))) if sw > sh else (int(np.ceil(sh / MAX_ASPECT)), sh)
        mean = tuple(int(v) for v in np.asarray(small).reshape(-1, 3).mean(0))
        canvas = Image.new("RGB", size, mean)
        canvas.paste(small, (0, 0))
        small = canvas
        bounds = {"action": "pad", "from": [w, h], "to": list(small.size), "reason": f"aspect over {MAX_ASPECT:g}:1"}
    return small, scale, bounds


def text_like(poly: np.ndarray, det_score: float, min_det_score: float) -> bool:
    """A detected quad that can hold a line of text."""
    p = np.asarray(poly, dtype=float)
    side_w = max(np.linalg.norm(p[0] - p[1]), np.linalg.norm(p[2] - p[3]))
    side_h = max(np.linalg.norm(p[0] - p[3]), np.linalg.norm(p[1] - p[2]))
    short, long = sorted((side_w, side_h))
    return det_score >= min_det_score and short >= MIN_LINE_PX and long <= MAX_LINE_ASPECT * short


def _implausible(box: tuple[float, float, float, float], text: str, width: int, height: int) -> bool:
    """A "line" covering most of the picture read as one to three characters: on textured photos
    (coffee foam, fur) the detector sometimes returns the whole image as one text box."""
    frac = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]) / max(width * height, 1)
    return frac > 0.6 and len(text.strip()) < 4


class OCRExpert(Expert):
    name = "ocr"

    def __init__(self, engine: str = "rapidocr", min_score: float = 0.8, max_side: int = 1600,
                 min_det_score: float = 0.5, min_score_digits: float = 0.95, det_side: int = 736):
        if engine not in ("rapidocr", "tesseract"):
            raise ConfigError(f"unknown OCR engine {engine!r}: rapidocr or tesseract")
        self.engine = engine
        self.min_score = min_score
        self.min_det_score = min_det_score
        self.min_score_digits = min_score_digits
        self.det_side = det_side
        self.max_side = max_side
        self.model = "rapidocr/PP-OCR" if engine == "rapidocr" else "tesseract"
        self._ocr: Any = None
        self._det: Any = None
        self._cls: Any = None
        self._rec: Any = None
        self._lock = threading.Lock()  # onnxruntime sessions are shared; keep calls serial

    @property
    def needs_modules(self) -> tuple[str, ...]:
        """What its weights ship in (``bin:`` a program on the PATH): ``caption --dry-run`` checks them."""
        return ("rapidocr", "onnxruntime") if self.engine == "rapidocr" else ("pytesseract", "bin:tesseract")

    @classmethod
    def from_config(cls, config: "RunConfig") -> "OCRExpert":
        """The engine is an option (``expert_options: {ocr: {engine: tesseract}}``), not a model:
        RapidOCR and Tesseract bring their own models. ``expert_models.ocr`` naming an engine is
        still read, for configs written before."""
        legacy = (config.expert_models or {}).get("ocr")
        if legacy is not None and legacy not in ("rapidocr", "tesseract"):
            raise ConfigError(f"expert_models.ocr: {legacy!r} is not an OCR engine; choose the engine with "
                              "expert_options: {ocr: {engine: rapidocr|tesseract}} (the engines bring their models)")
        return cls(engine=legacy or "rapidocr")

    def setup(self) -> None:
        if self._ocr is not None:
            return
        if self.engine == "rapidocr":
            mod = require("rapidocr", "ocr", "rapidocr onnxruntime")
            # RapidOCR logs every model file it loads and warns on every image without text
            try:
                self._ocr = mod.RapidOCR(params={"Global.log_level": "error"})
                # its three stages, loaded as RapidOCR itself loads them (rapidocr 3.x)
                self._det = self._ocr._load_det_model()
                self._det.limit_side_len = self.det_side
                self._cls = self._ocr._load_cls_model()
                self._rec = self._ocr._load_rec_model()
            except Exception as exc:
                self._ocr = None
                raise RuntimeError(f"ocr: RapidOCR could not load its bundled models ({exc}); "
                                   "reinstall with pip install --force-reinstall 'rapidocr>=3,<4' onnxruntime") from exc
        else:
            require("pytesseract", "ocr", "pytesseract")
            if shutil.which("tesseract") is None:
                raise RuntimeError("the tesseract binary is not installed (e.g. apt-get install tesseract-ocr)")
            self._ocr = "tesseract"

    def _regions(self, img: Any) -> dict[str, Any]:
        """Bounds and detection for one image: its BGR array, scale and text-like quads."""
        small, scale, bounds = bound_for_ocr(img, self.max_side)
        job: dict[str, Any] = {"size": img.size, "scale": scale, "bounds": bounds, "quads": [], "found": 0}
        if small is None:
            return job
        # RapidOCR takes a numpy array as BGR (OpenCV order); PIL gives RGB
        job["bgr"] = bgr = np.ascontiguousarray(np.asarray(small)[..., ::-1])
        with self._lock:
            det = self._det(bgr)
        if det.boxes is None:
            return job
        job["found"] = len(det.boxes)
        job["quads"] = [np.asarray(q, dtype=np.float32) for q, sc in zip(det.boxes, det.scores)
                        if text_like(q, float(sc), self.min_det_score)]
        return job

    def _recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """Angle classification and recognition of all crops in one call each."""
        from rapidocr.ch_ppocr_rec import TextRecInput

        if not crops:
            return []
        with self._lock:
            upright = self._cls(crops).img_list
            rec = self._rec(TextRecInput(img=upright))
        return [(str(t).strip(), float(s)) for t, s in zip(rec.txts, rec.scores)]

    def _wordlike(self, text: str, score: float) -> bool:
        """Two letters; or two letters-or-digits read with ``min_score_digits`` ("24H", "1984")."""
        alnum = sum(ch.isalnum() for ch in text)
        return letters(text) >= 2 or (alnum >= 2 and score >= self.min_score_digits)

    def _line(self, job: dict[str, Any], quad: np.ndarray, text: str, score: float) -> TextLine | None:
        w, h = job["size"]
        if not text or score < self.min_score or not self._wordlike(text, score):
            return None
        pts = quad / job["scale"]
        box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(min(pts[:, 0].max(), w)), float(min(pts[:, 1].max(), h)))
        if _implausible(box, text, w, h):
            return None
        return TextLine(text=text, box=tuple(round(v, 1) for v in box),  # type: ignore[arg-type]
                        box_norm=normalize_box(box, w, h), score=round(score, 4))

    def _read_rapid_batch(self, images: list[Any]) -> list[dict[str, Any]]:
        from rapidocr.utils.process_img import get_rotate_crop_image

        jobs = [self._regions(img) for img in images]
        owners, crops = [], []
        for i, job in enumerate(jobs):
            for quad in job["quads"]:
                owners.append((i, quad))
                crops.append(get_rotate_crop_image(job["bgr"], quad.copy()))
        lines: list[list[TextLine]] = [[] for _ in images]
        read = self._recognise(crops) if crops else []  # no text-like region in the batch: no recognition
        for (i, quad), (text, score) in zip(owners, read):
            ln = self._line(jobs[i], quad, text, score)
            if ln is not None:
                lines[i].append(ln)
        return [self._result(job, ln) for job, ln in zip(jobs, lines)]

    @staticmethod
    def _result(job: dict[str, Any], lines: list[TextLine]) -> dict[str, Any]:
        lines = _reading_order(lines)
        out: dict[str, Any] = {"lines": lines, "text": "\n".join(ln.text for ln in lines),
                               "confidence": round(float(np.mean([ln.score for ln in lines])), 4) if lines else None,
                               "regions": len(job["quads"]), "dropped": job["found"] - len(lines)}
        if job["bounds"]:
            out["bounds"] = job["bounds"]
        return out

    def _read_tesseract(self, img: Any) -> dict[str, Any]:
        import pytesseract

        small, scale, bounds = bound_for_ocr(img, self.max_side)
        job = {"size": img.size, "scale": scale, "bounds": bounds, "quads": [], "found": 0}
        if small is None:
            return self._result(job, [])
        d = pytesseract.image_to_data(small, output_type=pytesseract.Output.DICT)
        lines: dict[tuple[int, int, int], list[int]] = {}
        for i, t in enumerate(d["text"]):
            if str(t).strip() and float(d["conf"][i]) >= self.min_score * 100:
                lines.setdefault((d["block_num"][i], d["par_num"][i], d["line_num"][i]), []).append(i)
        out = []
        for idx in lines.values():
            x0 = min(d["left"][i] for i in idx)
            y0 = min(d["top"][i] for i in idx)
            x1 = max(d["left"][i] + d["width"][i] for i in idx)
            y1 = max(d["top"][i] + d["height"][i] for i in idx)
            text = " ".join(str(d["text"][i]).strip() for i in idx)
            score = float(np.mean([float(d["conf"][i]) for i in idx])) / 100
            quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)
            job["found"] += 1
            job["quads"].append(quad)
            ln = self._line(job, quad, text, score)
            if ln is not None:
                out.append(ln)
        return self._result(job, out)

    def run(self, images: list[Any], **query: Any) -> list[dict[str, Any]]:
        """Per image: ``{"lines": [TextLine...], "text", "confidence", "regions", "dropped"}``
        (lines in reading order), and ``bounds`` when the image was clamped, padded or skipped."""
        self.setup()
        if self.engine == "rapidocr":
            return self._read_rapid_batch(images)
        return [self._read_tesseract(img) for img in images]
