"""The expert interface and its typed results.

An expert is batched: ``run(images, **query)`` takes a list of PIL RGB images and
returns one result per image, in order. Results are small dataclasses that turn into
JSON-ready dicts with :func:`to_jsonable`, so the experts method can write them as
columns and later methods (textualize, panoptic, region) can read them back.

Boxes are pixel ``xyxy`` in the image the expert saw, plus ``box_norm`` in [0, 1].
Masks are COCO RLE (``{"size": [h, w], "counts": str}``, column-major, compressed
string form as pycocotools writes it).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from ..deps import MissingDependency  # noqa: F401  (re-exported)
from ..deps import require as _require


def clamp_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
    y0, y1 = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
    return (x0, y0, x1, y1)


def normalize_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = clamp_box(box, width, height)
    w, h = max(width, 1), max(height, 1)
    return (round(x0 / w, 6), round(y0 / h, 6), round(x1 / w, 6), round(y1 / h, 6))


@dataclass
class Detection:
    """A box with a label (or grounded phrase) and a score."""

    box: tuple[float, float, float, float]  # pixel xyxy
    box_norm: tuple[float, float, float, float]  # [0, 1] xyxy
    score: float
    label: str

    @classmethod
    def make(cls, box: Sequence[float], score: float, label: str, width: int, height: int) -> "Detection":
        b = clamp_box(box, width, height)
        return cls(box=tuple(round(v, 2) for v in b), box_norm=normalize_box(b, width, height),  # type: ignore[arg-type]
                   score=round(float(score), 4), label=str(label))


@dataclass
class Mask:
    rle: dict[str, Any]  # COCO RLE {"size": [h, w], "counts": str}
    area: int
    box: tuple[float, float, float, float]
    box_norm: tuple[float, float, float, float]
    score: float
    label: str = ""


@dataclass
class TextLine:
    text: str
    box: tuple[float, float, float, float]
    box_norm: tuple[float, float, float, float]
    score: float


@dataclass
class RegionDepth:
    """Relative depth of a region: ``relative`` in [0, 1] with nearest = 1 (as Image Textualization)."""

    box_norm: tuple[float, float, float, float]
    relative: float
    label: str = ""


@dataclass
class Face:
    box: tuple[float, float, float, float]
    box_norm: tuple[float, float, float, float]
    score: float


@dataclass
class ExpertOutput:
    """What one expert says about one image. ``data`` is expert-specific but JSON-ready."""

    expert: str
    data: Any
    model: str | None = None
    seconds: float = 0.0
    error: str | None = None


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return obj.item()
        except Exception:
            pass
    return obj


def require(module: str, extra: str, package: str | None = None) -> Any:
    """Import an optional dependency of an expert or fail with a pip hint."""
    return _require(module, extra, package, what="this expert")


MAX_ASPECT = 20.0  # transformers experts skip images longer than this for their short side...
MIN_SIDE = 8  # ...or with a short side under this many pixels


class ImageOutOfBounds(ValueError):
    """An image an expert does not process, e.g. a 1x4000 strip that a processor keeping the
    aspect ratio would scale to 518 x 2,072,000. Written as that expert's error on that row:
    ``"depth: skipped: ..."``; the other experts and images go on."""

    kind = "skipped"


def check_bounds(images: Sequence[Any], expert: str, max_aspect: float = MAX_ASPECT, min_side: int = MIN_SIDE) -> None:
    """Raise :class:`ImageOutOfBounds` for the first image that is too thin or too long."""
    for img in images:
        w, h = img.size
        short, long = sorted((w, h))
        if short < min_side or long > max_aspect * short:
            raise ImageOutOfBounds(f"skipped: {expert} works on images of at least {min_side} px and at most "
                                   f"{max_aspect:g}:1; this one is {w}x{h}")


class Expert(abc.ABC):
    """A batched vision expert."""

    name: str = "expert"
    model: str | None = None
    # the device a model expert was asked for ("auto", "cuda", "cpu"); None: it runs on the CPU
    # (ONNX, OpenCV), so the Ray executor gives it no GPU
    device_pref: str | None = None

    def setup(self) -> None:
        """Load weights; may raise with a clear message before a run starts."""

    @abc.abstractmethod
    def run(self, images: list[Any], **query: Any) -> list[Any]:
        """One result per image, in order."""

    def describe(self) -> dict[str, Any]:
        return {"expert": self.name, "model": self.model}
