"""Recap (Recap-DataComp-1B): one VLM pass per image with a "describe in detail" prompt.

    pixscribe caption photos -o out                                   # the default method
    pixscribe caption photos -o out --prompt "Describe it briefly." --max-new-tokens 64

Columns: ``org_caption`` (the input's own caption, null when it has none) and ``re_caption``.
Its one stage, ``recap``, is the primary stage: ``--prompt``/``--prompt-file``,
``--max-new-tokens`` (128), ``--temperature`` (0: greedy) and ``--top-p`` set its options, as do
``stages: {recap: {...}}`` in YAML and ``-S recap.KEY=VALUE``.

The layout every method follows (docs/architecture.md):

- ``options.py``: each stage's typed option declaration;
- ``method.py``: the factory, registered with its declaration (summary, options, flags, roles);
- this ``__init__``: the method's public names (importing it registers the method).
"""

from .method import recap, recap_method
from .options import RECAP_PROMPT, RecapOptions, SelectOptions

__all__ = ["RECAP_PROMPT", "RecapOptions", "SelectOptions", "recap", "recap_method"]
