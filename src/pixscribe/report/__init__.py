"""``pixscribe report`` (a static site that shows what was said and why) and ``pixscribe export``
(an output in a training format). See docs/report.md.

- :mod:`.build`: the report (:func:`build_report`); :mod:`.query` chooses and aggregates rows
  with DuckDB; :mod:`.stats` the run page's figures; :mod:`.rowview` and :mod:`.adapters` turn a
  row's method columns into overlays and sections; :mod:`.media` thumbnails and masks;
  :mod:`.images` re-reads a row's image from its source; :mod:`.svg` the plots.
- :mod:`.export`: webdataset, HF ``save_to_disk`` or jsonl (:func:`export`).
- :mod:`.cli`: ``register(app)`` adds both commands to the command line.

Nothing here is imported by ``import pixscribe``; DuckDB and Jinja2 (the ``report`` extra) are
imported when a report is built.
"""
