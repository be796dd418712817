"""``nltk.word_tokenize`` as CHAIR's reference ran it (nltk 3.2.5), without nltk's data files.

CHAIR (LisaAnne/Hallucination, ``requirements.txt``: ``nltk==3.2.5``) tokenises each
lower-cased caption with ``nltk.word_tokenize``: Punkt sentence splitting with the
English model, then nltk's Treebank word tokenizer with three extra rules nltk 3.2.5
added in ``nltk/tokenize/__init__.py`` (curly and guillemet quotes split off; a final
period followed by closing quotes split off).

Two boundaries, documented in docs/metrics.md:

- the English Punkt model is a data download that is not available offline, so sentences
  are split by nltk's Punkt with no trained parameters. It differs from the English model
  only in whether an abbreviation's period stays on it (``"mr."`` against ``"mr" "."``), and
  an abbreviation is never one of CHAIR's object words, so no object count changes;
- the Treebank rules are those of the installed nltk; since 3.2.5 only the handling of
  two single quotes (``''``) and of the contractions "mor'n" and "wanna" has changed,
  none of which touches an object word.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from ..deps import require

_OPEN_QUOTE = (re.compile("([«“‘])"), r" \1 ")
_CLOSE_QUOTE = (re.compile("([»”’])"), r" \1 ")
_FINAL_PERIOD = (re.compile(r"([^\.])(\.)([\]\)}>\"'»”’ ]*)\s*$"), r"\1 \2 \3 ")


@lru_cache(maxsize=1)
def _tokenizers() -> tuple[Any, Any]:
    treebank = require("nltk.tokenize.treebank", extra="metrics", package="nltk",
                       what="CHAIR (its reference tokenises captions with nltk)")
    punkt = require("nltk.tokenize.punkt", extra="metrics", package="nltk", what="CHAIR")
    tb = treebank.TreebankWordTokenizer()
    # instance lists: the class lists stay as nltk has them (nltk 3.2.5 changed them in place)
    tb.STARTING_QUOTES = [_OPEN_QUOTE, *type(tb).STARTING_QUOTES]
    tb.ENDING_QUOTES = [_CLOSE_QUOTE, *type(tb).ENDING_QUOTES]
    tb.PUNCTUATION = [_FINAL_PERIOD, *type(tb).PUNCTUATION]
    return punkt.PunktSentenceTokenizer(), tb


def word_tokenize(text: str) -> list[str]:
    """Sentences with Punkt, then each sentence with the Treebank tokenizer (nltk 3.2.5's rules)."""
    sentences, words = _tokenizers()
    return [tok for sent in sentences.tokenize(text) for tok in words.tokenize(sent)]
