"""Panoptic captioning (arXiv 2505.16334): box formats now; the PancapChain and
PancapEngine-style method stages come with the multi-stage engine.

- :mod:`.boxes`: the reference format (prose with inline ``[[x1, y1, x2, y2]]`` boxes,
  normalised, 3 decimals) and the PancapChain model format (``tag <box>[[...]]</box>``,
  integers on the image padded to a square), with pixel conversions both ways.

The metric, PancapScore, lives in :mod:`pixscribe.metrics.pancapscore`.
"""
