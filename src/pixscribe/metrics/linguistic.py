"""LIN-Bench readability exactly as Image Textualization computes it, and ``lin_fixed``.

Reference: GitHub sterzhang/image-textualization ``benchmark/Linguistic/readability.py``
(commit 4c72f75). Its counts, per text:

- characters: every non-whitespace character (punctuation included);
- words: ``\\b\\w+\\b`` matches, so "don't" is two words, "hot-dog" two, "3.5" two;
- sentences: the number of ``.``, ``?`` and ``!`` characters ("!!!" is three, "3.5" one,
  "Mr." one; no final punctuation leaves the last sentence uncounted);
- syllables of a word: its a-z letters' vowel groups ``[aeiouy]+``, one less if it ends
  in "e", at least one; polysyllables: words with more than two.

Formulas: ARI = 4.71 c/w + 0.5 w/s - 21.43; Flesch-Kincaid grade = 0.39 w/s + 11.8 y/w -
15.59; SMOG = 1.043 sqrt(p * 30/s) + 3.1291; Coleman-Liau = 0.0588 (100 c/w) - 0.296
(100 s/w) - 15.8. A score that divides by zero is left out (NaN here, ``None`` there), so
a text without ``. ? !`` has no ARI, FK or SMOG but has a Coleman-Liau; corpus scores are
the means over the texts that have one. pixscribe adds the Flesch reading ease (same
counts, left out like FK) and the vocabulary size (distinct lower-cased words).

``lin_fixed`` counts as the formulas intend (differences listed in docs/metrics.md): a
run of ``. ? !`` ends one sentence, periods in numbers, abbreviations and initials end
none, unterminated final text is a sentence; characters are letters and digits; words
keep contractions, hyphenated compounds and numbers whole; a final consonant + "le" is
a syllable. POS counts need a tagger with data that is not available offline
(:func:`pos_counts` says so).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from ..errors import ConfigError, ModelUnavailable

VARIANTS = ("lin", "lin_fixed")

_REF_WORD = re.compile(r"\b\w+\b")
_REF_SENTENCE = re.compile(r"[.?!]")
# acronyms ("U.S."), numbers ("3.5", "1,000"), words with inner hyphens or apostrophes
_FIXED_WORD = re.compile(r"\b(?:[^\W\d_]\.){2,}|\d+(?:[.,:]\d+)+|[^\W_]+(?:[-'’][^\W_]+)*")
_FIXED_ABBREVIATIONS = frozenset("mr mrs ms dr prof st mt jr sr vs cf fig approx e.g i.e a.m p.m".split())
_CLOSERS = "\"'”’)]}»"


def count_syllables(word: str) -> int:
    """The reference's syllable count of one word."""
    w = re.sub(r"[^a-z]", "", word.lower())
    n = len(re.findall(r"[aeiouy]+", w))
    if w.endswith("e"):
        n -= 1
    return n if n != 0 else 1


def count_syllables_fixed(word: str) -> int:
    """As the reference, but a final consonant + "le" ("table", "bicycle") is not a silent e."""
    w = re.sub(r"[^a-z]", "", word.lower())
    n = len(re.findall(r"[aeiouy]+", w))
    if w.endswith("e") and not re.search(r"[^aeiouy]le$", w):
        n -= 1
    return max(n, 1)


def words_of(text: str, variant: str = "lin") -> list[str]:
    return (_REF_WORD if variant == "lin" else _FIXED_WORD).findall(text)


def _fixed_sentences(text: str) -> int:
    """Runs of . ? ! that end a whitespace-separated chunk, except after abbreviations, initials,
    acronyms; plus one for text after the last end."""
    n = 0
    open_words = False
    for chunk in text.split():
        core = chunk.rstrip(_CLOSERS)
        m = re.search(r"[.?!]+$", core)
        has_word = bool(_FIXED_WORD.search(core))
        open_words = open_words or has_word
        if not m or not open_words:
            continue
        stem = core[:m.start()].lstrip("\"'“‘([{«").lower()
        if m.group() == "." and (stem in _FIXED_ABBREVIATIONS or re.fullmatch(r"[^\W\d_]", stem)
                                 or re.fullmatch(r"(?:[^\W\d_]\.)+[^\W\d_]", stem)):
            continue
        n += 1
        open_words = False
    return n + (1 if open_words else 0)


