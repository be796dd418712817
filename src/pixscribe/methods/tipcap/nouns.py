"""Nouns of a caption, offline and deterministic: the training prompts of TIPCap.

No statistical tagger with local data is available offline (spaCy's English models are
not on the registry, nltk's tagger data must be downloaded), so this is a small
rule-based tagger over a real English lexicon: `lemminflect <https://pypi.org/project/lemminflect/>`_
ships the part-of-speech classes each word form can take (from its bundled lexicon), and
the rules below decide the ambiguous ones from the neighbouring words:

- closed-class words (determiners, pronouns, prepositions, conjunctions, auxiliaries,
  numbers) are never nouns;
- a word the lexicon knows only as a noun is a noun; a word it does not know at all is
  taken as a noun when it follows a determiner, a number, an adjective or a preposition
  (``a frisbee``), as rare words in captions mostly are;
- noun-or-verb (``man``, ``dogs``, ``stand``): a verb right after a pronoun, an auxiliary,
  ``to`` or a noun (``a man stands``), else a noun;
- noun-or-adjective (``red``, ``front``): an adjective when the next word can be a noun
  (``a red car``), after a copula (``is dark``) or before ``and``/``or`` (``black and
  white``), else a noun;
- consecutive nouns form one compound (``fire hydrant``, ``teddy bear``); the last word
  is lemmatised to its singular (``two fire hydrants`` -> ``fire hydrant``);
- generic picture words and position/quantity nouns (``photo``, ``front``, ``group``)
  are dropped: they name no object a detector would report.

The result is deterministic (no model, no randomness) and order-preserving, deduplicated.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ...deps import require

_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")

_DETERMINERS = set("a an the this that these those some any each every no another either neither its their his her "
                   "my your our whose which what".split())
_PRONOUNS = set("i you he she it we they me him us them someone somebody something anyone everyone everything "
                "nobody nothing one who whom there here".split())
_AUX = set("is are was were be been being am do does did has have had can could will would shall should may might "
           "must isn't aren't wasn't weren't don't doesn't didn't can't won't".split())
_PREPS = set("of in on at by for with without from to into onto over under above below near beside besides between "
             "behind across along around through toward towards against among inside outside upon off up down out "
             "about after before during like next while as than via atop underneath beneath".split())
_CONJ = set("and or but nor so yet if then because though although while".split())
_NUMBERS = set("zero one two three four five six seven eight nine ten eleven twelve dozen many several few lots "
               "both all half".split())
_ADVERBS = set("very really also just not too quite almost outdoors indoors together yes maybe please".split())
_CLOSED = _DETERMINERS | _PRONOUNS | _AUX | _PREPS | _CONJ | _NUMBERS | _ADVERBS
_GENERIC = set("photo photograph picture image shot view close closeup front top side middle bottom back left right "
               "lot lots couple group bunch pair number kind type sort piece way thing things something area "
               "background foreground scene day time".split())
_VERB_CONTEXT = _PRONOUNS | _AUX | {"to"}
_MODIFIER_CONTEXT = _DETERMINERS | _NUMBERS | _PREPS


@lru_cache(maxsize=1)
def _lemminflect():
    return require("lemminflect", extra="tipcap", what="the noun extractor of TIPCap prompts")


@lru_cache(maxsize=65536)
def _classes(word: str) -> frozenset[str]:
    """Part-of-speech classes the lexicon allows for ``word`` (empty when unknown)."""
    if word in _CLOSED:
        return frozenset({"CLOSED"})
    return frozenset(_lemminflect().getAllLemmas(word).keys())


def _singular(word: str) -> str:
    lem = _lemminflect().getAllLemmas(word, upos="NOUN").get("NOUN")
    if lem:
        return lem[0]
    oov = _lemminflect().getAllLemmasOOV(word, upos="NOUN").get("NOUN")
    return oov[0] if oov else word


def _is_noun(words: list[str], i: int, prev_noun: bool) -> bool:
    w, cls = words[i], _classes(words[i])
    prev = words[i - 1] if i else ""
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if "CLOSED" in cls:
        return False
    if not cls:  # not in the lexicon
        return prev in _MODIFIER_CONTEXT or prev_noun or "ADJ" in _classes(prev)
    if "NOUN" not in cls:
        return False
    if "VERB" in cls and (prev in _VERB_CONTEXT or (prev_noun and w.endswith(("s", "ing", "ed")))):
        return False
    if "ADJ" in cls and (prev in _AUX or prev in ("as", "so") or nxt in ("and", "or")):
        return False  # "is dark", "black and white"
    if "ADJ" in cls and nxt and "CLOSED" not in _classes(nxt) and "NOUN" in _classes(nxt):
        return False
    return True


def extract_nouns(caption: str) -> list[str]:
    """The caption's nouns (compounds kept together, singular), in order, without duplicates.

    >>> extract_nouns("Two dogs playing in the green grass near a fire hydrant")
    ['dog', 'grass', 'fire hydrant']
    """
    words = _WORD.findall(caption.lower())
    out: list[str] = []
    run: list[str] = []
    prev_noun = False

    def flush() -> None:
        while run and run[0] in _GENERIC:
            run.pop(0)
        if run:
            phrase = " ".join(run[:-1] + [_singular(run[-1])])
            if phrase not in out:
                out.append(phrase)
        run.clear()

    for i in range(len(words)):
        noun = _is_noun(words, i, prev_noun)
        if noun:
            run.append(words[i])
        else:
            flush()
        prev_noun = noun
    flush()
    return out


__all__ = ["extract_nouns"]
