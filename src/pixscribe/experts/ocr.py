"""OCR: RapidOCR (PP-OCR models bundled in the wheel, onnxruntime) by default; Tesseract
optional (``pytesseract`` plus the ``tesseract`` binary, e.g. Debian's tesseract-ocr).

Text read from an image is DATA: later stages quote it, never follow it.
"""

from __future__ import annotations

import shutil
import threading
from typing import Any

import numpy as np

from ..imaging import resize_to_budget
from .base import Expert, TextLine, normalize_box, require


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


def _implausible(box: tuple[float, float, float, float], text: str, width: int, height: int) -> bool:
    """A "line" covering most of the picture read as one to three characters: on textured photos
    (coffee foam, fur) the detector sometimes returns the whole image as one text box."""
    frac = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]) / max(width * height, 1)
    return frac > 0.6 and len(text.strip()) < 4


class OCRExpert(Expert):
    name = "ocr"

    def __init__(self, engine: str = "rapidocr", min_score: float = 0.5, max_side: int = 1600):
        if engine not in ("rapidocr", "tesseract"):
            raise ValueError(f"unknown OCR engine {engine!r}: rapidocr or tesseract")
        self.engine = engine
        self.min_score = min_score
        self.max_side = max_side
        self.model = "rapidocr/PP-OCR" if engine == "rapidocr" else "tesseract"
        self._ocr: Any = None
        self._lock = threading.Lock()  # onnxruntime sessions are shared; keep calls serial

    @classmethod
    def from_config(cls, config: Any) -> "OCRExpert":
        return cls(engine=(config.expert_models or {}).get("ocr", "rapidocr"))

    def setup(self) -> None:
        if self._ocr is not None:
            return
        if self.engine == "rapidocr":
            mod = require("rapidocr", "ocr", "rapidocr onnxruntime")
            # RapidOCR logs every model file it loads and warns on every image without text
            try:
                self._ocr = mod.RapidOCR(params={"Global.log_level": "error"})
            except Exception as exc:
                raise RuntimeError(f"ocr: RapidOCR could not load its bundled models ({exc}); "
                                   "reinstall with pip install --force-reinstall 'rapidocr>=3' onnxruntime") from exc
        else:
            require("pytesseract", "ocr", "pytesseract")
            if shutil.which("tesseract") is None:
                raise RuntimeError("the tesseract binary is not installed (e.g. apt-get install tesseract-ocr)")
            self._ocr = "tesseract"

    def _read_rapid(self, img: Any) -> list[TextLine]:
        w, h = img.size
        img = resize_to_budget(img, None, self.max_side)
        scale = img.width / w
        # RapidOCR takes a numpy array as BGR (OpenCV order); PIL gives RGB
        bgr = np.ascontiguousarray(np.asarray(img.convert("RGB"))[..., ::-1])
        with self._lock:
            res = self._ocr(bgr)
        out = []
        if res is None or res.boxes is None or res.txts is None:
            return out
        for poly, txt, score in zip(res.boxes, res.txts, res.scores):
            txt = str(txt).strip()
            if not txt or float(score) < self.min_score:
                continue
            pts = np.asarray(poly, dtype=float) / scale
            box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
            if _implausible(box, txt, w, h):
                continue
            out.append(TextLine(text=txt, box=tuple(round(v, 1) for v in box),  # type: ignore[arg-type]
                                box_norm=normalize_box(box, w, h), score=round(float(score), 4)))
        return out

    def _read_tesseract(self, img: Any) -> list[TextLine]:
        import pytesseract

        w, h = img.size
        d = pytesseract.image_to_data(img, output_type=pytesseract.Output.DICT)
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
            box = (float(x0), float(y0), float(x1), float(y1))
            out.append(TextLine(text=text, box=box, box_norm=normalize_box(box, w, h), score=round(score, 4)))
        return out

    def run(self, images: list[Any], **query: Any) -> list[dict[str, Any]]:
        """Per image: ``{"lines": [TextLine...], "text": str}`` in reading order."""
        self.setup()
        out = []
        for img in images:
            lines = self._read_rapid(img) if self.engine == "rapidocr" else self._read_tesseract(img)
            lines = _reading_order(lines)
            out.append({"lines": lines, "text": "\n".join(ln.text for ln in lines)})
        return out
