"""LIN-Bench linguistic statistics of captions.

Per text: words, sentences, vocabulary size (distinct lower-cased words), characters
(letters and digits), syllables, polysyllables (>= 3 syllables), and the readability
formulas:

- ARI = 4.71 * chars/words + 0.5 * words/sentences - 21.43
- Flesch-Kincaid grade = 0.39 * words/sentences + 11.8 * syllables/words - 15.59
- Flesch reading ease = 206.835 - 1.015 * words/sentences - 84.6 * syllables/words
- SMOG = 1.0430 * sqrt(polysyllables * 30 / sentences) + 3.1291
- Coleman-Liau = 0.0588 * L - 0.296 * S - 15.8 (L letters, S sentences per 100 words)

Syllables are counted with a vowel-group heuristic (silent final e, -le, -ed/-es
endings), the usual approach of readability tools; give ``syllables=`` your own counter
to change it.

POS counts: no part-of-speech tagger works offline here (nltk's tagger data cannot be
downloaded, spaCy models are not on the registry, Debian's wordnet is not a tagger), so
``pos`` is not computed; :func:`pos_counts` raises with that reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

_WORD = re.compile(r"[A-Za-z0-9\u00C0-\u024F]+(?:['’\-][A-Za-z0-9\u00C0-\u024F]+)*")
_SENT = re.compile(r"[^.!?]*[A-Za-z0-9][^.!?]*(?:[.!?]+|$)")


def count_syllables(word: str) -> int:
    w = word.lower()
    w = re.sub(r"[^a-z]", "", w)
    if not w:
        return 0
    if len(w) <= 3:
        return 1
    w = re.sub(r"(?:[^laeiouy]es|[^laeiouy]ed|[^laeiouy]e)$", lambda m: m.group(0)[0], w)
    w = re.sub(r"^y", "", w)
    groups = re.findall(r"[aeiouy]+", w)
    return max(1, len(groups))


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.findall(text) if s.strip()]


def words_of(text: str) -> list[str]:
    return _WORD.findall(text)


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


def text_stats(text: str, syllables: Callable[[str], int] = count_syllables) -> TextStats:
    ws = words_of(text)
    n_w = len(ws)
    n_s = max(1, len(split_sentences(text))) if n_w else 0
    chars = sum(sum(c.isalnum() for c in w) for w in ws)
    syl = [syllables(w) for w in ws]
    n_syl = sum(syl)
    poly = sum(1 for s in syl if s >= 3)
    nan = float("nan")
    if n_w == 0:
        return TextStats(0, 0, 0, 0, 0, 0, nan, nan, nan, nan, nan)
    wps = n_w / n_s
    spw = n_syl / n_w
    return TextStats(
        words=n_w,
        sentences=n_s,
        vocabulary=len({w.lower() for w in ws}),
        characters=chars,
        syllables=n_syl,
        polysyllables=poly,
        ari=4.71 * chars / n_w + 0.5 * wps - 21.43,
        flesch_kincaid_grade=0.39 * wps + 11.8 * spw - 15.59,
        flesch_reading_ease=206.835 - 1.015 * wps - 84.6 * spw,
        smog=1.0430 * math.sqrt(poly * 30 / n_s) + 3.1291,
        coleman_liau=0.0588 * (chars / n_w * 100) - 0.296 * (n_s / n_w * 100) - 15.8,
    )


def corpus_stats(texts: Iterable[str], stats: Sequence[TextStats] | None = None) -> dict[str, float]:
    """Mean of the per-text statistics, plus the corpus vocabulary size.

    ``stats``: the texts' :func:`text_stats` when the caller already has them.
    """
    texts = list(texts)
    per = list(stats) if stats is not None else [text_stats(t) for t in texts]
    out: dict[str, float] = {}
    if not per:
        return out
    for k in TextStats.__dataclass_fields__:
        vals = [getattr(p, k) for p in per if not math.isnan(float(getattr(p, k)))]
        out[f"lin_{k}"] = float(sum(vals) / len(vals)) if vals else float("nan")
    out["lin_corpus_vocabulary"] = float(len({w.lower() for t in texts for w in words_of(t)}))
    return out


def pos_counts(text: str) -> dict[str, int]:
    raise RuntimeError(
        "POS counts need a part-of-speech tagger with local data; none is available offline "
        "(nltk's averaged perceptron data and spaCy models must be downloaded)"
    )
