"""CAPTURE's parse stage after the parser: a caption's sentence graphs -> its frozen parse (:class:`~.capture.Parse`).

Reference: ``CAPTURE.sample_to_parse_results`` and ``merge_sentence_results`` (capture.py @ 52eeb27).
The caption is split into sentences (Punkt), each is parsed into a graph by FACTUAL's T5
scene-graph parser (pluggable: any ``sentences -> graphs``; with the ``factual-scene-graph``
package and the parser's weights, :func:`factual_parser`), then:

- objects: every entity head, lemmatised as a noun; attributes per object: lemmatised as
  adjectives, dropping those containing ``" of"``; relations: (subject head, relation,
  object head) with the heads lemmatised -- each a set (kept here in first-seen order);
- an object is kept when it is not a stop word (the reference's list, packaged verbatim:
  ``data/capture_stop_words.txt``) and is, or all its words are, among the caption's nouns
  (nltk's tokenizer and tagger, tags ``NN*``, lemmatised); attributes and relations keep the
  objects (subject and object) that pass the noun test, stop words or not.

A graph is ``{"entities": [{"head", "attributes": [...]}], "relations": [{"subject": i,
"relation", "object": j}]}``, the parser's ``return_text=False`` output.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Mapping, Sequence

from .capture import Parse

Graph = Mapping[str, Any]


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    text = resources.files(__package__).joinpath("data/capture_stop_words.txt").read_text(encoding="utf-8")
    return frozenset(text.splitlines())


def merge_graphs(graphs: Sequence[Graph], lemma: Callable[[str, str], str]) -> Parse:
    """The reference's ``merge_sentence_results``: the sentence graphs as one parse (lemmatised, deduplicated)."""
    objects: dict[str, None] = {}
    attributes: dict[str, dict[str, None]] = {}
    relations: dict[tuple[str, str, str], None] = {}
    for g in graphs:
        ents = g["entities"]
        for e in ents:
            head = lemma(e["head"], "n")
            objects[head] = None
            for a in e["attributes"]:
                a = lemma(a, "a")
                if " of" not in a:
                    attributes.setdefault(head, {})[a] = None
        for r in g["relations"]:
            relations[(lemma(ents[r["subject"]]["head"], "n"), r["relation"],
                       lemma(ents[r["object"]]["head"], "n"))] = None
    return Parse(list(objects), {k: list(v) for k, v in attributes.items()}, list(relations))


def filter_parse(p: Parse, nouns: set[str], stop: frozenset[str] | None = None) -> Parse:
    """Keep what the caption's nouns support (``sample_to_parse_results``)."""
    stop = stop_words() if stop is None else stop

    def supported(x: str) -> bool:
        return x in nouns or all(piece in nouns for piece in x.split(" "))

    return Parse([o for o in p.objects if o not in stop and supported(o)],
                 {k: v for k, v in p.attributes.items() if supported(k)},
                 [r for r in p.relations if supported(r[0]) and supported(r[2])])


class CaptionParser:
    """caption -> frozen parse: Punkt sentences, ``parser``, merge, filter by the caption's nouns."""

    def __init__(self, parser: Callable[[list[str]], list[Graph]], tagger: Any = None, wordnet: Any = None):
        from .amber_text import NounExtractor

        self.parser = parser
        self.words = NounExtractor(tagger, wordnet)
        self._lemma: dict[tuple[str, str], str] = {}

    def lemma(self, word: str, pos: str) -> str:
        got = self._lemma.get((word, pos))
        if got is None:
            lemmas = self.words.wordnet._morphy(word, pos)
            got = self._lemma[(word, pos)] = min(lemmas, key=len) if lemmas else word
        return got

    def __call__(self, caption: str) -> Parse:
        from .amber_text import _punkt

        graphs = self.parser(_punkt()[0].tokenize(caption))
        return filter_parse(merge_graphs(graphs, self.lemma), set(self.words(caption)))


def factual_parser(model: str = "lizhuang144/flan-t5-base-VG-factual-sg", device: str = "cpu") -> Callable[[list[str]], list[Graph]]:
    """FACTUAL's T5 parser as the reference calls it (beam 5, 128 tokens): needs ``factual-scene-graph`` and the weights."""
    from ..deps import require

    sg = require("factual_scene_graph.parser.scene_graph_parser", extra="detailed", package="FactualSceneGraph",
                 what="CAPTURE's parser")
    parser = sg.SceneGraphParser(model, device=device)
    return lambda sentences: parser.parse(sentences, beam_size=5, return_text=False, max_output_len=128)


__all__ = ["CaptionParser", "factual_parser", "filter_parse", "merge_graphs", "stop_words"]
