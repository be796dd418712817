"""A small deterministic noun-phrase extractor for image descriptions (no tagger, no models).

Image Textualization asks an LLM for the concrete objects a description states with
certainty; ``--extractor nouns`` does the same job offline with rules, so a run needs no
text model for it and gives the same phrases every time::

    noun_phrases("A cat, a sofa and perhaps a dog.")   # -> ["cat", "sofa"]

The rules, in order:

1. Markdown emphasis is dropped and quoted text ("OPEN 24H") is removed: text read in the
   image is not an object.
2. The text is cut into clauses at ``. ! ? ; :``, commas, parentheses and line breaks.
3. Inside a clause, a hedge ("perhaps", "possibly", "might", "appears", "looks like"...)
   silences everything after it up to the clause's end: "a white car, perhaps belonging to
   a hotel guest" gives only "white car". A negation ("no", "without", "not"...) does too,
   but only up to the next "and", "but", "while" or "with" ("no people or cars and a table").
4. The rest is split into runs of content words: determiners, prepositions, conjunctions,
   pronouns, auxiliaries, common verbs and adverbs end a run. Determiners ("a", "the") are
   dropped; numbers stay ("two red candlesticks").
5. A run loses trailing participles and adjectives ("cat sleeping" -> "cat"); a run whose
   head (last word) is an adjective or an abstract or positional word ("atmosphere",
   "scene", "view", "left", "background") is dropped; runs longer than four words keep
   their last four.

Phrases are lowercased and returned once each, in order. This is a heuristic fallback: an
LLM with the extraction prompt is better on hard sentences.
"""

from __future__ import annotations

import re

VERSION = 1  # bump when the rules change: it is part of the objects stage's fingerprint

HEDGES = frozenset("""
perhaps possibly maybe probably likely presumably apparently seemingly supposedly might may could would
appears appear appearing seems seem seeming suggesting suggests suggest suggestive resembling resembles
resemble unclear uncertain if whether hinting implying
""".split())
NEGATIONS = frozenset("no not without nor neither never none nothing nobody isn't aren't doesn't don't".split())
# a negation's scope ends at these ("no people and a table": the table is there); a hedge's does not
NEGATION_ENDS = frozenset("and but while with".split())

DETERMINERS = frozenset("""
a an the this that these those his her its their our my your some several many few various each every
another both all any such what which
""".split())
NUMBERS = frozenset("""
one two three four five six seven eight nine ten eleven twelve dozen dozens couple pair
""".split())
PREPOSITIONS = frozenset("""
in on at of with by for from to into onto near behind beside besides under over above below between among
against along across through around toward towards beneath inside outside next atop upon via within like as
than underneath throughout past beyond during amid amidst alongside up down out off away back about
""".split())
CONJUNCTIONS = frozenset("and or but while where which who whose whom when because although though so yet".split())
PRONOUNS = frozenset("""
it they he she we you i them him us me there here itself themselves himself herself it's there's that's
here's they're who's one's someone something everything anything
""".split())
AUXILIARIES = frozenset("""
is are was were be being been am has have had do does did can will shall should must having 's
""".split())
VERBS = frozenset("""
sits sit stands stand holds hold lies lie rests rest looks look wears wear shows show features feature
contains contain includes include displays display depicts depict captures capture adds add creates
create gives give makes make hangs hang fills fill covers cover surrounds surround leans lean walks walk
runs run rides ride plays play eats eat drinks drink sleeps sleep carries carry faces face flies fly
grows grow lines line frames frame dominates dominate reads read says say seen placed located positioned
set filled covered made hosts host offers offer dressed adorned decorated parked surrounded arranged visible
""".split())
ADVERBS = frozenset("""
very also too just only quite rather almost nearly partially partly mostly together slightly somewhat
really fairly well even still again further further more most less least much then now
""".split())
ADJECTIVES = frozenset("""
red white black blue green yellow orange pink purple brown gray grey golden gold silver beige dark light
bright pale colorful colourful large small big little tall short long wide narrow tiny huge giant old new
young round square flat open closed empty full wooden metal metallic plastic glass clear cozy warm cold
hot wet dry soft hard smooth rough shiny vibrant beautiful lush green-and-white sunny cloudy rainy snowy
busy quiet calm peaceful festive modern vintage rustic simple elegant ornate detailed various several
other same different main central distant nearby visible prominent serene lively
""".split())
ABSTRACT = frozenset("""
image images picture photo photograph photography scene scenes view views atmosphere mood feeling feelings
sense ambiance ambience vibe excitement composition setting background foreground center centre middle
left right side sides top bottom corner corners edge edges part parts area areas space front distance
frame shot color colors colour colours hue hues tone tones lighting detail details texture textures style
moment day time snapshot tableau spirit warmth comfort touch hint pop contrast arrangement variety number
lot lots kind kinds sort type types shade shades shape shapes pattern patterns appearance presence focus
subject subjects element elements object objects thing things portion rest overall perspective angle
depth harmony charm beauty energy life emphasis interest attention character essence
""".split())

