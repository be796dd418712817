"""CHAIR-i and CHAIR-s (Rohrbach et al. 2018): object hallucination in captions.

Object mentions are found with the COCO-80 synonym lists (after the CHAIR paper's
``synonyms.txt``, written out here), longest phrase first so ``hot dog`` is a hot dog
and not a dog, ``teddy bear`` not a bear; plural forms are handled by a small
inflector (regular -s/-es/-ies plus irregulars: people, men, women, children, mice,
knives, ...). A caption's mentions are the *set* of COCO objects it names.

- CHAIR-i = hallucinated object mentions / all object mentions (over the corpus)
- CHAIR-s = captions with at least one hallucinated object / captions

Ground truth per image is a set of COCO object names (from instance annotations and/or
the objects the reference captions mention, as in the paper).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

# canonical COCO name -> synonyms (singular)
COCO_SYNONYMS: dict[str, list[str]] = {
    "person": ["person", "girl", "boy", "man", "woman", "kid", "child", "chef", "baker", "people", "adult", "rider",
               "children", "baby", "worker", "passenger", "sister", "biker", "policeman", "cop", "officer", "lady",
               "cowboy", "bride", "groom", "male", "female", "guy", "traveler", "mother", "father", "gentleman",
               "pitcher", "player", "skier", "snowboarder", "skater", "skateboarder", "surfer", "tennis player",
               "teenager", "toddler", "infant", "friend", "daughter", "son", "family", "student", "spectator",
               "umpire", "catcher", "batter", "pedestrian", "customer", "vendor", "soldier", "athlete"],
    "bicycle": ["bicycle", "bike", "cycle"],
    "car": ["car", "automobile", "van", "minivan", "sedan", "suv", "taxi", "jeep", "cab"],
    "motorcycle": ["motorcycle", "motor bike", "motor cycle", "motorbike", "scooter", "moped", "dirt bike"],
    "airplane": ["airplane", "jetliner", "plane", "air plane", "monoplane", "aircraft", "jet", "airbus",
                 "biplane", "seaplane", "airliner"],
    "bus": ["bus", "minibus", "trolley", "school bus", "double decker"],
    "train": ["train", "locomotive", "tram", "caboose"],
    "truck": ["truck", "pickup", "lorry", "hauler", "firetruck", "fire truck"],
    "boat": ["boat", "ship", "liner", "sailboat", "motorboat", "dinghy", "powerboat", "speedboat", "canoe",
             "skiff", "yacht", "kayak", "catamaran", "pontoon", "houseboat", "vessel", "rowboat", "trawler",
             "ferryboat", "watercraft", "tugboat", "schooner", "barge", "ferry", "sailboard", "paddleboat",
             "lifeboat", "freighter", "steamboat", "riverboat", "battleship", "steamship"],
    "traffic light": ["traffic light", "traffic signal", "stop light", "streetlight", "traffic lamp"],
    "fire hydrant": ["fire hydrant", "hydrant"],
    "stop sign": ["stop sign"],
    "parking meter": ["parking meter", "meter"],
    "bench": ["bench", "pew"],
    "bird": ["bird", "ostrich", "owl", "seagull", "goose", "duck", "parakeet", "falcon", "robin", "pelican",
             "waterfowl", "heron", "hummingbird", "mallard", "finch", "pigeon", "sparrow", "seabird", "osprey",
             "blackbird", "fowl", "shorebird", "woodpecker", "egret", "chickadee", "quail", "bluebird",
             "kingfisher", "buzzard", "willet", "gull", "swan", "bluejay", "flamingo", "cormorant", "parrot",
             "loon", "gosling", "waterbird", "pheasant", "rooster", "sandpiper", "crow", "raven", "turkey", "oriole",
             "cowbird", "warbler", "magpie", "peacock", "cockatiel", "lorikeet", "puffin", "vulture", "condor",
             "macaw", "peafowl", "cockatoo", "songbird", "chicken", "hen", "eagle", "hawk", "stork"],
    "cat": ["cat", "kitten", "feline", "tabby"],
    "dog": ["dog", "puppy", "beagle", "pup", "chihuahua", "schnauzer", "dachshund", "rottweiler", "canine",
            "pitbull", "collie", "pug", "terrier", "poodle", "labrador", "doggie", "doberman", "mutt", "doggy",
            "spaniel", "bulldog", "sheepdog", "weimaraner", "corgi", "cocker", "greyhound", "retriever",
            "brindle", "hound", "whippet", "husky"],
    "horse": ["horse", "colt", "pony", "racehorse", "stallion", "equine", "mare", "foal", "palomino", "mustang",
              "clydesdale", "bronc", "bronco"],
    "sheep": ["sheep", "lamb", "ram", "goat", "ewe"],
    "cow": ["cow", "cattle", "oxen", "ox", "calf", "holstein", "heifer", "buffalo", "bull", "zebu", "bison"],
    "elephant": ["elephant"],
    "bear": ["bear", "grizzly"],
    "zebra": ["zebra"],
    "giraffe": ["giraffe"],
    "backpack": ["backpack", "knapsack"],
    "umbrella": ["umbrella", "parasol"],
    "handbag": ["handbag", "wallet", "purse", "briefcase"],
    "tie": ["tie", "necktie", "bow tie"],
    "suitcase": ["suitcase", "suit case", "luggage"],
    "frisbee": ["frisbee"],
    "skis": ["skis", "ski"],
    "snowboard": ["snowboard"],
    "sports ball": ["sports ball", "ball", "football", "baseball", "basketball", "soccer ball", "softball",
                    "volleyball", "tennis ball"],
    "kite": ["kite"],
    "baseball bat": ["baseball bat", "bat"],
    "baseball glove": ["baseball glove", "glove", "mitt"],
    "skateboard": ["skateboard"],
    "surfboard": ["surfboard", "longboard", "skimboard", "shortboard", "wakeboard", "surf board"],
    "tennis racket": ["tennis racket", "racket", "racquet"],
    "bottle": ["bottle"],
    "wine glass": ["wine glass"],
    "cup": ["cup", "mug"],
    "fork": ["fork"],
    "knife": ["knife", "pocketknife", "knives"],
    "spoon": ["spoon"],
    "bowl": ["bowl", "container"],
    "banana": ["banana"],
    "apple": ["apple"],
    "sandwich": ["sandwich", "burger", "sub", "cheeseburger", "hamburger"],
    "orange": ["orange"],
    "broccoli": ["broccoli"],
    "carrot": ["carrot"],
    "hot dog": ["hot dog"],
    "pizza": ["pizza"],
    "donut": ["donut", "doughnut"],
    "cake": ["cake", "cheesecake", "cupcake", "shortcake", "coffeecake", "pancake"],
    "chair": ["chair", "seat", "stool"],
    "couch": ["couch", "sofa", "recliner", "futon", "loveseat", "settee", "chesterfield"],
    "potted plant": ["potted plant", "houseplant"],
    "bed": ["bed"],
    "dining table": ["dining table", "table", "desk"],
    "toilet": ["toilet", "urinal", "commode", "lavatory", "potty"],
    "tv": ["tv", "monitor", "television", "televison"],
    "laptop": ["laptop", "computer", "notebook", "netbook", "lenovo", "macbook", "laptop computer"],
    "mouse": ["mouse"],
    "remote": ["remote"],
    "keyboard": ["keyboard"],
    "cell phone": ["cell phone", "mobile phone", "phone", "cellphone", "telephone", "phon", "smartphone",
                   "iphone"],
    "microwave": ["microwave"],
    "oven": ["oven", "stovetop", "stove", "stove top oven"],
    "toaster": ["toaster"],
    "sink": ["sink"],
    "refrigerator": ["refrigerator", "fridge", "freezer"],
    "book": ["book", "novel"],
    "clock": ["clock"],
    "vase": ["vase"],
    "scissors": ["scissors"],
    "teddy bear": ["teddy bear", "teddybear"],
    "hair drier": ["hair drier", "hairdryer", "hair dryer", "blow dryer", "blowdryer", "blow drier",
                   "dryer", "drier"],
    "toothbrush": ["toothbrush"],
}

COCO_OBJECTS: tuple[str, ...] = tuple(COCO_SYNONYMS)

_IRREGULAR = {"person": ["people", "persons"], "man": ["men"], "woman": ["women"], "child": ["children"],
              "mouse": ["mice"], "knife": ["knives"], "goose": ["geese"], "ox": ["oxen"], "sheep": ["sheep"],
              "skis": ["skis"], "scissors": ["scissors"], "policeman": ["policemen"], "gentleman": ["gentlemen"],
              "calf": ["calves"], "bus": ["buses", "busses"], "couch": ["couches"], "sandwich": ["sandwiches"],
              "glass": ["glasses"], "bench": ["benches"], "cattle": ["cattle"], "fish": ["fish"],
              "lady": ["ladies"], "pony": ["ponies"], "puppy": ["puppies"], "ferry": ["ferries"],
              "baby": ["babies"], "family": ["families"], "doggy": ["doggies"], "bison": ["bison"],
              "buffalo": ["buffaloes", "buffalos"], "shelf": ["shelves"], "wife": ["wives"]}

# phrases that contain a synonym but do not name that object (as in the CHAIR code)
_NOT_OBJECTS = {"hot dog", "teddy bear", "baseball bat", "bow tie", "motor bike", "dining table", "table tennis",
                "toilet paper", "toilet seat", "wine glass", "cell phone", "tennis racket", "baseball glove",
                "home plate", "surf board", "stop light", "traffic light", "fire hydrant", "stop sign",
                "parking meter", "potted plant", "hair drier", "hair dryer", "sports ball", "tennis ball",
                "soccer ball", "school bus", "fire truck", "passenger train", "orange juice", "apple juice",
                "orange slice", "bear suit", "computer mouse", "train station", "bus stop", "bus station",
                "dog bed", "cat food", "dog food", "horse drawn", "tie dye", "cake pan"}


def _plurals(w: str) -> list[str]:
    last = w.split(" ")[-1]
    head = w[: len(w) - len(last)]
    forms = set(_IRREGULAR.get(last, []))
    if last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        forms.add(last[:-1] + "ies")
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        forms.add(last + "es")
    else:
        forms.add(last + "s")
    return [head + f for f in forms]


def _build_lexicon() -> dict[str, str]:
    lex: dict[str, str] = {}
    for obj, syns in COCO_SYNONYMS.items():
        for s in syns:
            lex.setdefault(s, obj)
            for p in _plurals(s):
                lex.setdefault(p, obj)
    # phrases that are not objects map to None-objects unless they are COCO names themselves
    for ph in _NOT_OBJECTS:
        if ph not in lex:
            lex[ph] = ""
            for p in _plurals(ph):
                lex.setdefault(p, "")
    return lex


LEXICON = _build_lexicon()
_MAX_WORDS = max(len(k.split()) for k in LEXICON)
_TOKEN = re.compile(r"[a-z0-9]+")


def mentioned_objects(caption: str) -> list[str]:
    """COCO objects named in a caption, in order of first mention (longest phrase first)."""
    words = _TOKEN.findall(caption.lower().replace("-", " "))
    out: list[str] = []
    i = 0
    while i < len(words):
        for n in range(min(_MAX_WORDS, len(words) - i), 0, -1):
            ph = " ".join(words[i:i + n])
            obj = LEXICON.get(ph)
            if obj is not None:
                if obj and obj not in out:
                    out.append(obj)
                i += n
                break
        else:
            i += 1
    return out


def objects_from_captions(captions: Iterable[str]) -> set[str]:
    s: set[str] = set()
    for c in captions:
        s.update(mentioned_objects(c))
    return s


def canonical(name: str) -> str:
    """A COCO category name or synonym -> the canonical COCO name ('' if unknown)."""
    n = name.lower().strip()
    return n if n in COCO_SYNONYMS else (LEXICON.get(n) or "")


@dataclass
class ChairResult:
    chair_s: float
    chair_i: float
    per_image: dict[str, dict] = field(default_factory=dict)
    mentions: int = 0
    hallucinated: int = 0
    captions: int = 0


def chair(captions: Mapping[str, str], ground_truth: Mapping[str, Iterable[str]]) -> ChairResult:
    """CHAIR over the captions whose id has ground truth (names are canonicalised)."""
    per: dict[str, dict] = {}
    mentions = hall = hall_caps = n = 0
    for k, cap in captions.items():
        if k not in ground_truth:
            continue
        gt = {canonical(o) or o for o in ground_truth[k]}
        objs = mentioned_objects(cap)
        bad = [o for o in objs if o not in gt]
        mentions += len(objs)
        hall += len(bad)
        hall_caps += 1 if bad else 0
        n += 1
        per[k] = {"mentioned": objs, "hallucinated": bad, "chair_s": float(bool(bad)),
                  "chair_i": (len(bad) / len(objs)) if objs else 0.0}
    return ChairResult(chair_s=hall_caps / n if n else 0.0, chair_i=hall / mentions if mentions else 0.0,
                       per_image=per, mentions=mentions, hallucinated=hall, captions=n)


def read_coco_instances(path: str) -> dict[str, set[str]]:
    """Ground-truth object sets from a COCO instances json (``annotations`` + ``categories``)."""
    import json

    data = json.loads(open(path, encoding="utf-8").read())
    cats = {c["id"]: canonical(c["name"]) or c["name"] for c in data.get("categories", [])}
    out: dict[str, set[str]] = {str(i["id"]): set() for i in data.get("images", [])}
    for a in data.get("annotations", []):
        out.setdefault(str(a["image_id"]), set()).add(cats.get(a["category_id"], str(a["category_id"])))
    return out
