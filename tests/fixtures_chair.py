"""A hand-made COCO-format CHAIR set: instances, reference captions, predicted captions.

The expected mentions of every predicted caption are worked out by hand from the
reference's rules (LisaAnne/Hallucination utils/chair.py: nltk tokens of the lower-cased
caption, pattern's singularize, the two-word list, baby/adult/passenger, toilet-seat,
the synonym list) in the comments, for ``chair`` and, where it differs, ``chair_fixed``.
"""

from __future__ import annotations

import json
from pathlib import Path

# COCO category ids as in COCO 2014
CATEGORIES = {1: "person", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 10: "traffic light",
              16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 25: "giraffe",
              32: "tie", 34: "frisbee", 47: "cup", 58: "hot dog", 61: "cake", 63: "couch", 65: "bed",
              67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 77: "cell phone", 81: "sink", 88: "teddy bear"}

# image id -> (instance categories, reference captions, predicted caption)
IMAGES = {
    # puppy->dog, frisbee, dog, cat: 4 mentions; truth {dog, frisbee}: cat hallucinated (1)
    1: (["dog", "frisbee"], ["A dog catches a frisbee in a park."],
        "A puppy jumps for a frisbee while another dog and a cat watch."),
    # men->man->person, "hot" "dogs"->"dog" -> "hot dog", dog: 3 mentions; the lone dog hallucinated (1)
    2: (["person", "hot dog"], ["A man eating a hot dog."], "Two men eat hot dogs next to a dog."),
    # teddy bear, bear, bed: 3; bear hallucinated (1)
    3: (["teddy bear", "bed"], ["A teddy bear on a bed."], "A teddy bear and a brown bear sit on the bed."),
    # traffic light, "bus"->"bu" (no match), car: 2 mentions, 0 hallucinated.
    # chair_fixed keeps "bus": 3 mentions, bus hallucinated (1)
    4: (["car", "traffic light", "person"], ["Cars wait at a traffic light."], "A traffic light above a bus and a car."),
    # "baby bird"->bird, "adult bird"->bird: 2 mentions, no person
    5: (["bird"], ["A small bird on a branch."], "A baby bird sits next to an adult bird in a nest."),
    # "passenger jet"->jet->airplane: 1 mention
    6: (["airplane", "person"], ["People boarding a plane."], "A passenger jet parked at the gate."),
    # "passenger train"->train, passenger->person: 2; person hallucinated (1)
    7: (["train"], ["A train at the station."], "A passenger train next to a passenger."),
    # "toilet seat"->toilet; toilet and seat both present -> every "seat" dropped: toilet, toilet, sink: 3, 0
    8: (["toilet", "sink"], ["A white toilet next to a sink."],
        "The seat of the toilet is up and a toilet seat cover is on the sink."),
    # man->person; "motor bike" is joined but its list entry is " motor bike" -> dropped; cell phone: 2, 1
    # chair_fixed: person, motorcycle, cell phone: 3, 1
    9: (["person", "motorcycle"], ["A man riding a motorcycle."], "A man on a motor bike holds a cell phone."),
    # cheesecake (entry " cheesecake", no match), cups->cup, "wine" "glass"->"glas" -> "wine glas" -> wine glass,
    # table->dining table: 3, wine glass hallucinated (1). chair_fixed adds cheesecake->cake: 4, 1
    10: (["dining table", "cake", "cup"], ["A cake and cups on a table."],
         "A cheesecake, two cups of coffee and a wine glass on the table."),
    # men->person, "ties"->"ty" (no match), "bow tie"->tie: 2, 0. chair_fixed: ties->tie: 3, 0
    11: (["person", "tie"], ["A man wearing a tie."], "Two men in suits and ties, one with a bow tie."),
    # elephants->elephant, giraffes->giraffe, "hot-dog" one token (no match): 2; giraffe hallucinated (1)
    12: (["elephant", "person"], ["An elephant walking with its trainer."],
         "Elephants and giraffes walk past a hot-dog stand."),
    # kitten->cat, couch, tv, laptop, sofa->couch: 5, 0
    13: (["cat", "couch", "tv", "laptop"], ["A cat sleeping on a sofa in front of a television."],
         "A kitten on the couch watches TV while a laptop sits on the sofa."),
    # dog, dog, bed (no "dog bed" rule): 3; truth {dog} + reference mentions {dog, bed}: 0
    14: (["dog"], ["A dog sleeping on a bed."], "A dog on a dog bed."),
    # "bus"->"bu" twice, driver->person: 1, 0. chair_fixed: bus, person, bus: 3, 0
    15: (["bus", "person"], ["A red double decker bus."], "A bus driver stands near the bus."),
    # oxen->ox->cow, calves->calf->cow, sheep, horse: 4; horse hallucinated (1)
    16: (["cow", "sheep"], ["Cows and sheep grazing."], "Oxen and calves graze beside a flock of sheep and a horse."),
    # no object mentioned (still one caption for CHAIR-s)
    17: ([], ["A view of the mountains."], "Mountains under a clear sky."),
}

# totals (chair): mentions 4+3+3+2+2+1+2+3+2+3+2+2+5+3+1+4+0 = 42; hallucinated 1+1+1+1+1+1+1+1 = 8
# (images 1, 2, 3, 7, 9, 10, 12, 16); captions with one: 8 of 17
EXPECTED = {"chair": {"mentions": 42, "hallucinated": 8, "chair_s": 8 / 17, "chair_i": 8 / 42},
            # chair_fixed: +1 (4), +1 (9), +1 (10), +1 (11), +2 (15) mentions = 48; +1 hallucinated (4) = 9
            "chair_fixed": {"mentions": 48, "hallucinated": 9, "chair_s": 9 / 17, "chair_i": 9 / 48}}


def write_coco(tmp: Path) -> tuple[Path, Path, Path]:
    """(instances.json, captions.json, results.json) in COCO's formats."""
    ids = {v: k for k, v in CATEGORIES.items()}
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in IMAGES]
    anns, caps, res = [], [], []
    for i, (objs, refs, pred) in IMAGES.items():
        for o in objs:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": ids[o]})
        for r in refs:
            caps.append({"id": len(caps) + 1, "image_id": i, "caption": r})
        res.append({"image_id": i, "caption": pred})
    cats = [{"id": k, "name": v} for k, v in CATEGORIES.items()]
    inst = tmp / "instances.json"
    inst.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    capf = tmp / "captions.json"
    capf.write_text(json.dumps({"images": images, "annotations": caps}))
    resf = tmp / "results.json"
    resf.write_text(json.dumps(res))
    return inst, capf, resf
