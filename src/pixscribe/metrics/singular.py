"""The singulariser CHAIR's reference code uses: ``pattern.en.singularize`` (Pattern 3.6).

CHAIR (LisaAnne/Hallucination ``utils/chair.py``, ``requirements.txt``: ``pattern==3.6``)
singularises every token with ``pattern.en.singularize(word)`` before looking it up in
the synonym list. Pattern does not install on current Pythons, so its behaviour is
reproduced here from its rules (clips/pattern ``pattern/text/en/inflect.py``, unchanged
from 2017-08-24 to the 3.6 release, commit 647a679), quirks included, because they decide
which objects CHAIR sees:

- the exception lists are tested with ``entry.endswith(word)``, so any word that is the
  tail of an entry is returned unchanged (``"ice"`` because of ``"advice"``, ``"s"``);
- the ``-ie`` list holds ``"^tie"`` and ``"^pie"``, tested with ``str.endswith``, so they
  never match: ``"ties" -> "ty"``;
- the irregular list is tested as a suffix: ``"women" -> "woman"``, ``"hour" -> "hmy"``;
- the last rule strips any final ``s``: ``"bus" -> "bu"``, ``"glass" -> "glas"``,
  ``"tennis" -> "tenni"`` (CHAIR's ``"wine glas"`` rule exists because of this).

``tests/metrics/test_metrics_chair.py::test_singularize_as_pattern`` checks the rules word by word,
worked out by hand.
"""

from __future__ import annotations

import re
from functools import lru_cache

# words that are their own plural (checked as: entry ends with the word)
_UNINFLECTED = frozenset("""
bison debris headquarters pincers trout bream diabetes herpes pliers tuna breeches djinn high-jinks
proceedings whiting britches eland homework rabies wildebeest carp elk innings salmon chassis flounder
jackanapes scissors christmas gallows mackerel series clippers georgia measles shears cod graffiti mews
species contretemps mumps swine corps news swiss
""".split())

_UNCOUNTABLE = frozenset("""
advice equipment happiness luggage news software bread fruit information mathematics progress
understanding butter furniture ketchup mayonnaise research water cheese garbage knowledge meat rice
electricity gravel love mustard sand
""".split())

# plural ends with entry + "s" -> the word as it is minus nothing but the "s" (entries with "^" never match)
_IE = frozenset("""
alergie cutie hoagie newbie softie veggie auntie doggie hottie nightie sortie weenie beanie eyrie indie
oldie stoolie yuppie birdie freebie junkie ^pie sweetie zombie bogie goonie laddie pixie techie bombie
groupie laramie quickie ^tie collie hankie lingerie reverie toughie cookie hippie meanie rookie valkyrie
""".split())

# plural suffix -> singular suffix (no entry is a suffix of another, so their order does not matter)
_IRREGULAR = {
    "atlantes": "atlas", "atlases": "atlas", "axes": "axe", "beeves": "beef", "brethren": "brother",
    "children": "child", "corpora": "corpus", "corpuses": "corpus", "ephemerides": "ephemeris",
    "feet": "foot", "ganglia": "ganglion", "geese": "goose", "genera": "genus", "genii": "genie",
    "graffiti": "graffito", "helves": "helve", "kine": "cow", "leaves": "leaf", "loaves": "loaf",
    "men": "man", "mongooses": "mongoose", "monies": "money", "moves": "move", "mythoi": "mythos",
    "numena": "numen", "occipita": "occiput", "octopodes": "octopus", "opera": "opus", "opuses": "opus",
    "our": "my", "oxen": "ox", "penes": "penis", "penises": "penis", "people": "person", "sexes": "sex",
    "soliloquies": "soliloquy", "teeth": "tooth", "testes": "testis", "trilbys": "trilby",
    "turves": "turf", "zoa": "zoon",
}

