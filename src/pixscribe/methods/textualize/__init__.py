"""Image Textualization: its stages (``detail``, ``describe``, ``objects``, ``verify``,
``rewrite``), their options and prompts, in one place.

- ``method.py``: the factory, registered with its declaration (options, flags, roles);
- ``detail.py``, ``column.py``, ``objects.py``, ``verify.py``, ``rewrite.py``: the stages,
  each with its typed option declaration (verify's is shared: stages/grounding.py);

What it shares with recap's best-of-n selection lives outside: the offline noun-phrase
extractor (``objects.extractor: nouns``, :mod:`pixscribe.nounphrases`) and the grounding
options and verifier (:mod:`pixscribe.stages.grounding`).

Importing the package registers the method. ``textualize_method`` stays importable from
here (plugins build on it: tests/plugin_pkg).
"""

from .method import DESCRIBE_PROMPT, DescribeOptions, textualize, textualize_method

__all__ = ["DESCRIBE_PROMPT", "DescribeOptions", "textualize", "textualize_method"]
