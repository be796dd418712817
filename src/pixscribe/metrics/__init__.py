"""Caption metrics and ``pixscribe eval``.

- :mod:`.tokenize`: Java-free equivalent of pycocoevalcap's PTBTokenizer
- :mod:`.coco`: BLEU-1..4, ROUGE-L, CIDEr-D (same numbers as pycocoevalcap, vectorised)
- :mod:`.meteor`: METEOR 1.5 via one persistent Java process
- :mod:`.spice`: SPICE (optional; needs Stanford CoreNLP jars locally)
- :mod:`.chair` (with :mod:`.wordtok`, :mod:`.singular`), :mod:`.pope`, :mod:`.pope_build`:
  object hallucination, equal to the reference code (corrected variants under their own
  names; docs/metrics.md)
- :mod:`.linguistic`: LIN-Bench statistics and readability, equal to Image Textualization's
- :mod:`.embed`: BERTScore, CLIPScore, RefCLIPScore with any local model
- :mod:`.evaluate`: :func:`evaluate` -> report dict; :mod:`.eval_cli`: ``register(app)``
  (``eval``; ``pope build`` from :mod:`.pope_cli`)
- :mod:`.pancapscore`: PancapScore (panoptic captioning) with an LLM judge (:mod:`.judge`), tags
  matched with WordNet and MiniLM (:mod:`.pancap_tags`), judge prompts in :mod:`.pancap_prompts`
- :mod:`.judge`: the judged-metric engine (any backend, cache, transcripts, replay)
- detailed captions, each equal to its reference (docs/metrics.md): :mod:`.amber` (with
  :mod:`.amber_text`), :mod:`.capture`, :mod:`.dlc_bench`, :mod:`.caparena`, :mod:`.comprecap`;
  ``pixscribe eval`` wiring in :mod:`.detailed_cli` and :mod:`.detailed_runs`
"""

from .coco import coco_scores
from .evaluate import evaluate, parse_metrics
from .tokenize import ptb_tokenize, tokenize_caption

__all__ = ["coco_scores", "evaluate", "parse_metrics", "ptb_tokenize", "tokenize_caption"]