# (pattern, replacement), tried in order; the first that matches anywhere is applied
_RULES: list[tuple[str, str]] = [
    (r"(?i)(.)ae$", r"\1a"), (r"(?i)(.)itis$", r"\1itis"), (r"(?i)(.)eaux$", r"\1eau"),
    (r"(?i)(quiz)zes$", r"\1"), (r"(?i)(matr)ices$", r"\1ix"), (r"(?i)(ap|vert|ind)ices$", r"\1ex"),
    (r"(?i)^(ox)en", r"\1"), (r"(?i)(alias|status)es$", r"\1"),
    (r"(?i)([octop|vir])i$", r"\1us"),  # a character class, as in the original: "...ti" -> "...tus"
    (r"(?i)(cris|ax|test)es$", r"\1is"), (r"(?i)(shoe)s$", r"\1"), (r"(?i)(o)es$", r"\1"),
    (r"(?i)(bus)es$", r"\1"), (r"(?i)([m|l])ice$", r"\1ouse"), (r"(?i)(x|ch|ss|sh)es$", r"\1"),
    (r"(?i)(m)ovies$", r"\1ovie"), (r"(?i)(.)ombies$", r"\1ombie"), (r"(?i)(s)eries$", r"\1eries"),
    (r"(?i)([^aeiouy]|qu)ies$", r"\1y"),
    # -ves (case-sensitive in the original where no (?i) is given)
    (r"([aeo]l)ves$", r"\1f"), (r"([^d]ea)ves$", r"\1f"), (r"arves$", "arf"), (r"erves$", "erve"),
    (r"([nlw]i)ves$", r"\1fe"), (r"(?i)([lr])ves$", r"\1f"), (r"([aeo])ves$", r"\1ve"),
    (r"(?i)(sive)s$", r"\1"), (r"(?i)(tive)s$", r"\1"), (r"(?i)(hive)s$", r"\1"),
    (r"(?i)([^f])ves$", r"\1fe"),
    # -ses
    (r"(?i)(^analy)ses$", r"\1sis"),
    (r"(?i)((a)naly|(b)a|(d)iagno|(p)arenthe|(p)rogno|(s)ynop|(t)he)ses$", r"\1\2sis"),
    (r"(?i)(.)opses$", r"\1opsis"), (r"(?i)(.)yses$", r"\1ysis"),
    (r"(?i)(h|d|r|o|n|b|cl|p)oses$", r"\1ose"),
    (r"(?i)(fruct|gluc|galact|lact|ket|malt|rib|sacchar|cellul)ose$", r"\1ose"),
    (r"(?i)(.)oses$", r"\1osis"),
    (r"(?i)([ti])a$", r"\1um"), (r"(?i)(n)ews$", r"\1ews"),
    (r"(?i)s$", ""),
]
_COMPILED = [(re.compile(p), r) for p, r in _RULES]

# "mothers-in-law": a hyphenated word whose second part is one of these singularises its first part
_PLURAL_PREPOSITIONS = frozenset("""
about before during of till above behind except off to across below for on under after beneath from
onto until among beside in out unto around besides into over upon at between near since with athwart
betwixt beyond but by
""".split())


def _apply_rules(word: str) -> str:
    for rx, repl in _COMPILED:
        if rx.search(word):
            # unmatched groups become "" (the original deletes their back-references first)
            return rx.sub(repl, word)
    return word


@lru_cache(maxsize=65536)
def singularize(word: str) -> str:
    """``pattern.en.singularize(word)`` as Pattern 3.6 computes it (default part of speech)."""
    if "-" in word:
        parts = word.split("-")
        if len(parts) > 1 and parts[1] in _PLURAL_PREPOSITIONS:
            return singularize(parts[0]) + "-" + "-".join(parts[1:])
    if word.endswith("'"):
        return singularize(word[:-1]) + "'s"
    w = word.lower()
    if any(x.endswith(w) for x in _UNINFLECTED) or any(x.endswith(w) for x in _UNCOUNTABLE):
        return word
    if any(w.endswith(x + "s") for x in _IE):
        return w
    for plural, single in _IRREGULAR.items():
        if w.endswith(plural):
            return re.sub("(?i)" + plural + "$", single, word)
    return _apply_rules(word)
