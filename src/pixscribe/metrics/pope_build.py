"""POPE question sets exactly as RUCAIBox/POPE ``main.py`` + ``utils.py`` build them.

Input: one record per image, ``{"image": file name, "objects": [names...]}`` (POPE's own
segmentation format), or COCO instances (:func:`segments_from_coco`: category names in
annotation order, once each). The reference, with ``sample_num`` (3) and ``img_num`` (500):

1. keeps the images with at least ``sample_num`` objects and draws ``img_num`` of them with
   ``random.sample`` (the draw also fixes their order);
2. counts each object over the drawn images (first-seen order) and, per object, the
   objects it co-occurs with, most frequent first (ties in first-seen order);
3. builds ``random``, ``popular`` and ``adversarial`` in that order with the same random
   generator; per image, for each of its first ``sample_num`` objects: the positive
   question, then one negative, never an object of the image or one already asked:
   ``random``: ``random.choice`` over all objects until one fits; ``popular``: the most
   frequent that fits; ``adversarial``: the object co-occurring most with *this* positive
   that fits; the last two fall back to ``random.choice`` when none fits.

Given ``seed``, the questions are those of the reference run after ``random.seed(seed)``:
the same ``random.Random`` calls are made in the same order. Question text: the template,
with ``"a"`` replaced by ``"an"`` *everywhere* in it for objects starting with a vowel (the
reference's ``template.replace("a", "an")`` gives "Is there an apple in the imange?");
``variant="pope_fixed"`` changes only the article (the wording of POPE's published files).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import ConfigError, InputFileError

SPLITS = ("random", "popular", "adversarial")
TEMPLATE = "Is there a {} in the image?"
VARIANTS = ("pope", "pope_fixed")


@dataclass
class PopeQuestion:
    question_id: int
    image: str
    text: str
    label: str  # "yes" or "no", as in POPE's files
    object: str
    split: str
    image_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The reference's record (its key order)."""
        return {"question_id": self.question_id, "image": self.image, "text": self.text, "label": self.label}


def question_text(obj: str, template: str = TEMPLATE, variant: str = "pope") -> str:
    if obj[:1] not in ("a", "e", "i", "o", "u"):
        return template.format(obj)
    if variant == "pope_fixed":
        return template.replace("a {}", "an {}").format(obj)
    return template.replace("a", "an").format(obj)


