"""Fixtures for the metrics tests: seeded, varied caption/reference sets.

The captions mix casing, punctuation, numbers (3.5, 1,000, $20, 50%), hyphens,
apostrophes and contractions, quotes, brackets and unicode (accents, curly quotes,
dashes, ellipsis, emoji) so the tokenizer and the scorers are compared with
pycocoevalcap on the cases that actually differ between implementations.
"""

from __future__ import annotations

import random

_SUBJ = ["a man", "A woman", "two dogs", "The cat", "a young girl", "an old man's dog", "three people", "A café owner",
         "the naïve tourist", "a hot dog vendor", "a teddy bear", "someone's cell phone", "a well-known chef",
         "a 3-year-old boy", "The U.S. team", "Mr. Smith", "kids", "a group of 1,000 fans", "a person"]
_VERB = ["is standing", "sits", "isn't sitting", "don't look", "is riding", "can't see", "won't eat", "is holding",
         "stands next to", "looks at", "runs toward", "is playing with", "they're watching", "we'll see", "is eating"]
_OBJ = ["a red frisbee", "the pizza", "a bowl of soup", "an umbrella", "a skateboard", "a laptop computer",
        "the dining table", "a cup of coffee", "a bus", "some bananas", "a surfboard", "the dog's toy",
        "a 3.5 inch screen", "$20 bills", "50% of the cake", "a résumé", "the T-shirt", "a (small) vase",
        "a \"big\" sandwich", "'fancy' shoes", "the e-mail", "a sign that says “STOP”", "rock'n'roll records",
        "the 1990s car", "the kids' bikes", "a ½ pizza", "the clock at 10:30", "a bike & a car"]
_TAIL = ["", ".", " .", "!", "?", "...", "…", " in the park.", ", near the beach.", "; it is sunny", " -- wow",
         " — really", " – maybe", " (outside)", " [sic]", " {blue}", " 😀", " :)", " etc.", " in the U.S.A.",
         " at 5 p.m.", " vs. a dog", " and/or a cat", " at a@b.com", " 2-3 times", "!!", " , , ,", " ' ' ", " ..",
         "  with  extra   spaces  ", " ... and more", "'s", " gonna fall", " cannot move", " o'clock"]


def varied_captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = f"{rng.choice(_SUBJ)} {rng.choice(_VERB)} {rng.choice(_OBJ)}{rng.choice(_TAIL)}"
        r = rng.random()
        if r < 0.15:
            s = s.upper()
        elif r < 0.3:
            s = s.lower()
        elif r < 0.4:
            s = s[0].upper() + s[1:]
        out.append(s)
    return out


def varied_sets(n_images: int, n_refs: int = 5, seed: int = 0) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(gts, res) in pycocoevalcap's raw shape: {id: [caption, ...]}, res has one caption per id."""
    caps = varied_captions(n_images * (n_refs + 1), seed)
    gts: dict[str, list[str]] = {}
    res: dict[str, list[str]] = {}
    for i in range(n_images):
        block = caps[i * (n_refs + 1):(i + 1) * (n_refs + 1)]
        gts[str(i)] = block[:n_refs]
        res[str(i)] = [block[n_refs]]
    return gts, res