def counts(text: str, variant: str = "lin") -> tuple[int, int, int, int, int]:
    """(characters, words, sentences, syllables, polysyllables) of one text."""
    if variant == "lin":
        ws = _REF_WORD.findall(text)
        chars = len(re.sub(r"\s+", "", text))
        sents = len(_REF_SENTENCE.split(text)) - 1
        syl = [count_syllables(w) for w in ws]
    elif variant == "lin_fixed":
        ws = _FIXED_WORD.findall(text)
        chars = sum(c.isalnum() for c in text)
        sents = _fixed_sentences(text)
        syl = [count_syllables_fixed(w) for w in ws]
    else:
        raise ConfigError(f"LIN-Bench variant must be one of {VARIANTS}, got {variant!r}")
    return chars, len(ws), sents, sum(syl), sum(1 for s in syl if s > 2)


@dataclass
class TextStats:
    words: int
    sentences: int
    vocabulary: int
    characters: int
    syllables: int
    polysyllables: int
    ari: float
    flesch_kincaid_grade: float
    flesch_reading_ease: float
    smog: float
    coleman_liau: float

    def as_dict(self) -> dict:
        return asdict(self)


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def text_stats(text: str, variant: str = "lin") -> TextStats:
    """One text's counts and scores; a score the reference cannot compute (division by zero) is NaN."""
    c, w, s, y, p = counts(text, variant)
    cw, ws, sw, yw = _ratio(c, w), _ratio(w, s), _ratio(s, w), _ratio(y, w)
    smog = 1.043 * math.sqrt(p * (30 / s)) + 3.1291 if s else math.nan
    return TextStats(
        words=w, sentences=s, vocabulary=len({x.lower() for x in words_of(text, variant)}), characters=c,
        syllables=y, polysyllables=p,
        ari=4.71 * cw + 0.5 * ws - 21.43,
        flesch_kincaid_grade=0.39 * ws + 11.8 * yw - 15.59,
        flesch_reading_ease=206.835 - 1.015 * ws - 84.6 * yw,
        smog=smog,
        coleman_liau=0.0588 * (cw * 100) - 0.296 * (sw * 100) - 15.8,
    )


def corpus_stats(texts: Iterable[str], stats: Sequence[TextStats] | None = None,
                 variant: str = "lin") -> dict[str, float]:
    """Means over the texts that have each value (the reference's averaging), plus the corpus vocabulary.

    Keys: ``lin_<field>`` (``lin_fixed_<field>`` for the fixed variant). ``stats``: the texts'
    :func:`text_stats` when the caller already has them.
    """
    texts = list(texts)
    per = list(stats) if stats is not None else [text_stats(t, variant) for t in texts]
    out: dict[str, float] = {}
    if not per:
        return out
    for k in TextStats.__dataclass_fields__:
        vals = [float(getattr(p, k)) for p in per if not math.isnan(float(getattr(p, k)))]
        out[f"{variant}_{k}"] = sum(vals) / len(vals) if vals else math.nan
    out[f"{variant}_corpus_vocabulary"] = float(len({w.lower() for t in texts for w in words_of(t, variant)}))
    return out


def nan_reason(variant: str, stats: Sequence[TextStats], corpus: dict[str, float]) -> str | None:
    """Why some corpus scores are NaN, in a line a user can act on (None when none is)."""
    nan = [k for k, v in corpus.items() if k.startswith(variant + "_") and math.isnan(v)]
    if not nan:
        return None
    n = len(stats)
    no_words = sum(1 for s in stats if s.words == 0)
    no_sents = sum(1 for s in stats if s.sentences == 0)
    why = []
    if no_sents:
        why.append(f"{no_sents} of {n} texts have no sentence end (. ? !), and the reference counts no sentence "
                   "in them" + (" (lin_fixed counts unterminated text as a sentence)" if variant == "lin" else ""))
    if no_words:
        why.append(f"{no_words} of {n} texts have no words")
    return (f"{', '.join(nan)}: nan, as the reference gives when no text has a value (each divides by zero): "
            + "; ".join(why or ["every text divides by zero"]))


def pos_counts(text: str) -> dict[str, int]:
    raise ModelUnavailable(
        "POS counts need a part-of-speech tagger with local data; none is available offline "
        "(nltk's averaged perceptron data and spaCy models must be downloaded)"
    )
