"""Panoptic captioning (arXiv 2505.16334), in one place: the method, its stages, box formats,
entity lists and captions.

- :mod:`.method`: the factory, registered with its declaration (options, flags, roles);
- :mod:`.chain`: the PancapChain stages (localize, tag, discover, caption) and the
  consistency check; :mod:`.proposals`: the experts' front (Florence-2 proposals, re-detection);
- :mod:`.boxes`: the reference format (prose with inline ``[[x1, y1, x2, y2]]`` boxes,
  normalised, 3 decimals) and the PancapChain model format (``tag <box>[[...]]</box>``,
  integers on the image padded to a square), with pixel conversions both ways.
- :mod:`.entities`: a stage's answer cleaned (duplicates, "none", boxes in the padding),
  lists merged, the ``entities`` column.
- :mod:`.caption`: a caption's boxes rewritten in the reference format; the prose of the
  structured (JSON) variant.
- :mod:`.redetect`: the IoU-gated merge of Florence-2 proposals with re-detections.
- :mod:`.prompts`: pixscribe's own prompts and the request layout.

The metric, PancapScore, lives in :mod:`pixscribe.metrics.pancapscore` (shared: ``pixscribe
eval``), with the reference box format both read (:mod:`pixscribe.metrics.pancap_boxes`).
Importing the package registers the method.
"""

from .method import panoptic

__all__ = ["panoptic"]
