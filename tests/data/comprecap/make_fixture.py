"""Make the CompreCap fixture: anno.json (4 images: objects with categories, descriptions, masks and
relations), images/ (their sizes matter for the masks), captions.json, and judge_answers.json (an answer
text per judge prompt, read by both sides). Deterministic.

    PYTHONPATH=src python tests/data/comprecap/make_fixture.py
"""

import base64
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent


def mask(h, w, box):
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    return base64.b64encode(zlib.compress(m.tobytes())).decode()


def obj(cat, short, rel, h, w, box):
    return {"category": cat, "short_description": short, "extend_description": short + " It is clearly visible.",
            "mask_out": mask(h, w, box), "relation": rel}


def main():
    (HERE / "images").mkdir(exist_ok=True)
    sizes = {"a.jpg": (40, 30), "b.jpg": (32, 32), "c.jpg": (24, 40), "d.jpg": (20, 20)}
    for name, (w, h) in sizes.items():
        Image.new("RGB", (w, h), "gray").save(HERE / "images" / name)
    anno = [
        {"image": "a.jpg", "info": [
            obj("dog", "a brown dog lying down", ["dog lying on the grass", "dog next to the person"], 30, 40, (0, 0, 20, 15)),
            obj("grass", "green grass", [], 30, 40, (0, 15, 40, 30)),
            obj("person", "a person in a red shirt", ["person holding a ball"], 30, 40, (20, 0, 40, 20)),
            obj("dog", "a small white dog", ["dog running"], 30, 40, (25, 20, 35, 28))]},
        {"image": "b.jpg", "info": [
            obj("car", "a blue car", ["car parked on the road"], 32, 32, (0, 0, 16, 16)),
            obj("road", "an asphalt road", [], 32, 32, (0, 16, 32, 32)),
            obj("tree", "a tall tree", ["tree behind the car"], 32, 32, (16, 0, 32, 16))]},
        {"image": "c.jpg", "info": [
            obj("cup", "a white cup of coffee", ["cup on the table"], 40, 24, (0, 0, 12, 10)),
            obj("table", "a wooden table", [], 40, 24, (0, 10, 24, 40))]},
        {"image": "d.jpg", "info": [obj("cat", "a cat", ["cat sleeping"], 20, 20, (0, 0, 10, 10))]},
        {"image": "e.jpg", "info": []},
    ]
    (HERE / "anno.json").write_text(json.dumps(anno, indent=1))
    captions = {
        "a.jpg": "A brown dog lies on the green grass. A person in a red shirt holds a ball.\nAnother dog runs in the park",
        "b.jpg": "The image shows a blue car parked on the road</s>There are trees behind the car.",
        "c.jpg": "A cup sits on the wooden table. The coffee is hot.",
        "d.jpg": "",
        "e.jpg": "Nothing here.",
    }
    (HERE / "captions.json").write_text(json.dumps(captions, indent=1))


if __name__ == "__main__":
    main()