# nouns that end in -ly (other -ly words are taken for adverbs)
LY_NOUNS = frozenset("family belly jelly lily butterfly dragonfly firefly ally rally bully gully holly trolly".split())

# nouns that end in -ing or -ed (other such words are taken for participles)
PARTICIPLE_NOUNS = frozenset("""
building ceiling painting clothing railing awning string wedding evening morning pudding icing sibling
seedling dumpling bedding stuffing frosting sling swing wing spring ring king sailing bed shed sled seed
reed steed
""".split())

STOP = DETERMINERS | PREPOSITIONS | CONJUNCTIONS | PRONOUNS | AUXILIARIES | VERBS | ADVERBS | NEGATIONS | HEDGES

_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|«[^»]*»")
_CLAUSE = re.compile(r"[.!?;:,()\[\]\n]+|\s[-–—]\s")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")
MAX_WORDS = 4


def _clean(text: str) -> str:
    text = text.replace("’", "'")
    text = re.sub(r"[*_#`]+", " ", text)
    return _QUOTED.sub(" , ", text)


def _silenced(words: list[str]) -> list[bool]:
    """True for the words a hedge or a negation earlier in the clause silences."""
    out, quiet = [], ""
    for i, w in enumerate(words):
        if quiet == "negation" and w in NEGATION_ENDS:
            quiet = ""
        if w in HEDGES or (w in ("looks", "look", "looking") and words[i + 1: i + 2] == ["like"]):
            quiet = "hedge"
        elif w in NEGATIONS and quiet != "hedge":
            quiet = "negation"
        out.append(bool(quiet))
    return out


def _runs(words: list[str]) -> list[list[str]]:
    runs: list[list[str]] = [[]]
    for w, quiet in zip(words, _silenced(words)):
        if quiet or w in STOP or (w.endswith("ly") and len(w) > 4 and w not in LY_NOUNS):
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append(w)
    return [r for r in runs if r]


def _participle(w: str) -> bool:
    return len(w) > 4 and w.endswith(("ing", "ed")) and w not in PARTICIPLE_NOUNS


def _phrase(run: list[str]) -> str | None:
    while run and (_participle(run[-1]) or run[-1] in ADJECTIVES or run[-1] in NUMBERS):
        run = run[:-1]
    if not run or run[-1] in ABSTRACT or run[-1].isdigit() or len(run[-1]) < 2:
        return None
    return " ".join(run[-MAX_WORDS:])


def noun_phrases(text: str | None, limit: int | None = None) -> list[str]:
    """The concrete objects ``text`` states with certainty (see the module docstring)."""
    seen: dict[str, None] = {}
    for clause in _CLAUSE.split(_clean(text or "")):
        words = [w.lower() for w in _WORD.findall(clause)]
        for run in _runs(words):
            p = _phrase(run)
            if p and p not in seen:
                seen[p] = None
                if limit is not None and len(seen) >= limit:
                    return list(seen)
    return list(seen)


__all__ = ["VERSION", "noun_phrases"]
