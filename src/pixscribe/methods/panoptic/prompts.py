"""pixscribe's own prompts for panoptic captioning, and the official ones (:data:`OFFICIAL`, for
``--prompt-set official``). Every one is a stage option, so ``-S tag.prompt=...`` or
``stages: {tag: {prompt: ...}}`` replaces it.

Every request is laid out the same way so a serving engine's prefix cache can reuse the
image's encoding across the stages of one image: the image first, then :data:`PREAMBLE`
(the same text at every stage), then the stage's instruction, then the list it works on as
quoted data. See docs/panoptic.md.
"""

from __future__ import annotations

PREAMBLE = (
    "Boxes on this image are written <box>[[x1, y1, x2, y2]]</box>: left, top, right, bottom, as integers "
    "from 0 to 999 across the image made square by padding its short side equally on both ends. An entity "
    "is written as its semantic tag followed by its box, e.g. red car <box>[[120, 480, 365, 610]]</box>; "
    "a list separates entities with a comma."
)

LOCALIZE = (
    "Localize every entity in the image, both things (people, animals, objects) and stuff (sky, road, "
    "grass, wall). Answer only with their boxes, separated by commas, without tags."
)

TAG = (
    "The boxes below mark the entities of this image. Give the semantic tag of each one. Answer only with "
    "the list: each box unchanged, preceded by its tag, separated by commas."
)

DISCOVER = (
    "The entities below have been found in this image. Find the entities that are still missing from the "
    "list and answer only with them, each as its tag followed by its box, separated by commas. If nothing "
    "is missing, answer None."
)

CAPTION = (
    "Write a hyper-detailed description of this image based on the entities below. Mention every entity "
    "with its box right after it, its attributes (colour, material, shape, state, any text on it) and the "
    "relations between entities (position, action, interaction), and end with the global state of the "
    "image (lighting, weather, time of day, style)."
)

ENGINE_CAPTION = (
    "Vision experts detected the entities below in this image; their tags and boxes may contain mistakes. "
    "Write a hyper-detailed description of the image. Mention every entity you can see with its box right "
    "after it (keep the given boxes where they are right, correct them where they are not, leave out "
    "entities that are not there, add ones that are missing), its attributes (colour, material, shape, "
    "state, any text on it) and the relations between entities, and end with the global state of the "
    "image (lighting, weather, time of day, style)."
)

STRUCTURED = (
    "Describe this image as JSON based on the entities below: every entity you can see with an id (E1, "
    "E2, ...), its tag, its box as four integers and its attributes; the relations between entities (a "
    "subject id, a predicate, an object id); and the global state of the image (lighting, weather, time "
    "of day, style)."
)

CONSISTENCY = (
    "Another model wrote the entity list and the description below for this image. Check every listed "
    "entity against the image. Answer with the ids of the entities that the image contradicts (the "
    "entity is not there, its tag is wrong, or its box is far off), each with a short reason; an empty "
    "list if none."
)

# The official PancapChain prompts (Visual-AI/Pancap, llava/eval/model_vqa_loader_pancapchain.py), byte
# for byte: the fine-tuned PancapChain-13B was trained on them. With ``--prompt-set official`` each is
# followed by one space and the previous stage's list (stage 1 has none); no preamble, no quoting.
OFFICIAL = {
    "localize": "Please localize all entities in this image.",
    "tag": "Please specify the semantic tags of all entities based on their bounding boxes:",
    "discover": "Please specify missing entities and their locations for this image based on these specified "
                "entities:",
    "caption": "Please provide a hyper-detailed description for this image, including all entities, their "
               "locations, attributes, and relationships, as well as the global image status, based on boxes "
               "and tags:",
}

CONSISTENCY_SCHEMA = {
    "type": "object",
    "properties": {"contradicted": {"type": "array", "items": {
        "type": "object", "properties": {"id": {"type": "string"}, "reason": {"type": "string"}},
        "required": ["id", "reason"]}}},
    "required": ["contradicted"],
}

__all__ = ["CAPTION", "CONSISTENCY", "CONSISTENCY_SCHEMA", "DISCOVER", "ENGINE_CAPTION", "LOCALIZE", "OFFICIAL",
           "PREAMBLE", "STRUCTURED", "TAG"]
