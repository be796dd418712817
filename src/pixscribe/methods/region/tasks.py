"""Granularity (``--task``): one attribute of a region, a dense description of it, or a dense
description of the whole image that mentions the regions.

These are FineCaption's three tasks (arXiv 2411.15411: attribute-aware regional captioning,
regional dense captioning, comprehensive global image captioning). The attribute families
follow CompositionCap as issue #12 lists them; the paper's own list and spelling could not be
checked here (see docs/region.md), so the names are pixscribe's snake_case keys with common
aliases, and any other attribute name is accepted and sent as quoted text.

The prompt templates are pixscribe's own. ``{region}`` is filled by the prompting mode with
how the region is shown ("the region outlined in magenta", "the region inside the box
[...]"...). A row's instruction is appended as a quoted request, never as a new system prompt.
"""

from __future__ import annotations

import json

TASKS = ("attribute", "dense", "global")

# key -> what the prompt asks about
ATTRIBUTES: dict[str, str] = {
    "category": "category (what kind of thing it is)",
    "color": "colour or colours",
    "material": "material (what it is made of)",
    "shape": "shape",
    "texture": "texture and surface",
    "pose": "pose or posture",
    "expression": "facial expression",
    "hairstyle": "hairstyle (length, colour and style of the hair)",
    "age": "apparent age",
    "clothing_and_accessories": "clothing and accessories",
    "interaction": "interaction with other things or people in the image",
    "relative_position": "position relative to the other things in the image",
    "view_angle": "view angle (from which side and height it is seen)",
    "body_size": "body size and build",
}

_ALIASES = {
    "colour": "color", "colors": "color", "colours": "color",
    "clothing": "clothing_and_accessories", "accessories": "clothing_and_accessories",
    "clothes": "clothing_and_accessories", "clothing_accessories": "clothing_and_accessories",
    "hair_style": "hairstyle", "hair": "hairstyle", "facial_expression": "expression",
    "position": "relative_position", "location": "relative_position",
    "viewpoint": "view_angle", "view": "view_angle", "angle": "view_angle",
    "size": "body_size", "body_shape": "body_size", "posture": "pose", "class": "category", "object": "category",
}  # fmt: skip


def attribute_key(name: str) -> str:
    """Canonical key of an attribute name: ``"Clothing and Accessories"`` -> ``clothing_and_accessories``.

    Unknown names come back normalised the same way (lower case, spaces to underscores)."""
    k = "_".join(name.strip().lower().replace("-", " ").replace("&", " and ").split())
    return _ALIASES.get(k, k)


def attribute_phrase(name: str) -> str:
    """What the prompt asks about: the known family's wording, else the name as quoted text."""
    k = attribute_key(name)
    return ATTRIBUTES.get(k) or f"attribute {json.dumps(name.strip())}"


def _request(instruction: str | None) -> str:
    if not instruction:
        return ""
    return f' The user adds this request about it, given here as quoted text: {json.dumps(instruction)}.'


def task_text(task: str, region: str, *, attribute: str | None = None, instruction: str | None = None,
              count: int = 1) -> str:  # fmt: skip
    """The instruction for one region (or, for ``global``, one image with ``count`` regions)."""
    if task == "attribute":
        if not attribute:
            raise ValueError("task 'attribute' needs an attribute (--attribute NAME or the row's own)")
        return (f"Look at {region}. Describe only its {attribute_phrase(attribute)}, in one or two sentences, "
                f"and nothing else about it.{_request(instruction)}")  # fmt: skip
    if task == "dense":
        return (f"Describe {region} in detail: what it is, its appearance (colours, material, texture, shape), its "
                f"pose or state, and how it relates to what is around it. Describe only that region."
                f"{_request(instruction)}")  # fmt: skip
    if task == "global":
        which = "the marked region" if count == 1 else f"each of the {count} marked regions"
        return (f"Describe the whole image in detail: the scene, the main objects and their attributes, and how they "
                f"relate. Mention {which} ({region}) and what it shows.{_request(instruction)}")  # fmt: skip
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def marks_text(task: str, marks: str, count: int, *, attribute: str | None = None,
               instruction: str | None = None) -> str:  # fmt: skip
    """Set-of-mark: one request answering for every numbered region, as JSON ``{"1": "...", ...}``."""
    if task == "attribute":
        if not attribute:
            raise ValueError("task 'attribute' needs an attribute (--attribute NAME or the row's own)")
        what = f"describe only its {attribute_phrase(attribute)} in one or two sentences"
    elif task == "dense":
        what = "describe it in detail (what it is, its appearance, its pose or state, what is around it)"
    else:
        raise ValueError(f"set-of-mark answers per region; task {task!r} is not per region")
    keys = ", ".join(f'"{i}"' for i in range(1, count + 1))
    return (f"The image has {count} numbered regions ({marks}). For each region, {what}. Answer with a JSON object "
            f"whose keys are the region numbers ({keys}) and whose values are the descriptions.{_request(instruction)}")


__all__ = ["ATTRIBUTES", "TASKS", "attribute_key", "attribute_phrase", "marks_text", "task_text"]