def ground_truth_counts(images: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for im in images:
        for o in im["objects"]:
            counts[o] = counts.get(o, 0) + 1
    return counts


def co_occurrence(images: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per object, the objects seen with it, most often first (a stable sort keeps first-seen order on ties)."""
    co: dict[str, dict[str, int]] = {}
    for im in images:
        objs = im["objects"]
        for o in objs:
            row = co.setdefault(o, {})
            for other in objs:
                if other != o:
                    row[other] = row.get(other, 0) + 1
    return {o: [k for k, _ in sorted(row.items(), key=lambda kv: kv[1], reverse=True)] for o, row in co.items()}


def _draw(rng: random.Random, pool: list[str], taken: list[str], present: Sequence[str], image: str) -> str:
    """``random.choice`` until an object that is neither present nor asked comes up (the reference's loop)."""
    if all(o in taken or o in present for o in pool):
        raise InputFileError(f"POPE: no negative object left for image {image!r} (every object is present or asked)")
    while True:
        o = rng.choice(pool)
        if o not in taken and o not in present:
            return o


def _negative(split: str, rng: random.Random, pos: str, im: Mapping[str, Any], taken: list[str],
              pool: list[str], popular: list[str], co: Mapping[str, list[str]]) -> str:
    if split == "random":
        return _draw(rng, pool, taken, im["objects"], im["image"])
    ranked = popular if split == "popular" else co[pos]
    for o in ranked:
        if o not in taken and o not in im["objects"]:
            return o
    return _draw(rng, pool, taken, im["objects"], im["image"])


def _split(split: str, images: Sequence[Mapping[str, Any]], sample_num: int, template: str, variant: str,
           rng: random.Random, counts: Mapping[str, int], co: Mapping[str, list[str]]) -> list[PopeQuestion]:
    pool = list(counts)
    popular = [o for o, _ in sorted(counts.items(), key=lambda kv: kv[1], reverse=True)]
    out: list[PopeQuestion] = []
    for im in images:
        taken: list[str] = []
        iid = str(im["image_id"]) if "image_id" in im else None
        for i in range(sample_num):
            pos = im["objects"][i]
            taken.append(pos)
            neg = _negative(split, rng, pos, im, taken, pool, popular, co)
            taken.append(neg)
            for obj, label in ((pos, "yes"), (neg, "no")):
                out.append(PopeQuestion(len(out) + 1, im["image"], question_text(obj, template, variant), label,
                                        obj, split, iid))
    return out


def select_images(segments: Sequence[Mapping[str, Any]], sample_num: int, img_num: int,
                  rng: random.Random) -> list[Mapping[str, Any]]:
    """The reference's image draw; ``img_num=0`` draws every eligible image (still in drawn order)."""
    eligible = [s for s in segments if len(s["objects"]) >= sample_num]
    n = img_num or len(eligible)
    if len(eligible) < n:
        raise InputFileError(f"POPE: only {len(eligible)} images have at least {sample_num} objects, "
                             f"fewer than the {n} asked for (pass a smaller --img-num, or --img-num 0 for all of them)")
    return rng.sample(eligible, n)


def build_pope(
    segments: Sequence[Mapping[str, Any]],
    sample_num: int = 3,
    img_num: int = 500,
    template: str = TEMPLATE,
    seed: int | None = 0,
    variant: str = "pope",
) -> dict[str, Any]:
    """``{"random": [...], "popular": [...], "adversarial": [...], "ground_truth_objects": {...},
    "co_occur": {...}, "images": [...]}`` as the reference's ``main.py`` makes them."""
    if variant not in VARIANTS:
        raise ConfigError(f"POPE variant must be one of {VARIANTS}, got {variant!r}")
    if "{}" not in template:
        raise ConfigError(f"POPE template needs a '{{}}' for the object: {template!r}")
    rng = random.Random(seed)
    images = select_images(segments, sample_num, img_num, rng)
    counts = ground_truth_counts(images)
    co = co_occurrence(images)
    out: dict[str, Any] = {sp: _split(sp, images, sample_num, template, variant, rng, counts, co) for sp in SPLITS}
    out.update(ground_truth_objects=counts, co_occur=co, images=images)
    return out


def segments_from_coco(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """COCO instances -> POPE records: file name, id, category names in annotation order (once each).

    Images without annotations are kept (with no objects), so they are simply never eligible.
    """
    cats = {c["id"]: c["name"] for c in data["categories"]}
    recs: dict[Any, dict[str, Any]] = {}
    for im in data.get("images", []):
        recs[im["id"]] = {"image": im.get("file_name", str(im["id"])), "image_id": im["id"], "objects": []}
    for a in data["annotations"]:
        r = recs.setdefault(a["image_id"], {"image": str(a["image_id"]), "image_id": a["image_id"], "objects": []})
        name = cats[a["category_id"]]
        if name not in r["objects"]:
            r["objects"].append(name)
    return list(recs.values())


def read_segments(path: str) -> list[dict[str, Any]]:
    """A POPE segmentation file (one ``{"image", "objects"}`` per line) or a COCO instances json,
    read through :mod:`.files` (a regular file, bounded, UTF-8; errors name the file)."""
    from pathlib import Path

    from .files import MetricsInputError, jsonl_values, read_json

    p, flag = Path(path), "INSTANCES"
    try:
        data = read_json(p, flag)
    except MetricsInputError as exc:
        if "not valid JSON" not in str(exc):
            raise
        data = None  # JSON lines
    if isinstance(data, dict) and "annotations" in data:
        try:
            return segments_from_coco(data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise MetricsInputError(f"{path}: not COCO instances ({type(exc).__name__}: {exc})") from None
    rows = data if isinstance(data, list) else [v for _, v in jsonl_values(p, flag)]
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict) or "image" not in r or not isinstance(r.get("objects"), list):
            raise MetricsInputError(f"{path}: record {n} needs 'image' and a list 'objects'")
    return rows
