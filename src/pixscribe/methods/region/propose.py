"""``--regions auto``: regions proposed by the experts when the input names none.

    regions = propose(expert, [image], [(orig_w, orig_h)], max_regions=50)[0]

The proposer is Florence-2's dense region captions (``dense``, no queries needed) or an
open-vocabulary detector (``grounding_dino``, ``owlv2``) with ``--queries``. Its boxes are on
the image the model sees; they are scaled to the input image's frame (where every region
lives), the ``max_regions`` best kept (by the detector's score; Florence-2 gives no scores, so
its own order), and each region keeps the proposer's ``label``. SAM then turns
the boxes into masks (``box_to_mask``, on by default with ``auto``: see the method).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .types import Region

PROPOSERS = ("dense", "grounding_dino", "owlv2")
QUERY_PROPOSERS = ("grounding_dino", "owlv2")


def _frame_box(box: Sequence[float], sx: float, sy: float, fw: int, fh: int) -> tuple[float, ...] | None:
    x0, y0, x1, y1 = (float(v) for v in box)
    b = (max(0.0, x0 * sx), max(0.0, y0 * sy), min(float(fw), x1 * sx), min(float(fh), y1 * sy))
    return b if b[2] > b[0] and b[3] > b[1] else None


def to_regions(detections: Sequence[Any], image_size: tuple[int, int], frame: tuple[int, int],
               max_regions: int) -> list[Region]:  # fmt: skip
    """Detections (pixel xyxy on an image of ``image_size``) -> box Regions in ``frame``."""
    (iw, ih), (fw, fh) = image_size, frame
    sx, sy = fw / max(iw, 1), fh / max(ih, 1)
    ranked = sorted(detections, key=lambda d: -float(d.score))  # stable: ties keep the proposer's order
    out: list[Region] = []
    for d in ranked:
        if len(out) >= max_regions:
            break
        box = _frame_box(d.box, sx, sy, fw, fh)
        if box is None:  # no area left after clipping: nothing to describe
            continue
        out.append(Region(index=len(out), size=frame, kind="box", box=box,  # type: ignore[arg-type]
                          extra={"label": str(d.label or "") or None, "detector_score": float(d.score)}))  # fmt: skip
    return out


def propose(expert: Any, images: Sequence[Any], frames: Sequence[tuple[int, int]], *, max_regions: int = 50,
            queries: Sequence[str] | None = None) -> list[list[Region]]:  # fmt: skip
    """The proposer's regions for each image, in each image's input frame."""
    if expert.name in QUERY_PROPOSERS and not queries:
        raise ValueError(f"--regions auto with {expert.name} needs --queries 'cat,dog' (or propose with dense)")
    kw = {"queries": list(queries or [])} if expert.name in QUERY_PROPOSERS else {}
    dets = expert.run(list(images), **kw)
    return [to_regions(ds, (im.width, im.height), fr, max_regions) for im, fr, ds in zip(images, frames, dets)]


__all__ = ["PROPOSERS", "QUERY_PROPOSERS", "propose", "to_regions"]
